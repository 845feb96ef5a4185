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

from hjcag.artifacts import BASE, CONTEXT, load_trained_model, trained_model_config
from hjcag.cli import main
from hjcag.data.features_file import FeatureSet, save_features
from hjcag.identity import params_identity
from hjcag.model.context import ConversationContext
from hjcag.model.factory import build_model
from hjcag.model.probe import ProbeBlend
from hjcag.params import ModelConfig, TrainConfig, load_params
from hjcag.serve.predictor import Predictor
from hjcag.train import fit
from hjcag.train.loop import FoldTraining, TensorData, make_optimizer, predict
from hjcag.train.probe import BLEND_GRID, pooled_inputs
from params_fixtures import TINY_CONTEXT_MODEL, TINY_MODEL, TINY_TRAIN, demo_params

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


def config(probe_blend: bool, context: str = "none") -> ModelConfig:
    return ModelConfig(seq_len=4, widths={"t": 8, "a": 8, "v": 8}, gate_width=8, classifier_hidden=8,
                       probe_blend=probe_blend, context=context, context_window=3)


def in_dialogues(fs: FeatureSet, turns: int = 4) -> FeatureSet:
    """`fs` as dialogues of `turns` utterances (two speakers, in order): what conversation context reads."""
    n = len(fs.utterance_id)
    return FeatureSet(utterance_id=fs.utterance_id, label=fs.label, group=fs.group, features=fs.features,
                      speaker=np.array(["A", "B"] * (n // 2)), order=(np.arange(n) % turns).astype(np.float64),
                      label_names=fs.label_names)


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


def context_fitted(probe_blend: bool, monkeypatch: pytest.MonkeyPatch) -> fit.FittedModel:
    """A warm-started GRU context model, its context stage kept whatever validation says (the rule is forced)."""
    fs = in_dialogues(separable())
    monkeypatch.setattr(fit, "context_beats_base", lambda *stages: True)
    return fit.fit_model("hjcag", fs.subset(np.arange(0, 88)), fs.subset(np.arange(88, 120)),
                         config(probe_blend, "gru"), TrainConfig(epochs=3, batch_size=16, lr=1e-3, patience=3,
                                                                 context_warm_start=True),
                         seed=3, device=CPU, quiet=True)


def test_with_context_the_blend_wraps_the_context_model_which_trains_as_without_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plain, blended = context_fitted(False, monkeypatch), context_fitted(True, monkeypatch)
    assert isinstance(blended.model, ProbeBlend) and isinstance(blended.model.model, ConversationContext)
    for stage in (BASE, CONTEXT):  # stage 2 reads the base alone, not stage 1's blend
        assert blended.stages[stage].history == plain.stages[stage].history, stage
    assert blended.probe is not None and blended.probe["val_weighted_f1"]["model"] == pytest.approx(
        plain.training.at_best_epoch("val_weighted_f1"))  # the blend is fitted to the context model
    val = TensorData.from_features(in_dialogues(separable()).subset(np.arange(88, 120)), blended.config)
    blended.model.fitted.fill_(False)  # the model alone: exactly the context model trained without the option
    alone, _ = predict(blended.model, val, 16, CPU)
    expected, _ = predict(plain.model, val, 16, CPU)
    torch.testing.assert_close(alone, expected, rtol=0, atol=0)


def test_the_keep_rule_compares_what_each_stage_delivers() -> None:
    def stage(f1: float) -> FoldTraining:
        return FoldTraining({}, 1, 1.0, 1, False, [{"epoch": 1, "val_loss": 1.0, "val_weighted_f1": f1}])

    def probe(blend: float) -> dict[str, dict[str, float]]:
        return {"val_weighted_f1": {"model": 0.0, "probe": 0.0, "blend": blend}}

    assert fit.context_beats_base(stage(0.5), stage(0.6))
    assert not fit.context_beats_base(stage(0.5), stage(0.6), probe(0.7), probe(0.65))  # the blends decide
    assert fit.context_beats_base(stage(0.6), stage(0.5), probe(0.6), probe(0.61))


def test_a_blended_context_model_gives_its_context_layer_its_own_learning_rate() -> None:
    model = build_model("hjcag", {"t": 6}, 3, config(True, "gru"))
    assert isinstance(model, ProbeBlend) and isinstance(model.model, ConversationContext)
    groups = make_optimizer(model, TrainConfig(lr=1e-3, context_lr=1e-2)).param_groups
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.model.base.parameters()}


def test_a_blended_context_run_reloads_and_is_served_with_its_context(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fit, "context_beats_base", lambda *stages: True)  # the context layer kept in every fold
    params = demo_params(tmp_path / "params.yaml", {**TINY_CONTEXT_MODEL, "probe_blend": True},
                         {**TINY_TRAIN, "context_warm_start": True})
    full = in_dialogues(separable())
    fs = FeatureSet(utterance_id=full.utterance_id, label=full.label, group=full.group,
                    features={"t": full.features["t"]}, speaker=full.speaker, order=full.order,
                    label_names=full.label_names)  # text only
    features = save_features(tmp_path / "features.npz", fs)
    out = tmp_path / "run"
    assert main(["train", "--features", str(features), "--params", str(params), "--profile", "demo",
                 "--labels", "x,y,z", "--out", str(out)]) == 0
    model, doc = load_trained_model(out)
    assert isinstance(model, ProbeBlend) and isinstance(model.model, ConversationContext) and bool(model.fitted)
    predictor = Predictor.from_run(out)
    for m in (model, predictor.model):  # half model, half probe, and a context head that certainly moves the answer
        m.blend.fill_(0.5)
        m.model.head[-1].weight.data = torch.linspace(-3, 3, m.model.head[-1].weight.numel()).view_as(
            m.model.head[-1].weight)
    # offline: the dialogue's first two turns (speakers A, B), the second read with the first as its context
    logits, _ = predict(model, TensorData.from_features(fs.subset(np.arange(2)), trained_model_config(doc)), 2, CPU)
    expected = torch.softmax(logits, dim=-1)
    state: list[dict[str, str]] = []
    for turn, speaker in enumerate(("A", "B")):
        request = {"features": {"text": fs.features["t"][turn].tolist()}, "speaker": speaker}
        answer = predictor.predict({**request, "context": state})
        assert answer["context_kept"] is True and answer["context_turns"] == turn
        assert list(answer["probabilities"].values()) == pytest.approx(expected[turn].tolist(), abs=1e-5)
        state = [{"state": answer["state"], "speaker": speaker}]
    alone = predictor.predict({"features": {"text": fs.features["t"][1].tolist()}, "speaker": "B"})
    assert list(alone["probabilities"].values()) != pytest.approx(expected[1].tolist(), abs=1e-3)  # context read
