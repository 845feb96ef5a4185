"""The paper's Table 4: HJCAG with each component removed, and every modality subset, on the same folds; then
the model with conversation context (gru / transformer, causal / bidirectional; not in the paper) when the features
carry the utterances' order.

Every configuration is an ordinary run of :func:`train_and_evaluate` in ``out_dir/<slug>/`` (so each resumes and
skips independently); folds depend only on the rows, labels, groups and seed, so all configurations share them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hjcag.artifacts import write_json
from hjcag.data.features_file import FeatureSet
from hjcag.model.table4 import CONTEXT_ROWS, TABLE4, Table4Row
from hjcag.model_catalog import PAPER_MODEL
from hjcag.params import CONTEXT_AUTO, MODALITY_NAMES, Params
from hjcag.train.metrics import SCALAR_METRICS
from hjcag.train.report import pct, pct_difference
from hjcag.train.run import train_and_evaluate

log = logging.getLogger(__name__)

ABLATION_MD = "ablation.md"
ABLATION_JSON = "ablation.json"

AblationEpochCallback = Callable[[str, int, int, dict[str, float]], None]
"""on_epoch(config_slug, fold_index, epoch, metrics)."""

# Table 4 of the paper (accuracy, weighted F1 in %), shown beside ours for the two datasets it reports.
PAPER_TABLE4: dict[str, dict[str, tuple[float, float]]] = {
    "iemocap": {
        "full": (75.47, 76.84), "no_bimodal": (72.45, 72.38), "no_trimodal": (72.87, 73.15),
        "no_gate": (73.14, 73.21), "t": (60.76, 61.23), "a": (57.77, 57.34), "v": (40.37, 41.72),
        "ta": (72.78, 72.66), "tv": (70.01, 69.89), "av": (72.35, 71.96),
    },
    "meld": {
        "full": (69.25, 68.97), "no_bimodal": (65.34, 65.12), "no_trimodal": (66.57, 66.50),
        "no_gate": (67.45, 67.63), "t": (58.82, 58.79), "a": (48.23, 45.81), "v": (46.05, 43.25),
        "ta": (64.45, 65.21), "tv": (64.67, 64.83), "av": (63.17, 62.64),
    },
}


def _skip_reason(row: Table4Row, fs: FeatureSet, model_name: str) -> str | None:
    missing = [MODALITY_NAMES[m] for m in row.modalities if m not in fs.modalities]
    if missing:
        return f"the features have no {', '.join(missing)} modality"
    if "context" in row.model_overrides:
        return None if fs.order is not None else "the features carry no utterance order (key 'order')"
    if row.model_overrides and model_name != PAPER_MODEL:
        return f"component switches apply to the HJCAG model only (model is '{model_name}')"
    return None


def _label(row: Table4Row, model_name: str) -> str:
    return row.label.replace("HJCAG", model_name) if model_name != PAPER_MODEL else row.label


def ablation_markdown(summary: dict[str, Any]) -> str:
    """The paper's layout: one row per configuration, Acc, W-F1 and macro F1 (mean ± std, %) for the dataset."""
    dataset = summary["dataset"]
    paper = PAPER_TABLE4.get(str(dataset).lower())
    head = f"| Models/Modalities | {dataset} Acc (%) | {dataset} W-F1 (%) | {dataset} macro F1 (%) |"
    rule = "|---|---|---|---|"
    if paper:
        head += " Paper Acc | Paper W-F1 |"
        rule += "---|---|"
    lines = [
        f"# Ablation study and modality contribution (Table 4): {dataset}",
        "",
        f"Model `{summary['model']}`, protocol `{summary['protocol']}`, {summary['n_folds']} fold(s), "
        f"{summary['n_utterances']} utterances; every configuration ran on the same folds. Mean ± std over folds.",
        "",
        head,
        rule,
    ]
    done = {row["slug"]: row for row in summary["rows"]}
    skipped = {row["slug"]: row for row in summary["skipped"]}
    for config in (*TABLE4, *CONTEXT_ROWS):  # the paper's row order, then the context rows
        if config.slug in done:
            row = done[config.slug]
            line = (f"| {row['label']} | {pct(row['accuracy'])} | {pct(row['weighted_f1'])} | "
                    f"{pct(row['macro_f1'])} |")
        elif config.slug in skipped:
            line = f"| {skipped[config.slug]['label']} | skipped | skipped | skipped |"
        else:
            continue
        if paper:
            acc_wf1 = paper.get(config.slug)
            line += f" {acc_wf1[0]:.2f} | {acc_wf1[1]:.2f} |" if acc_wf1 else " - | - |"
        lines.append(line)
    if summary["skipped"]:
        lines += ["", "Skipped:"]
        lines += [f"- {row['label']}: {row['reason']}." for row in summary["skipped"]]
    if paper:
        lines += ["", "Paper columns: Table 4 of the paper, for reference (its features and protocol, not this run)."]
    if any(r["slug"].startswith("context_") for r in summary["rows"]):
        lines += ["", f"Context rows (not in the paper): the utterance read with up to {summary.get('context_window')} "
                      "turns of its dialogue; causal = preceding turns only (what a live endpoint sees), "
                      "bidirectional = also the following ones (offline evaluation only)."]
        lines += _context_differences(summary["rows"])
    lines.append("")
    return "\n".join(lines)


def _context_differences(rows: list[dict[str, Any]]) -> list[str]:
    """Each warm-started context row against its own first stage: the context-free model of the same fold, the one
    the paper's row on the same modalities trains (`full`, or the subset row of the features' modalities), paired
    fold by fold (hjcag.train.metrics.context_comparison)."""
    compared = [r for r in rows if r.get("context_comparison")]
    if not compared:
        return []
    lines = ["", "Each context row against the same folds without context (its warm start's first stage, the "
                 "context-free model; 0 where the validation check dropped the context): with minus without, mean "
                 "± standard error over the folds.", "",
             "| Context row | Context kept | Acc difference | W-F1 difference | macro F1 difference |",
             "|---|---|---|---|---|"]
    for row in compared:
        comparison = row["context_comparison"]
        differences = " | ".join(pct_difference(comparison["difference"][key])
                                 for key in SCALAR_METRICS)
        lines.append(f"| {row['label']} | {comparison['kept']} of {comparison['n']} | {differences} |")
    return lines


def run_ablation(
    fs: FeatureSet,
    params: Params,
    out_dir: Path,
    model_name: str = PAPER_MODEL,
    quiet: bool = False,
    on_epoch: AblationEpochCallback | None = None,
) -> dict[str, Any]:
    """Run every Table 4 configuration the features allow; write ablation.md and ablation.json; return the summary.

    Summary: {"dataset", "protocol", "model", "n_folds", "n_utterances", "rows": [{"label", "slug", "modalities",
    "overrides", "accuracy", "weighted_f1", "macro_f1", "n_folds", "dir"}, and "context_comparison" on a warm-started
    context row], "skipped": [{"label", "slug", "reason"}]}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    runnable = []
    for row in (*TABLE4, *CONTEXT_ROWS):
        reason = _skip_reason(row, fs, model_name)
        if reason:
            log.warning("ablation: skipping '%s': %s", _label(row, model_name), reason)
            skipped.append({"label": _label(row, model_name), "slug": row.slug, "reason": reason})
        else:
            runnable.append(row)
    n_folds = 0
    for i, row in enumerate(runnable, start=1):
        if not quiet:
            log.info("ablation [%d/%d] %s -> %s", i, len(runnable), row.label, out_dir / row.slug)
        callback = None
        if on_epoch is not None:
            def callback(fold: int, epoch: int, metrics: dict[str, float], _slug: str = row.slug) -> None:
                on_epoch(_slug, fold, epoch, metrics)
        modalities = row.modalities or fs.modalities
        overrides = dict(row.model_overrides)
        if params.model.context == CONTEXT_AUTO and "context" not in overrides:
            overrides["context"] = "none"  # the paper's rows are the paper's model; the context rows add context
        metrics = train_and_evaluate(
            fs, params.with_overrides(model=overrides), modalities, model_name,
            out_dir / row.slug, on_epoch=callback, quiet=quiet,
        )
        n_folds = metrics["n_folds"]
        rows.append({
            "label": _label(row, model_name),
            "slug": row.slug,
            "modalities": list(modalities),
            "overrides": dict(row.model_overrides),
            "accuracy": metrics["accuracy"],
            "weighted_f1": metrics["weighted_f1"],
            "macro_f1": metrics["macro_f1"],
            "n_folds": metrics["n_folds"],
            "dir": row.slug,
            **({"context_comparison": metrics["context_comparison"]} if "context_comparison" in metrics else {}),
        })
    summary = {
        "dataset": params.dataset,
        "protocol": params.train.protocol,
        "model": model_name,
        "n_folds": n_folds,
        "n_utterances": len(fs),
        "context_window": params.model.context_window,
        "rows": rows,
        "skipped": skipped,
    }
    (out_dir / ABLATION_MD).write_text(ablation_markdown(summary), encoding="utf-8")
    write_json(out_dir / ABLATION_JSON, summary)
    return summary
