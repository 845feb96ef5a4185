"""`hjcag validate`: the manifest checks (schema, labels, media) and the quarantine policy.

It checks the normalised manifest `hjcag prepare` writes. A file without the columns prepare fills in (a user's raw
CSV/JSONL, where dataset, session, times and split are optional) is refused in one line that says to run prepare
first, rather than reported as a table of "required column missing" failures.

Besides the report, a run that may continue writes ``manifest.valid.parquet`` (the rows that passed) and, with
policy ``quarantine``, ``quarantine.parquet`` (the dropped rows, with a ``reasons`` column). Policy ``fail`` raises
:class:`~hjcag.validate.engine.ValidationError` after writing the report when any row fails; ``quarantine`` drops
the failing rows and continues. Table-level problems (a missing column, a check that cannot run) and a manifest with
no valid row always raise: dropping rows cannot fix them. Validation never touches the inputs or the outputs of
other stages; a stale ``manifest.valid.parquet`` / ``quarantine.parquet`` of an earlier run in ``out_dir`` is removed
first, so a failed run never leaves a previous run's "valid" manifest behind. Both parquet files record the data
root their media paths are relative to (:mod:`hjcag.data.media_root`), as the input manifest did.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hjcag.artifacts import QUARANTINE_FILE, VALID_MANIFEST_FILE, VALIDATION_FILE, write_json
from hjcag.data.manifest import (
    ARROW_SCHEMA,
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    conform,
    optional_str,
    read_manifest_file,
)
from hjcag.data.media_root import require_root, resolve_data_root, with_data_root
from hjcag.errors import ConfigError, DataError
from hjcag.params import VALIDATION_POLICIES, MediaConfig, parse_modalities
from hjcag.validate import engine
from hjcag.validate.engine import ValidationError, ValidationResult

log = logging.getLogger(__name__)


def _load_manifest(manifest: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str, Path | None]:
    """(frame, source description, the data root relative media paths are under: the recorded one, else the
    manifest's folder)."""
    if isinstance(manifest, pd.DataFrame):
        return manifest, "<DataFrame>", None
    path = Path(manifest)
    df = read_manifest_file(path)
    return df, str(path), resolve_data_root(path)


def refuse_unprepared(df: pd.DataFrame, path: str, modalities: Sequence[str]) -> None:
    """A manifest file lacking columns of the normalised schema was not written by `hjcag prepare` (a user's raw
    CSV/JSONL, whose dialogue_id, session, times, split and dataset are optional): prepare normalises it first."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        mods = "" if tuple(modalities) == ("t", "a", "v") else f" --modalities {','.join(modalities)}"
        raise DataError(
            f"manifest '{path}' lacks column(s) {missing}, which `hjcag prepare` fills in: validate checks the "
            f"manifest prepare writes. Run `hjcag prepare --dataset manifest --source {path}{mods} --out DIR` first, "
            "then `hjcag validate --manifest DIR/manifest.parquet`."
        )


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Schema dtypes for the schema columns that exist (missing ones stay missing so the suite reports them)."""
    out = df.reset_index(drop=True).copy()
    for name, kind in MANIFEST_SCHEMA.items():
        if name not in out.columns:
            continue
        if kind == "string":
            out[name] = pd.Series([optional_str(v) for v in out[name].tolist()], dtype=object)
            continue
        numbers = pd.to_numeric(out[name], errors="coerce")
        bad = numbers.isna() & out[name].map(lambda v: optional_str(v) not in (None, "")).astype(bool)
        if bad.any():
            ids = out.loc[bad, "utterance_id"].tolist() if "utterance_id" in out.columns else out.index[bad].tolist()
            raise DataError(f"manifest: column '{name}' holds non-numeric values in {int(bad.sum())} row(s), first "
                            f"{ids[:engine.MAX_LISTED]}. Write seconds as numbers, or leave the value empty.")
        out[name] = numbers.astype("float64")
    return out


def _class_counts(labels: pd.Series, label_set: Sequence[str]) -> dict[str, int]:
    counts = labels.dropna().astype(str).value_counts()
    ordered = {name: int(counts.get(name, 0)) for name in label_set}
    ordered.update({str(k): int(v) for k, v in counts.items() if k not in ordered})
    return ordered


def _arrow_table(df: pd.DataFrame, extra: Mapping[str, Sequence[Any]] | None = None) -> pa.Table:
    """The manifest in its arrow schema, plus any non-schema columns of `df` and the `extra` columns."""
    table = pa.Table.from_pandas(conform(df), schema=ARROW_SCHEMA, preserve_index=False)
    for name in df.columns:
        if name not in MANIFEST_SCHEMA:
            table = table.append_column(name, pa.array(df[name].tolist(), from_pandas=True))
    for name, values in (extra or {}).items():
        table = table.append_column(name, pa.array(list(values), from_pandas=True))
    return table


def _write_parquet(table: pa.Table, path: Path, data_root: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(with_data_root(table, data_root, path), tmp)
    os.replace(tmp, path)


def _remove_stale(out_dir: Path, names: Sequence[str], keep: Path | None) -> None:
    for name in names:
        p = out_dir / name
        if p.exists() and (keep is None or p.resolve() != keep):
            p.unlink()


def validate_manifest(
    manifest: str | Path | pd.DataFrame,
    label_set: Sequence[str],
    modalities: str | Sequence[str],
    policy: str = "fail",
    out_dir: str | Path = "validation",
    folds_column: str | None = None,
    *,
    media: MediaConfig | None = None,
    media_root: str | Path | None = None,
    docs_dir: str | Path | None = None,
    progress: bool = False,
) -> ValidationResult:
    """Validate a normalised manifest (parquet/CSV/JSONL path or DataFrame) for the chosen `modalities`.

    `label_set`: the dataset's labels (empty: the label check is skipped, with a warning). `media`: a
    :class:`~hjcag.validate.media_checks.MediaConfig` (default bounds when None). Relative media paths are
    resolved against `media_root`, else the data root the manifest records, else the manifest file's directory
    (a DataFrame's: the working directory). `docs_dir`: where GX's Data Docs go (default ``out_dir/data_docs``;
    they carry timestamps, so a pipeline that tracks `out_dir` puts them elsewhere). Raises
    :class:`ValidationError` as the module docstring describes, after writing the report.
    """
    from hjcag.validate.manifest_suite import INDEX_COLUMNS, manifest_expectations, prepare_frame
    from hjcag.validate.media_checks import MEDIA_MODALITIES, check_media

    started = time.perf_counter()
    if policy not in VALIDATION_POLICIES:
        raise ConfigError(f"validation policy '{policy}' is unknown. Use one of {', '.join(VALIDATION_POLICIES)}.")
    mods = parse_modalities(modalities)
    media_cfg = media if media is not None else MediaConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw, source, base = _load_manifest(manifest)
    if not isinstance(manifest, pd.DataFrame):  # a frame is the API's: GX reports its missing columns
        refuse_unprepared(raw, source, mods)
    input_path = None if isinstance(manifest, pd.DataFrame) else Path(manifest).resolve()
    _remove_stale(out, (VALID_MANIFEST_FILE, QUARANTINE_FILE), keep=input_path)
    df = _coerce(raw)
    frame = prepare_frame(df, folds_column)
    root = Path(media_root) if media_root is not None else base
    written_root = root if root is not None else Path(".")  # what the written manifests record
    for m in mods:
        if m in MEDIA_MODALITIES and MEDIA_MODALITIES[m][0] in df.columns:
            require_root(root, df[MEDIA_MODALITIES[m][0]].tolist(), f"manifest '{source}'")
    media_frame = check_media(frame, mods, media_cfg, root, progress)
    frame = pd.concat([frame, media_frame], axis=1)
    uses_media = any(m in MEDIA_MODALITIES for m in mods)
    expectations = manifest_expectations(list(frame.columns), label_set, mods, folds_column,
                                         media_cfg if uses_media else None)
    docs_dir = Path(docs_dir) if docs_dir is not None else out / engine.DOCS_DIR
    checks = engine.run_gx([engine.Table("manifest", frame, expectations, INDEX_COLUMNS)], docs_dir)

    offending = engine.offending_rows(checks, ("utterance_id",))
    for entry in offending:
        entry.pop("table", None)
    failures = engine.table_failures(checks)
    notes = engine.check_warnings(checks)
    if not label_set:
        notes.append("no label set configured for this dataset (params datasets.<name>.labels): labels not checked")
    labels = df["label"] if "label" in df.columns else pd.Series([], dtype=object)
    success = not offending and not failures
    bad = {e["row_number"] for e in offending}
    valid_path = quarantine_path = None
    valid_rows: int | None = None
    outcome = "passed" if success else "failed"
    if not failures and (success or (policy == "quarantine" and len(bad) < len(df))):
        keep = [i for i in range(len(df)) if i not in bad]
        clean = df.iloc[keep].reset_index(drop=True)
        valid_path = out / VALID_MANIFEST_FILE
        _write_parquet(_arrow_table(clean), valid_path, written_root)
        valid_rows = len(clean)
        if bad:
            outcome = "quarantined"
            quarantine_path = out / QUARANTINE_FILE
            rows = [e["row_number"] for e in offending]
            dropped = df.iloc[rows].reset_index(drop=True)
            _write_parquet(_arrow_table(dropped, {
                "row_number": rows,
                "reasons": ["; ".join(e["reasons"]) for e in offending],
                "checks": [",".join(e["checks"]) for e in offending],
            }), quarantine_path, written_root)
    result = ValidationResult(
        kind="manifest", success=success, outcome=outcome, source=source,
        report_path=out / VALIDATION_FILE, data_docs_index=engine.docs_index(docs_dir), checks=checks,
        offending_rows=offending, table_failures=failures, rows=len(df), warnings=notes,
        class_counts=_class_counts(labels, label_set), policy=policy, valid_manifest_path=valid_path,
        quarantine_path=quarantine_path, valid_rows=valid_rows,
        extra={"modalities": list(mods), "label_set": list(label_set), "folds_column": folds_column,
               "media": asdict(media_cfg) if uses_media else None},
    )
    if valid_path is not None and bad:
        result.extra["class_counts_valid"] = _class_counts(clean["label"], label_set)
    result.elapsed_s = time.perf_counter() - started
    write_json(result.report_path, engine.plain(result.to_dict()))
    if outcome == "failed":
        raise ValidationError(_failure_message(result), result)
    log.info("manifest validation %s in %.1f s: %s", outcome, result.elapsed_s, result.report_path)
    return result


def _failure_message(result: ValidationResult) -> str:
    why = ""
    if result.table_failures:
        why = " (table-level problems cannot be quarantined)"
    elif result.policy == "quarantine":
        why = " (no valid row would be left)"
    hint = (" Fix the rows, or re-run with --policy quarantine to drop them and continue."
            if result.policy == "fail" and not result.table_failures else "")
    return (f"validation failed{why}; nothing downstream should run.{hint}\n{result.summary()}")
