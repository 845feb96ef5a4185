"""The dev scores that choose an epoch (``params.VALIDATION_METRICS``), for model training and for text-encoder
fine-tuning alike: the training loss (eq 19, with its class weights) and weighted F1, on the validation rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score


def validation_scores(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> dict[str, float]:
    """(N, C) logits and (N,) targets -> {"val_loss": cross-entropy with the class `weights`, "val_weighted_f1":
    weighted F1 of the argmax}."""
    logits, targets = logits.detach().float().cpu(), targets.cpu()
    pred = logits.argmax(dim=1)
    return {
        "val_loss": float(F.cross_entropy(logits, targets, weight=None if weights is None else weights.cpu())),
        "val_weighted_f1": float(f1_score(targets.numpy(), pred.numpy(), average="weighted", zero_division=0)),
    }
