"""Class weights for the cross-entropy (eq 19) on imbalanced data: one definition for the fusion model's training
loop and the text encoder's fine-tuning (docs/model.md, "Class weights")."""

from __future__ import annotations

import torch

from hjcag.errors import ConfigError
from hjcag.params import CLASS_WEIGHTS


def class_weights(targets: torch.Tensor, num_classes: int | None, mode: str) -> torch.Tensor | None:
    """Cross-entropy class weights (C,) from a fold's TRAINING targets, or None for `mode` 'none'.

    'balanced': w_c proportional to 1 / n_c (a class absent from `targets` counts as n_c = 1), scaled so that the
    mean weight over the training samples is 1: sum_c n_c w_c = N. Every class then carries the same total weight
    in the training set. 'sqrt': w_c proportional to 1 / sqrt(n_c), the same scaling: halfway, in log terms, between
    no weighting and balanced (on MELD's real imbalance it beat both on dev weighted F1, README "Real data").
    (With reduction 'mean' the cross-entropy divides by the batch's sum of weights, so the scale does not change
    the loss; it only keeps the numbers readable.)
    """
    if mode == "none":
        return None
    if mode not in ("balanced", "sqrt"):
        raise ConfigError(f"train.class_weights must be one of {list(CLASS_WEIGHTS)} (got {mode!r}).")
    targets = targets.detach().cpu().long()
    n_classes = num_classes or int(targets.max()) + 1
    counts = torch.bincount(targets, minlength=n_classes).double()
    weights = 1.0 / counts.clamp_min(1.0)
    if mode == "sqrt":
        weights = weights.sqrt()
    weights = weights * len(targets) / (counts * weights).sum()
    return weights.float()
