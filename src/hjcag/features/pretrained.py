"""Loading pretrained models without hanging offline, plus the device / mixed-precision choice.

``from_pretrained(hub_id)`` with no network retries for about 25 s per file before failing. We first try the local
Hugging Face cache (``local_files_only=True``); only when the model is not there, and the hub answers a 3 s TCP
probe, do we go online. Offline, callers get :class:`PretrainedUnavailable` at once and fall back loudly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import torch

from hjcag.errors import ConfigError
from hjcag.progress import quiet_library_bars

log = logging.getLogger(__name__)
T = TypeVar("T")
PROBE_TIMEOUT_S = 3.0
_reachable: dict[str, bool] = {}


class PretrainedUnavailable(Exception):
    """A hub model is neither cached locally nor downloadable (offline)."""


def announce(message: str) -> None:
    """A warning that must not be missed, said once: a WARNING log record. The CLI's handler prints it to stderr;
    where logging is not configured, Python's last-resort handler does (it prints warnings and worse), so it is
    never silent. (It used to be printed as well, which showed every fallback twice under the CLI.)"""
    log.warning(message)


@contextlib.contextmanager
def without_load_report() -> Iterator[None]:
    """Leave out transformers' load report for one load: a colour-coded table of the weights a checkpoint did not
    match, logged as a warning even where they are expected (a new classification head is 'MISSING'). The caller asks
    for the same facts (``output_loading_info=True``) and says what matters in one line (:func:`new_head_weights`).
    A filter, not a level: transformers 5 checks the tensor-parallel plan, and warns about it, when that logger's
    level is WARNING or above."""
    report = logging.getLogger("transformers.modeling_utils")

    def not_the_report(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()

    report.addFilter(not_the_report)
    try:
        yield
    finally:
        report.removeFilter(not_the_report)


def new_head_weights(model: Any, loading_info: dict[str, list[str]], source: str,
                     setting: str = "features.text_model", unused: tuple[str, ...] = ()) -> list[str]:
    """The weights `model` lacked in the checkpoint `source`: those of a new task head (returned) are expected; any
    of the encoder's own body means the checkpoint is not the encoder the user meant, which is said loudly (naming
    the params `setting` that chose it), but for the body's `unused` parts (name prefixes). Weights the checkpoint
    has and the model does not (a fine-tuned encoder's or an image classifier's head, read as a bare encoder) are
    left out."""
    has_head = model.base_model is not model
    body = f"{model.base_model_prefix}." if has_head else ""
    missing = sorted(loading_info.get("missing_keys", []))
    lost = [k for k in missing if k.startswith(body) and not k.removeprefix(body).startswith(unused)]
    if lost:
        shown = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
        announce(f"the checkpoint at '{source}' lacks {len(lost)} weight(s) of the encoder itself ({shown}): they "
                 f"start from random values. Is {setting} the encoder you meant?")
    return [k for k in missing if not k.startswith(body)]


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (or the HTTPS proxy) opens within `timeout` seconds."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    target = f"{host}:{port}"
    if target not in _reachable:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                _reachable[target] = True
        except OSError:
            _reachable[target] = False
    return _reachable[target]


def is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().exists()


def load_pretrained(loader: Callable[..., T], name_or_path: str, **kwargs: Any) -> tuple[T, dict[str, Any]]:
    """``loader(name_or_path, **kwargs)`` (e.g. ``AutoModel.from_pretrained``) that fails fast offline.

    A local directory must load (a broken one is a :class:`ConfigError`); a hub id is taken from the local cache,
    else downloaded when the hub is reachable, else :class:`PretrainedUnavailable` is raised. Returns the object
    and the extra keyword arguments that worked (pass them to later loads of the same model, so a cached model
    is not looked up online again).
    """
    quiet_library_bars()  # no "Loading weights" bar per model where our own progress is log lines
    path = Path(name_or_path).expanduser()
    if path.exists():
        try:
            return loader(str(path), **kwargs), {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load a pretrained model from the local directory '{path}': {exc}") from exc
    try:
        return loader(name_or_path, local_files_only=True, **kwargs), {"local_files_only": True}
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise PretrainedUnavailable(
            f"'{name_or_path}' is not in the local Hugging Face cache and the hub cannot be reached (offline)"
        )
    try:
        return loader(name_or_path, **kwargs), {}
    except (OSError, ValueError) as exc:
        raise PretrainedUnavailable(f"'{name_or_path}' could not be downloaded: {exc}") from exc


def resolve_device(spec: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cpu' / 'cuda' / 'cuda:1' as given (CUDA must exist)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"features.device is '{spec}' but no CUDA device is available. Use 'auto' or 'cpu'.")
    try:
        return torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"features.device '{spec}' is not a valid torch device ({exc}).") from exc


@contextlib.contextmanager
def inference_mode(device: torch.device) -> Iterator[None]:
    """No gradients; on CUDA, autocast to bf16 (fp16 where bf16 is unsupported). CPU stays fp32."""
    with torch.inference_mode():
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                yield
        else:
            yield
