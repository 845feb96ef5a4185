"""Serving a conversation-context model in process (issue 10): the client owns the conversation and sends the
previous turns as inputs or as the states earlier responses returned; both give the offline model's answer.
The real TorchServe answering a three-turn conversation is in tests/test_torchserve.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import serve_fixtures as sf
from hjcag.artifacts import MODEL_CONFIG_FILE, SERVING_FILE
from hjcag.errors import HjcagError
from hjcag.serve.package import Source, stage_bundle
from hjcag.serve.predictor import Predictor
from hjcag.serve.request import RequestError

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny models: torch on one thread (tests/conftest.py)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sf.train_tiny_run(tmp_path_factory.mktemp("ctx") / "run", context="gru")


@pytest.fixture(scope="module")
def predictor(run_dir: Path) -> Predictor:
    return Predictor.from_run(run_dir, features_config=sf.features_config())


def turn(seed: int, speaker: str) -> dict[str, Any]:
    return {**sf.feature_request(seed), "speaker": speaker}


# Two conversations of four turns: the last turn of each reads 3 earlier ones (model.context_window), of both speakers.
DIALOGUES = [sf.dialogue((1, 2, 3, 4), ("Ross", "Rachel", "Ross", "Monica")),
             sf.dialogue((11, 12, 13, 14), ("Joey", "Joey", "Chandler", "Joey"))]
STATE_TOLERANCE = 1e-4  # a state carries the fused vector in float16: answers move by about 5e-6


@pytest.fixture(scope="module")
def offline(run_dir: Path) -> list[np.ndarray]:
    return sf.offline_probabilities(run_dir, DIALOGUES)


def test_the_context_moves_the_answers_far_more_than_the_tolerance(predictor: Predictor,
                                                                   offline: list[np.ndarray]) -> None:
    """The premise of the tests below: a window built wrong (no context, another order, a turn missing or another
    conversation's) changes an answer by more than they tolerate."""
    for turns, expected in zip(DIALOGUES, offline, strict=True):
        alone = sf.probabilities(predictor.predict(turns[-1]))
        assert np.abs(expected[-1] - alone).max() > 50 * STATE_TOLERANCE


def test_a_client_sending_turn_by_turn_with_states_gets_offline_evaluations_answers(
        predictor: Predictor, offline: list[np.ndarray]) -> None:
    for turns, expected in zip(DIALOGUES, offline, strict=True):
        context: list[dict[str, Any]] = []
        for i, (request, p) in enumerate(zip(turns, expected, strict=True)):
            answer = predictor.predict({**request, "context": context[-3:]})
            assert answer["context_turns"] == min(i, 3) and answer["context_kept"] is True
            np.testing.assert_allclose(sf.probabilities(answer), p, rtol=0, atol=STATE_TOLERANCE)
            assert answer["label"] == sf.LABELS[int(np.argmax(p))]
            context.append({"state": answer["state"], "speaker": request["speaker"]})


def test_every_turn_of_two_conversations_in_one_batch_gets_offline_evaluations_answer(
        predictor: Predictor, offline: list[np.ndarray]) -> None:
    """Earlier turns sent as inputs, all eight turns in one body (one batch): each reads its own conversation only."""
    instances = [{**request, "context": turns[max(0, i - 3):i]} for turns in DIALOGUES
                 for i, request in enumerate(turns)]
    answers = predictor.predict(json.dumps({"instances": instances}))["predictions"]
    assert [a["context_turns"] for a in answers] == [0, 1, 2, 3] * 2
    np.testing.assert_allclose([sf.probabilities(a) for a in answers], np.concatenate(offline), rtol=0, atol=1e-5)


def test_states_and_inputs_can_be_mixed_in_one_context(predictor: Predictor, offline: list[np.ndarray]) -> None:
    turns = DIALOGUES[0]
    first = predictor.predict(turns[0])
    answer = predictor.predict({**turns[3], "context": [{"state": first["state"], "speaker": "Ross"}, *turns[1:3]]})
    assert answer["context_turns"] == 3
    np.testing.assert_allclose(sf.probabilities(answer), offline[0][3], rtol=0, atol=STATE_TOLERANCE)


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


def test_kserve_instances_carry_their_own_context(predictor: Predictor, offline: list[np.ndarray]) -> None:
    turns = DIALOGUES[0]
    first = predictor.predict(turns[0])
    body = {"instances": [turns[1], {**turns[1], "context": [{"state": first["state"], "speaker": "Ross"}]}]}
    answers = predictor.predict(json.dumps(body))["predictions"]
    assert [a["context_turns"] for a in answers] == [0, 1]
    np.testing.assert_allclose(sf.probabilities(answers[0]), sf.probabilities(predictor.predict(turns[1])), atol=1e-6)
    np.testing.assert_allclose(sf.probabilities(answers[1]), offline[0][1], rtol=0, atol=STATE_TOLERANCE)
