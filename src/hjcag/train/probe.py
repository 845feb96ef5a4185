"""Fit the probe of a trained :class:`~hjcag.model.probe.ProbeBlend` and choose its blend on validation.

After the loop has trained the wrapped model (docs/model.md, "Probe blend"):

1. p = the model's pooled, standardised inputs of the training and validation parts;
2. a logistic regression on p of the training part (p standardised once more, folded into W and b), for every C in
   :data:`PROBE_C` and class weighting in :data:`PROBE_CLASS_WEIGHTS`; the one with the best validation weighted F1
   (ties: the first in that order) is the probe: the same search as the benchmarks' linear probe;
3. lam from :data:`BLEND_GRID` with the best validation weighted F1 of the blend (ties: the larger lam, i.e. more of
   the model). The grid holds 0 and 1, so on validation the blend is never below the probe nor the model alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from hjcag.model.probe import ProbeBlend
from hjcag.train.loop import TensorData, predict

PROBE_C = (0.01, 0.03, 0.1, 0.3, 1.0)  # inverse L2 strength of the logistic regression
PROBE_CLASS_WEIGHTS = (None, "balanced")
BLEND_GRID = tuple(i / 10 for i in range(11))  # lam: 0 = the probe alone ... 1 = the model alone
_BATCH = 512


@torch.no_grad()
def pooled_inputs(model: ProbeBlend, data: TensorData, device: torch.device) -> np.ndarray:
    """p for every row of `data`, in data order: (N, sum_m d_m) float64."""
    model.eval()
    rows = []
    for start in range(0, len(data), _BATCH):
        inputs, _ = data.batch(torch.arange(start, min(start + _BATCH, len(data))), device)
        rows.append(model.pooled(inputs).double().cpu().numpy())
    return np.concatenate(rows)


def _weighted_f1(y: np.ndarray, pred: np.ndarray) -> float:
    return float(f1_score(y, pred, average="weighted", zero_division=0))


def fit_linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """W (C, D), b (C,) of the logistic regression chosen on validation, on the unscaled pooled inputs, and what
    was chosen ({c, class_weight, val_weighted_f1})."""
    scaler = StandardScaler().fit(x_train)
    z_train, z_val = scaler.transform(x_train), scaler.transform(x_val)
    best: tuple[float, LogisticRegression, dict[str, Any]] | None = None
    for class_weight in PROBE_CLASS_WEIGHTS:
        for c in PROBE_C:
            clf = LogisticRegression(C=c, class_weight=class_weight, max_iter=2000).fit(z_train, y_train)
            score = _weighted_f1(y_val, clf.predict(z_val))
            if best is None or score > best[0]:
                best = (score, clf, {"c": c, "class_weight": class_weight or "none", "val_weighted_f1": score})
    assert best is not None
    _, clf, chosen = best
    coef = np.zeros((num_classes, x_train.shape[1]))  # classes the training part lacks never win
    intercept = np.full(num_classes, -1e4)
    classes = clf.classes_.astype(int)
    if len(classes) == 2 and clf.coef_.shape[0] == 1:  # sklearn's binary form: one row for class 1
        coef[classes[1]], intercept[classes[1]] = clf.coef_[0], clf.intercept_[0]
        intercept[classes[0]] = 0.0
    else:
        coef[classes], intercept[classes] = clf.coef_, clf.intercept_
    weight = coef / scaler.scale_[None, :]  # fold the scaler in: W (x - mu) / s + b
    bias = intercept - weight @ scaler.mean_
    return weight, bias, chosen


def fit_probe_blend(model: ProbeBlend, train: TensorData, val: TensorData, device: torch.device) -> dict[str, Any]:
    """Fit `model`'s probe on `train`, choose its blend on `val`, and set both (the model's `fitted` turns true).
    Returns the record result.json keeps: the probe's C and class weighting, lam, and validation weighted F1 of
    the model alone, the probe alone and the blend."""
    num_classes = int(model.linear.out_features)
    y_train, y_val = train.targets.cpu().numpy(), val.targets.cpu().numpy()
    model.fitted.fill_(False)  # the model alone, to score it
    model_logits, _ = predict(model, val, _BATCH, device)
    weight, bias, chosen = fit_linear_probe(pooled_inputs(model, train, device), y_train,
                                            x_val := pooled_inputs(model, val, device), y_val, num_classes)
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(weight).to(model.linear.weight))
        model.linear.bias.copy_(torch.from_numpy(bias).to(model.linear.bias))
    probe = torch.log_softmax(torch.from_numpy(x_val @ weight.T + bias), dim=-1)
    own = torch.log_softmax(model_logits.double(), dim=-1)
    scores = {lam: _weighted_f1(y_val, ((1 - lam) * probe + lam * own).argmax(dim=1).numpy()) for lam in BLEND_GRID}
    lam = max(BLEND_GRID, key=lambda g: (scores[g], g))
    model.blend.fill_(lam)
    model.fitted.fill_(True)
    return {"probe": chosen, "blend": lam, "val_weighted_f1": {"model": scores[1.0], "probe": scores[0.0],
                                                               "blend": scores[lam]}}
