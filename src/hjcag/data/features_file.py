"""The pre-extracted features format: the interface users script against.

An ``.npz`` with keys

- ``utterance_id`` (N,), ``label`` (N,, strings), ``group`` (N,, dialogue or session id)
- optional ``split`` (N,, train/dev/test), ``speaker`` (N,) and ``dialogue`` (N,; when ``group`` is a session: the
  holdout protocol carves its dev split by dialogue)
- optional ``order`` (N,, numbers): the utterance's position in its dialogue (an index or a start time; only the
  order within a dialogue matters). Conversation context (``model.context``) needs it; the dialogue is ``dialogue``
  when present, else ``group``.
- any of ``text``, ``audio``, ``visual``: float arrays of shape (N, d) or (N, L, d)
- optional ``text_finetuned``: a 0-d string array holding JSON (``base_model``, ``train_rows``, ``dev_rows``,
  ``labels``), written by ``hjcag features`` when the text encoder was fine-tuned on this dataset's train rows
  (``hjcag finetune-text``). It travels inside the file, so a copied ``.npz`` keeps it: training refuses such text
  features outside the holdout protocol (:func:`hjcag.stages.refuse_leaks`).
- optional ``text_context``: a 0-d integer k > 0, written by ``hjcag features`` when the text encoder read each
  utterance with its k preceding turns (``features.text_context``). It travels inside the file for the same reason:
  a run trained on a copied ``.npz`` still records how its text was read, so serving reads raw text the same way or
  refuses it (:func:`hjcag.stages.train`). Absent: 0, each utterance alone.

Sequences (N, T, d) are aligned to L steps: longer ones are cropped and shorter ones zero-padded (a warning says
how many). Utterance-level vectors (N, d) are read as one step, (N, 1, d), when every modality a model reads is
one: L identical steps would only repeat the same work L times (docs/model.md, "Inputs"). Beside sequences they are
broadcast over L, as the paper does for audio functionals, since the joint representation concatenates the
modalities step by step. The :class:`FeatureSet` remembers which modalities were vectors (``vectors``), so that
selecting only those (``--modalities``) reads them as one step again and saving writes them back as (N, d).
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hjcag.errors import FeatureFileError, HjcagError
from hjcag.params import MODALITIES, MODALITY_NAMES

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("utterance_id", "label", "group")
OPTIONAL_KEYS = ("split", "speaker", "dialogue")
FINETUNED_KEY = "text_finetuned"
TEXT_CONTEXT_KEY = "text_context"
SPLITS = ("train", "dev", "test")
FIX_HINT = "See README 'Pre-extracted features' for the expected keys and shapes."
MIN_CLASSES = 2  # what a classifier needs; one class "trains" to 100 % accuracy and says nothing


@dataclass
class FeatureSet:
    """Features of N utterances, aligned to one step count for all modalities: arrays (N, L, d_m) float32, where L
    is 1 when every modality is an utterance vector (`vectors`), else the L the set was loaded with."""

    utterance_id: np.ndarray
    label: np.ndarray
    group: np.ndarray
    features: dict[str, np.ndarray]
    split: np.ndarray | None = None
    speaker: np.ndarray | None = None
    dialogue: np.ndarray | None = None
    label_names: tuple[str, ...] = field(default_factory=tuple)
    order: np.ndarray | None = None  # (N,) float64: position within the dialogue
    text_finetuned: dict[str, Any] | None = None  # what the text encoder was fine-tuned on (the file's mark)
    text_context: int = 0  # preceding turns the text encoder read with each utterance (the file's mark)
    vectors: tuple[str, ...] = ()  # the modalities that were utterance vectors (N, d) in the source

    @property
    def conversation(self) -> np.ndarray:
        """(N,) the dialogue each utterance belongs to: ``dialogue`` when given, else ``group``."""
        return self.dialogue if self.dialogue is not None else self.group

    def __post_init__(self) -> None:
        if not self.label_names:
            self.label_names = tuple(sorted({str(x) for x in self.label}))

    def __len__(self) -> int:
        return len(self.utterance_id)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.features)

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(x.shape[-1]) for m, x in self.features.items()}

    @property
    def seq_len(self) -> int:
        return int(next(iter(self.features.values())).shape[1])

    @property
    def targets(self) -> np.ndarray:
        """Labels as class indices into ``label_names``."""
        index = {name: i for i, name in enumerate(self.label_names)}
        return np.array([index[str(x)] for x in self.label], dtype=np.int64)

    def subset(self, idx: np.ndarray) -> FeatureSet:
        return FeatureSet(
            utterance_id=self.utterance_id[idx],
            label=self.label[idx],
            group=self.group[idx],
            features={m: x[idx] for m, x in self.features.items()},
            split=None if self.split is None else self.split[idx],
            speaker=None if self.speaker is None else self.speaker[idx],
            dialogue=None if self.dialogue is None else self.dialogue[idx],
            label_names=self.label_names,
            order=None if self.order is None else self.order[idx],
            text_finetuned=self.text_finetuned,
            text_context=self.text_context,
            vectors=self.vectors,
        )

    def select(self, modalities: Sequence[str]) -> FeatureSet:
        """Keep only `modalities`; a clear error names what the file lacks. When all of them are utterance
        vectors, they are one step again (a set that also held sequences broadcast them over L)."""
        missing = [m for m in modalities if m not in self.features]
        if missing:
            have = ", ".join(MODALITY_NAMES[m] for m in self.modalities) or "none"
            raise FeatureFileError(
                f"modalities {[MODALITY_NAMES[m] for m in missing]} were requested but the features hold only "
                f"[{have}]. Drop them from --modalities or add the '{MODALITY_NAMES[missing[0]]}' key "
                f"to the features file."
            )
        vectors = tuple(m for m in self.vectors if m in modalities)
        one_step = set(modalities) <= set(vectors)
        return FeatureSet(
            utterance_id=self.utterance_id,
            label=self.label,
            group=self.group,
            features={m: np.ascontiguousarray(self.features[m][:, :1]) if one_step else self.features[m]
                      for m in modalities},
            split=self.split,
            speaker=self.speaker,
            dialogue=self.dialogue,
            label_names=self.label_names,
            order=self.order,
            text_finetuned=self.text_finetuned if "t" in modalities else None,
            text_context=self.text_context if "t" in modalities else 0,
            vectors=vectors,
        )


def align_to_length(x: np.ndarray, seq_len: int) -> np.ndarray:
    """(N, d) -> broadcast to (N, L, d); (N, T, d) -> crop or zero-pad to (N, L, d). With L = 1 a vector is one
    step, (N, 1, d)."""
    if x.ndim == 2:
        return np.repeat(x[:, None, :], seq_len, axis=1)
    n, t, d = x.shape
    if t >= seq_len:
        return x[:, :seq_len]
    out = np.zeros((n, seq_len, d), dtype=x.dtype)
    out[:, :t] = x
    return out


def check_modality_array(key: str, value: np.ndarray, n: int, source: str) -> np.ndarray:
    if value.dtype == object or not np.issubdtype(value.dtype, np.number):
        raise FeatureFileError(f"{source}: key '{key}' must be a float array, got dtype {value.dtype}. {FIX_HINT}")
    if value.ndim not in (2, 3):
        raise FeatureFileError(
            f"{source}: key '{key}' has shape {value.shape}; expected (N, d) or (N, L, d) with N={n}. {FIX_HINT}"
        )
    if value.shape[0] != n:
        raise FeatureFileError(
            f"{source}: key '{key}' has {value.shape[0]} rows but 'utterance_id' has {n}. "
            f"Every array must have one row per utterance. {FIX_HINT}"
        )
    if value.shape[-1] == 0:
        raise FeatureFileError(f"{source}: key '{key}' has feature width 0. {FIX_HINT}")
    finite = np.isfinite(value)
    if not finite.all():
        rows = np.unique(np.nonzero(~finite.reshape(n, -1))[0])
        raise FeatureFileError(
            f"{source}: key '{key}' holds NaN or inf values in {len(rows)} utterance(s), first rows "
            f"{rows[:5].tolist()}. Re-extract them or drop those rows before training."
        )
    return value.astype(np.float32, copy=False)


def feature_set_from_arrays(
    arrays: Mapping[str, np.ndarray],
    seq_len: int,
    label_names: Sequence[str] = (),
    source: str = "features",
) -> FeatureSet:
    """Validate raw arrays (as read from an .npz) and build an aligned :class:`FeatureSet`."""
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise FeatureFileError(
            f"{source}: missing required key(s) {missing}. Found keys {sorted(arrays)}. {FIX_HINT}"
        )
    ids = np.asarray(arrays["utterance_id"]).astype(str)
    if ids.ndim != 1:
        raise FeatureFileError(f"{source}: 'utterance_id' must be 1-D (N,), got shape {ids.shape}.")
    n = len(ids)
    if n == 0:
        raise FeatureFileError(f"{source}: the file holds no utterances.")
    dup = _duplicates(ids)
    if dup:
        raise FeatureFileError(f"{source}: duplicate utterance ids {dup[:5]}; each utterance_id must be unique.")
    columns: dict[str, np.ndarray] = {}
    for key in ("label", "group", *OPTIONAL_KEYS):
        if key not in arrays:
            continue
        col = np.asarray(arrays[key]).astype(str)
        if col.shape != (n,):
            raise FeatureFileError(f"{source}: key '{key}' has shape {col.shape}; expected ({n},) like 'utterance_id'.")
        columns[key] = col
    if "split" in columns:
        bad = sorted(str(x) for x in set(columns["split"]) - set(SPLITS))
        if bad:
            raise FeatureFileError(f"{source}: 'split' holds {bad}; allowed values are {list(SPLITS)}.")
    if label_names:
        unknown = sorted(str(x) for x in set(columns["label"]) - set(label_names))
        if unknown:
            raise FeatureFileError(
                f"{source}: labels {unknown} are not in the dataset's label set {list(label_names)}. "
                "Fix the labels, pass the data's label set with --labels, or use a profile without one "
                "(--profile generic takes the labels from the data)."
            )
    order = order_column(arrays, n, source) if "order" in arrays else None
    long_names = {v: k for k, v in MODALITY_NAMES.items()}
    raw = {long_names[key]: check_modality_array(key, np.asarray(arrays[key]), n, source)
           for key in arrays if key in long_names}
    vectors = tuple(m for m in MODALITIES if m in raw and raw[m].ndim == 2)
    steps = 1 if raw and len(vectors) == len(raw) else seq_len  # only vectors: one step each
    features: dict[str, np.ndarray] = {}
    for m, value in raw.items():
        if value.ndim == 3 and value.shape[1] != seq_len:
            log.warning("%s: '%s' has %d steps; aligning to L=%d.", source, MODALITY_NAMES[m], value.shape[1],
                        seq_len)
        features[m] = align_to_length(value, steps)
    extra = sorted(set(arrays) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS) - set(long_names)
                   - {"order", FINETUNED_KEY, TEXT_CONTEXT_KEY})
    if extra:
        log.warning("%s: ignoring unknown key(s) %s.", source, extra)
    context = _text_context_mark(arrays, source) if TEXT_CONTEXT_KEY in arrays else 0
    if not features:
        raise FeatureFileError(
            f"{source}: no modality arrays found. Add at least one of 'text', 'audio', 'visual'. {FIX_HINT}"
        )
    return FeatureSet(
        utterance_id=ids,
        label=columns["label"],
        group=columns["group"],
        features=features,
        split=columns.get("split"),
        speaker=columns.get("speaker"),
        dialogue=columns.get("dialogue"),
        label_names=tuple(label_names),
        order=order,
        text_finetuned=_finetuned_mark(arrays, source) if FINETUNED_KEY in arrays else None,
        text_context=context if "t" in features else 0,
        vectors=vectors,
    )


def _finetuned_mark(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, Any]:
    """The ``text_finetuned`` key: a JSON object in a 0-d string array."""
    raw = np.asarray(arrays[FINETUNED_KEY])
    try:
        mark = json.loads(str(raw.item())) if raw.shape == () and raw.dtype.kind == "U" else None
    except json.JSONDecodeError:
        mark = None
    if not isinstance(mark, dict):
        raise FeatureFileError(
            f"{source}: key '{FINETUNED_KEY}' must be a 0-d string array holding a JSON object (what the text "
            f"encoder was fine-tuned on), got dtype {raw.dtype} and shape {raw.shape}. {FIX_HINT}"
        )
    return mark


def _text_context_mark(arrays: Mapping[str, np.ndarray], source: str) -> int:
    """The ``text_context`` key: a 0-d integer, at least 0."""
    raw = np.asarray(arrays[TEXT_CONTEXT_KEY])
    if raw.shape != () or raw.dtype.kind not in "iu" or int(raw) < 0:
        raise FeatureFileError(
            f"{source}: key '{TEXT_CONTEXT_KEY}' must be a 0-d integer array holding k >= 0 (how many preceding turns "
            f"the text encoder read with each utterance), got dtype {raw.dtype} and shape {raw.shape}"
            f"{f' (value {raw.item()!r})' if raw.shape == () else ''}. {FIX_HINT}"
        )
    return int(raw)


def order_column(arrays: Mapping[str, np.ndarray], n: int, source: str) -> np.ndarray:
    """The ``order`` key as (N,) float64: finite numbers, one per utterance."""
    raw = np.asarray(arrays["order"])
    if raw.shape != (n,) or raw.dtype == object or not np.issubdtype(raw.dtype, np.number):
        raise FeatureFileError(
            f"{source}: key 'order' must be a numeric array of shape ({n},) (the utterance's index or start time in "
            f"its dialogue), got dtype {raw.dtype} and shape {raw.shape}. {FIX_HINT}"
        )
    order = raw.astype(np.float64)
    if not np.isfinite(order).all():
        raise FeatureFileError(f"{source}: key 'order' holds NaN or inf values. {FIX_HINT}")
    return order


def _duplicates(values: np.ndarray) -> list[str]:
    uniq, counts = np.unique(values, return_counts=True)
    return uniq[counts > 1].tolist()


def load_features(path: str | Path, seq_len: int, label_names: Sequence[str] = ()) -> FeatureSet:
    """Read a features ``.npz`` (:func:`hjcag.stages.load_features` also reads ERC pickles)."""
    path = Path(path)
    if not path.exists():
        raise FeatureFileError(f"features file '{path}' not found. Check the path passed to --features.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FeatureFileError(
            f"'{path}' is not a readable .npz ({exc}). Write it with numpy.savez / savez_compressed "
            f"using plain (non-object) arrays."
        ) from exc
    return feature_set_from_arrays(arrays, seq_len, label_names, source=str(path))


def save_features(path: str | Path, fs: FeatureSet) -> Path:
    """Write a :class:`FeatureSet` in the ``.npz`` format above (modalities under their long names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "utterance_id": fs.utterance_id.astype(str),
        "label": fs.label.astype(str),
        "group": fs.group.astype(str),
    }
    for key in OPTIONAL_KEYS:
        if getattr(fs, key) is not None:
            arrays[key] = getattr(fs, key).astype(str)
    if fs.order is not None:
        arrays["order"] = fs.order.astype(np.float64)
    if fs.text_finetuned is not None:
        arrays[FINETUNED_KEY] = np.array(json.dumps(fs.text_finetuned, sort_keys=True))
    if fs.text_context and "t" in fs.features:  # 0 stays absent: files of single utterances keep their bytes
        arrays[TEXT_CONTEXT_KEY] = np.array(fs.text_context, dtype=np.int64)
    for m, x in fs.features.items():
        arrays[MODALITY_NAMES[m]] = (x[:, 0] if m in fs.vectors else x).astype(np.float32)  # vectors as (N, d)
    np.savez_compressed(path, **arrays)  # deterministic bytes: zip members carry a fixed 1980 date
    return path


# ---------------------------------------------------------------- label selection: shared by training and validation


def select_labels(labels: np.ndarray, wanted: Sequence[str], source: str | Path) -> np.ndarray:
    """The rows (a boolean mask over `labels`) of the classes `wanted` (``--labels``); every wanted label must occur
    in the data, and leaving out rows of other classes is logged."""
    present = sorted({str(x) for x in labels})
    absent = [x for x in wanted if x not in present]
    if absent:
        raise HjcagError(f"--labels names {absent}, which '{source}' does not hold; its labels are {present}.")
    keep = np.isin(np.asarray(labels).astype(str), list(wanted))
    if not keep.all():
        left_out = sorted(set(present) - set(wanted))
        log.warning("--labels: leaving out %d utterance(s) of class(es) %s", int((~keep).sum()), left_out)
    return keep


def class_count_problem(labels: np.ndarray | Sequence[str], source: str | Path, selected: bool = False) -> str | None:
    """Why `labels` (after label selection; `selected`: ``--labels`` chose them) cannot train a classifier, or None.

    The one rule behind ``hjcag train`` / ``tune`` / ``ablate`` (through :func:`hjcag.stages.load_features`) and
    ``hjcag validate-features``: at least :data:`MIN_CLASSES` classes. Counted in the data, not in the label set: a
    profile's seven emotions over a file whose every row is ``joy`` is one class."""
    counts = Counter(str(x) for x in labels)
    if len(counts) >= MIN_CLASSES:
        return None
    held = ", ".join(f"{name}: {n} utterance{'s' * (n != 1)}" for name, n in sorted(counts.items()))
    what = f"only one class ({held})" if counts else "no utterance"
    after = " after --labels" if selected else ""
    fix = "Name at least two of its classes with --labels" if selected else "Check its 'label' key"
    return f"'{source}' holds {what}{after}; a classifier needs at least {MIN_CLASSES} classes. {fix}."
