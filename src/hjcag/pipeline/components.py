"""KFP v2 components of the training pipeline: one per stage, typed artifacts, each a few lines over
:mod:`hjcag.stages`, the same functions ``hjcag <stage>`` (and so dvc.yaml) calls.

These are lightweight Python components: KFP ships each function's source and runs it in ``PIPELINE_IMAGE``
(components/Dockerfile), which has hjcag and kfp installed, hence ``install_kfp_package=False`` and the imports
inside the bodies. Locally, ``kfp.local.SubprocessRunner(use_venv=False)`` runs the same source in this
interpreter's environment.

Every component takes the params as text (``params_yaml``; empty = the params.yaml shipped with the code) and a
``profile``, so a pipeline run carries its exact hyperparameters.

No ``from __future__ import annotations`` here: KFP reads the annotations at decoration time.
"""

import functools
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

# The components' image (components/Dockerfile). Change it here, then `make pipeline` to recompile.
PIPELINE_IMAGE = "registry.example.com/hjcag/hjcag-pipeline:0.1.0"

component = functools.partial(dsl.component, base_image=PIPELINE_IMAGE, install_kfp_package=False)


@component
def raw_data(source_dir: str, params_yaml: str, profile: str, demo_size: str, raw: Output[Dataset]):
    """The raw dataset: a pointer to `source_dir` on the data volume, or (empty) the synthetic demo dataset, with
    the params' ``demo_data.context_cue`` share of echo turns."""
    from hjcag.pipeline import io

    params = io.resolve_params(params_yaml, profile)
    raw.metadata.update(io.raw_dataset(raw.path, source_dir, demo_size, params.seed, params.demo_data.context_cue))


@component
def prepare(raw: Input[Dataset], params_yaml: str, profile: str, dataset_kind: str, modalities: str,
            manifest: Output[Dataset]):
    """`hjcag prepare`: the dataset's layout -> manifest.parquet + prepare_report.json."""
    from hjcag import stages
    from hjcag.pipeline import io

    params = io.resolve_params(params_yaml, profile)
    report = stages.prepare(dataset_kind, io.raw_root(raw.path, raw.metadata), manifest.path, params, modalities)
    print(report.summary())
    manifest.metadata["rows"] = report.rows_written


@component
def validate(raw: Input[Dataset], manifest: Input[Dataset], params_yaml: str, profile: str, modalities: str,
             validated: Output[Dataset]):
    """`hjcag validate`: Great Expectations checks of the manifest and its media (under the raw dataset's root,
    wherever this step finds it); a failure stops the run."""
    from hjcag import artifacts, stages
    from hjcag.pipeline import io

    params = io.resolve_params(params_yaml, profile)
    result = stages.validate(f"{manifest.path}/{artifacts.MANIFEST_FILE}", validated.path, params, modalities,
                             progress=False, data_root=io.raw_root(raw.path, raw.metadata))
    print(result.summary())
    validated.metadata.update({"outcome": result.outcome, "rows": result.rows})


@component
def features(raw: Input[Dataset], validated: Input[Dataset], params_yaml: str, profile: str, modalities: str,
             standin: bool, cache_dir: str, features: Output[Dataset]):
    """`hjcag features` (RoBERTa / openSMILE / ResNet-50; `standin`: the demo's quick stand-ins) -> features.npz,
    then `hjcag validate-features` into features/validation (a failed check stops the run)."""
    from hjcag import artifacts, stages
    from hjcag.pipeline import io

    params = io.resolve_params(params_yaml, profile)
    manifest = f"{validated.path}/{artifacts.VALID_MANIFEST_FILE}"
    out = f"{features.path}/{artifacts.FEATURES_FILE}"
    if standin:
        path = stages.standin_features(io.raw_root(raw.path, raw.metadata), out, params, modalities, keep=manifest)
    else:
        path = stages.features(manifest, out, params, modalities, cache=cache_dir,
                               data_root=io.raw_root(raw.path, raw.metadata))
    print(stages.validate_features(path, f"{features.path}/validation").summary())
    features.metadata["standin"] = standin


@component
def tune(features: Input[Dataset], params_yaml: str, profile: str, trials: int, modalities: str, storage: str,
         experiment: str, study: Output[Artifact]) -> NamedTuple("Tuned", [("params_yaml", str), ("profile", str)]):
    """`hjcag tune --trials N` on each fold's validation split; returns the params text with the best values as the
    profile ``<profile>-tuned`` and that profile's name, which the training steps then take. `trials` <= 0: no
    tuning, the params and profile pass through unchanged."""
    from collections import namedtuple

    from hjcag import artifacts, stages
    from hjcag.pipeline import io

    tuned = namedtuple("Tuned", ["params_yaml", "profile"])
    if trials <= 0:
        study.metadata["trials"] = 0
        return tuned(params_yaml, profile)
    params, path = io.write_params(params_yaml, profile, study.path)  # the tuned params.yaml stays in the study
    summary = stages.tune(f"{features.path}/{artifacts.FEATURES_FILE}", study.path, params, modalities or None,
                          trials=trials, storage=storage or None, experiment=experiment or None, params_path=path)
    study.metadata.update({"trials": trials, "study": summary["study"], "profile": summary["profile"],
                           "best_value": summary["best"]["value"], "best_trial": summary["best"]["trial"]})
    return tuned(path.read_text(encoding="utf-8"), summary["profile"])


@component
def plan_folds(features: Input[Dataset], params_yaml: str, profile: str) -> list[int]:
    """The fold indices of the protocol in params (train.protocol, train.folds): what runs in parallel."""
    from hjcag import artifacts, stages
    from hjcag.pipeline import io

    params = io.resolve_params(params_yaml, profile)
    return stages.plan_folds(f"{features.path}/{artifacts.FEATURES_FILE}", params)


@component
def train_fold(features: Input[Dataset], params_yaml: str, profile: str, fold: int, modalities: str,
               model: Output[Model]):
    """`hjcag train --folds K`: one fold, written as a run directory holding fold_K."""
    from hjcag import artifacts, stages
    from hjcag.pipeline import io

    params = io.resolve_params(params_yaml, profile)
    stages.train(f"{features.path}/{artifacts.FEATURES_FILE}", model.path, params, modalities or None, folds=[fold])
    model.metadata["fold"] = fold


@component
def evaluate(folds: Input[list[Model]], features: Input[Dataset], params_yaml: str, profile: str, modalities: str,
             run: Output[Model], metrics: Output[Metrics], evaluation: Output[Artifact]):
    """Merge the folds into one run and aggregate it (no retraining), then `hjcag evaluate` it."""
    from hjcag import artifacts, stages
    from hjcag.pipeline import io

    params = io.resolve_params(params_yaml, profile)
    stages.merge_folds([f.path for f in folds], run.path)
    stages.train(f"{features.path}/{artifacts.FEATURES_FILE}", run.path, params, modalities or None,
                 only_aggregate=True)
    summary = stages.evaluate(run.path, evaluation.path)
    for name, value in summary.items():
        metrics.log_metric(name, value)
    run.metadata.update({k: summary[k] for k in ("accuracy", "weighted_f1") if k in summary})


@component
def gate(run: Input[Model], params_yaml: str, profile: str, report: Output[Artifact]) -> bool:
    """`hjcag gate`: True when the run reaches every quality gate; the report says by how much it missed."""
    from hjcag import artifacts, stages
    from hjcag.pipeline import io

    params = io.resolve_params(params_yaml, profile)
    result = stages.gate(run.path, params, f"{report.path}/{artifacts.GATE_FILE}", raise_on_failure=False)
    report.metadata.update({"passed": result.passed, "summary": result.summary()})
    print(result.summary())
    return result.passed


@component
def register(run: Input[Model], features: Input[Dataset], params_yaml: str, profile: str, experiment: str,
             registered_name: str) -> NamedTuple("Registered", [("model_uri", str), ("name", str), ("version", str)]):
    """`hjcag register`: log the run to MLflow (MLFLOW_TRACKING_URI) and register it with alias 'candidate'."""
    from collections import namedtuple

    from hjcag import artifacts, stages
    from hjcag.pipeline import io

    params = io.resolve_params(params_yaml, profile)
    version = stages.register(run.path, f"{features.path}/{artifacts.FEATURES_FILE}", params,
                              experiment=experiment or None, name=registered_name or None)
    print(f"registered {version.name} version {version.version} (alias 'candidate'; reused: {version.reused})")
    return namedtuple("Registered", ["model_uri", "name", "version"])(version.model_uri, version.name,
                                                                     version.version)


@component
def package(model_uri: str, features: Input[Dataset], params_yaml: str, profile: str, mar: Output[Model]):
    """`hjcag package --model-uri`: the registered version -> hjcag.mar + hjcag.mar.json."""
    import tempfile

    from hjcag import artifacts, stages
    from hjcag.pipeline import io

    meta = artifacts.features_meta_path(f"{features.path}/{artifacts.FEATURES_FILE}")
    with tempfile.TemporaryDirectory(prefix="hjcag-params-") as tmp:
        _, params_path = io.write_params(params_yaml, profile, tmp)
        record = stages.package(model_uri, mar.path, params_path, profile or None,
                                features_meta=meta if meta.exists() else None)
    mar.metadata.update({k: record[k] for k in ("version", "sha256", "model", "size_bytes")})


@component
def deploy(mar: Input[Model], target: str, namespace: str, model_image: str, dry_run: bool,
           rollout: Output[Artifact]):
    """Roll the archive out: patch the TorchServe Deployment or the KServe InferenceService (hjcag.pipeline.deploy)."""
    import json
    from pathlib import Path

    from hjcag.pipeline.deploy import deploy as roll_out

    done = roll_out(target, mar.path, model_image, namespace, dry_run=dry_run)
    Path(rollout.path).write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
    rollout.metadata.update({"target": target, "dry_run": dry_run, "version": done["version"]})
    print(json.dumps(done, indent=2))


# Every stage's component, in pipeline order: `make pipeline` also writes each one's spec to components/<name>.yaml,
# for pipelines of your own (kfp.components.load_component_from_file).
ALL = (raw_data, prepare, validate, features, tune, plan_folds, train_fold, evaluate, gate, register, package,
       deploy)
