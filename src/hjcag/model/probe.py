"""A model blended with a linear probe on its own inputs (`model.probe_blend`; docs/model.md, "Probe blend").

Not in the paper. On real text (README "Real data") a logistic regression on the mean of an utterance's feature
steps can beat the fusion model trained on the same features. So that a model can never lose to that probe by the
luck of a recipe, it can contain it:

    p       = mean over the real steps of each present modality of z_m   (B, sum_m d_m)   z = standardised inputs
    logits  = (1 - lam) log softmax(W p + b) + lam log softmax(f(x))     (B, C)           f = the wrapped model

W, b and lam are not trained by the loop. While the model trains it is `f` alone (`fitted` is false, the output is
the wrapped model's, bit for bit, and W, b get no gradient); afterwards :mod:`hjcag.train.probe` fits the probe on
the training part (logistic regression, C chosen on validation) and picks lam on validation weighted F1 from a
grid that holds lam = 0 (the probe alone) and lam = 1 (the model alone). A missing modality pools to zeros, its
training mean. With conversation context the blend is outermost: f is the context model, whose decision the probe
is blended with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hjcag.model.common import FusionOutput, masked_mean, presence_mask, step_masks


class ProbeBlend(nn.Module):
    """`model` (any model of the harness) blended with a linear probe on its pooled, standardised inputs."""

    def __init__(self, model: nn.Module, input_dims: Mapping[str, int], num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.modalities: tuple[str, ...] = model.modalities
        self.fused_width = int(model.fused_width)
        # Built without its random initialisation, then zeros: no draw from torch's generator, so the wrapped
        # model's dropout draws, and so its training, are exactly what they are without the probe.
        self.linear = nn.utils.skip_init(nn.Linear, sum(int(input_dims[m]) for m in self.modalities), num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("blend", torch.tensor(1.0))  # lam: 1 = the model alone, 0 = the probe alone
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def standardize(self) -> nn.Module:
        """The wrapped model's input standardiser: the probe reads the inputs as the model does."""
        return self.model.standardize

    def pooled(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor | None = None) -> torch.Tensor:
        """p: each modality's standardised steps averaged over its real steps, concatenated: (B, sum_m d_m)."""
        mask = presence_mask(inputs, self.modalities, present)  # (B, |M|)
        real = step_masks(inputs, self.modalities, mask)  # {m: (B, L)}
        z = self.standardize(inputs)
        return torch.cat([masked_mean(z[m], real[m]) for m in self.modalities], dim=-1)

    def forward(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor | None = None,
                **extra: Any) -> FusionOutput:
        """`extra`: what the wrapped model's forward also takes (a context model's `context`)."""
        out = self.model(inputs, present, **extra)
        if not bool(self.fitted):
            return out
        probe = torch.log_softmax(self.linear(self.pooled(inputs, present)), dim=-1)  # (B, C)
        lam = self.blend.to(probe.dtype)
        logits = (1 - lam) * probe + lam * torch.log_softmax(out.logits, dim=-1)  # (B, C)
        return FusionOutput(logits=logits, gate=out.gate, fused=out.fused)
