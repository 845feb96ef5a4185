"""Build and train the model of one fold and seed: the one place `hjcag train` and `hjcag tune` do it.

With conversation context and `train.context_warm_start` (README "Conversation context"), training has two stages:

1. the context-free base model alone, exactly as a `model.context: none` run trains it (same seed, same
   initialisation, same batches, same early stopping): its weights are that run's weights;
2. the context layer wrapped around the trained base (its head starts at zero, so the model starts as the base's
   own decisions), then the whole trained on whole dialogues, early-stopped on validation loss again.

The context layer then adds what the conversation offers to a converged base instead of racing it from a random
start. It is kept only if it helps: when stage 2's model (at its own early-stopping epoch) does not beat stage 1's
on validation weighted F1, the fold's model is stage 1's context-free model itself: its weights, result.json,
history and model_config describe that model (`context_kept: false`), and both stages are reported beside it
(hjcag.train.run). Validation loss is not the test here: on MELD stage 2 never beat it (a context model
grows more confident, which weighted cross-entropy punishes) while its dev and test weighted F1 rose by 0.9 points
each (5 seeds, README "Real data"); on the demo data, which has no conversational cue, the rule keeps the base in
half the folds (README "Conversation context").

With `model.probe_blend` (docs/model.md "Probe blend") the blend wraps the whole model, context layer included:
stage 1's base is blended with its probe (what the fold keeps if the context is dropped); stage 2 trains the
context layer around the base alone, exactly as without the blend, and is then blended with a probe of its own.
The rule compares what each stage delivers: the blends' validation weighted F1.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hjcag.artifacts import BASE, CONTEXT
from hjcag.data.features_file import FeatureSet
from hjcag.model.context import ConversationContext
from hjcag.model.factory import build_model
from hjcag.model.probe import ProbeBlend
from hjcag.params import ModelConfig, TrainConfig, resolve_context
from hjcag.train.loop import EpochCallback, FoldTraining, TensorData, train_fold
from hjcag.train.probe import fit_probe_blend


@dataclass
class FittedModel:
    """The model a fold keeps (its kept state loaded), the ModelConfig it is built with, and how its training went.

    Warm-started context: `stages` holds both stages' trainings (BASE, CONTEXT) and `context_kept` whether the
    context stage beat the base. The kept model is then the context stage's model, or else the base model alone:
    a context-free model (`config.context` is "none"), exactly stage 1's. `training` is always the kept model's.
    """

    model: nn.Module
    config: ModelConfig
    training: FoldTraining
    stages: dict[str, FoldTraining] = field(default_factory=dict)
    context_kept: bool | None = None
    probe: dict[str, Any] | None = None  # model.probe_blend: the probe and blend chosen (hjcag.train.probe)
    base_model: nn.Module | None = None  # warm start: stage 1's context-free model (the kept model if dropped)

    def val_score(self, metric: str) -> float:
        """`metric` (a tune.metric) on validation for what the fold delivers: weighted F1 is the blend's where the
        model has a probe blend (:func:`delivered_val_f1`); every other metric is the kept training's at its
        early-stopping epoch."""
        if metric == "val_weighted_f1":
            return delivered_val_f1(self.training, self.probe)
        return self.training.at_best_epoch(metric)


def stage_summary(training: FoldTraining) -> dict[str, float | int | bool]:
    """How one training (a stage, or the kept model's) went: its early-stopping epoch and validation figures there."""
    return {"best_epoch": training.best_epoch, "epochs_run": training.epochs_run,
            "best_val_loss": training.best_val_loss, "stopped_early": training.stopped_early,
            "val_weighted_f1": training.at_best_epoch("val_weighted_f1")}


def base_checkpoint(checkpoint_path: Path) -> Path:
    """Where stage 1 (the context-free base) keeps its checkpoint, next to the fold's own."""
    return checkpoint_path.with_name("base_" + checkpoint_path.name)


def warm_start(model_cfg: ModelConfig, cfg: TrainConfig) -> bool:
    """Whether a model with these settings is trained in two stages (context, and train.context_warm_start)."""
    return model_cfg.context != "none" and cfg.context_warm_start


def delivered_val_f1(training: FoldTraining, probe: dict[str, Any] | None = None) -> float:
    """Validation weighted F1 of what a stage delivers: its blend's where it has a probe blend, else the model's
    at its early-stopping epoch."""
    return float(probe["val_weighted_f1"]["blend"]) if probe else training.at_best_epoch("val_weighted_f1")


def context_beats_base(base: FoldTraining, context: FoldTraining, base_probe: dict[str, Any] | None = None,
                       context_probe: dict[str, Any] | None = None) -> bool:
    """The keep-or-drop rule: the context stage's model is kept only if its validation weighted F1 (at its own
    early-stopping epoch; the blend's, with a probe blend) is strictly above the base model's."""
    return delivered_val_f1(context, context_probe) > delivered_val_f1(base, base_probe)


def stage_callback(on_epoch: EpochCallback | None, stage: str) -> EpochCallback | None:
    """`on_epoch` for one stage of a warm start: its metrics named ``<stage>_<metric>`` (base_val_loss, ...), so that
    an epoch of a stage is never taken for an epoch of the kept model (which is known only once both are done)."""
    if on_epoch is None:
        return None
    return lambda fold, epoch, metrics: on_epoch(fold, epoch, {f"{stage}_{k}": v for k, v in metrics.items()})


def trained_config(model_cfg: ModelConfig, fs: FeatureSet) -> ModelConfig:
    """The ModelConfig a model of the features `fs` is built with: its `seq_len` is the step count the features have.
    That is ``model.seq_len`` for sequences, and 1 when every modality is an utterance vector, read as one step
    (docs/model.md, "Inputs"); `context: auto` is gru where `fs` carries the dialogue order, else none
    (:func:`~hjcag.params.resolve_context`). The trained model records it (model_config.json), so serving collates
    to it and reads the context it was trained with."""
    model_cfg = resolve_context(model_cfg, fs.order is not None)
    return model_cfg if fs.seq_len == model_cfg.seq_len else dataclasses.replace(model_cfg, seq_len=fs.seq_len)


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
    stage: str | None = None,
) -> FittedModel:
    """Seed, build (input statistics from `train` only), train with early stopping on `val`, load the best state.

    `on_epoch` sees every epoch trained: as they are without a warm start, with the stage's name before each metric
    with one (:func:`stage_callback`); checkpoints resume each stage where it stopped. The model reads as many
    steps as `train` has (:func:`trained_config`).
    """
    model_cfg = trained_config(model_cfg, train)
    if not warm_start(model_cfg, cfg):
        torch.manual_seed(seed)
        model = build_model(model_name, train.dims, len(train.label_names), model_cfg)
        model.standardize.fit(train.features)  # input statistics of the training part only (saved with the weights)
        train_data, val_data = TensorData.from_features(train, model_cfg), TensorData.from_features(val, model_cfg)
        training = train_fold(
            model, train_data, val_data, cfg, seed=seed, device=device, checkpoint_path=checkpoint_path,
            fold_index=fold_index, on_epoch=on_epoch, quiet=quiet, stage=stage,
        )
        model.load_state_dict(training.best_state)
        probe = (fit_probe_blend(model, train_data, val_data, device)  # the probe is fitted to the trained model
                 if isinstance(model, ProbeBlend) else None)
        return FittedModel(model, model_cfg, training, probe=probe)
    base_cfg = dataclasses.replace(model_cfg, context="none")
    stage_1 = fit_model(model_name, train, val, base_cfg, cfg, seed=seed, device=device, fold_index=fold_index,
                        checkpoint_path=None if checkpoint_path is None else base_checkpoint(checkpoint_path),
                        on_epoch=stage_callback(on_epoch, BASE), quiet=quiet, stage=BASE)
    base_model = copy.deepcopy(stage_1.model)  # stage 1 as kept (its best epoch, its probe blend): stage 2 trains on
    base = stage_1.model.model if isinstance(stage_1.model, ProbeBlend) else stage_1.model  # the base alone
    model = ConversationContext(base, len(train.label_names), model_cfg)  # its head at zero: the base's logits
    train_data, val_data = TensorData.from_features(train, model_cfg), TensorData.from_features(val, model_cfg)
    context = train_fold(
        model, train_data, val_data, cfg, seed=seed, device=device, checkpoint_path=checkpoint_path,
        fold_index=fold_index, on_epoch=stage_callback(on_epoch, CONTEXT), quiet=quiet, stage=CONTEXT,
    )
    stages = {BASE: stage_1.training, CONTEXT: context}
    model.load_state_dict(context.best_state)
    kept: nn.Module = model
    probe = None
    if model_cfg.probe_blend:  # the context model gets a probe blend of its own, as the factory builds it
        kept = ProbeBlend(model, train.dims, len(train.label_names))
        probe = fit_probe_blend(kept, train_data, val_data, device)
    if context_beats_base(stage_1.training, context, stage_1.probe, probe):
        return FittedModel(kept, model_cfg, context, stages, context_kept=True, probe=probe, base_model=base_model)
    return FittedModel(base_model, base_cfg, stage_1.training, stages, context_kept=False, probe=stage_1.probe,
                       base_model=base_model)
