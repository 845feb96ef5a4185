"""HJCAG model: the joint cross-attention block against a hand-written reference, gradients, gate, Table 4."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from hjcag.model.factory import build_model
from hjcag.model.hjcag import HJCAG, JointCrossAttention
from hjcag.model.table4 import TABLE4
from hjcag.params import ModelConfig

PAPER_DIMS = {"t": 1024, "a": 1582, "v": 512}


def tiny_config(**overrides: object) -> ModelConfig:
    base = ModelConfig(seq_len=5, widths={"t": 6, "a": 4, "v": 3}, gate_width=7, classifier_hidden=8)
    return dataclasses.replace(base, **overrides)


def tiny_inputs(batch: int = 3, seq_len: int = 5, dims: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    dims = dims or {"t": 9, "a": 8, "v": 7}
    gen = torch.Generator().manual_seed(0)
    return {m: torch.randn(batch, seq_len, d, generator=gen) for m, d in dims.items()}


def reference_block(block: JointCrossAttention, xs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Equations 1-3, 4-6, 7-9 and 10-12 written in the paper's column layout (features x time), per sample."""
    outputs: dict[str, list[torch.Tensor]] = {m: [] for m in block.modalities}
    batch = next(iter(xs.values())).shape[0]
    for b in range(batch):
        cols = {m: xs[m][b].T for m in block.modalities}  # X_m in R^{d_m x L}
        joints = {}
        for j in block.joints:
            fc = block.joint_fc["".join(j)][0]
            stacked = torch.cat([cols[m] for m in j], dim=0)  # [X_x; X_y] in R^{(d_x + d_y) x L}
            joints[j] = torch.relu(fc.weight @ stacked + fc.bias[:, None])  # eq 1-3
        for m in block.modalities:
            x = cols[m]
            c = sum(  # eq 4: C' = sum_J tanh(X^T W J / sqrt(d_J))
                torch.tanh(x.T @ block.w_joint[f"{m}_{''.join(j)}"] @ joints[j] / math.sqrt(joints[j].shape[0]))
                for j in block.joints
                if m in j
            )
            h = torch.relu(x @ block.w_c[m] @ c)  # eq 7: H' = ReLU(X W_c C'), d_m x L
            attended = h @ block.w_h[m] + x  # eq 10: X_{m->} = H' W_h + X
            norm = block.norm[m]
            out = F.layer_norm(attended.T, (x.shape[0],), norm.weight, norm.bias, norm.eps)
            outputs[m].append(out)
    return {m: torch.stack(v) for m, v in outputs.items()}


@pytest.mark.parametrize("modalities", [("t", "a"), ("t", "a", "v")])
def test_joint_cross_attention_matches_handwritten_equations(modalities: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    widths = {"t": 6, "a": 4, "v": 3}
    widths = {m: widths[m] for m in modalities}
    pairs = [(x, y) for i, x in enumerate(modalities) for y in modalities[i + 1 :]]
    block = JointCrossAttention(widths, pairs, seq_len=5).eval()
    # Non-trivial LayerNorm parameters so the reference checks them too.
    for norm in block.norm.values():
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    xs = {m: torch.randn(2, 5, widths[m]) for m in modalities}
    got = block(xs)
    want = reference_block(block, xs)
    for m in modalities:
        assert got[m].shape == (2, 5, widths[m])
        torch.testing.assert_close(got[m], want[m], rtol=1e-5, atol=1e-5)


def test_joint_cross_attention_is_not_the_identity() -> None:
    """The attention path contributes: output differs from LayerNorm(X) alone."""
    torch.manual_seed(1)
    block = JointCrossAttention({"t": 6, "a": 4}, [("t", "a")], seq_len=5).eval()
    xs = {"t": torch.randn(2, 5, 6), "a": torch.randn(2, 5, 4)}
    out = block(xs)
    assert not torch.allclose(out["t"], block.norm["t"](xs["t"]), atol=1e-4)


def test_forward_shapes_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    inputs = tiny_inputs()
    model = HJCAG({m: x.shape[-1] for m, x in inputs.items()}, 4, tiny_config())
    out = model(inputs)
    assert out.logits.shape == (3, 4)
    assert out.gate.shape == (3, 3)
    F.cross_entropy(out.logits, torch.tensor([0, 1, 2])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} received a zero gradient"


def test_gate_weights_sum_to_one_and_respect_masks() -> None:
    torch.manual_seed(0)
    inputs = tiny_inputs(batch=4)
    model = HJCAG({m: x.shape[-1] for m, x in inputs.items()}, 4, tiny_config()).eval()
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.bool)
    out = model(inputs, present)
    torch.testing.assert_close(out.gate.sum(dim=1), torch.ones(4))
    assert (out.gate[~present] == 0).all()
    assert (out.gate[present] > 0).all()
    assert torch.isfinite(out.logits).all()


def test_missing_modality_values_do_not_change_the_prediction() -> None:
    torch.manual_seed(0)
    inputs = tiny_inputs(batch=2)
    model = HJCAG({m: x.shape[-1] for m, x in inputs.items()}, 4, tiny_config()).eval()
    present = torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.bool)
    before = model(inputs, present).logits
    noisy = dict(inputs, a=inputs["a"] + 100 * torch.randn_like(inputs["a"]))
    after = model(noisy, present).logits
    torch.testing.assert_close(after[0], before[0])  # audio was missing for sample 0
    assert not torch.allclose(after[1], before[1])  # and present for sample 1


def test_a_sample_without_any_modality_is_rejected() -> None:
    inputs = tiny_inputs(batch=2)
    model = HJCAG({m: x.shape[-1] for m, x in inputs.items()}, 4, tiny_config())
    with pytest.raises(ValueError, match="at least one"):
        model(inputs, torch.tensor([[0, 0, 0], [1, 1, 1]], dtype=torch.bool))


def test_without_gate_the_weights_are_uniform_over_present_modalities() -> None:
    inputs = tiny_inputs(batch=2)
    model = HJCAG({m: x.shape[-1] for m, x in inputs.items()}, 4, tiny_config(gate=False)).eval()
    out = model(inputs, torch.tensor([[1, 1, 1], [1, 0, 1]], dtype=torch.bool))
    torch.testing.assert_close(out.gate, torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.0, 0.5]]))


def test_layer_switches_remove_their_modules() -> None:
    dims = {"t": 9, "a": 8, "v": 7}
    full = HJCAG(dims, 4, tiny_config())
    assert full.bimodal is not None and full.trimodal is not None
    assert set(full.bimodal.joints) == {("t", "a"), ("t", "v"), ("a", "v")}
    assert full.trimodal.joints == (("t", "a", "v"),)
    flat = HJCAG(dims, 4, tiny_config(bimodal=False, trimodal=False))
    assert flat.bimodal is None and flat.trimodal is None
    single = HJCAG({"a": 8}, 4, tiny_config())
    assert single.bimodal is not None and single.bimodal.joints == (("a",),)  # the self-joint


@pytest.mark.parametrize("row", TABLE4, ids=[r.slug for r in TABLE4])
def test_every_table4_configuration_runs_at_paper_dimensions(row) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    config = dataclasses.replace(ModelConfig(seq_len=30, widths=dict(PAPER_DIMS)), **row.model_overrides)
    dims = {m: PAPER_DIMS[m] for m in row.modalities}
    model = build_model("hjcag", dims, 6, config)
    inputs = {m: torch.randn(2, 30, d) for m, d in dims.items()}
    out = model(inputs)
    assert out.logits.shape == (2, 6)
    assert out.gate.shape == (2, len(row.modalities))
    torch.testing.assert_close(out.gate.sum(dim=1), torch.ones(2))
    F.cross_entropy(out.logits, torch.tensor([0, 5])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
