"""`hjcag evaluate`: turn a finished training run into the files `dvc metrics` / `dvc plots` and dashboards read.

Training already scores every fold; this stage only gathers the out-of-fold predictions of all folds into one
table and writes flat, tool-friendly views of the run, so the metrics a pipeline shows never drift from the ones
`hjcag train` computed:

- ``metrics.json``: accuracy / weighted F1 / macro F1 (mean and std over folds) and per-class F1, flat keys;
- ``folds.csv``: one row per fold (x axis ``fold``) for a per-fold bar or line plot;
- ``predictions.csv``: every test utterance of every fold with ``actual`` and ``predicted`` (confusion matrix);
- ``learning_curves.csv``: per-epoch losses of every fold (``step`` = epoch);
- the run's PNG figures and Markdown report, copied beside them;
- ``report.html``: the report with the figures embedded, one file that opens offline in any browser (``dvc plots
  show`` loads its renderer from a CDN).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from hjcag.artifacts import HISTORY_FILE, METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE
from hjcag.errors import HjcagError
from hjcag.train.html_report import write_html_report

FIGURES = ("confusion_matrix.png", "folds.png", "learning_curves.png", "report.md")


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise HjcagError(f"'{run_dir}' has no metrics.json; finish the run with `hjcag train --out {run_dir}` first.")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def summary_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The run's headline numbers as one flat mapping (what `dvc metrics show` lists)."""
    flat: dict[str, Any] = {}
    for key in ("accuracy", "weighted_f1", "macro_f1"):
        if key in metrics:
            flat[key] = float(metrics[key]["mean"])
            flat[f"{key}_std"] = float(metrics[key]["std"])
    for label, stat in (metrics.get("per_class_f1") or {}).items():
        value = stat.get("mean") if isinstance(stat, Mapping) else stat
        if value is not None:  # a class absent from every test fold has no F1
            flat[f"f1_{label}"] = float(value)
    for row in metrics.get("robustness") or []:  # e.g. only_text+audio_accuracy: the model with visual missing
        for key in ("accuracy", "weighted_f1"):
            flat[f"only_{row['modalities']}_{key}"] = float(row[key]["mean"])
    comparison = metrics.get("context_comparison")
    for key, stat in ((comparison or {}).get("without_context") or {}).items():  # the same folds' stage-1 models
        flat[f"without_context_{key}"] = float(stat["mean"])
    flat["n_folds"] = int(metrics.get("n_folds", len(metrics.get("folds", []))))
    flat["n_utterances"] = int(metrics.get("n_utterances", 0))
    return flat


def _fold_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"fold": r["fold"], "seed": r["run_seed"], "unit": r["unit"], "accuracy": r["accuracy"],
         "weighted_f1": r["weighted_f1"], "macro_f1": r.get("macro_f1"), "best_epoch": r.get("best_epoch")}
        for r in metrics.get("folds", [])
    ]


def _predictions(run_dir: Path, folds: list[dict[str, Any]]) -> pd.DataFrame:
    frames = []
    for row in folds:
        path = run_dir / row["unit"] / PREDICTIONS_FILE
        if not path.is_file():
            raise HjcagError(f"'{path}' is missing; the run in '{run_dir}' is incomplete. Re-run `hjcag train`.")
        df = pd.read_csv(path, dtype={"utterance_id": str, "group": str})
        frames.append(df.assign(fold=row["fold"], seed=row["seed"]).rename(columns={"label": "actual"}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _learning_curves(run_dir: Path, folds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for row in folds:
        path = run_dir / row["unit"] / HISTORY_FILE
        if path.is_file():
            for epoch in json.loads(path.read_text(encoding="utf-8")):
                rows.append({"fold": row["fold"], "seed": row["seed"], "step": epoch["epoch"],
                             "train_loss": epoch.get("train_loss"),
                             "val_loss": epoch.get("val_loss"), "val_acc": epoch.get("val_acc")})
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def evaluate_run(run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the evaluation views of `run_dir` into `out_dir`; return the flat summary metrics."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    metrics = _read_metrics(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folds = _fold_rows(metrics)
    summary = summary_metrics(metrics)
    predictions = _predictions(run_dir, folds)
    columns = [c for c in ("utterance_id", "group", "fold", "seed", "actual", "predicted", "confidence")
               if c in predictions]
    predictions[columns + [c for c in predictions if c.startswith("gate_")]].to_csv(
        out_dir / "predictions.csv", index=False)
    _write_csv(out_dir / "folds.csv", folds)
    _write_csv(out_dir / "learning_curves.csv", _learning_curves(run_dir, folds))
    for name in FIGURES:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out_dir / name)
    if (out_dir / REPORT_FILE).is_file():
        write_html_report(out_dir)
    (out_dir / METRICS_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
