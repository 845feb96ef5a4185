"""Run TorchServe on this machine with the hardened config hjcag ships: `hjcag serve-local`, tests, benchmarks.

TorchServe 0.12 writes its PID file to $TMPDIR, unpacks archives and opens its workers' unix sockets
(``.ts.sock.9000``...) in java.io.tmpdir (set from $TEMP), and writes ``key_file.json`` (the API tokens: token
authorization stays on) into its working directory. :class:`LocalTorchServe` gives each server
a private TMPDIR and working directory, binds every port (inference, management, metrics, both gRPC ports) to
free loopback ports through ``TS_*`` variables (the config sets enable_envvars_config=true), reads the inference
key from key_file.json, waits until the model's workers are READY (TorchServe 0.12's /ping says Healthy as soon
as the worker processes run, before they have loaded the model) and always stops what it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from hjcag.errors import HjcagError
from hjcag.serve.key_file import read_key_file
from hjcag.serve.package import MODEL_NAME, TORCHSERVE_DIR

DEFAULT_CONFIG = TORCHSERVE_DIR / "config.properties"
# hjcag's log4j2 configuration: TorchServe's own logs a dozen lines per request (log4j2.xml says which it drops).
DEFAULT_LOG_CONFIG = TORCHSERVE_DIR / "log4j2.xml"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def without_hjcag_sources(python_path: str) -> str:
    """`python_path` without the folders that hold an ``hjcag`` package (a checkout's ``src``): TorchServe puts the
    unpacked archive after the inherited PYTHONPATH, so such a folder would make the worker run its code instead of
    the code packed in the archive, which is what a deployed server runs."""
    kept = [entry for entry in python_path.split(os.pathsep)
            if entry and not (Path(entry) / "hjcag" / "__init__.py").is_file()]
    return os.pathsep.join(kept)


def _torchserve() -> str:
    beside = Path(sys.executable).parent / "torchserve"
    found = str(beside) if beside.exists() else shutil.which("torchserve")
    if found is None:
        raise HjcagError("torchserve not found; install torchserve==0.12.0 (and Java 17).")
    return found


class LocalTorchServe:
    """A TorchServe process on loopback; use as a context manager (``with LocalTorchServe(store) as ts:``)."""

    def __init__(
        self,
        model_store: str | Path,
        config: str | Path = DEFAULT_CONFIG,
        inference_port: int | None = None,
        work_dir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        log_config: str | Path | None = DEFAULT_LOG_CONFIG,
    ) -> None:
        """`log_config`: a log4j2.xml for the frontend (None: TorchServe's built-in one)."""
        self.model_store = Path(model_store).resolve()
        self.config = Path(config).resolve()
        self.log_config = None if log_config is None else Path(log_config).resolve()
        if not (self.model_store / f"{MODEL_NAME}.mar").exists():
            raise HjcagError(f"'{self.model_store}' holds no {MODEL_NAME}.mar; build it with `hjcag package` first.")
        self._own_dir = work_dir is None
        self.root = Path(tempfile.mkdtemp(prefix="hjcag-torchserve-")) if work_dir is None else Path(work_dir)
        self.work_dir = self.root / "work"
        self.tmp_dir = self.root / "tmp"
        self.log_dir = self.root / "logs"
        self.ports = {
            "inference": inference_port or free_port(),
            "management": free_port(),
            "metrics": free_port(),
            "grpc_inference": free_port(),
            "grpc_management": free_port(),
        }
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.token: str | None = None

    # ------------------------------------------------------------------------------------------- urls

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['management']}"

    @property
    def key_file(self) -> Path:
        return self.work_dir / "key_file.json"

    @property
    def console_log(self) -> Path:
        return self.log_dir / "console.log"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
        python_path = without_hjcag_sources(env.get("PYTHONPATH", ""))
        if python_path:
            env["PYTHONPATH"] = python_path
        else:
            env.pop("PYTHONPATH", None)
        env.update({
            "TMPDIR": str(self.tmp_dir),  # the launcher's PID file
            "TEMP": str(self.tmp_dir),  # java.io.tmpdir: unpacked archives and the workers' unix sockets
            "LOG_LOCATION": str(self.log_dir),
            "METRICS_LOCATION": str(self.log_dir),
            "TS_INFERENCE_ADDRESS": self.inference_url,
            "TS_MANAGEMENT_ADDRESS": self.management_url,
            "TS_METRICS_ADDRESS": f"http://127.0.0.1:{self.ports['metrics']}",
            "TS_GRPC_INFERENCE_PORT": str(self.ports["grpc_inference"]),
            "TS_GRPC_MANAGEMENT_PORT": str(self.ports["grpc_management"]),
            "TS_MODEL_STORE": str(self.model_store),
            # Where the keys are (TorchServe writes them to its working directory): the handler's worker cap
            # reads the management key there to scale an over-cap model back (hjcag.serve.worker_cap).
            "TS_KEY_FILE": str(self.key_file),
            # allowed_urls is pinned to the image's model store; pin it to this one the same way.
            "TS_ALLOWED_URLS": f"file://{self.model_store}/[A-Za-z0-9._-]+\\.mar",
        })
        env.update(self.extra_env)
        return env

    # ------------------------------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 240.0) -> LocalTorchServe:
        for d in (self.work_dir, self.tmp_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        command = [_torchserve(), "--start", "--foreground", "--ncs", "--ts-config", str(self.config),
                   "--model-store", str(self.model_store)]
        if self.log_config is not None:
            command += ["--log-config", str(self.log_config)]
        with self.console_log.open("ab") as out:
            # A session of its own: stop() can signal the launcher, the JVM and the Python workers together.
            self.process = subprocess.Popen(command, cwd=self.work_dir, env=self.environment(), stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise HjcagError(f"torchserve exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.key_file.exists():
                try:
                    self.token = self.read_keys()["inference"]
                    reply = self.request("GET", "/ping", timeout=10)
                    last = f"/ping {reply.status} {reply.text.strip()[:200]}"
                    # /ping says Healthy once the worker *processes* run, before they have loaded the model:
                    # ready means every worker of the model is READY in the management API.
                    if reply.status == 200 and reply.json().get("status") == "Healthy":
                        states = self.worker_states()
                        last = f"workers {states}"
                        if states and all(s == "READY" for s in states):
                            return
                except (OSError, ValueError, KeyError) as exc:
                    last = str(exc)
            time.sleep(0.5)
        raise HjcagError(f"torchserve not ready after {timeout:.0f} s (last: {last}):\n{self.log_tail()}")

    def worker_states(self) -> list[str]:
        """The model's worker states from the (loopback) management API, e.g. ['READY']."""
        req = urllib.request.Request(f"{self.management_url}/models/{MODEL_NAME}",
                                     headers={"Authorization": f"Bearer {self.read_keys()['management']}"})
        with urllib.request.urlopen(req, timeout=10) as response:
            return [str(w.get("status")) for w in json.loads(response.read())[0].get("workers", [])]

    def read_keys(self) -> dict[str, str]:
        return read_key_file(self.key_file)

    def stop(self, timeout: float = 60.0) -> None:
        """Ask TorchServe to stop (it waits for in-flight work), then end the process group if it lingers."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            subprocess.run([_torchserve(), "--stop"], env=self.environment(), cwd=self.work_dir,
                           capture_output=True, timeout=timeout, check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
        if process is not None:
            # Whatever is left of the session started above (launcher, JVM, workers): TERM, then KILL.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
                time.sleep(0.5)
        if self._own_dir:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalTorchServe:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        parts = []
        for path in (self.console_log, self.log_dir / "model_log.log"):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    # ----------------------------------------------------------------------------------------- calls

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
                token: str | None = None, timeout: float = 120.0) -> Reply:
        """One HTTP call to the inference API with the inference key; HTTP errors are returned, not raised."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if body is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.inference_url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return Reply(response.status, response.read().decode("utf-8", "replace"), dict(response.headers))
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read().decode("utf-8", "replace"), dict(exc.headers))

    def predict(self, payload: Any, timeout: float = 120.0) -> Reply:
        """POST a JSON payload to /predictions/hjcag."""
        return self.request("POST", f"/predictions/{MODEL_NAME}", json.dumps(payload).encode(), timeout=timeout)


@dataclass(frozen=True)
class Reply:
    status: int
    text: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.text)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


def serve_local(model_store: str | Path, port: int = 8080, config: str | Path = DEFAULT_CONFIG) -> int:
    """`hjcag serve-local`: TorchServe on 127.0.0.1:`port` with the config hjcag ships, until Ctrl-C."""
    server = LocalTorchServe(model_store, config, inference_port=port)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # `kill` / docker stop: shut down like Ctrl-C

    signal.signal(signal.SIGTERM, terminate)
    print(f"starting TorchServe on {server.inference_url} (logs: {server.log_dir}) ...", flush=True)
    try:
        server.start()
        print(f"ready: POST {server.inference_url}/predictions/{MODEL_NAME} with 'Authorization: Bearer {server.token}'"
              f"\nkeys (rotate with the management API, see docs/serving-operations.md): {server.key_file}"
              f"\nmanagement API: {server.management_url}; Ctrl-C stops the server.", flush=True)
        assert server.process is not None
        server.process.wait()
        return 1  # the server ended by itself
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
