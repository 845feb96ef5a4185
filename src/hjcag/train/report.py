"""The human-readable side of a run: report.md and its figures.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through pyplot, so no GUI
backend or global figure state is involved (safe in CI, containers and threads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hjcag.artifacts import REPORT_FILE
from hjcag.params import MODALITY_NAMES

CONFUSION_PNG = "confusion_matrix.png"
FOLDS_PNG = "folds.png"
CURVES_PNG = "learning_curves.png"
REPORT_MD = REPORT_FILE


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str = "") -> Path:
    """Counts in the cells, colour = row-normalised share (recall per true class)."""
    counts = np.asarray(confusion, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    size = max(4.0, 0.6 * len(labels) + 2.0)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true class (row-normalised)")
    ax.set_xticks(range(len(labels)), labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels=list(labels))
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(title or "Confusion matrix (summed over folds)")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    return _save(fig, path)


def _unit(fold: Mapping[str, Any]) -> str:
    """A fold's name in tables and plots: its index, or 'K seed S' when a run trains every fold per seed."""
    unit = fold.get("unit") or f"fold_{fold['fold']}"
    return unit.removeprefix("fold_").replace("_seed_", " seed ")


def plot_folds(folds: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Accuracy and weighted F1 of every fold as bars, with the means as dashed lines."""
    names = [f"fold {_unit(f)}" for f in folds]
    acc = np.array([100 * f["accuracy"] for f in folds])
    wf1 = np.array([100 * f["weighted_f1"] for f in folds])
    x = np.arange(len(folds))
    fig = Figure(figsize=(max(4.0, 1.2 * len(folds) + 2.0), 3.5))
    ax = fig.subplots()
    width = 0.38
    for offset, values, label, colour in ((-width / 2, acc, "Accuracy", "tab:blue"),
                                          (width / 2, wf1, "Weighted F1", "tab:orange")):
        bars = ax.bar(x + offset, values, width, label=label, color=colour)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.axhline(acc.mean(), color="tab:blue", linestyle="--", linewidth=1)
    ax.axhline(wf1.mean(), color="tab:orange", linestyle="--", linewidth=1)
    ax.set_xticks(x, labels=names)
    ax.set_ylabel("%")
    ax.set_ylim(0, 108)
    ax.set_title("Test metrics per fold (dashed: mean)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    return _save(fig, path)


def plot_learning_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], path: Path) -> Path:
    """Train (solid) and validation (dashed) loss per epoch for every fold; a dot marks the selected epoch."""
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(histories))]
    for colour, (fold, history) in zip(colours, sorted(histories.items()), strict=True):
        if not history:
            continue
        epochs = [int(h["epoch"]) for h in history]
        val = [h["val_loss"] for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], color=colour, label=f"{fold} train")
        ax.plot(epochs, val, color=colour, linestyle="--", label=f"{fold} val")
        best = int(np.argmin(val))
        ax.plot([epochs[best]], [val[best]], "o", color=colour)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Cross-entropy loss")
    ax.set_title("Learning curves (dot: epoch kept by early stopping)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def pct(stat: Mapping[str, float | None]) -> str:
    """A mean ± std statistic in percent ('–' where there is none)."""
    if stat.get("mean") is None:
        return "–"
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _context_kept(metrics: Mapping[str, Any]) -> list[str]:
    """A warm-started context run (hjcag.train.fit): in how many folds the context layer beat the context-free model,
    and what the context changed on the test folds."""
    folds = metrics["folds"]
    kept = [f["context_kept"] for f in folds if f.get("context_kept") is not None]
    if not kept:
        return []
    dropped = ", ".join(_unit(f) for f in folds if f.get("context_kept") is False)
    tail = f"; in fold(s) {dropped} the model is the context-free one." if dropped else "."
    lines = [f"Conversation context kept in {sum(kept)} of {len(kept)} folds (its validation weighted F1 beat the "
             f"context-free model's){tail}", ""]
    return lines + _context_comparison(metrics) if metrics.get("context_comparison") else lines


def pct_difference(d: Mapping[str, float | None]) -> str:
    """A paired difference (mean ± standard error) in signed percentage points."""
    se = d["se"]
    return f"{100 * float(d['mean']):+.2f}" + ("" if se is None else f" ± {100 * se:.2f}")


def _context_comparison(metrics: Mapping[str, Any]) -> list[str]:
    """With against without context on the test folds, paired (hjcag.train.metrics.context_comparison)."""
    comparison = metrics["context_comparison"]

    def difference(key: str) -> str:
        return pct_difference(comparison["difference"][key])

    without = comparison["without_context"]
    return ["Each fold's context-free model (the warm start's first stage, trained exactly as a run without context "
            "trains it) on the same test rows, for a paired comparison; the difference is 0 where the context was "
            "dropped:", "",
            "| | Accuracy | Weighted F1 | Macro F1 |", "|---|---|---|---|",
            f"| the run's models (context where kept) | {pct(metrics['accuracy'])} | {pct(metrics['weighted_f1'])} | "
            f"{pct(metrics['macro_f1'])} |",
            f"| without context | {pct(without['accuracy'])} | {pct(without['weighted_f1'])} | "
            f"{pct(without['macro_f1'])} |",
            f"| with minus without (mean ± standard error over {comparison['n']} folds) | {difference('accuracy')} | "
            f"{difference('weighted_f1')} | {difference('macro_f1')} |", ""]


def markdown_report(metrics: Mapping[str, Any]) -> str:
    """report.md: what was run, mean ± std, a table per fold, per-class F1, the confusion matrix and figures."""
    labels = list(metrics["labels"])
    mods = " + ".join(MODALITY_NAMES.get(m, m) for m in metrics["modalities"])
    folds = metrics["folds"]
    lines = [
        f"# {metrics['model']} on {metrics.get('dataset', 'features')} ({mods})",
        "",
        f"Protocol `{metrics['protocol']}`, {len(folds)} fold(s), {metrics['n_utterances']} utterances, "
        f"labels {', '.join(labels)}. Scores are percentages on each fold's test part; the epoch was selected on "
        "a validation split of the training part, never on the test fold. ± is the std across folds.",
        "",
        "## Summary",
        "",
        "| Metric | Mean ± std (%) |",
        "|---|---|",
        f"| Accuracy | {pct(metrics['accuracy'])} |",
        f"| Weighted F1 | {pct(metrics['weighted_f1'])} |",
        f"| Macro F1 | {pct(metrics['macro_f1'])} |",
        "",
        *([f"**F1 = 0 for {', '.join(metrics['zero_f1_classes'])}**: the model never predicts these classes "
           "correctly (class imbalance? try `train.class_weights: balanced`).", ""]
          if metrics.get("zero_f1_classes") else []),
        *_context_kept(metrics),
        "## Per fold",
        "",
        "| Fold | Accuracy | Weighted F1 | Macro F1 | Train | Val | Test | Best epoch | Epochs run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in folds:
        lines.append(
            f"| {_unit(f)} | {_cell(f['accuracy'])} | {_cell(f['weighted_f1'])} | {_cell(f['macro_f1'])} | "
            f"{f['n_train']} | {f['n_val']} | {f['n_test']} | {f['best_epoch']} | {f['epochs_run']} |"
        )
    lines += ["", "## Per-class F1 (%)", "", "| Label | Mean ± std | " + " | ".join(
        f"Fold {_unit(f)}" for f in folds) + " |", "|---|---|" + "---|" * len(folds)]
    for label in labels:
        per_fold = " | ".join(_cell(f["per_class_f1"].get(label)) for f in folds)
        lines.append(f"| {label} | {pct(metrics['per_class_f1'][label])} | {per_fold} |")
    if metrics.get("robustness"):
        lines += ["", "## Missing modalities (each fold's model on its test part, the others masked)", "",
                  "| Modalities present | Accuracy | Weighted F1 | Macro F1 |", "|---|---|---|---|"]
        lines += [f"| {r['modalities']} | {pct(r['accuracy'])} | {pct(r['weighted_f1'])} | {pct(r['macro_f1'])} |"
                  for r in metrics["robustness"]]
    confusion = metrics.get("confusion")
    if confusion is not None:
        lines += ["", "## Confusion matrix (counts summed over folds; rows true, columns predicted)", "",
                  "| true \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for label, row in zip(labels, confusion, strict=True):
            lines.append(f"| {label} | " + " | ".join(str(int(c)) for c in row) + " |")
    lines += [
        "",
        "## Figures",
        "",
        f"- [Confusion matrix]({CONFUSION_PNG})",
        f"- [Accuracy and weighted F1 per fold]({FOLDS_PNG})",
        f"- [Learning curves]({CURVES_PNG})",
        "",
        f"![Confusion matrix]({CONFUSION_PNG})",
        "",
        f"![Per-fold metrics]({FOLDS_PNG})",
        "",
        f"![Learning curves]({CURVES_PNG})",
        "",
    ]
    return "\n".join(lines)


def write_report(
    out_dir: Path, metrics: Mapping[str, Any], histories: Mapping[str, Sequence[Mapping[str, float]]]
) -> dict[str, Path]:
    """Write report.md and the three PNGs into `out_dir`; returns their paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "confusion": plot_confusion(metrics["confusion"], metrics["labels"], out_dir / CONFUSION_PNG),
        "folds": plot_folds(metrics["folds"], out_dir / FOLDS_PNG),
        "learning_curves": plot_learning_curves(histories, out_dir / CURVES_PNG),
    }
    report = out_dir / REPORT_MD
    report.write_text(markdown_report(metrics), encoding="utf-8")
    paths["report"] = report
    return paths
