"""Serving a conversation-context model in process (issue 10): the client owns the conversation and sends the
previous turns as inputs or as the states earlier responses returned; both give the offline model's answer.
The real TorchServe answering a three-turn conversation is in tests/test_torchserve.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import serve_fixtures as sf
from hjcag.artifacts import MODEL_CONFIG_FILE, SERVING_FILE
from hjcag.errors import HjcagError
from hjcag.model.context import ContextBatch
from hjcag.serve.package import Source, stage_bundle
from hjcag.serve.predictor import Predictor
from hjcag.serve.request import RequestError


@pytest.fixture(autouse=True)
def one_cpu_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sf.train_tiny_run(tmp_path_factory.mktemp("ctx") / "run", context="gru")


@pytest.fixture(scope="module")
def predictor(run_dir: Path) -> Predictor:
    return Predictor.from_run(run_dir, features_config=sf.features_config())


def turn(seed: int, speaker: str) -> dict[str, Any]:
    return {**sf.feature_request(seed), "speaker": speaker}


def test_a_three_turn_conversation_by_states_matches_the_turns_themselves(predictor: Predictor) -> None:
    first = predictor.predict(turn(1, "Ross"))
    assert first["context_turns"] == 0 and first["state"].startswith("hjcag-state.v1.")
    second = predictor.predict({**turn(2, "Rachel"), "context": [{"state": first["state"], "speaker": "Ross"}]})
    assert second["context_turns"] == 1
    states = [{"state": first["state"], "speaker": "Ross"}, {"state": second["state"], "speaker": "Rachel"}]
    by_state = predictor.predict({**turn(3, "Ross"), "context": states})
    by_input = predictor.predict({**turn(3, "Ross"), "context": [turn(1, "Ross"), turn(2, "Rachel")]})
    assert by_state["context_turns"] == by_input["context_turns"] == 2
    assert by_state["label"] == by_input["label"]
    for label, p in by_input["probabilities"].items():  # states are float16: equal to about 1e-3
        assert by_state["probabilities"][label] == pytest.approx(p, abs=2e-3)
    alone = predictor.predict(turn(3, "Ross"))
    assert alone["probabilities"] != by_input["probabilities"]  # the context is read


def test_the_endpoint_gives_the_offline_models_answer(predictor: Predictor) -> None:
    """The same three turns through the offline path (a dialogue batch, as evaluation runs it) and the endpoint."""
    turns = [turn(s, who) for s, who in ((1, "Ross"), (2, "Rachel"), (3, "Ross"))]
    served = predictor.predict({**turns[2], "context": turns[:2]})
    batch = predictor.preprocess([turns[0], turns[1], turns[2]])
    window = torch.tensor([[-1, -1, -1, 0], [-1, -1, 0, 1], [-1, 0, 1, 2]])
    speaker = torch.tensor([[2, 2, 2, 1], [2, 2, 0, 1], [2, 1, 0, 1]])
    with torch.no_grad():
        logits = predictor.model(batch.inputs, batch.present, context=ContextBatch(window, speaker)).logits
    offline = torch.softmax(logits[2], dim=0).tolist()
    assert list(served["probabilities"].values()) == pytest.approx(offline, abs=1e-6)


@pytest.mark.parametrize(("context", "message", "status"), [
    ([{"state": "x"}] * 4, "reads at most 3", 400),
    ([{"state": "hjcag-state.v1.000000000000.AAAA"}], "made by another model", 409),
    ("turns", "must be a list", 400),
    ([{"state": "abc", "text": "hi"}], "either the state or the turn's inputs", 400),
    ([{"features": {"text": [1.0, 2.0]}}], "context[0]: text features have 2 dims", 400),
    ([{"context": []}], "unknown key(s) ['context'] in the turn", 400),
])
def test_bad_context_gets_a_clear_4xx(predictor: Predictor, context: Any, message: str, status: int) -> None:
    with pytest.raises(RequestError) as err:
        predictor.predict({**turn(1, "Ross"), "context": context})
    assert message in err.value.message and err.value.status == status


def test_a_state_of_the_wrong_width_or_from_another_model_is_refused(predictor: Predictor, run_dir: Path,
                                                                     tmp_path: Path) -> None:
    state = predictor.predict(turn(1, "Ross"))["state"]
    head, values = state.rsplit(".", 1)
    short = f"{head}.{values[:-8]}"
    with pytest.raises(RequestError, match="holds 6 values; this model's states hold 8"):
        predictor.predict({**turn(2, "Rachel"), "context": [{"state": short}]})
    other = Predictor.from_run(sf.train_tiny_run(tmp_path / "other", context="gru"))
    other.model.head[0].bias.data += 1.0  # another version of the model
    other = Predictor(other.model, other.doc)
    with pytest.raises(RequestError, match="made by another model") as err:
        other.predict({**turn(2, "Rachel"), "context": [{"state": state}]})
    assert err.value.status == 409


def test_a_model_without_context_refuses_context_and_answers_as_before(tmp_path: Path) -> None:
    plain = Predictor.from_run(sf.train_tiny_run(tmp_path / "plain"))
    answer = plain.predict(sf.feature_request(1))
    assert "state" not in answer and "context_turns" not in answer
    with pytest.raises(RequestError, match="reads no conversation context"):
        plain.predict({**sf.feature_request(1), "context": []})


def test_the_archive_records_the_context_settings(run_dir: Path, tmp_path: Path) -> None:
    bundle = stage_bundle(Source(run_dir), tmp_path / "bundle", version="1", fold=None,
                          features_config=sf.features_config(), trained_with=None, name="hjcag-ctx")
    assert json.loads((bundle / SERVING_FILE).read_text())["context"] == {"kind": "gru", "window": 3,
                                                                          "direction": "causal"}
    served = Predictor.load(bundle)
    assert served.predict(turn(1, "Ross"))["context_turns"] == 0


def test_a_bidirectional_model_is_not_served(run_dir: Path, tmp_path: Path) -> None:
    doc = json.loads((run_dir / MODEL_CONFIG_FILE).read_text())
    doc["model_config"]["context_direction"] = "bidirectional"
    model = Predictor.from_run(run_dir).model
    with pytest.raises(HjcagError, match="offline evaluation only"):
        Predictor(model, doc)


def test_kserve_instances_carry_their_own_context(predictor: Predictor) -> None:
    first = predictor.predict(turn(1, "Ross"))
    body = {"instances": [turn(2, "Rachel"), {**turn(2, "Rachel"), "context": [{"state": first["state"],
                                                                                  "speaker": "Ross"}]}]}
    answers = predictor.predict(json.dumps(body))["predictions"]
    assert [a["context_turns"] for a in answers] == [0, 1]
    assert np.isfinite([sum(a["probabilities"].values()) for a in answers]).all()
