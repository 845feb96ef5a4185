"""Conversation context over any model of the harness (issue 10; docs/model.md, "Conversation context").

Not in the paper, whose model sees one utterance at a time; `model.context: none` (the default) builds the paper's
model alone. With `gru` or `transformer` the base model (HJCAG or a baseline) first fuses every utterance on its
own into h_i (its `fused` output: HJCAG's gated, pooled vector, eq 17-18 and the pool); then

  s_j = h_j + E_offset[j - i] + E_speaker[same / other / unknown speaker as utterance i]    for j in the window of i
  c_i = GRU(s_{i-k} .. s_i) at step i   or   TransformerLayer(s_{i-k} .. s_i) at step i    (B, D)
  logits_i = base_logits_i + MLP([h_i ; c_i])      (the MLP's last layer starts at zero)

The window (causal: the k preceding utterances of the same dialogue and i itself; bidirectional: also the k
following ones) is a row of indices into a bank of fused vectors: the batch's own h (training and offline
evaluation feed whole dialogues, so gradients reach every h of the window) followed by `states`, vectors an
earlier call returned (serving: the client sends the states of the previous turns, one extraction per turn).
Every utterance is classified from its own window only, so a causal model never looks ahead: appending a later
utterance cannot change an earlier prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from hjcag.model.common import FusionOutput
from hjcag.params import ModelConfig

OTHER_SPEAKER, SAME_SPEAKER, UNKNOWN_SPEAKER = 0, 1, 2  # a window member's speaker relative to the utterance's


def window_size(k: int, direction: str) -> int:
    """S, the window's width: k + 1 causal, 2k + 1 bidirectional."""
    return 2 * k + 1 if direction == "bidirectional" else k + 1


@dataclass
class ContextBatch:
    """The windows of a batch of B utterances.

    window  (B, S) long: rows of the bank (the batch's fused vectors, then `states`), -1 where there is no
            utterance; column k (the window's centre for bidirectional, its end for causal) is the utterance itself.
    speaker (B, S) long: 0 other speaker, 1 same speaker as the utterance, 2 unknown.
    states  (E, D) float or None: fused vectors of turns that are not in the batch (serving).
    """

    window: torch.Tensor
    speaker: torch.Tensor
    states: torch.Tensor | None = None

    def to(self, device: torch.device) -> ContextBatch:
        states = None if self.states is None else self.states.to(device)
        return ContextBatch(self.window.to(device), self.speaker.to(device), states)


def alone(batch: int, k: int, direction: str, device: torch.device) -> ContextBatch:
    """Windows holding only the utterance itself: a batch classified without any context turn."""
    window = torch.full((batch, window_size(k, direction)), -1, dtype=torch.long, device=device)
    window[:, k] = torch.arange(batch, device=device)
    speaker = torch.full_like(window, UNKNOWN_SPEAKER)
    speaker[:, k] = SAME_SPEAKER
    return ContextBatch(window, speaker)


def _heads(width: int) -> int:
    return next(h for h in (4, 2, 1) if width % h == 0)


class ConversationContext(nn.Module):
    """`base` (any model with a `fused` output of width `base.fused_width`) read with its conversation context
    (`config`: its model.context, context_window and context_direction, checked when the ModelConfig was built)."""

    def __init__(self, base: nn.Module, num_classes: int, config: ModelConfig) -> None:
        super().__init__()
        self.base = base
        self.modalities = base.modalities
        self.kind, self.k, self.direction = config.context, int(config.context_window), config.context_direction
        width = int(base.fused_width)
        self.fused_width = width
        self.offset = nn.Embedding(window_size(self.k, self.direction), width)  # E_offset
        self.speaker = nn.Embedding(3, width)  # E_speaker: other, same, unknown
        self.dropout = nn.Dropout(config.dropout)
        bidirectional = self.direction == "bidirectional"
        if self.kind == "gru":
            self.encoder: nn.Module = nn.GRU(width, width, batch_first=True, bidirectional=bidirectional)
            summary = 2 * width if bidirectional else width
        else:
            self.encoder = nn.TransformerEncoderLayer(width, _heads(width), 2 * width, config.dropout,
                                                      batch_first=True, norm_first=True)
            summary = width
        self.head = nn.Sequential(
            nn.Linear(width + summary, config.classifier_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden, num_classes),
        )
        # A correction of the base model's own decision, zero at the start: training begins from the context-free
        # model and moves away from it only as far as the conversation helps (on data without a context cue the
        # full-width head alone fell 4 points behind the base model; README "Conversation context").
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def standardize(self) -> nn.Module:
        """The base model's input standardiser (fit on the training part, as for the base alone)."""
        return self.base.standardize

    def forward(self, inputs: dict[str, torch.Tensor], present: torch.Tensor | None = None,
                context: ContextBatch | None = None) -> FusionOutput:
        out = self.base(inputs, present)
        h = out.fused  # (B, D): each utterance fused on its own
        if context is None:
            context = alone(h.shape[0], self.k, self.direction, h.device)
        bank = h if context.states is None else torch.cat([h, context.states.to(h.dtype)])  # (B + E, D)
        valid = context.window >= 0  # (B, S)
        s = torch.where(valid[..., None], bank[context.window.clamp_min(0)], torch.zeros((), dtype=h.dtype,
                                                                                          device=h.device))
        s = s + self.offset.weight[None] + self.speaker(context.speaker)  # (B, S, D)
        summary = self._summarise(self.dropout(s), valid)  # (B, D or 2D)
        logits = out.logits + self.head(torch.cat([h, summary], dim=-1))  # (B, C)
        return FusionOutput(logits=logits, gate=out.gate, fused=h)

    def _summarise(self, s: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The encoder's output at the utterance's own step; steps without an utterance take no part."""
        k = self.k
        if self.kind == "transformer":
            return self.encoder(s, src_key_padding_mask=~valid)[:, k]
        # GRU: a window's utterances are contiguous around column k; shift them to the front and pack, so the
        # recurrence runs over real turns only, then read the output at the utterance's own step.
        first = valid.to(torch.int64).argmax(dim=1)  # (B,) first real column
        lengths = valid.sum(dim=1)
        columns = (torch.arange(s.shape[1], device=s.device)[None] + first[:, None]).clamp_max(s.shape[1] - 1)
        shifted = torch.gather(s, 1, columns[..., None].expand(-1, -1, s.shape[-1]))
        packed = pack_padded_sequence(shifted, lengths.cpu(), batch_first=True, enforce_sorted=False)
        steps, _ = pad_packed_sequence(self.encoder(packed)[0], batch_first=True, total_length=s.shape[1])
        return steps[torch.arange(s.shape[0], device=s.device), k - first]
