"""Build and train the model of one fold and seed: the one place `hjcag train` and `hjcag tune` do it.

With conversation context and `train.context_warm_start` (README "Conversation context"), training has two stages:

1. the context-free base model alone, exactly as a `model.context: none` run trains it (same seed, same
   initialisation, same batches, same early stopping): its weights are that run's weights;
2. the context layer wrapped around the trained base (its head starts at zero, so the model starts as the base's
   own decisions), then the whole trained on whole dialogues, early-stopped on validation loss again.

The context layer then adds what the conversation offers to a converged base instead of racing it from a random
start. It is kept only if it helps: when stage 2's model (at its own early-stopping epoch) does not beat stage 1's
on validation weighted F1, the fold's model is the trained context-free base with the context head at zero, whose
logits are exactly the base's. Validation loss is not the test here: on MELD stage 2 never beat it (a context model
grows more confident, which weighted cross-entropy punishes) while its dev and test weighted F1 rose by 1.4 and
1.6 points; on the demo data, which has no conversational cue, the rule keeps the base in half the folds (README
"Conversation context").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hjcag.data.features_file import FeatureSet
from hjcag.model.context import ConversationContext
from hjcag.model.factory import build_model
from hjcag.params import ModelConfig, TrainConfig
from hjcag.train.loop import EpochCallback, FoldTraining, TensorData, cpu_state, train_fold


@dataclass
class FittedModel:
    """A trained model (its kept state loaded, also `training.best_state`) and how its training went; `base` is
    stage 1's, when warm-started, and `context_kept` whether stage 2 beat it (else the model is the base)."""

    model: nn.Module
    training: FoldTraining
    base: FoldTraining | None = None
    context_kept: bool | None = None

    @property
    def scored(self) -> FoldTraining:
        """The training whose early-stopping epoch the kept model is: stage 1's when the context was not kept."""
        return self.base if self.context_kept is False and self.base is not None else self.training


def base_checkpoint(checkpoint_path: Path) -> Path:
    """Where stage 1 (the context-free base) keeps its checkpoint, next to the fold's own."""
    return checkpoint_path.with_name("base_" + checkpoint_path.name)


def warm_start(model_cfg: ModelConfig, cfg: TrainConfig) -> bool:
    """Whether a model with these settings is trained in two stages (context, and train.context_warm_start)."""
    return model_cfg.context != "none" and cfg.context_warm_start


def fit_model(
    model_name: str,
    train: FeatureSet,
    val: FeatureSet,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    checkpoint_path: Path | None = None,
    fold_index: int = 0,
    on_epoch: EpochCallback | None = None,
    quiet: bool = False,
) -> FittedModel:
    """Seed, build (input statistics from `train` only), train with early stopping on `val`, load the best state.

    `on_epoch` sees the epochs of the model that is returned (stage 2 when warm-started); checkpoints resume each
    stage where it stopped.
    """
    warm = warm_start(model_cfg, cfg)
    first_cfg = dataclasses.replace(model_cfg, context="none") if warm else model_cfg
    torch.manual_seed(seed)
    model = build_model(model_name, train.dims, len(train.label_names), first_cfg)
    model.standardize.fit(train.features)  # input statistics of the training part only (saved with the weights)
    base: FoldTraining | None = None
    if warm:
        base = train_fold(
            model, TensorData.from_features(train, first_cfg), TensorData.from_features(val, first_cfg), cfg,
            seed=seed, device=device, checkpoint_path=None if checkpoint_path is None else base_checkpoint(
                checkpoint_path), fold_index=fold_index, quiet=quiet,
        )
        model.load_state_dict(base.best_state)
        model = ConversationContext(model, len(train.label_names), model_cfg)
    training = train_fold(
        model, TensorData.from_features(train, model_cfg), TensorData.from_features(val, model_cfg), cfg,
        seed=seed, device=device, checkpoint_path=checkpoint_path, fold_index=fold_index, on_epoch=on_epoch,
        quiet=quiet,
    )
    model.load_state_dict(training.best_state)
    if base is None:
        return FittedModel(model, training)
    kept = training.at_best_epoch("val_weighted_f1") > base.at_best_epoch("val_weighted_f1")
    if not kept:  # the context-free model of stage 1, read through a context layer that adds nothing
        model.base.load_state_dict(base.best_state)
        nn.init.zeros_(model.head[-1].weight)
        nn.init.zeros_(model.head[-1].bias)
        training = dataclasses.replace(training, best_state=cpu_state(model))
    return FittedModel(model, training, base, kept)
