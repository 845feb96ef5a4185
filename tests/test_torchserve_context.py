"""The real TorchServe serving a conversation-context model (issue 10): conversations carried by the states the
endpoint returns and sent whole in a KServe v1 body, answered as offline evaluation answers them, and a state made by
another model refused with a 4xx."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import serve_fixtures as sf
from hjcag.device import torch_threads
from hjcag.serve.local import LocalTorchServe
from hjcag.serve.package import package_model
from hjcag.serve.predictor import Predictor

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java 17 on PATH")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the served context run, another context run: a different model)."""
    root = tmp_path_factory.mktemp("torchserve-context")
    with torch_threads(1):
        return (sf.train_tiny_run(root / "run", context="gru"),
                sf.train_tiny_run(root / "other", dims={"t": 384, "a": 88, "v": 32}, context="transformer"))


@pytest.fixture(scope="module")
def server(runs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTorchServe]:
    store = tmp_path_factory.mktemp("store")
    package_model(runs[0], store, features_config=sf.features_config())
    with sf.local_server(store) as ts:
        yield ts


def turn(seed: int, speaker: str) -> dict[str, Any]:
    return {**sf.feature_request(seed), "speaker": speaker}


DIALOGUES = [sf.dialogue((1, 2, 3, 4), ("Ross", "Rachel", "Ross", "Monica")),
             sf.dialogue((11, 12, 13, 14), ("Joey", "Joey", "Chandler", "Joey"))]


def test_conversations_turn_by_turn_and_in_one_batch_get_offline_evaluations_answers(
        server: LocalTorchServe, runs: tuple[Path, Path]) -> None:
    """Through the real TorchServe (the archive's own copy of hjcag): each turn sent with the states of the earlier
    answers, then every turn of both conversations in one KServe body, against offline evaluation of the dialogues
    (serve_fixtures.offline_probabilities: the training path's windows, no serving code)."""
    offline = sf.offline_probabilities(runs[0], DIALOGUES)
    for turns, expected in zip(DIALOGUES, offline, strict=True):
        context: list[dict[str, Any]] = []
        for i, (request, p) in enumerate(zip(turns, expected, strict=True)):
            reply = server.predict({**request, "context": context[-3:]})
            assert reply.status == 200, reply.text
            answer = reply.json()
            assert answer["context_turns"] == min(i, 3) and answer["context_kept"] is True
            np.testing.assert_allclose(sf.probabilities(answer), p, rtol=0, atol=1e-4)  # states are float16
            context.append({"state": answer["state"], "speaker": request["speaker"]})

    instances = [{**request, "context": turns[max(0, i - 3):i]} for turns in DIALOGUES
                 for i, request in enumerate(turns)]
    reply = server.request("POST", "/predictions/hjcag", json.dumps({"instances": instances}).encode())
    assert reply.status == 200, reply.text
    answers = reply.json()["predictions"]
    assert [a["context_turns"] for a in answers] == [0, 1, 2, 3] * 2
    np.testing.assert_allclose([sf.probabilities(a) for a in answers], np.concatenate(offline), rtol=0, atol=1e-5)


def test_a_state_from_another_model_or_too_many_turns_get_a_4xx(server: LocalTorchServe,
                                                                runs: tuple[Path, Path]) -> None:
    foreign = Predictor.from_run(runs[1]).predict(turn(1, "Ross"))["state"]
    reply = server.predict({**turn(2, "Rachel"), "context": [{"state": foreign, "speaker": "Ross"}]})
    assert reply.status == 409 and "made by another model" in reply.json()["message"], reply.text
    mine = server.predict(turn(1, "Ross")).json()["state"]
    reply = server.predict({**turn(2, "Rachel"), "context": [{"state": mine}] * 4})
    assert reply.status == 400 and "reads at most 3" in reply.json()["message"], reply.text
    assert server.predict(turn(2, "Rachel")).status == 200  # and the server is fine
