"""What every model in the harness shares: the output type, the presence and padding masks, activations and
input standardisation (docs/model.md). The factory (`build_model`, `MODEL_NAMES`) is in :mod:`hjcag.model.factory`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hjcag.errors import ConfigError


@dataclass
class FusionOutput:
    """logits (B, C), per-modality gate weights (B, |M|) that sum to 1 over present modalities, and `fused`
    (B, fused_width): the utterance's fused vector the classifier reads (conversation context reads it too)."""

    logits: torch.Tensor
    gate: torch.Tensor
    fused: torch.Tensor | None = None


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


def step_masks(
    inputs: Mapping[str, torch.Tensor], modalities: tuple[str, ...], present: torch.Tensor
) -> dict[str, torch.Tensor]:
    """{m: (B, L) bool}: which time steps of each modality are real (docs/model.md, "Masks").

    Step l of modality m is real when m is present for the sample and its input row X_m[b, l, :] is not all-zero;
    all-zero rows are padding (a short utterance zero-padded to L, text tokens beyond the sentence). A missing
    modality has no real step. A present modality whose rows are all zero (nothing to tell padding from content)
    counts as real at every step, so every sample keeps at least one real step. Computed on the raw inputs; the
    InputStandardizer keeps all-zero rows zero, so it agrees.
    """
    out = {}
    for i, m in enumerate(modalities):
        real = (inputs[m] != 0).any(dim=-1)  # (B, L); NaN counts as content
        real = real | ~real.any(dim=1, keepdim=True)  # all-zero present modality: every step real
        out[m] = real & present[:, i, None]
    return out


def keep_steps(x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """`x` (B, L, d) with the rows where `real` (B, L) is False replaced by exact zeros (NaN-safe)."""
    return torch.where(real[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean of `x` (B, L, d) over the steps where `real` (B, L) is True: (B, d); zeros for a sample with none."""
    weights = real.to(x.dtype)[..., None]  # (B, L, 1)
    return (keep_steps(x, real) * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def masked_uniform(mask: torch.Tensor) -> torch.Tensor:
    """Equal weight over the present modalities: (B, |M|)."""
    weights = mask.float()
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)


class InputStandardizer(nn.Module):
    """Per-feature standardisation of each modality, (x - mean) / std, with statistics of the training part.

    Raw extractor outputs live on wildly different scales (openSMILE IS10 functionals range from 1e-3 to 1e3), which
    an Adam step of lr 1e-3..1e-5 cannot undo. The statistics are buffers, so they travel with the weights and
    serving applies exactly what training saw. All-zero time steps (padding, a masked modality) stay zero. Until
    :meth:`fit` is called it is the identity.
    """

    def __init__(self, input_dims: Mapping[str, int]) -> None:
        super().__init__()
        self.modalities = tuple(input_dims)
        for m, d in input_dims.items():
            self.register_buffer(f"mean_{m}", torch.zeros(d))
            self.register_buffer(f"std_{m}", torch.ones(d))

    @torch.no_grad()
    def fit(self, features: Mapping[str, np.ndarray], chunk: int = 256) -> None:
        """Mean and std over every non-zero time step of `features` ({m: (N, L, d)}), in float64 chunks."""
        for m in self.modalities:
            x_all = features[m]
            total, total_sq, count = np.zeros(x_all.shape[-1]), np.zeros(x_all.shape[-1]), 0
            for start in range(0, len(x_all), chunk):
                x = np.asarray(x_all[start:start + chunk], dtype=np.float64).reshape(-1, x_all.shape[-1])
                x = x[np.abs(x).sum(axis=1) > 0]
                total += x.sum(axis=0)
                total_sq += (x * x).sum(axis=0)
                count += len(x)
            if count == 0:
                continue
            mean = total / count
            std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
            std[std < 1e-6] = 1.0  # constant columns: centre only
            getattr(self, f"mean_{m}").copy_(torch.from_numpy(mean))
            getattr(self, f"std_{m}").copy_(torch.from_numpy(std))

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for m, x in inputs.items():
            if m not in self.modalities:
                out[m] = x
                continue
            keep = (x != 0).any(dim=-1, keepdim=True)  # (B, L, 1); all-zero (padding) steps stay zero, NaN propagates
            z = (x - getattr(self, f"mean_{m}").to(x.dtype)) / getattr(self, f"std_{m}").to(x.dtype)
            out[m] = torch.where(keep, z, torch.zeros_like(z))
        return out
