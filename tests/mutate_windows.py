"""Prove that the serving-context tests catch a broken window builder (issue 20): run them against mutated copies
of `Predictor._windows`, each break a bug a window builder could have, and report which tests fail.

    .venv/bin/python tests/mutate_windows.py            # about 6 minutes on 2 cores; exit 1 if a break goes uncaught

Each mutation edits a copy of the hjcag package (in a temporary folder, first on PYTHONPATH), so the real TorchServe
serves the mutated code too: the archive carries the package it was built with. Not a test itself (it runs the
tests several times over); pytest does not collect it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = Path("hjcag/serve/predictor.py")
TESTS = ["tests/test_serve_context.py", "tests/test_torchserve_context.py"]

# name -> (the exact text of Predictor._windows it replaces, the replacement)
MUTATIONS: dict[str, tuple[str, str]] = {
    "no context": (
        "        k = self.context_turns\n",
        "        k = self.context_turns\n        return alone(n_rows, k, \"causal\", torch.device(\"cpu\"))\n",
    ),
    "reversed order, swapped speakers": (
        "                column = k - len(request.turns) + j\n",
        "                column = k - 1 - j\n",
    ),
    "the oldest turn dropped": (
        "            context.speaker[i, k] = SAME_SPEAKER\n",
        "            context.speaker[i, k] = SAME_SPEAKER\n"
        "            if request.turns:\n"
        "                context.window[i, k - len(request.turns)] = -1\n",
    ),
    "another conversation's turns mixed in": (
        "        turn_row = len(requests)\n        for i, request in enumerate(requests):\n",
        "        for i, request in enumerate(requests):\n            turn_row = len(requests)\n",
    ),
}
SPEAKERS = ("int(turn.speaker == request.speaker)", "int(turn.speaker != request.speaker)")


def mutated_copy(root: Path, name: str | None) -> Path:
    """A copy of src/ under `root`, with mutation `name` applied (None: unchanged); returns the copy's src."""
    src = root / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if name is None:
        return src
    path = src / TARGET
    text = path.read_text()
    edits = [MUTATIONS[name]] + ([SPEAKERS] if name.startswith("reversed") else [])
    for old, new in edits:
        if text.count(old) != 1:
            raise SystemExit(f"mutation '{name}': {old!r} is not in {TARGET} exactly once; update this script.")
        text = text.replace(old, new)
    path.write_text(text)
    return src


def run_tests(src: Path) -> tuple[int, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *TESTS],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    failed = sorted(set(re.findall(r"^FAILED (\S+?)(?: - |$)", done.stdout, re.MULTILINE)))
    return done.returncode, failed


def main() -> int:
    uncaught = []
    for name in [None, *MUTATIONS]:
        with tempfile.TemporaryDirectory(prefix="hjcag-mutant-") as tmp:
            code, failed = run_tests(mutated_copy(Path(tmp), name))
        label = name or "(no mutation)"
        print(f"{label}: pytest exit {code}, {len(failed)} failed", flush=True)
        for test in failed:
            print(f"    {test}", flush=True)
        if name is None and code != 0:
            print("the tests fail without any mutation: fix them first", flush=True)
            return 1
        if name is not None and code == 0:
            uncaught.append(name)
    if uncaught:
        print(f"NOT caught: {', '.join(uncaught)}", flush=True)
        return 1
    print("every mutation was caught", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
