"""The committed dvc.lock is current (issue 20): `make demo` in a fresh clone re-runs no stage because of the
sources or params, and leaves dvc.lock as committed. `dvc status` compares each stage's recorded source and params
hashes with the working tree without running anything; the stages' own outputs (data/demo, build/) do not exist
in a clone, so a dependency on another stage's output is left to DVC's run-time check."""

from __future__ import annotations

import contextlib
import json
import py_compile
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")


def stale_entries(status: dict, outs: list[str]) -> list[str]:
    """What `dvc status --json` reports against the lock, but for dependencies that are stages' outputs."""
    def an_output(path: str) -> bool:
        return any(path == out or path.startswith(out.rstrip("/") + "/") for out in outs)

    stale = []
    for stage, changes in status.items():
        for change in changes:
            if change == "changed command":
                stale.append(f"{stage}: its command")
            elif isinstance(change, dict):
                for path, what in (change.get("changed deps") or {}).items():
                    if not an_output(path):
                        stale.append(f"{stage}: {path} {what}")
    return stale


@contextlib.contextmanager
def bytecode_beside(package: Path) -> Iterator[None]:
    """Python's bytecode in __pycache__ beside each source, as an interpreter without PYTHONDONTWRITEBYTECODE leaves
    it; removed again afterwards (what was there before stays)."""
    made: list[Path] = []
    for source in sorted(package.rglob("*.py")):
        cache = source.parent / "__pycache__"
        target = cache / f"{source.stem}.{sys.implementation.cache_tag}.pyc"
        if not cache.exists():
            made.append(cache)
        if not target.exists():
            py_compile.compile(str(source), cfile=str(target), doraise=True)
            made.append(target)
    try:
        yield
    finally:
        for path in reversed(made):  # files before their folders
            if path.is_dir():
                with contextlib.suppress(OSError):  # not empty: bytecode written meanwhile by another process
                    path.rmdir()
            else:
                path.unlink(missing_ok=True)


def test_the_committed_dvc_lock_matches_the_sources_and_params() -> None:
    """Also where Python writes bytecode beside the sources (the stages' code deps are folders of them)."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    outs = [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    with bytecode_beside(REPO / "src" / "hjcag"):
        done = subprocess.run([str(DVC), "status", "--json"], cwd=REPO, capture_output=True, text=True, check=True)
    stale = stale_entries(json.loads(done.stdout or "{}"), outs)
    assert not stale, ("dvc.lock is stale, so `make demo` would re-run stages and leave it modified: run `make demo` "
                       "on a committed tree and commit its dvc.lock (with README's demo figures from that run). "
                       f"Changed: {stale}")


def test_the_check_reports_a_changed_source_or_param_and_passes_outputs() -> None:
    status = {"train": [{"changed deps": {"build/features/features.npz": "deleted", "src/hjcag/train": "modified",
                                          "params.yaml": {"train": "modified"}}},
                        {"changed outs": {"build/train": "not in cache"}}, "changed command"],
              "prepare": [{"changed deps": {"data/demo": "deleted"}}]}
    assert stale_entries(status, ["data/demo", "build/features/features.npz", "build/train"]) == [
        "train: src/hjcag/train modified", "train: params.yaml {'train': 'modified'}", "train: its command"]
