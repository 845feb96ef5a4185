"""`hjcag validate` / `hjcag validate-features`: run the suites with Great Expectations and act on the result.

What a run leaves in ``out_dir`` (and nothing anywhere else: GX runs in an ephemeral, in-memory context whose only
Data Docs site is ``out_dir/data_docs``; usage statistics are off):

- ``validation.json``: success, every check with its offending rows, the offending rows with their reasons, class
  counts, the outputs written;
- ``data_docs/index.html``: GX's own Data Docs (its styling loads from CDNs; without network the pages still read);
- manifest runs that may continue: ``manifest.valid.parquet`` (the rows that passed), and with policy ``quarantine``
  ``quarantine.parquet`` (the dropped rows, with a ``reasons`` column).

Policy ``fail`` raises :class:`ValidationError` after writing the report when any row fails; ``quarantine`` drops
the failing rows and continues. Table-level problems (a missing column, a check that cannot run) and a manifest with
no valid row always raise: dropping rows cannot fix them. Validation never touches the inputs or the outputs of
other stages; a stale ``manifest.valid.parquet`` / ``quarantine.parquet`` of an earlier run in ``out_dir`` is removed
first, so a failed run never leaves a previous run's "valid" manifest behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hjcag.artifacts import QUARANTINE_FILE, VALID_MANIFEST_FILE, VALIDATION_FILE
from hjcag.data.manifest import ARROW_SCHEMA, MANIFEST_SCHEMA, conform, optional_str, read_manifest_file
from hjcag.errors import ConfigError, DataError, HjcagError
from hjcag.params import VALIDATION_POLICIES, MediaConfig, parse_modalities

log = logging.getLogger(__name__)

DOCS_DIR = "data_docs"
MAX_LISTED = 5  # offending ids shown per check in messages (the JSON lists all)


class ValidationError(HjcagError):
    """Validation found problems that stop the pipeline; ``result`` holds the full outcome (also in the JSON)."""

    def __init__(self, message: str, result: ValidationResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class CheckResult:
    """One GX expectation's outcome, in the report's terms."""

    table: str
    check: str
    expectation: str
    column: str | None
    severity: str
    scope: str
    success: bool
    reason: str
    unexpected_count: int = 0
    offenders: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    observed: Any = None

    @property
    def critical(self) -> bool:
        return self.severity == "critical"

    def ids(self) -> list[str]:
        """How the offenders are named in messages: utterance ids, else modality[/feature index]."""
        out = []
        for o in self.offenders:
            if "utterance_id" in o:
                out.append(str(o["utterance_id"]))
            elif "feature_index" in o:
                out.append(f"{o.get('modality')}[{o['feature_index']}]")
            else:
                out.append(str(o.get("modality", o.get("row_number"))))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table, "check": self.check, "expectation": self.expectation, "column": self.column,
            "severity": self.severity, "scope": self.scope, "success": self.success, "failure_reason": self.reason,
            "unexpected_count": self.unexpected_count, "offending": self.offenders, "error": self.error,
            "observed": self.observed,
        }


@dataclass
class ValidationResult:
    """What a validation run found and wrote. ``success``: every critical check passed."""

    kind: str  # manifest | features
    success: bool
    outcome: str  # passed | quarantined | failed
    source: str
    out_dir: Path
    report_path: Path
    data_docs_index: Path | None
    checks: list[CheckResult]
    offending_rows: list[dict[str, Any]]
    table_failures: list[str]
    rows: int
    warnings: list[str] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    policy: str | None = None
    valid_manifest_path: Path | None = None
    quarantine_path: Path | None = None
    valid_rows: int | None = None
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if c.critical and not c.success]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "success": self.success, "outcome": self.outcome, "policy": self.policy,
            "source": self.source, "rows": self.rows, "valid_rows": self.valid_rows,
            "offending_row_count": len(self.offending_rows), "class_counts": self.class_counts,
            "failed_checks": [c.check for c in self.failed_checks], "table_failures": self.table_failures,
            "warnings": self.warnings, "offending_rows": self.offending_rows,
            "expectations": [c.to_dict() for c in self.checks],
            "outputs": {
                "report": str(self.report_path),
                "data_docs": None if self.data_docs_index is None else str(self.data_docs_index),
                "valid_manifest": None if self.valid_manifest_path is None else str(self.valid_manifest_path),
                "quarantine": None if self.quarantine_path is None else str(self.quarantine_path),
            },
            **self.extra,
        }  # no timings (they are logged): the same data gives a byte-identical report, so DVC need not re-run

    def summary(self) -> str:
        """A few lines for the terminal: outcome, what failed (first ids), where the report is."""
        what = f"{self.kind} validation of {self.source}: {self.rows} row(s), {self.outcome}"
        lines = [what]
        for failure in self.table_failures:
            lines.append(f"  - {failure}")
        for c in self.failed_checks:
            if c.error is None and c.scope == "row":
                ids = c.ids()
                more = f", ... (+{len(ids) - MAX_LISTED})" if len(ids) > MAX_LISTED else ""
                listed = ", ".join(ids[:MAX_LISTED]) + more
                lines.append(f"  - {c.check}: {c.reason}: {c.unexpected_count} row(s) [{listed}]")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        if self.outcome == "quarantined" and self.quarantine_path is not None:
            lines.append(f"  {len(self.offending_rows)} row(s) quarantined to {self.quarantine_path}; "
                         f"{self.valid_rows} valid row(s) in {self.valid_manifest_path}")
        elif self.valid_manifest_path is not None:
            lines.append(f"  valid manifest: {self.valid_manifest_path}")
        if self.class_counts:
            lines.append("  class counts: " + ", ".join(f"{k} {v}" for k, v in self.class_counts.items()))
        docs = f", Data Docs: {self.data_docs_index}" if self.data_docs_index else ""
        lines.append(f"  report: {self.report_path}{docs}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------- GX


@dataclass
class _Table:
    name: str
    frame: pd.DataFrame
    expectations: list[Any]
    index_columns: tuple[str, ...]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """GX logs and warns a lot at INFO/WARNING level; keep the terminal for our own messages."""
    gx_log = logging.getLogger("great_expectations")
    level = gx_log.level
    gx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        gx_log.setLevel(level)


def _context(docs_dir: Path) -> Any:
    """An ephemeral GX context: in-memory stores, no analytics, no progress bars, Data Docs under `docs_dir`."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "hjcag": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(docs_dir.resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_gx(tables: Sequence[_Table], docs_dir: Path) -> list[CheckResult]:
    """Validate every table (one checkpoint each, so each lists its own identifying columns) and build Data Docs."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    if docs_dir.exists():
        shutil.rmtree(docs_dir)  # ours: a previous run's pages would otherwise linger in the site
    results: list[CheckResult] = []
    with _quiet():
        context = _context(docs_dir)
        source = context.data_sources.add_pandas("hjcag")
        for table in tables:
            if not table.expectations:
                continue
            asset = source.add_dataframe_asset(table.name)
            batch = asset.add_batch_definition_whole_dataframe(table.name)
            suite = context.suites.add(gx.ExpectationSuite(name=table.name, expectations=table.expectations))
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=table.name, data=batch, suite=suite)
            )
            index_columns = [c for c in table.index_columns if c in table.frame.columns]
            checkpoint = context.checkpoints.add(gx.Checkpoint(
                name=table.name,
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="data_docs")],
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_columns},
            ))
            run = checkpoint.run(batch_parameters={"dataframe": table.frame})
            for validation in run.run_results.values():
                results += [_check_result(table, r, index_columns) for r in validation.results]
    # GX returns results grouped by domain: put them back in suite order for a stable, readable report
    order: dict[tuple[str, str], int] = {}
    for t_index, table in enumerate(tables):
        for e_index, exp in enumerate(table.expectations):
            order.setdefault((table.name, str((exp.meta or {}).get("check"))), t_index * 10_000 + e_index)
    return sorted(results, key=lambda c: (order.get((c.table, c.check), 1 << 30), c.column or ""))


def _exception_message(info: Any) -> str | None:
    """GX reports exceptions either flat ({raised_exception, exception_message}) or keyed by metric id."""
    if not isinstance(info, Mapping):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    for value in info.values():
        msg = _exception_message(value)
        if msg:
            return msg
        if isinstance(value, Mapping) and value.get("exception_message"):
            return str(value["exception_message"])
    return None


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (numpy / NaN -> Python / None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_result(table: _Table, r: Any, index_columns: Sequence[str]) -> CheckResult:
    config = r.expectation_config
    meta = dict(config.meta or {})
    kwargs = dict(config.kwargs)
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    result = dict(r.result or {})
    error = _exception_message(r.exception_info)
    detail = meta.get("detail_column")
    offenders = []
    for entry in result.get("unexpected_index_list") or []:
        if not isinstance(entry, Mapping):
            continue
        o = {c: _plain(entry.get(c)) for c in index_columns}
        values = {c: _plain(entry[c]) for c in columns if c in entry and c not in index_columns}
        if len(values) == 1:
            o["value"] = next(iter(values.values()))
        elif values:
            o["value"] = values
        row = entry.get("row_number")
        if detail and row is not None and detail in table.frame.columns:
            o["detail"] = _plain(table.frame[detail].iat[int(row)])
        offenders.append(o)
    return CheckResult(
        table=table.name,
        check=str(meta.get("check", config.type)),
        expectation=str(config.type),
        column=",".join(columns) or None,
        severity=str(getattr(config.severity, "value", config.severity) or "critical"),
        scope=str(meta.get("scope", "row")),
        success=bool(r.success) and error is None,
        reason=str(meta.get("reason", config.type)),
        unexpected_count=int(result.get("unexpected_count") or len(offenders)),
        offenders=offenders,
        error=error,
        observed=_plain(result.get("observed_value")) if not offenders else None,
    )


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # widths and counts travel as floats (NaN = unknown); print 6, not 6.0
    return repr(value)


def _reason_text(check: CheckResult, offender: Mapping[str, Any]) -> str:
    text = check.reason
    value = offender.get("value")
    if isinstance(value, Mapping):
        text += " (" + ", ".join(f"{k}={_show(v)}" for k, v in value.items()) + ")"
    elif "value" in offender and check.column:
        text += f" ({check.column}={_show(value)})"
    if offender.get("detail"):
        text += f": {offender['detail']}"
    return text


def _offending_rows(checks: Sequence[CheckResult], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Failing rows of critical row-scope checks, one entry per (table, row) with every reason."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for c in checks:
        if c.success or not c.critical or c.scope != "row":
            continue
        for o in c.offenders:
            row = o.get("row_number")
            if row is None:
                continue
            entry = rows.setdefault((c.table, int(row)), {
                "table": c.table, "row_number": int(row), **{k: o[k] for k in keys if k in o},
                "reasons": [], "checks": [],
            })
            entry["reasons"].append(_reason_text(c, o))
            entry["checks"].append(c.check)
    return [rows[k] for k in sorted(rows)]


def _table_failures(checks: Sequence[CheckResult]) -> list[str]:
    out = []
    for c in checks:
        if not c.critical or c.success:
            continue
        if c.error is not None:
            out.append(f"{c.check} ({c.expectation} on {c.column}) could not run: {c.error}")
        elif c.scope == "table":
            out.append(c.reason)
    return out


def _warnings(checks: Sequence[CheckResult]) -> list[str]:
    out = []
    for c in checks:
        if c.critical or c.success:
            continue
        observed = f" (observed {c.observed})" if c.observed is not None else ""
        out.append(f"{c.check}: {c.reason}{observed}")
    return out


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_plain(payload), indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------- manifest


def _load_manifest(manifest: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str, Path | None]:
    """(frame, source description, directory relative media paths are resolved against)."""
    if isinstance(manifest, pd.DataFrame):
        return manifest, "<DataFrame>", None
    path = Path(manifest)
    df = read_manifest_file(path)
    return df, str(path), path.parent.resolve()


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
                            f"{ids[:MAX_LISTED]}. Write seconds as numbers, or leave the value empty.")
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


def _write_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
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
    progress: bool = False,
) -> ValidationResult:
    """Validate a normalised manifest (parquet/CSV/JSONL path or DataFrame) for the chosen `modalities`.

    `label_set`: the dataset's labels (empty: the label check is skipped, with a warning). `media`: a
    :class:`~hjcag.validate.media_checks.MediaConfig` (default bounds when None). Relative media paths are
    resolved against `media_root`, else the manifest file's directory. Raises :class:`ValidationError` as the
    module docstring describes, after writing the report.
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
    input_path = None if isinstance(manifest, pd.DataFrame) else Path(manifest).resolve()
    _remove_stale(out, (VALID_MANIFEST_FILE, QUARANTINE_FILE), keep=input_path)
    df = _coerce(raw)
    frame = prepare_frame(df, folds_column)
    root = Path(media_root) if media_root is not None else base
    media_frame = check_media(frame, mods, media_cfg, root, progress)
    frame = pd.concat([frame, media_frame], axis=1)
    uses_media = any(m in MEDIA_MODALITIES for m in mods)
    expectations = manifest_expectations(list(frame.columns), label_set, mods, folds_column,
                                         media_cfg if uses_media else None)
    docs_dir = out / DOCS_DIR
    checks = _run_gx([_Table("manifest", frame, expectations, INDEX_COLUMNS)], docs_dir)

    offending = _offending_rows(checks, ("utterance_id",))
    for entry in offending:
        entry.pop("table", None)
    table_failures = _table_failures(checks)
    notes = _warnings(checks)
    if not label_set:
        notes.append("no label set configured for this dataset (params datasets.<name>.labels): labels not checked")
    labels = df["label"] if "label" in df.columns else pd.Series([], dtype=object)
    success = not offending and not table_failures
    bad = {e["row_number"] for e in offending}
    valid_path = quarantine_path = None
    valid_rows: int | None = None
    outcome = "passed" if success else "failed"
    if not table_failures and (success or (policy == "quarantine" and len(bad) < len(df))):
        keep = [i for i in range(len(df)) if i not in bad]
        clean = df.iloc[keep].reset_index(drop=True)
        valid_path = out / VALID_MANIFEST_FILE
        _write_parquet(_arrow_table(clean), valid_path)
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
            }), quarantine_path)
    result = ValidationResult(
        kind="manifest", success=success, outcome=outcome, source=source, out_dir=out,
        report_path=out / VALIDATION_FILE, data_docs_index=_docs_index(docs_dir), checks=checks,
        offending_rows=offending, table_failures=table_failures, rows=len(df), warnings=notes,
        class_counts=_class_counts(labels, label_set), policy=policy, valid_manifest_path=valid_path,
        quarantine_path=quarantine_path, valid_rows=valid_rows,
        extra={"modalities": list(mods), "label_set": list(label_set), "folds_column": folds_column,
               "media": asdict(media_cfg) if uses_media else None},
    )
    if valid_path is not None and bad:
        result.extra["class_counts_valid"] = _class_counts(clean["label"], label_set)
    result.elapsed_s = time.perf_counter() - started
    _write_json(result.report_path, result.to_dict())
    if outcome == "failed":
        raise ValidationError(_failure_message(result), result)
    log.info("manifest validation %s in %.1f s: %s", outcome, result.elapsed_s, result.report_path)
    return result


def _docs_index(docs_dir: Path) -> Path | None:
    index = docs_dir / "index.html"
    return index if index.is_file() else None


def _failure_message(result: ValidationResult) -> str:
    why = ""
    if result.table_failures:
        why = " (table-level problems cannot be quarantined)"
    elif result.policy == "quarantine":
        why = " (no valid row would be left)"
    hint = (" Fix the rows, or re-run with --policy quarantine to drop them and continue."
            if result.policy == "fail" and not result.table_failures else "")
    return (f"validation failed{why}; nothing downstream should run.{hint}\n{result.summary()}")


# ----------------------------------------------------------------------------------------------------- features


def validate_features(
    npz_path: str | Path,
    expected_dims: Mapping[str, int] | None,
    out_dir: str | Path,
    *,
    raise_on_failure: bool = True,
) -> ValidationResult:
    """Validate an extracted features .npz: widths as `expected_dims` ({'t': 1024, ...}; None = not checked),
    finite values, no all-constant feature column. Raises :class:`ValidationError` (after writing the report) when
    a check fails and `raise_on_failure`; the features file itself is never modified."""
    from hjcag.validate.features_suite import feature_tables, load_arrays, normalise_dims

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids, arrays = load_arrays(npz_path)
    dims = normalise_dims(expected_dims)
    tables = [_Table(t.name, t.frame, t.expectations, t.index_columns)
              for t in feature_tables(ids, arrays, dims)]
    docs_dir = out / DOCS_DIR
    checks = _run_gx(tables, docs_dir)
    offending = _offending_rows(checks, ("utterance_id", "modality", "feature_index"))
    table_failures = _table_failures(checks)
    notes = _warnings(checks)
    if not dims:
        notes.append("no expected feature widths given: dimensions not checked")
    success = not offending and not table_failures
    result = ValidationResult(
        kind="features", success=success, outcome="passed" if success else "failed", source=str(npz_path),
        out_dir=out, report_path=out / VALIDATION_FILE, data_docs_index=_docs_index(docs_dir), checks=checks,
        offending_rows=offending, table_failures=table_failures, rows=len(ids), warnings=notes,
        extra={"expected_dims": dims, "shapes": {k: list(v.shape) for k, v in arrays.items()}},
    )
    result.elapsed_s = time.perf_counter() - started
    _write_json(result.report_path, result.to_dict())
    log.info("features validation %s in %.1f s: %s", result.outcome, result.elapsed_s, result.report_path)
    if not success and raise_on_failure:
        raise ValidationError(f"features validation failed; do not train on this file.\n{result.summary()}", result)
    return result
