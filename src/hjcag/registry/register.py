"""Register a gated run in the MLflow Model Registry as ``hjcag-<dataset>`` with the alias ``candidate``.

The registered model is an MLflow pyfunc that wraps the run directory itself: ``model_config.json``, every
fold's ``model.safetensors`` and the features' ``.meta.json`` record are the model's artifacts (under ``run_dir/``),
so serving can recover exactly what :func:`hjcag.artifacts.load_trained_model` reads (:func:`download_run_dir`) and
check raw input against how the features were made, and ``mlflow.pyfunc.load_model`` predicts with the same
weights. The pyfunc is logged as "models from code" (no pickle) and carries the hjcag sources as code paths, so it
loads anywhere its pinned requirements are installed.

Each version is tagged with the git commit, the DVC data hash of the features, the params hash and the run's
fingerprint; registering the same run, data and params again returns the existing version instead of a copy.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import yaml

from hjcag.artifacts import FEATURES_FILE, MODEL_CONFIG_FILE, RUN_FILE, features_meta_path, file_digest, unit_model_doc
from hjcag.errors import ConfigError, HjcagError
from hjcag.identity import params_identity
from hjcag.params import Params
from hjcag.registry.aliases import CANDIDATE, model_name_for
from hjcag.registry.gate import GateFailed, check_gates, read_run_metrics
from hjcag.registry.tracking import (
    TAG_GATE,
    ensure_logged,
    get_client,
    params_hash,
    quiet_mlflow,
    tracking_uri,
)

log = logging.getLogger(__name__)

RUN_DIR_ARTIFACT = "run_dir"
MODEL_ARTIFACT_PATH = "model"
# The keys every registered version is tagged with.
TAG_GIT_COMMIT = "git_commit"
TAG_GIT_DIRTY = "git_dirty"
TAG_DATA_HASH = "dvc_data_hash"
TAG_PARAMS_HASH = "params_hash"
TAG_FINGERPRINT = "run_fingerprint"
# Installed distributions the pyfunc needs at load time (pinned to the versions it was logged with).
RUNTIME_DISTRIBUTIONS = ("mlflow", "torch", "numpy", "pandas", "safetensors", "scikit-learn", "pyyaml", "tqdm")

_MODEL_CODE = '''"""MLflow "models from code" entry point of an hjcag model (written by hjcag.registry.register)."""
from mlflow.models import set_model

from hjcag.registry.register import HjcagPyfunc

set_model(HjcagPyfunc())
'''


@dataclass(frozen=True)
class RegisteredVersion:
    """What registering produced (a plain summary of MLflow's ModelVersion)."""

    name: str
    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    reused: bool = False  # True when an identical version already existed

    def records(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(what the run, data and params determine: name, version, hashes and scores, the same bytes whenever the
        same run is registered into a fresh registry; what this registration adds: MLflow's generated ids,
        aliases and the git commit it happened at), for the record a pipeline tracks and its run record."""
        volatile_tags = (TAG_GIT_COMMIT, TAG_GIT_DIRTY)
        stable = {"name": self.name, "version": self.version, "model_uri": self.model_uri,
                  "tags": {k: v for k, v in sorted(self.tags.items()) if k not in volatile_tags}}
        run = {"run_id": self.run_id, "source": self.source, "aliases": list(self.aliases),
               "tags": {k: self.tags[k] for k in volatile_tags if k in self.tags}}
        return stable, run


# ---------------------------------------------------------------- provenance


def git_commit(cwd: str | Path | None = None) -> tuple[str, bool]:
    """(HEAD commit, whether the work tree has changes), or ("unknown", False) outside a git repository."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown", False
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def _dvc_lock_md5(features: Path, dvc_lock: Path) -> str | None:
    try:
        doc = yaml.safe_load(dvc_lock.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise HjcagError(f"cannot read '{dvc_lock}': {exc}. Fix or delete it, or run `dvc repro` again.") from exc
    target = features.absolute().resolve()
    for stage in (doc.get("stages") or {}).values():
        for out in (stage or {}).get("outs") or []:
            path = out.get("path")
            if path and (dvc_lock.parent / path).absolute().resolve() == target and out.get("md5"):
                return str(out["md5"])
    return None


def data_hash(features: str | Path, dvc_lock: str | Path | None = "dvc.lock") -> str:
    """The DVC hash of the features: the file's MD5 (equal to what DVC records for it).

    When `dvc_lock` records the file (e.g. a directory output, which DVC hashes as ``<md5>.dir``), that value is
    used for directories; for a file whose bytes differ from the lock entry the file wins, with a warning that
    ``dvc.lock`` is stale.
    """
    features = Path(features)
    if not features.exists():
        raise HjcagError(f"features '{features}' not found; pass the features file the run was trained on "
                         "(`hjcag features` writes it).")
    locked = _dvc_lock_md5(features, Path(dvc_lock)) if dvc_lock is not None and Path(dvc_lock).exists() else None
    if features.is_dir():
        if locked is None:
            raise HjcagError(f"'{features}' is a directory that dvc.lock does not record; pass the features file.")
        return locked
    actual = file_digest(features, "md5")
    if locked is not None and locked != actual:
        log.warning("dvc.lock records md5 %s for %s but the file's md5 is %s; using the file's (run `dvc commit` "
                    "or `dvc repro` to update dvc.lock)", locked, features, actual)
    return actual


def check_params_match(run_dir: Path, params: Params) -> None:
    """Refuse to tag a run with params it was not trained with (the params hash would then be wrong)."""
    run_file = run_dir / RUN_FILE
    if not run_file.exists():
        return
    identity = json.loads(run_file.read_text(encoding="utf-8")).get("identity", {})
    given = json.loads(json.dumps(params_identity(params, str(identity.get("model", params.model.name)))))
    stored_train, stored_model = identity.get("train", {}), dict(identity.get("model_config", {}))
    train = {k: v for k, v in given["train"].items() if k in stored_train}
    model = {k: v for k, v in given["model_config"].items() if k in stored_model}
    model.pop("name", None)
    stored_model.pop("name", None)
    diffs = [f"train.{k}: run {stored_train[k]!r} vs params {v!r}" for k, v in train.items() if stored_train[k] != v]
    diffs += [f"model.{k}: run {stored_model[k]!r} vs params {v!r}" for k, v in model.items() if stored_model[k] != v]
    if "seed" in identity and identity["seed"] != params.seed:
        diffs.append(f"seed: run {identity['seed']!r} vs params {params.seed!r}")
    if diffs:
        raise ConfigError(f"run '{run_dir}' was trained with other params than the ones given: "
                          + "; ".join(diffs) + ". Pass the same --params/--profile the run was trained with.")


# ---------------------------------------------------------------- the pyfunc model

# MLflow warns at class creation that predict() has no input type hint; its hint-based validation has no type
# for a dict of 3-D arrays, so the explicit tensor signature (model_signature) validates instead. MLflow forces
# its own "once" filter, so the warning is captured by recording rather than filtered.
with warnings.catch_warnings(record=True) as _caught:
    warnings.simplefilter("always")

    class HjcagPyfunc(mlflow.pyfunc.PythonModel):
        """Input: {modality: float32 (B, L, d_m)}. Output: one row per utterance with the predicted label, its
        probability, every class probability (``prob_<label>``) and the gate weight of each modality."""

        def load_context(self, context: Any) -> None:
            from hjcag.artifacts import load_trained_model

            self.model, self.doc = load_trained_model(Path(context.artifacts[RUN_DIR_ARTIFACT]))

        # `model_input` stays unannotated on purpose: MLflow would derive (and enforce) an input schema from it.
        def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
            import torch

            modalities = self.doc["modalities"]
            missing = [m for m in modalities if m not in model_input]
            if missing:
                raise HjcagError(f"input lacks modalities {missing}; expected arrays for {modalities}")
            inputs = {m: torch.as_tensor(np.asarray(model_input[m], dtype=np.float32)) for m in modalities}
            with torch.no_grad():
                out = self.model(inputs)
            return output_frame(out.logits, out.gate, self.doc)

for _w in _caught:
    if "type hint" not in str(_w.message).lower():
        warnings.warn_explicit(_w.message, _w.category, _w.filename, _w.lineno)


def output_frame(logits: Any, gate: Any, doc: dict[str, Any]) -> pd.DataFrame:
    """Logits and gate weights -> the pyfunc's output table (also used to compare with the run's model)."""
    import torch

    probs = torch.softmax(torch.as_tensor(logits).float(), dim=1).double().numpy()
    labels = doc["label_names"]
    frame = pd.DataFrame({
        "label": [labels[i] for i in probs.argmax(axis=1)],
        "confidence": probs.max(axis=1),
    })
    for i, label in enumerate(labels):
        frame[f"prob_{label}"] = probs[:, i]
    gate_np = torch.as_tensor(gate).double().numpy()
    for j, m in enumerate(doc["modalities"]):
        frame[f"gate_{m}"] = gate_np[:, j]
    return frame


def model_signature(doc: dict[str, Any]) -> Any:
    """Named float32 tensors (-1, L, d_m) in, the output table's columns out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    seq_len = int(doc["seq_len"])
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, seq_len, int(doc["input_dims"][m])), m)
                     for m in doc["modalities"]])
    outputs = Schema([ColSpec("string", "label"), ColSpec("double", "confidence"),
                      *[ColSpec("double", f"prob_{lab}") for lab in doc["label_names"]],
                      *[ColSpec("double", f"gate_{m}") for m in doc["modalities"]]])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(doc: dict[str, Any], batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic example input of the right shapes (values rounded to keep the stored JSON small)."""
    rng = np.random.default_rng(seed)
    return {m: np.round(rng.normal(size=(batch, int(doc["seq_len"]), int(doc["input_dims"][m]))), 3)
            .astype(np.float32) for m in doc["modalities"]}


def _pip_requirements() -> list[str]:
    reqs = []
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def _stage(run_dir: Path, doc: dict[str, Any], tmp: Path) -> tuple[Path, Path, Path]:
    """Copy what the model needs into `tmp`: the run dir's config + weights, the hjcag sources, the code file."""
    staged = tmp / RUN_DIR_ARTIFACT
    staged.mkdir()
    shutil.copy2(run_dir / MODEL_CONFIG_FILE, staged / MODEL_CONFIG_FILE)
    for rel in doc["weights"]["folds"]:
        if (run_dir / rel).exists():
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run_dir / rel, staged / rel)
    meta = features_meta_path(run_dir / FEATURES_FILE)
    if meta.exists():  # what the training features were made with: packaging from the registry checks raw input by it
        shutil.copy2(meta, staged / meta.name)
    import hjcag

    code = tmp / "code" / "hjcag"
    shutil.copytree(Path(hjcag.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    entry = tmp / "hjcag_model.py"
    entry.write_text(_MODEL_CODE, encoding="utf-8")
    return staged, code, entry


# ---------------------------------------------------------------- registering


def _as_registered(mv: Any, client: Any, reused: bool = False) -> RegisteredVersion:
    mv = client.get_model_version(mv.name, mv.version)
    return RegisteredVersion(name=mv.name, version=str(mv.version), run_id=mv.run_id or "",
                             model_uri=f"models:/{mv.name}/{mv.version}", source=mv.source, tags=dict(mv.tags),
                             aliases=tuple(mv.aliases or ()), reused=reused)


def _existing_version(client: Any, name: str, tags: dict[str, str]) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    keys = (TAG_FINGERPRINT, TAG_DATA_HASH, TAG_PARAMS_HASH)
    same = [v for v in versions if all(v.tags.get(k) == tags[k] for k in keys)]
    return max(same, key=lambda v: int(v.version)) if same else None


def register_run(run_dir: str | Path, params: Params, data_hash: str, parent_run_id: str | None = None,
                 name: str | None = None, experiment: str | None = None) -> RegisteredVersion:
    """Gate the run, then register it as `name` (default ``hjcag-<dataset>``) and set the alias ``candidate``.

    A gate failure raises :class:`GateFailed` and registers nothing. Without `parent_run_id` the run directory is
    logged first (or its earlier identical log is reused), so the model version links to its training run.
    """
    run_dir = Path(run_dir)
    metrics = read_run_metrics(run_dir)
    if not (run_dir / MODEL_CONFIG_FILE).exists():
        raise HjcagError(f"'{run_dir}' has no model_config.json; is it a directory written by `hjcag train`?")
    check_params_match(run_dir, params)
    gate = check_gates(metrics, params.gates)
    client = get_client()
    if parent_run_id is not None:
        with quiet_mlflow():
            client.set_tag(parent_run_id, TAG_GATE, "passed" if gate.passed else "failed")
            client.log_text(parent_run_id, json.dumps(gate.to_dict(), indent=2), "report/gate.json")
    if not gate.passed:
        raise GateFailed(gate, where=f"run '{run_dir}'")
    if parent_run_id is None:
        return register_run(run_dir, params, data_hash, ensure_logged(run_dir, params, experiment), name, experiment)

    name = name or model_name_for(params)
    commit, dirty = git_commit()
    doc = json.loads((run_dir / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    if doc["weights"].get("default") is None:
        raise HjcagError(f"'{run_dir}' has no default weights yet; finish the run with `hjcag train` first.")
    unit = str(doc["weights"]["default"]).split("/", 1)[0]  # the fold that serving loads by default
    served = unit_model_doc(doc, unit)
    tags = {
        TAG_GIT_COMMIT: commit,
        TAG_GIT_DIRTY: str(dirty).lower(),
        TAG_DATA_HASH: data_hash,
        TAG_PARAMS_HASH: params_hash(params, str(doc["model"])),
        TAG_FINGERPRINT: str(metrics.get("fingerprint", "")),
        "dataset": params.dataset,
        "profile": params.profile,
        "model": str(doc["model"]),
        "modalities": ",".join(doc["modalities"]),
        "fold": unit,
        "context": str(served["model_config"]["context"]),  # what the default fold's model reads ("none" if dropped)
        **({} if served["context_kept"] is None else {"context_kept": str(served["context_kept"]).lower()}),
        "accuracy_mean": f"{metrics['accuracy']['mean']:.6f}",
        "weighted_f1_mean": f"{metrics['weighted_f1']['mean']:.6f}",
    }
    with quiet_mlflow():
        existing = _existing_version(client, name, tags)
        if existing is not None:
            client.set_registered_model_alias(name, CANDIDATE, existing.version)
            log.info("%s is already registered as %s version %s; alias '%s' set on it", run_dir, name,
                     existing.version, CANDIDATE)
            return _as_registered(existing, client, reused=True)
        with tempfile.TemporaryDirectory(prefix="hjcag-register-") as tmp:
            staged, code, entry = _stage(run_dir, doc, Path(tmp))
            with mlflow.start_run(run_id=parent_run_id):
                info = mlflow.pyfunc.log_model(
                    name=MODEL_ARTIFACT_PATH, python_model=str(entry), artifacts={RUN_DIR_ARTIFACT: str(staged)},
                    code_paths=[str(code)], signature=model_signature(doc), input_example=input_example(doc),
                    pip_requirements=_pip_requirements(), tags=tags,
                )
        if not _model_exists(client, name):
            client.create_registered_model(name, description="HJCAG emotion recognition models registered by hjcag.")
        mv = client.create_model_version(
            name, source=info.model_uri, run_id=parent_run_id, tags=tags, model_id=info.model_id,
            description=(f"{doc['model']} on {'+'.join(doc['modalities'])}, {params.dataset}/{params.profile}: "
                         f"accuracy {metrics['accuracy']['mean']:.4f}, weighted F1 "
                         f"{metrics['weighted_f1']['mean']:.4f} (mean over {metrics.get('n_folds', '?')} folds)"),
        )
        client.set_registered_model_alias(name, CANDIDATE, mv.version)
    log.info("registered %s version %s from %s (alias '%s'; registry %s)", name, mv.version, run_dir, CANDIDATE,
             tracking_uri())
    return _as_registered(mv, client)


def _model_exists(client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def log_and_register(run_dir: str | Path, params: Params, features: str | Path,
                     dvc_lock: str | Path | None = "dvc.lock", experiment: str | None = None,
                     name: str | None = None) -> RegisteredVersion:
    """What ``hjcag register`` does: log the run unless already logged, check the gates, register."""
    digest = data_hash(features, dvc_lock)
    check_params_match(Path(run_dir), params)
    parent = ensure_logged(run_dir, params, experiment)
    return register_run(run_dir, params, digest, parent_run_id=parent, name=name, experiment=experiment)


def download_run_dir(model_uri: str, dst: str | Path) -> Path:
    """Download a registered model (e.g. ``models:/hjcag-iemocap@champion``) and return the directory that
    holds its ``model_config.json`` and ``fold_K/model.safetensors``, loadable by ``load_trained_model``."""
    get_client()
    with quiet_mlflow():
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    found = sorted(local.rglob(MODEL_CONFIG_FILE))
    if not found:
        raise HjcagError(f"'{model_uri}' holds no model_config.json; it was not registered by `hjcag register`.")
    return found[0].parent
