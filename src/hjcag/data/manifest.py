"""The normalised manifest: one row per utterance, the single input of validation and feature extraction.

Every dataset adapter (MELD, IEMOCAP, a user's own CSV/JSONL) produces this table, so later stages never see a
dataset's own layout. The schema lives here and only here (`MANIFEST_SCHEMA`); validation imports it.

Conventions
- String columns hold Python ``str`` or ``None`` (object dtype, as pandas reads parquet strings); float columns are
  float64 with NaN for null. Use :func:`media_span` / :func:`optional_str` rather than testing truthiness.
- Media paths are relative to the manifest's data root, recorded in the parquet (absolute for files outside
  it), so a manifest holds the same bytes in every checkout; :mod:`hjcag.data.media_root` resolves them.
- ``start_s``/``end_s`` locate the utterance inside ``video_path``, and inside ``audio_path`` only when the audio
  comes from that same file (or there is no video). A separate audio file (IEMOCAP's per-turn wav) is already cut
  and is used whole. :func:`media_span` encodes this rule; extractors should call it.
- ``label`` is the dataset's own label name; mapping to class indices happens at training time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hjcag.data.media_root import with_data_root
from hjcag.errors import DataError

# column -> "string" | "float64". Order is the column order of every manifest written.
MANIFEST_SCHEMA: dict[str, str] = {
    "utterance_id": "string",  # unique across the whole manifest
    "dialogue_id": "string",  # group: no dialogue is ever split across folds
    "session": "string",  # IEMOCAP Session1..5 (leave-one-session-out); null elsewhere
    "speaker": "string",
    "text": "string",  # transcript; "" when the dataset has none for this utterance
    "label": "string",  # the dataset's label name
    "audio_path": "string",  # file the audio is read from (may be the video clip itself); null = none
    "video_path": "string",
    "start_s": "float64",  # span inside the media (see module docstring); null = whole file
    "end_s": "float64",
    "turn": "float64",  # position within the dialogue (index or start time); null = unknown (no context)
    "split": "string",  # train / dev / test, or null when the dataset has no official split
    "dataset": "string",
}
MANIFEST_COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA)
# Columns that are never null in a normalised manifest.
NON_NULL_COLUMNS: tuple[str, ...] = ("utterance_id", "dialogue_id", "label", "dataset")
SPLITS: tuple[str, ...] = ("train", "dev", "test")
_SPLIT_ALIASES = {"val": "dev", "valid": "dev", "validation": "dev", "development": "dev", "training": "train"}

ARROW_SCHEMA = pa.schema(
    [pa.field(name, pa.string() if kind == "string" else pa.float64()) for name, kind in MANIFEST_SCHEMA.items()]
)



# ----------------------------------------------------------------------------------------------- values


def optional_str(value: Any) -> str | None:
    """None for null-ish values (None, NaN, pd.NA), else the value as str."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def optional_float(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    f = float(value)
    return None if math.isnan(f) else f


def media_span(row: Mapping[str, Any], kind: str) -> tuple[float | None, float | None]:
    """(start_s, end_s) to cut from the row's `kind` ("audio" | "video") file; (None, None) = the whole file."""
    if kind not in ("audio", "video"):
        raise ValueError(f"kind must be 'audio' or 'video', not {kind!r}")
    span = (optional_float(row.get("start_s")), optional_float(row.get("end_s")))
    if kind == "video":
        return span
    audio, video = optional_str(row.get("audio_path")), optional_str(row.get("video_path"))
    return span if video is None or audio == video else (None, None)


def normalise_split(value: Any, where: str) -> str | None:
    s = optional_str(value)
    if s is None or not s.strip():
        return None
    key = s.strip().lower()
    key = _SPLIT_ALIASES.get(key, key)
    if key not in SPLITS:
        raise DataError(f"{where}: split '{s}' is not one of {', '.join(SPLITS)} (or empty). Fix the value.")
    return key


# ------------------------------------------------------------------------------------------ frame + io


def manifest_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A DataFrame with exactly the schema's columns, in order and with its dtypes (missing keys become null)."""
    records = [{c: row.get(c) for c in MANIFEST_COLUMNS} for row in rows]
    df = pd.DataFrame.from_records(records, columns=list(MANIFEST_COLUMNS))
    return conform(df)


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Cast to the schema's dtypes: strings as str/None (object), floats as float64/NaN."""
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for name, kind in MANIFEST_SCHEMA.items():
        col = df[name].tolist() if name in df.columns else [None] * len(df)
        if kind == "string":
            out[name] = pd.Series([optional_str(v) for v in col], dtype=object)
        else:
            out[name] = pd.Series([optional_float(v) for v in col], dtype="float64")
    return out


def write_manifest(df: pd.DataFrame, path: str | Path, data_root: str | Path | None = None) -> Path:
    """Write the manifest as parquet (atomically: a crash never leaves a half-written file), recording
    `data_root`, the folder its relative media paths are under (:mod:`hjcag.data.media_root`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(conform(df), schema=ARROW_SCHEMA, preserve_index=False)
    if data_root is not None:
        table = with_data_root(table, data_root, path)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_manifest_file(path: str | Path) -> pd.DataFrame:
    """A manifest as stored: parquet (from `hjcag prepare` / `hjcag validate`), CSV or JSONL, columns unchecked
    (validation reports what is missing); DataError when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest '{path}' not found. Run `hjcag prepare` first or fix --manifest.")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".jsonl", ".ndjson"):
        raise DataError(f"manifest '{path}': unsupported type '{suffix}'. Use .parquet (from `hjcag prepare`), "
                        ".csv or .jsonl.")
    try:
        if suffix == ".parquet":
            return pq.read_table(path).to_pandas()
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        return pd.read_json(path, lines=True, dtype=False)
    except (pa.ArrowInvalid, OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"manifest '{path}' cannot be read ({exc}). Re-run `hjcag prepare`.") from exc


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by `write_manifest`, checked and conformed; DataError if it lacks columns."""
    df = read_manifest_file(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"manifest '{path}' lacks columns {missing}. It was not written by `hjcag prepare`; re-run it."
        )
    return conform(df)


# -------------------------------------------------------------------------------- generic CSV/JSONL adapter

_MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl", "manifest.json")


SOURCE_KEY = "_source"  # row key (not a column) holding {"file", "line"} for reports


@dataclass
class AdapterResult:
    """What an adapter hands to `prepare_dataset`: rows plus the bookkeeping the report needs."""

    rows: list[dict[str, Any]]
    rows_read: int
    dropped: list[dict[str, Any]]
    issues: list[dict[str, Any]]
    warnings: list[str]
    sources: list[str]


def _read_table_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) pairs from a CSV (header row) or JSON Lines file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 ({exc.reason} at byte {exc.start}). Save the file as UTF-8.") \
            from exc
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None:
            raise DataError(f"{path}: the file is empty. Write a header row with the manifest columns.")
        out: list[tuple[int, dict[str, Any]]] = []
        start = reader.line_num + 1  # a record starts on the line after the previous one ended
        for rec in reader:
            if None in rec:
                raise DataError(
                    f"{path}:{start}: the row has more fields than the header. Quote values containing commas."
                )
            out.append((start, dict(rec)))
            start = reader.line_num + 1
        return out
    if suffix in (".jsonl", ".json", ".ndjson"):
        out = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg}). Write one JSON object per line.") from exc
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line, got {type(rec).__name__}.")
            out.append((n, rec))
        return out
    raise DataError(f"{path}: unsupported manifest type '{suffix}'. Use .csv or .jsonl.")


def find_manifest_file(source: Path) -> Path:
    if source.is_file():
        return source
    if source.is_dir():
        for name in _MANIFEST_NAMES:
            if (source / name).is_file():
                return source / name
        raise DataError(
            f"'{source}' is a directory without {' or '.join(_MANIFEST_NAMES)}. Pass the manifest file itself."
        )
    raise DataError(f"manifest '{source}' not found. Pass --source PATH to a .csv or .jsonl manifest.")


def _resolve(base: Path, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    p = Path(value.strip()).expanduser()
    return str(p if p.is_absolute() else os.path.normpath(base / p))  # lexical: a symlinked clip keeps its name


def read_generic_manifest(source: Path, modalities: Sequence[str]) -> AdapterResult:
    """A user's CSV/JSONL with the normalised columns. Required: utterance_id and label; text with modality t,
    audio_path with a, video_path with v. Missing dialogue_id = each utterance is its own group. Relative media
    paths are resolved against the manifest's directory (`hjcag prepare` then stores them relative to it)."""
    path = find_manifest_file(Path(source))
    records = _read_table_records(path)
    columns: set[str] = set()
    for _, rec in records:
        columns.update(rec)
    inputs = {"t": "text", "a": "audio_path", "v": "video_path"}
    required = ["utterance_id", "label"] + [c for m, c in inputs.items() if m in modalities]
    missing = [c for c in required if c not in columns]
    if missing:
        held = [m for m, c in inputs.items() if c in columns]
        hint = (f" The file has the inputs of modalities {','.join(held)} only: pass --modalities {','.join(held)}."
                if held and "utterance_id" in columns and "label" in columns else "")
        raise DataError(
            f"{path}: missing column(s) {missing} (modalities {','.join(modalities)}). Required: {required}; "
            f"optional: {[c for c in MANIFEST_COLUMNS if c not in required]}.{hint}"
        )
    warnings = []
    extra = sorted(columns - set(MANIFEST_COLUMNS))
    if extra:
        warnings.append(f"{path.name}: ignored unknown column(s) {extra}.")
    if "dialogue_id" not in columns:
        warnings.append(f"{path.name}: no dialogue_id column; each utterance is its own group.")
    base = Path(os.path.abspath(path.parent))
    rows: list[dict[str, Any]] = []
    for line, rec in records:
        where = f"{path}:{line}"
        uid = (optional_str(rec.get("utterance_id")) or "").strip()
        if not uid:
            raise DataError(f"{where}: empty utterance_id. Give every row a unique id.")
        label = (optional_str(rec.get("label")) or "").strip()
        if not label:
            raise DataError(f"{where}: empty label for '{uid}'. Every row needs its label.")
        row: dict[str, Any] = {
            "utterance_id": uid,
            "dialogue_id": (optional_str(rec.get("dialogue_id")) or "").strip() or uid,
            "session": (optional_str(rec.get("session")) or "").strip() or None,
            "speaker": optional_str(rec.get("speaker")),
            "text": optional_str(rec.get("text")),
            "label": label,
            "audio_path": _resolve(base, optional_str(rec.get("audio_path"))),
            "video_path": _resolve(base, optional_str(rec.get("video_path"))),
            "split": normalise_split(rec.get("split"), where),
            "dataset": (optional_str(rec.get("dataset")) or "").strip() or "custom",
        }
        for col in ("start_s", "end_s", "turn"):
            raw = optional_str(rec.get(col))
            try:
                row[col] = float(raw) if raw is not None and raw.strip() else None
            except ValueError as exc:
                what = "a number (the utterance's index in its dialogue)" if col == "turn" else "a number of seconds"
                raise DataError(f"{where}: {col} '{raw}' is not {what}. Fix it or leave it empty.") from exc
        row[SOURCE_KEY] = {"file": str(path), "line": line}
        rows.append(row)
    return AdapterResult(rows, len(records), [], [], warnings, [str(path)])
