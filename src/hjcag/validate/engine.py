"""The validation engine: run GX expectation suites, read the results back, write the report.

What a run leaves in ``out_dir`` (and nothing anywhere else: GX runs in an ephemeral, in-memory context whose only
Data Docs site is ``out_dir/data_docs`` or the docs folder given; usage statistics are off): ``validation.json``
(success, every check with its offending rows, the offending rows with their reasons, class counts, the outputs
written; no timings, so the same data gives the same bytes) and ``data_docs/index.html``, GX's own Data Docs (its
styling loads from CDNs; without network the pages still read; they carry the run's time).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hjcag.errors import HjcagError

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


@dataclass
class Table:
    """One table GX validates: its frame, its expectations and the columns that identify an offending row."""

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


def run_gx(tables: Sequence[Table], docs_dir: Path) -> list[CheckResult]:
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


def plain(value: Any) -> Any:
    """JSON-friendly scalars (numpy / NaN -> Python / None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _check_result(table: Table, r: Any, index_columns: Sequence[str]) -> CheckResult:
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
        o = {c: plain(entry.get(c)) for c in index_columns}
        values = {c: plain(entry[c]) for c in columns if c in entry and c not in index_columns}
        if len(values) == 1:
            o["value"] = next(iter(values.values()))
        elif values:
            o["value"] = values
        row = entry.get("row_number")
        if detail and row is not None and detail in table.frame.columns:
            o["detail"] = plain(table.frame[detail].iat[int(row)])
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
        observed=plain(result.get("observed_value")) if not offenders else None,
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


def offending_rows(checks: Sequence[CheckResult], keys: Sequence[str]) -> list[dict[str, Any]]:
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


def table_failures(checks: Sequence[CheckResult]) -> list[str]:
    out = []
    for c in checks:
        if not c.critical or c.success:
            continue
        if c.error is not None:
            out.append(f"{c.check} ({c.expectation} on {c.column}) could not run: {c.error}")
        elif c.scope == "table":
            out.append(c.reason)
    return out


def check_warnings(checks: Sequence[CheckResult]) -> list[str]:
    out = []
    for c in checks:
        if c.critical or c.success:
            continue
        observed = f" (observed {c.observed})" if c.observed is not None else ""
        out.append(f"{c.check}: {c.reason}{observed}")
    return out


def docs_index(docs_dir: Path) -> Path | None:
    index = docs_dir / "index.html"
    return index if index.is_file() else None
