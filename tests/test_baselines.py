"""Baselines (concat, late, MulT): every modality subset, gradients, gate, masking, determinism."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from hjcag.errors import ConfigError
from hjcag.model.baselines import ConcatFusion, LateFusion, MulT
from hjcag.model.factory import build_model
from hjcag.model_catalog import BASELINES
from hjcag.params import ModelConfig

SUBSETS = [s for n in (1, 2, 3) for s in itertools.combinations(("t", "a", "v"), n)]
SUBSET_IDS = ["".join(s) for s in SUBSETS]
PAPER_DIMS = {"t": 1024, "a": 1582, "v": 512}
TINY_DIMS = {"t": 9, "a": 8, "v": 7}


def tiny_config(**overrides: object) -> ModelConfig:
    base = ModelConfig(
        seq_len=5,
        widths={"t": 6, "a": 4, "v": 3},
        gate_width=7,
        classifier_hidden=8,
        mult={"d_model": 8, "heads": 2, "layers": 2},
    )
    return dataclasses.replace(base, **overrides)


def make_inputs(dims: dict[str, int], batch: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, seq_len, d, generator=gen) for m, d in dims.items()}


def make_model(name: str, dims: dict[str, int], config: ModelConfig, classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, dims, classes, config)


def test_build_model_returns_the_baseline_classes() -> None:
    config = tiny_config()
    assert isinstance(build_model("concat", TINY_DIMS, 4, config), ConcatFusion)
    assert isinstance(build_model("late", TINY_DIMS, 4, config), LateFusion)
    assert isinstance(build_model("mult", TINY_DIMS, 4, config), MulT)


@pytest.mark.parametrize("subset", SUBSETS, ids=SUBSET_IDS)
@pytest.mark.parametrize("name", BASELINES)
def test_runs_on_every_subset_at_tiny_dims(name: str, subset: tuple[str, ...]) -> None:
    dims = {m: TINY_DIMS[m] for m in subset}
    model = make_model(name, dims, tiny_config())
    out = model(make_inputs(dims, batch=3, seq_len=5))
    assert out.logits.shape == (3, 4)
    assert out.gate.shape == (3, len(subset))
    assert torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.gate.sum(dim=1), torch.ones(3))
    F.cross_entropy(out.logits, torch.tensor([0, 1, 3])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} is unused with modalities {subset}"
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("subset", SUBSETS, ids=SUBSET_IDS)
@pytest.mark.parametrize("name", BASELINES)
def test_runs_on_every_subset_at_paper_dims(name: str, subset: tuple[str, ...]) -> None:
    dims = {m: PAPER_DIMS[m] for m in subset}
    model = make_model(name, dims, ModelConfig(seq_len=30, widths=dict(PAPER_DIMS)), classes=6)
    out = model(make_inputs(dims, batch=2, seq_len=30))
    assert out.logits.shape == (2, 6)
    assert out.gate.shape == (2, len(subset))
    torch.testing.assert_close(out.gate.sum(dim=1), torch.ones(2))
    F.cross_entropy(out.logits, torch.tensor([0, 5])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("name", BASELINES)
def test_every_parameter_gets_a_nonzero_finite_gradient_with_all_modalities(name: str) -> None:
    model = make_model(name, TINY_DIMS, tiny_config())
    out = model(make_inputs(TINY_DIMS, batch=4, seq_len=5))
    F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} received a zero gradient"


@pytest.mark.parametrize("name", BASELINES)
def test_gate_is_uniform_over_present_modalities_and_zero_for_missing(name: str) -> None:
    model = make_model(name, TINY_DIMS, tiny_config()).eval()
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.bool)
    out = model(make_inputs(TINY_DIMS, batch=4, seq_len=5), present)
    torch.testing.assert_close(out.gate.sum(dim=1), torch.ones(4))
    assert (out.gate[~present] == 0).all()
    expected = torch.tensor([[1 / 3] * 3, [0.5, 0.0, 0.5], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    torch.testing.assert_close(out.gate, expected)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("missing", ["t", "a", "v"])
@pytest.mark.parametrize("name", BASELINES)
def test_a_missing_modality_does_not_change_that_samples_logits(name: str, missing: str) -> None:
    model = make_model(name, TINY_DIMS, tiny_config()).eval()
    inputs = make_inputs(TINY_DIMS, batch=3, seq_len=5)
    column = ("t", "a", "v").index(missing)
    present = torch.ones(3, 3, dtype=torch.bool)
    present[0, column] = False  # sample 0 lacks `missing`
    present[2] = False
    present[2, column] = True  # sample 2 has only `missing`
    before = model(inputs, present).logits
    noisy = dict(inputs)
    noisy[missing] = inputs[missing] + 100 * torch.randn_like(inputs[missing])
    after = model(noisy, present).logits
    torch.testing.assert_close(after[0], before[0])  # missing there: no influence
    assert not torch.allclose(after[1], before[1])  # present there: it matters
    assert not torch.allclose(after[2], before[2])
    # NaN placeholders for a missing modality must not leak either.
    nan_filled = dict(inputs)
    nan_filled[missing] = inputs[missing].clone()
    nan_filled[missing][0] = float("nan")
    torch.testing.assert_close(model(nan_filled, present).logits[0], before[0])


@pytest.mark.parametrize("name", BASELINES)
def test_masking_a_modality_equals_dropping_its_contribution(name: str) -> None:
    """Two samples that differ only in a masked modality get identical logits."""
    model = make_model(name, TINY_DIMS, tiny_config()).eval()
    inputs = make_inputs(TINY_DIMS, batch=1, seq_len=5)
    pair = {m: x.repeat(2, 1, 1) for m, x in inputs.items()}
    pair["v"][1] = torch.randn(5, TINY_DIMS["v"])
    out = model(pair, torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool))
    torch.testing.assert_close(out.logits[0], out.logits[1])


@pytest.mark.parametrize("name", BASELINES)
def test_eval_mode_is_deterministic_and_train_mode_uses_dropout(name: str) -> None:
    model = make_model(name, TINY_DIMS, tiny_config(dropout=0.5))
    inputs = make_inputs(TINY_DIMS, batch=4, seq_len=5)
    model.eval()
    first = model(inputs).logits
    torch.testing.assert_close(model(inputs).logits, first, rtol=0, atol=0)
    model.train()
    torch.manual_seed(1)
    noisy = model(inputs).logits
    assert not torch.allclose(noisy, first)


def test_late_fusion_softmax_is_the_average_of_the_unimodal_probabilities() -> None:
    model = make_model("late", TINY_DIMS, tiny_config()).eval()
    assert isinstance(model, LateFusion)
    inputs = make_inputs(TINY_DIMS, batch=2, seq_len=5)
    present = torch.tensor([[1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    probs = torch.softmax(model(inputs, present).logits, dim=-1)
    unimodal = {
        m: torch.softmax(model.heads[m](model.project[m](inputs[m]).mean(dim=1)), dim=-1) for m in ("t", "a", "v")
    }
    torch.testing.assert_close(probs[0], (unimodal["t"][0] + unimodal["a"][0] + unimodal["v"][0]) / 3)
    torch.testing.assert_close(probs[1], (unimodal["t"][1] + unimodal["v"][1]) / 2)


def test_mult_builds_one_cross_modal_transformer_per_ordered_pair() -> None:
    full = make_model("mult", TINY_DIMS, tiny_config())
    assert isinstance(full, MulT)
    assert set(full.cross) == {"at", "vt", "ta", "va", "tv", "av"}
    assert all(len(block.layers) == 2 for block in full.cross.values())
    assert full.cross["at"].layers[0].attn.num_heads == 2
    single = make_model("mult", {"a": 8}, tiny_config())
    assert set(single.cross) == {"aa"}  # self-attention when alone


def test_mult_with_one_present_modality_uses_only_that_modality() -> None:
    """A trimodal MulT whose samples have only text depends on the text and nothing else."""
    model = make_model("mult", TINY_DIMS, tiny_config()).eval()
    inputs = make_inputs(TINY_DIMS, batch=2, seq_len=5)
    only_t = torch.tensor([[1, 0, 0], [1, 0, 0]], dtype=torch.bool)
    base = model(inputs, only_t).logits
    other = make_inputs(TINY_DIMS, batch=2, seq_len=5, seed=7)
    changed = model(dict(other, t=inputs["t"]), only_t).logits
    torch.testing.assert_close(changed, base)
    assert not torch.allclose(model(dict(inputs, t=other["t"]), only_t).logits, base)


def test_mult_rejects_heads_that_do_not_divide_d_model() -> None:
    with pytest.raises(ConfigError, match="multiple of heads"):
        MulT(TINY_DIMS, 4, tiny_config(mult={"d_model": 10, "heads": 3, "layers": 1}))
    with pytest.raises(ConfigError, match="d_model, heads and layers"):
        MulT(TINY_DIMS, 4, tiny_config(mult={"d_model": 8}))
