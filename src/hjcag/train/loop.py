"""The training loop of one fold (section 4.2): Adam + StepLR, cross-entropy (eq 19), early stopping on
validation loss, and a checkpoint after every epoch so that an interrupted fold resumes where it stopped.

Two additions to the paper's protocol (issue 9, docs/model.md):
- modality dropout (`train.modality_dropout` = p): every training batch is passed to the model with a presence
  mask in which each modality of each sample is dropped with probability p, never all of a sample's modalities;
- class weights (`train.class_weights: balanced`): the cross-entropy of training AND of the validation loss that
  picks the epoch is weighted by inverse class frequency of the fold's training part.
With the defaults (0.0, none) training is exactly what it was before them (tests/test_train_loop.py).

Reproducibility: the caller seeds torch before building the model; batch order comes from a dedicated generator
seeded with the fold's seed, modality dropout from a second one derived from it (so p = 0 draws nothing and the
batch order does not depend on p), and the checkpoint stores their states and torch's global RNG state
(dropout), so a resumed fold continues with exactly the random numbers an uninterrupted one would have drawn
(bit-for-bit on CPU).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hjcag.data.conversation import ContextWindows, context_windows
from hjcag.data.features_file import FeatureSet
from hjcag.errors import HjcagError
from hjcag.model.context import ContextBatch, ConversationContext
from hjcag.model.losses import class_weights
from hjcag.model.probe import ProbeBlend
from hjcag.model.validation import validation_scores
from hjcag.params import ModelConfig, TrainConfig
from hjcag.progress import progress as progress_bar

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, dict[str, float]], None]
"""on_epoch(fold_index, epoch (1-based), {train_loss, val_loss, val_acc, val_weighted_f1, lr})."""

CHECKPOINT_VERSION = 1
# Keep the whole split on the GPU when it is this small; otherwise batches are copied per step.
_GPU_RESIDENT_BYTES = 2 * 1024**3


@dataclass
class TensorData:
    """A FeatureSet's modality arrays and targets as tensors: inputs {m: (N, L, d_m)}, targets (N,).

    With `windows` (conversation context), batches are whole dialogues and carry each utterance's window as a
    :class:`ContextBatch` into the batch itself; without, batches are utterances (the paper's protocol).
    """

    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor
    num_classes: int | None = None  # the label set's size (targets may miss some classes); None: max target + 1
    windows: ContextWindows | None = None

    @classmethod
    def from_features(cls, fs: FeatureSet, model: ModelConfig | None = None) -> TensorData:
        """`model` with a context other than none builds the conversation windows (it needs fs.order)."""
        windows = None
        if model is not None and model.context != "none":
            windows = context_windows(fs, model.context_window, model.context_direction)
        return cls(
            inputs={m: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for m, x in fs.features.items()},
            targets=torch.from_numpy(fs.targets),
            num_classes=len(fs.label_names) or None,
            windows=windows,
        )

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in self.inputs.values())

    def to(self, device: torch.device) -> TensorData:
        return TensorData({m: x.to(device) for m, x in self.inputs.items()}, self.targets.to(device), self.num_classes,
                          self.windows)

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        idx = idx.to(self.targets.device)
        inputs = {m: x[idx].to(device, non_blocking=True) for m, x in self.inputs.items()}
        return inputs, self.targets[idx].to(device, non_blocking=True)

    def batches(self, batch_size: int, generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, dict[str, ContextBatch]]]:
        """(rows, extra model kwargs) per batch, shuffled with `generator` (None: in order).

        Without windows: `batch_size` rows at a time, exactly as before context existed (same draws). With them:
        whole dialogues, added until the batch holds at least `batch_size` utterances, and each row's window as
        indices into the batch.
        """
        if self.windows is None:
            order = torch.arange(len(self)) if generator is None else torch.randperm(len(self), generator=generator)
            for start in range(0, len(self), batch_size):
                yield order[start:start + batch_size], {}
            return
        dialogues = self.windows.dialogues
        picks = range(len(dialogues)) if generator is None else torch.randperm(len(dialogues), generator=generator)
        rows: list[np.ndarray] = []
        for d in picks:
            rows.append(dialogues[int(d)])
            if sum(len(r) for r in rows) >= batch_size:
                yield self._context_batch(np.concatenate(rows))
                rows = []
        if rows:
            yield self._context_batch(np.concatenate(rows))

    def _context_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, dict[str, ContextBatch]]:
        assert self.windows is not None
        window = self.windows.index[rows]  # rows of the whole set; a window never leaves its dialogue's batch
        sorter = np.argsort(rows)
        position = sorter[np.searchsorted(rows, np.maximum(window, 0), sorter=sorter).clip(max=len(rows) - 1)]
        window = np.where(window >= 0, position, -1)  # -> positions within the batch
        context = ContextBatch(torch.from_numpy(window), torch.from_numpy(self.windows.speaker[rows]))
        return torch.from_numpy(rows), {"context": context}


@dataclass
class FoldTraining:
    """What training one fold produced; `best_state` is the model at `best_epoch` (lowest validation loss)."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)

    def at_best_epoch(self, metric: str) -> float:
        """`metric` (a history key, e.g. val_weighted_f1) at the epoch early stopping kept: what training delivers."""
        return float(self.history[self.best_epoch - 1][metric])


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam at train.lr; with conversation context and train.context_lr, the context layer (everything but the base
    model: embeddings, encoder, head) learns at its own rate. Its head starts at zero, so at the base model's rate
    it is still catching up when early stopping picks the epoch (README "Conversation context")."""
    groups: Any = model.parameters()
    context = model.model if isinstance(model, ProbeBlend) else model  # a blend wraps the context model
    if cfg.context_lr is not None and isinstance(context, ConversationContext):
        base = {id(p) for p in context.base.parameters()}
        groups = [{"params": list(context.base.parameters())},
                  {"params": [p for p in model.parameters() if id(p) not in base], "lr": cfg.context_lr}]
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)


def drop_modalities(batch: int, n_modalities: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """(batch, n_modalities) bool presence mask for modality dropout: each entry False with probability `p`;
    a row that lost every modality gets one back, chosen uniformly. p = 0 or one modality: all True, no draws."""
    present = torch.ones(batch, n_modalities, dtype=torch.bool)
    if p <= 0.0 or n_modalities < 2:
        return present
    present = torch.rand(batch, n_modalities, generator=generator) >= p
    revive = torch.randint(n_modalities, (batch,), generator=generator)  # drawn for every row: fixed RNG use
    empty = ~present.any(dim=1)
    present[empty, revive[empty]] = True
    return present


def _dropout_generator(seed: int) -> torch.Generator:
    """The modality-dropout generator of a fold: derived from the fold's seed, independent of the shuffle."""
    state = np.random.SeedSequence([int(seed), 0x6D6F64]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


@torch.no_grad()
def predict(
    model: nn.Module, data: TensorData, batch_size: int, device: torch.device, present: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and gate weights (N, |M|) on CPU, in eval mode (no dropout), in data order.

    `present` (N, |M|) bool, columns in the model's modality order: which modalities each sample has (default all).
    """
    model.eval()
    rows, logits, gates = [], [], []
    for idx, extra in data.batches(batch_size):
        inputs, _ = data.batch(idx, device)
        mask = None if present is None else present[idx].to(device)
        out = model(inputs, mask, **{k: v.to(device) for k, v in extra.items()})
        rows.append(idx)
        logits.append(out.logits.float().cpu())
        gates.append(out.gate.float().cpu())
    order = torch.argsort(torch.cat(rows))  # dialogue batches come in conversation order: back to data order
    return torch.cat(logits)[order], torch.cat(gates)[order]


def _validate(
    model: nn.Module, data: TensorData, batch_size: int, device: torch.device, weights: torch.Tensor | None = None
) -> dict[str, float]:
    """Validation metrics; `val_loss` (the early-stopping criterion) uses the training loss's class weights."""
    logits, _ = predict(model, data, batch_size, device)
    targets = data.targets.cpu()
    accuracy = float((logits.argmax(dim=1).cpu() == targets).double().mean())
    return {**validation_scores(logits, targets, weights), "val_acc": accuracy}


def _train_epoch(
    model: nn.Module,
    data: TensorData,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    modality_dropout: float = 0.0,
    dropout_generator: torch.Generator | None = None,
    weights: torch.Tensor | None = None,
) -> float:
    model.train()
    total = 0.0
    for idx, extra in data.batches(batch_size, generator):
        inputs, targets = data.batch(idx, device)
        present = drop_modalities(len(targets), len(inputs), modality_dropout,
                                  dropout_generator if dropout_generator is not None else generator)
        optimizer.zero_grad(set_to_none=True)
        out = model(inputs, present.to(device), **{k: v.to(device) for k, v in extra.items()})
        loss = F.cross_entropy(out.logits, targets, weight=weights)  # eq 19
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(targets)
    return total / len(data)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _rng_state(generator: torch.Generator, dropout_generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "shuffle": generator.get_state(),
                             "modality_dropout": dropout_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping[str, Any], generator: torch.Generator, dropout_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if "modality_dropout" in state:  # checkpoints written before modality dropout existed never drew from it
        dropout_generator.set_state(state["modality_dropout"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file next to `path`, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise HjcagError(
            f"checkpoint '{path}' cannot be read ({exc}). Delete it to restart this fold from scratch."
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise HjcagError(f"checkpoint '{path}' is not a hjcag v{CHECKPOINT_VERSION} checkpoint. Delete it to restart.")
    return ckpt


def train_fold(
    model: nn.Module,
    train: TensorData,
    val: TensorData,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    checkpoint_path: Path | None = None,
    fold_index: int = 0,
    on_epoch: EpochCallback | None = None,
    quiet: bool = False,
    stage: str | None = None,
) -> FoldTraining:
    """Train `model` (already seeded and built) for up to cfg.epochs, early-stopping on validation loss.

    With `checkpoint_path`, the full state is written there after every epoch and, if the file exists, training
    resumes from it (a checkpoint of a finished fold returns its result without training). `stage` names a stage of
    a warm start in the progress and log lines ("fold 2 context"), so its epochs do not read as the fold starting over.
    """
    name = f"fold {fold_index}" if stage is None else f"fold {fold_index} {stage}"
    if len(train) == 0 or len(val) == 0:
        raise HjcagError(f"fold {fold_index}: empty training ({len(train)}) or validation ({len(val)}) set.")
    model.to(device)
    if device.type == "cuda" and train.nbytes() + val.nbytes() <= _GPU_RESIDENT_BYTES:
        train, val = train.to(device), val.to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    generator = torch.Generator().manual_seed(seed)
    dropout_generator = _dropout_generator(seed)
    weights = class_weights(train.targets, train.num_classes, cfg.class_weights)
    train_weights = None if weights is None else weights.to(device)
    start_epoch, best_val_loss, best_epoch, bad_epochs = 0, math.inf, 0, 0
    best_state = cpu_state(model)
    history: list[dict[str, float]] = []
    finished = False

    if checkpoint_path is not None and checkpoint_path.exists():
        ckpt = load_checkpoint(checkpoint_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_val_loss = int(ckpt["epoch"]), float(ckpt["best_val_loss"])
        best_epoch, bad_epochs = int(ckpt["best_epoch"]), int(ckpt["bad_epochs"])
        best_state, history, finished = ckpt["best_state"], list(ckpt["history"]), bool(ckpt["finished"])
        _restore_rng(ckpt["rng"], generator, dropout_generator)
        if not quiet:
            log.info("%s: resuming after epoch %d from %s", name, start_epoch, checkpoint_path)

    bar = progress_bar(  # a bar on a terminal, a line per 10 % in logs
        total=cfg.epochs, initial=start_epoch, desc=name, unit="epoch", disable=quiet or finished,
        leave=False, dynamic_ncols=True,
    )
    try:
        epoch = start_epoch
        while not finished and epoch < cfg.epochs:
            epoch += 1
            lr = float(optimizer.param_groups[0]["lr"])
            train_loss = _train_epoch(model, train, optimizer, cfg.batch_size, generator, device,
                                      cfg.modality_dropout, dropout_generator, train_weights)
            metrics: dict[str, float] = {
                "epoch": epoch, "train_loss": train_loss, **_validate(model, val, cfg.batch_size, device, weights),
                "lr": lr,
            }
            if not (math.isfinite(train_loss) and math.isfinite(metrics["val_loss"])):
                raise HjcagError(
                    f"fold {fold_index}: training diverged at epoch {epoch} (train loss {train_loss}, "
                    f"validation loss {metrics['val_loss']}). Lower train.lr in params.yaml, or check the features for "
                    "extreme values."
                )
            scheduler.step()
            history.append(metrics)
            if metrics["val_loss"] < best_val_loss:
                best_val_loss, best_epoch, bad_epochs = metrics["val_loss"], epoch, 0
                best_state = cpu_state(model)
            else:
                bad_epochs += 1
            finished = bad_epochs >= cfg.patience or epoch >= cfg.epochs
            if checkpoint_path is not None:
                save_atomic(
                    {
                        "version": CHECKPOINT_VERSION,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "best_state": best_state,
                        "best_val_loss": best_val_loss,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs,
                        "history": history,
                        "finished": finished,
                        "rng": _rng_state(generator, dropout_generator),
                    },
                    checkpoint_path,
                )
            bar.set_postfix(train_loss=f"{train_loss:.4f}", val_loss=f"{metrics['val_loss']:.4f}",
                            val_acc=f"{metrics['val_acc']:.3f}", refresh=False)
            bar.update(1)
            if on_epoch is not None:
                on_epoch(fold_index, epoch, dict(metrics))
    finally:
        bar.close()
    epochs_run = len(history)
    return FoldTraining(
        best_state=best_state,
        best_epoch=best_epoch,
        best_val_loss=best_val_loss,
        epochs_run=epochs_run,
        stopped_early=epochs_run < cfg.epochs,
        history=history,
    )
