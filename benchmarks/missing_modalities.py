"""README "Missing modalities" as a results file: the demo model with and without modality dropout, against models
trained on two modalities only, all on `make demo`'s features, folds and seed:

    make demo && .venv/bin/python benchmarks/missing_modalities.py   # -> results/missing_modalities-<UTC>.json

Five trainings of the params' profile (the file's: `demo`), each as dvc.yaml's train stage runs it (`hjcag train`,
into --work, untracked): modality dropout as shipped (its figures are make demo's: a check that they came out
again), dropout 0, and, with dropout as shipped, the three models of two modalities. Each run's robustness table
gives its accuracy with a modality missing at test time. 8.5 minutes on 2 cores at a947234.
"""

from __future__ import annotations

import argparse
import sys

import results_file
from demo_results import add_demo_run_arguments, demo_figures

from hjcag import stages
from hjcag.artifacts import file_digest, read_json
from hjcag.params import load_params

TWO_MODALITIES = {"text+audio": "t,a", "text+visual": "t,v", "audio+visual": "a,v"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_run_arguments(parser, "missing_modalities")
    results_file.add_argument(parser)
    args = parser.parse_args()
    record = results_file.start("missing_modalities")
    params = load_params(args.params)
    runs = {
        "dropout_shipped": (params, "t,a,v"),
        "dropout_0": (params.with_overrides(train={"modality_dropout": 0.0}), "t,a,v"),
        **{f"trained_{name.replace('+', '_')}": (params, mods) for name, mods in TWO_MODALITIES.items()},
    }
    figures: dict[str, object] = {"features_sha256": file_digest(args.features), "profile": params.profile}
    for name, (run_params, modalities) in runs.items():
        print(f"training {name}: modalities {modalities}, modality dropout {run_params.train.modality_dropout}",
              flush=True)
        stages.train(args.features, args.work / name, run_params, modalities)
        metrics = read_json(args.work / name / "metrics.json", "written by hjcag train")
        figures[name] = {**demo_figures(metrics), "modalities": modalities,
                         "modality_dropout": run_params.train.modality_dropout}
    for name in runs:
        run = figures[name]
        assert isinstance(run, dict)
        missing = ", ".join(f"{k} {v:.2f}" for k, v in run["robustness_accuracy"].items())
        print(f"{name:28s} accuracy {run['accuracy']['mean']:.2f} ± {run['accuracy']['std']:.2f}; {missing}")
    results_file.write(record, figures, args.results, seeds=[params.seed], params=args.params,
                       profiles=[params.profile])
    return 0


if __name__ == "__main__":
    sys.exit(main())
