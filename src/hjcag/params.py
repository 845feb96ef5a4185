"""params.yaml: the one source of hyperparameters.

`load_params` reads the file, checks it as a whole (every section, key, type and range, in every profile: see
:mod:`hjcag.schema`; the dataclasses below are the schema), deep-merges the selected profile over the top-level
defaults and returns typed sections. Every stage (CLI, dvc.yaml, KFP components) goes through here, so a value
lives in one place and a bad one is refused before any stage writes anything.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from hjcag.errors import ConfigError
from hjcag.model_catalog import MODEL_NAMES  # model.name (declared in the model catalogue)
from hjcag.schema import (
    Parsed,
    Problem,
    Rule,
    at_least,
    below_one,
    build,
    check_mapping,
    fraction,
    one_of,
    open_fraction,
    positive,
)

MODALITIES = ("t", "a", "v")
MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}
DEFAULT_PARAMS_FILE = Path("params.yaml")
GROUP_BY = ("dialogue", "session")  # features.group_by: what a fold keeps together
VALIDATION_POLICIES = ("fail", "quarantine")
TUNE_METRICS = {"val_weighted_f1": "maximize", "val_loss": "minimize"}  # tune.metric -> its direction
TUNE_PRUNERS = ("median", "none")
TUNABLE_SECTIONS = ("model", "train")  # what a tune.space key may point into (Params.with_overrides takes them)
ACTIVATIONS = ("relu", "gelu", "tanh")  # model.activation
PROTOCOLS = ("cv5", "holdout")  # train.protocol
DEVICES = ("auto", "cpu", "cuda")  # train.device, features.device (or cuda:N)
CLASS_WEIGHTS = ("none", "balanced", "sqrt")  # train.class_weights
CONTEXTS = ("none", "gru", "transformer")  # model.context
CONTEXT_DIRECTIONS = ("causal", "bidirectional")  # model.context_direction
AUDIO_SETS = ("IS10_paraling", "eGeMAPSv02", "ComParE_2016")  # features.audio_set (openSMILE feature sets)
TEXT_FALLBACKS = ("minilm", "none")  # features.text_fallback
DATA_KINDS = ("meld", "iemocap", "manifest")  # data.kind (hjcag prepare --dataset)
DEMO_SIZES = ("tiny", "small")  # demo_data.size


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
    context_lr: float | None = None  # with model.context: the context layer's own learning rate (None = lr)
    context_warm_start: bool = True  # with model.context: train the context-free model first (hjcag.train.fit)


@dataclass(frozen=True)
class FeaturesConfig:
    """The ``features:`` section of params.yaml (``finetune:`` is a nested mapping of the finetune_* keys)."""

    NESTED_PREFIXES: ClassVar[dict[str, str]] = {"finetune": "finetune_"}
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
    def from_dict(cls, values: Mapping[str, Any] | None, **overrides: Any) -> FeaturesConfig:
        values = _checked(cls, values, "features")
        nested = values.pop("finetune", None) or {}
        values.update({f"finetune_{k}": v for k, v in nested.items()})
        return _build(cls, {**values, **overrides}, "features")

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

    def __post_init__(self) -> None:  # across fields, so checked on the merged values
        if not 0 <= self.min_duration_s <= self.max_duration_s:
            raise ConfigError(f"validation.media needs 0 <= min_duration_s <= max_duration_s (got "
                              f"{self.min_duration_s} and {self.max_duration_s}).")
        if not 0 < self.min_sample_rate <= self.max_sample_rate:
            raise ConfigError(f"validation.media needs 0 < min_sample_rate <= max_sample_rate (got "
                              f"{self.min_sample_rate} and {self.max_sample_rate}).")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> MediaConfig:
        return _build(cls, values, "validation.media")


@dataclass(frozen=True)
class ValidationConfig:
    """The ``validation:`` section: what a failed check does, a user-given fold column, media bounds."""

    policy: str = "fail"  # fail | quarantine
    folds_column: str | None = None
    media: MediaConfig = field(default_factory=MediaConfig)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ValidationConfig:
        return _build(cls, values, "validation")


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
            raise ConfigError(f"{where}: a key is SECTION.FIELD with SECTION one of "
                              f"{list(TUNABLE_SECTIONS)}, e.g. train.lr.")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where} is {spec!r}; give {{choices: [...]}} or {{low: X, high: Y}}.")
        unknown = sorted(set(spec) - {"choices", "low", "high", "log", "step"})
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {unknown}; use choices, or low/high/log/step.")
        if "choices" in spec:
            return cls._categorical(key, spec, where)
        return cls._range(key, spec, where)

    @classmethod
    def _categorical(cls, key: str, spec: Mapping[str, Any], where: str) -> SearchDimension:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: 'choices' is a non-empty list and comes alone (no low/high).")
        bad = [c for c in choices if c is not None and not isinstance(c, bool | int | float | str)]
        if bad:
            raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null (got {bad}).")
        return cls(key, choices=tuple(choices))

    @classmethod
    def _range(cls, key: str, spec: Mapping[str, Any], where: str) -> SearchDimension:
        low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
        numbers = [v for v in (low, high, step) if v is not None]
        if low is None or high is None or any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers):
            raise ConfigError(f"{where} needs numeric 'low' and 'high' (or a 'choices' list).")
        if not low <= high:
            raise ConfigError(f"{where}: low ({low}) is above high ({high}).")
        if not isinstance(log, bool) or (log and (low <= 0 or step is not None)):
            raise ConfigError(f"{where}: 'log' is true or false, needs low > 0 and no 'step'.")
        if step is not None and step <= 0:
            raise ConfigError(f"{where}: 'step' must be > 0.")
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
        values = _checked(cls, values, "tune")
        space = values.pop("space", None) or {}
        return cls(**values, space=tuple(SearchDimension.from_spec(k, v) for k, v in space.items()))

    def replace(self, **changes: Any) -> TuneConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TunedOn:
    """``tuned_on:`` of a profile ``hjcag tune`` wrote: what its values were picked on. Training with the profile on
    rows it was tuned on, under any protocol but holdout after holdout tuning, is refused (:func:`hjcag.stages.
    refuse_leaks`): those rows' labels chose the values and would be reported as test."""

    protocol: str = "cv5"  # the train.protocol of the study (by default the stricter reading: cv5)
    study: str = ""
    utterances: int = 0  # rows of the features tuned on
    rows: tuple[str, ...] = ()  # a sample of them: the smallest hashes of (utterance_id, label) (hjcag.train.tune)


@dataclass(frozen=True)
class DataConfig:
    """``data:``: the dataset `dvc repro` prepares (dvc.yaml's prepare stage reads it)."""

    kind: str = "meld"
    source: str = "data/demo"


@dataclass(frozen=True)
class DemoDataConfig:
    """``demo_data:``: what the demo_data stage of dvc.yaml generates."""

    size: str = "small"
    seed: int = 13
    context_cue: float = 0.0  # share of echo turns (hjcag.data.synthetic)


@dataclass(frozen=True)
class DatasetConfig:
    """One entry of ``datasets:``: a dataset's label set, in class order."""

    labels: tuple[str, ...] = ()


def _check_profiles(value: Any, where: str, problems: list[Problem]) -> dict[str, Any]:
    """``profiles:``: each profile may set any section of the file but ``profile`` and ``profiles``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(Problem(where, f"{where} is {value!r}; it takes a mapping of profile names to sections"))
        return {}
    out: dict[str, Any] = {}
    for name, body in value.items():
        at = f"{where}.{name}"
        for key in ("profile", "profiles"):
            if isinstance(body, Mapping) and key in body:
                problems.append(Problem(f"{at}.{key}", f"{at} sets '{key}', which only the top level of the file "
                                                       "may set; remove it from the profile"))
        body = {k: v for k, v in body.items() if k not in ("profile", "profiles")} if isinstance(body, Mapping) \
            else body
        out[str(name)] = check_mapping(body, ParamsFile, at, RULES, problems, noun="section")
    return out


def _check_space(value: Any, where: str, problems: list[Problem]) -> dict[str, Any]:
    """``tune.space``: SECTION.FIELD -> {choices: [...]} or {low, high[, log, step]} (:class:`SearchDimension`)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(Problem(where, f"{where} is a mapping of SECTION.FIELD keys to {{choices: [...]}} or "
                                       "{low: X, high: Y, log: true}"))
        return {}
    for key, spec in value.items():
        try:
            SearchDimension.from_spec(key, spec)
        except ConfigError as exc:
            problems.append(Problem(f"{where}.{key}", str(exc).rstrip(".")))
    return dict(value)


@dataclass(frozen=True)
class ParamsFile:
    """The sections params.yaml may hold: the schema :func:`check_params_document` checks the file against."""

    profile: str | None = None  # the profile used when no --profile is given
    dataset: str | None = None  # the key of `datasets` whose labels apply (default: the profile's name)
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    demo_data: DemoDataConfig = field(default_factory=DemoDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    gates: GateConfig = field(default_factory=GateConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)
    tuned_on: TunedOn | None = None  # written by hjcag tune into the profile it writes; not set by hand


_DEVICE = one_of(DEVICES, pattern=r"cuda:\d+", shown="cuda:N")

# What a value must be beyond its type (a number without a rule here must be >= 0; see hjcag.schema).
RULES: dict[type, dict[str, Rule | Parsed]] = {
    ParamsFile: {"profiles": Parsed(_check_profiles)},
    DataConfig: {"kind": one_of(DATA_KINDS)},
    DemoDataConfig: {"size": one_of(DEMO_SIZES), "context_cue": below_one},
    ModelConfig: {"name": one_of(MODEL_NAMES), "seq_len": positive, "widths": positive, "gate_width": positive,
                  "classifier_hidden": positive, "dropout": below_one, "activation": one_of(ACTIVATIONS),
                  "mult": positive, "context": one_of(CONTEXTS), "context_window": positive,
                  "context_direction": one_of(CONTEXT_DIRECTIONS)},
    TrainConfig: {"protocol": one_of(PROTOCOLS), "folds": at_least(2), "val_fraction": open_fraction,
                  "epochs": positive, "batch_size": positive, "betas": below_one,
                  "step_size": positive, "gamma": positive, "patience": at_least(1), "device": _DEVICE,
                  "modality_dropout": below_one, "class_weights": one_of(CLASS_WEIGHTS)},
    FeaturesConfig: {"text_fallback": one_of(TEXT_FALLBACKS), "max_tokens": positive, "text_batch_size": positive,
                     "audio_set": one_of(AUDIO_SETS), "audio_batch_size": positive, "visual_batch_size": positive,
                     "visual_frames": positive, "image_size": positive, "device": _DEVICE, "seq_len": positive,
                     "group_by": one_of(GROUP_BY), "finetune_batch_size": positive,
                     "finetune_epochs": positive, "finetune_warmup": below_one, "finetune_repeats": positive,
                     "finetune_max_steps": positive, "finetune_class_weights": one_of(CLASS_WEIGHTS)},
    MediaConfig: {"max_duration_s": positive, "min_sample_rate": positive, "max_sample_rate": positive},
    ValidationConfig: {"policy": one_of(VALIDATION_POLICIES)},
    GateConfig: {"min_accuracy": fraction, "min_weighted_f1": fraction},
    TunedOn: {"protocol": one_of(PROTOCOLS)},
    TuneConfig: {"minutes": positive, "metric": one_of(tuple(TUNE_METRICS)), "pruner": one_of(TUNE_PRUNERS),
                 "space": Parsed(_check_space)},
}


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
    demo_data: DemoDataConfig = field(default_factory=DemoDataConfig)
    labels_given: bool = False  # labels set on the command line (--labels): the data may hold more classes
    tuned_on: TunedOn | None = None  # the profile's values were tuned by hjcag tune on these data

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


def _checked(cls: type, values: Any, where: str) -> dict[str, Any]:
    """`values` checked against `cls` (keys, types, per-field rules) and coerced; the first problem is raised."""
    problems: list[Problem] = []
    checked = check_mapping(values, cls, where, RULES, problems)
    _raise_first(problems)
    return checked


def _build(cls: type, values: Any, where: str) -> Any:
    """The section `cls` from `values`, checked (see :func:`_checked`); checks across fields run in the class."""
    return build(cls, _checked(cls, values, where))


def _raise_first(problems: Sequence[Problem], source: str = "") -> None:
    """One line: the first problem, then where the others are (a user fixes one file in one go)."""
    if not problems:
        return
    others = [p.where for p in problems[1:]]
    also = f" (also check {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})" if others else ""
    text = f"{source + ': ' if source else ''}{problems[0].message}{also}"
    raise ConfigError(text if text.endswith((".", "?")) else text + ".")


def load_params(path: str | Path | None = None, profile: str | None = None) -> Params:
    """Read params.yaml (or `path`) and apply `profile` (default: the file's `profile:` key)."""
    path = Path(path) if path is not None else DEFAULT_PARAMS_FILE
    if not path.exists():
        raise ConfigError(f"params file '{path}' not found. Pass --params PATH or run from the repository root.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file '{path}' is not valid YAML: {' '.join(str(exc).split())}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"params file '{path}' cannot be read ({exc}); pass a readable --params file.") from exc
    return params_from_dict(raw, profile, source=str(path))


def check_params_document(raw: Any, source: str = "params") -> dict[str, Any]:
    """The whole params document checked (every section, key, type and range, every profile) and coerced; raises
    ConfigError naming `source`, the location and the fix of the first problem."""
    problems: list[Problem] = []
    doc = check_mapping(raw, ParamsFile, "", RULES, problems, noun="section")
    _raise_first(problems, source)
    return doc


def params_from_dict(raw: dict[str, Any], profile: str | None = None, source: str = "params") -> Params:
    doc = check_params_document(raw, source)
    profiles = doc.get("profiles") or {}
    profile = profile or doc.get("profile")
    merged = {k: v for k, v in doc.items() if k != "profiles"}
    if profile:
        if profile not in profiles:
            raise ConfigError(
                f"{source}: profile '{profile}' is not defined. Defined profiles: {sorted(profiles)}."
            )
        merged = deep_merge(merged, profiles[profile] or {})
    dataset = merged.get("dataset") or profile or "custom"
    datasets = merged.get("datasets") or {}
    labels = tuple((datasets.get(dataset) or {}).get("labels") or ())
    seed = int(merged.get("seed") or 0)
    try:  # the values are checked; what can still fail here is a check across fields of the merged sections
        model = _build(ModelConfig, merged.get("model") or {}, "model")
        return Params(
            profile=profile or "default",
            dataset=dataset,
            seed=seed,
            labels=labels,
            model=model,
            train=_build(TrainConfig, merged.get("train") or {}, "train"),
            gates=_build(GateConfig, merged.get("gates") or {}, "gates"),
            features=FeaturesConfig.from_dict(merged.get("features") or {}, seq_len=model.seq_len, seed=seed),
            validation=ValidationConfig.from_dict(merged.get("validation")),
            raw=merged,
            tune=TuneConfig.from_dict(merged.get("tune")),
            demo_data=_build(DemoDataConfig, merged.get("demo_data") or {}, "demo_data"),
            tuned_on=_build(TunedOn, merged["tuned_on"], "tuned_on") if merged.get("tuned_on") else None,
        )
    except ConfigError as exc:
        where = f" (profile '{profile}')" if profile else ""
        raise ConfigError(f"{source}{where}: {exc}") from None


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
