"""The pipeline's stages, one function each: the only orchestration in the package.

``hjcag <stage>`` (and so dvc.yaml), the Kubeflow components (:mod:`hjcag.pipeline.components`) and ``hjcag demo``
all call these. Each takes paths and typed :class:`~hjcag.params.Params` and returns what it made; the file
layout is :mod:`hjcag.artifacts`. A stage raises :class:`~hjcag.errors.HjcagError` for anything a user can fix.

    demo_data -> prepare -> validate -> features | standin_features -> validate_features -> train -> evaluate
              -> gate -> register -> package          (plus finetune_text, plan_folds / merge_folds, ablate,
                                                       and tune before train)
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hjcag import artifacts
from hjcag.errors import ConfigError, FeatureFileError, HjcagError
from hjcag.params import Params, parse_modalities

if TYPE_CHECKING:
    from hjcag.data.features_file import FeatureSet
    from hjcag.data.prepare import PrepareReport
    from hjcag.registry.gate import GateResult
    from hjcag.registry.register import RegisteredVersion
    from hjcag.validate.engine import ValidationResult

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- data


def demo_data(out: str | Path, size: str = "small", seed: int = 13, context_cue: float = 0.0) -> Path:
    """The synthetic MELD-layout demo dataset (CSV + mp4 clips) -> `out`; `context_cue`: share of echo turns."""
    from hjcag.data.synthetic import write_demo_dataset

    return write_demo_dataset(artifacts.writable_dir(out), size=size, seed=seed, context_cue=context_cue)


def labels_for(kind: str, params: Params) -> tuple[str, ...] | None:
    """The label set of a dataset kind: the profile's dataset labels, else ``datasets.<kind>.labels``, else None
    (the adapter takes them from the data)."""
    return params.labels or params.labels_of(kind) or None


def prepare(kind: str, source: str | Path, out: str | Path, params: Params, modalities: str = "t,a,v",
            policy: str | None = None) -> PrepareReport:
    """A dataset as downloaded (MELD / IEMOCAP layout, or a manifest file) -> out/manifest.parquet + report. Rows
    sharing an utterance_id follow `policy`, else ``validation.policy``: fail stops, quarantine drops every copy."""
    from hjcag.data.prepare import prepare_dataset

    return prepare_dataset(kind, source, artifacts.writable_dir(out), parse_modalities(modalities),
                           labels=labels_for(kind, params), policy=policy or params.validation.policy)


def validate(manifest: str | Path, out: str | Path, params: Params, modalities: str = "t,a,v",
             policy: str | None = None, progress: bool = True, data_root: str | Path | None = None,
             docs: str | Path | None = None) -> ValidationResult:
    """Great Expectations checks of a manifest and its media, before any compute; raises when they fail (policy
    ``fail``) so nothing downstream runs. `policy` overrides ``validation.policy``; media paths resolve against
    `data_root`, else the root the manifest records; `docs`: the Data Docs' folder (default ``out/data_docs``)."""
    from hjcag.validate.manifest_check import validate_manifest

    cfg = params.validation
    return validate_manifest(manifest, params.labels, modalities, policy or cfg.policy, artifacts.writable_dir(out),
                             cfg.folds_column, media=cfg.media, media_root=data_root or None, docs_dir=docs,
                             progress=progress)


def features(manifest: str | Path, out: str | Path, params: Params, modalities: str = "t,a,v",
             cache: str | None = None, data_root: str | Path | None = None) -> Path:
    """RoBERTa / openSMILE / ResNet-50 features of a (validated) manifest -> `out` (.npz) + its meta and run records.
    Media paths resolve against `data_root`, else the root the manifest records, else its folder. `cache`: None or
    "" = ``features.cache_dir``, "none" = off, else a directory."""
    from hjcag.data.manifest import read_manifest_file
    from hjcag.data.media_root import resolve_data_root
    from hjcag.device import torch_threads
    from hjcag.features.extract import extract_features

    config = params.features
    if cache:
        config = config.replace(cache_dir=None if cache == "none" else cache)
    artifacts.writable_file(out)
    if config.cache_dir is not None:
        artifacts.writable_dir(config.cache_dir, "--cache (features.cache_dir), or --cache none")
    manifest = Path(manifest)
    with torch_threads(0):  # the encoders on torch's threads, within the container's CPU quota
        return extract_features(read_manifest_file(manifest), config, modalities, out,
                                media_root=resolve_data_root(manifest, data_root))


def standin_features(data_dir: str | Path, out: str | Path, params: Params, modalities: str = "t,a,v",
                     keep: str | Path | None = None) -> Path:
    """The demo's quick stand-in features (hashed words, frame descriptors, grey frames: not RoBERTa / openSMILE /
    ResNet-50) of a MELD-layout dataset -> `out`; with `keep` (a validated manifest) only the rows it kept."""
    import numpy as np

    from hjcag.data.features_file import save_features
    from hjcag.features.standin import extract_standin_features

    artifacts.writable_file(out)
    mods = parse_modalities(modalities)
    if params.features.text_context and "t" in mods:
        log.warning("features.text_context is %d, but the stand-in text features read each utterance alone (hashed "
                    "words); for an encoder that reads the preceding turns, run `hjcag features` (RoBERTa/MiniLM).",
                    params.features.text_context)
    fs = extract_standin_features(data_dir, seq_len=params.model.seq_len, modalities=mods)
    if keep is not None:
        from hjcag.data.manifest import read_manifest_file

        kept = set(read_manifest_file(keep)["utterance_id"].astype(str))
        fs = fs.subset(np.flatnonzero([str(u) in kept for u in fs.utterance_id]))
    log.warning("stand-in features (not RoBERTa / openSMILE / ResNet-50) for %d utterances", len(fs))
    return save_features(out, fs)


def validate_features(features: str | Path, out: str | Path, dims: dict[str, int] | None = None,
                      docs: str | Path | None = None, labels: Sequence[str] | None = None) -> ValidationResult:
    """Great Expectations checks of a features file; widths from `dims`, else from its meta record; `docs`: the
    Data Docs' folder (default ``out/data_docs``); `labels`: the classes training will select (``--labels``)."""
    from hjcag.validate.features_check import validate_features as check

    return check(features, dims if dims is not None else recorded_dims(features), artifacts.writable_dir(out),
                 docs_dir=docs, labels=labels)


def recorded_dims(features: str | Path) -> dict[str, int]:
    """The widths `features` recorded for its extractors in the meta file ({} when there is none)."""
    path = artifacts.features_meta_path(features)
    if not path.is_file():
        return {}
    mods = artifacts.read_json(path).get("modalities") or {}
    return {name: int(v["dim"]) for name, v in mods.items() if isinstance(v, dict) and "dim" in v}


def finetune_text(manifest: str | Path, out: str | Path, params: Params) -> Path:
    """Fine-tune ``features.text_model`` on the manifest's train rows, selecting on dev (section 4.2) -> a model
    directory to point ``features.text_model`` at."""
    from hjcag.data.manifest import read_manifest_file
    from hjcag.device import torch_threads
    from hjcag.features.text import finetune_text_encoder

    with torch_threads(0):  # within the container's CPU quota
        return finetune_text_encoder(read_manifest_file(manifest), params.features, artifacts.writable_dir(out),
                                     label_names=params.labels or None)


# ---------------------------------------------------------------- training


def load_features(features: str | Path, params: Params) -> FeatureSet:
    """A features ``.npz``, or the ``.pkl`` of DialogueRNN / MMGCN (:mod:`hjcag.data.erc_pickle`), with its label
    set: the profile's (the data must keep to it), the one given with ``--labels`` (its order; rows of other
    classes are left out), or, when neither names one, the data's own (sorted). Every command that trains reads
    its features here, so data of fewer than two classes is refused before any compute."""
    from hjcag.data.erc_pickle import load_erc_pickle
    from hjcag.data.features_file import class_count_problem
    from hjcag.data.features_file import load_features as load_npz

    load = load_erc_pickle if Path(features).suffix in (".pkl", ".pickle") else load_npz
    fs = load(features, seq_len=params.model.seq_len, label_names=() if params.labels_given else params.labels)
    if params.labels_given:
        fs = only_labels(fs, params.labels, features)
    elif not params.labels:
        log.warning("profile '%s' names no label set: the labels come from the data, in this order: %s "
                    "(fix the order or a subset with --labels)", params.profile, ", ".join(fs.label_names))
    problem = class_count_problem(fs.label, features, selected=params.labels_given)
    if problem:
        raise FeatureFileError(problem)
    return fs


def only_labels(fs: FeatureSet, labels: Sequence[str], where: str | Path) -> FeatureSet:
    """`fs` restricted to the classes `labels`, in that order; every given label must occur in the data."""
    import numpy as np

    from hjcag.data.features_file import select_labels

    subset = fs.subset(np.flatnonzero(select_labels(fs.label, labels, where)))
    subset.label_names = tuple(labels)
    return subset


def plan_folds(features: str | Path, params: Params) -> list[int]:
    """The fold indices the protocol makes on these features (what a pipeline trains in parallel)."""
    from hjcag.train.folds import make_folds

    cfg = params.train
    return [f.index for f in make_folds(load_features(features, params), cfg.protocol, cfg.folds, cfg.val_fraction,
                                        params.seed)]


def train(features: str | Path, out: str | Path, params: Params, modalities: str | None = None,
          folds: Sequence[int] | None = None, track: bool = False, experiment: str | None = None,
          only_aggregate: bool = False) -> dict[str, Any]:
    """Train params.model.name under params.train.protocol -> the run directory `out` (resumable); returns its
    metrics. `folds` trains only those folds (``{"complete": False, ...}`` until all are there, with
    ``mlflow_run`` when tracked); `only_aggregate` trains nothing and fails unless every fold is already in `out`;
    `track` logs to MLflow."""
    artifacts.writable_dir(out)  # before the imports: torch takes seconds to load
    from hjcag.train.run import train_and_evaluate

    fs = load_features(features, params)
    chosen = parse_modalities(modalities) if modalities else fs.modalities
    refuse_leaks(features, fs, params, chosen)
    out = Path(out)
    only = [] if only_aggregate else (None if folds is None else [int(k) for k in folds])
    if track:  # the same folds as untracked: the parent run completes when the last fold is trained
        from hjcag.registry.tracking import train_with_tracking

        metrics, run_id = train_with_tracking(fs, params, chosen, params.model.name, out, experiment=experiment,
                                              only_folds=only)
        log.info("MLflow run %s", run_id)
        if metrics.get("complete") is False:
            metrics = {**metrics, "mlflow_run": run_id}
    else:
        metrics = train_and_evaluate(fs, params, chosen, params.model.name, out, only_folds=only)
    if metrics.get("complete") is False:
        if only_aggregate:
            done = sorted(r["fold"] for r in metrics["folds"])
            raise HjcagError(f"only fold(s) {done} of {metrics['n_folds']} reached the aggregation step.")
        return metrics
    meta, run_meta = artifacts.features_meta_path(features), artifacts.features_meta_path(out / artifacts.FEATURES_FILE)
    if meta.exists():  # packaging finds the extractor record beside the weights
        shutil.copy2(meta, run_meta)
    elif "t" in chosen and fs.text_context:
        # a copied .npz without its record: its own mark still tells serving how the text was read
        log.warning("no %s beside '%s': the run records only what the file itself marks (text read with its %d "
                    "preceding turns); serving checks other raw inputs by feature dims only",
                    meta.name, features, fs.text_context)
        artifacts.write_json(run_meta, {"modalities": {"text": {"dim": fs.dims["t"],
                                                                "text_context": fs.text_context}},
                                        "from": f"the marks inside {Path(features).name} (no {meta.name})"})
    return metrics


def refuse_leaks(features: str | Path, fs: FeatureSet, params: Params, modalities: Sequence[str],
                 tuning: bool = False) -> None:
    """The one leak guard of every stage that trains (train, tune, ablate): refuse, in one line, a run whose test
    (or, when `tuning`, validation) rows the features or the profile have already seen labelled."""
    if "t" in modalities:
        refuse_finetuned_text_outside_holdout(features, fs, params)
    if not tuning:
        refuse_tuned_profile_on_its_own_rows(features, fs, params)


def finetuned_mark(features: str | Path, fs: FeatureSet) -> dict[str, Any] | None:
    """What the text encoder of `features` was fine-tuned on: the mark inside the file (key ``text_finetuned``),
    else, for files written before it travelled inside, the ``finetuned`` record of the meta file beside it."""
    if fs.text_finetuned is not None:
        return fs.text_finetuned
    meta = artifacts.features_meta_path(features)
    text = (artifacts.read_json(meta).get("modalities") or {}).get("text") or {} if meta.is_file() else {}
    return text.get("finetuned") or None


def refuse_finetuned_text_outside_holdout(features: str | Path, fs: FeatureSet, params: Params) -> None:
    """Text features of an encoder fine-tuned on this dataset's train rows (``hjcag finetune-text``) leak under
    cross-validation: those rows land in test folds. Only the holdout protocol keeps them apart."""
    mark = finetuned_mark(features, fs)
    if mark and params.train.protocol != "holdout":
        raise ConfigError(
            f"'{features}' holds text features of an encoder fine-tuned on the dataset's train rows "
            f"({mark.get('train_rows')} rows, `hjcag finetune-text`); protocol "
            f"'{params.train.protocol}' would test on rows the encoder was trained on. Use --protocol holdout "
            "(train rows train, dev selects, test is reported), or extract with the pre-trained encoder.")


def refuse_tuned_profile_on_its_own_rows(features: str | Path, fs: FeatureSet, params: Params) -> None:
    """A profile ``hjcag tune`` wrote picked its values on validation labels: under cv5 every row is a test row of
    some fold, and cv5 tuning carves its validation rows from all of them, so only holdout tuning followed by
    holdout training (dev picks, test never read) may report test figures on the rows it was tuned on."""
    from hjcag.train.tune import shared_rows

    record = params.tuned_on
    if record is None or (record.protocol == "holdout" and params.train.protocol == "holdout"):
        return
    shared = shared_rows(fs, record.rows)
    if shared == 0:
        return
    instead = ("Train with --protocol holdout" if record.protocol == "holdout" else
               "Tune again with `hjcag tune --protocol holdout` and train with --protocol holdout")
    raise ConfigError(
        f"profile '{params.profile}' was tuned under {record.protocol} (study '{record.study}') on rows that "
        f"'{features}' holds ({shared} of its {len(record.rows)} sampled rows): protocol '{params.train.protocol}' "
        f"would report as test the labels that picked its values. {instead} (dev picks, test is reported once), "
        "or tune on other data than you test on.")


def tune(features: str | Path, out: str | Path, params: Params, modalities: str | None = None,
         trials: int | None = None, minutes: float | None = None, study: str | None = None,
         storage: str | None = None, track: bool = True, experiment: str | None = None,
         params_path: str | Path | None = None, profile_name: str | None = None) -> dict[str, Any]:
    """Optuna search over ``tune.space`` scored on each fold's validation split (never a test fold) -> out/best.yaml
    and out/study.json; resumes the study when it exists. With `params_path`, the best values become the profile
    `profile_name` (default ``<profile>-tuned``) in that params file. Returns the study's summary."""
    from hjcag.params_file import write_profile
    from hjcag.registry.tracking import tracking_uri
    from hjcag.registry.tuning import MlflowTracker
    from hjcag.train.tune import Tracker, default_study_name, run_tuning

    artifacts.writable_dir(out)
    fs = load_features(features, params)
    chosen = parse_modalities(modalities) if modalities else fs.modalities
    refuse_leaks(features, fs, params, chosen, tuning=True)
    name = study or default_study_name(params, params.model.name, chosen)
    profile_name = (profile_name or f"{params.profile}-tuned") if params_path is not None else None
    tracker = MlflowTracker(params, name, experiment) if track else Tracker()
    summary = run_tuning(fs, params, chosen, params.model.name, out, trials=trials, minutes=minutes,
                         study_name=name, storage=storage, tracker=tracker, profile_name=profile_name,
                         tracking_uri=tracking_uri())
    if params_path is not None and profile_name is not None:
        best = summary["best"]
        write_profile(params_path, profile_name, params.profile, best["overrides"],
                      comment=f"study {name}, trial {best['trial']}, {params.tune.metric} {best['value']:.4f}",
                      record=summary["tuned_on"])
        log.info("profile '%s' written to %s: hjcag train --profile %s", profile_name, params_path, profile_name)
    return summary


def merge_folds(fold_runs: Sequence[str | Path], run_dir: str | Path) -> Path:
    """Copy the fold_K directories of per-fold runs (of one run: same run.json) into `run_dir`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for fold_run in map(Path, fold_runs):
        for name in artifacts.RUN_TOP_FILES:
            src, dst = fold_run / name, run_dir / name
            if not src.exists():
                raise HjcagError(f"'{fold_run}' has no {name}: it is not a run directory written by `hjcag train`.")
            if name == artifacts.RUN_FILE and dst.exists() and artifacts.read_json(src) != artifacts.read_json(dst):
                raise HjcagError(f"'{fold_run}' was trained with other settings than the other folds; train every "
                                 "fold with the same params and features.")
            if not dst.exists():
                shutil.copy2(src, dst)
        for sub in sorted(fold_run.glob("fold_*")):
            if sub.is_dir() and not (run_dir / sub.name).exists():
                shutil.copytree(sub, run_dir / sub.name)
    return run_dir


def ablate(features: str | Path, out: str | Path, params: Params) -> dict[str, Any]:
    """The paper's Table 4 configurations on the same folds -> out/ablation.md (+ one run per row)."""
    from hjcag.train.ablate import run_ablation

    fs = load_features(features, params)
    refuse_leaks(features, fs, params, fs.modalities)  # its rows train on every modality subset, text included
    return run_ablation(fs, params, artifacts.writable_dir(out))


def evaluate(run: str | Path, out: str | Path) -> dict[str, Any]:
    """A finished run -> flat metrics.json, folds.csv, predictions.csv, learning curves, plots, report.md."""
    from hjcag.train.evaluate import evaluate_run

    return evaluate_run(run, artifacts.writable_dir(out))


def gate(run: str | Path, params: Params, report: str | Path | None = None,
         raise_on_failure: bool = True) -> GateResult:
    """The run against ``gates`` (accuracy, weighted F1) -> `report` (gate.json, also when it fails)."""
    from hjcag.registry.gate import gate_run

    if report is not None:
        artifacts.writable_file(report, "--report")
    return gate_run(run, params.gates, report, raise_on_failure=raise_on_failure)


# ---------------------------------------------------------------- registry and serving


def register(run: str | Path, features: str | Path, params: Params, dvc_lock: str | Path | None = None,
             experiment: str | None = None, name: str | None = None,
             record: str | Path | None = None) -> RegisteredVersion:
    """Log the run to MLflow, gate it, register it with alias 'candidate'; `record` gets what was registered (the
    same bytes when the same run is registered again, also in another checkout), ``<record>.run.json`` beside it
    MLflow's ids and the git commit of this registration."""
    from hjcag.registry.register import log_and_register
    from hjcag.registry.tracking import tracking_uri

    if record is not None:
        artifacts.writable_file(record, "--record")
    version = log_and_register(run, params, features, dvc_lock, experiment, name)
    if record is not None:
        stable, volatile = version.records()
        artifacts.write_json(record, {**stable, "tracking_uri": tracking_uri()})
        artifacts.write_json(artifacts.run_record_path(record), volatile)
    return version


def registered_source(record: str | Path) -> tuple[str, str | None]:
    """models:/NAME/VERSION and the tracking URI of a record written by :func:`register`."""
    doc = artifacts.read_json(record, "written by `hjcag register --record`")
    try:
        return f"models:/{doc['name']}/{doc['version']}", doc.get("tracking_uri")
    except (KeyError, TypeError) as exc:
        raise HjcagError(f"'{record}' is not a record written by `hjcag register --record` (no {exc}); register "
                         "the run first or pass --run / --model-uri.") from exc


def package(source: str | Path, out: str | Path, params_path: str | Path | None = "params.yaml",
            profile: str | None = None, version: str | None = None, fold: int | None = None,
            features_meta: str | Path | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """A run directory or a registry URI -> out/hjcag.mar + its record ``hjcag.mar.json``; returns the record, with
    the archive's path under ``archive``."""
    from hjcag.serve.package import package_model, read_archive_record

    artifacts.writable_dir(out)
    mar = package_model(source, out, version=version, fold=fold, params_path=params_path, profile=profile,
                        features_meta=features_meta, tracking_uri=tracking_uri)
    return {**read_archive_record(mar), "archive": str(mar)}



# ---------------------------------------------------------------- predict


def predict(
    source: str | Path,
    out: str | Path,
    *,
    endpoint: str | None = None,
    model: str | Path | None = None,
    token_file: str | None = None,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    concurrency: int = 4,
    timeout: float = 60.0,
    retries: int = 4,
    dtype: str = "float32",
    modalities: str = "t,a,v",
    data_root: str | Path | None = None,
    context_window: int | None = None,
    plot: str | Path | None = None,
    params_path: str | Path | None = "params.yaml",
    profile: str | None = None,
) -> dict[str, Any]:
    """A manifest or features file -> one answer per utterance from `endpoint` (HTTP) or `model` (a .mar or run
    directory, in process), appended to ``out`` (a .jsonl, or a folder for predictions.jsonl) and written as CSV
    beside it; `plot`: a timeline PNG and an HTML page beside it. Resumes: utterances already in the output are not
    asked again. Returns {"jsonl", "csv", "rows" (in input order), "answered", "skipped", "plots"}."""
    from hjcag.client import Client, DialogueClient
    from hjcag.client.http import read_token
    from hjcag.client.local import LocalClient
    from hjcag.device import torch_threads
    from hjcag.predict.inputs import read_dialogues
    from hjcag.predict.rows import RowsFile, in_input_order, output_paths, write_csv
    from hjcag.predict.run import answer_dialogues
    from hjcag.serve.request import PACKED_DTYPES

    if (endpoint is None) == (model is None):
        raise ConfigError("pass exactly one of --endpoint URL and --model ARCHIVE_OR_RUN_DIR.")
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, not {concurrency}.")
    if dtype not in PACKED_DTYPES:
        raise ConfigError(f"--dtype must be {' or '.join(PACKED_DTYPES)}, not {dtype!r}.")
    dialogues = read_dialogues(source, parse_modalities(modalities), dtype, data_root)
    jsonl, csv_path = output_paths(out)
    artifacts.writable_dir(jsonl.parent)
    if plot is not None:
        artifacts.writable_file(plot, "--plot")
    rows_file = RowsFile(jsonl)
    done = rows_file.resume()
    client: DialogueClient
    if endpoint is not None:
        client = Client(endpoint, read_token(token_file), timeout=timeout, retries=retries,
                        context_window=context_window, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    else:
        assert model is not None
        client = LocalClient.load(model, params_path, profile)
    with client, torch_threads(0):  # torch's setting is restored afterwards
        if isinstance(client, LocalClient):  # the threads a serving worker of this model uses (hjcag.serve.threads)
            log.info("torch threads: %s", client.predictor.use_serving_threads().describe())
        answered = answer_dialogues(client, dialogues, rows_file, done, concurrency)
    wanted = {u.utterance_id for d in dialogues for u in d}
    rows = in_input_order([r for r in rows_file.rows if r["utterance_id"] in wanted], dialogues)
    write_csv(csv_path, rows)
    plots: list[str] = []
    if plot is not None:
        from hjcag.predict.timeline import write_timeline

        plots = [str(p) for p in write_timeline(rows, plot)]
    return {"jsonl": str(jsonl), "csv": str(csv_path), "rows": rows, "answered": answered,
            "skipped": len(wanted & set(done)), "plots": plots}
