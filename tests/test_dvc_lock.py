"""The committed dvc.lock is current (issue 20): `make demo` in a fresh clone re-runs no stage because of the
sources or params, and leaves dvc.lock as committed. `dvc status` compares each stage's recorded source and params
hashes with the working tree without running anything; the stages' own outputs (data/demo, build/) do not exist
in a clone, so a dependency on another stage's output is left to DVC's run-time check."""

from __future__ import annotations

import json
import subprocess
import sys
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


def test_the_committed_dvc_lock_matches_the_sources_and_params() -> None:
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    outs = [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
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
