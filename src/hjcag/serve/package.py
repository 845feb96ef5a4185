"""`hjcag package`: a training run (or a registered model) -> ``model-store/hjcag.mar`` for TorchServe.

The archive is self-contained. Its root (what TorchServe unpacks into the worker's model directory, which is first
on the worker's PYTHONPATH) holds:

    handler.py            torchserve/handler.py (beside this module), a shim over hjcag.serve.predictor
    model-config.yaml     torchserve/model-config.yaml: workers, batching, timeouts (--config-file)
    model.safetensors     the chosen fold's weights (the run's default: lowest validation loss)
    model_config.json     the run's model config, its weights pointing at model.safetensors
    index_to_name.json    the label map
    features.json         the feature-extractor config used at training time, and (when known) what the training
                          features were extracted with, so raw requests are extracted the same way or refused
    media.json            what valid media is (params.yaml ``validation.media`` under the run's profile): the
                          endpoint refuses a wav / mp4 that the pipeline's validation would refuse
    serving.json          model name and version, where it came from, the run's metrics
    hjcag/                the hjcag package source (pure Python)

Why the code travels in the archive: the archive and its code can never disagree, and the serving image needs only
hjcag's third-party dependencies (serving/Dockerfile installs them, not hjcag). Because the model directory comes
first on the worker's path, the archive's copy wins even where another hjcag is installed. The code is copied as a
directory, not a zip on sys.path, so tracebacks show real files and nothing depends on zipimport.

Next to the archive, ``hjcag.mar.json`` records the version, the archive's sha256 (the Kubernetes init container
checks it through MODEL_SHA256) and the model's provenance. TorchServe's ``load_models=all`` only loads ``.mar``
files, so the record does not disturb it. Archive and record hold no time and no machine's path when packaged from
the registry (:mod:`hjcag.serve.reproducible`): the same model gives the same bytes in every checkout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hjcag
from hjcag import mlflow_store
from hjcag.artifacts import (
    EXTRACTORS_FILE,
    FEATURES_FILE,
    LABELS_FILE,
    MEDIA_FILE,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    SERVING_FILE,
    WEIGHTS_FILE,
    features_meta_path,
    file_digest,
    read_json,
    trained_model_config,
    unit_model_doc,
    weights_path,
    write_json,
)
from hjcag.errors import ConfigError, HjcagError
from hjcag.params import MODALITY_NAMES, MediaConfig, load_params
from hjcag.serve.predictor import Predictor, run_version
from hjcag.serve.raw_media import warn_text_context_mismatch
from hjcag.serve.reproducible import normalise_archive

if TYPE_CHECKING:
    from hjcag.params import FeaturesConfig, Params

log = logging.getLogger(__name__)

MODEL_NAME = "hjcag"  # the TorchServe model name: POST /predictions/hjcag (k8s/ and serving/ rely on it)
TORCHSERVE_DIR = Path(__file__).resolve().parent / "torchserve"  # package data: handler, model and server config
HANDLER = TORCHSERVE_DIR / "handler.py"
MODEL_CONFIG_YAML = TORCHSERVE_DIR / "model-config.yaml"
URI_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:/", re.IGNORECASE)
PACKAGE_DIR = Path(hjcag.__file__).resolve().parent
# The modules of the layers above hjcag.serve (tests/test_architecture.py): serving never imports them, so the
# archive leaves them out, and a change to the client, `hjcag predict` or the pipelines leaves the archive as it was.
NOT_SERVED = ("client", "predict", "stages.py", "demo.py", "pipeline", "cli.py")


@dataclasses.dataclass(frozen=True)
class Source:
    """A local run directory, and the registry coordinates when it came from a models:/ URI."""

    run_dir: Path
    uri: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None


def is_model_uri(value: str | Path) -> bool:
    return isinstance(value, str) and bool(URI_SCHEME.match(value)) and not Path(value).exists()


def _tracking_uri(given: str | None) -> str:
    """`given`, else the configured tracking URI; a SQLite store that does not exist is an error (MLflow would create
    an empty one and then report the model missing)."""
    uri = given or mlflow_store.tracking_uri()
    if why := mlflow_store.missing_store(uri):
        raise HjcagError(why)
    return uri


def registry_version(uri: str, tracking_uri: str | None = None) -> tuple[str, str] | None:
    """(name, version) of a ``models:/name@alias`` or ``models:/name/version`` URI; None for other URIs."""
    match = re.match(r"^models:/([^/@]+)(?:@([^/]+)|/([^/]+))/?$", uri)
    if not match:
        return None
    name, alias, version = match.groups()
    if alias is None:
        return name, version
    from mlflow import MlflowClient

    uri_ = _tracking_uri(tracking_uri)
    try:
        found = MlflowClient(tracking_uri=uri_, registry_uri=uri_).get_model_version_by_alias(name, alias)
    except Exception as exc:  # MlflowException: its message names what is missing
        raise HjcagError(f"cannot resolve '{uri}' in the MLflow registry at {uri_}: {exc}") from exc
    return name, str(found.version)


def resolve_model_uri(uri: str, dst: str | Path | None = None, tracking_uri: str | None = None) -> Path:
    """Download an MLflow URI (``models:/hjcag-meld@champion``, ``models:/name/3``, ``runs:/<id>/run``) and return
    the local training run directory inside it (the folder holding model_config.json).

    The registry helper registers the run directory itself as the version's source; any layout works as long as
    exactly that folder is somewhere inside (the shallowest one is taken).
    """
    import mlflow
    from mlflow import MlflowClient

    from hjcag.registry.tracking import quiet_mlflow

    uri_ = _tracking_uri(tracking_uri)
    try:
        registered = registry_version(uri, uri_)
        artifact_uri = uri
        if registered is not None:  # resolved here, so the registry URI is the one given (not a global setting)
            artifact_uri = MlflowClient(tracking_uri=uri_, registry_uri=uri_).get_model_version_download_uri(
                *registered)
        with quiet_mlflow():  # no progress bar per artifact file (a run holds ~100)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, tracking_uri=uri_,
                                                             dst_path=None if dst is None else str(dst)))
    except HjcagError:
        raise
    except Exception as exc:  # MlflowException, OSError: the registry's own messages are the useful part
        raise HjcagError(f"cannot download '{uri}' from the MLflow registry at {uri_}: {exc}") from exc
    found = [local] if (local / MODEL_CONFIG_FILE).exists() else sorted(
        (p.parent for p in local.rglob(MODEL_CONFIG_FILE)), key=lambda p: len(p.parts))
    if not found:
        raise HjcagError(f"'{uri}' holds no {MODEL_CONFIG_FILE}; register a run directory written by `hjcag train`.")
    return found[0]


def resolve_source(source: str | Path, download_dir: Path, tracking_uri: str | None = None) -> Source:
    if is_model_uri(source):
        uri = str(source)
        run_dir = resolve_model_uri(uri, download_dir, tracking_uri)
        registered = registry_version(uri, tracking_uri)
        return Source(run_dir, uri, *(registered or (None, None)))
    run_dir = Path(source)
    if not (run_dir / MODEL_CONFIG_FILE).exists():
        raise HjcagError(f"'{run_dir}' has no {MODEL_CONFIG_FILE}; pass a run directory written by `hjcag train` "
                         f"(--run) or a registry URI such as models:/hjcag-meld@champion (--model-uri).")
    return Source(run_dir)


def run_params(run_dir: Path, params_path: str | Path | None, profile: str | None,
               registered_name: str | None = None) -> Params | None:
    """params.yaml under the run's profile: `profile`, else the one metrics.json records, else the dataset of a
    registered ``hjcag-<dataset>`` model when a profile has that name; None when there is no params file."""
    import yaml

    if params_path is None or not Path(params_path).exists():
        log.warning("no params file (%s): the archive carries the default feature-extractor config and media "
                    "bounds", params_path)
        return None
    if profile is None and (run_dir / METRICS_FILE).exists():
        profile = json.loads((run_dir / METRICS_FILE).read_text()).get("profile")
        profile = None if profile in (None, "default") else profile
    if profile is None and registered_name and registered_name.startswith("hjcag-"):
        profiles = (yaml.safe_load(Path(params_path).read_text()) or {}).get("profiles") or {}
        profile = registered_name.removeprefix("hjcag-") if registered_name.removeprefix("hjcag-") in profiles else None
    params = load_params(params_path, profile)
    log.info("feature-extractor config and media bounds: %s, profile '%s'", params_path, params.profile)
    return params


def default_features_config(params: Params | None, seq_len: int) -> FeaturesConfig:
    """The ``features:`` section of the run's params (:func:`run_params`), else the defaults."""
    from hjcag.params import FeaturesConfig

    if params is None:
        return FeaturesConfig().replace(seq_len=seq_len)
    return params.features.replace(seq_len=seq_len)


def default_media_config(params: Params | None) -> MediaConfig:
    """``validation.media`` of the run's params (:func:`run_params`): what the pipeline validated as media."""
    if params is None:
        return MediaConfig()
    return params.validation.media


def read_features_meta(path: Path, doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-modality extractor info from a features ``.meta.json``, checked against the model's input dims."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        per_modality = dict(meta["modalities"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"'{path}' is not a features meta file written by `hjcag features` ({exc}).") from exc
    for m, dim in doc["input_dims"].items():
        name = MODALITY_NAMES[m]
        got = per_modality.get(name, {}).get("dim")
        if got is not None and int(got) != int(dim):
            raise ConfigError(f"'{path}' describes {got}-dim {name} features but the model was trained on {dim}-dim "
                              f"ones: it belongs to another features file. Pass the meta of the run's features.")
    return per_modality


def stage_bundle(
    source: Source,
    dest: Path,
    *,
    version: str,
    fold: int | None,
    features_config: FeaturesConfig,
    trained_with: Mapping[str, Mapping[str, Any]] | None,
    name: str,
    media: MediaConfig | None = None,
) -> Path:
    """Write the serving bundle (everything of the archive but handler, model-config.yaml and MANIFEST) to `dest`."""
    run_dir = source.run_dir
    doc = read_json(run_dir / MODEL_CONFIG_FILE)
    weights = weights_path(doc, fold, run_dir)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / weights, dest / WEIGHTS_FILE)
    chosen = weights.split("/", 1)[0]
    served = {**unit_model_doc(doc, chosen), "weights": {"format": "safetensors", "default": WEIGHTS_FILE,
                                                         "fold": chosen}}
    write_json(dest / MODEL_CONFIG_FILE, served)
    write_json(dest / LABELS_FILE, {str(i): label for i, label in enumerate(doc["label_names"])})
    write_json(dest / EXTRACTORS_FILE, {"config": dataclasses.asdict(features_config),
                                  "trained_with": dict(trained_with) if trained_with else None})
    write_json(dest / MEDIA_FILE, dataclasses.asdict(media or MediaConfig()))
    metrics = run_dir / METRICS_FILE
    summary = None
    if metrics.exists():
        m = json.loads(metrics.read_text(encoding="utf-8"))
        summary = {k: m.get(k) for k in ("accuracy", "weighted_f1", "macro_f1", "protocol", "dataset", "profile",
                                         "n_folds", "fingerprint", "robustness") if k in m}
    write_json(dest / SERVING_FILE, {
        "model": name,
        "version": version,
        "architecture": doc["model"],
        "fold": chosen,
        "source": source.uri or str(run_dir.resolve()),
        "registered_model": source.registered_name,
        "registered_version": source.registered_version,
        "hjcag_version": hjcag.__version__,
        "metrics": summary,
        "context": _context_settings(served),
        "context_kept": served["context_kept"],
    })
    return dest


def _context_settings(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The conversation-context settings a client needs (how many previous turns the endpoint reads), or None
    (a model without context, or whose context layer was dropped: ``context_kept`` says which)."""
    config = trained_model_config(doc)
    if config.context == "none":
        return None
    return {"kind": config.context, "window": config.context_window, "direction": config.context_direction}


def archive_version(source: Source, doc: Mapping[str, Any], fold: int | None) -> str:
    """The version an archive of `fold` (None: the default one) gets without --version: the registered version for
    its default fold, ``<version>-fold_K`` for another fold; ``run-<fingerprint>-fold_K`` for a run directory."""
    unit = weights_path(doc, fold, source.run_dir).split("/", 1)[0]
    if source.registered_version is None:
        return run_version(source.run_dir, unit)
    default = str((doc.get("weights") or {}).get("default") or "").split("/", 1)[0]
    return source.registered_version if unit == default else f"{source.registered_version}-{unit}"


def served_sources(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The files of the hjcag package an archive carries, relative to `package_dir`: all but caches and the
    modules above serving (:data:`NOT_SERVED`)."""
    files = (p.relative_to(package_dir) for p in package_dir.rglob("*") if p.is_file())
    return sorted(f for f in files if not _skipped(f))


def _skipped(relative: Path) -> bool:
    """A module above serving, a cache or a hidden file."""
    return (relative.parts[0] in NOT_SERVED or relative.suffix in (".pyc", ".pyo")
            or any(part == "__pycache__" or part.startswith(".") for part in relative.parts))


def _copy_source(dest: Path) -> None:
    """The hjcag package's sources that serving can import (:func:`served_sources`) -> dest/hjcag."""
    for relative in served_sources():
        target = dest / "hjcag" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_DIR / relative, target)


def _archiver() -> list[str]:
    beside = Path(sys.executable).parent / "torch-model-archiver"
    found = str(beside) if beside.exists() else shutil.which("torch-model-archiver")
    if found is None:
        raise HjcagError("torch-model-archiver not found; install it (pip install torch-model-archiver==0.12.0).")
    return [found]


def _smoke_test(bundle: Path) -> None:
    """Load the staged bundle and answer one features request, so a broken archive never leaves this step."""
    predictor = Predictor.load(bundle)
    request = {"features": {MODALITY_NAMES[m]: [0.0] * d for m, d in predictor.input_dims.items()}}
    response = predictor.predict(request)
    if set(response["probabilities"]) != set(predictor.labels):
        raise HjcagError(f"the staged bundle in {bundle} answered {response}; refusing to archive it.")


def package_model(
    source: str | Path,
    out_dir: str | Path,
    *,
    version: str | None = None,
    fold: int | None = None,
    params_path: str | Path | None = "params.yaml",
    profile: str | None = None,
    features_config: FeaturesConfig | None = None,
    media: MediaConfig | None = None,
    features_meta: str | Path | None = None,
    handler: str | Path = HANDLER,
    model_config_yaml: str | Path = MODEL_CONFIG_YAML,
    tracking_uri: str | None = None,
) -> Path:
    """Build ``out_dir/hjcag.mar`` (and ``out_dir/hjcag.mar.json``) from a run directory or a registry URI.

    `version` defaults to the registered version (models:/ URIs) or ``run-<fingerprint>``; `fold` defaults to the
    run's default fold; the extractor config is `features_config`, else params.yaml's ``features:`` section under
    the run's profile; the media bounds are `media`, else ``validation.media`` of that params file.
    `features_meta` (default: ``<run>/features.meta.json`` when present) records what the training features were
    extracted with, so serving refuses raw input it would extract differently.
    """
    handler, model_config_yaml = Path(handler), Path(model_config_yaml)
    for path, what in ((handler, "handler"), (model_config_yaml, "model config")):
        if not path.is_file():
            raise HjcagError(f"the TorchServe {what} '{path}' is missing.")
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="hjcag-package-") as tmp_name:
        tmp = Path(tmp_name)
        src = resolve_source(source, tmp / "download", tracking_uri)
        doc = read_json(src.run_dir / MODEL_CONFIG_FILE)
        version = version or archive_version(src, doc, fold)
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", version):
            raise ConfigError(f"version '{version}' may only hold letters, digits, '.', '_' and '-'.")
        params = None if features_config and media else run_params(src.run_dir, params_path, profile,
                                                                   src.registered_name)
        config = features_config or default_features_config(params, int(doc["seq_len"]))
        config = config.replace(seq_len=int(doc["seq_len"]), cache_dir=None, progress=False)
        media = media or default_media_config(params)
        meta_path = Path(features_meta) if features_meta else features_meta_path(src.run_dir / FEATURES_FILE)
        if features_meta and not meta_path.exists():
            raise ConfigError(f"features meta '{meta_path}' not found.")
        trained_with = read_features_meta(meta_path, doc) if meta_path.exists() else None
        if trained_with is None:
            log.warning("no features meta for %s: serving checks raw inputs by feature dims only", src.run_dir)
        else:
            warn_text_context_mismatch(trained_with, config, "t" in doc["input_dims"])
        payload = tmp / "payload"
        stage_bundle(src, payload, version=version, fold=fold, features_config=config, trained_with=trained_with,
                     name=src.registered_name or MODEL_NAME, media=media)
        _smoke_test(payload)
        served = read_json(payload / SERVING_FILE)
        _copy_source(payload)
        weights = (payload / WEIGHTS_FILE).rename(tmp / WEIGHTS_FILE)
        # A directory given to --extra-files is copied *into* the archive's root: payload/hjcag -> hjcag/.
        command = [*_archiver(), "--model-name", MODEL_NAME, "--version", version, "--handler", str(handler),
                   "--serialized-file", str(weights), "--extra-files", str(payload),
                   "--config-file", str(model_config_yaml), "--export-path", str(out_dir), "--force"]
        out_dir.mkdir(parents=True, exist_ok=True)
        (tmp / "archiver-tmp").mkdir()
        # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps concurrent builds apart.
        env = {**os.environ, "TMPDIR": str(tmp / "archiver-tmp")}
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise HjcagError(f"torch-model-archiver failed ({result.returncode}):\n{result.stderr[-2000:]}")
    mar = normalise_archive(out_dir / f"{MODEL_NAME}.mar")
    record = {
        "archive": mar.name,
        "sha256": file_digest(mar),
        "size_bytes": mar.stat().st_size,
        "model_name": MODEL_NAME,
        "model": src.registered_name or MODEL_NAME,
        "version": version,
        "source": src.uri or str(src.run_dir.resolve()),
        "registered_version": src.registered_version,
        "fold": served["fold"],
        "context_kept": served["context_kept"],
        "architecture": doc["model"],
        "modalities": [MODALITY_NAMES[m] for m in doc["input_dims"]],
        "labels": doc["label_names"],
        "hjcag_version": hjcag.__version__,
    }
    write_json(out_dir / f"{mar.name}.json", record)
    log.info("wrote %s (version %s, sha256 %s)", mar, version, record["sha256"])
    return mar


def read_archive_record(mar: str | Path) -> dict[str, Any]:
    """The ``<archive>.json`` record that :func:`package_model` wrote next to `mar`."""
    path = Path(f"{mar}.json")
    if not path.exists():
        raise HjcagError(f"'{path}' not found; build the archive with `hjcag package`.")
    return json.loads(path.read_text(encoding="utf-8"))
