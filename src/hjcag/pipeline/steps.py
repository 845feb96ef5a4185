"""What each stage of the KFP training pipeline does, as plain functions over paths (no KFP in here).

The components in :mod:`hjcag.pipeline.components` are a few lines each around these functions, and these call
the same package functions as ``hjcag <stage>`` (and so as dvc.yaml): one implementation of every stage.

Artifacts between stages are directories:

    raw dataset   the dataset as downloaded (MELD/IEMOCAP layout); for data on a mounted volume only a pointer
                  (``source_dir`` in the artifact's metadata), so gigabytes of media are not copied around
    manifest      manifest.parquet + prepare_report.json (``hjcag prepare``)
    validated     manifest.valid.parquet, validation.json, data_docs/ (``hjcag validate``)
    features      features.npz (+ features.meta.json) (``hjcag features`` or the stand-in features)
    fold model    a run directory holding one finished fold_K (``hjcag train --folds K``)
    run           the merged run directory with metrics.json (``hjcag train`` without --folds aggregates)
    mar           hjcag.mar + hjcag.mar.json (``hjcag package``)
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hjcag
from hjcag.errors import ConfigError, DataError, HjcagError
from hjcag.params import Params, load_params, parse_modalities

if TYPE_CHECKING:
    from hjcag.registry.gate import GateResult
    from hjcag.registry.register import RegisteredVersion
    from hjcag.validate.runner import ValidationResult

log = logging.getLogger(__name__)

REPO_ROOT = Path(hjcag.__file__).resolve().parents[2]  # src/hjcag -> the checkout (the image installs it editable)
PARAMS_FILE = "params.yaml"
SOURCE_KEY = "source_dir"  # raw-dataset artifact metadata: the dataset lives on a mounted volume, here
FEATURES_FILE = "features.npz"
FEATURES_META = "features.meta.json"  # hjcag.features.extract.meta_path(features.npz)
GATE_REPORT = "gate.json"
# What a fold run directory holds besides its fold_K directories (hjcag.train.run's layout).
RUN_TOP_FILES = ("run.json", "folds.json", "model_config.json")


# ---------------------------------------------------------------- params


def default_params_text() -> str:
    """The params.yaml that ships with the code (the repository's; the pipeline image installs it)."""
    path = REPO_ROOT / PARAMS_FILE
    if not path.is_file():
        raise ConfigError(f"no params.yaml next to the installed hjcag ({path}); pass the params as text "
                          "(the pipeline parameter params_yaml).")
    return path.read_text(encoding="utf-8")


def resolve_params(params_yaml: str, profile: str, workdir: str | Path | None = None) -> tuple[Params, Path]:
    """The pipeline's params: the text `params_yaml` (empty: the shipped params.yaml) under `profile` (empty: the
    file's ``profile:``). Also written to ``workdir/params.yaml``, because packaging reads a params file."""
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="hjcag-params-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / PARAMS_FILE
    path.write_text(params_yaml if params_yaml.strip() else default_params_text(), encoding="utf-8")
    return load_params(path, profile or None), path


# ---------------------------------------------------------------- data


def raw_dataset(out: str | Path, source_dir: str = "", demo_size: str = "tiny", seed: int = 13) -> dict[str, str]:
    """The raw-dataset artifact: a pointer to `source_dir` (a dataset on a mounted volume), or, without one, the
    synthetic demo dataset written into `out`. Returns the artifact's metadata."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if source_dir:
        if not Path(source_dir).is_dir():
            raise DataError(f"dataset directory '{source_dir}' not found in this step's container; mount the data "
                            "volume there (the pipeline mounts the data PVC at /data) or fix source_dir.")
        (out / "SOURCE").write_text(source_dir + "\n", encoding="utf-8")
        return {SOURCE_KEY: source_dir}
    from hjcag.data.synthetic import write_demo_dataset

    write_demo_dataset(out, size=demo_size, seed=seed)
    return {"demo_size": demo_size, "seed": str(seed)}


def raw_root(path: str | Path, metadata: dict[str, Any] | None) -> Path:
    """Where the raw dataset of a raw-dataset artifact lives."""
    source = (metadata or {}).get(SOURCE_KEY)
    return Path(source) if source else Path(path)


def prepare(raw_dir: str | Path, out: str | Path, params: Params, kind: str = "meld",
            modalities: str = "t,a,v") -> Any:
    """``hjcag prepare``: a dataset as downloaded -> out/manifest.parquet (+ prepare_report.json)."""
    from hjcag.data.prepare import prepare_dataset

    labels = params.labels or params.raw.get("datasets", {}).get(kind, {}).get("labels")
    return prepare_dataset(kind, raw_dir, out, parse_modalities(modalities), labels=labels)


def validate(manifest_dir: str | Path, out: str | Path, params: Params, modalities: str = "t,a,v") -> ValidationResult:
    """``hjcag validate``: Great Expectations checks; raises (nothing downstream runs) when they fail."""
    from hjcag.data.manifest import MANIFEST_FILE
    from hjcag.validate.runner import validate_manifest_cli

    return validate_manifest_cli(Path(manifest_dir) / MANIFEST_FILE, out, params, modalities, progress=False)


def features(raw_dir: str | Path, validated_dir: str | Path, out: str | Path, params: Params,
             modalities: str = "t,a,v", standin: bool = False, cache_dir: str = "") -> Path:
    """``hjcag features`` on the validated manifest -> out/features.npz (+ features.meta.json), then ``hjcag
    validate-features`` -> out/validation/ (a failed check stops the run, as in dvc.yaml).

    `standin` uses the quick stand-in features of the demo instead of RoBERTa / openSMILE / ResNet-50 (tests, demos),
    restricted to the utterances validation kept. `cache_dir`: empty = params' features.cache_dir, "none" = off.
    """
    from hjcag.validate.runner import VALID_MANIFEST_FILE, validate_features_cli

    path = _extract(raw_dir, Path(validated_dir) / VALID_MANIFEST_FILE, Path(out) / FEATURES_FILE, params,
                    modalities, standin, cache_dir)
    print(validate_features_cli(path, Path(out) / "validation").summary())
    return path


def _extract(raw_dir: str | Path, valid_manifest: Path, out_path: Path, params: Params, modalities: str,
             standin: bool, cache_dir: str) -> Path:
    import pandas as pd

    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not standin:
        from hjcag.features.extract import extract_features_cli

        cache = {} if not cache_dir else {"cache_dir": None if cache_dir == "none" else cache_dir}
        return extract_features_cli(valid_manifest, out_path, params, modalities, **cache)
    import numpy as np

    from hjcag.data.features_file import save_features
    from hjcag.features.standin import extract_standin_features

    fs = extract_standin_features(raw_dir, seq_len=params.model.seq_len, modalities=parse_modalities(modalities))
    keep = set(pd.read_parquet(valid_manifest, columns=["utterance_id"])["utterance_id"].astype(str))
    fs = fs.subset(np.flatnonzero([str(u) in keep for u in fs.utterance_id]))
    log.warning("stand-in features (not RoBERTa / openSMILE / ResNet-50) for %d utterances", len(fs))
    return save_features(out_path, fs)


# ---------------------------------------------------------------- training


def _load(features_dir: str | Path, params: Params) -> Any:
    from hjcag.data.features_file import load_features

    return load_features(Path(features_dir) / FEATURES_FILE, seq_len=params.model.seq_len, label_names=params.labels)


def _modalities(spec: str, fs: Any) -> tuple[str, ...]:
    return parse_modalities(spec) if spec else tuple(fs.modalities)


def plan_folds(features_dir: str | Path, params: Params) -> list[int]:
    """The fold indices the protocol makes on these features (what the pipeline trains in parallel)."""
    from hjcag.train.folds import make_folds

    cfg = params.train
    return [f.index for f in make_folds(_load(features_dir, params), cfg.protocol, cfg.folds, cfg.val_fraction,
                                        params.seed)]


def train_fold(features_dir: str | Path, params: Params, fold: int, out: str | Path, modalities: str = "") -> dict:
    """``hjcag train --folds K``: train one fold into out/fold_K (plus the run's run.json, folds.json, ...)."""
    from hjcag.train.run import train_and_evaluate

    fs = _load(features_dir, params)
    return train_and_evaluate(fs, params, _modalities(modalities, fs), params.model.name, Path(out),
                              only_folds=[int(fold)])


def merge_fold_runs(fold_dirs: Sequence[str | Path], run_dir: str | Path) -> Path:
    """Copy the fold_K directories of per-fold runs into one run directory (they must come from the same run)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for fold_dir in map(Path, fold_dirs):
        for name in RUN_TOP_FILES:
            src, dst = fold_dir / name, run_dir / name
            if not src.exists():
                raise HjcagError(f"'{fold_dir}' has no {name}: it is not a run directory written by train_fold.")
            if name == "run.json" and dst.exists() and json.loads(src.read_text()) != json.loads(dst.read_text()):
                raise HjcagError(f"'{fold_dir}' was trained with other settings than the other folds; "
                                 "re-run the pipeline so every fold uses the same params and features.")
            if not dst.exists():
                shutil.copy2(src, dst)
        for sub in sorted(fold_dir.glob("fold_*")):
            if sub.is_dir() and not (run_dir / sub.name).exists():
                shutil.copytree(sub, run_dir / sub.name)
    return run_dir


def aggregate(fold_dirs: Sequence[str | Path], features_dir: str | Path, params: Params, run_dir: str | Path,
              modalities: str = "") -> dict:
    """Merge the folds and aggregate them (``hjcag train`` on a directory holding every fold: no retraining)."""
    from hjcag.train.run import train_and_evaluate

    run_dir = merge_fold_runs(fold_dirs, run_dir)
    meta = Path(features_dir) / FEATURES_META
    if meta.exists():  # packaging looks for it in the run directory
        shutil.copy2(meta, run_dir / FEATURES_META)
    fs = _load(features_dir, params)
    metrics = train_and_evaluate(fs, params, _modalities(modalities, fs), params.model.name, run_dir)
    if metrics.get("complete") is False:
        done = sorted(r["fold"] for r in metrics["folds"])
        raise HjcagError(f"only fold(s) {done} of {metrics['n_folds']} reached the aggregation step.")
    return metrics


def evaluate(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """``hjcag evaluate``: metrics.json, folds.csv, predictions.csv, plots, report.md of the run."""
    from hjcag.train.evaluate import evaluate_run

    return evaluate_run(run_dir, out)


def gate(run_dir: str | Path, params: Params, out: str | Path) -> GateResult:
    """``hjcag gate`` without raising: out/gate.json holds every check, its value, threshold and shortfall."""
    from hjcag.registry.gate import GateFailed, gate_run

    report = Path(out) / GATE_REPORT
    try:
        result = gate_run(run_dir, params.gates, report)
    except GateFailed as failed:
        result = failed.result
    report.write_text(json.dumps({**result.to_dict(), "summary": result.summary()}, indent=2) + "\n",
                      encoding="utf-8")
    log.info("%s", result.summary())
    return result


# ---------------------------------------------------------------- registry and serving


def register(run_dir: str | Path, features_dir: str | Path, params: Params, experiment: str = "",
             name: str = "") -> RegisteredVersion:
    """``hjcag register``: log the run to MLflow (MLFLOW_TRACKING_URI), gate it, register it as 'candidate'."""
    from hjcag.registry.register import log_and_register

    return log_and_register(run_dir, params, Path(features_dir) / FEATURES_FILE, None, experiment or None,
                            name or None)


def package(model_uri: str, out: str | Path, params_path: str | Path, profile: str = "",
            features_dir: str | Path | None = None) -> dict[str, Any]:
    """``hjcag package --model-uri``: the registered model -> out/hjcag.mar + out/hjcag.mar.json (the record)."""
    from hjcag.serve.package import package_model, read_archive_record

    meta = Path(features_dir) / FEATURES_META if features_dir is not None else None
    mar = package_model(model_uri, out, params_path=params_path, profile=profile or None,
                        features_meta=meta if meta is not None and meta.exists() else None)
    return read_archive_record(mar)
