"""`hjcag validate-features`: the checks of an extracted features file (widths, finite values, constant columns, at
least two classes)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hjcag.artifacts import VALIDATION_FILE, write_json
from hjcag.data.features_file import class_count_problem, select_labels
from hjcag.validate import engine
from hjcag.validate.engine import ValidationError, ValidationResult

log = logging.getLogger(__name__)


def validate_features(
    npz_path: str | Path,
    expected_dims: Mapping[str, int] | None,
    out_dir: str | Path,
    *,
    docs_dir: str | Path | None = None,
    raise_on_failure: bool = True,
    labels: Sequence[str] | None = None,
) -> ValidationResult:
    """Validate an extracted features .npz: widths as `expected_dims` ({'t': 1024, ...}; None = not checked),
    finite values, no all-constant feature column, and at least two classes (of `labels` when given: ``--labels``,
    as training selects them). Raises :class:`ValidationError` (after writing the report) when a check fails and
    `raise_on_failure`; the features file itself is never modified. `docs_dir`: where GX's Data Docs go (default
    ``out_dir/data_docs``; they carry timestamps)."""
    from hjcag.validate.features_suite import feature_tables, load_arrays, normalise_dims

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids, label_column, arrays = load_arrays(npz_path)
    selected = _selected_labels(label_column, labels, npz_path)
    dims = normalise_dims(expected_dims)
    docs_dir = Path(docs_dir) if docs_dir is not None else out / engine.DOCS_DIR
    checks = engine.run_gx(feature_tables(ids, arrays, dims), docs_dir)
    offending = engine.offending_rows(checks, ("utterance_id", "modality", "feature_index"))
    failures = engine.table_failures(checks)
    if selected is None:
        failures.append("no 'label' key: every utterance needs its label (README 'Pre-extracted features')")
    else:
        problem = class_count_problem(selected, npz_path, selected=labels is not None)
        failures += [problem] if problem else []
    notes = engine.check_warnings(checks)
    if not dims:
        notes.append("no expected feature widths given: dimensions not checked")
    success = not offending and not failures
    result = ValidationResult(
        kind="features", success=success, outcome="passed" if success else "failed", source=str(npz_path),
        report_path=out / VALIDATION_FILE, data_docs_index=engine.docs_index(docs_dir), checks=checks,
        offending_rows=offending, table_failures=failures, rows=len(ids), warnings=notes,
        class_counts={} if selected is None else dict(sorted(Counter(selected.tolist()).items())),
        extra={"expected_dims": dims, "shapes": {k: list(v.shape) for k, v in arrays.items()}},
    )
    result.elapsed_s = time.perf_counter() - started
    write_json(result.report_path, engine.plain(result.to_dict()))
    log.info("features validation %s in %.1f s: %s", result.outcome, result.elapsed_s, result.report_path)
    if not success and raise_on_failure:
        why = f" ({failures[0].rstrip('.')})" if failures else ""
        raise ValidationError(f"features validation failed{why}; do not train on this file.\n{result.summary()}",
                              result)
    return result


def _selected_labels(labels: np.ndarray | None, wanted: Sequence[str] | None, source: str | Path) -> np.ndarray | None:
    """The label column after label selection (`wanted`: ``--labels``), as training selects it."""
    if labels is None or not wanted:
        return labels
    return labels[select_labels(labels, wanted, source)]
