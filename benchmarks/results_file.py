"""Results files: every figure a benchmark run printed, with what it takes to run it again.

Each benchmark writes one JSON document per run: ``benchmarks/results/<benchmark>-<UTC time>.json`` by default, or
the path given by ``--results`` (alias ``--json``). Its keys:

- ``benchmark``, ``command`` (the interpreter and ``sys.argv`` as run), ``cwd``, ``pythonpath`` and ``hjcag`` (the
  package that was imported, and whether it is this checkout's ``src``);
- ``git``: ``commit`` and ``dirty`` (a tracked file differed from the commit), taken when the run started, and the
  changed files when dirty; ``null`` outside a git checkout;
- ``params``: sha256 of the repository's ``params.yaml``, and the benchmark's own (e.g. ``WORK/params.yaml``) and
  profiles where it has them; ``seeds`` and ``threads``;
- ``dataset``: for a benchmark on real data, which: its name, kind, path, each file's sha256, labels (and what it
  kept of it); absent otherwise;
- ``machine``: CPU count, torch threads, platform, Python and torch versions; ``started`` and ``finished`` (UTC);
- ``figures``: everything the script printed, as numbers.

A figure is regenerable when its file has a commit and ``dirty: false``: check out the commit and run ``command``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", "--json", type=Path, default=None, metavar="PATH",
                        help="the results file (default: benchmarks/results/<benchmark>-<UTC time>.json)")


def git_state(repo: Path = REPO) -> dict[str, Any] | None:
    """The checkout's commit and whether a tracked file differs from it (untracked files do not count)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "dirty": bool(changed), "changed": changed}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def start(benchmark: str) -> dict[str, Any]:
    """The run's record, taken before it measures anything (the tree as it ran, not as it was left)."""
    spec = importlib.util.find_spec("hjcag")
    origin = None if spec is None or spec.origin is None else str(Path(spec.origin).resolve().parent)
    own = REPO / "src" / "hjcag"
    if origin != str(own):  # said now, not found after an hours-long run: such a file is no figure of this tree
        print(f"warning: hjcag is imported from {origin}, not from this checkout ({own}); the results file will say "
              f"so, and README rows need this tree's own code: run with PYTHONPATH={own.parent}", file=sys.stderr)
    return {
        "benchmark": benchmark,
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "pythonpath": os.environ.get("PYTHONPATH"),
        "hjcag": {"path": origin, "in_this_checkout": origin == str(own)},
        "git": git_state(),
        "params": {"repository_sha256": sha256(REPO / "params.yaml")},
        "started": now(),
    }


def write(record: dict[str, Any], figures: object, path: Path | None = None, *, seeds: Sequence[int] = (),
          threads: int | None = None, params: Path | None = None, profiles: Sequence[str] = (),
          dataset: Mapping[str, Any] | None = None) -> Path:
    """Complete `record` (from :func:`start`) with the figures and the machine, and write it; returns the path."""
    import torch

    if params is not None:
        record["params"].update(path=str(params), sha256=sha256(params))
    record["params"]["profiles"] = list(profiles)
    if dataset is not None:
        record["dataset"] = dict(dataset)
    record.update(seeds=list(seeds), threads=threads, finished=now(), machine={
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__,
    }, figures=figures)
    stamp = record["started"].replace(":", "").replace("-", "").replace("+0000", "Z")
    path = path or RESULTS_DIR / f"{record['benchmark']}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=_plain) + "\n")
    print(f"results: {path}")
    return path


def _plain(value: object) -> object:
    """numpy scalars and arrays, paths: as JSON can hold them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
