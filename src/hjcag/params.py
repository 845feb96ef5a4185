"""params.yaml: the one source of hyperparameters.

`load_params` reads the file, checks it as a whole (every section, key, type and range, in every profile: see
:mod:`hjcag.schema`; the dataclasses below are the schema, each field with its rule), deep-merges the selected
profile over the top-level defaults and returns typed sections. Every stage (CLI, dvc.yaml, KFP components) goes
through here, so a value lives in one place and a bad one is refused before any stage writes anything. A section
built in code (``ModelConfig(...)``, ``dataclasses.replace``) runs the same checks on itself
(:class:`hjcag.schema.Checked`), so code that receives one need not check it again.
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
    Checked,
    Parsed,
    Problem,
    at_least,
    below_one,
    build,
    check_mapping,
    fraction,
    one_of,
    open_fraction,
    positive,
    raise_first,
    ruled,
)

MODALITIES = ("t", "a", "v")
MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}
DEFAULT_PARAMS_FILE = Path("params.yaml")
# the checkout's params.yaml beside an installed hjcag (src/hjcag -> the checkout; the images install it editable)
SHIPPED_PARAMS_FILE = Path(__file__).resolve().parents[2] / "params.yaml"
GROUP_BY = ("dialogue", "session")  # features.group_by: what a fold keeps together
VALIDATION_POLICIES = ("fail", "quarantine")
# a score on the validation rows -> its direction: tune.metric and features.finetune.select choose among these
VALIDATION_METRICS = {"val_weighted_f1": "maximize", "val_loss": "minimize"}
TUNE_PRUNERS = ("median", "none")
TUNABLE_SECTIONS = ("model", "train")  # what a tune.space key may point into (Params.with_overrides takes them)
ACTIVATIONS = ("relu", "gelu", "tanh")  # model.activation
PROTOCOLS = ("cv5", "holdout")  # train.protocol
DEVICES = ("auto", "cpu", "cuda")  # train.device, features.device (or cuda:N)
CLASS_WEIGHTS = ("none", "balanced", "sqrt")  # train.class_weights
CONTEXTS = ("none", "gru", "transformer")  # the context layer a model is built with (model.context, resolved)
CONTEXT_AUTO = "auto"  # model.context: AUTO_CONTEXT where the features carry the dialogue order, else none
AUTO_CONTEXT = "gru"  # what auto reads with (README "Real data": MELD dev, EmoryNLP checked)
CONTEXT_DIRECTIONS = ("causal", "bidirectional")  # model.context_direction
AUDIO_SETS = ("IS10_paraling", "eGeMAPSv02", "ComParE_2016")  # features.audio_set (openSMILE feature sets)
TEXT_FALLBACKS = ("minilm", "none")  # features.text_fallback
DATA_KINDS = ("meld", "iemocap", "manifest")  # data.kind (hjcag prepare --dataset)
DEMO_SIZES = ("tiny", "small")  # demo_data.size

_DEVICE = one_of(DEVICES, pattern=r"cuda:\d+", shown="cuda:N")

# Each field carries what its value must be beyond its type (ruled(default, rule)); a number without a rule must be
# >= 0 (see hjcag.schema). SECTION is where the section sits in params.yaml, named in messages.


@dataclass(frozen=True)
class ModelConfig(Checked):
    SECTION: ClassVar[str] = "model"
    name: str = ruled("hjcag", one_of(MODEL_NAMES))
    seq_len: int = ruled(30, positive)
    widths: dict[str, int] = ruled(rule=positive, factory=lambda: {"t": 1024, "a": 1582, "v": 512})
    gate_width: int = ruled(512, positive)
    classifier_hidden: int = ruled(256, positive)
    dropout: float = ruled(0.1, below_one)
    activation: str = ruled("relu", one_of(ACTIVATIONS))
    bimodal: bool = True
    trimodal: bool = True
    gate: bool = True
    mult: dict[str, int] = ruled(rule=positive, factory=lambda: {"d_model": 64, "heads": 4, "layers": 2})
    # Conversation context (issue 10, docs/model.md "Conversation context"): none = the paper's model, one utterance
    # at a time; gru | transformer = each utterance's fused vector read together with those of up to
    # `context_window` neighbouring utterances of its dialogue. causal = only the preceding ones (what a live
    # endpoint sees); bidirectional = also the following ones (offline evaluation only, labelled in every report).
    # auto = gru where the features carry the utterances' order in their dialogue, none where they do not
    # (resolved against the features when training starts: :func:`resolve_context`).
    context: str = ruled("none", one_of((*CONTEXTS, CONTEXT_AUTO)))
    context_window: int = ruled(8, positive)
    context_direction: str = ruled("causal", one_of(CONTEXT_DIRECTIONS))
    # Not in the paper (docs/model.md "Probe blend"): blend the trained model with a logistic regression on its own
    # mean-pooled inputs, the blend weight chosen on validation (0 = the probe ... 1 = the model alone).
    probe_blend: bool = False


def resolve_context(config: ModelConfig, has_order: bool) -> ModelConfig:
    """`config` with `context: auto` made concrete: AUTO_CONTEXT when the features carry the dialogue order
    (`has_order`), none otherwise (context needs the order); any other setting as it is."""
    if config.context != CONTEXT_AUTO:
        return config
    return dataclasses.replace(config, context=AUTO_CONTEXT if has_order else "none")


@dataclass(frozen=True)
class TrainConfig(Checked):
    SECTION: ClassVar[str] = "train"
    protocol: str = ruled("cv5", one_of(PROTOCOLS))
    folds: int = ruled(5, at_least(2))
    val_fraction: float = ruled(0.1, open_fraction)
    epochs: int = ruled(200, positive)
    batch_size: int = ruled(64, positive)
    lr: float = 1e-5
    betas: tuple[float, float] = ruled((0.9, 0.99), below_one)
    weight_decay: float = 1e-5
    step_size: int = ruled(10, positive)
    gamma: float = ruled(0.95, positive)
    patience: int = ruled(20, at_least(1))
    device: str = ruled("auto", _DEVICE)
    num_threads: int = 0
    seeds: tuple[int, ...] = ()  # train every fold once per seed (figures: mean ± std over folds x seeds)
    # per sample, each present modality dropped with this probability (never all)
    modality_dropout: float = ruled(0.0, below_one)
    # none | balanced | sqrt (inverse class frequency of the fold's training part, or its square root)
    class_weights: str = ruled("none", one_of(CLASS_WEIGHTS))
    context_lr: float | None = None  # with model.context: the context layer's own learning rate (None = lr)
    context_warm_start: bool = True  # with model.context: train the context-free model first (hjcag.train.fit)


@dataclass(frozen=True)
class FeaturesConfig(Checked):
    """The ``features:`` section of params.yaml (``finetune:`` is a nested mapping of the finetune_* keys)."""

    SECTION: ClassVar[str] = "features"
    NESTED_PREFIXES: ClassVar[dict[str, str]] = {"finetune": "finetune_"}
    text_model: str = "roberta-large"
    text_fallback: str = ruled("minilm", one_of(TEXT_FALLBACKS))  # minilm | none (fail instead of falling back)
    max_tokens: int = ruled(128, positive)
    # preceding turns of its dialogue the text encoder reads with each utterance (0 = the utterance alone; see
    # hjcag.features.text_context for the input format)
    text_context: int = ruled(0, at_least(0))
    text_batch_size: int = ruled(32, positive)
    audio_set: str = ruled("IS10_paraling", one_of(AUDIO_SETS))  # IS10_paraling | eGeMAPSv02 | ComParE_2016
    audio_min_duration_s: float = 0.25
    visual_model: str = "microsoft/resnet-50"
    visual_weights_dir: str | None = None
    visual_arch: dict[str, Any] | None = None  # ResNetConfig overrides (random weights), e.g. a tiny test net
    # utterances per cache write (openSMILE runs one signal at a time)
    audio_batch_size: int = ruled(16, positive)
    visual_batch_size: int = ruled(4, positive)  # utterances per forward pass (x L frames)
    # frames embedded per utterance (None = L); fewer are repeated to L
    visual_frames: int | None = ruled(None, positive)
    image_size: int = ruled(224, positive)
    device: str = ruled("auto", _DEVICE)
    workers: int = 0  # decode / openSMILE threads; 0 = min(8, usable CPUs)
    cache_dir: str | None = ".cache/hjcag/features"
    seq_len: int = ruled(30, positive)
    group_by: str = ruled("dialogue", one_of(GROUP_BY))  # dialogue | session
    seed: int = 0
    progress: bool = True
    finetune_lr: float = 2e-5
    finetune_batch_size: int = ruled(16, positive)
    finetune_epochs: int = ruled(10, positive)
    finetune_warmup: float = ruled(0.1, below_one)
    finetune_patience: int = ruled(2, at_least(1))  # epochs without a better `select` score before stopping
    finetune_repeats: int = ruled(3, positive)
    finetune_max_steps: int | None = ruled(None, positive)
    # none | balanced | sqrt, as train.class_weights (loss and dev selection)
    finetune_class_weights: str = ruled("none", one_of(CLASS_WEIGHTS))
    # val_loss (weighted as the training loss) | val_weighted_f1: picks the epoch and repeat, drives the patience
    finetune_select: str = ruled("val_loss", one_of(tuple(VALIDATION_METRICS)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, **overrides: Any) -> FeaturesConfig:
        values = _checked(cls, values, "features")
        nested = values.pop("finetune", None) or {}
        values.update({f"finetune_{k}": v for k, v in nested.items()})
        return _build(cls, {**values, **overrides}, "features")

    def replace(self, **changes: Any) -> FeaturesConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class MediaConfig(Checked):
    """What counts as valid media (params.yaml ``validation.media``): the media checks of validation use it."""

    SECTION: ClassVar[str] = "validation.media"
    min_duration_s: float = 0.1  # utterance duration: the span when one is given, else the whole file
    max_duration_s: float = ruled(60.0, positive)
    min_sample_rate: int = ruled(8_000, positive)  # audio stream sample rate, Hz
    max_sample_rate: int = ruled(96_000, positive)
    min_frames: int = 1  # decoded video frames inside the utterance span
    span_tolerance_s: float = 0.25  # end_s may exceed the file's duration by this much (container rounding)
    full_decode: bool = False  # decode every frame (slow, thorough) instead of the first ones
    workers: int = 0  # probe threads; 0 = min(4, usable CPUs)

    def __post_init__(self) -> None:  # across fields, so checked on the merged values
        super().__post_init__()
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
class ValidationConfig(Checked):
    """The ``validation:`` section: what a failed check does, a user-given fold column, media bounds."""

    SECTION: ClassVar[str] = "validation"
    policy: str = ruled("fail", one_of(VALIDATION_POLICIES))  # fail | quarantine
    folds_column: str | None = None
    media: MediaConfig = field(default_factory=MediaConfig)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ValidationConfig:
        return _build(cls, values, "validation")


@dataclass(frozen=True)
class GateConfig(Checked):
    SECTION: ClassVar[str] = "gates"
    min_accuracy: float = ruled(0.0, fraction)
    min_weighted_f1: float = ruled(0.0, fraction)


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
class TuneConfig(Checked):
    """The ``tune:`` section: the budget, the objective and the search space of ``hjcag tune``."""

    SECTION: ClassVar[str] = "tune"
    trials: int | None = 20  # finished (complete or pruned) trials the study should hold
    minutes: float | None = ruled(None, positive)  # wall-clock budget of one invocation; null = none
    # on each fold's validation split: val_weighted_f1 (max) | val_loss (min)
    metric: str = ruled("val_weighted_f1", one_of(tuple(VALIDATION_METRICS)))
    pruner: str = ruled("median", one_of(TUNE_PRUNERS))  # median | none
    startup_trials: int = 5  # trials that are never pruned (the median needs some history)
    warmup_epochs: int = 3  # epochs of a trial's first fold that are never pruned
    space: tuple[SearchDimension, ...] = ruled((), Parsed(_check_space))

    @property
    def direction(self) -> str:
        return VALIDATION_METRICS[self.metric]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TuneConfig:
        values = _checked(cls, values, "tune")
        space = values.pop("space", None) or {}
        return cls(**values, space=tuple(SearchDimension.from_spec(k, v) for k, v in space.items()))

    def replace(self, **changes: Any) -> TuneConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TunedOn(Checked):
    """``tuned_on:`` of a profile ``hjcag tune`` wrote: what its values were picked on. Training with the profile on
    rows it was tuned on, under any protocol but holdout after holdout tuning, is refused (:func:`hjcag.stages.
    refuse_leaks`): those rows' labels chose the values and would be reported as test."""

    SECTION: ClassVar[str] = "tuned_on"
    # the train.protocol of the study (by default the stricter reading: cv5)
    protocol: str = ruled("cv5", one_of(PROTOCOLS))
    study: str = ""
    utterances: int = 0  # rows of the features tuned on
    rows: tuple[str, ...] = ()  # a sample of them: the smallest hashes of (utterance_id, label) (hjcag.train.tune)


@dataclass(frozen=True)
class DataConfig(Checked):
    """``data:``: the dataset `dvc repro` prepares (dvc.yaml's prepare stage reads it)."""

    SECTION: ClassVar[str] = "data"
    kind: str = ruled("meld", one_of(DATA_KINDS))
    source: str = "data/demo"


@dataclass(frozen=True)
class DemoDataConfig(Checked):
    """``demo_data:``: what the demo_data stage of dvc.yaml generates."""

    SECTION: ClassVar[str] = "demo_data"
    size: str = ruled("small", one_of(DEMO_SIZES))
    seed: int = 13
    context_cue: float = ruled(0.0, below_one)  # share of echo turns (hjcag.data.synthetic)


@dataclass(frozen=True)
class DatasetConfig(Checked):
    """One entry of ``datasets:``: a dataset's label set, in class order."""

    SECTION: ClassVar[str] = "datasets.<name>"
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
        out[str(name)] = check_mapping(body, ParamsFile, at, problems, noun="section")
    return out


@dataclass(frozen=True)
class ParamsFile(Checked):
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
    profiles: dict[str, Any] = ruled(rule=Parsed(_check_profiles), factory=dict)
    tuned_on: TunedOn | None = None  # written by hjcag tune into the profile it writes; not set by hand


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
    checked = check_mapping(values, cls, where, problems)
    raise_first(problems)
    return checked


def _build(cls: type, values: Any, where: str) -> Any:
    """The section `cls` from `values`, checked (see :func:`_checked`); checks across fields run in the class."""
    return build(cls, _checked(cls, values, where))


def load_params(path: str | Path | None = None, profile: str | None = None) -> Params:
    """Read params.yaml (or `path`) and apply `profile` (default: the file's `profile:` key)."""
    path = Path(path) if path is not None else DEFAULT_PARAMS_FILE
    if not path.exists():
        shipped = (f" (the defaults of the installed hjcag are {SHIPPED_PARAMS_FILE}: copy it here to start your own)"
                   if SHIPPED_PARAMS_FILE.is_file() and not path.is_absolute() else "")
        where = "" if path.is_absolute() else f" in {Path.cwd()}"
        raise ConfigError(f"params file '{path}' not found{where}. Pass --params PATH{shipped} or run from the "
                          "repository root.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"params file '{path}' cannot be read ({exc}); pass a readable --params file.") from exc
    return params_from_text(text, profile, source=str(path))


def params_from_text(text: str, profile: str | None = None, source: str = "params") -> Params:
    """Params from the text of a params.yaml; `source` names it in errors."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from exc
    return params_from_dict(raw, profile, source=source)


def check_params_document(raw: Any, source: str = "params") -> dict[str, Any]:
    """The whole params document checked (every section, key, type and range, every profile) and coerced; raises
    ConfigError naming `source`, the location and the fix of the first problem."""
    problems: list[Problem] = []
    doc = check_mapping(raw, ParamsFile, "", problems, noun="section")
    raise_first(problems, source)
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
