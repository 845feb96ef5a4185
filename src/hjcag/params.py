"""params.yaml: the one source of hyperparameters.

`load_params` reads the file, deep-merges the selected profile over the top-level defaults and returns
typed sections. Every stage (CLI, dvc.yaml, KFP components) goes through here, so a value lives in one place.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hjcag.errors import ConfigError

MODALITIES = ("t", "a", "v")
MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}
DEFAULT_PARAMS_FILE = Path("params.yaml")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "hjcag"
    seq_len: int = 30
    widths: dict[str, int] = field(default_factory=lambda: {"t": 1024, "a": 1582, "v": 512})
    gate_width: int = 512
    classifier_hidden: int = 256
    dropout: float = 0.1
    activation: str = "relu"
    bimodal: bool = True
    trimodal: bool = True
    gate: bool = True
    mult: dict[str, int] = field(default_factory=lambda: {"d_model": 64, "heads": 4, "layers": 2})


@dataclass(frozen=True)
class TrainConfig:
    protocol: str = "cv5"
    folds: int = 5
    val_fraction: float = 0.1
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-5
    step_size: int = 10
    gamma: float = 0.95
    patience: int = 20
    device: str = "auto"
    num_threads: int = 0
    modality_dropout: float = 0.0  # per sample, each present modality dropped with this probability (never all)
    class_weights: str = "none"  # none | balanced (inverse class frequency of the fold's training part)


@dataclass(frozen=True)
class GateConfig:
    min_accuracy: float = 0.0
    min_weighted_f1: float = 0.0


@dataclass(frozen=True)
class Params:
    profile: str
    dataset: str
    seed: int
    labels: tuple[str, ...]
    model: ModelConfig
    train: TrainConfig
    gates: GateConfig
    raw: dict[str, Any]

    def with_overrides(self, model: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> Params:
        """A copy with some model/train fields replaced (used by ablations and CLI options)."""
        return dataclasses.replace(
            self,
            model=_build(ModelConfig, {**dataclasses.asdict(self.model), **(model or {})}, "model"),
            train=_build(TrainConfig, {**dataclasses.asdict(self.train), **(train or {})}, "train"),
        )


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `override` into a copy of `base` (dicts merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"params: unknown key(s) {unknown} in section '{section}'. Known keys: {sorted(known)}."
        )
    values = dict(values)
    if "betas" in values:
        values["betas"] = tuple(float(b) for b in values["betas"])
    try:
        return cls(**values)
    except TypeError as exc:  # pragma: no cover - dataclass signature errors
        raise ConfigError(f"params: section '{section}' is invalid: {exc}") from exc


def load_params(path: str | Path | None = None, profile: str | None = None) -> Params:
    """Read params.yaml (or `path`) and apply `profile` (default: the file's `profile:` key)."""
    path = Path(path) if path is not None else DEFAULT_PARAMS_FILE
    if not path.exists():
        raise ConfigError(f"params file '{path}' not found. Pass --params PATH or run from the repository root.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file '{path}' is not valid YAML: {exc}") from exc
    return params_from_dict(raw, profile, source=str(path))


def params_from_dict(raw: dict[str, Any], profile: str | None = None, source: str = "params") -> Params:
    profiles = raw.get("profiles", {}) or {}
    profile = profile or raw.get("profile")
    merged = {k: v for k, v in raw.items() if k != "profiles"}
    if profile:
        if profile not in profiles:
            raise ConfigError(
                f"{source}: profile '{profile}' is not defined. Defined profiles: {sorted(profiles)}."
            )
        merged = deep_merge(merged, profiles[profile])
    dataset = merged.get("dataset", profile or "custom")
    datasets = merged.get("datasets", {}) or {}
    labels = tuple(datasets.get(dataset, {}).get("labels", ()))
    widths = merged.get("model", {}).get("widths", {})
    bad = sorted(set(widths) - set(MODALITIES))
    if bad:
        raise ConfigError(f"{source}: model.widths has unknown modalities {bad}; use t, a, v.")
    return Params(
        profile=profile or "default",
        dataset=dataset,
        seed=int(merged.get("seed", 0)),
        labels=labels,
        model=_build(ModelConfig, merged.get("model", {}), "model"),
        train=_build(TrainConfig, merged.get("train", {}), "train"),
        gates=_build(GateConfig, merged.get("gates", {}), "gates"),
        raw=merged,
    )


def parse_modalities(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'t,a,v' / 'tav' / ['text', 'audio'] -> ('t', 'a', 'v') in canonical order."""
    if isinstance(spec, str):
        parts = [p for p in spec.replace(" ", "").split(",") if p]
        if len(parts) == 1 and len(parts[0]) > 1 and set(parts[0]) <= set(MODALITIES):
            parts = list(parts[0])
    else:
        parts = list(spec)
    long_to_short = {v: k for k, v in MODALITY_NAMES.items()}
    chosen = set()
    for part in parts:
        key = long_to_short.get(part, part)
        if key not in MODALITIES:
            raise ConfigError(
                f"unknown modality '{part}'. Use a comma-separated subset of t,a,v (text, audio, visual)."
            )
        chosen.add(key)
    if not chosen:
        raise ConfigError("no modality given. Use a comma-separated subset of t,a,v, e.g. --modalities t,a,v.")
    return tuple(m for m in MODALITIES if m in chosen)
