"""TorchServe's ``key_file.json`` (the API tokens of token authorization), read while TorchServe may be rewriting it.

TorchServe rewrites the file in place whenever a key is minted (``GET /token``, e.g. a refused worker renewing the
expired management key: :mod:`hjcag.serve.worker_cap`), so a reader can find it empty or cut short for a moment.
:func:`read_key_file` reads it again until it is whole, for up to `wait_s` seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

KINDS = ("inference", "management", "API")


def read_key_file(path: Path, wait_s: float = 5.0) -> dict[str, str]:
    """{"inference", "management", "API"} -> key; ValueError when the file is still not whole JSON holding the three
    keys after `wait_s` seconds, FileNotFoundError when there is none (token authorization off)."""
    deadline = time.monotonic() + wait_s
    while True:
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
            return {kind: str(data[kind]["key"]) for kind in KINDS}
        except (ValueError, KeyError, TypeError) as exc:
            if time.monotonic() >= deadline:
                raise ValueError(f"TorchServe's key file '{path}' does not hold the {', '.join(KINDS)} keys "
                                 f"({exc}; {len(text)} characters)") from None
        time.sleep(0.05)
