"""params.yaml: the one source of hyperparameters.

`load_params` reads the file, deep-merges the selected profile over the top-level defaults and returns
typed sections. Every stage (CLI, dvc.yaml, KFP components) goes through here, so a value lives in one place.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from hjcag.errors import ConfigError

MODALITIES = ("t", "a", "v")
MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}
DEFAULT_PARAMS_FILE = Path("params.yaml")
GROUP_BY = ("dialogue", "session")  # features.group_by: what a fold keeps together
VALIDATION_POLICIES = ("fail", "quarantine")
TUNE_METRICS = {"val_weighted_f1": "maximize", "val_loss": "minimize"}  # tune.metric -> its direction
TUNE_PRUNERS = ("median", "none")
TUNABLE_SECTIONS = ("model", "train")  # what a tune.space key may point into (Params.with_overrides takes them)


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
    # Conversation context (issue 10, docs/model.md "Conversation context"): none = the paper's model, one utterance
    # at a time; gru | transformer = each utterance's fused vector read together with those of up to
    # `context_window` neighbouring utterances of its dialogue. causal = only the preceding ones (what a live
    # endpoint sees); bidirectional = also the following ones (offline evaluation only, labelled in every report).
    context: str = "none"
    context_window: int = 8
    context_direction: str = "causal"


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
    seeds: tuple[int, ...] = ()  # train every fold once per seed (figures: mean ± std over folds x seeds)
    modality_dropout: float = 0.0  # per sample, each present modality dropped with this probability (never all)
    class_weights: str = "none"  # none | balanced | sqrt (inverse class frequency of the fold's training part, or
    # its square root)


@dataclass(frozen=True)
class FeaturesConfig:
    """The ``features:`` section of params.yaml (``finetune:`` is a nested mapping of the finetune_* keys)."""

    text_model: str = "roberta-large"
    text_fallback: str = "minilm"  # minilm | none (fail instead of falling back)
    max_tokens: int = 128
    text_batch_size: int = 32
    audio_set: str = "IS10_paraling"  # IS10_paraling | eGeMAPSv02 | ComParE_2016
    audio_min_duration_s: float = 0.25
    visual_model: str = "microsoft/resnet-50"
    visual_weights_dir: str | None = None
    visual_arch: dict[str, Any] | None = None  # ResNetConfig overrides (random weights), e.g. a tiny test net
    audio_batch_size: int = 16  # utterances per cache write (openSMILE runs one signal at a time)
    visual_batch_size: int = 4  # utterances per forward pass (x L frames)
    visual_frames: int | None = None  # frames embedded per utterance (None = L); fewer are repeated to L
    image_size: int = 224
    device: str = "auto"
    workers: int = 0  # decode / openSMILE threads; 0 = min(8, CPU count)
    cache_dir: str | None = ".cache/hjcag/features"
    seq_len: int = 30
    group_by: str = "dialogue"  # dialogue | session
    seed: int = 0
    progress: bool = True
    finetune_lr: float = 2e-5
    finetune_batch_size: int = 16
    finetune_epochs: int = 10
    finetune_warmup: float = 0.1
    finetune_patience: int = 2
    finetune_repeats: int = 3
    finetune_max_steps: int | None = None
    finetune_class_weights: str = "none"  # none | balanced | sqrt, as train.class_weights (loss and dev selection)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], **overrides: Any) -> FeaturesConfig:
        values = dict(values or {})
        nested = values.pop("finetune", None) or {}
        values.update({f"finetune_{k}": v for k, v in nested.items()})
        values.update(overrides)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"params: unknown key(s) {unknown} in section 'features'. Known keys: {sorted(known)}.")
        config = cls(**values)
        if config.group_by not in GROUP_BY:
            raise ConfigError(f"features.group_by is '{config.group_by}'; use one of {list(GROUP_BY)}.")
        return config

    def replace(self, **changes: Any) -> FeaturesConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class MediaConfig:
    """What counts as valid media (params.yaml ``validation.media``): the media checks of validation use it."""

    min_duration_s: float = 0.1  # utterance duration: the span when one is given, else the whole file
    max_duration_s: float = 60.0
    min_sample_rate: int = 8_000  # audio stream sample rate, Hz
    max_sample_rate: int = 96_000
    min_frames: int = 1  # decoded video frames inside the utterance span
    span_tolerance_s: float = 0.25  # end_s may exceed the file's duration by this much (container rounding)
    full_decode: bool = False  # decode every frame (slow, thorough) instead of the first ones
    workers: int = 0  # probe threads; 0 = min(4, CPUs)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> MediaConfig:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"params: unknown key(s) {unknown} in 'validation.media'. Known keys: {sorted(known)}.")
        config = cls(**values)
        if not 0 <= config.min_duration_s <= config.max_duration_s:
            raise ConfigError("params: validation.media needs 0 <= min_duration_s <= max_duration_s.")
        if not 0 < config.min_sample_rate <= config.max_sample_rate:
            raise ConfigError("params: validation.media needs 0 < min_sample_rate <= max_sample_rate.")
        return config


@dataclass(frozen=True)
class ValidationConfig:
    """The ``validation:`` section: what a failed check does, a user-given fold column, media bounds."""

    policy: str = "fail"  # fail | quarantine
    folds_column: str | None = None
    media: MediaConfig = field(default_factory=MediaConfig)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ValidationConfig:
        values = dict(values or {})
        _check_keys(values, cls, "validation")
        config = cls(policy=values.get("policy", "fail"), folds_column=values.get("folds_column"),
                     media=MediaConfig.from_dict(values.get("media")))
        if config.policy not in VALIDATION_POLICIES:
            raise ConfigError(f"params: validation.policy is '{config.policy}'; "
                              f"use one of {list(VALIDATION_POLICIES)}.")
        return config


@dataclass(frozen=True)
class GateConfig:
    min_accuracy: float = 0.0
    min_weighted_f1: float = 0.0


@dataclass(frozen=True)
class SearchDimension:
    """One ``tune.space`` entry: a dotted key into a params section and either ``choices`` or a range
    ``low``..``high`` (``log`` for a log scale, ``step`` for a grid; ints when low, high and step are ints)."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step)
                   if v is not None)

    @classmethod
    def from_spec(cls, key: str, spec: Any) -> SearchDimension:
        where = f"tune.space['{key}']"
        section, dot, name = str(key).partition(".")
        if not dot or not name or section not in TUNABLE_SECTIONS:
            raise ConfigError(f"params: {where}: a key is SECTION.FIELD with SECTION one of "
                              f"{list(TUNABLE_SECTIONS)}, e.g. train.lr.")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"params: {where} is {spec!r}; give {{choices: [...]}} or {{low: X, high: Y}}.")
        unknown = sorted(set(spec) - {"choices", "low", "high", "log", "step"})
        if unknown:
            raise ConfigError(f"params: {where} has unknown key(s) {unknown}; use choices, or low/high/log/step.")
        if "choices" in spec:
            return cls._categorical(key, spec, where)
        return cls._range(key, spec, where)

    @classmethod
    def _categorical(cls, key: str, spec: Mapping[str, Any], where: str) -> SearchDimension:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise ConfigError(f"params: {where}: 'choices' is a non-empty list and comes alone (no low/high).")
        bad = [c for c in choices if c is not None and not isinstance(c, bool | int | float | str)]
        if bad:
            raise ConfigError(f"params: {where}: choices must be numbers, strings, booleans or null (got {bad}).")
        return cls(key, choices=tuple(choices))

    @classmethod
    def _range(cls, key: str, spec: Mapping[str, Any], where: str) -> SearchDimension:
        low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
        numbers = [v for v in (low, high, step) if v is not None]
        if low is None or high is None or any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers):
            raise ConfigError(f"params: {where} needs numeric 'low' and 'high' (or a 'choices' list).")
        if not low <= high:
            raise ConfigError(f"params: {where}: low ({low}) is above high ({high}).")
        if not isinstance(log, bool) or (log and (low <= 0 or step is not None)):
            raise ConfigError(f"params: {where}: 'log' is true or false, needs low > 0 and no 'step'.")
        if step is not None and step <= 0:
            raise ConfigError(f"params: {where}: 'step' must be > 0.")
        return cls(key, low=low, high=high, log=log, step=step)


@dataclass(frozen=True)
class TuneConfig:
    """The ``tune:`` section: the budget, the objective and the search space of ``hjcag tune``."""

    trials: int | None = 20  # finished (complete or pruned) trials the study should hold
    minutes: float | None = None  # wall-clock budget of one invocation; null = none
    metric: str = "val_weighted_f1"  # on each fold's validation split: val_weighted_f1 (max) | val_loss (min)
    pruner: str = "median"  # median | none
    startup_trials: int = 5  # trials that are never pruned (the median needs some history)
    warmup_epochs: int = 3  # epochs of a trial's first fold that are never pruned
    space: tuple[SearchDimension, ...] = ()

    @property
    def direction(self) -> str:
        return TUNE_METRICS[self.metric]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TuneConfig:
        values = dict(values or {})
        _check_keys(values, cls, "tune")
        space = values.pop("space", None) or {}
        if not isinstance(space, Mapping):
            raise ConfigError("params: tune.space is a mapping of SECTION.FIELD keys to {choices: [...]} or "
                              "{low: X, high: Y, log: true}.")
        config = cls(**values, space=tuple(SearchDimension.from_spec(k, v) for k, v in space.items()))
        if config.metric not in TUNE_METRICS:
            raise ConfigError(f"params: tune.metric is '{config.metric}'; use one of {list(TUNE_METRICS)}.")
        if config.pruner not in TUNE_PRUNERS:
            raise ConfigError(f"params: tune.pruner is '{config.pruner}'; use one of {list(TUNE_PRUNERS)}.")
        if (config.trials is not None and config.trials < 0) or (config.minutes is not None and config.minutes <= 0):
            raise ConfigError("params: tune.trials must be >= 0 and tune.minutes > 0 (or null for no limit).")
        return config

    def replace(self, **changes: Any) -> TuneConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Params:
    profile: str
    dataset: str
    seed: int
    labels: tuple[str, ...]
    model: ModelConfig
    train: TrainConfig
    gates: GateConfig
    features: FeaturesConfig
    validation: ValidationConfig
    raw: dict[str, Any]
    tune: TuneConfig = field(default_factory=TuneConfig)
    labels_given: bool = False  # labels set on the command line (--labels): the data may hold more classes

    def labels_of(self, dataset: str) -> tuple[str, ...]:
        """``datasets.<dataset>.labels`` of params.yaml (empty when it names none)."""
        return tuple(((self.raw.get("datasets") or {}).get(dataset) or {}).get("labels") or ())

    def with_labels(self, labels: Sequence[str]) -> Params:
        """A copy whose label set (and class order) is `labels`, as a user gave it (``--labels a,b,c``)."""
        labels = tuple(dict.fromkeys(str(x).strip() for x in labels if str(x).strip()))
        if not labels:
            raise ConfigError("--labels needs at least one label, e.g. --labels negative,neutral,positive.")
        return dataclasses.replace(self, labels=labels, labels_given=True)

    def with_overrides(self, model: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> Params:
        """A copy with some model/train fields replaced (used by ablations and CLI options)."""
        model_config = _build(ModelConfig, {**dataclasses.asdict(self.model), **(model or {})}, "model")
        return dataclasses.replace(
            self,
            model=model_config,
            train=_build(TrainConfig, {**dataclasses.asdict(self.train), **(train or {})}, "train"),
            features=self.features.replace(seq_len=model_config.seq_len),
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


def _check_keys(values: Mapping[str, Any], cls: type, section: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"params: unknown key(s) {unknown} in section '{section}'. Known keys: {sorted(known)}.")


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    _check_keys(values, cls, section)
    values = dict(values)
    if "betas" in values:
        values["betas"] = tuple(float(b) for b in values["betas"])
    if "seeds" in values:
        values["seeds"] = tuple(int(s) for s in (values["seeds"] or ()))
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
    seed = int(merged.get("seed", 0))
    model = _build(ModelConfig, merged.get("model", {}), "model")
    return Params(
        profile=profile or "default",
        dataset=dataset,
        seed=seed,
        labels=labels,
        model=model,
        train=_build(TrainConfig, merged.get("train", {}), "train"),
        gates=_build(GateConfig, merged.get("gates", {}), "gates"),
        features=FeaturesConfig.from_dict(merged.get("features") or {}, seq_len=model.seq_len, seed=seed),
        validation=ValidationConfig.from_dict(merged.get("validation")),
        raw=merged,
        tune=TuneConfig.from_dict(merged.get("tune")),
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
