"""What `hjcag predict` reads: a manifest in the layout `hjcag prepare` reads (CSV / JSONL, or its parquet) or a
features ``.npz``, as dialogues of turns in order, each turn a request body for the endpoint (:func:`turn`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hjcag.client.body import turn
from hjcag.data.features_file import check_modality_array, order_column
from hjcag.data.manifest import optional_str, read_manifest_file
from hjcag.data.media_root import media_path, resolve_data_root
from hjcag.errors import DataError, FeatureFileError
from hjcag.params import MODALITIES, MODALITY_NAMES

MEDIA_COLUMNS = {"t": "text", "a": "audio_path", "v": "video_path"}
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")


@dataclass(frozen=True)
class Utterance:
    """One turn to answer: where it sits and its request body (without context)."""

    utterance_id: str
    dialogue: str
    speaker: str | None
    body: dict[str, Any]
    true_label: str | None = None


def read_dialogues(path: str | Path, modalities: Sequence[str] = MODALITIES, dtype: str = "float32",
                   data_root: str | Path | None = None) -> list[list[Utterance]]:
    """Each dialogue's turns in order (by ``turn`` / ``order``, else as listed), dialogues as first listed; only
    the inputs of `modalities` are sent."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input '{path}' not found; pass a manifest (.csv, .jsonl, .parquet) or a features .npz.")
    if path.suffix.lower() == ".npz":
        return _dialogues(_features_rows(path, modalities, dtype))
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return _dialogues(_manifest_rows(path, modalities, data_root))
    raise DataError(f"input '{path}': unsupported type '{path.suffix}'. Pass a manifest (.csv, .jsonl, .parquet) or "
                    "a features .npz.")


Row = tuple[float | None, Utterance]  # (position in its dialogue or None, the utterance)


def _dialogues(rows: list[Row]) -> list[list[Utterance]]:
    seen: set[str] = set()
    for _, u in rows:
        if u.utterance_id in seen:
            raise DataError(f"utterance_id '{u.utterance_id}' appears twice in the input; ids must be unique.")
        seen.add(u.utterance_id)
    groups: dict[str, list[tuple[int, Row]]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row[1].dialogue, []).append((i, row))
    ordered = []
    for members in groups.values():
        members.sort(key=lambda m: (math.inf if m[1][0] is None else m[1][0], m[0]))  # by turn, then as listed
        ordered.append([row[1] for _, row in members])
    return ordered


def _manifest_rows(path: Path, modalities: Sequence[str], data_root: str | Path | None) -> list[Row]:
    df = read_manifest_file(path)
    columns = set(df.columns)
    if "utterance_id" not in columns:
        raise DataError(f"{path}: missing column 'utterance_id' (the manifest layout `hjcag prepare` reads).")
    inputs = [c for m, c in MEDIA_COLUMNS.items() if m in modalities and c in columns]
    if not inputs:
        wanted = [MEDIA_COLUMNS[m] for m in modalities]
        raise DataError(f"{path}: no input column: the manifest needs at least one of {wanted} (found "
                        f"{sorted(columns)}).")
    root = resolve_data_root(path, data_root)
    rows: list[Row] = []
    for i, rec in enumerate(df.to_dict("records")):
        where = f"{path}: row {i + 1}"
        uid = (optional_str(rec.get("utterance_id")) or "").strip()
        if not uid:
            raise DataError(f"{where}: empty utterance_id; give every row a unique id.")
        where = f"{path}: utterance '{uid}'"
        if any(optional_str(rec.get(c)) not in (None, "") for c in ("start_s", "end_s")):
            raise DataError(f"{where} has a span (start_s / end_s): `hjcag predict` sends whole files; cut the "
                            "utterance into a file of its own.")
        media: dict[str, Path] = {}
        for column in ("audio_path", "video_path"):
            value = optional_str(rec.get(column)) if column in inputs else None
            if value and value.strip():
                media[column] = media_path(value.strip(), root)
                if not media[column].is_file():
                    raise DataError(f"{where}: {column} '{media[column]}' not found (relative paths are under "
                                    f"'{root}'; --data-root sets another folder).")
        text = optional_str(rec.get("text")) if "text" in inputs else None
        text = text if text and text.strip() else None
        if text is None and not media:
            raise DataError(f"{where} has no input: no text, audio_path or video_path (of the modalities sent).")
        speaker = _name(rec.get("speaker"))
        body = turn(text=text, audio=media.get("audio_path"), video=media.get("video_path"), speaker=speaker)
        dialogue = (optional_str(rec.get("dialogue_id")) or "").strip() or uid
        rows.append((_number(rec.get("turn"), where), Utterance(uid, dialogue, speaker, body,
                                                                  _name(rec.get("label")))))
    return rows


def _features_rows(path: Path, modalities: Sequence[str], dtype: str) -> list[Row]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise FeatureFileError(f"'{path}' is not a readable .npz ({exc}).") from exc
    if "utterance_id" not in arrays:
        raise FeatureFileError(f"{path}: missing key 'utterance_id' (README 'Pre-extracted features').")
    ids = np.asarray(arrays["utterance_id"]).astype(str)
    n = len(ids)
    names = {MODALITY_NAMES[m]: m for m in modalities}
    features = {key: check_modality_array(key, value, n, str(path)) for key, value in arrays.items() if key in names}
    if not features:
        raise FeatureFileError(f"{path}: no features of {sorted(names)}; found keys {sorted(arrays)}.")
    column = {}
    for key in ("dialogue", "group", "speaker", "label"):
        if key in arrays:
            if np.asarray(arrays[key]).shape != (n,):
                raise FeatureFileError(f"{path}: '{key}' has shape {list(arrays[key].shape)}; expected [{n}].")
            column[key] = np.asarray(arrays[key])
    if "order" in arrays:
        column["order"] = order_column(arrays, n, str(path))
    dialogues = column.get("dialogue", column.get("group", ids)).astype(str)
    rows: list[Row] = []
    for i, uid in enumerate(ids):
        speaker = _name(column["speaker"][i]) if "speaker" in column else None
        body = turn(features={k: v[i] for k, v in features.items()}, speaker=speaker, dtype=dtype)
        order = float(column["order"][i]) if "order" in column else None
        label = _name(column["label"][i]) if "label" in column else None
        rows.append((order, Utterance(str(uid), str(dialogues[i]), speaker, body, label)))
    return rows


def _name(value: Any) -> str | None:
    """A stripped string, None for null or blank."""
    text = optional_str(value)
    return text.strip() if text is not None and text.strip() else None


def _number(value: Any, where: str) -> float | None:
    text = optional_str(value)
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise DataError(f"{where}: turn '{text}' is not a number (the utterance's index in its dialogue).") from exc
