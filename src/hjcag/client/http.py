"""The endpoint over HTTP (standard library only): :class:`Client`.

::

    from hjcag.client import Client, turn
    client = Client("http://127.0.0.1:8080", token=open("inference.key").read().strip())
    answers = client.predict_dialogue([turn(text="Hi!", speaker="Ross"), turn(text="Oh no.", speaker="Rachel")])

A KServe v1 URL (``.../v1/models/hjcag:predict``, the ``kserve`` overlay of k8s/) gets each request as
``{"instances": [request]}`` and its answer from ``{"predictions": [answer]}``.

Each thread keeps one keep-alive connection (``hjcag predict`` answers dialogues in parallel threads, each turn
after the previous one): a turn pays no new TCP (or TLS) handshake. A kept connection the server has since closed
is opened again at once, not counted as a try. ``http(s)_proxy`` / ``no_proxy`` in the environment are honoured as
urllib honours them (an HTTPS endpoint through a CONNECT tunnel). An HTTPS endpoint's certificate is checked against
the system's CAs (or SSL_CERT_FILE's), or against `ca_file` alone when given (an in-house CA). An endpoint that
asks for a client certificate (mutual TLS, e.g. an ingress with client authentication) gets `cert_file`'s, with its
private key from `key_file` or from the same PEM file.

A 503 (TorchServe busy or a worker restarting; a proxy's 502 / 504 alike), a refused or dropped connection and a
timeout are tried again after 0.5, 1, 2, ... s (a 503's Retry-After when longer), on a new connection; answering is
stateless, so a request sent twice is answered the same. A TLS failure that another try cannot mend (the endpoint's
certificate fails the check, or a TLS alert: an unknown CA, a client certificate required) ends at once. Any other
refusal is an :class:`EndpointError` with the server's message.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hjcag.client.body import request_json
from hjcag.client.conversation import Answer, DialogueClient, EndpointError

PREDICT_PATH = "/predictions/hjcag"  # TorchServe's route of the model hjcag.serve.package names
RETRY_STATUSES = (502, 503, 504)
TOKEN_ENV = "HJCAG_TOKEN"


class Client(DialogueClient):
    """A served hjcag model at `url`: ``http://host:8080``, the full ``.../predictions/hjcag`` URL, or KServe's
    ``.../v1/models/hjcag:predict``."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0, retries: int = 4,
                 backoff: float = 0.5, context_window: int | None = None, ca_file: str | Path | None = None,
                 cert_file: str | Path | None = None, key_file: str | Path | None = None) -> None:
        """`token`: the inference key (sent as ``Authorization: Bearer``); `timeout`: seconds per try; `retries`:
        tries after the first on 503 / connection errors, `backoff` s before the first of them and doubling;
        `context_window`: the model's (None: what its answers state, :mod:`hjcag.client.conversation`); `ca_file`:
        PEM certificates of the CA(s) an HTTPS endpoint's certificate must chain to (default: the system's);
        `cert_file` / `key_file`: this client's certificate and private key (PEM) for an endpoint that asks for one
        (`key_file` None: the key is in `cert_file`)."""
        super().__init__(context_window)
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise EndpointError(f"endpoint '{url}' is not an http(s) URL such as http://127.0.0.1:8080.")
        self.url = url.rstrip("/") + (PREDICT_PATH if parsed.path in ("", "/") else "")
        self.kserve = parsed.path.endswith(":predict")
        self.token, self.timeout, self.retries, self.backoff = token, timeout, retries, backoff
        self._route = _Route.of(urllib.parse.urlsplit(self.url))
        if (cert_file is not None or key_file is not None) and not self._route.https:
            raise EndpointError(f"a client certificate (--cert-file, --key-file) is for https endpoints; '{url}' is "
                                "plain http.")
        self._tls = _tls_context(ca_file, cert_file, key_file)
        self._client_certificate = cert_file is not None
        self._local = threading.local()  # .connection: this thread's kept connection
        self._opened: list[http.client.HTTPConnection] = []  # every thread's, for close()
        self._opened_lock = threading.Lock()

    def answer(self, body: Mapping[str, Any]) -> Answer:
        data = request_json({"instances": [body]} if self.kserve else body).encode("utf-8")
        headers = {"Content-Type": "application/json", **self._route.headers()}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                status, retry_after, raw = self._post(data, headers)
            except (http.client.HTTPException, OSError) as exc:  # refused, reset, timed out, TLS, DNS
                if last or _tls_refusal(exc):
                    hint = _unreachable_hint(exc, self._route.https, self._client_certificate)
                    raise EndpointError(f"cannot reach the endpoint {self.url} ({exc or type(exc).__name__}) "
                                        f"after {attempt + 1} {'try' if attempt == 0 else 'tries'}; {hint}") from None
                wait = self._wait(attempt)
            else:
                if 200 <= status < 300:
                    return _json_answer(raw, self.url, self.kserve)
                if status not in RETRY_STATUSES or last:
                    raise refusal(status, raw.decode("utf-8", "replace"), self.url)
                wait = max(self._wait(attempt), _retry_after(retry_after))
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close every thread's kept connection (a later request opens a new one)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()

    def _post(self, data: bytes, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
        """One POST on this thread's kept connection: (status, Retry-After, body). A kept connection found closed
        by the server before it answered is replaced once; any other failure drops the connection (a late answer
        must never be read as the next request's) and is raised."""
        for fresh in (False, True):
            connection = None if fresh else getattr(self._local, "connection", None)
            reused = connection is not None
            if connection is None:
                connection = self._connect()
            try:
                connection.request("POST", self._route.target, body=data, headers=headers)
                response = connection.getresponse()
                raw = response.read()
            except BaseException as exc:
                self._drop(connection)
                # the server closed a kept connection while it was idle (RemoteDisconnected is both kinds)
                if reused and isinstance(exc, ConnectionResetError | BrokenPipeError | http.client.BadStatusLine):
                    continue
                raise
            if response.will_close:
                self._drop(connection)
            return response.status, response.getheader("Retry-After"), raw
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> http.client.HTTPConnection:
        connection = self._route.connection(self.timeout, self._tls)
        self._local.connection = connection
        with self._opened_lock:
            self._opened.append(connection)
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._opened_lock:
            if connection in self._opened:
                self._opened.remove(connection)

    def _wait(self, attempt: int) -> float:
        return float(self.backoff * 2**attempt)


def _tls_context(ca_file: str | Path | None, cert_file: str | Path | None = None,
                 key_file: str | Path | None = None) -> ssl.SSLContext | None:
    """The TLS settings of an HTTPS endpoint: its certificate checked against `ca_file`'s CAs only (None: the
    system's, or SSL_CERT_FILE's), and this client's certificate when `cert_file` names one. None when neither is
    given: http.client's default context."""
    if ca_file is None and cert_file is None and key_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except FileNotFoundError:
        raise EndpointError(f"CA file '{ca_file}' not found; --ca-file names a PEM file of CA certificates.") from None
    except ssl.SSLError as exc:
        raise EndpointError(f"CA file '{ca_file}' holds no PEM CA certificate ({exc.reason or exc}); --ca-file names "
                            "a PEM file of CA certificates.") from None
    if key_file is not None and cert_file is None:
        raise EndpointError("--key-file is the private key of a client certificate: pass the certificate with "
                            "--cert-file too.")
    if cert_file is not None:
        for option, path in (("--cert-file", cert_file), ("--key-file", key_file)):
            if path is not None and not Path(path).is_file():
                raise EndpointError(f"{option} '{path}' not found.")
        try:
            context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file),
                                    password=_no_password(key_file or cert_file))
        except ssl.SSLError as exc:
            key = f"'{key_file}'" if key_file is not None else f"'{cert_file}' (no --key-file given)"
            raise EndpointError(f"cannot use the client certificate '{cert_file}' with the private key in {key} "
                                f"({exc.reason or exc}): --cert-file names a PEM certificate and --key-file its "
                                "unencrypted PEM private key (or --cert-file one PEM file holding both).") from None
    return context


def _no_password(key_file: str | Path) -> Callable[[], bytes]:
    """load_cert_chain's password callback: an encrypted key is refused (OpenSSL would otherwise prompt on the
    terminal, and a batch run would hang there)."""
    def refuse() -> bytes:
        raise EndpointError(f"the private key in '{key_file}' is encrypted; give an unencrypted copy (e.g. `openssl "
                            "pkey -in KEY.pem -out plain.pem`, kept readable by you alone) as --key-file.")
    return refuse


def _tls_refusal(exc: BaseException) -> bool:
    """A TLS failure that another try cannot mend: the endpoint's certificate failed the check, or the handshake
    ended with an alert (an unknown CA, a client certificate required, TLS spoken to a plain port). An end of the
    connection without an alert (EOF, reset) may be a dropped connection and is tried again."""
    ended = ssl.SSLEOFError | ssl.SSLSyscallError | ssl.SSLZeroReturnError  # (the Want* errors: non-blocking only)
    return isinstance(exc, ssl.SSLError) and not isinstance(exc, ended)


def _unreachable_hint(exc: BaseException, https: bool, client_certificate: bool) -> str:
    """What to check when the endpoint could not be reached with `exc`. An endpoint that wants a client certificate
    ends the TLS session after the handshake: with an alert naming why, or (racing the client's request) a bare
    close or reset, so any such end of an https connection mentions the client certificate."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ("does it present a certificate of a CA this client trusts? (--ca-file, or SSL_CERT_FILE, names a "
                "CA bundle)")
    if https and isinstance(exc, ssl.SSLError | ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        if client_certificate:
            return "the endpoint ended the TLS session: is --cert-file signed by a CA the endpoint trusts?"
        return "the endpoint ended the TLS session: if it asks for a client certificate, pass --cert-file."
    return "is it running, and is the URL right?"


@dataclass(frozen=True)
class _Route:
    """Where a request goes: straight to the endpoint, or through the environment's proxy (as urllib would)."""

    https: bool
    host: str
    port: int
    target: str  # the request line's target: the path, or the whole URL for a plain-HTTP proxy
    proxy: tuple[str, int] | None = None
    proxy_login: str | None = None  # the Proxy-Authorization header, when the proxy URL carries a user

    @classmethod
    def of(cls, url: urllib.parse.SplitResult) -> _Route:
        https = url.scheme == "https"
        host, port = url.hostname or "", url.port or (443 if https else 80)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        proxy = urllib.request.getproxies().get(url.scheme)
        if not proxy or urllib.request.proxy_bypass(host):
            return cls(https, host, port, path)
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parsed.scheme != "http" or not parsed.hostname:
            raise EndpointError(f"the {url.scheme}_proxy in the environment ({proxy}) is not an http://host:port "
                                "proxy, which is all this client can use; set no_proxy for the endpoint's host.")
        login = None
        if parsed.username is not None:  # http://user:password@proxy:port
            pair = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}"
            login = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        return cls(https, host, port, path if https else urllib.parse.urlunsplit(url),
                   (parsed.hostname, parsed.port or 80), login)

    def connection(self, timeout: float, tls: ssl.SSLContext | None) -> http.client.HTTPConnection:
        if self.proxy is None:
            if self.https:
                return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=tls)
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        if not self.https:
            return http.client.HTTPConnection(*self.proxy, timeout=timeout)
        connection = http.client.HTTPSConnection(*self.proxy, timeout=timeout, context=tls)
        connection.set_tunnel(self.host, self.port, headers=self.login())
        return connection

    def headers(self) -> dict[str, str]:
        """What every request adds: a plain-HTTP proxy's login (an HTTPS tunnel sends it once, when opened)."""
        return {} if self.https else self.login()

    def login(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.proxy_login} if self.proxy_login else {}


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
