"""The on-disk layout every stage agrees on, in one place: file names, atomic JSON, digests, trained models.

    prepare      <out>/manifest.parquet, prepare_report.json
    validate     <out>/manifest.valid.parquet, quarantine.parquet, validation.json, data_docs/ (or --docs DIR)
    features     <dir>/features.npz, features.meta.json (what determines the features), features.run.json
    train        run directory: run.json, folds.json, model_config.json, metrics.json, report.md and per fold
                 fold_K/model.safetensors, history.json, predictions.csv, result.json (last: the fold is done)
    gate         gate.json
    register     the record (registered.json: name, version, hashes), registered.run.json (MLflow ids, git commit)
    serving      bundle (the root of the .mar): serving.json, model_config.json, model.safetensors,
                 index_to_name.json, features.json, media.json

Serving imports this module, never the training code: :func:`load_trained_model` rebuilds a model from the files
alone, for training, evaluation and serving alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hjcag.errors import HjcagError, OutputError, os_error_message
from hjcag.params import ModelConfig

if TYPE_CHECKING:
    from torch import nn

# prepare / validate
MANIFEST_FILE = "manifest.parquet"
PREPARE_REPORT_FILE = "prepare_report.json"
VALID_MANIFEST_FILE = "manifest.valid.parquet"
QUARANTINE_FILE = "quarantine.parquet"
VALIDATION_FILE = "validation.json"

# features
FEATURES_FILE = "features.npz"

# run directory (hjcag train)
RUN_FILE = "run.json"
FOLDS_FILE = "folds.json"
MODEL_CONFIG_FILE = "model_config.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
RESULT_FILE = "result.json"
HISTORY_FILE = "history.json"
STAGES_FILE = "stages.json"  # a warm-started context fold: both stages' trainings (hjcag.train.fit)
BASE, CONTEXT = "base", "context"  # those two stages: the context-free model, then the context layer around it
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_FILE = "model.safetensors"
PREDICTIONS_FILE = "predictions.csv"
RUN_TOP_FILES = (RUN_FILE, FOLDS_FILE, MODEL_CONFIG_FILE)  # what a run holds besides its fold_K directories
# model_config.json["weights"][CONTEXT_DROPPED]: the units whose warm-started context layer was dropped (their model is
# the context-free one, `context: none`); a bundle's model_config.json describes its one model directly.
CONTEXT_DROPPED = "context_dropped"

# gate
GATE_FILE = "gate.json"

# serving bundle (hjcag.serve.package writes it, hjcag.serve.predictor reads it)
SERVING_FILE = "serving.json"
LABELS_FILE = "index_to_name.json"  # {"0": label, ...} (TorchServe's convention for label maps)
EXTRACTORS_FILE = "features.json"  # {"config": FeaturesConfig fields, "trained_with": {modality: extractor info}}
MEDIA_FILE = "media.json"  # MediaConfig fields (validation.media): what valid request media is, as in validation


def features_meta_path(features: str | Path) -> Path:
    """``<stem>.meta.json`` beside a features file: only what determines the features (models, settings, dims), so
    it is byte-identical whenever the features are; serving checks raw input against it."""
    features = Path(features)
    return features.with_name(features.stem + ".meta.json")


def features_run_path(features: str | Path) -> Path:
    """``<stem>.run.json`` beside a features file: how one extraction went (counts, cache hits, seconds)."""
    return run_record_path(features)


def run_record_path(output: str | Path) -> Path:
    """``<stem>.run.json`` beside an output: what differs from one run to the next (timings, generated ids),
    kept out of the output so that it holds the same bytes whenever its inputs are the same (``dvc.lock`` then
    differs only where the inputs do). Pipelines track the output, not this record."""
    output = Path(output)
    return output.with_name(output.stem + ".run.json")


def unit_name(fold: int, seed: int | None = None) -> str:
    """What one training of one fold writes into: ``fold_K``, or ``fold_K_seed_S`` when ``train.seeds`` trains
    every fold once per seed."""
    return f"fold_{fold}" if seed is None else f"fold_{fold}_seed_{seed}"


def fold_dir(run_dir: str | Path, fold: int, seed: int | None = None) -> Path:
    return Path(run_dir) / unit_name(fold, seed)


def fold_weights(fold: int, seed: int | None = None) -> str:
    """A fold's weights, relative to its run directory (how model_config.json names them)."""
    return f"{unit_name(fold, seed)}/{WEIGHTS_FILE}"


def writable_dir(path: str | Path, option: str | None = "--out") -> Path:
    """Create the output folder `path` and prove it takes a file, before a stage does any work: a read-only or
    full disk, a missing permission or a file in the way is an OutputError naming the path and the fix (the
    `option` that chose it), not a traceback after the compute."""
    return _probe(Path(path), Path(path), option)


def writable_file(path: str | Path, option: str | None = "--out") -> Path:
    """:func:`writable_dir` for the folder of the output file `path`, which must not be a folder itself."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"'{path}' is a folder where a file is expected; remove it or pass another {option}.")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"'{path}': '{path.parent}' is a file, not a folder; move that file away or pass another "
                          f"{option}.")
    _probe(path.parent, path, option)
    return path


def _probe(folder: Path, named: Path, option: str | None) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".hjcag-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        exc.filename = str(named)  # the user's path, not the probe's or a parent's
        raise OutputError(os_error_message(exc, named, option) or f"'{named}' cannot be written ({exc}).") from exc
    return folder


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (a temporary file, then rename), creating the folder; a crash or a full disk never
    leaves half a file (nor the temporary one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | Path, what: str = "") -> Any:
    """Read a JSON file; a missing or broken file is a clear HjcagError naming `what` should have written it."""
    path = Path(path)
    hint = f" ({what})" if what else ""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise HjcagError(f"'{path}' not found{hint}.") from exc
    except (OSError, ValueError) as exc:
        raise HjcagError(f"'{path}' cannot be read as JSON{hint}: {exc}") from exc


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks (md5 where DVC's hashes are compared)."""
    h = hashlib.new(algorithm)
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def weights_path(doc: Mapping[str, Any], fold: int | None, where: str | Path) -> str:
    """The weights file (relative to a run / bundle) of `fold`, or the default one (the fold with the lowest
    validation loss; a bundle's only one)."""
    where = Path(where)
    chosen = (doc.get("weights") or {}).get("default") if fold is None else fold_weights(fold)
    if chosen is None or not (where / chosen).exists():
        raise HjcagError(f"'{where}' has no trained weights ({chosen}); finish the run with `hjcag train` first"
                         f"{'' if fold is None else ' or pick another --fold'}.")
    return str(chosen)


def trained_model_config(doc: Mapping[str, Any], unit: str | None = None) -> ModelConfig:
    """The ModelConfig a model_config.json records (settings added later take their defaults); with `unit`
    (fold_K), that unit's model: the context-free one where its warm-started context layer was dropped."""
    config = ModelConfig(**doc["model_config"])
    if unit is not None and unit in context_dropped(doc):
        return dataclasses.replace(config, context="none")
    return config


def context_dropped(doc: Mapping[str, Any]) -> list[str]:
    """The units of a run whose warm-started context layer was dropped (:data:`CONTEXT_DROPPED`)."""
    return list((doc.get("weights") or {}).get(CONTEXT_DROPPED) or [])


def unit_model_doc(doc: Mapping[str, Any], unit: str) -> dict[str, Any]:
    """model_config.json as it describes the model of one unit (fold_K) of a run, as a bundle and the endpoint serve
    it: that unit's ModelConfig, and `context_kept` (None: trained without context; False: the warm-started context
    layer was dropped, the model is the context-free one)."""
    config = trained_model_config(doc, unit)  # context "none" where it was dropped
    dropped = unit in context_dropped(doc)
    kept = False if dropped else None if config.context == "none" else True
    return {**doc, "model_config": dataclasses.asdict(config), "context_kept": kept}


def build_trained_model(doc: Mapping[str, Any], weights: str | Path) -> nn.Module:
    """The model a model_config.json describes, with its safetensors weights (``<run>/<unit>/model.safetensors``,
    or a bundle's one file), in eval mode."""
    from safetensors.torch import load_file

    from hjcag.model.factory import build_model

    config = trained_model_config(doc, Path(weights).parent.name)
    model = build_model(doc["model"], doc["input_dims"], int(doc["num_classes"]), config)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def load_trained_model(run_dir: str | Path, fold: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a run directory or a serving bundle (model_config.json + safetensors), in eval
    mode, with its model_config document. `fold=None` loads the default weights."""
    run_dir = Path(run_dir)
    if not (run_dir / MODEL_CONFIG_FILE).exists():
        raise HjcagError(f"'{run_dir}' has no {MODEL_CONFIG_FILE}; pass a run directory written by `hjcag train` "
                         "or a serving bundle.")
    doc = read_json(run_dir / MODEL_CONFIG_FILE)
    return build_trained_model(doc, run_dir / weights_path(doc, fold, run_dir)), doc
