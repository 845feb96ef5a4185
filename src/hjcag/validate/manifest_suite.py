"""The manifest suite: GX expectations on the normalised manifest (plus the media check columns).

Every expectation carries ``meta``: ``check`` (a stable name used in validation.json), ``reason`` (the sentence put
next to each offending row), ``scope`` (``row``: offending rows can be dropped; ``table``: the whole manifest is
unusable, e.g. a missing column) and optionally ``detail_column`` (a column whose value explains the failure, such as
the decoder's error message).

Two rules are not single-column facts ("a dialogue is never in two splits / folds"); GX's pandas backend has no
expectation for them (``UnexpectedRowsExpectation`` is SQL-only), so :func:`prepare_frame` adds derived columns
(``dialogue_split_count``, ``dialogue_fold_count``: distinct splits / folds of the row's dialogue) that ordinary
column expectations can check, which keeps the offending rows in the GX result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before GX is imported: never send usage statistics
if logging.getLogger("great_expectations").level == logging.NOTSET:  # GX logs its import at INFO level
    logging.getLogger("great_expectations").setLevel(logging.WARNING)

import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.expectations.metadata_types import FailureSeverity

from hjcag.data.manifest import MANIFEST_COLUMNS, NON_NULL_COLUMNS, SPLITS
from hjcag.features.media_rules import media_bounds
from hjcag.params import MediaConfig
from hjcag.validate.media_checks import MEDIA_MODALITIES

ROW_NUMBER = "row_number"  # position of the row in the input: identifies rows even when utterance_ids repeat
INDEX_COLUMNS = (ROW_NUMBER, "utterance_id")
TEXT_PRESENT = r"\S"  # at least one non-space character


def expectation(
    cls: type[gxe.Expectation],
    check: str,
    reason: str,
    scope: str = "row",
    detail_column: str | None = None,
    warning: bool = False,
    **kwargs: Any,
) -> gxe.Expectation:
    """A GX expectation with the meta the engine reads back (see the module docstring)."""
    meta: dict[str, Any] = {"check": check, "reason": reason, "scope": scope}
    if detail_column:
        meta["detail_column"] = detail_column
    severity = FailureSeverity.WARNING if warning else FailureSeverity.CRITICAL
    return cls(meta=meta, notes=reason, severity=severity, **kwargs)


def required_columns(folds_column: str | None = None) -> list[str]:
    return [*MANIFEST_COLUMNS, *([folds_column] if folds_column else [])]


def prepare_frame(df: pd.DataFrame, folds_column: str | None = None) -> pd.DataFrame:
    """The frame GX validates: the manifest plus ``row_number`` and the dialogue consistency columns."""
    frame = df.reset_index(drop=True).copy()
    frame.insert(0, ROW_NUMBER, range(len(frame)))
    if "dialogue_id" in frame.columns:
        groups = frame.groupby("dialogue_id", dropna=True, sort=False)
        if "split" in frame.columns:
            # a dialogue with some rows split-less and others in 'train' counts as two splits
            frame["dialogue_split_count"] = groups["split"].transform(lambda s: s.nunique(dropna=False))
        if folds_column and folds_column in frame.columns:
            frame["dialogue_fold_count"] = groups[folds_column].transform(lambda s: s.nunique(dropna=False))
    return frame


def manifest_expectations(
    columns: Sequence[str],
    label_set: Sequence[str],
    modalities: Sequence[str],
    folds_column: str | None = None,
    media: MediaConfig | None = None,
) -> list[gxe.Expectation]:
    """The suite for a frame with `columns` (from :func:`prepare_frame` and the media checks).

    Column expectations are only added for columns that exist; the missing ones fail the table-level
    ``required_column`` checks instead of erroring once per expectation.
    """
    have = set(columns)
    suite: list[gxe.Expectation] = [
        expectation(gxe.ExpectColumnToExist, "required_column", f"required column '{c}' is missing", scope="table",
                    column=c)
        for c in required_columns(folds_column)
    ]
    suite.append(expectation(gxe.ExpectTableRowCountToBeBetween, "has_rows", "the manifest has no rows",
                             scope="table", min_value=1))

    def add(column: str, *items: gxe.Expectation) -> None:
        if column in have:
            suite.extend(items)

    for c in NON_NULL_COLUMNS:
        add(c, expectation(gxe.ExpectColumnValuesToNotBeNull, f"{c}_present", f"{c} is missing", column=c))
    add("utterance_id",
        expectation(gxe.ExpectColumnValuesToMatchRegex, "utterance_id_blank", "utterance_id is blank",
                    column="utterance_id", regex=TEXT_PRESENT),
        expectation(gxe.ExpectColumnValuesToBeUnique, "utterance_id_unique",
                    "duplicate utterance_id (every copy is flagged: which one is right is unknown)",
                    column="utterance_id"))
    if label_set:
        labels = sorted(set(label_set))
        add("label",
            expectation(gxe.ExpectColumnValuesToBeInSet, "label_known",
                        f"label is not in the dataset's label set {labels}", column="label", value_set=labels),
            expectation(gxe.ExpectColumnDistinctValuesToContainSet, "label_all_classes_present",
                        "some classes of the label set have no utterance", scope="table", warning=True,
                        column="label", value_set=labels))
    add("split",
        expectation(gxe.ExpectColumnValuesToBeInSet, "split_known", f"split is not one of {list(SPLITS)}",
                    column="split", value_set=list(SPLITS)))
    if "t" in modalities:
        add("text",
            expectation(gxe.ExpectColumnValuesToNotBeNull, "text_present", "text is missing (modality t)",
                        column="text"),
            expectation(gxe.ExpectColumnValuesToMatchRegex, "text_not_empty", "text is empty (modality t)",
                        column="text", regex=TEXT_PRESENT))
    for m, (column, prefix) in MEDIA_MODALITIES.items():
        if m in modalities:
            add(column, expectation(gxe.ExpectColumnValuesToNotBeNull, f"{column}_present",
                                    f"no {prefix} file given (modality {m})", column=column))
    add("start_s",
        expectation(gxe.ExpectColumnValuesToBeBetween, "start_not_negative", "start_s is negative",
                    column="start_s", min_value=0))
    if "start_s" in have and "end_s" in have:
        suite.append(expectation(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB, "span_ordered", "time span is not ordered (end_s <= start_s)",
            column_A="end_s", column_B="start_s", or_equal=False, ignore_row_if="either_value_is_missing"))
    add("dialogue_split_count",
        expectation(gxe.ExpectColumnValuesToBeBetween, "dialogue_one_split", "the row's dialogue is in several splits",
                    column="dialogue_split_count", max_value=1))
    add("dialogue_fold_count",
        expectation(gxe.ExpectColumnValuesToBeBetween, "dialogue_one_fold",
                    f"the row's dialogue is in several folds ('{folds_column}')",
                    column="dialogue_fold_count", max_value=1))
    if media is not None:
        suite += _media_expectations(have, modalities, media)
    return suite


def _media_expectations(have: set[str], modalities: Sequence[str], cfg: MediaConfig) -> list[gxe.Expectation]:
    out: list[gxe.Expectation] = []
    for m, (_, p) in MEDIA_MODALITIES.items():
        if m not in modalities or f"{p}_exists" not in have:
            continue
        err = f"{p}_error"
        out += [
            expectation(gxe.ExpectColumnValuesToBeInSet, f"{p}_exists", f"{p} file not found", column=f"{p}_exists",
                        value_set=[True]),
            expectation(gxe.ExpectColumnValuesToBeInSet, f"{p}_decodes", f"{p} file does not decode",
                        detail_column=err, column=f"{p}_decodes", value_set=[True]),
        ]
        # duration, then sample rate or frames: the bounds serving checks requests against too (media_rules)
        between = [expectation(gxe.ExpectColumnValuesToBeBetween, b.check, b.describe(), column=b.column,
                               min_value=b.low, max_value=b.high) for b in media_bounds(cfg, m)]
        out += [between[0], expectation(gxe.ExpectColumnValuesToBeInSet, f"{p}_span_in_file",
                                        f"time span lies outside the {p} file", column=f"{p}_span_in_file",
                                        value_set=[True]), *between[1:]]
    return out
