"""Read the feature pickles most published ERC code ships (DialogueRNN, MMGCN and their descendants).

Three layouts, all loaded with ``pickle.load(f, encoding="latin1")`` (they were written by Python 2):

- ``iemocap`` (9 items): videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence,
  trainVid, testVid  (DialogueRNN's IEMOCAP_features_raw.pkl, MMGCN's IEMOCAP_features.pkl)
- ``meld`` (9 items, no visual): videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoSentence,
  trainVid, testVid, <extra>  (DialogueRNN's MELD_features_raw.pkl; the extra item is sentiment labels)
- ``meld-visual`` (10 items): as ``iemocap`` plus a trailing <extra>  (MMGCN's MELD_features_raw1.pkl)

Each video* item is a dict keyed by dialogue id holding one entry per utterance; trainVid/testVid list dialogue
ids. Labels are class indices (IEMOCAP order hap, sad, neu, ang, exc, fru; MELD order neutral, surprise, fear,
sadness, joy, disgust, anger), mapped to names through `label_names` when given. Speakers are strings ('M'/'F')
or one-hot vectors (-> 'spk{index}').

Unpickling runs code from the file: only load pickles from a source you trust.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hjcag.data.features_file import FeatureSet, feature_set_from_arrays
from hjcag.errors import FeatureFileError

log = logging.getLogger(__name__)

IEMOCAP_LABELS: tuple[str, ...] = ("hap", "sad", "neu", "ang", "exc", "fru")
IEMOCAP_SESSION = re.compile(r"^Ses0[1-5]")
LAYOUTS: dict[str, tuple[str, ...]] = {
    "iemocap": ("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoVisual",
                "videoSentence", "trainVid", "testVid"),
    "meld": ("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoSentence",
             "trainVid", "testVid", "extra"),
    "meld-visual": ("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoVisual",
                    "videoSentence", "trainVid", "testVid", "extra"),
}
MODALITY_FIELDS = {"videoText": "text", "videoAudio": "audio", "videoVisual": "visual"}
EXPECTED = "; ".join(f"{name} ({len(fields)} items): ({', '.join(fields)})" for name, fields in LAYOUTS.items())


def _is_id_list(x: Any) -> bool:
    return isinstance(x, list | tuple | set | frozenset | np.ndarray) and not isinstance(x, str | bytes)


def detect_layout(obj: Any, source: str) -> str:
    """Which of LAYOUTS `obj` follows, judged by its length and where the dict and id-list items sit."""
    if not isinstance(obj, tuple | list):
        raise FeatureFileError(
            f"{source}: the pickle holds a {type(obj).__name__}, not the tuple of an ERC features pickle. "
            f"Expected one of: {EXPECTED}."
        )
    for name, fields in LAYOUTS.items():
        if len(obj) != len(fields):
            continue
        shape_ok = all(
            _is_id_list(obj[i]) if f in ("trainVid", "testVid") else isinstance(obj[i], Mapping)
            for i, f in enumerate(fields)
            if f != "extra"
        )
        if shape_ok:
            return name
    kinds = ", ".join(type(x).__name__ for x in obj)
    raise FeatureFileError(
        f"{source}: a {len(obj)}-item tuple ({kinds}) matches no known ERC pickle layout. Expected one of: "
        f"{EXPECTED}; video* items are dicts keyed by dialogue id, trainVid/testVid lists of dialogue ids."
    )


def _speaker(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, str):
        return value
    arr = np.asarray(value)
    if arr.ndim == 1 and arr.size > 1 and np.issubdtype(arr.dtype, np.number):
        return f"spk{int(arr.argmax())}"  # one-hot
    return str(arr.item()) if arr.size == 1 else str(value)


def _label_index(value: Any, where: str) -> int:
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        raise FeatureFileError(f"{where}: label {value!r} is not a class index. videoLabels must hold integers.")
    f = float(arr.item())
    if not f.is_integer() or f < 0:
        raise FeatureFileError(f"{where}: label {value!r} is not a non-negative integer class index.")
    return int(f)


def _utterance_array(values: Any, field: str, where: str) -> np.ndarray:
    """(n, d) from n vectors, or (n, T, d) from n sequences (zero-padded to the longest T)."""
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError):
        arr = _pad_sequences(values, field, where)
    if arr.ndim not in (2, 3) or arr.shape[-1] == 0:
        raise FeatureFileError(
            f"{where}: {field} has shape {arr.shape}; expected one (d,) vector or (T, d) sequence per utterance."
        )
    return arr


def _pad_sequences(values: Any, field: str, where: str) -> np.ndarray:
    try:
        seqs = [np.asarray(v, dtype=np.float32) for v in values]
    except (ValueError, TypeError) as exc:
        raise FeatureFileError(f"{where}: {field} is not a numeric array of feature vectors ({exc}).") from exc
    if not seqs or any(s.ndim != 2 for s in seqs) or len({s.shape[1] for s in seqs}) != 1:
        shapes = sorted({s.shape for s in seqs})[:4]
        raise FeatureFileError(
            f"{where}: {field} holds utterances of shapes {shapes}; expected equal-length (d,) vectors or "
            f"(T, d) sequences with the same d."
        )
    out = np.zeros((len(seqs), max(len(s) for s in seqs), seqs[0].shape[1]), dtype=np.float32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def _stack(per_dialogue: list[np.ndarray], field: str, source: str) -> np.ndarray:
    """Concatenate (n_i, d) or (n_i, T_i, d) blocks; sequences are zero-padded to the longest T."""
    ndims = {a.ndim for a in per_dialogue}
    dims = {a.shape[-1] for a in per_dialogue}
    if len(ndims) > 1 or len(dims) > 1:
        raise FeatureFileError(
            f"{source}: {field} mixes shapes across dialogues (feature widths {sorted(dims)}); every utterance "
            f"needs the same feature width."
        )
    if ndims == {2}:
        return np.concatenate(per_dialogue)
    t_max = max(a.shape[1] for a in per_dialogue)
    out = np.zeros((sum(len(a) for a in per_dialogue), t_max, dims.pop()), dtype=np.float32)
    row = 0
    for a in per_dialogue:
        out[row : row + len(a), : a.shape[1]] = a
        row += len(a)
    return out


def _group(vid: Any, layout: str) -> str:
    """IEMOCAP dialogues are grouped by session (its five sessions have disjoint speakers); others by dialogue."""
    match = IEMOCAP_SESSION.match(str(vid))
    return match.group(0) if layout == "iemocap" and match else str(vid)


def _ordered(ids: Iterable[Any]) -> list[Any]:
    if isinstance(ids, set | frozenset):
        return sorted(ids, key=str)
    return list(np.asarray(ids).tolist()) if isinstance(ids, np.ndarray) else list(ids)


def load_erc_pickle(path: str | Path, seq_len: int, label_names: Sequence[str] = ()) -> FeatureSet:
    """A :class:`FeatureSet` from an ERC features pickle: group = the IEMOCAP session (Ses01..Ses05, so cv5 is
    leave-one-session-out) or else the dialogue; dialogue = its id; split = train/test by trainVid/testVid;
    utterance_id = ``{dialogue}_{i}``; (N, d) vectors are aligned by the loader (all vectors: one step each)."""
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except FileNotFoundError as exc:
        raise FeatureFileError(f"features file '{path}' not found. Check the path passed to --features.") from exc
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError, TypeError,
            UnicodeDecodeError, OSError) as exc:
        raise FeatureFileError(
            f"{source}: cannot be unpickled ({type(exc).__name__}: {exc}). Expected an ERC features pickle, "
            f"one of: {EXPECTED}."
        ) from exc
    layout = detect_layout(obj, source)
    fields = dict(zip(LAYOUTS[layout], obj, strict=True))
    source = f"{path} ({layout} layout)"
    train, test = _ordered(fields["trainVid"]), _ordered(fields["testVid"])
    both = set(map(str, train)) & set(map(str, test))
    if both:
        raise FeatureFileError(f"{source}: dialogue(s) {sorted(both)[:5]} are in both trainVid and testVid.")
    labels_by_vid: Mapping[Any, Any] = fields["videoLabels"]
    unused = len(set(map(str, labels_by_vid)) - set(map(str, train + test)))
    if unused:
        log.warning("%s: %d dialogue(s) are in neither trainVid nor testVid; skipped.", source, unused)
    modality_fields = [f for f in MODALITY_FIELDS if f in fields]

    ids: list[str] = []
    groups: list[str] = []
    dialogues: list[str] = []
    splits: list[str] = []
    speakers: list[str] = []
    order: list[int] = []  # position in the dialogue: the pickle lists utterances in conversation order
    label_idx: list[int] = []
    blocks: dict[str, list[np.ndarray]] = {f: [] for f in modality_fields}
    for split, vids in (("train", train), ("test", test)):
        for vid in vids:
            where = f"{source}, dialogue {vid!r}"
            for f in ("videoLabels", "videoSpeakers", *modality_fields):
                if vid not in fields[f]:
                    raise FeatureFileError(f"{where}: listed in {split[:5]}Vid but missing from {f}.")
            labels = list(labels_by_vid[vid])
            n = len(labels)
            if n == 0:
                log.warning("%s: no utterances; skipped.", where)
                continue
            for f in ("videoSpeakers", *modality_fields):
                if len(fields[f][vid]) != n:
                    raise FeatureFileError(
                        f"{where}: {f} has {len(fields[f][vid])} entries but videoLabels has {n}; every video* "
                        f"item needs one entry per utterance."
                    )
            for f in modality_fields:
                blocks[f].append(_utterance_array(fields[f][vid], f, where))
            ids += [f"{vid}_{i}" for i in range(n)]
            groups += [_group(vid, layout)] * n
            dialogues += [str(vid)] * n
            order += list(range(n))
            splits += [split] * n
            speakers += [_speaker(s) for s in fields["videoSpeakers"][vid]]
            label_idx += [_label_index(v, f"{where}, utterance {i}") for i, v in enumerate(labels)]
    if not ids:
        raise FeatureFileError(f"{source}: trainVid and testVid list no dialogue with utterances.")

    if label_names:
        too_big = sorted({i for i in label_idx if i >= len(label_names)})
        if too_big:
            raise FeatureFileError(
                f"{source}: label indices {too_big} exceed the {len(label_names)} label names {list(label_names)}. "
                f"Select the profile of the dataset this pickle holds (e.g. --profile iemocap or --profile meld)."
            )
        names = list(label_names)
        label_strings = [names[i] for i in label_idx]
    else:
        label_strings = [str(i) for i in label_idx]
        label_names = tuple(str(i) for i in sorted(set(label_idx)))  # numeric order, not "10" < "2"

    arrays: dict[str, np.ndarray] = {
        "utterance_id": np.array(ids),
        "label": np.array(label_strings),
        "group": np.array(groups),
        "dialogue": np.array(dialogues),
        "split": np.array(splits),
        "speaker": np.array(speakers),
        "order": np.array(order, dtype=np.float64),
    }
    for f in modality_fields:
        arrays[MODALITY_FIELDS[f]] = _stack(blocks[f], f, source)
    log.info("%s: %d utterances in %d dialogues, modalities %s.", source, len(ids), len(set(dialogues)),
             [MODALITY_FIELDS[f] for f in modality_fields])
    return feature_set_from_arrays(arrays, seq_len, label_names, source=source)
