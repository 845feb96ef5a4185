"""What every model in the harness shares: the output type, input projection and the factory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hjcag.errors import ConfigError
from hjcag.params import MODALITIES, ModelConfig

MODEL_NAMES = ("hjcag", "concat", "late", "mult")


@dataclass
class FusionOutput:
    """logits (B, C) and per-modality gate weights (B, |M|) that sum to 1 over present modalities."""

    logits: torch.Tensor
    gate: torch.Tensor


def activation(name: str) -> nn.Module:
    try:
        return {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()}[name]
    except KeyError as exc:
        raise ConfigError(f"model.activation '{name}' is not supported; use relu, gelu or tanh.") from exc


def presence_mask(inputs: Mapping[str, torch.Tensor], modalities: tuple[str, ...],
                  present: torch.Tensor | None) -> torch.Tensor:
    """(B, |M|) bool: which modalities each sample has. Default: all present."""
    batch = next(iter(inputs.values())).shape[0]
    device = next(iter(inputs.values())).device
    if present is None:
        return torch.ones(batch, len(modalities), dtype=torch.bool, device=device)
    if present.shape != (batch, len(modalities)):
        raise ValueError(f"present mask must have shape {(batch, len(modalities))}, got {tuple(present.shape)}")
    present = present.to(torch.bool)
    if not bool(present.any(dim=1).all()):
        raise ValueError("every sample needs at least one present modality")
    return present


def masked_uniform(mask: torch.Tensor) -> torch.Tensor:
    """Equal weight over the present modalities: (B, |M|)."""
    weights = mask.float()
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)


def build_model(name: str, input_dims: Mapping[str, int], num_classes: int, config: ModelConfig) -> nn.Module:
    """Any model of the harness: forward(inputs: {m: (B, L, d_m)}, present: (B, |M|) bool | None)."""
    modalities = tuple(m for m in MODALITIES if m in input_dims)
    if not modalities:
        raise ConfigError("a model needs at least one modality")
    if name == "hjcag":
        from hjcag.model.hjcag import HJCAG

        return HJCAG(input_dims, num_classes, config)
    from hjcag.model import baselines

    builders = {"concat": baselines.ConcatFusion, "late": baselines.LateFusion, "mult": baselines.MulT}
    if name not in builders:
        raise ConfigError(f"unknown model '{name}'. Choose one of {list(MODEL_NAMES)}.")
    return builders[name](input_dims, num_classes, config)
