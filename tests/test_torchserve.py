"""The real endpoint: `hjcag package` -> hjcag.mar -> `torchserve` with hjcag's config.properties (token auth on,
model API off, 20 MiB request limit), on free loopback ports with a private TMPDIR / java.io.tmpdir and working
directory. The server starts once for the module and is always stopped. Every answer is checked against the
in-process predictor loaded from the same archive.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import media_fixtures
import serve_fixtures as sf
from hjcag.device import torch_threads
from hjcag.serve.local import LocalTorchServe, Reply
from hjcag.serve.package import package_model
from hjcag.serve.predictor import Predictor
from hjcag.serve.request import RequestError
from hjcag.serve.worker_cap import CAP_ENV

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java 17 on PATH")
BATCH_HEADER = "x-hjcag-batch-size"
WORKER_CAP = 1  # HJCAG_MAX_WORKERS of the test server: the worker it starts with is the only one allowed


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model store holding hjcag.mar, the archive unpacked)."""
    root = tmp_path_factory.mktemp("torchserve")
    with torch_threads(1):
        run_dir = sf.train_tiny_run(root / "run")
    mar = package_model(run_dir, root / "store", features_config=sf.features_config())
    with zipfile.ZipFile(mar) as z:
        z.extractall(root / "unpacked")
    return mar.parent, root / "unpacked"


@pytest.fixture(scope="module")
def server(archive: tuple[Path, Path]) -> Iterator[LocalTorchServe]:
    # OMP_NUM_THREADS 2 is the cap of the worker's torch threads: the tiny model gets one (hjcag.serve.threads).
    ts = LocalTorchServe(archive[0], env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", CAP_ENV: str(WORKER_CAP)})
    try:
        ts.start()
        yield ts
    finally:
        ts.stop()


@pytest.fixture(scope="module")
def reference(archive: tuple[Path, Path]) -> Iterator[Predictor]:
    """The in-process predictor over the very files the server unpacked."""
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", True)  # the same offline fallback as the server's HF_HUB_OFFLINE=1
        yield Predictor.load(archive[1])


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {"wav": media_fixtures.write_wav(root / "a.wav", duration_s=0.4, freq=300.0),
            "mp4": media_fixtures.write_video(root / "v.mp4", duration_s=0.4, freq=500.0),
            "wav_4khz": media_fixtures.write_wav(root / "low.wav", duration_s=0.4, sample_rate=4000)}


def probs(response: dict[str, Any]) -> np.ndarray:
    return np.array(list(response["probabilities"].values()))


def assert_same(reply: Reply, expected: dict[str, Any], atol: float = 1e-5) -> None:
    assert reply.status == 200, reply.text
    got = reply.json()
    assert got["label"] == expected["label"] and got["model"] == expected["model"]
    assert got["version"] == expected["version"]
    np.testing.assert_allclose(probs(got), probs(expected), atol=atol)
    np.testing.assert_allclose(list(got["gate"].values()), list(expected["gate"].values()), atol=atol)


def healthy(server: LocalTorchServe) -> bool:
    reply = server.request("GET", "/ping")
    return reply.status == 200 and reply.json()["status"] == "Healthy"


def test_ping_needs_the_inference_token(server: LocalTorchServe) -> None:
    for token in ("wrong", server.read_keys()["management"]):
        refused = server.request("GET", "/ping", token=token)
        assert refused.status in (400, 401) and "InvalidKeyException" in refused.text
    assert healthy(server)


def test_worker_runs_the_code_packed_in_the_archive(server: LocalTorchServe) -> None:
    log = server.log_tail(200_000)
    assert f"from {server.tmp_dir}/models/" in log, log[-3000:]
    assert "raw text input: ok" in log and "raw audio input: ok" in log and "raw visual input: ok" in log


def test_a_checkout_on_pythonpath_does_not_replace_the_archive_s_code(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """TorchServe puts the unpacked archive after the inherited PYTHONPATH: a folder holding another hjcag (a
    checkout's src) would be what the worker runs. The server's environment leaves such folders out, and only them."""
    other = tmp_path / "checkout" / "src"
    (other / "hjcag").mkdir(parents=True)
    (other / "hjcag" / "__init__.py").write_text("")
    extra = tmp_path / "site"
    store = tmp_path / "store"
    store.mkdir()
    (store / "hjcag.mar").write_bytes(b"")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(other), str(extra)]))
    assert LocalTorchServe(store, work_dir=tmp_path / "ts").environment()["PYTHONPATH"] == str(extra)
    monkeypatch.setenv("PYTHONPATH", str(other))
    assert "PYTHONPATH" not in LocalTorchServe(store, work_dir=tmp_path / "ts").environment()


def test_the_worker_gives_the_tiny_model_one_torch_thread_under_a_cap_of_two(server: LocalTorchServe) -> None:
    """The handler applies hjcag.serve.threads' rule (tests/test_serve_threads.py) and logs it, with the count torch
    then runs with in the worker's description of what it serves."""
    log = server.log_tail(200_000)
    assert "torch threads: 1 torch thread(s) of a cap of 2 (OMP_NUM_THREADS=2): " in log, log[-3000:]
    assert "MFLOPs per request" in log, log[-3000:]
    assert "'torch_threads': 1," in log, log[-3000:]


def test_feature_and_raw_requests_match_the_in_process_predictor(server: LocalTorchServe, reference: Predictor,
                                                                 media: dict[str, Path]) -> None:
    packed = {"features": {k: sf.packed(v, "float16") for k, v in sf.feature_request(3, steps=4)["features"].items()}}
    for request in (sf.feature_request(0), sf.feature_request(1, "av", steps=9), sf.feature_request(2, "t"), packed):
        assert_same(server.predict(request), reference.predict(request))
    raw = {"text": "Oh my God, you did it!", "audio": sf.b64(media["wav"]), "video": sf.b64(media["mp4"])}
    reply = server.predict(raw)
    assert_same(reply, reference.predict(raw))
    assert all(w > 0 for w in reply.json()["gate"].values())
    kserve = server.predict({"instances": [sf.feature_request(3), {"text": "fine."}]})
    assert kserve.status == 200
    for got, request in zip(kserve.json()["predictions"], (sf.feature_request(3), {"text": "fine."}), strict=True):
        np.testing.assert_allclose(probs(got), probs(reference.predict(request)), atol=1e-5)


def test_concurrent_requests_are_batched_one_answer_each_in_order(server: LocalTorchServe,
                                                                  reference: Predictor) -> None:
    """Distinct inputs fired together: TorchServe batches them (model-config.yaml: batchSize 8, 1 ms), and each
    client must get the answer for its own input; bad requests inside a batch fail alone."""
    mods = ("tav", "ta", "av", "t", "v", "tv")
    requests: list[Any] = [sf.feature_request(100 + i, mods[i % len(mods)]) for i in range(32)]
    for i in (5, 17, 28):
        requests[i] = {"features": {"audio": [0.0] * (80 + i)}}  # wrong width: a 400 for this one only
    replies: list[Reply | None] = [None] * len(requests)
    start = threading.Barrier(8)

    def client(k: int) -> None:
        start.wait()
        for i in range(k, len(requests), 8):
            replies[i] = server.predict(requests[i])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    batch_sizes = []
    for request, reply in zip(requests, replies, strict=True):
        assert reply is not None
        batch_sizes.append(int(reply.header(BATCH_HEADER) or 0))
        try:
            expected = reference.predict(request)
        except RequestError as exc:
            assert reply.status == 400 and reply.json()["message"] == exc.message
            continue
        assert_same(reply, expected)
    assert max(batch_sizes) > 1, f"no batching happened: {batch_sizes}"


BAD_BODIES = [
    (b'{"text": "hi",', "application/json", 400, "not valid JSON"),
    (b'{"text": "hi"}x', "application/json", 400, "not valid JSON"),
    (b"\x00\xff binary", "application/octet-stream", 400, "not UTF-8"),
    (b"[1, 2, 3]", "application/json", 400, "must be a JSON object"),
    (b"{}", "application/json", 400, "the request has no input"),
    (b'{"features": {"audio": [1, 2, 3]}}', "application/json", 400,
     "audio features have 3 dims, the model expects 88."),
    (b'{"features": {"text": [[0.1, 0.2], [0.3]]}}', "application/json", 400, "ragged"),
    (b'{"audio": "***"}', "application/json", 400, "'audio' is not valid base64"),
    (json.dumps({"audio": "UklGRiQAAABXQVZFZm10IBAAAAABAAEA"}).encode(), "application/json", 400,
     "audio could not be decoded"),
    (json.dumps({"video": "AAAAIGZ0eXBpc29tAAACAGlzb21pc28y" + "A" * 64}).encode(), "application/json", 400,
     "video could not be decoded"),
]


def test_bad_input_gets_a_4xx_with_a_message_and_the_server_stays_healthy(server: LocalTorchServe,
                                                                          reference: Predictor,
                                                                          media: dict[str, Path]) -> None:
    for body, content_type, status, message in BAD_BODIES:
        reply = server.request("POST", "/predictions/hjcag", body, content_type)
        assert reply.status == status, (body, reply.text)
        assert message in reply.json()["message"], (body, reply.text)
    # The handler decodes bodies itself: TorchServe logged a traceback for each malformed JSON body before.
    assert "Failed json decoding" not in (server.log_dir / "model_log.log").read_text(errors="replace")
    # media that validation refuses (below validation.media.min_sample_rate, carried in the archive)
    low = server.predict({"audio": sf.b64(media["wav_4khz"])})
    assert low.status == 400 and "audio sample rate is 4000 Hz; valid media has 8000 to 96000 Hz" in low.text
    assert healthy(server)
    assert_same(server.predict(sf.feature_request(7)), reference.predict(sf.feature_request(7)))


def test_oversized_body_gets_413_before_the_handler(server: LocalTorchServe, reference: Predictor) -> None:
    """config.properties caps bodies at 20 MiB: TorchServe answers 413 from the headers, without reading the body."""
    size = 21 * 2**20
    with socket.create_connection(("127.0.0.1", server.ports["inference"]), timeout=30) as s:
        s.sendall((f"POST /predictions/hjcag HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.token}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n").encode())
        status_line = s.recv(4096).decode("latin-1").split("\r\n", 1)[0]
    assert status_line.split(" ", 2)[1] == "413", status_line
    assert healthy(server)
    assert_same(server.predict(sf.feature_request(8)), reference.predict(sf.feature_request(8)))


def test_the_logs_carry_one_access_line_per_request(server: LocalTorchServe) -> None:
    """hjcag's log4j2.xml: each request adds its access line (access_log.log and stdout) and nothing else to the
    server's logs; TorchServe's built-in configuration wrote about 8 lines to stdout and 22 to ts_log.log."""
    logs = {name: server.log_dir / name for name in ("console.log", "ts_log.log", "access_log.log", "model_log.log")}

    def lines() -> dict[str, list[str]]:
        return {name: path.read_text(errors="replace").splitlines() for name, path in logs.items()}

    before = lines()
    requests = 6
    for i in range(requests):
        assert server.predict(sf.feature_request(20 + i)).status == 200
    deadline = time.monotonic() + 10
    while len(lines()["access_log.log"]) < len(before["access_log.log"]) + requests and time.monotonic() < deadline:
        time.sleep(0.2)
    added = {name: now[len(before[name]):] for name, now in lines().items()}
    predictions = [line for line in added["access_log.log"] if '"POST /predictions/hjcag HTTP/1.1" 200' in line]
    assert len(predictions) == requests, added["access_log.log"]
    assert added["ts_log.log"] == [] and added["model_log.log"] == [], added
    assert len(added["console.log"]) == requests and all("ACCESS_LOG" in line for line in added["console.log"]), added


def test_answers_carry_the_handlers_time_as_server_timing(server: LocalTorchServe) -> None:
    """Server-Timing: handler;dur=MS, the handler's share of the request (benchmarks/serve_load.py splits latency
    with it): positive, and less than what the client waited."""
    for request in (sf.feature_request(30), {"features": {"audio": "not numbers"}}):
        started = time.perf_counter()
        reply = server.predict(request)
        waited_ms = (time.perf_counter() - started) * 1000
        timing = reply.header("Server-Timing")
        assert timing is not None and timing.startswith("handler;dur="), (reply.status, reply.headers)
        assert 0 < float(timing.split("=", 1)[1]) < waited_ms, (timing, waited_ms)
    assert reply.status == 400


def test_model_registration_api_is_off(server: LocalTorchServe) -> None:
    import urllib.error
    import urllib.request

    token = server.read_keys()["management"]
    request = urllib.request.Request(f"{server.management_url}/models?url=hjcag.mar", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 405 and "MethodNotAllowed" in info.value.read().decode()
    assert server.worker_states() == ["READY"]  # the same key may describe: the refusal is the disabled API


def test_scaling_past_the_worker_cap_is_clipped_and_no_extra_worker_loads(server: LocalTorchServe,
                                                                          reference: Predictor) -> None:
    """TorchServe 0.12 starts as many workers as `min_worker` asks; the handler's cap (hjcag.serve.worker_cap) lets
    none of the extra ones load the model and scales the model back. Last in the module: it scales the pool."""
    import urllib.error
    import urllib.request

    def management(method: str, path: str, key: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(f"{server.management_url}{path}", method=method,
                                         headers={"Authorization": f"Bearer {key or server.read_keys()['management']}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())

    model_log = server.log_dir / "model_log.log"
    loaded_before = model_log.read_text(errors="replace").count("raw text input: ok")
    # The key file's management key looks expired (refused): the refused worker must rotate it with the API key.
    key = server.read_keys()["management"]
    keys = json.loads(server.key_file.read_text())
    keys["management"]["key"] = "expired-key"
    server.key_file.write_text(json.dumps(keys))
    status, _ = management("PUT", f"/models/hjcag?min_worker={WORKER_CAP + 2}&max_worker={WORKER_CAP + 2}"
                                  "&synchronous=false", key)
    assert status == 202
    most_ready, deadline, described = 0, time.monotonic() + 180, {}
    while time.monotonic() < deadline:
        for attempt in (key, None):  # the key we hold until the worker rotates it, then the key file's new one
            try:
                described = management("GET", "/models/hjcag", attempt)[1][0]
                break
            except urllib.error.HTTPError:
                continue
        states = [w["status"] for w in described["workers"]]
        most_ready = max(most_ready, states.count("READY"))
        refused = "worker slots are taken: this worker loads nothing" in model_log.read_text(errors="replace")
        if described["minWorkers"] == WORKER_CAP and states == ["READY"] * WORKER_CAP and refused:
            break
        time.sleep(0.2)
    assert described["minWorkers"] == described["maxWorkers"] == WORKER_CAP, described
    assert [w["status"] for w in described["workers"]] == ["READY"] * WORKER_CAP, described
    assert most_ready <= WORKER_CAP
    log = model_log.read_text(errors="replace")
    assert "worker slots are taken: this worker loads nothing" in log, log[-3000:]
    assert log.count("raw text input: ok") == loaded_before, "a worker past the cap loaded the model"
    assert server.read_keys()["management"] not in ("expired-key", key)  # rotated
    assert healthy(server)
    assert_same(server.predict(sf.feature_request(9)), reference.predict(sf.feature_request(9)))
