"""Utterance vectors read as one step (docs/model.md, "Inputs"): the same function as the old path, which repeated
each vector L times, at 1/L of the work, for every model where the L copies cannot be told apart.

- `concat` and `late` project each step and take the mean over the steps: L copies and one step give the same
  logits with the very same weights.
- `hjcag`: its W_c, W_h are L x L *positional* matrices. Over L identical steps, W_c acts through the sum of its
  entries only, and W_h scales the attention path of step i by its column sum i. When those column sums are equal
  the L steps stay identical through both levels and the one-step model with w_c = sum(W_c), w_h = that column sum
  gives the same logits (tested below for every Table 4 switch and modality subset). Otherwise the tiled model's L
  steps differ only by L fixed rescalings of one residual path (no temporal information: the steps are copies),
  which the one-step model, trained on what it serves, does not have: a different, smaller parametrisation.
- `mult` adds sinusoidal positions, so L copies become L different steps: its one-step function differs too.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from hjcag.artifacts import MODEL_CONFIG_FILE, load_trained_model, read_json, trained_model_config, weights_path
from hjcag.data.features_file import FeatureSet, load_features
from hjcag.model.factory import build_model
from hjcag.params import ModelConfig, load_params
from hjcag.serve.predictor import Predictor
from hjcag.serve.request import RequestError
from hjcag.train.fit import trained_config
from hjcag.train.loop import TensorData, predict
from hjcag.train.run import train_and_evaluate

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny models: torch on one thread (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]

L = 6
DIMS = {"t": 5, "a": 4, "v": 3}
WIDTHS = {"t": 8, "a": 6, "v": 4}
CLASSES = 3


def config(seq_len: int, **changes: object) -> ModelConfig:
    return dataclasses.replace(ModelConfig(seq_len=seq_len, widths=dict(WIDTHS), gate_width=8, classifier_hidden=8,
                                           mult={"d_model": 8, "heads": 2, "layers": 1}), **changes)


def vectors(modalities: tuple[str, ...], batch: int = 5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {m: torch.randn(batch, 1, DIMS[m], generator=gen) for m in modalities}


def tiled(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the features loader built before: each vector repeated at every one of L steps."""
    return {m: x.expand(-1, L, -1).contiguous() for m, x in inputs.items()}


def presence(modalities: tuple[str, ...], batch: int = 5) -> torch.Tensor:
    """Every modality present, then samples with one or two missing (never all)."""
    rows = [[True] * len(modalities)] + [[j != i % len(modalities) or len(modalities) == 1
                                          for j in range(len(modalities))] for i in range(batch - 1)]
    return torch.tensor(rows)


def outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor], present: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(inputs, present)
    return out.logits, out.gate


SUBSETS = [s for k in (1, 2, 3) for s in itertools.combinations(("t", "a", "v"), k)]


@pytest.mark.parametrize("name", ["concat", "late"])
@pytest.mark.parametrize("modalities", SUBSETS, ids="".join)
def test_pooling_baselines_give_the_same_logits_with_the_same_weights(name: str, modalities: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    old = build_model(name, {m: DIMS[m] for m in modalities}, CLASSES, config(L)).eval()
    new = build_model(name, {m: DIMS[m] for m in modalities}, CLASSES, config(1)).eval()
    new.load_state_dict(old.state_dict())  # no weight depends on the step count
    inputs, present = vectors(modalities), presence(modalities)
    for got, want in zip(outputs(new, inputs, present), outputs(old, tiled(inputs), present), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def one_step_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HJCAG's weights for one step: w_c = the sum of W_c's entries, w_h = W_h's (common) column sum."""
    out = {}
    for key, value in state.items():
        if ".w_c." in key:
            out[key] = value.sum().reshape(1, 1)
        elif ".w_h." in key:
            out[key] = value.sum(dim=0)[:1].reshape(1, 1)
        else:
            out[key] = value
    return out


def equal_column_sums(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """W_h with every column summing to the same value (its mean column sum); the other weights as they are."""
    return {k: v - v.sum(dim=0, keepdim=True) / L + v.sum() / L**2 if ".w_h." in k else v for k, v in state.items()}


SWITCHES = [{}, {"bimodal": False}, {"trimodal": False}, {"gate": False}]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(s) or "paper")
@pytest.mark.parametrize("modalities", SUBSETS, ids="".join)
def test_hjcag_one_step_is_the_tiled_model_with_position_free_mixing(switches: dict[str, bool],
                                                                     modalities: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    dims = {m: DIMS[m] for m in modalities}
    old = build_model("hjcag", dims, CLASSES, config(L, **switches)).eval()
    old.load_state_dict(equal_column_sums(old.state_dict()))
    new = build_model("hjcag", dims, CLASSES, config(1, **switches)).eval()
    new.load_state_dict(one_step_state(old.state_dict()))
    inputs, present = vectors(modalities), presence(modalities)
    for got, want in zip(outputs(new, inputs, present), outputs(old, tiled(inputs), present), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_hjcag_with_unequal_column_sums_is_another_function() -> None:
    """What the docs say: W_h's column sums tell the L copies apart, so the old tiled model is not one-step in
    general (the one-step model is trained, and served, as its own parametrisation)."""
    torch.manual_seed(0)
    old = build_model("hjcag", DIMS, CLASSES, config(L)).eval()
    new = build_model("hjcag", DIMS, CLASSES, config(1)).eval()
    new.load_state_dict(one_step_state(old.state_dict()))
    inputs, present = vectors(("t", "a", "v")), presence(("t", "a", "v"))
    assert not torch.allclose(outputs(new, inputs, present)[0], outputs(old, tiled(inputs), present)[0], atol=1e-3)


def test_the_model_is_built_for_the_steps_of_its_features() -> None:
    """model.seq_len is L for sequences; features of utterance vectors make a one-step model (W_c, W_h 1 x 1)."""
    n = 4
    base = dict(utterance_id=np.array([f"u{i}" for i in range(n)]), label=np.array(["a", "b"] * 2),
                group=np.array(["g"] * n))
    sequences = FeatureSet(**base, features={"t": np.ones((n, L, 5), np.float32)})
    one_step = FeatureSet(**base, features={"t": np.ones((n, 1, 5), np.float32)}, vectors=("t",))
    params_model = config(L)
    assert trained_config(params_model, sequences) is params_model  # sequences: exactly as before
    assert trained_config(params_model, one_step) == config(1)
    model = build_model("hjcag", {"t": 5}, CLASSES, trained_config(params_model, one_step))
    assert model.trimodal.w_c["t"].shape == (1, 1)


# ------------------------------------------------------------------ trained on vectors, served as offline evaluation


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 2-fold HJCAG run on a features file of utterance vectors only (text and audio, (N, d) each)."""
    root = tmp_path_factory.mktemp("vectors")
    rng = np.random.default_rng(0)
    n, labels = 40, np.array(["neutral", "joy", "anger"])
    y = rng.integers(0, 3, n)
    features = root / "vectors.npz"
    np.savez(features, utterance_id=np.array([f"u{i:02d}" for i in range(n)]), label=labels[y],
             group=np.array([f"dia{i // 4}" for i in range(n)]),
             text=(rng.normal(size=(n, DIMS["t"])) + y[:, None]).astype(np.float32),
             audio=(rng.normal(size=(n, DIMS["a"])) - y[:, None]).astype(np.float32))
    params = load_params(ROOT / "params.yaml", "demo").with_overrides(
        model={"seq_len": L, "widths": dict(WIDTHS), "gate_width": 8, "classifier_hidden": 8},
        train={"epochs": 2, "folds": 2, "batch_size": 16, "device": "cpu", "num_threads": 1},
    )
    fs = load_features(features, params.model.seq_len, tuple(labels))
    train_and_evaluate(fs, params, ("t", "a"), "hjcag", root / "run", quiet=True)
    return root / "run", features


def test_a_model_trained_on_vectors_records_one_step(vector_run: tuple[Path, Path]) -> None:
    run_dir, _ = vector_run
    doc = read_json(run_dir / MODEL_CONFIG_FILE)
    assert doc["seq_len"] == 1 and doc["model_config"]["seq_len"] == 1  # params said L = 6: for sequences
    model, _ = load_trained_model(run_dir)
    assert model.bimodal.w_c["t"].shape == (1, 1)


def test_the_endpoint_answers_a_vector_as_offline_evaluation_does(vector_run: tuple[Path, Path]) -> None:
    """A (d,) vector or a [1, d] array per modality: the probabilities offline evaluation gives the same model on
    the same features file (loaded, collated and run by the training code: hjcag.train.loop.predict)."""
    run_dir, features = vector_run
    doc = read_json(run_dir / MODEL_CONFIG_FILE)
    weights = weights_path(doc, None, run_dir)
    model, _ = load_trained_model(run_dir)
    fs = load_features(features, seq_len=L, label_names=tuple(doc["label_names"]))
    logits, _ = predict(model, TensorData.from_features(fs, trained_model_config(doc, Path(weights).parent.name)),
                        64, torch.device("cpu"))
    offline = torch.softmax(logits, dim=1).numpy()
    predictor = Predictor.from_run(run_dir)
    with np.load(features) as raw:
        text, audio = raw["text"], raw["audio"]
    for i in (0, 7, 31):
        for body in ({"features": {"text": text[i].tolist(), "audio": audio[i].tolist()}},
                     {"features": {"text": text[i][None].tolist(), "audio": audio[i][None].tolist()}}):
            answer = predictor.predict(body)
            served = np.array([answer["probabilities"][label] for label in doc["label_names"]])
            np.testing.assert_allclose(served, offline[i], atol=1e-6)
    with pytest.raises(RequestError, match=r"features.text has 3 time steps, but this model reads one step per "
                                           r"utterance .*send its vector of 5 numbers, or a \[1, 5\] array"):
        predictor.predict({"features": {"text": np.tile(text[0], (3, 1)).tolist()}})
