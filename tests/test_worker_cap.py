"""hjcag.serve.worker_cap without TorchServe: the cap's source, the flock slots, and reading TorchServe's key file
while it is rewritten (tests/test_torchserve.py drives the real server past the cap)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hjcag.errors import ConfigError
from hjcag.serve.key_file import read_key_file
from hjcag.serve.worker_cap import CAP_ENV, claim_slot, worker_cap


def test_the_cap_is_the_environment_else_max_workers() -> None:
    assert worker_cap({"maxWorkers": 3}, {}) == 3
    assert worker_cap({"maxWorkers": 3}, {CAP_ENV: "1"}) == 1
    assert worker_cap({"maxWorkers": 3}, {CAP_ENV: " "}) == 3
    assert worker_cap(None, {}) == 1
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ConfigError, match=f"{CAP_ENV}='{bad}' is not a positive integer"):
            worker_cap({"maxWorkers": 2}, {CAP_ENV: bad})
    with pytest.raises(ConfigError, match="maxWorkers '0'"):
        worker_cap({"maxWorkers": 0}, {})


def test_slots_run_out_at_the_cap_and_come_back_when_a_holder_goes(tmp_path: Path) -> None:
    first, second = claim_slot(tmp_path, 2), claim_slot(tmp_path, 2)
    assert first is not None and second is not None and {first.index, second.index} == {0, 1}
    assert claim_slot(tmp_path, 2) is None
    second.handle.close()  # the process holding it ended
    again = claim_slot(tmp_path, 2)
    assert again is not None and again.index == second.index
    assert claim_slot(tmp_path, 3) is not None  # a larger cap has room


def test_a_slot_held_by_another_process_is_taken(tmp_path: Path) -> None:
    """The lock holds across processes (TorchServe's workers), and is released when the holder exits."""
    code = ("import sys; from hjcag.serve.worker_cap import claim_slot; s = claim_slot(sys.argv[1], 1); "
            "print(s.index, flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0"
        assert claim_slot(tmp_path, 1) is None
    finally:
        holder.communicate("", timeout=30)
    assert claim_slot(tmp_path, 1) is not None


KEYS = {"inference": {"key": "i"}, "management": {"key": "m", "expiration time": "x"}, "API": {"key": "a"}}


def test_a_key_file_found_mid_rewrite_is_read_again_until_whole(tmp_path: Path) -> None:
    """TorchServe rewrites key_file.json in place when it mints a key: a reader may find it empty for a moment (a
    test against the real server once did). Here the file is empty when the read starts and whole 0.3 s later."""
    path = tmp_path / "key_file.json"
    path.write_text("")
    writer = threading.Timer(0.3, lambda: path.write_text(json.dumps(KEYS)))
    writer.start()
    try:
        assert read_key_file(path) == {"inference": "i", "management": "m", "API": "a"}
    finally:
        writer.cancel()
    path.write_text('{"inference": {"key": "i"}')  # cut short, and it stays so
    with pytest.raises(ValueError, match="does not hold the inference, management, API keys"):
        read_key_file(path, wait_s=0.2)
