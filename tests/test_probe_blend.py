"""`model.probe_blend` (issue 22 item 1; docs/model.md "Probe blend"): the model contains a linear probe on its own
pooled inputs, the blend weight chosen on validation, so that on validation it is never below the probe.

The cases are constructed so that no verdict hangs on how a training run went: the wrapped model trains exactly as
without the option (compared weight for weight), the blend's choice is checked against the scores it was chosen
from, and the probe's own predictions are compared with scikit-learn's on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from hjcag.artifacts import load_trained_model
from hjcag.cli import main
from hjcag.data.features_file import FeatureSet
from hjcag.identity import params_identity
from hjcag.model.factory import build_model
from hjcag.model.probe import ProbeBlend
from hjcag.params import ModelConfig, TrainConfig, load_params
from hjcag.train import fit
from hjcag.train.loop import TensorData, predict
from hjcag.train.probe import BLEND_GRID, pooled_inputs
from params_fixtures import TINY_MODEL, TINY_TRAIN, demo_params

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def separable(n: int = 120, seed: int = 0) -> FeatureSet:
    """Text (n, 4, 6) whose step mean tells the class (3 classes), audio (n, 4, 5) noise; half the steps padded."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    text = rng.normal(size=(n, 4, 6)).astype(np.float32)
    text[:, :, 0] += 3.0 * (y[:, None] - 1)
    text[n // 2:, 2:] = 0.0  # padding: the probe pools over the real steps only
    return FeatureSet(utterance_id=np.array([f"u{i}" for i in range(n)]), label=np.array(["x", "y", "z"])[y],
                      group=np.array([f"d{i // 4}" for i in range(n)]),
                      features={"t": text, "a": rng.normal(size=(n, 4, 5)).astype(np.float32)},
                      label_names=("x", "y", "z"))


def config(probe_blend: bool) -> ModelConfig:
    return ModelConfig(seq_len=4, widths={"t": 8, "a": 8, "v": 8}, gate_width=8, classifier_hidden=8,
                       probe_blend=probe_blend)


TRAIN = TrainConfig(epochs=3, batch_size=16, lr=1e-3, patience=3)


def fitted(probe_blend: bool, fs: FeatureSet | None = None) -> fit.FittedModel:
    fs = fs or separable()
    return fit.fit_model("hjcag", fs.subset(np.arange(0, 90)), fs.subset(np.arange(90, 120)), config(probe_blend),
                         TRAIN, seed=3, device=CPU, quiet=True)


def test_the_wrapped_model_trains_exactly_as_without_the_option() -> None:
    plain, blended = fitted(False), fitted(True)
    assert isinstance(blended.model, ProbeBlend)
    inner = {k.removeprefix("model."): v for k, v in blended.model.state_dict().items() if k.startswith("model.")}
    assert inner.keys() == plain.model.state_dict().keys()
    for key, value in plain.model.state_dict().items():
        assert torch.equal(inner[key], value), key
    assert blended.training.history == plain.training.history


def test_the_blend_is_the_best_on_validation_of_a_grid_holding_the_probe_and_the_model() -> None:
    fs = separable()
    result = fitted(True, fs)
    record, model = result.probe, result.model
    assert record is not None and 0.0 in BLEND_GRID and 1.0 in BLEND_GRID
    scores = record["val_weighted_f1"]
    assert scores["blend"] >= max(scores["probe"], scores["model"])
    assert float(model.blend) == pytest.approx(record["blend"]) and bool(model.fitted)
    val = TensorData.from_features(fs.subset(np.arange(90, 120)), result.config)
    logits, _ = predict(model, val, 64, CPU)  # the model as kept answers with the score the blend was chosen by
    own = f1_score(val.targets.numpy(), logits.argmax(dim=1).numpy(), average="weighted")
    assert own == pytest.approx(scores["blend"])


def test_at_blend_zero_the_model_is_scikit_learns_probe_on_the_pooled_inputs() -> None:
    fs = separable()
    train, val = fs.subset(np.arange(0, 90)), fs.subset(np.arange(90, 120))
    result = fitted(True, fs)
    model, chosen = result.model, result.probe["probe"]
    data = {name: TensorData.from_features(part, config(True)) for name, part in (("train", train), ("val", val))}
    x = {name: pooled_inputs(model, d, CPU) for name, d in data.items()}
    # the pooled inputs: each modality's standardised real steps averaged (the second half has 2 real text steps)
    z = model.standardize({"t": torch.from_numpy(val.features["t"])})["t"].double().numpy()
    real = np.abs(val.features["t"]).sum(axis=-1) > 0
    expected = (z * real[..., None]).sum(axis=1) / real.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(x["val"][:, :6], expected, atol=1e-5)
    scaler = StandardScaler().fit(x["train"])
    clf = LogisticRegression(C=chosen["c"], class_weight=None if chosen["class_weight"] == "none" else "balanced",
                             max_iter=2000).fit(scaler.transform(x["train"]), data["train"].targets.numpy())
    model.blend.fill_(0.0)
    logits, _ = predict(model, data["val"], 64, CPU)
    np.testing.assert_array_equal(logits.argmax(dim=1).numpy(), clf.predict(scaler.transform(x["val"])))
    np.testing.assert_allclose(torch.softmax(logits, dim=1).numpy(),
                               clf.predict_proba(scaler.transform(x["val"])), atol=1e-4)


def test_a_missing_modality_pools_to_its_training_mean() -> None:
    model = build_model("hjcag", {"t": 6, "a": 5}, 3, config(True))
    assert isinstance(model, ProbeBlend)
    inputs = {"t": torch.randn(2, 4, 6), "a": torch.randn(2, 4, 5)}
    pooled = model.pooled(inputs, torch.tensor([[True, False], [True, True]]))
    assert torch.equal(pooled[0, 6:], torch.zeros(5)) and not torch.equal(pooled[1, 6:], torch.zeros(5))


def test_off_by_default_and_the_run_identity_of_a_run_without_it_is_unchanged(tmp_path: Path) -> None:
    params = load_params(demo_params(tmp_path / "params.yaml", TINY_MODEL, TINY_TRAIN), "demo")
    assert params.model.probe_blend is False
    assert "probe_blend" not in params_identity(params, "hjcag")["model_config"]
    on = load_params(demo_params(tmp_path / "on.yaml", {**TINY_MODEL, "probe_blend": True}, TINY_TRAIN), "demo")
    assert params_identity(on, "hjcag")["model_config"]["probe_blend"] is True


def test_a_trained_run_reloads_the_blend_and_records_it(tmp_path: Path, features: Path) -> None:
    params = demo_params(tmp_path / "params.yaml", {**TINY_MODEL, "probe_blend": True}, TINY_TRAIN)
    out = tmp_path / "run"
    assert main(["train", "--features", str(features), "--params", str(params), "--profile", "demo",
                 "--out", str(out)]) == 0
    units = sorted(p.parent for p in out.glob("*/result.json"))
    assert units
    for unit in units:
        record = json.loads((unit / "result.json").read_text())["probe_blend"]
        assert set(record) == {"probe", "blend", "val_weighted_f1"}
    model, doc = load_trained_model(out)
    assert doc["model_config"]["probe_blend"] is True
    assert isinstance(model, ProbeBlend) and bool(model.fitted)
