"""The real TorchServe serving a model whose text features read the preceding turns (features.text_context, issue
22): the HTTP client sending a dialogue turn by turn as raw text gets offline features + evaluation's answers. The
in-process checks (both kinds of model, malformed states) are tests/test_serve_text_context.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import serve_fixtures as sf
import test_serve_text_context as tc
from hjcag.artifacts import features_meta_path
from hjcag.client import Client
from hjcag.device import torch_threads
from hjcag.serve.local import LocalTorchServe
from hjcag.serve.package import package_model

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java 17 on PATH")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalTorchServe, Path, Path]]:
    """(the server, the run it serves, the features it was trained on): a run without model.context."""
    root = tmp_path_factory.mktemp("torchserve-text-context")
    features = tc.dialogue_features(root)
    with torch_threads(1):
        run_dir = tc.tiny_run(root / "run", "none")
    mar = package_model(run_dir, root / "store", features_config=tc.features_config(),
                        features_meta=features_meta_path(features))
    with sf.local_server(mar.parent) as ts:
        yield ts, run_dir, features


def test_turn_by_turn_over_http_equals_offline_features_and_evaluation(
        served: tuple[LocalTorchServe, Path, Path]) -> None:
    server, run_dir, features = served
    client = Client(server.inference_url, str(server.token))  # learns the window (1: the last state) from answers
    answers = client.predict_dialogue(tc.turns())
    expected = tc.offline_probabilities(run_dir, features)
    np.testing.assert_allclose([sf.probabilities(a) for a in answers], expected, rtol=0, atol=tc.TOLERANCE)
    assert client.context_window == 1 and [a["context_turns"] for a in answers] == [0, 1, 2, 2, 2, 2]
