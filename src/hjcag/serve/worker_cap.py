"""A cap on the TorchServe workers of a model, enforced where every worker passes: the handler's initialize.

TorchServe 0.12 has no max-workers setting: ``PUT /models/hjcag?min_worker=50`` on the management API starts 49 more
worker processes (each holds a copy of the model and the extractors, about 1 GiB), and model-config.yaml's
``maxWorkers`` does not stop it. So before a worker loads anything it claims one of ``cap`` slots: an exclusive
``flock`` on a file in the model directory, which all workers of the model share and which the kernel releases when
the process dies. A worker that finds every slot taken loads nothing and fails its initialization; first it asks
TorchServe, through the loopback management API and its key, to scale the model back to ``cap`` workers, so that the
refused workers are stopped instead of retried forever and ``/ping`` (Healthy only with ``minWorkers`` workers) does
not turn the pod unready. It reads the management key from ``TS_KEY_FILE`` (the image and the manifests set it; an
expired key is rotated with the API key) and the address from ``TS_MANAGEMENT_ADDRESS``, else config.properties'
``127.0.0.1:8081``. The flock is the guarantee;
the scale-down is housekeeping and may fail (it is logged).

The cap is ``HJCAG_MAX_WORKERS`` when set (the pod's environment, sized to its memory limit), else model-config.yaml's
``maxWorkers`` (packed into the .mar).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hjcag.errors import ConfigError, HjcagError
from hjcag.serve.key_file import read_key_file

log = logging.getLogger(__name__)
CAP_ENV = "HJCAG_MAX_WORKERS"
SLOT_FILE = ".hjcag-worker-slot-{}.lock"
# Where the management API listens unless TS_MANAGEMENT_ADDRESS says otherwise: config.properties' value.
DEFAULT_MANAGEMENT_URL = "http://127.0.0.1:8081"


class WorkerCapReached(HjcagError):
    """Every worker slot of the model is taken: this worker must not load the model."""


@dataclass
class WorkerSlot:
    """A claimed slot: the open, flock-ed file. Keep it for the life of the worker process."""

    index: int
    cap: int
    handle: IO[bytes]


def worker_cap(model_yaml_config: Mapping[str, Any] | None, environ: Mapping[str, str] = os.environ) -> int:
    """HJCAG_MAX_WORKERS, else model-config.yaml's maxWorkers, else 1."""
    raw = environ.get(CAP_ENV, "").strip()
    source = f"{CAP_ENV}={raw!r}"
    if not raw:
        raw = str((model_yaml_config or {}).get("maxWorkers", 1))
        source = f"model-config.yaml maxWorkers {raw!r}"
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"worker cap {source} is not a positive integer; set it to the number of workers the "
                          "container's memory holds (each about 1 GiB).")
    return int(raw)


def claim_slot(lock_dir: str | Path, cap: int) -> WorkerSlot | None:
    """The first free one of `cap` slots in `lock_dir`, or None when all are held by live processes."""
    for index in range(cap):
        handle = (Path(lock_dir) / SLOT_FILE.format(index)).open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return WorkerSlot(index, cap, handle)
    return None


def hold_worker_slot(context: Any, environ: Mapping[str, str] = os.environ) -> WorkerSlot:
    """Claim a slot for this TorchServe worker (`context`: the handler's context), or scale the model back to the
    cap and raise :class:`WorkerCapReached`."""
    cap = worker_cap(getattr(context, "model_yaml_config", None), environ)
    slot = claim_slot(context.system_properties["model_dir"], cap)
    if slot is not None:
        log.info("worker slot %d of %d", slot.index + 1, cap)
        return slot
    message = (f"{cap} of {cap} worker slots are taken: this worker loads nothing. The cap is {CAP_ENV}, else "
               f"model-config.yaml maxWorkers; scale with min_worker <= {cap}.")
    log.error(message)  # now: the scale-down below may stop this process before it returns
    raise WorkerCapReached(f"{message} {scale_back(context.model_name, cap, environ)}")


def scale_back(model_name: str, cap: int, environ: Mapping[str, str] = os.environ) -> str:
    """Ask the management API to run `cap` workers when more were asked for; a sentence saying what happened."""
    url = environ.get("TS_MANAGEMENT_ADDRESS", DEFAULT_MANAGEMENT_URL).rstrip("/")
    key_file = Path(environ.get("TS_KEY_FILE", "key_file.json"))
    model = f"{url}/models/{urllib.parse.quote(model_name)}"
    try:
        key = _management_key(key_file)
        try:
            described = _call("GET", model, key)[0]
        except urllib.error.HTTPError as exc:
            if key is None or exc.code not in (400, 401):
                raise
            # The management key expires (token_expiration_min): mint a new one with the API key, as the probe
            # does for the inference key; TorchServe rewrites the key file.
            _call("GET", f"{url}/token?type=management", _management_key(key_file, "API"))
            key = _management_key(key_file)
            described = _call("GET", model, key)[0]
        asked = int(described["minWorkers"])
        if asked <= cap and len(described.get("workers", [])) <= cap:
            return f"the model asks for {asked} workers: a slot is still held by a worker on its way out"
        query = urllib.parse.urlencode({"min_worker": cap, "max_worker": cap, "synchronous": "false"})
        _call("PUT", f"{model}?{query}", key)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("could not scale %s back to %d workers through %s: %s", model_name, cap, url, exc)
        return f"scaling back to {cap} failed: {exc}"
    log.warning("%s: %d workers were asked for, the cap is %d: scaled back to %d", model_name, asked, cap, cap)
    return f"{asked} workers were asked for: scaled back to {cap}"


def _management_key(key_file: Path, kind: str = "management") -> str | None:
    """A key from TorchServe's key_file.json; None without the file (token authorization off, as under KServe)."""
    if not key_file.exists():
        return None
    return read_key_file(key_file)[kind]


def _call(method: str, url: str, key: str | None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    with contextlib.closing(urllib.request.urlopen(request, timeout=10)) as response:
        return json.loads(response.read() or b"null")
