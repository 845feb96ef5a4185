"""`make demo`'s figures as a results file (README "Two commands" quotes them; tests/test_readme_results.py checks):

    make demo && .venv/bin/python benchmarks/demo_results.py      # -> benchmarks/results/demo-<UTC time>.json
    PYTHONPATH=$PWD/src python benchmarks/demo_results.py --make  # runs `make demo` first and times it

Run it in the checkout `make demo` ran in, right after it: it reads the run's build/train/metrics.json (written by
`dvc repro`) and records the commit. With `--make` it runs `make demo` itself (install included when the checkout
has no .venv yet: in a fresh clone, run it with another environment's python and this checkout's src on PYTHONPATH)
and records its wall time. The file says `dirty: true` when the run left dvc.lock (or anything tracked)
changed: the committed dvc.lock was stale, and the figures are not yet those of a committed tree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import results_file

from hjcag.artifacts import file_digest, read_json

REPO = Path(__file__).resolve().parents[1]


def add_demo_run_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """--features (make demo's), --work (build/<name>) and --params: a benchmark that trains on make demo's
    features the way dvc.yaml's train stage does."""
    parser.add_argument("--features", type=Path, default=REPO / "build" / "features" / "features.npz",
                        help="the demo's features file (default: make demo's)")
    parser.add_argument("--work", type=Path, default=REPO / "build" / name,
                        help="where the run directories go (a re-run resumes them)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")


def demo_figures(metrics: dict) -> dict[str, object]:
    """The run's scores in % (mean and std over folds), and each modality subset's accuracy (the robustness table)."""
    def pct(stat: dict) -> dict[str, float]:  # unrounded: the README rounds once
        return {"mean": 100 * stat["mean"], "std": 100 * stat["std"]}

    return {
        "accuracy": pct(metrics["accuracy"]),
        "weighted_f1": pct(metrics["weighted_f1"]),
        "macro_f1": pct(metrics["macro_f1"]),
        "robustness_accuracy": {row["modalities"]: 100 * row["accuracy"]["mean"]
                                for row in metrics.get("robustness") or []},
        "n_utterances": metrics["n_utterances"],
        "n_folds": metrics["n_folds"],
        "profile": metrics.get("profile"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=REPO / "build" / "train", help="the demo's run directory")
    parser.add_argument("--make", action="store_true", help="run `make demo` first (in this checkout) and time it")
    results_file.add_argument(parser)
    args = parser.parse_args()
    record = results_file.start("demo")
    timing: dict[str, object] = {}
    if args.make:
        installed = (REPO / ".venv" / ".installed").exists()
        start = time.monotonic()
        subprocess.run(["make", "demo"], cwd=REPO, check=True)
        timing = {"make_demo_seconds": time.monotonic() - start, "install_included": not installed}
        print(f"make demo: {timing['make_demo_seconds']:.0f} s", "(install included)" if not installed else "")
    metrics = read_json(args.run / "metrics.json", "written by `make demo` (dvc repro)")
    figures = {**demo_figures(metrics), **timing, "dvc_lock_sha256": file_digest(REPO / "dvc.lock"),
               "produced_by": "make demo (dvc repro), then this script"}
    for key in ("accuracy", "weighted_f1", "macro_f1"):
        print(f"{key}: {figures[key]['mean']:.2f} ± {figures[key]['std']:.2f} %")
    for subset, acc in figures["robustness_accuracy"].items():
        print(f"accuracy with {subset}: {acc:.2f} %")
    results_file.write(record, figures, args.results, seeds=[metrics.get("seed")], profiles=[metrics.get("profile")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
