"""HJCAG: Hierarchical Joint Cross-Modal Attention and Gating (Tan, Tan & Liu, 2026), section 3.

Read top to bottom: input projection -> bimodal joint cross-attention (eq 1-12) -> trimodal joint
cross-attention (eq 13-16) -> modality gate (eq 17-18) -> mean pool over L -> classifier (eq 19 is the loss).

The paper writes features column-major, X_m in R^{d_m x L}. Here tensors are row-major with a batch axis:
X_m has shape (B, L, d_m), so every paper product is transposed; the shape of each step is written beside it.

Generalised over a modality set M, a subset of {t, a, v} (DESIGN.md, "Model"):
- the bimodal level builds one joint per pair in M (|M| = 1: the self-joint act(FC(X_m)));
- the trimodal level builds one joint over all of M;
- `bimodal`, `trimodal` and `gate` switch the levels and the gate off, which gives the rows of Table 4.
A modality marked missing for a sample has its inputs zeroed and its gate logit set to -inf (weight 0).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hjcag.model.common import FusionOutput, InputStandardizer, activation, masked_uniform, presence_mask
from hjcag.params import MODALITIES, ModelConfig

Joint = tuple[str, ...]


def joint_key(joint: Joint) -> str:
    return "".join(joint)


class JointCrossAttention(nn.Module):
    """One level of joint cross-modal attention (bimodal: eq 1-12; trimodal: eq 13-16).

    For every modality x in the level and every joint J that contains x:
      J = act(FC([X_y for y in J]))                                (eq 1-3, 13)   (B, L, w_J), w_J = sum d_y
      C_x = sum_J tanh(X_x W_{x,J} J^T / sqrt(w_J))                (eq 4-6, 14)   (B, L, L)
      H_x = ReLU(C_x^T W_c,x^T X_x)        = ReLU(X W_c C) in the paper (eq 7-9, 15)  (B, L, d_x)
      X_x -> LayerNorm(W_h,x^T H_x + X_x)  = H W_h + X in the paper    (eq 10-12, 16) (B, L, d_x)
    A single head, and layer normalisation after the block (section 4.2).
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

    def forward(self, xs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Joint representations, eq 1-3 / 13: concatenate on the feature axis, FC keeps the width.
        joint_feats = {
            j: self.joint_fc[joint_key(j)](torch.cat([xs[m] for m in j], dim=-1))  # (B, L, w_J)
            for j in self.joints
        }
        out = {}
        for m in self.modalities:
            x = xs[m]  # (B, L, d_m)
            # Joint cross-correlation, eq 4-6 / 14: sum over the joints containing m.
            corr = sum(
                torch.tanh(
                    x @ self.w_joint[f"{m}_{joint_key(j)}"] @ joint_feats[j].transpose(1, 2)  # (B, L, L)
                    / math.sqrt(joint_feats[j].shape[-1])
                )
                for j in self.joints
                if m in j
            )
            # Attention map, eq 7-9 / 15: paper ReLU(X W_c C) with X (d x L); row-major transpose.
            attn = F.relu(corr.transpose(1, 2) @ self.w_c[m].t() @ x)  # (B, L, d_m)
            # Attended features with residual, eq 10-12 / 16, then LayerNorm (section 4.2).
            out[m] = self.norm[m](self.dropout(self.w_h[m].t() @ attn) + x)  # (B, L, d_m)
        return out


class ModalityGate(nn.Module):
    """Gate, eq 17-18, over modalities of different widths (DESIGN.md).

    P_m = W_m X_att,m                      (B, L, d_h)   common width d_h
    g   = softmax_m(P_m), elementwise       (B, L, d_h, |M|); a missing modality's logit is -inf
    X_att = sum_m g_m * P_m                 (B, L, d_h)
    With `gated=False` (Table 4, "w/o multimodal gate") the present modalities are averaged with equal weight.
    Returns X_att and the per-modality weights averaged over L and d_h, (B, |M|), which sum to 1.
    """

    def __init__(self, widths: Mapping[str, int], gate_width: int, gated: bool = True) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in widths)
        self.gated = gated
        self.proj = nn.ModuleDict({m: nn.Linear(widths[m], gate_width) for m in self.modalities})

    def forward(self, xs: Mapping[str, torch.Tensor], present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        projected = torch.stack([self.proj[m](xs[m]) for m in self.modalities], dim=-1)  # (B, L, d_h, |M|)
        mask = present[:, None, None, :]  # (B, 1, 1, |M|)
        if self.gated:
            weights = torch.softmax(projected.masked_fill(~mask, float("-inf")), dim=-1)  # eq 17
        else:
            weights = masked_uniform(present)[:, None, None, :].expand_as(projected)
        fused = (weights * projected.masked_fill(~mask, 0.0)).sum(dim=-1)  # eq 18, (B, L, d_h)
        return fused, weights.mean(dim=(1, 2))  # (B, L, d_h), (B, |M|)


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
        self.classifier = nn.Sequential(
            nn.Linear(config.gate_width, config.classifier_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden, num_classes),
        )

    def forward(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor | None = None) -> FusionOutput:
        mask = presence_mask(inputs, self.modalities, present)  # (B, |M|)
        inputs = self.standardize(inputs)  # per-feature z-scores, (B, L, d_in) each
        xs = {
            m: self.project[m](inputs[m] * mask[:, i, None, None].to(inputs[m].dtype))  # (B, L, d_m)
            for i, m in enumerate(self.modalities)
        }
        if self.bimodal is not None:
            xs = self.bimodal(xs)  # X_{t->av}, X_{a->tv}, X_{v->ta}: (B, L, d_m) each
        if self.trimodal is not None:
            xs = self.trimodal(xs)  # X_att,m: (B, L, d_m) each
        fused, gate = self.gate(xs, mask)  # (B, L, d_h), (B, |M|)
        logits = self.classifier(fused.mean(dim=1))  # pool over L -> (B, C)
        return FusionOutput(logits=logits, gate=gate)
