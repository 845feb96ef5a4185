"""`hjcag <stage>`: the one entry point that make, dvc.yaml and the KFP components call.

Every command is a thin caller of a function in the package; user mistakes (HjcagError, and an OSError a user can
fix: no permission, a read-only or full disk, a file where a folder belongs) are printed as one clear message with
exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hjcag
from hjcag import artifacts, stages
from hjcag.errors import ConfigError, HjcagError, os_error_message
from hjcag.params import (
    DATA_KINDS,
    DEMO_SIZES,
    MODEL_NAMES,
    PROTOCOLS,
    VALIDATION_POLICIES,
    Params,
    load_params,
)
from hjcag.progress import quiet_library_bars

log = logging.getLogger("hjcag")

Handler = Callable[[argparse.Namespace], int]
ArgumentAdder = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: ArgumentAdder
    run: Handler


COMMANDS: list[Command] = []
"""Every `hjcag` command, in the order `hjcag --help` lists them: the order of the `@command`s below."""


def command(name: str, help: str, add_arguments: ArgumentAdder) -> Callable[[Handler], Handler]:
    """Register the decorated function as `hjcag <name>`, its options added by `add_arguments` (defined beside it)."""

    def register(run: Handler) -> Handler:
        COMMANDS.append(Command(name, help, add_arguments, run))
        return run

    return register


RUN_HELP = "run directory written by `hjcag train`"
SIZE_HELP = "tiny (~300 utterances) or small (~900; make demo's)"
MODALITIES_HELP = "the modalities to extract, a subset of t,a,v (default: all three)"
MODEL_HELP = "hjcag (the paper's) or a baseline (default: params model.name)"
EXPERIMENT_HELP = "MLflow experiment (default: hjcag-<dataset>)"


def _params(args: argparse.Namespace) -> Params:
    params = load_params(args.params, args.profile)
    labels = getattr(args, "labels", None)
    return params.with_labels(labels.split(",")) if labels else params


def _add_labels_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", default=None, help="the label set and class order, e.g. negative,neutral,positive "
                   "(default: the profile's; a profile without one takes the data's); a subset of the data's "
                   "labels trains on those classes only")


def _add_params_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: ./params.yaml)")
    p.add_argument("--profile", default=None, help="dataset profile in params.yaml (default: the file's `profile:`)")


def _add_data_root_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="the folder the manifest's relative media paths are under "
                   "(default: the one `hjcag prepare` recorded in it, else the manifest's folder)")


def _add_docs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--docs", default=None, help="directory for the Great Expectations Data Docs (default: "
                   "OUT/data_docs; they carry timestamps, so keep them out of a DVC-tracked OUT)")


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--size", choices=DEMO_SIZES, default="tiny", help=SIZE_HELP)
    _add_params_options(p)


@command("demo", "quick look without DVC: HJCAG, Table 4 ablations and baselines on stand-in features of generated "
         "data (the full pipeline: `dvc repro`)", _demo_args)
def cmd_demo(args: argparse.Namespace) -> int:
    from hjcag.demo import run_demo

    return run_demo(Path(args.out), params_path=args.params, profile=args.profile or "demo", size=args.size)


def _demo_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="directory for the dataset (a CSV and one mp4 per utterance)")
    p.add_argument("--size", choices=DEMO_SIZES, default="tiny", help=SIZE_HELP)
    p.add_argument("--seed", type=int, default=13, help="random seed of the generated data (default: 13)")
    p.add_argument("--context-cue", type=float, default=0.0, metavar="P",
                   help="share of 'echo' turns whose emotion only the previous turn shows (default 0: none)")


@command("demo-data", "write the synthetic MELD-layout demo dataset", _demo_data_args)
def cmd_demo_data(args: argparse.Namespace) -> int:
    out = stages.demo_data(args.out, size=args.size, seed=args.seed, context_cue=args.context_cue)
    print(f"synthetic MELD-layout demo dataset written to {out}")
    return 0


def _standin_features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset directory in MELD layout")
    p.add_argument("--out", required=True, help="features .npz to write")
    p.add_argument("--modalities", default="t,a,v", help=MODALITIES_HELP)
    p.add_argument("--keep", default=None, help="a validated manifest: only the utterances it kept")
    _add_params_options(p)


@command("standin-features", "simple stand-in features from a MELD-layout dataset", _standin_features_args)
def cmd_standin_features(args: argparse.Namespace) -> int:
    path = stages.standin_features(args.data, args.out, _params(args), args.modalities, keep=args.keep)
    print(f"stand-in features written to {path}")
    return 0


def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATA_KINDS, required=True, help="the layout of --source (params data.kind)")
    p.add_argument("--source", required=True, help="dataset root (or the manifest CSV/JSONL file)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--modalities", default="t,a,v", help="media of modalities left out are not required")
    p.add_argument("--policy", choices=VALIDATION_POLICIES, default=None, help="rows sharing an utterance_id: "
                   "fail (stop, naming them) or quarantine (leave every copy out); default: params validation.policy")
    _add_params_options(p)
    _add_labels_option(p)


@command("prepare", "a dataset as downloaded -> normalised manifest.parquet + report", _prepare_args)
def cmd_prepare(args: argparse.Namespace) -> int:
    print(stages.prepare(args.dataset, args.source, args.out, _params(args), args.modalities,
                         policy=args.policy).summary())
    return 0


def _features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.parquet (or CSV) from `hjcag prepare`")
    p.add_argument("--out", required=True, help="features .npz to write")
    p.add_argument("--modalities", default="t,a,v", help=MODALITIES_HELP)
    p.add_argument("--cache", default=None, help="feature cache directory, or 'none' (default: params)")
    _add_data_root_option(p)
    _add_params_options(p)


@command("features", "RoBERTa / openSMILE / ResNet-50 features of a manifest -> .npz", _features_args)
def cmd_features(args: argparse.Namespace) -> int:
    path = stages.features(args.manifest, args.out, _params(args), args.modalities, cache=args.cache,
                           data_root=args.data_root)
    print(f"features written to {path} (extraction record: {artifacts.features_meta_path(path)})")
    return 0


def _finetune_text_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.parquet with a split column (train rows train, "
                   "dev rows select; test rows are never read)")
    p.add_argument("--out", required=True, help="directory for the fine-tuned model (a Hugging Face model dir)")
    _add_params_options(p)
    _add_labels_option(p)


@command("finetune-text", "fine-tune the text encoder on the manifest's labels (paper 4.2)", _finetune_text_args)
def cmd_finetune_text(args: argparse.Namespace) -> int:
    out = stages.finetune_text(args.manifest, args.out, _params(args))
    print(f"fine-tuned text encoder written to {out}; set `features.text_model: {out}` in params.yaml to extract "
          f"features with it")
    return 0


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest.parquet from `hjcag prepare` (or a CSV/JSONL with all "
                   "its columns; a raw one goes through `hjcag prepare --dataset manifest` first)")
    p.add_argument("--out", required=True, help="directory for validation.json, manifest.valid.parquet (and "
                   "quarantine.parquet)")
    p.add_argument("--modalities", default="t,a,v", help="media of modalities left out are not checked")
    p.add_argument("--policy", choices=VALIDATION_POLICIES, default=None, help="default: params validation.policy")
    _add_docs_option(p)
    _add_data_root_option(p)
    _add_params_options(p)
    _add_labels_option(p)


@command("validate", "Great Expectations checks of a manifest and its media (before any compute)", _validate_args)
def cmd_validate(args: argparse.Namespace) -> int:
    print(stages.validate(args.manifest, args.out, _params(args), args.modalities, args.policy,
                          data_root=args.data_root, docs=args.docs).summary())
    return 0


def _validate_features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", required=True, help="features .npz to check")
    p.add_argument("--out", required=True, help="directory for validation.json")
    p.add_argument("--dims", default=None, help="expected widths, e.g. t=1024,a=1582,v=2048 (default: .meta.json)")
    p.add_argument("--labels", default=None, help="the classes training will select, e.g. negative,positive (as "
                   "`hjcag train --labels`); the file must hold at least two of them (default: all of its labels)")
    _add_docs_option(p)


@command("validate-features", "Great Expectations checks of an extracted features .npz", _validate_features_args)
def cmd_validate_features(args: argparse.Namespace) -> int:
    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    print(stages.validate_features(args.features, args.out, _parse_dims(args.dims) if args.dims else None,
                                   docs=args.docs, labels=labels).summary())
    return 0


def _parse_dims(spec: str) -> dict[str, int]:
    """'t=1024,a=1582,v=2048' -> {'t': 1024, 'a': 1582, 'v': 2048}."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise ConfigError(f"--dims: '{part}' is not MODALITY=WIDTH. Example: --dims t=1024,a=1582,v=2048.")
        out[key.strip()] = int(value)
    return out


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", required=True, help="features .npz (or DialogueRNN-style .pkl)")
    p.add_argument("--protocol", choices=PROTOCOLS, default=None, help="default: params train.protocol")
    p.add_argument("--modalities", default=None, help="subset of t,a,v (default: all in the file)")
    p.add_argument("--model", choices=MODEL_NAMES, default=None, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="run directory (re-running resumes it)")
    p.add_argument("--folds", default=None, help="train only these fold indices, e.g. 0,1 (parallel workers)")
    p.add_argument("--track", action="store_true", help="log to MLflow (MLFLOW_TRACKING_URI, default sqlite)")
    p.add_argument("--experiment", default=None, help=EXPERIMENT_HELP)
    _add_params_options(p)
    _add_labels_option(p)


@command("train", "five-fold (or holdout) training and evaluation on a features file", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    params = _params(args)
    params = params.with_overrides(model={"name": args.model or params.model.name},
                                   train={"protocol": args.protocol} if args.protocol else {})
    folds = [int(k) for k in args.folds.split(",")] if args.folds else None
    metrics = stages.train(args.features, args.out, params, args.modalities, folds=folds, track=args.track,
                           experiment=args.experiment)
    if metrics.get("complete") is False:
        done = sorted({r["fold"] for r in metrics["folds"]})
        tracked = (f" (MLflow run {metrics['mlflow_run']}: complete once every fold is)" if metrics.get("mlflow_run")
                   else "")
        print(f"fold(s) {done} of {metrics['n_folds']} done in {args.out}{tracked}; train the others (or merge their "
              f"fold_K directories into it) and run without --folds to aggregate.")
        return 0
    _print_summary(metrics, Path(args.out))
    return 0


def _print_summary(metrics: dict, out: Path) -> None:
    figures = ", ".join(f"{name} {100 * metrics[key]['mean']:.2f} ± {100 * metrics[key]['std']:.2f} %" for key, name in
                        (("accuracy", "accuracy"), ("weighted_f1", "weighted F1"), ("macro_f1", "macro F1")))
    units = len(metrics["folds"])
    seeds = " x seeds" if units > metrics["n_folds"] else ""
    print(f"{figures} over {units} fold(s){seeds}; "
          f"metrics: {out / artifacts.METRICS_FILE}, report: {out / artifacts.REPORT_FILE}")
    if comparison := metrics.get("context_comparison"):
        gain, se = comparison["difference"]["weighted_f1"]["mean"], comparison["difference"]["weighted_f1"]["se"]
        print(f"conversation context kept in {comparison['kept']} of {comparison['n']} fold(s){seeds}; weighted F1 "
              f"{100 * gain:+.2f}{'' if se is None else f' ± {100 * se:.2f}'} against the same folds without it")
    if metrics.get("zero_f1_classes"):
        print(f"warning: F1 = 0 for {', '.join(metrics['zero_f1_classes'])} (never predicted correctly); "
              "try train.class_weights: balanced")


def _tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", required=True, help="features .npz (or DialogueRNN-style .pkl)")
    p.add_argument("--out", default="build/tune", help="directory for best.yaml and study.json (default: build/tune)")
    p.add_argument("--trials", type=int, default=None, help="finished trials the study should hold (default: "
                   "tune.trials); a re-run resumes and runs only the missing ones")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget of this run (default: tune.minutes)")
    p.add_argument("--study", default=None, help="study name (default: <profile>-<model>-<modalities>)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: optuna.db beside the MLflow "
                   "SQLite store)")
    p.add_argument("--write-profile", default=None, metavar="NAME",
                   help="profile the best values are written to in --params (default: <profile>-tuned)")
    p.add_argument("--no-profile", action="store_true", help="write only best.yaml / study.json, not params.yaml")
    p.add_argument("--no-track", action="store_true", help="no MLflow runs")
    p.add_argument("--experiment", default=None, help=EXPERIMENT_HELP)
    p.add_argument("--protocol", choices=PROTOCOLS, default=None, help="default: params train.protocol")
    p.add_argument("--modalities", default=None, help="subset of t,a,v (default: all in the file)")
    p.add_argument("--model", choices=MODEL_NAMES, default=None, help=MODEL_HELP)
    _add_params_options(p)
    _add_labels_option(p)


@command("tune", "Optuna search over tune.space on each fold's validation split (never a test fold); the best "
         "values become a profile", _tune_args)
def cmd_tune(args: argparse.Namespace) -> int:
    params = _params(args)
    if args.model or args.protocol:
        params = params.with_overrides(model={"name": args.model or params.model.name},
                                       train={"protocol": args.protocol} if args.protocol else {})
    summary = stages.tune(args.features, args.out, params, args.modalities, trials=args.trials, minutes=args.minutes,
                          study=args.study, storage=args.storage, track=not args.no_track,
                          experiment=args.experiment, params_path=None if args.no_profile else args.params,
                          profile_name=args.write_profile)
    best, out = summary["best"], Path(args.out)
    counts = {s: sum(t["state"] == s for t in summary["trials"]) for s in ("COMPLETE", "PRUNED", "FAIL")}
    print(f"study '{summary['study']}': {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} "
          f"failed trial(s); best trial {best['trial']}: {summary['metric']} {best['value']:.4f} on the folds' "
          f"validation splits -> {out / 'best.yaml'}, {out / 'study.json'}")
    if summary.get("profile"):
        print(f"train with it: hjcag train --profile {summary['profile']} --params {args.params} ...")
    return 0


def _ablate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", required=True, help="features .npz (or DialogueRNN-style .pkl)")
    p.add_argument("--protocol", choices=PROTOCOLS, default=None, help="default: params train.protocol")
    p.add_argument("--out", required=True, help="directory for ablation.md and one run per row")
    _add_params_options(p)
    _add_labels_option(p)


@command("ablate", "the paper's Table 4 configurations on the same folds", _ablate_args)
def cmd_ablate(args: argparse.Namespace) -> int:
    params = _params(args)
    if args.protocol:
        params = params.with_overrides(train={"protocol": args.protocol})
    stages.ablate(args.features, args.out, params)
    print((Path(args.out) / "ablation.md").read_text())
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help=RUN_HELP)
    p.add_argument("--out", required=True, help="directory for the report, metrics and plots")


@command("evaluate", "a finished run -> flat metrics.json, folds.csv, predictions.csv, plots", _evaluate_args)
def cmd_evaluate(args: argparse.Namespace) -> int:
    summary = stages.evaluate(args.run, args.out)
    print(f"evaluation of {args.run}: accuracy {100 * summary['accuracy']:.2f} %, weighted F1 "
          f"{100 * summary['weighted_f1']:.2f} %, macro F1 {100 * summary['macro_f1']:.2f} % -> {args.out}")
    return 0


def _gate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help=RUN_HELP)
    p.add_argument("--report", default=None, help="write the gate result as JSON here (also when it fails)")
    _add_params_options(p)


@command("gate", "check a run against the accuracy / weighted-F1 gates in params.yaml", _gate_args)
def cmd_gate(args: argparse.Namespace) -> int:
    print(stages.gate(args.run, _params(args), args.report).summary())
    return 0


def _register_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help=RUN_HELP)
    p.add_argument("--features", required=True, help="the features .npz the run was trained on (data hash)")
    p.add_argument("--dvc-lock", default="dvc.lock", help="dvc.lock to take the data hash from, or 'none'")
    p.add_argument("--name", default=None, help="registered model name (default: hjcag-<dataset>)")
    p.add_argument("--experiment", default=None, help=EXPERIMENT_HELP)
    p.add_argument("--record", default=None, help="write the registered version as JSON here")
    _add_params_options(p)


@command("register", "log a run to MLflow, gate it, register it with alias 'candidate'", _register_args)
def cmd_register(args: argparse.Namespace) -> int:
    lock = None if args.dvc_lock == "none" else args.dvc_lock
    version = stages.register(args.run, args.features, _params(args), lock, args.experiment, args.name, args.record)
    what = "already registered as" if version.reused else "registered as"
    print(f"{args.run} {what} {version.name} version {version.version} (alias 'candidate'); "
          f"promote with `hjcag registry promote --name {version.name}`")
    return 0


def _registry_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["promote", "rollback", "show"])
    p.add_argument("--name", default=None, help="registered model (default: hjcag-<dataset of the profile>)")
    p.add_argument("--version", default=None, help="promote this version (default: the 'candidate')")
    _add_params_options(p)


@command("registry", "move the 'champion' alias: promote | rollback | show", _registry_args)
def cmd_registry(args: argparse.Namespace) -> int:
    from hjcag.registry import aliases

    name = args.name or aliases.model_name_for(_params(args))
    if args.action == "show":
        print(aliases.format_show(aliases.show(name)))
        return 0
    move = aliases.promote(name, args.version) if args.action == "promote" else aliases.rollback(name)
    before = f" (was version {move.previous})" if move.previous else ""
    print(f"{move.name}@{move.alias} -> version {move.version}{before}")
    return 0


def _package_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help=RUN_HELP)
    src.add_argument("--model-uri", help="e.g. models:/hjcag-meld@champion")
    src.add_argument("--record", help="the version a `hjcag register --record FILE` registered (dvc.yaml uses this)")
    p.add_argument("--out", default="model-store", help="model store directory (default: model-store)")
    p.add_argument("--version", default=None, help="default: the registered version (<version>-fold_K for another "
                   "fold than its default), else run-<fingerprint>-fold_K")
    p.add_argument("--fold", type=int, default=None, help="fold whose weights to serve (default: the run's best)")
    p.add_argument("--features-meta", default=None, help="features .meta.json the model was trained on")
    _add_params_options(p)


@command("package", "build the TorchServe model archive (.mar) from a run or a registry URI", _package_args)
def cmd_package(args: argparse.Namespace) -> int:
    source, tracking = args.model_uri or args.run, None
    if args.record:
        source, tracking = stages.registered_source(args.record)
    record = stages.package(source, args.out, params_path=args.params, profile=args.profile, version=args.version,
                            fold=args.fold, features_meta=args.features_meta, tracking_uri=tracking)
    print(f"model archive {record['archive']} (version {record.get('version')}, "
          f"sha256 {record.get('sha256')})")
    return 0


def _serve_local_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-store", default="model-store", help="folder holding hjcag.mar (default: model-store)")
    p.add_argument("--port", type=int, default=8080, help="inference port on 127.0.0.1 (default: 8080)")


@command("serve-local", "run TorchServe on 127.0.0.1 with a model store, until Ctrl-C", _serve_local_args)
def cmd_serve_local(args: argparse.Namespace) -> int:
    from hjcag.serve.local import serve_local

    return serve_local(args.model_store, args.port)


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="a manifest in the layout `hjcag prepare` reads (.csv, .jsonl, or "
                   "its .parquet: utterance_id, dialogue_id, turn, speaker, text, audio_path, video_path) or a "
                   "features .npz")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", help="the served model, e.g. http://127.0.0.1:8080")
    target.add_argument("--model", help="answer in process: a .mar archive or a run directory")
    p.add_argument("--out", required=True, help="FILE.jsonl (the CSV is written beside it as FILE.csv) or a folder "
                   "(predictions.jsonl and predictions.csv in it); a re-run skips what it holds")
    p.add_argument("--token-file", default=None, help="file holding the endpoint's inference key (default: "
                   "$HJCAG_TOKEN)")
    p.add_argument("--ca-file", default=None, help="PEM file of the CA(s) an https endpoint's certificate must chain "
                   "to (default: the system's CAs, or $SSL_CERT_FILE)")
    p.add_argument("--cert-file", default=None, help="PEM client certificate for an https endpoint that asks for one "
                   "(mutual TLS); its private key in the same file or in --key-file")
    p.add_argument("--key-file", default=None, help="the unencrypted PEM private key of --cert-file")
    p.add_argument("--concurrency", type=int, default=4, help="dialogues asked in parallel (default 4)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=4, help="tries again on 503 and connection errors (default 4)")
    p.add_argument("--dtype", default="float32", help="packed features: float32 (default: the exact numbers) or "
                   "float16 (half the body)")
    p.add_argument("--modalities", default="t,a,v", help="the inputs to send (default t,a,v: all the input has)")
    p.add_argument("--context-window", type=int, default=None, help="previous turns the endpoint's model reads "
                   "(default: what the endpoint's answers state)")
    p.add_argument("--plot", default=None, metavar="PNG", help="a per-turn emotion timeline, and an HTML page "
                   "beside it (same name, .html)")
    _add_data_root_option(p)
    _add_params_options(p)


@command("predict", "answer conversations (manifest or features) turn by turn with an endpoint or a model -> "
         "JSONL + CSV rows, a timeline", _predict_args)
def cmd_predict(args: argparse.Namespace) -> int:
    from hjcag.predict.rows import table

    result = stages.predict(args.input, args.out, endpoint=args.endpoint, model=args.model,
                            token_file=args.token_file, ca_file=args.ca_file, cert_file=args.cert_file,
                            key_file=args.key_file, concurrency=args.concurrency,
                            timeout=args.timeout, retries=args.retries, dtype=args.dtype, modalities=args.modalities,
                            data_root=args.data_root, context_window=args.context_window, plot=args.plot,
                            params_path=args.params, profile=args.profile)
    print(table(result["rows"]))
    print(f"{result['answered']} utterances answered, {result['skipped']} already in {result['jsonl']}; "
          f"CSV: {result['csv']}" + "".join(f"; {p}" for p in result["plots"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hjcag", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"hjcag {hjcag.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(func=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_library_bars()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.func
    try:
        return handler(args)
    except HjcagError as exc:
        print(f"hjcag {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        option = next((f"--{name}" for name in ("out", "report", "record") if getattr(args, name, None)), None)
        message = os_error_message(exc, getattr(args, option[2:]) if option else None, option)
        if message is None:
            raise
        print(f"hjcag {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hjcag {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

