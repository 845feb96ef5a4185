"""HJCAG: Hierarchical Joint Cross-Modal Attention and Gating (Tan, Tan & Liu, 2026), section 3.

Read top to bottom: input projection -> bimodal joint cross-attention (eq 1-12) -> trimodal joint
cross-attention (eq 13-16) -> modality gate (eq 17-18) -> masked mean pool over L -> classifier (eq 19 is the
loss). docs/model.md states every equation as implemented and every interpretation of, or deviation from, the paper.

The paper writes features column-major, X_m in R^{d_m x L}. Here tensors are row-major with a batch axis:
X_m has shape (B, L, d_m), so every paper product is transposed; the shape of each step is written beside it.

Generalised over a modality set M, a subset of {t, a, v} (docs/model.md, "Modality subsets"):
- the bimodal level builds one joint per pair in M (|M| = 1: the self-joint act(FC(X_m)));
- the trimodal level builds one joint over all of M;
- `bimodal`, `trimodal` and `gate` switch the levels and the gate off, which gives the rows of Table 4.

Masks (docs/model.md, "Masks"): a missing modality's stream is exactly zero from its projection on, a pair joint
with a missing member is dropped from the correlation sums, the top joint is taken over the present members,
and the gate gives the missing modality weight 0. Padded time steps (all-zero input rows) are zero in every
stream and joint, take no part in the correlations, the L x L mixing or the gate, and are left out of the pool.
So a missing modality's values, and the content of padding, cannot change a prediction.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hjcag.model.common import (
    FusionOutput,
    InputStandardizer,
    activation,
    keep_steps,
    masked_mean,
    presence_mask,
    step_masks,
)
from hjcag.params import MODALITIES, ModelConfig

Joint = tuple[str, ...]


def joint_key(joint: Joint) -> str:
    return "".join(joint)


class JointCrossAttention(nn.Module):
    """One level of joint cross-modal attention (bimodal: eq 1-12; trimodal: eq 13-16); docs/model.md.

    For every modality x in the level and every joint J that contains x:
      J = act(FC([X_y for y in J]))                                (eq 1-3, 13)   (B, L, w_J), w_J = sum d_y
      C_x = sum_J tanh(X_x W_{x,J} J^T / sqrt(w_J))                (eq 4-6, 14)   (B, L, L)  rows: x's steps,
                                                                                             columns: J's steps
      H_x = ReLU(C_x^T W_c,x^T X_x)        = ReLU(X W_c C) in the paper (eq 7-9, 15)  (B, L, d_x)
      X_x -> LayerNorm(W_h,x^T H_x + X_x)  = H W_h + X in the paper    (eq 10-12, 16) (B, L, d_x)
    A single head, and layer normalisation after the block (section 4.2).

    Masks (optional; default: every step real, every modality present):
      `real`    {m: (B, L) bool}, the real (non-padding) steps of each modality; a missing modality has none.
                Inputs must already be zero where not real. A joint's step is real where any member's is; every
                stream and joint is exactly zero at its non-real steps, so padded steps add nothing to C, to the
                W_c / W_h mixing or to the output, and the output is zero there too.
      `present` (B, |M|) bool. A joint is used for a sample when all its members are present; the joint over
                every modality of the level (the top joint; with |M| <= 2 also the single pair or self-joint) is
                used whenever a member is present, over the present members (a zero block of the concatenation
                is the FC without those input columns).
    """

    def __init__(
        self,
        widths: Mapping[str, int],
        joints: Sequence[Joint],
        seq_len: int,
        act: str = "relu",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in widths)
        self.joints = tuple(joints)
        self.seq_len = seq_len
        self.joint_fc = nn.ModuleDict(
            {
                joint_key(j): nn.Sequential(nn.Linear(self._width(widths, j), self._width(widths, j)), activation(act))
                for j in self.joints
            }
        )
        # W_{x,J} in R^{d_x x w_J} for every (modality, joint containing it).
        self.w_joint = nn.ParameterDict(
            {
                f"{m}_{joint_key(j)}": nn.Parameter(torch.empty(widths[m], self._width(widths, j)))
                for j in self.joints
                for m in j
            }
        )
        self.w_c = nn.ParameterDict({m: nn.Parameter(torch.empty(seq_len, seq_len)) for m in self.modalities})
        self.w_h = nn.ParameterDict({m: nn.Parameter(torch.empty(seq_len, seq_len)) for m in self.modalities})
        self.norm = nn.ModuleDict({m: nn.LayerNorm(widths[m]) for m in self.modalities})
        self.dropout = nn.Dropout(dropout)
        for p in [*self.w_joint.values(), *self.w_c.values(), *self.w_h.values()]:
            nn.init.xavier_uniform_(p)

    @staticmethod
    def _width(widths: Mapping[str, int], joint: Joint) -> int:
        return sum(widths[m] for m in joint)

    def _joint_used(self, joint: Joint, present: torch.Tensor) -> torch.Tensor:
        """(B,) bool: whether `joint` takes part for each sample (see the class docstring)."""
        members = present[:, [self.modalities.index(m) for m in joint]]  # (B, |J|)
        return members.any(dim=1) if set(joint) == set(self.modalities) else members.all(dim=1)

    def forward(
        self,
        xs: Mapping[str, torch.Tensor],
        real: Mapping[str, torch.Tensor] | None = None,
        present: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        first = xs[self.modalities[0]]
        if present is None:
            present = torch.ones(first.shape[0], len(self.modalities), dtype=torch.bool, device=first.device)
        if real is None:
            real = {m: present[:, i, None].expand(-1, first.shape[1]) for i, m in enumerate(self.modalities)}
        # Joint representations, eq 1-3 / 13: concatenate on the feature axis, FC keeps the width.
        joint_feats, joint_real = {}, {}
        for j in self.joints:
            steps = torch.stack([real[m] for m in j]).any(dim=0) & self._joint_used(j, present)[:, None]  # (B, L)
            joint_real[j] = steps
            joint_feats[j] = keep_steps(self.joint_fc[joint_key(j)](torch.cat([xs[m] for m in j], dim=-1)),
                                        steps)  # (B, L, w_J)
        out = {}
        for m in self.modalities:
            x = xs[m]  # (B, L, d_m), zero at m's padded steps
            # Joint cross-correlation, eq 4-6 / 14: sum over the joints containing m; (query step, joint step)
            # pairs with a padded side are zero (already tanh(0) = 0; the mask makes it explicit).
            corr = sum(
                torch.where(
                    real[m][:, :, None] & joint_real[j][:, None, :],
                    torch.tanh(
                        x @ self.w_joint[f"{m}_{joint_key(j)}"] @ joint_feats[j].transpose(1, 2)  # (B, L, L)
                        / math.sqrt(joint_feats[j].shape[-1])
                    ),
                    torch.zeros((), dtype=x.dtype, device=x.device),
                )
                for j in self.joints
                if m in j
            )
            # Attention map, eq 7-9 / 15: paper ReLU(X W_c C) with X (d x L); row-major transpose.
            attn = F.relu(corr.transpose(1, 2) @ self.w_c[m].t() @ x)  # (B, L, d_m), rows: joint steps
            # Attended features with residual, eq 10-12 / 16, then LayerNorm (section 4.2); padded steps -> 0.
            out[m] = keep_steps(self.norm[m](self.dropout(self.w_h[m].t() @ attn) + x), real[m])  # (B, L, d_m)
        return out


class ModalityGate(nn.Module):
    """Gate, eq 17-18, over modalities of different widths (docs/model.md, eq 17-18).

    P_m = W_m X_att,m                      (B, L, d_h)   common width d_h
    g   = softmax_m(P_m), elementwise       (B, L, d_h, |M|); a modality not real at a step (missing, or padded
                                                              there) has logit -inf at that step
    X_att = sum_m g_m * P_m                 (B, L, d_h)   zero at steps where no modality is real
    With `gated=False` (Table 4, "w/o multimodal gate") the modalities real at a step are averaged with equal weight.
    Returns X_att and the per-modality weights averaged over d_h and the sample's real steps, (B, |M|), which sum
    to 1 over the present modalities.
    """

    def __init__(self, widths: Mapping[str, int], gate_width: int, gated: bool = True) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in widths)
        self.gated = gated
        self.proj = nn.ModuleDict({m: nn.Linear(widths[m], gate_width) for m in self.modalities})

    def forward(
        self, xs: Mapping[str, torch.Tensor], present: torch.Tensor, real: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        projected = torch.stack([self.proj[m](xs[m]) for m in self.modalities], dim=-1)  # (B, L, d_h, |M|)
        if real is None:
            valid = present[:, None, :].expand(-1, projected.shape[1], -1)  # (B, L, |M|)
        else:
            valid = torch.stack([real[m] for m in self.modalities], dim=-1)  # (B, L, |M|)
        step_real = valid.any(dim=-1)  # (B, L): steps where some modality is real
        # At a step with no real modality every logit stays finite (no NaN, forward or backward); weight 0 there.
        usable = (valid | ~step_real[..., None])[:, :, None, :]  # (B, L, 1, |M|)
        if self.gated:
            weights = torch.softmax(projected.masked_fill(~usable, float("-inf")), dim=-1)  # eq 17
        else:
            uniform = usable.to(projected.dtype)
            weights = (uniform / uniform.sum(dim=-1, keepdim=True)).expand_as(projected)
        weights = weights * step_real[:, :, None, None].to(weights.dtype)
        fused = (weights * projected.masked_fill(~usable, 0.0)).sum(dim=-1)  # eq 18, (B, L, d_h)
        return fused, masked_mean(weights.mean(dim=2), step_real)  # (B, L, d_h), (B, |M|)


class HJCAG(nn.Module):
    """The paper's model over any modality subset; see the module docstring for the data flow."""

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, config: ModelConfig) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in input_dims)
        self.config = config
        widths = {m: int(config.widths[m]) for m in self.modalities}
        self.standardize = InputStandardizer({m: input_dims[m] for m in self.modalities})  # fit on the train part
        # "aligned to a unified feature space" (3.1): Linear + activation to the model width d_m.
        self.project = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(input_dims[m], widths[m]), activation(config.activation),
                                 nn.Dropout(config.dropout))
                for m in self.modalities
            }
        )
        pairs: list[Joint] = list(itertools.combinations(self.modalities, 2)) or [self.modalities]
        level = {"seq_len": config.seq_len, "act": config.activation, "dropout": config.dropout}
        self.bimodal = JointCrossAttention(widths, pairs, **level) if config.bimodal else None
        self.trimodal = JointCrossAttention(widths, [self.modalities], **level) if config.trimodal else None
        self.gate = ModalityGate(widths, config.gate_width, gated=config.gate)
        self.fused_width = config.gate_width
        self.classifier = nn.Sequential(
            nn.Linear(config.gate_width, config.classifier_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden, num_classes),
        )

    def forward(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor | None = None) -> FusionOutput:
        mask = presence_mask(inputs, self.modalities, present)  # (B, |M|)
        real = step_masks(inputs, self.modalities, mask)  # {m: (B, L)}: present and not padding
        inputs = self.standardize(inputs)  # per-feature z-scores, (B, L, d_in) each
        # Masked after the projection: a missing modality's / a padded step's X_m is exactly zero (not act(bias)).
        xs = {
            m: keep_steps(self.project[m](keep_steps(inputs[m], real[m])), real[m])  # (B, L, d_m)
            for m in self.modalities
        }
        if self.bimodal is not None:
            xs = self.bimodal(xs, real, mask)  # X_{t->av}, X_{a->tv}, X_{v->ta}: (B, L, d_m) each
        if self.trimodal is not None:
            xs = self.trimodal(xs, real, mask)  # X_att,m: (B, L, d_m) each
        fused, gate = self.gate(xs, mask, real)  # (B, L, d_h), (B, |M|)
        step_real = torch.stack([real[m] for m in self.modalities]).any(dim=0)  # (B, L)
        pooled = masked_mean(fused, step_real)  # pool over the real steps -> (B, d_h)
        return FusionOutput(logits=self.classifier(pooled), gate=gate, fused=pooled)  # logits (B, C)
