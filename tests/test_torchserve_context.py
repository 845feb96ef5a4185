"""The real TorchServe serving a conversation-context model (issue 10): a three-turn conversation carried by the
states the endpoint returns, the same answers as the in-process predictor, a KServe v1 body with context, and a
state made by another model refused with a 4xx."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    ts = LocalTorchServe(store, env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    try:
        ts.start()
        yield ts
    finally:
        ts.stop()


def turn(seed: int, speaker: str) -> dict[str, Any]:
    return {**sf.feature_request(seed), "speaker": speaker}


def test_a_three_turn_conversation_with_states(server: LocalTorchServe, runs: tuple[Path, Path]) -> None:
    reference = Predictor.from_run(runs[0])
    context: list[dict[str, Any]] = []
    for seed, speaker in ((1, "Ross"), (2, "Rachel"), (3, "Ross")):
        request = {**turn(seed, speaker), "context": context}
        reply = server.predict(request)
        assert reply.status == 200, reply.text
        answer = reply.json()
        expected = reference.predict(request)
        assert answer["context_turns"] == len(context) and answer["label"] == expected["label"]
        for label, p in expected["probabilities"].items():
            assert answer["probabilities"][label] == pytest.approx(p, abs=1e-5)
        context = [*context, {"state": answer["state"], "speaker": speaker}]

    body = {"instances": [turn(4, "Rachel"), {**turn(4, "Rachel"), "context": context}]}
    reply = server.request("POST", "/predictions/hjcag", json.dumps(body).encode())
    assert reply.status == 200, reply.text
    assert [p["context_turns"] for p in reply.json()["predictions"]] == [0, 3]


def test_a_state_from_another_model_or_too_many_turns_get_a_4xx(server: LocalTorchServe,
                                                                runs: tuple[Path, Path]) -> None:
    foreign = Predictor.from_run(runs[1]).predict(turn(1, "Ross"))["state"]
    reply = server.predict({**turn(2, "Rachel"), "context": [{"state": foreign, "speaker": "Ross"}]})
    assert reply.status == 409 and "made by another model" in reply.json()["message"], reply.text
    mine = server.predict(turn(1, "Ross")).json()["state"]
    reply = server.predict({**turn(2, "Rachel"), "context": [{"state": mine}] * 4})
    assert reply.status == 400 and "reads at most 3" in reply.json()["message"], reply.text
    assert server.predict(turn(2, "Rachel")).status == 200  # and the server is fine
