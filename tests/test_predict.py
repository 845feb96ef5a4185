"""`hjcag predict` and hjcag.client without a server (issue 23): conversations from a features file answered in
process from the archive and from the run (the answers offline evaluation gives), the context window learned from
the endpoint's first answer, a resumed run, a manifest of raw text and wav, the timeline, and the HTTP client's retries,
errors, kept connections, HTTPS and proxies against a scripted stand-in server (tests/test_torchserve_predict.py has
the real TorchServe)."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import media_fixtures
import predict_fixtures as pf
import serve_fixtures as sf
from hjcag.cli import main
from hjcag.client import Client, EndpointError, LocalClient, turn
from hjcag.errors import DataError
from hjcag.serve.local import free_port
from hjcag.serve.package import package_model

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny models: torch on one thread (tests/conftest.py)
STATE_TOLERANCE = 1e-4  # a state carries the fused vector in float16 (tests/test_serve_context.py)
IDS = [pf.utterance_id(1, i) for i in range(4)] + [pf.utterance_id(0, i) for i in range(4)]  # as first listed


@pytest.fixture(scope="module")
def context_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a context run, reading 3 turns; its archive)."""
    from hjcag.device import torch_threads

    root = tmp_path_factory.mktemp("predict")
    with torch_threads(1):
        run_dir = sf.train_tiny_run(root / "run", context="gru")
    return run_dir, package_model(run_dir, root / "store", features_config=sf.features_config())


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pf.write_features(tmp_path_factory.mktemp("input") / "features.npz")


def predict(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["predict", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_clear_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_the_archive_and_the_run_answer_as_offline_evaluation_and_draw_the_timeline(
        context_run: tuple[Path, Path], features: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, mar = context_run
    code, out, err = predict(capsys, "--input", str(features), "--model", str(mar), "--out", str(tmp_path / "a.jsonl"),
                             "--plot", str(tmp_path / "timeline.png"))
    assert code == 0, err
    assert "8 utterances answered, 0 already" in out and "labels:" in out
    rows = sorted(read_rows(tmp_path / "a.jsonl"), key=lambda r: IDS.index(r["utterance_id"]))  # appended as answered
    code, _, err = predict(capsys, "--input", str(features), "--model", str(run_dir), "--out", str(tmp_path / "b"))
    assert code == 0, err
    from_run = sorted(read_rows(tmp_path / "b" / "predictions.jsonl"), key=lambda r: IDS.index(r["utterance_id"]))
    assert from_run == rows  # --out a folder; the same answers from the run directory
    assert [r["utterance_id"] for r in rows] == IDS
    assert [r["turn"] for r in rows] == [r["context_turns"] for r in rows] == [0, 1, 2, 3] * 2
    assert [r["speaker"] for r in rows] == ["Joey", "Joey", "Chandler", "Joey", "Ross", "Rachel", "Ross", "Monica"]
    offline = sf.offline_probabilities(run_dir, pf.DIALOGUES)
    got = np.array([[r["probabilities"][label] for label in sf.LABELS] for r in rows])
    np.testing.assert_allclose(got, np.concatenate([offline[1], offline[0]]), rtol=0, atol=STATE_TOLERANCE)
    for r in rows:
        assert r["probability"] == max(r["probabilities"].values()) == r["probabilities"][r["label"]]
        assert set(r["gate"]) == {"text", "audio", "visual"} and abs(sum(r["gate"].values()) - 1) < 1e-5
        assert r["true_label"] == sf.LABELS[1] and r["state"].startswith("hjcag-state.v1.")

    csv_lines = (tmp_path / "a.csv").read_text().splitlines()
    assert csv_lines[0].startswith("utterance_id,dialogue,turn,speaker,label,probability,p_neutral,p_joy,p_anger,"
                                   "gate_text,gate_audio,gate_visual,context_turns")
    assert [line.split(",")[0] for line in csv_lines[1:]] == IDS  # in the input's order

    png, page = tmp_path / "timeline.png", tmp_path / "timeline.html"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[0] > 200
    text = page.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text and " src=" not in text
    for dialogue, first in (("d1", 0), ("d0", 4)):
        section = text.split(f'data-dialogue="{dialogue}"')[1].split("</section>")[0]
        turns = [part.split('"')[0] for part in section.split('data-utterance="')[1:]]
        assert turns == IDS[first:first + 4]
        for r in rows[first:first + 4]:
            assert f"{r['speaker']}" in section and f"{r['label']} <span class=\"p\">{r['probability']:.2f}" in section


def test_a_client_not_told_the_window_learns_it_from_the_first_answer(context_run: tuple[Path, Path]) -> None:
    """The first answer says the model reads 3 earlier turns; from then on no request sends more, none is refused."""
    told = LocalClient.load(context_run[1])
    assert told.context_window == 3
    asked: list[int] = []

    class Counting(LocalClient):
        def answer(self, body: Any) -> Any:
            asked.append(len(body.get("context", [])))
            return super().answer(body)

    learning = Counting(told.predictor)
    learning.context_window = None
    turns = [turn(features=t["features"], speaker=t["speaker"]) for t in pf.DIALOGUES[0] + pf.DIALOGUES[1][:2]]
    answers = learning.predict_dialogue(turns)
    assert learning.context_window == 3 and asked == [0, 1, 2, 3, 3, 3]
    assert {a["context_window"] for a in answers} == {3}
    assert [a["context_turns"] for a in answers] == [0, 1, 2, 3, 3, 3]
    assert answers == told.predict_dialogue(turns)


def test_a_rerun_answers_only_what_the_output_lacks(context_run: tuple[Path, Path], features: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing the second time; after an interruption that left dialogue d0 cut short and its last row half written,
    the rest, with the cut dialogue's context rebuilt from the states in the file: the same rows as one whole run."""
    out = tmp_path / "p.jsonl"
    args = ("--input", str(features), "--model", str(context_run[1]), "--out", str(out), "--concurrency", "1")
    assert predict(capsys, *args)[0] == 0
    whole = out.read_text()
    code, stdout, _ = predict(capsys, *args)
    assert code == 0 and "0 utterances answered, 8 already" in stdout and out.read_text() == whole
    lines = whole.splitlines(keepends=True)
    assert [json.loads(line)["utterance_id"] for line in lines] == IDS  # one dialogue after the other
    out.write_text("".join(lines[:5]) + lines[5][:40])  # d1 whole, d0's first turn, half of its second
    code, stdout, _ = predict(capsys, *args)
    assert code == 0 and "3 utterances answered, 5 already" in stdout
    assert out.read_text() == whole


def test_a_manifest_of_text_and_wav_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """Raw media as the endpoint takes them (text, a wav in base64), dialogues by dialogue_id in `turn` order, a
    model without context (no state, nothing read)."""
    from hjcag.device import torch_threads

    with torch_threads(1):
        run_dir = sf.train_tiny_run(tmp_path / "run")
    mar = package_model(run_dir, tmp_path / "store", features_config=sf.features_config())
    media_fixtures.write_wav(tmp_path / "data" / "hi.wav", duration_s=1.0)
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.write_text("utterance_id,dialogue_id,turn,speaker,text,audio_path\n"
                        "b1,B,1,Joey,How you doin'?,\n"
                        "a2,A,2,Ross,We were on a break!,hi.wav\n"
                        "a1,A,1,Rachel,Hi.,\n"
                        "b0,B,0,Chandler,Could this BE any louder?,\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        code, _, err = predict(capsys, "--input", str(manifest), "--model", str(mar), "--out", str(tmp_path / "o"))
    assert code == 0, err
    rows = read_rows(tmp_path / "o" / "predictions.jsonl")
    rows.sort(key=lambda r: (r["dialogue"], r["turn"]))
    assert [(r["utterance_id"], r["turn"], r["speaker"]) for r in rows] == [
        ("a1", 0, "Rachel"), ("a2", 1, "Ross"), ("b0", 0, "Chandler"), ("b1", 1, "Joey")]
    for r in rows:
        assert r["context_turns"] == 0 and "state" not in r and r["gate"]["visual"] == 0 and r["gate"]["text"] > 0
        assert (r["gate"]["audio"] > 0) == (r["utterance_id"] == "a2")


def test_bad_input_gets_one_line(context_run: tuple[Path, Path], features: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    mar = str(context_run[1])
    (tmp_path / "no_id.csv").write_text("text,speaker\nhello,Ross\n")
    code, _, err = predict(capsys, "--input", str(tmp_path / "no_id.csv"), "--model", mar, "--out", str(tmp_path / "o"))
    assert_clear_error(code, err, "missing column 'utterance_id'")
    (tmp_path / "gone.csv").write_text("utterance_id,audio_path\nu1,gone.wav\n")
    code, _, err = predict(capsys, "--input", str(tmp_path / "gone.csv"), "--model", mar, "--out", str(tmp_path / "o"))
    assert_clear_error(code, err, "utterance 'u1'", "gone.wav' not found")
    code, _, err = predict(capsys, "--input", str(tmp_path / "none.npz"), "--model", mar, "--out", str(tmp_path / "o"))
    assert_clear_error(code, err, "none.npz' not found")
    nan = np.zeros((2, 10), np.float32)
    nan[1, 3] = np.nan  # the features file's own check (hjcag.data.features_file), before anything is sent
    np.savez(tmp_path / "nan.npz", utterance_id=np.array(["x", "y"]), text=nan, order=np.array([0.0, 1.0]))
    code, _, err = predict(capsys, "--input", str(tmp_path / "nan.npz"), "--model", mar, "--out", str(tmp_path / "o"))
    assert_clear_error(code, err, "key 'text' holds NaN or inf values in 1 utterance(s)")
    np.savez(tmp_path / "order.npz", utterance_id=np.array(["x", "y"]), text=np.zeros((2, 10), np.float32),
             order=np.array(["a", "b"]))
    code, _, err = predict(capsys, "--input", str(tmp_path / "order.npz"), "--model", mar, "--out", str(tmp_path / "o"))
    assert_clear_error(code, err, "key 'order' must be a numeric array of shape (2,)")
    code, _, err = predict(capsys, "--input", str(features), "--endpoint", f"http://127.0.0.1:{free_port()}",
                           "--retries", "1", "--out", str(tmp_path / "o"))
    assert_clear_error(code, err, "cannot reach the endpoint", "after 2 tries")
    assert not (tmp_path / "o" / "predictions.jsonl").exists()


# ------------------------------------------------------------------ the HTTP client against a scripted server


@dataclass
class Script:
    """What the stand-in server answers: `replies` (status, JSON body) in turn, then `last` for ever."""

    replies: list[tuple[int, dict[str, Any]]]
    last: tuple[int, dict[str, Any]]
    delay_s: float = 0.0
    seen: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)  # (Authorization, body)
    targets: list[str] = field(default_factory=list)  # each request line's target (a proxy gets the whole URL)
    proxy_logins: list[str | None] = field(default_factory=list)  # each request's Proxy-Authorization
    connections: int = 0  # TCP connections accepted
    hang_up: bool = False  # close each connection after answering, without saying so (a keep-alive timeout)
    answered: int = 0  # answers written (or, to a client that has gone, tried)


ANSWER = {"label": "joy", "probabilities": {"neutral": 0.1, "joy": 0.7, "anger": 0.2},
          "gate": {"text": 0.5, "audio": 0.5}, "modalities": ["text", "audio"], "model": "hjcag", "version": "1"}
BUSY = (503, {"code": 503, "type": "ServiceUnavailableException", "message": "Model hjcag has no worker"})


@contextlib.contextmanager
def serving(script: Script, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A tiny HTTP(S) server on loopback answering POSTs as `script` says; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as TorchServe

        def setup(self) -> None:
            super().setup()
            script.connections += 1

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.seen.append((self.headers.get("Authorization"), body))
            script.targets.append(self.path)
            script.proxy_logins.append(self.headers.get("Proxy-Authorization"))
            threading.Event().wait(script.delay_s)
            status, reply = script.replies.pop(0) if script.replies else script.last
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out has gone
                self.wfile.write(data)
            script.answered += 1
            self.close_connection = self.close_connection or script.hang_up

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def stand_in() -> Iterator[tuple[str, Script]]:
    """The stand-in server over plain HTTP: (its URL, its script)."""
    script = Script([], (200, ANSWER))
    with serving(script) as url:
        yield url, script


def test_numpy_in_a_body_built_by_hand_is_sent_as_turn_sends_it(stand_in: tuple[str, Script],
                                                                context_run: tuple[Path, Path]) -> None:
    """A notebook user's body with numpy arrays and numbers goes packed, as turn() packs it, over HTTP and in
    process alike; what JSON cannot hold is a one-line DataError naming turn()."""
    url, script = stand_in
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    with Client(url, retries=0) as client:
        assert client.answer({"features": {"text": x}, "speaker": np.str_("Ross")}) == ANSWER
    assert script.seen[-1][1] == turn(features={"text": x}, speaker="Ross")
    with pytest.raises(DataError, match=r"cannot be sent as JSON: set .* build it with hjcag.client.turn\("):
        Client(url, retries=0).answer({"text": {"a", "b"}})
    local = LocalClient.load(context_run[1])
    vector = np.random.default_rng(0).standard_normal(local.predictor.input_dims["t"]).astype(np.float32)
    assert local.answer({"features": {"text": vector}}) == local.answer(turn(features={"text": vector}))


def test_busy_answers_are_tried_again_with_backoff(stand_in: tuple[str, Script]) -> None:
    url, script = stand_in
    script.replies = [BUSY, BUSY]
    client = Client(url, token="secret", backoff=0.01)
    assert client.answer({"text": "hi"}) == ANSWER
    assert script.seen == [("Bearer secret", {"text": "hi"})] * 3
    script.replies, script.last = [], BUSY
    with pytest.raises(EndpointError, match="answered 503: Model hjcag has no worker") as failed:
        Client(url, retries=2, backoff=0.01).answer({"text": "hi"})
    assert failed.value.status == 503 and len(script.seen) == 3 + 3


def test_one_connection_serves_every_turn_and_one_closed_while_idle_is_opened_again(
        stand_in: tuple[str, Script]) -> None:
    url, script = stand_in
    with Client(url, retries=0) as client:
        assert client.predict_dialogue([{"text": f"turn {i}"} for i in range(4)]) == [ANSWER] * 4
        assert script.connections == 1
        script.hang_up = True  # the server now closes every connection after its answer, unannounced
        assert [client.answer({"text": f"again {i}"}) for i in range(3)] == [ANSWER] * 3
    # the first of them still had the kept connection; each later one found it closed and opened a new one, which is
    # no try (retries=0) and sends nothing twice
    assert script.connections == 1 + 2 and len(script.seen) == 4 + 3


def test_an_answer_that_comes_after_the_timeout_is_never_read_as_the_next_one(stand_in: tuple[str, Script]) -> None:
    url, script = stand_in
    late = {**ANSWER, "label": "anger"}
    script.replies, script.delay_s = [(200, late)], 0.5
    with Client(url, timeout=0.2, retries=0) as client:
        with pytest.raises(EndpointError, match="after 1 try;"):
            client.answer({"text": "slow"})
        script.delay_s = 0.0
        deadline = time.monotonic() + 30
        while script.answered < 1 and time.monotonic() < deadline:  # the late answer has gone out
            time.sleep(0.01)
        assert script.answered == 1
        assert client.answer({"text": "next"}) == ANSWER


def test_the_environments_proxy_is_used_as_urllib_would(stand_in: tuple[str, Script],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in plays the proxy: a plain-HTTP proxy gets the whole URL (and the login of the proxy URL)."""
    url, script = stand_in
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", url.replace("http://", "http://me:s%40cret@"))
    assert Client("http://endpoint.invalid:8080", token="t").answer({"text": "hi"}) == ANSWER
    assert script.targets == ["http://endpoint.invalid:8080/predictions/hjcag"]
    assert script.proxy_logins == ["Basic " + base64.b64encode(b"me:s@cret").decode()]
    assert script.seen[0][0] == "Bearer t"
    monkeypatch.setenv("no_proxy", "endpoint.invalid")
    with pytest.raises(EndpointError, match="cannot reach the endpoint"):
        Client("http://endpoint.invalid:8080", retries=0).answer({"text": "hi"})
    assert len(script.targets) == 1


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files), signed by itself: the client trusts it through
    SSL_CERT_FILE, as a user trusts an in-house CA."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hjcag test endpoint")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@contextlib.contextmanager
def connect_proxy() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A CONNECT proxy on loopback: yields its URL and the (target, Proxy-Authorization) of every tunnel opened."""
    tunnels: list[tuple[str, str | None]] = []

    class Tunnel(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            target = self.rfile.readline().decode().split()[1]  # CONNECT host:port HTTP/1.1
            login = None
            while (line := self.rfile.readline().decode()).strip():
                key, _, value = line.partition(":")
                login = value.strip() if key.lower() == "proxy-authorization" else login
            tunnels.append((target, login))
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port))) as upstream:
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                relay = threading.Thread(target=_pipe, args=(upstream, self.connection), daemon=True)
                relay.start()
                _pipe(self.connection, upstream)
                relay.join(timeout=5)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Tunnel)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tunnels
    finally:
        server.shutdown()
        server.server_close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def test_an_https_endpoint_directly_and_through_a_connect_tunnel_keeps_its_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    for name in ("no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    script = Script([], (200, ANSWER))
    with serving(script, tls) as url:
        # a certificate that fails the check fails every try alike: no second try (retries 3 would give 4 tries)
        with pytest.raises(EndpointError, match=r"CERTIFICATE_VERIFY_FAILED.* after 1 try; .*SSL_CERT_FILE, names a "
                                                r"CA bundle"):
            Client(url, retries=3, backoff=0.01).answer({"text": "hi"})
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        with Client(url, retries=0) as client:
            assert client.predict_dialogue([{"text": "a"}, {"text": "b"}]) == [ANSWER] * 2
        with connect_proxy() as (proxy, tunnels):
            monkeypatch.setenv("https_proxy", proxy.replace("http://", "http://me:pw@"))
            connections = script.connections
            with Client(url, token="t", retries=0) as client:
                assert client.predict_dialogue([{"text": "c"}, {"text": "d"}, {"text": "e"}]) == [ANSWER] * 3
    assert tunnels == [(url.removeprefix("https://"), "Basic " + base64.b64encode(b"me:pw").decode())]
    assert script.connections == connections + 1  # one tunnel, one TLS connection, three turns
    assert script.targets[-3:] == ["/predictions/hjcag"] * 3 and script.proxy_logins[-3:] == [None] * 3


def test_an_in_house_ca_is_trusted_through_ca_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str], features: Path) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = self_signed(tmp_path / "other")  # another CA: its certificate does not sign the endpoint's
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    for name in ("SSL_CERT_FILE", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    script = Script([], (200, ANSWER))
    with serving(script, tls) as url:
        with Client(url, retries=0, ca_file=cert) as client:
            assert client.predict_dialogue([{"text": "a"}, {"text": "b"}]) == [ANSWER] * 2
        with pytest.raises(EndpointError, match=r"CERTIFICATE_VERIFY_FAILED.*--ca-file, or SSL_CERT_FILE"):
            Client(url, retries=0, ca_file=other).answer({"text": "hi"})
        out = tmp_path / "rows.jsonl"
        code, _, err = predict(capsys, "--input", str(features), "--endpoint", url, "--ca-file", str(cert),
                               "--retries", "0", "--out", str(out))
        assert code == 0, err
        assert [r["label"] for r in read_rows(out)] == ["joy"] * len(IDS)
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    for bad, message in (("absent.pem", "CA file '{}' not found"), ("notes.txt", "CA file '{}' holds no PEM CA")):
        code, _, err = predict(capsys, "--input", str(features), "--endpoint", "https://127.0.0.1:1",
                               "--ca-file", str(tmp_path / bad), "--out", str(tmp_path / "none.jsonl"))
        assert_clear_error(code, err, message.format(tmp_path / bad), "--ca-file names a PEM file")


def test_an_endpoint_that_asks_for_a_client_certificate_gets_cert_file_s(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], features: Path) -> None:
    """Mutual TLS: the endpoint answers only clients whose certificate its CA signed. With --cert-file and
    --key-file (or one PEM file holding both) the client is answered; without, or with another CA's certificate,
    the error says which; bad certificate or key files are one-line errors before anything is sent."""
    for name in ("server", "client", "stranger"):
        (tmp_path / name).mkdir()
    cert, key = self_signed(tmp_path / "server")
    mine, my_key = self_signed(tmp_path / "client")
    stranger, stranger_key = self_signed(tmp_path / "stranger")
    both = tmp_path / "client" / "both.pem"
    both.write_bytes(mine.read_bytes() + my_key.read_bytes())
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.verify_mode = ssl.CERT_REQUIRED
    tls.load_verify_locations(mine)  # the client CA: here the client's own (self-signed) certificate
    for name in ("SSL_CERT_FILE", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    script = Script([], (200, ANSWER))
    with serving(script, tls) as url:
        with Client(url, retries=0, timeout=10, ca_file=cert, cert_file=mine, key_file=my_key) as client:
            assert client.predict_dialogue([{"text": "a"}, {"text": "b"}]) == [ANSWER] * 2
        with Client(url, retries=0, timeout=10, ca_file=cert, cert_file=both) as client:
            assert client.answer({"text": "c"}) == ANSWER
        # how the refusal reaches the client (an alert naming why, or the connection ended) is a race: either says
        with pytest.raises(EndpointError, match=r"ended the TLS session: if it asks for a client certificate, "
                                                r"pass --cert-file"):
            Client(url, retries=0, timeout=10, ca_file=cert).answer({"text": "hi"})
        with pytest.raises(EndpointError, match=r"ended the TLS session: is --cert-file signed by a CA the endpoint "
                                                r"trusts\?"):
            Client(url, retries=0, timeout=10, ca_file=cert, cert_file=stranger, key_file=stranger_key).answer(
                {"text": "hi"})
        out = tmp_path / "rows.jsonl"
        code, _, err = predict(capsys, "--input", str(features), "--endpoint", url, "--ca-file", str(cert),
                               "--cert-file", str(mine), "--key-file", str(my_key), "--retries", "0",
                               "--out", str(out))
        assert code == 0, err
        assert [r["label"] for r in read_rows(out)] == ["joy"] * len(IDS)
    assert len(script.seen) == 3 + len(IDS)  # the refused clients sent nothing the server read
    absent = tmp_path / "absent.pem"
    for extra, message in (
            (["--cert-file", str(absent)], f"--cert-file '{absent}' not found"),
            (["--cert-file", str(mine), "--key-file", str(stranger_key)], "KEY_VALUES_MISMATCH"),
            (["--cert-file", str(mine)], "(no --key-file given)"),
            (["--key-file", str(my_key)], "pass the certificate with --cert-file too")):
        code, _, err = predict(capsys, "--input", str(features), "--endpoint", "https://127.0.0.1:1", *extra,
                               "--out", str(tmp_path / "none.jsonl"))
        assert_clear_error(code, err, message)
    code, _, err = predict(capsys, "--input", str(features), "--endpoint", "http://127.0.0.1:1", "--cert-file",
                           str(both), "--out", str(tmp_path / "none.jsonl"))
    assert_clear_error(code, err, "a client certificate (--cert-file, --key-file) is for https endpoints")
    assert not (tmp_path / "none.jsonl").exists()


def test_an_encrypted_client_key_is_refused_not_prompted_for(tmp_path: Path) -> None:
    """OpenSSL would ask for the key's password on the terminal: a batch run would wait there for ever."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert, _ = self_signed(tmp_path)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(EndpointError, match=r"the private key in '.*locked.pem' is encrypted; give an unencrypted"):
        Client("https://127.0.0.1:1", cert_file=cert, key_file=locked)


def test_a_kserve_url_gets_instances_and_answers_from_predictions(stand_in: tuple[str, Script]) -> None:
    url, script = stand_in
    script.last = (200, {"predictions": [ANSWER]})
    assert Client(f"{url}/v1/models/hjcag:predict").answer({"text": "hi"}) == ANSWER
    assert script.seen == [(None, {"instances": [{"text": "hi"}]})]


def test_a_slow_endpoint_times_out_and_is_tried_again(stand_in: tuple[str, Script]) -> None:
    url, script = stand_in
    script.delay_s = 1.0
    with pytest.raises(EndpointError, match=r"cannot reach the endpoint .* after 2 tries"):
        Client(url, timeout=0.2, retries=1, backoff=0.01).answer({"text": "hi"})
    assert len(script.seen) == 2


def test_a_refusal_is_one_error_with_the_servers_message(stand_in: tuple[str, Script], features: Path,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4xx is not tried again; the CLI names the utterance and says the server's words; a refused token says how
    to pass it. The token comes from --token-file, else $HJCAG_TOKEN."""
    url, script = stand_in
    script.last = (400, {"code": 400, "type": "RequestError", "message": "features.text have 384 dims, the model "
                         "expects 10."})
    monkeypatch.setenv("HJCAG_TOKEN", "from-env")
    code, _, err = predict(capsys, "--input", str(features), "--endpoint", url, "--out", str(tmp_path / "o"),
                           "--concurrency", "1")
    assert_clear_error(code, err, "utterance 'd1u0' (dialogue 'd1', turn 0): the endpoint answered 400: "
                       "features.text have 384 dims, the model expects 10.")
    assert script.seen == [("Bearer from-env", script.seen[0][1])]
    packed = script.seen[0][1]["features"]["text"]
    assert packed["dtype"] == "float32" and packed["shape"] == [384] and "context" not in script.seen[0][1]

    script.seen.clear()
    script.last = (400, {"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed."})
    (tmp_path / "key").write_text("from-file\n")
    code, _, err = predict(capsys, "--input", str(features), "--endpoint", url, "--token-file",
                           str(tmp_path / "key"), "--out", str(tmp_path / "o"))
    assert_clear_error(code, err, "refused the token (400 InvalidKeyException: Token Authorization failed.)",
                       "--token-file or $HJCAG_TOKEN")
    assert {auth for auth, _ in script.seen} == {"Bearer from-file"}  # (both dialogues may have asked)
    assert not (tmp_path / "o" / "predictions.jsonl").exists()
