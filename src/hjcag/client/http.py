"""The endpoint over HTTP (standard library only): :class:`Client`.

::

    from hjcag.client import Client, turn
    client = Client("http://127.0.0.1:8080", token=open("inference.key").read().strip())
    answers = client.predict_dialogue([turn(text="Hi!", speaker="Ross"), turn(text="Oh no.", speaker="Rachel")])

A KServe v1 URL (``.../v1/models/hjcag:predict``, the ``kserve`` overlay of k8s/) gets each request as
``{"instances": [request]}`` and its answer from ``{"predictions": [answer]}``.

A 503 (TorchServe busy or a worker restarting; a proxy's 502 / 504 alike), a refused or dropped connection and a
timeout are tried again after 0.5, 1, 2, ... s (a 503's Retry-After when longer); answering is stateless, so a
request sent twice is answered the same. Any other refusal is an :class:`EndpointError` with the server's message.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hjcag.client.conversation import Answer, DialogueClient, EndpointError

PREDICT_PATH = "/predictions/hjcag"  # TorchServe's route of the model hjcag.serve.package names
RETRY_STATUSES = (502, 503, 504)
TOKEN_ENV = "HJCAG_TOKEN"


class Client(DialogueClient):
    """A served hjcag model at `url`: ``http://host:8080``, the full ``.../predictions/hjcag`` URL, or KServe's
    ``.../v1/models/hjcag:predict``."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0, retries: int = 4,
                 backoff: float = 0.5, context_window: int | None = None) -> None:
        """`token`: the inference key (sent as ``Authorization: Bearer``); `timeout`: seconds per try; `retries`:
        tries after the first on 503 / connection errors, `backoff` s before the first of them and doubling;
        `context_window`: the model's (None: what its answers state, :mod:`hjcag.client.conversation`)."""
        super().__init__(context_window)
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise EndpointError(f"endpoint '{url}' is not an http(s) URL such as http://127.0.0.1:8080.")
        self.url = url.rstrip("/") + (PREDICT_PATH if parsed.path in ("", "/") else "")
        self.kserve = parsed.path.endswith(":predict")
        self.token, self.timeout, self.retries, self.backoff = token, timeout, retries, backoff

    def answer(self, body: Mapping[str, Any]) -> Answer:
        data = json.dumps({"instances": [body]} if self.kserve else body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return _json_answer(response.read(), self.url, self.kserve)
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")
                if exc.code not in RETRY_STATUSES or last:
                    raise refusal(exc.code, text, self.url) from None
                wait = max(self._wait(attempt), _retry_after(exc.headers.get("Retry-After")))
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                if last:
                    reason = getattr(exc, "reason", None) or exc
                    raise EndpointError(f"cannot reach the endpoint {self.url} ({reason}) after {attempt + 1} "
                                        "tries; is it running, and is the URL right?") from None
                wait = self._wait(attempt)
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, attempt: int) -> float:
        return float(self.backoff * 2**attempt)


def refusal(status: int, text: str, url: str) -> EndpointError:
    """The error for an HTTP refusal: the server's message (TorchServe and hjcag answer {"code", "type",
    "message"}), with what to do about a refused token."""
    try:
        reply = json.loads(text)
    except ValueError:
        reply = None
    message = str(reply.get("message")) if isinstance(reply, dict) and reply.get("message") else text.strip()
    kind = str(reply.get("type", "")) if isinstance(reply, dict) else ""
    message = " ".join(message.split())[:1000] or "(no message)"
    if status == 401 or kind == "InvalidKeyException":  # TorchServe 0.12 answers a wrong key with 400
        return EndpointError(f"the endpoint {url} refused the token ({status} {kind or 'Unauthorized'}: {message}); "
                             f"pass the inference key with --token-file or ${TOKEN_ENV}.", status, message)
    return EndpointError(f"the endpoint answered {status}: {message}", status, message)


def _json_answer(raw: bytes, url: str, kserve: bool) -> Answer:
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if kserve and isinstance(answer, dict) and isinstance(answer.get("predictions"), list) \
            and len(answer["predictions"]) == 1:
        answer = answer["predictions"][0]
    if not isinstance(answer, dict) or "probabilities" not in answer:
        raise EndpointError(f"{url} answered 200 with something that is not an hjcag answer: "
                            f"{raw[:200].decode('utf-8', 'replace')!r}; is it an hjcag endpoint?")
    return answer


def _retry_after(value: str | None) -> float:
    try:
        return min(float(value), 60.0) if value else 0.0
    except ValueError:
        return 0.0


def read_token(token_file: str | None = None) -> str | None:
    """The inference key: the first line of `token_file`, else ${HJCAG_TOKEN}, else None (a server without token
    authorization). Never from the command line, where other users of the machine can read it."""
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise EndpointError(f"token file '{path}' not found.")
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        if not lines or not lines[0].strip():
            raise EndpointError(f"token file '{path}' is empty; it holds the inference key.")
        return lines[0].strip()
    return os.environ.get(TOKEN_ENV) or None
