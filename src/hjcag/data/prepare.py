"""`hjcag prepare`: a dataset as downloaded -> out/manifest.parquet + out/prepare_report.json.

The adapters (meld, iemocap, generic manifest) only translate layouts. The checks every dataset shares live here:
duplicate ids, empty text and labels outside the label set (kept, flagged as issues for the validation stage to
judge), and media files. Rows that share an utterance_id follow the validation policy, as validation treats them:
``fail`` stops with an error naming each copy's file and line; ``quarantine`` leaves every copy out (which one is
right is unknown), recorded in the report's ``dropped`` with reason ``duplicate_id``, so utterance_id stays unique.
Media of a modality that was not chosen are not required: a missing one is simply nulled. Media of a chosen
modality that are missing stay in the manifest with their path and are listed in the report; deciding what to do
with them is validation's job. The manifest stores media paths relative to the dataset's data root and records the
root (:mod:`hjcag.data.media_root`), so it holds the same bytes whichever folder the dataset and the checkout are in.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hjcag.artifacts import MANIFEST_FILE, PREPARE_REPORT_FILE
from hjcag.data.iemocap import IEMOCAP_LABELS, read_iemocap
from hjcag.data.manifest import (
    SOURCE_KEY,
    AdapterResult,
    find_manifest_file,
    manifest_frame,
    read_generic_manifest,
    write_manifest,
)
from hjcag.data.media_root import under_root
from hjcag.data.meld import MELD_LABELS, read_meld
from hjcag.errors import ConfigError, DataError
from hjcag.params import DATA_KINDS, VALIDATION_POLICIES, parse_modalities
from hjcag.progress import progress as progress_bar

DATASET_KINDS: tuple[str, ...] = DATA_KINDS
DEFAULT_LABELS: dict[str, tuple[str, ...] | None] = {"meld": MELD_LABELS, "iemocap": IEMOCAP_LABELS, "manifest": None}
_MEDIA = (("a", "audio", "audio_path"), ("v", "video", "video_path"))
_LISTED = 5  # duplicated ids named in an error (the report lists all)


@dataclass
class PrepareReport:
    """What `prepare_dataset` did; written as prepare_report.json next to the manifest."""

    dataset: str
    source: str
    modalities: list[str]
    labels: list[str] | None
    manifest_path: str
    report_path: str
    data_root: str = ""  # the folder the manifest's media paths are relative to, as declared
    rows_read: int = 0
    rows_written: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    split_counts: dict[str, int] = field(default_factory=dict)
    session_counts: dict[str, int] = field(default_factory=dict)
    dialogues: int = 0
    dropped_counts: dict[str, int] = field(default_factory=dict)  # reason -> rows
    dropped_label_counts: dict[str, int] = field(default_factory=dict)  # label -> rows dropped for it
    dropped: list[dict[str, Any]] = field(default_factory=list)  # utterance_id, file, line, reason, detail
    issue_counts: dict[str, int] = field(default_factory=dict)
    issues: list[dict[str, Any]] = field(default_factory=list)  # kept rows validation should look at
    missing_media: list[dict[str, Any]] = field(default_factory=list)  # utterance_id, modality, path
    missing_media_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.dataset}: {self.rows_written} utterances written ({self.rows_read} read) in {self.dialogues} "
            f"dialogues -> {self.manifest_path}",
            f"  labels: {dict(sorted(self.label_counts.items()))}",
        ]
        if self.split_counts:
            lines.append(f"  splits: {self.split_counts}")
        if self.session_counts:
            lines.append(f"  sessions: {self.session_counts}")
        if self.dropped_counts:
            extra = f" (labels {self.dropped_label_counts})" if self.dropped_label_counts else ""
            lines.append(f"  dropped: {self.dropped_counts}{extra}")
        if self.issue_counts:
            lines.append(f"  flagged for validation: {self.issue_counts}")
        if self.missing_media_counts:
            lines.append(f"  missing media: {self.missing_media_counts}")
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"  details: {self.report_path}")
        return "\n".join(lines)


def _adapt(kind: str, source: Path, modalities: tuple[str, ...], labels: Sequence[str] | None) -> AdapterResult:
    if kind == "meld":
        return read_meld(source, modalities)
    if kind == "iemocap":
        return read_iemocap(source, modalities, labels=labels or IEMOCAP_LABELS)
    return read_generic_manifest(source, modalities)


def _where(source: dict[str, Any]) -> str:
    return f"{source.get('file')}:{source.get('line')}"


def duplicated_ids(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """utterance_id -> the sources ({"file", "line"}) of its rows, for every id on more than one row."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        seen.setdefault(row["utterance_id"], []).append(row.get(SOURCE_KEY) or {})
    return {uid: where for uid, where in seen.items() if len(where) > 1}


def duplicates_error(duplicates: dict[str, list[dict[str, Any]]]) -> DataError:
    """One line naming each duplicated id with the file:line of every copy (the first few ids)."""
    named = [f"'{uid}' at {' and '.join(map(_where, where))}" for uid, where in list(duplicates.items())[:_LISTED]]
    more = f" (+{len(duplicates) - _LISTED} more id(s))" if len(duplicates) > _LISTED else ""
    return DataError(
        f"{len(duplicates)} utterance_id(s) name more than one row: {'; '.join(named)}{more}. Give every row its "
        "own id, or leave every copy out with --policy quarantine (validation.policy)."
    )


def data_root_of(kind: str, source: Path) -> Path:
    """The folder a dataset's media paths are stored relative to: the source folder, or for a manifest file the
    folder holding it (where its relative paths point from)."""
    return find_manifest_file(source).parent if kind == "manifest" else source


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def prepare_dataset(
    kind: str,
    source: str | Path,
    out: str | Path,
    modalities: str | Sequence[str] = ("t", "a", "v"),
    labels: Sequence[str] | None = None,
    progress: bool = True,
    policy: str = "fail",
) -> PrepareReport:
    """Build out/manifest.parquet and out/prepare_report.json from a dataset as downloaded.

    kind: "meld" | "iemocap" | "manifest" (a user's CSV/JSONL with the normalised columns).
    modalities: "t,a,v" or a subset; media files of modalities not chosen are not required.
    labels: the label set (default: the dataset's; none for "manifest"). IEMOCAP rows outside it are dropped
    (the paper's six-class protocol); elsewhere they are kept and flagged as `unknown_label` issues.
    policy: the validation policy for rows sharing an utterance_id ("fail": raise; "quarantine": drop every copy).
    Raises DataError for unreadable input (naming file, line and fix), duplicated ids under "fail", or when no
    utterance is left.
    """
    if kind not in DATASET_KINDS:
        raise ConfigError(f"unknown dataset kind '{kind}'. Use one of: {', '.join(DATASET_KINDS)}.")
    if policy not in VALIDATION_POLICIES:
        raise ConfigError(f"validation policy '{policy}' is unknown. Use one of {', '.join(VALIDATION_POLICIES)}.")
    mods = parse_modalities(modalities)
    source, out = Path(source), Path(out)
    if not source.exists():
        raise DataError(f"source '{source}' does not exist. Pass --source to the downloaded dataset.")
    label_set = tuple(labels) if labels else DEFAULT_LABELS[kind]
    root = data_root_of(kind, source)
    out.mkdir(parents=True, exist_ok=True)
    report = PrepareReport(  # paths as declared: relative ones stay relative, so the report is the same anywhere
        dataset=kind, source=str(source), modalities=list(mods),
        labels=list(label_set) if label_set else None,
        manifest_path=str(out / MANIFEST_FILE), report_path=str(out / PREPARE_REPORT_FILE), data_root=str(root),
    )

    result = _adapt(kind, source, mods, label_set)
    report.rows_read, report.warnings, report.sources = result.rows_read, list(result.warnings), result.sources
    dropped, issues = list(result.dropped), list(result.issues)
    duplicates = duplicated_ids(result.rows)
    if duplicates and policy == "fail":
        raise duplicates_error(duplicates)

    kept: list[dict[str, Any]] = []
    exists: dict[str, bool] = {}

    def is_file(p: str) -> bool:
        if p not in exists:
            exists[p] = os.path.isfile(p)
        return exists[p]

    for row in progress_bar(result.rows, desc=f"prepare {kind}", unit="utt", disable=not progress, mininterval=1.0):
        uid, where = row["utterance_id"], row.get(SOURCE_KEY) or {}
        if uid in duplicates:  # policy quarantine: every copy left out
            others = " and ".join(_where(w) for w in duplicates[uid] if w is not where)
            dropped.append({"utterance_id": uid, **where, "reason": "duplicate_id",
                            "detail": f"quarantined: same utterance_id as {others}; which row is right is unknown"})
            continue
        if "t" in mods and not (row.get("text") or "").strip():
            issues.append({"utterance_id": uid, **where, "problem": "empty_text"})
        if label_set is not None and row["label"] not in label_set:
            issues.append({"utterance_id": uid, **where, "problem": "unknown_label",
                           "detail": f"label '{row['label']}' is not one of {', '.join(label_set)}"})
        for mod, name, col in _MEDIA:
            path = row.get(col)
            if mod not in mods:
                if path and not is_file(path):
                    row[col] = None  # not needed for this run
            elif not path:
                report.missing_media.append({"utterance_id": uid, **where, "modality": name, "path": None,
                                             "detail": f"no {col} given"})
            elif not is_file(path):
                report.missing_media.append({"utterance_id": uid, **where, "modality": name,
                                             "path": under_root(path, root), "detail": "file not found"})
            if row.get(col):
                row[col] = under_root(row[col], root)
        kept.append(row)

    report.dropped, report.issues = dropped, issues
    report.dropped_counts = dict(Counter(d["reason"] for d in dropped))
    report.dropped_label_counts = dict(Counter(d["label"] for d in dropped if "label" in d))
    report.issue_counts = dict(Counter(i["problem"] for i in issues))
    report.missing_media_counts = dict(Counter(m["modality"] for m in report.missing_media))
    report.rows_written = len(kept)
    report.label_counts = dict(Counter(r["label"] for r in kept))
    report.split_counts = dict(Counter(r["split"] for r in kept if r.get("split")))
    report.session_counts = dict(Counter(r["session"] for r in kept if r.get("session")))
    report.dialogues = len({r["dialogue_id"] for r in kept})

    if not kept:
        (out / MANIFEST_FILE).unlink(missing_ok=True)  # never leave a stale manifest beside this report
        _write_json(out / PREPARE_REPORT_FILE, report.to_dict())
        raise DataError(
            f"no utterance left from '{source}' ({report.rows_read} read, dropped: {report.dropped_counts}). "
            f"See {out / PREPARE_REPORT_FILE}; check --dataset and --source."
        )
    write_manifest(manifest_frame(kept), out / MANIFEST_FILE, data_root=root)
    _write_json(out / PREPARE_REPORT_FILE, report.to_dict())
    return report
