"""Classification metrics of one fold and their mean ± std across folds (all fractions in 0..1).

Per-class F1 of a class that is neither in a fold's test labels nor in its predictions is undefined there: it is
``None`` for that fold and left out of that class's mean. Macro F1 averages over the classes present in the fold
(true or predicted), as scikit-learn does by default. The std across folds is the population std (ddof=0), so a
single holdout fold has std 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

SCALAR_METRICS = ("accuracy", "weighted_f1", "macro_f1")


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, label_names: Sequence[str]
) -> dict[str, Any]:
    """accuracy, weighted_f1, macro_f1, per_class_f1 {label: f1 | None}, confusion (rows true, columns predicted)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_true and y_pred must be equal-length non-empty 1-D arrays, got {y_true.shape}, "
                         f"{y_pred.shape}")
    labels = list(range(len(label_names)))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    seen = set(y_true.tolist()) | set(y_pred.tolist())
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class_f1": {
            name: (float(per_class[i]) if i in seen else None) for i, name in enumerate(label_names)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    """{"mean", "std"} over the defined values (population std); None when no value is defined."""
    defined = [float(v) for v in values if v is not None]
    if not defined:
        return {"mean": None, "std": None}
    arr = np.asarray(defined, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std())}


def aggregate(folds: Sequence[dict[str, Any]], label_names: Sequence[str]) -> dict[str, Any]:
    """Mean and std of every scalar metric and of each class's F1 across folds, and the summed confusion matrix."""
    if not folds:
        raise ValueError("aggregate needs at least one fold")
    out: dict[str, Any] = {name: mean_std([f[name] for f in folds]) for name in SCALAR_METRICS}
    out["per_class_f1"] = {
        label: mean_std([f["per_class_f1"].get(label) for f in folds]) for label in label_names
    }
    # classes the model never gets right on average: the first thing to look at under class imbalance
    out["zero_f1_classes"] = [label for label, f1 in out["per_class_f1"].items() if f1["mean"] == 0.0]
    out["confusion"] = np.sum([np.asarray(f["confusion"], dtype=np.int64) for f in folds], axis=0).tolist()
    if (comparison := context_comparison(folds)) is not None:
        out["context_comparison"] = comparison
    return out


def context_comparison(folds: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """With against without conversation context, paired by fold and seed (the warm start's two stages): per scalar
    metric the mean ± std without it, and the mean and standard error of the differences (with minus without; 0
    where the context was dropped). A warm-started fold's result holds ``without_context``: the scalar metrics of
    its stage-1 context-free model on the same test rows (hjcag.train.run). None unless every fold has it."""
    if not folds or any("without_context" not in f for f in folds):
        return None
    n = len(folds)
    differences = {k: np.array([f[k] - f["without_context"][k] for f in folds], dtype=np.float64)
                   for k in SCALAR_METRICS}
    return {
        "n": n,
        "kept": sum(bool(f.get("context_kept")) for f in folds),
        "without_context": {k: mean_std([f["without_context"][k] for f in folds]) for k in SCALAR_METRICS},
        "difference": {k: {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else None}
                       for k, d in differences.items()},
    }
