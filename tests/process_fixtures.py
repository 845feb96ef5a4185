"""Killing a CLI process at a chosen moment, as kill -9 would (the resume tests).
Import with `import process_fixtures` (tests/conftest.py puts this directory on sys.path)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def kill_when(proc: subprocess.Popen[str], ready: Callable[[], T | None], timeout_s: float, waiting_for: str) -> T:
    """Poll `ready()` until it returns something (not None / False), then SIGKILL `proc` and return that. Fails when
    the process ends first (with its stderr) or nothing is ready within `timeout_s`: no fixed sleep decides."""
    deadline = time.monotonic() + timeout_s
    try:
        while not (found := ready()):
            assert proc.poll() is None, f"it ended before it could be killed:\n{proc.stderr.read()[-3000:]}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"{waiting_for}: not within {timeout_s:.0f} s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return found
