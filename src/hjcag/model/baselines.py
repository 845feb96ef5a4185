"""Baselines in the same harness as HJCAG: early fusion, late fusion and a MulT-style cross-modal transformer.

Every model here takes `(input_dims, num_classes, config)` and is called as
`model(inputs: {m: (B, L, d_m)}, present: (B, |M|) bool | None) -> FusionOutput(logits (B, C), gate (B, |M|))`,
with the modalities M = the keys of `input_dims` in the canonical order t, a, v.

Masks (docs/model.md, "Masks"), as in HJCAG:
- a modality marked absent for a sample is replaced by zeros before anything reads it (`torch.where`, so even NaN
  placeholders cannot leak), its projection is zero too, and it is excluded from the fusion, so its values cannot
  change that sample's prediction; its gate weight is 0;
- padded time steps (all-zero input rows of a modality) are zero after the projection, are never attention keys,
  and are left out of every mean over L.
The gate of a baseline is the weighting it really applies: uniform over the present modalities (none of them
learns a modality weighting).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hjcag.errors import ConfigError
from hjcag.model.common import (
    FusionOutput,
    InputStandardizer,
    activation,
    keep_steps,
    masked_mean,
    masked_uniform,
    presence_mask,
    step_masks,
)
from hjcag.params import MODALITIES, ModelConfig


def _modalities(input_dims: Mapping[str, int]) -> tuple[str, ...]:
    modalities = tuple(m for m in MODALITIES if m in input_dims)
    if not modalities:
        raise ConfigError("a model needs at least one modality")
    return modalities


def _keep(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Zero every sample of `x` (B, ...) whose `present` (B,) is False."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(present.view(shape), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _pool(project: nn.Module, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Project `x` (B, L, d_in), zero its non-real steps before and after, mean over the real steps: (B, width)."""
    return masked_mean(project(keep_steps(x, real)), real)


def _projection(d_in: int, width: int, config: ModelConfig) -> nn.Module:
    """The same input projection HJCAG uses: Linear + activation (+ dropout)."""
    return nn.Sequential(nn.Linear(d_in, width), activation(config.activation), nn.Dropout(config.dropout))


def _classifier(d_in: int, num_classes: int, config: ModelConfig) -> nn.Module:
    """The same classifier head HJCAG uses: Linear, ReLU, dropout, Linear."""
    return nn.Sequential(
        nn.Linear(d_in, config.classifier_hidden),
        nn.ReLU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.classifier_hidden, num_classes),
    )


class ConcatFusion(nn.Module):
    """Early (feature-level) fusion: project, mean-pool over L, concatenate, MLP.

    The classic early-fusion baseline of multimodal emotion recognition (e.g. the feature-concatenation
    baselines in Poria et al., "A review of affective computing: from unimodal analysis to multimodal
    fusion", Information Fusion 2017). A missing modality contributes a zero block to the concatenation (the
    classifier without those input columns); the mean over L runs over each modality's real steps.
    """

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, config: ModelConfig) -> None:
        super().__init__()
        self.modalities = _modalities(input_dims)
        self.standardize = InputStandardizer({m: input_dims[m] for m in self.modalities})
        widths = {m: int(config.widths[m]) for m in self.modalities}
        self.project = nn.ModuleDict({m: _projection(input_dims[m], widths[m], config) for m in self.modalities})
        self.fused_width = sum(widths.values())
        self.classifier = _classifier(self.fused_width, num_classes, config)

    def forward(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor | None = None) -> FusionOutput:
        mask = presence_mask(inputs, self.modalities, present)  # (B, |M|)
        real = step_masks(inputs, self.modalities, mask)  # {m: (B, L)}
        inputs = self.standardize(inputs)
        pooled = [
            _keep(_pool(self.project[m], inputs[m], real[m]), mask[:, i])  # (B, d_m)
            for i, m in enumerate(self.modalities)
        ]
        fused = torch.cat(pooled, dim=-1)  # (B, sum d_m)
        return FusionOutput(logits=self.classifier(fused), gate=masked_uniform(mask), fused=fused)


class LateFusion(nn.Module):
    """Late (decision-level) fusion: one unimodal classifier per modality, probabilities averaged.

    Each modality is projected, mean-pooled over L and classified on its own; the prediction is the mean of
    the present modalities' class probabilities (the averaging late-fusion rule, Kittler et al., "On combining
    classifiers", IEEE TPAMI 1998; used as a baseline throughout multimodal sentiment/emotion work, e.g.
    Zadeh et al., "Tensor Fusion Network", EMNLP 2017). The returned logits are the log of that mixture, so
    `softmax(logits)` is exactly the average and cross-entropy trains the mixture.
    """

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, config: ModelConfig) -> None:
        super().__init__()
        self.modalities = _modalities(input_dims)
        self.standardize = InputStandardizer({m: input_dims[m] for m in self.modalities})
        widths = {m: int(config.widths[m]) for m in self.modalities}
        self.project = nn.ModuleDict({m: _projection(input_dims[m], widths[m], config) for m in self.modalities})
        self.heads = nn.ModuleDict({m: _classifier(widths[m], num_classes, config) for m in self.modalities})
        self.fused_width = num_classes  # the decision itself: the log of the averaged probabilities

    def forward(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor | None = None) -> FusionOutput:
        mask = presence_mask(inputs, self.modalities, present)  # (B, |M|)
        real = step_masks(inputs, self.modalities, mask)  # {m: (B, L)}
        inputs = self.standardize(inputs)
        weights = masked_uniform(mask)  # (B, |M|)
        log_probs = torch.stack(
            [
                F.log_softmax(self.heads[m](_pool(self.project[m], inputs[m], real[m])), dim=-1)
                for m in self.modalities
            ],
            dim=1,
        )  # (B, |M|, C)
        # log sum_m w_m p_m, with log w_m = -inf for a missing modality (its term is excluded, gradient 0).
        log_weights = torch.log(weights).masked_fill(~mask, float("-inf"))[:, :, None]  # (B, |M|, 1)
        logits = torch.logsumexp(log_probs.masked_fill(~mask[:, :, None], 0.0) + log_weights, dim=1)  # (B, C)
        return FusionOutput(logits=logits, gate=weights, fused=logits)


def sinusoidal_positions(length: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(length, width) sinusoidal position encoding (Vaswani et al., "Attention is all you need", 2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : width // 2]
    return table.to(dtype)


class CrossModalLayer(nn.Module):
    """One pre-LayerNorm transformer layer whose queries come from the target and keys/values from the source.

    MulT's crossmodal attention block (Tsai et al., 2019, section 3.2): Z = Z + MHA(LN(Z), LN(X_s), LN(X_s)),
    then Z = Z + FFN(LN(Z)). With source = target it is an ordinary self-attention layer.
    """

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(width)
        self.ff = nn.Sequential(
            nn.Linear(width, 4 * width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * width, width)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, query: torch.Tensor, source: torch.Tensor, source_real: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`source_real` (B, L) bool: the source steps that may be keys (each row needs at least one)."""
        q, kv = self.norm_q(query), self.norm_kv(source)
        padding = None if source_real is None else ~source_real  # True = not a key
        z = query + self.dropout(self.attn(q, kv, kv, key_padding_mask=padding, need_weights=False)[0])  # (B, L, w)
        return z + self.dropout(self.ff(self.norm_ff(z)))


class CrossModalTransformer(nn.Module):
    """A stack of `layers` CrossModalLayers and a final LayerNorm: the "source -> target" transformer of MulT."""

    def __init__(self, width: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList([CrossModalLayer(width, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)

    def forward(
        self, target: torch.Tensor, source: torch.Tensor, source_real: torch.Tensor | None = None
    ) -> torch.Tensor:
        z = target
        for layer in self.layers:
            z = layer(z, source, source_real)
        return self.norm(z)


class MulT(nn.Module):
    """MulT-style cross-modal transformer (Tsai et al., "Multimodal Transformer for Unaligned Multimodal
    Language Sequences", ACL 2019).

    1. Each modality: Conv1d (kernel 1, no bias) to d_model, scaled by sqrt(d_model), plus sinusoidal positions,
       dropout.
    2. For every target modality m and every other source s: a cross-modal transformer (`layers` layers,
       `heads` heads) with queries from m and keys/values from s.
    3. Concatenate the |M|-1 outputs on the feature axis, one self-attention layer over that, mean-pool over the
       target's real steps (MulT takes the last step; our sequences are padded to L, so the mean is the safer
       summary).
    4. Concatenate the targets' summaries, MLP classifier.
    With a single modality, step 2 is a self-attention transformer (source = target).

    Missing modalities: a missing source s of target m is replaced, for that sample, by the target itself,
    so the s -> m transformer falls back to self-attention on m (a sample with one present modality is
    classified from that modality alone); a missing target's summary is zeroed. Keys never mix across
    samples, so a missing modality's values cannot reach that sample's logits, and every parameter exists
    and is used whatever the mask.

    Padding: a source's padded steps are never keys (`key_padding_mask`), the memory layer's keys are the target's
    real steps, and the summary is the mean over the target's real steps. Positions count from the utterance's
    first step, so appending padding changes nothing.
    """

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, config: ModelConfig) -> None:
        super().__init__()
        self.modalities = _modalities(input_dims)
        self.standardize = InputStandardizer({m: input_dims[m] for m in self.modalities})
        try:
            d_model, heads, layers = (int(config.mult[k]) for k in ("d_model", "heads", "layers"))
        except KeyError as exc:
            raise ConfigError(f"model.mult needs keys d_model, heads and layers; missing {exc}.") from exc
        if d_model <= 0 or heads <= 0 or layers <= 0 or d_model % heads:
            raise ConfigError(
                f"model.mult: d_model ({d_model}) must be a positive multiple of heads ({heads}) and layers "
                f"({layers}) positive."
            )
        self.d_model = d_model
        self.project = nn.ModuleDict(
            {m: nn.Conv1d(input_dims[m], d_model, kernel_size=1, bias=False) for m in self.modalities}
        )
        self.embed_dropout = nn.Dropout(config.dropout)
        self.cross = nn.ModuleDict(
            {
                f"{s}{m}": CrossModalTransformer(d_model, heads, layers, config.dropout)
                for m in self.modalities
                for s in self.sources(m)
            }
        )
        n_sources = len(self.sources(self.modalities[0]))
        self.memory = nn.ModuleDict(
            {m: CrossModalTransformer(n_sources * d_model, heads, 1, config.dropout) for m in self.modalities}
        )
        self.fused_width = len(self.modalities) * n_sources * d_model
        self.classifier = _classifier(self.fused_width, num_classes, config)

    def sources(self, target: str) -> tuple[str, ...]:
        """The source modalities attended from `target` (itself when it is the only modality)."""
        return tuple(s for s in self.modalities if s != target) or (target,)

    def forward(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor | None = None) -> FusionOutput:
        mask = presence_mask(inputs, self.modalities, present)  # (B, |M|)
        real = step_masks(inputs, self.modalities, mask)  # {m: (B, L)}
        inputs = self.standardize(inputs)
        index = {m: i for i, m in enumerate(self.modalities)}
        # Key masks: a present modality's real steps; a missing one's are all "real" so that no attention row is
        # empty (no NaN) -- its outputs are discarded and it is never a source of a present target (see above).
        keys = {m: real[m] | ~mask[:, index[m], None] for m in self.modalities}
        xs = {}
        for m in self.modalities:
            x = self.project[m](keep_steps(inputs[m], real[m]).transpose(1, 2)).transpose(1, 2)  # (B, L, D)
            pos = sinusoidal_positions(x.shape[1], self.d_model, x.device, x.dtype)  # (L, D)
            xs[m] = self.embed_dropout(math.sqrt(self.d_model) * x + pos)
        summaries = []
        for m in self.modalities:
            branches = []
            for s in self.sources(m):
                if s == m:
                    source, source_keys = xs[m], keys[m]
                else:
                    source = _keep_or(xs[s], xs[m], mask[:, index[s]])  # (B, L, D)
                    source_keys = _keep_or(keys[s], keys[m], mask[:, index[s]])  # (B, L)
                branches.append(self.cross[f"{s}{m}"](xs[m], source, source_keys))  # (B, L, D)
            h = torch.cat(branches, dim=-1)  # (B, L, n_sources * D)
            h = self.memory[m](h, h, keys[m])  # self-attention over the concatenation
            summaries.append(_keep(masked_mean(h, real[m]), mask[:, index[m]]))  # (B, n_sources * D)
        fused = torch.cat(summaries, dim=-1)  # (B, |M| n_sources D)
        return FusionOutput(logits=self.classifier(fused), gate=masked_uniform(mask), fused=fused)


def _keep_or(x: torch.Tensor, fallback: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """`x` for samples whose `present` (B,) is True, `fallback` for the others."""
    return torch.where(present.view((-1,) + (1,) * (x.dim() - 1)), x, fallback)
