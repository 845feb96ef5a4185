"""The features suite: GX expectations on an extracted features ``.npz`` (the format of
:mod:`hjcag.data.features_file`).

GX validates tables, and a features file holds (N, d) / (N, L, d) arrays, so the file is summarised into three small
tables first, each with its own expectations:

- ``feature_modalities``: one row per modality (present or expected): its width ``dim`` against the configured
  ``expected_dim``, and its row count against the number of utterances;
- ``feature_utterances``: one row per utterance: how many NaN/inf values it holds per modality (must be 0);
- ``feature_columns``: one row per feature column (modality, index): the range max - min of its finite values over
  all utterances and steps (must be > 0: an all-constant column carries no information and usually means a broken
  extractor).

The statistics are computed in row chunks so a large file is never copied whole.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before GX is imported: never send usage statistics
if logging.getLogger("great_expectations").level == logging.NOTSET:  # GX logs its import at INFO level
    logging.getLogger("great_expectations").setLevel(logging.WARNING)

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from hjcag.errors import ConfigError, FeatureFileError
from hjcag.params import MODALITIES, MODALITY_NAMES
from hjcag.validate.engine import Table
from hjcag.validate.manifest_suite import ROW_NUMBER, expectation

CHUNK_ROWS = 256
_LONG_TO_SHORT = {v: k for k, v in MODALITY_NAMES.items()}


def normalise_dims(dims: Mapping[str, int] | None) -> dict[str, int]:
    """{'t'|'text': 1024, ...} -> {'t': 1024, ...}."""
    out: dict[str, int] = {}
    for key, value in (dims or {}).items():
        m = _LONG_TO_SHORT.get(key, key)
        if m not in MODALITIES:
            raise ConfigError(f"expected feature dims: unknown modality '{key}'. Use t, a, v (or text, audio, visual).")
        try:
            out[m] = int(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"expected feature dims: '{key}={value}' is not an integer width.") from exc
    return out


def load_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """(utterance ids, labels (None: no 'label' key), {modality: array}) from a features .npz; FeatureFileError
    when it cannot be read at all."""
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f"features file '{path}' not found. Run `hjcag features` first or fix the path.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            if "utterance_id" not in keys:
                raise FeatureFileError(
                    f"{path}: no 'utterance_id' key (found {sorted(keys)}). See README 'Pre-extracted features'."
                )
            ids = np.asarray(npz["utterance_id"]).astype(str)
            labels = np.asarray(npz["label"]).astype(str).reshape(-1) if "label" in keys else None
            arrays = {m: np.asarray(npz[MODALITY_NAMES[m]]) for m in MODALITIES if MODALITY_NAMES[m] in keys}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise FeatureFileError(f"{path}: not a readable .npz features file ({exc}).") from exc
    if not arrays:
        raise FeatureFileError(f"{path}: holds no text, audio or visual array. See README 'Pre-extracted features'.")
    return ids, labels, arrays


def _usable(x: np.ndarray, n: int) -> bool:
    return x.ndim in (2, 3) and x.shape[0] == n and np.issubdtype(x.dtype, np.number) and x.shape[-1] > 0


def _column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row non-finite counts (N,) and per-column ranges of finite values (d,) (NaN: no finite value)."""
    n, d = x.shape[0], x.shape[-1]
    bad = np.zeros(n, dtype=np.int64)
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    for start in range(0, n, CHUNK_ROWS):
        chunk = np.asarray(x[start : start + CHUNK_ROWS], dtype=np.float64).reshape(-1, d)
        finite = np.isfinite(chunk)
        rows = min(CHUNK_ROWS, n - start)
        bad[start : start + rows] = (~finite).reshape(rows, -1).sum(axis=1)
        lo = np.minimum(lo, np.where(finite, chunk, np.inf).min(axis=0, initial=np.inf))
        hi = np.maximum(hi, np.where(finite, chunk, -np.inf).max(axis=0, initial=-np.inf))
    value_range = np.where(np.isfinite(lo) & np.isfinite(hi), hi - lo, np.nan)
    return bad, value_range


def feature_tables(ids: np.ndarray, arrays: Mapping[str, np.ndarray], expected_dims: Mapping[str, int] | None
                   ) -> list[Table]:
    """The three tables and their expectations (see the module docstring)."""
    expected = normalise_dims(expected_dims)
    n = len(ids)
    mods = [m for m in MODALITIES if m in arrays or m in expected]
    modality_frame = pd.DataFrame({
        ROW_NUMBER: range(len(mods)),
        "modality": [MODALITY_NAMES[m] for m in mods],
        "dim": [float(arrays[m].shape[-1]) if m in arrays and arrays[m].ndim else np.nan for m in mods],
        "expected_dim": [float(expected[m]) if m in expected else np.nan for m in mods],
        "rows": [float(arrays[m].shape[0]) if m in arrays and arrays[m].ndim else np.nan for m in mods],
        "expected_rows": float(n),
        "shape": [str(tuple(arrays[m].shape)) if m in arrays else None for m in mods],
        "usable": [_usable(arrays[m], n) if m in arrays else None for m in mods],  # None: reported as missing
    })
    modality_checks = [
        expectation(gxe.ExpectColumnValuesToNotBeNull, "modality_present", "configured modality missing from the file",
                    column="dim"),
        expectation(gxe.ExpectColumnPairValuesToBeEqual, "dim_as_configured",
                    "feature width differs from the configured width", column_A="dim", column_B="expected_dim",
                    ignore_row_if="either_value_is_missing"),
        expectation(gxe.ExpectColumnPairValuesToBeEqual, "one_row_per_utterance", "array rows differ from the number "
                    "of utterance_ids", column_A="rows", column_B="expected_rows",
                    ignore_row_if="either_value_is_missing"),
        expectation(gxe.ExpectColumnValuesToBeInSet, "array_usable", "array is not a numeric (N, d) or (N, L, d) "
                    "array with one row per utterance", detail_column="shape", column="usable", value_set=[True]),
    ]

    utterances = pd.DataFrame({ROW_NUMBER: range(n), "utterance_id": ids})
    column_parts = []
    utterance_checks = [
        expectation(gxe.ExpectColumnValuesToBeUnique, "utterance_id_unique", "duplicate utterance_id",
                    column="utterance_id"),
    ]
    column_checks = []
    for m in mods:
        if m not in arrays or not _usable(arrays[m], n):
            continue
        name = MODALITY_NAMES[m]
        bad, value_range = _column_stats(arrays[m])
        utterances[f"{name}_nonfinite"] = bad
        utterance_checks.append(expectation(
            gxe.ExpectColumnValuesToBeBetween, f"{name}_finite", f"{name} features hold NaN or inf values",
            column=f"{name}_nonfinite", max_value=0))
        column_parts.append(pd.DataFrame({"modality": name, "feature_index": np.arange(len(value_range)),
                                          "value_range": value_range}))
    if column_parts:
        columns = pd.concat(column_parts, ignore_index=True)
        columns.insert(0, ROW_NUMBER, range(len(columns)))
        column_checks.append(expectation(
            gxe.ExpectColumnValuesToBeBetween, "column_not_constant",
            "feature column is constant over all utterances (carries no information; dead ResNet units and some "
            "openSMILE functionals are)", column="value_range", min_value=0, strict_min=True, warning=True))
    else:
        columns = pd.DataFrame({ROW_NUMBER: [], "modality": [], "feature_index": [], "value_range": []})
    return [
        Table("feature_modalities", modality_frame, modality_checks, (ROW_NUMBER, "modality")),
        Table("feature_utterances", utterances, utterance_checks, (ROW_NUMBER, "utterance_id")),
        Table("feature_columns", columns, column_checks, (ROW_NUMBER, "modality", "feature_index")),
    ]
