"""A first try on one's own small data: `hjcag train --profile generic` (five folds) on a few hundred utterances.

    python benchmarks/own_data_small.py                        # 240 utterances, 8-d vectors, 4 labels
    python benchmarks/own_data_small.py --utterances 1000 --dim 64 --steps 30

Issue 22 (item 3): the generic profile used to train the paper's recipe (widths 1024, lr 1e-5, up to 200 epochs),
and a 240-utterance file of 8-dimensional features took 49 s per epoch on two cores. This writes such a file (one
vector per utterance, or ``--steps`` L steps; class-dependent means, so that early stopping behaves as on data with
signal), trains it with the generic profile as a user would, and, for comparison, the paper's recipe (the
top-level sections) for ``--paper-epochs`` epochs of one fold. Prints the wall time of each and per epoch.
The accuracy of synthetic data says nothing; the figures are times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import results_file
import yaml

REPO = Path(__file__).resolve().parents[1]


def write_features(path: Path, n: int, dim: int, steps: int, labels: int, seed: int = 0) -> Path:
    """`n` utterances in dialogues of 6 (their turns in order), `labels` classes in turn, features N(class mean, 1):
    (n, dim) or (n, steps, dim) under the `text` key."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % labels
    means = rng.normal(scale=0.5, size=(labels, dim))
    shape = (n, dim) if steps == 1 else (n, steps, dim)
    x = rng.normal(size=shape) + (means[y] if steps == 1 else means[y][:, None, :])
    np.savez(path, utterance_id=np.array([f"u{i}" for i in range(n)]),
             label=np.array([f"label{k}" for k in y]), group=np.array([f"d{i // 6}" for i in range(n)]),
             order=(np.arange(n) % 6).astype(np.float64), text=x.astype(np.float32))
    return path


def train(features: Path, out: Path, params: Path, profile: str, threads: int, folds: str | None = None) -> float:
    cmd = [sys.executable, "-m", "hjcag.cli", "train", "--features", str(features), "--out", str(out),
           "--params", str(params), "--profile", profile]
    if folds is not None:
        cmd += ["--folds", folds]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print("$ hjcag", " ".join(cmd[3:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def epochs_run(out: Path) -> list[int]:
    return [json.loads(p.read_text())["epochs_run"] for p in sorted(out.glob("*/result.json"))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=240)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1, help="1: one vector per utterance (default); L: L steps")
    ap.add_argument("--labels", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paper-epochs", type=int, default=2, help="epochs of the paper's recipe timed (one fold)")
    results_file.add_argument(ap)
    args = ap.parse_args()
    record = results_file.start("own_data_small")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        features = write_features(work / "own.npz", args.utterances, args.dim, args.steps, args.labels)
        doc = yaml.safe_load((REPO / "params.yaml").read_text())
        doc["train"]["num_threads"] = args.threads
        doc["profiles"]["paper"] = {"dataset": "generic", "model": {}, "features": {}, "validation": {},
                                    "train": {"epochs": args.paper_epochs}, "gates": {}}
        params = work / "params.yaml"
        params.write_text(yaml.safe_dump(doc, sort_keys=False))
        generic = train(features, work / "generic", params, "generic", args.threads)
        generic_epochs = epochs_run(work / "generic")
        paper = train(features, work / "paper", params, "paper", args.threads, folds="0")
        paper_epochs = epochs_run(work / "paper")
        figures = {
            "generic": {"seconds": generic, "folds": len(generic_epochs), "epochs_run": generic_epochs,
                        "seconds_per_epoch": generic / max(sum(generic_epochs), 1)},
            "paper_recipe": {"seconds": paper, "folds": len(paper_epochs), "epochs_run": paper_epochs,
                             "seconds_per_epoch": paper / max(sum(paper_epochs), 1),
                             "epoch_cap": args.paper_epochs},
        }
        print(f"\n{args.utterances} utterances, {args.dim}-d, {args.steps} step(s), {args.threads} threads")
        print(f"generic profile: {generic:.1f} s for {len(generic_epochs)} folds ({sum(generic_epochs)} epochs, "
              f"{figures['generic']['seconds_per_epoch']:.2f} s per epoch incl. start-up and the probe fits)")
        print(f"paper's recipe: {paper:.1f} s for {args.paper_epochs} epochs of one fold "
              f"({figures['paper_recipe']['seconds_per_epoch']:.2f} s per epoch incl. start-up; the recipe runs up "
              "to 200 epochs x 5 folds)")
        results_file.write(record, figures, args.results, threads=args.threads, params=params, profiles=["generic"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
