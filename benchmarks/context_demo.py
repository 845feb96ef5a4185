"""README "Conversation context" as a results file: the demo model without and with conversation context, on the
demo with echo turns (`hjcag demo-data --context-cue 0.3`) and on the demo as `make demo` makes it:

    make demo && .venv/bin/python benchmarks/context_demo.py   # -> results/context_demo-<UTC>.json

The echo data goes through the pipeline's own stages (demo_data, prepare, validate, features) into --work; the
plain demo is make demo's features file. On each, the params' profile (the file's: `demo`), 5 folds x --seeds
(folds from the params' seed, as make demo's), as dvc.yaml's train stage runs it, without context (the paper's
model), with `model.context: gru` as shipped (warm start: the context-free model first, the context layer kept only
where it wins on validation), and with gru trained jointly from the start (`train.context_warm_start: false`). The
no-context figures are the shipped gru run's first stage (each unit's `without_context` in result.json: trained
exactly as a `context: none` run, scored on the same test rows), so two trainings cover the three rows. Each context
run is compared with no context fold-seed by fold-seed (mean ± standard error of the paired differences), with how
many fold-seeds kept the context layer. It took 37 minutes on the idle 2-core machine
(results/context_demo-20261207T122504Z.json, 883a707); with three trainings (the no-context run trained on its
own, as up to ee0fb67) 78 minutes on 2 cores that other jobs shared part of the time, and every figure the same
(results/context_demo-20261207T093212Z.json).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import results_file
from demo_results import add_demo_run_arguments, demo_figures

from hjcag import stages
from hjcag.artifacts import file_digest, read_json
from hjcag.params import Params, load_params

VARIANTS = {  # name: (model.context, train.context_warm_start); the first is the warm start that gives "none"
    "gru": ("gru", True),
    "gru_joint": ("gru", False),
}
ROWS = ("none", *VARIANTS)
SCORES = ("accuracy", "weighted_f1")


def echo_features(work: Path, params: Params, cue: float) -> Path:
    """The demo dataset with `cue` echo turns, through demo_data, prepare, validate and features (resumed when done)."""
    out = work / "echo" / "features.npz"
    if out.exists():
        return out
    data = stages.demo_data(work / "echo" / "data", size=params.demo_data.size, seed=params.demo_data.seed,
                            context_cue=cue)
    stages.prepare("meld", data, work / "echo" / "prepare", params)
    stages.validate(work / "echo" / "prepare" / "manifest.parquet", work / "echo" / "validate", params)
    return stages.features(work / "echo" / "validate" / "manifest.valid.parquet", out, params)


def paired(units: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]], score: str) -> dict[str, float]:
    """Mean ± standard error (ddof 1) in points of a run's score minus the no-context run's, unit by unit."""
    diffs = [100 * (units[u][score] - base[u][score]) for u in sorted(units)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return {"mean": mean, "se": math.sqrt(var / len(diffs)), "n": len(diffs)}


def without_context_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """A warm-started run's context-free first stages as demo_figures gives a run's (no robustness table)."""
    stats = metrics["context_comparison"]["without_context"]
    return {**{k: {"mean": 100 * v["mean"], "std": 100 * v["std"]} for k, v in stats.items()},
            "n_utterances": metrics["n_utterances"], "n_folds": metrics["n_folds"], "profile": metrics.get("profile")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_run_arguments(parser, "context_demo")  # --work also holds the echo data
    parser.add_argument("--cue", type=float, default=0.3, help="share of echo turns (hjcag demo-data --context-cue)")
    parser.add_argument("--seeds", default="1,2,3", help="training seeds per fold (train.seeds)")
    results_file.add_argument(parser)
    args = parser.parse_args()
    record = results_file.start("context_demo")
    params = load_params(args.params)
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = {"echo": echo_features(args.work, params, args.cue), "plain": args.features}
    figures: dict[str, Any] = {"profile": params.profile, "cue": args.cue, "folds_seed": params.seed}
    for data, features in datasets.items():
        figures[data] = {"features_sha256": file_digest(features)}
        units: dict[str, dict[str, dict[str, Any]]] = {}
        for name, (context, warm) in VARIANTS.items():
            print(f"training {data} / {name}: context {context}, warm start {warm}, seeds {seeds}", flush=True)
            run_params = params.with_overrides(model={"context": context},
                                               train={"seeds": seeds, "context_warm_start": warm})
            stages.train(features, args.work / f"{data}-{name}", run_params)
            metrics = read_json(args.work / f"{data}-{name}" / "metrics.json", "written by hjcag train")
            units[name] = {r["unit"]: r for r in metrics["folds"]}
            if "none" not in units:  # the warm start's first stage of each unit: the context: none run's model
                units["none"] = {u: r["without_context"] for u, r in units[name].items()}
                figures[data]["none"] = {**without_context_figures(metrics), "context": "none",
                                         "from": f"the {name} run's first stage (result.json without_context)"}
            run = {**demo_figures(metrics), "context": context, "context_warm_start": warm}
            run["paired"] = {s: paired(units[name], units["none"], s) for s in SCORES}
            run["context_kept"] = sum(r.get("context_kept", True) for r in units[name].values())
            run["units"] = len(units[name])
            figures[data][name] = run
    for data in datasets:
        for name in ROWS:
            run = figures[data][name]
            line = f"{data:6s} {name:10s} {run['accuracy']['mean']:.2f} / {run['weighted_f1']['mean']:.2f}"
            if "paired" in run:
                p = run["paired"]
                line += (f"  ({p['accuracy']['mean']:+.2f} ± {p['accuracy']['se']:.2f} / "
                         f"{p['weighted_f1']['mean']:+.2f} ± {p['weighted_f1']['se']:.2f}; "
                         f"context kept in {run['context_kept']} of {run['units']})")
            print(line)
    results_file.write(record, figures, args.results, seeds=seeds, params=args.params, profiles=[params.profile])
    return 0


if __name__ == "__main__":
    sys.exit(main())
