#!/usr/bin/env python3
"""Kubernetes exec probe for a TorchServe 0.12 server that keeps token authorization on.

Why an exec probe and not ``httpGet``: TorchServe checks the inference key on every inference-port
request, /ping included (without it: 400 InvalidKeyException). The key is random per process, written
to ``key_file.json`` in the server's working directory, and expires after ``token_expiration_min``
minutes, so no static probe header can carry it. kubelet therefore runs this script inside the
container: it reads the current inference key, calls ``GET /ping`` on the inference port, and when
the key was refused (it expired) it rotates it through the management API, which listens on
127.0.0.1 only, with the non-expiring API key: the same call an operator makes by hand
(docs/serving-operations.md). Standard library only: it runs in the serving image as is.

Modes:
  ready (default)  exit 0 only when /ping answers 200 with status "Healthy" (all models have their
                   workers); used by the startup and readiness probes.
  --live           exit 0 when the frontend answers /ping with any HTTP status; a worker that is
                   being restarted by TorchServe itself must not get the pod killed.

On failure it prints one line saying why; kubelet records it in the pod's events.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_INFERENCE_URL = "http://127.0.0.1:8080"
DEFAULT_MANAGEMENT_URL = "http://127.0.0.1:8081"


class ProbeError(Exception):
    """A probe failure with a message meant for the pod's events."""


def read_keys(key_file: Path, wait_s: float = 2.0) -> dict[str, str]:
    """Return {"inference": ..., "API": ...} from TorchServe's key_file.json. TorchServe rewrites the file in place
    when it mints a key (another probe rotating an expired one runs beside this one), so a file found empty or cut
    short is read again for up to `wait_s` seconds (well within the probes' 5 s timeout)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            data = json.loads(key_file.read_text(encoding="utf-8"))
            return {"inference": data["inference"]["key"], "API": data["API"]["key"]}
        except FileNotFoundError as exc:
            raise ProbeError(f"no key file at {key_file} (TorchServe not started yet, or another working dir)") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if time.monotonic() >= deadline:
                raise ProbeError(f"unreadable key file {key_file}: {exc}") from exc
        time.sleep(0.05)


def http_get(url: str, token: str, timeout: float) -> tuple[int, str]:
    """GET url with a bearer token; return (status, body). HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise ProbeError(f"no answer from {url}: {exc}") from exc


def token_refused(status: int, body: str) -> bool:
    """TorchServe 0.12 answers a wrong or expired key with 400 (401 on some paths) + InvalidKeyException."""
    return status in (400, 401) and "InvalidKeyException" in body


def rotate_inference_key(management_url: str, api_key: str, timeout: float) -> None:
    """Ask TorchServe for a new inference key; it rewrites key_file.json."""
    status, body = http_get(f"{management_url}/token?type=inference", api_key, timeout)
    if status != 200:
        raise ProbeError(f"inference key rotation refused ({status}): {body.strip()[:200]}")


def probe(key_file: Path, inference_url: str, management_url: str, timeout: float, live: bool) -> str:
    """Run one probe; return a short success note or raise ProbeError."""
    keys = read_keys(key_file)
    status, body = http_get(f"{inference_url}/ping", keys["inference"], timeout)
    if live:
        return f"frontend answered /ping with {status}"
    if token_refused(status, body):
        rotate_inference_key(management_url, keys["API"], timeout)
        keys = read_keys(key_file)
        status, body = http_get(f"{inference_url}/ping", keys["inference"], timeout)
    try:
        health = json.loads(body).get("status", "")
    except (ValueError, AttributeError):
        health = ""
    if status != 200 or health != "Healthy":
        raise ProbeError(f"/ping answered {status}: {body.strip()[:200]}")
    return "Healthy"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", action="store_true", help="liveness: any HTTP answer from /ping passes")
    parser.add_argument(
        "--key-file",
        type=Path,
        default=Path(os.environ.get("TS_KEY_FILE", "key_file.json")),
        help="TorchServe's key_file.json (default: $TS_KEY_FILE, else ./key_file.json)",
    )
    parser.add_argument("--inference-url", default=os.environ.get("TS_PROBE_INFERENCE_URL", DEFAULT_INFERENCE_URL))
    parser.add_argument("--management-url", default=os.environ.get("TS_PROBE_MANAGEMENT_URL", DEFAULT_MANAGEMENT_URL))
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per HTTP call")
    args = parser.parse_args(argv)
    try:
        note = probe(args.key_file, args.inference_url, args.management_url, args.timeout, args.live)
    except ProbeError as exc:
        print(f"probe failed: {exc}")
        return 1
    print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
