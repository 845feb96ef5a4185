"""Presence and padding masks of every model (docs/model.md, "Masks").

- A missing modality contributes exactly nothing: whatever its input holds (zeros, noise, huge values, NaN), the
  logits of that sample are bit-for-bit the same.
- Padded time steps (all-zero input rows) take no part: appending padding to an utterance changes no logit, and
  padded inputs get no gradient.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hjcag.model.factory import MODEL_NAMES, build_model
from hjcag.model.hjcag import HJCAG
from hjcag.params import MODALITIES, ModelConfig

DIMS = {"t": 9, "a": 8, "v": 7}


def tiny_config(seq_len: int = 5, **overrides: object) -> ModelConfig:
    base = ModelConfig(
        seq_len=seq_len,
        widths={"t": 6, "a": 4, "v": 3},
        gate_width=7,
        classifier_hidden=8,
        mult={"d_model": 8, "heads": 2, "layers": 2},
    )
    return dataclasses.replace(base, **overrides)


def make_model(name: str, config: ModelConfig, dims: dict[str, int] = DIMS) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, dims, 4, config).eval()
    # Non-trivial input statistics, so that the standardizer cannot hide anything either.
    for m in model.standardize.modalities:
        getattr(model.standardize, f"mean_{m}").normal_()
        getattr(model.standardize, f"std_{m}").uniform_(0.5, 2.0)
    return model


def make_inputs(batch: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, seq_len, d, generator=gen) for m, d in DIMS.items()}


HJCAG_VARIANTS = {
    "hjcag": {},
    "hjcag-no_bimodal": {"bimodal": False},
    "hjcag-no_trimodal": {"trimodal": False},
    "hjcag-no_gate": {"gate": False},
}
VARIANTS = [*HJCAG_VARIANTS, *(n for n in MODEL_NAMES if n != "hjcag")]


def model_for(variant: str, seq_len: int = 5) -> torch.nn.Module:
    name = "hjcag" if variant.startswith("hjcag") else variant
    return make_model(name, tiny_config(seq_len, **HJCAG_VARIANTS.get(variant, {})))


@pytest.mark.parametrize("missing", MODALITIES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_missing_modality_contributes_exactly_nothing(variant: str, missing: str) -> None:
    """Random, zero, huge and NaN values of a missing modality give identical logits for that sample."""
    model = model_for(variant)
    inputs = make_inputs(batch=3, seq_len=5)
    column = MODALITIES.index(missing)
    present = torch.ones(3, 3, dtype=torch.bool)
    present[0, column] = False  # sample 0 lacks `missing`
    present[2] = False
    present[2, (column + 1) % 3] = True  # sample 2 has one other modality only
    fills = {
        "random": inputs[missing],
        "zeros": torch.zeros_like(inputs[missing]),
        "large": 1e4 * torch.randn_like(inputs[missing]),
        "nan": torch.full_like(inputs[missing], float("nan")),
    }
    with torch.no_grad():
        logits = {k: model(dict(inputs, **{missing: v}), present).logits for k, v in fills.items()}
    for k in ("zeros", "large", "nan"):
        torch.testing.assert_close(logits[k][[0, 2]], logits["random"][[0, 2]], rtol=0, atol=0, msg=k)
    assert torch.isfinite(logits["random"]).all()
    # Where it is present (sample 1), the modality does count.
    assert not torch.allclose(logits["large"][1], logits["random"][1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_missing_modality_gets_no_gradient_and_training_stays_finite(variant: str) -> None:
    model = model_for(variant).train()
    inputs = {m: x.requires_grad_() for m, x in make_inputs(batch=4, seq_len=5).items()}
    present = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    torch.manual_seed(0)
    out = model(inputs, present)
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    for i, m in enumerate(MODALITIES):
        grad = inputs[m].grad
        assert grad is not None and torch.isfinite(grad).all()
        assert (grad[~present[:, i]] == 0).all(), m
        assert (grad[present[:, i]] != 0).any(), m
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_hjcag_missing_modality_stream_is_zero_after_every_level() -> None:
    model = model_for("hjcag")
    inputs = make_inputs(batch=2, seq_len=5)
    present = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    seen: dict[str, dict[str, torch.Tensor]] = {}
    assert isinstance(model, HJCAG) and model.bimodal is not None and model.trimodal is not None
    model.bimodal.register_forward_hook(lambda mod, args, out: seen.__setitem__("bimodal", out))
    model.trimodal.register_forward_hook(lambda mod, args, out: seen.__setitem__("trimodal", out))
    model.project["v"].register_forward_hook(lambda mod, args, out: seen.__setitem__("projection", {"v": out}))
    with torch.no_grad():
        model(inputs, present)
    assert (seen["projection"]["v"][0] != 0).any()  # act(bias): the projection itself is not zero ...
    for level in ("bimodal", "trimodal"):  # ... but the stream that leaves it is
        assert (seen[level]["v"][0] == 0).all(), level
        assert (seen[level]["v"][1] != 0).any(), level


def test_hjcag_pair_joints_with_a_missing_member_are_dropped() -> None:
    """With v missing, the t-v and a-v joints take no part; the t-a joint and the top joint do."""
    model = model_for("hjcag")
    assert isinstance(model, HJCAG) and model.bimodal is not None and model.trimodal is not None
    inputs = make_inputs(batch=1, seq_len=5)
    present = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        before = model(inputs, present).logits
        for key in ("tv", "av"):
            model.bimodal.joint_fc[key][0].weight.normal_()
            model.bimodal.joint_fc[key][0].bias.normal_()
        for key in ("t_tv", "v_tv", "a_av", "v_av"):
            model.bimodal.w_joint[key].normal_()
        torch.testing.assert_close(model(inputs, present).logits, before, rtol=0, atol=0)
        model.bimodal.joint_fc["ta"][0].bias.normal_()
        assert not torch.allclose(model(inputs, present).logits, before)


def padded(inputs: dict[str, torch.Tensor], lengths: dict[str, list[int]], seq_len: int) -> dict[str, torch.Tensor]:
    """Sample b of modality m keeps its first lengths[m][b] steps, zeros after, in a (B, seq_len, d) tensor."""
    out = {}
    for m, x in inputs.items():
        y = torch.zeros(x.shape[0], seq_len, x.shape[2])
        for b, n in enumerate(lengths[m]):
            y[b, :n] = x[b, :n]
        out[m] = y
    return out


def _shorter(model: torch.nn.Module, variant: str, seq_len: int) -> torch.nn.Module:
    """The same model for sequences of `seq_len` steps: W_c and W_h are the top-left seq_len x seq_len blocks."""
    short = model_for(variant, seq_len)
    state = {}
    for k, v in model.state_dict().items():
        is_positional = (".w_c." in k or ".w_h." in k) and v.dim() == 2
        state[k] = v[:seq_len, :seq_len] if is_positional else v
    short.load_state_dict(state)
    return short.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_appending_padding_changes_no_logit(variant: str) -> None:
    """Utterances of 2-5 steps (per modality: text shorter than audio/visual) padded to L=5 and to L=9 give the
    same logits: padded steps take no part in correlation, mixing, attention, gate or pooling."""
    long_model = model_for(variant, seq_len=9)
    short_model = _shorter(long_model, variant, 5)
    raw = make_inputs(batch=4, seq_len=5, seed=3)
    lengths = {"t": [2, 5, 3, 1], "a": [4, 5, 3, 5], "v": [4, 5, 5, 2]}
    with torch.no_grad():
        short = short_model(padded(raw, lengths, 5)).logits
        long = long_model(padded(raw, lengths, 9)).logits
    torch.testing.assert_close(long, short)
    # Control: without the top-left-block correspondence (HJCAG) or with content instead of padding, they differ.
    extended = padded(raw, lengths, 9)
    extended["a"][:, 5:] = 1.0
    with torch.no_grad():
        assert not torch.allclose(long_model(extended).logits, long)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padded_steps_get_no_gradient(variant: str) -> None:
    model = model_for(variant).train()
    lengths = {"t": [2, 5, 3], "a": [5, 5, 3], "v": [5, 4, 3]}
    inputs = {m: x.requires_grad_() for m, x in padded(make_inputs(batch=3, seq_len=5), lengths, 5).items()}
    torch.manual_seed(0)
    model(inputs).logits.sum().backward()
    for m, x in inputs.items():
        assert x.grad is not None
        for b, n in enumerate(lengths[m]):
            assert (x.grad[b, n:] == 0).all(), (m, b)
            assert (x.grad[b, :n] != 0).any(), (m, b)


def test_hjcag_streams_are_zero_at_padded_steps_and_the_pool_is_their_mean() -> None:
    """Text padded after 2 steps, visual after 3, audio after 4: each stream is zero at its padded steps after every
    level, step 4 (padding in every modality) is zero after the gate, and the classifier sees the mean of the
    fused sequence over steps 0..3 only."""
    model = model_for("hjcag")
    assert isinstance(model, HJCAG) and model.bimodal is not None and model.trimodal is not None
    lengths = {"t": [2], "a": [4], "v": [3]}
    inputs = padded(make_inputs(batch=1, seq_len=5), lengths, 5)
    seen: dict[str, object] = {}
    model.bimodal.register_forward_hook(lambda mod, args, out: seen.__setitem__("bimodal", out))
    model.trimodal.register_forward_hook(lambda mod, args, out: seen.__setitem__("trimodal", out))
    model.gate.register_forward_hook(lambda mod, args, out: seen.__setitem__("gate", out))
    model.classifier.register_forward_hook(lambda mod, args, out: seen.__setitem__("pooled", args[0]))
    with torch.no_grad():
        model(inputs)
    for level in ("bimodal", "trimodal"):
        streams = seen[level]
        assert isinstance(streams, dict)
        for m, (n,) in lengths.items():
            assert (streams[m][0, n:] == 0).all(), (level, m)
            assert (streams[m][0, :n] != 0).any(dim=-1).all(), (level, m)
    fused, gate = seen["gate"]  # type: ignore[misc]
    assert (fused[0, 4] == 0).all()
    torch.testing.assert_close(seen["pooled"], fused[:, :4].mean(dim=1))
    torch.testing.assert_close(gate.sum(dim=1), torch.ones(1))
