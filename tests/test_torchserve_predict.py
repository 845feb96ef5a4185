"""`hjcag predict --endpoint` through the real TorchServe serving a context model's archive (issue 23): the client
learns the window, carries the states, sends dialogues in parallel, and gets the rows `--model` gives in process;
a wrong token and a bad body are one-line errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import predict_fixtures as pf
import serve_fixtures as sf
from hjcag.cli import main
from hjcag.client import Client, turn
from hjcag.device import torch_threads
from hjcag.serve.local import LocalTorchServe
from hjcag.serve.package import package_model

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java 17 on PATH")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalTorchServe, Path, Path]]:
    """(the server, its archive, the run it came from): a context run reading 3 turns."""
    root = tmp_path_factory.mktemp("torchserve-predict")
    with torch_threads(1):
        run_dir = sf.train_tiny_run(root / "run", context="gru")
    mar = package_model(run_dir, root / "store", features_config=sf.features_config())
    with sf.local_server(mar.parent) as ts:
        yield ts, mar, run_dir


def predict(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["predict", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def rows_of(path: Path) -> dict[str, dict[str, Any]]:
    return {r["utterance_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_the_endpoint_gives_the_rows_of_the_model_in_process_and_refuses_clearly(
        served: tuple[LocalTorchServe, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, mar, run_dir = served
    features = pf.write_features(tmp_path / "features.npz")
    (tmp_path / "key").write_text(f"{server.token}\n")
    code, out, err = predict(capsys, "--input", str(features), "--endpoint", server.inference_url, "--token-file",
                             str(tmp_path / "key"), "--out", str(tmp_path / "endpoint.jsonl"), "--concurrency", "2")
    assert code == 0, err
    assert "8 utterances answered" in out
    code, _, err = predict(capsys, "--input", str(features), "--model", str(mar), "--out",
                           str(tmp_path / "local.jsonl"))
    assert code == 0, err
    endpoint, local = rows_of(tmp_path / "endpoint.jsonl"), rows_of(tmp_path / "local.jsonl")
    assert endpoint.keys() == local.keys() and len(endpoint) == 8
    numbers = ("probability", "probabilities", "gate", "state")
    for uid, row in endpoint.items():
        other = local[uid]
        # ids, dialogue, turn, speaker, label, context turns read, model and version
        assert {k: v for k, v in row.items() if k not in numbers} == {
            k: v for k, v in other.items() if k not in numbers}
        # TorchServe may batch the two dialogues' turns into one forward pass: the last digits may move
        for key in ("probabilities", "gate"):
            np.testing.assert_allclose(list(row[key].values()), list(other[key].values()), rtol=0, atol=1e-6)
        assert row["state"].rsplit(".", 1)[0] == other["state"].rsplit(".", 1)[0]  # the same model made both
    assert sorted(r["context_turns"] for r in endpoint.values()) == [0, 0, 1, 1, 2, 2, 3, 3]
    offline = sf.offline_probabilities(run_dir, pf.DIALOGUES)
    for d, expected in enumerate(offline):
        got = [[endpoint[pf.utterance_id(d, i)]["probabilities"][k] for k in sf.LABELS] for i in range(4)]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)  # the states are float16

    client = Client(server.inference_url, str(server.token))  # not told the window: learns it from the first answer
    five = sf.dialogue((1, 2, 3, 4, 5), ("Ross", "Rachel", "Ross", "Monica", "Ross"))
    answers = client.predict_dialogue([turn(features=t["features"], speaker=t["speaker"]) for t in five])
    assert client.context_window == 3 and [a["context_turns"] for a in answers] == [0, 1, 2, 3, 3]

    monkeypatch.setenv("HJCAG_TOKEN", "wrong")
    code, _, err = predict(capsys, "--input", str(features), "--endpoint", server.inference_url,
                           "--out", str(tmp_path / "refused"))
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1, err
    assert "refused the token" in err and "InvalidKeyException" in err and "$HJCAG_TOKEN" in err, err

    monkeypatch.setenv("HJCAG_TOKEN", str(server.token))
    np.savez(tmp_path / "narrow.npz", utterance_id=np.array(["x"]), text=np.zeros((1, 10), np.float32))
    code, _, err = predict(capsys, "--input", str(tmp_path / "narrow.npz"), "--endpoint", server.inference_url,
                           "--out", str(tmp_path / "refused"))
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1, err
    assert "utterance 'x' (dialogue 'x', turn 0): the endpoint answered 400: text features have 10 dims, the model " \
           "expects 384" in err, err
