"""Train and evaluate one configuration on a FeatureSet under a protocol, writing a resumable run directory.

Layout of ``out_dir``::

    run.json              fingerprint of what the run was started with (re-runs must match it)
    folds.json            utterance ids of every fold's train / val / test part
    model_config.json     what serving needs to rebuild the model (name, ModelConfig, input dims, labels, weights)
    fold_K/checkpoint.pt  full training state after the last epoch (only while the fold is unfinished)
    fold_K/model.safetensors, history.json, predictions.csv   (the model the fold keeps, and its training)
    fold_K/stages.json    a warm-started context fold: both stages' trainings (hjcag.train.fit), the kept one's too
    fold_K/result.json    the fold's test metrics; its presence marks the fold as done
                          (one process trains a fold at a time: hjcag.train.unit_lock)
    metrics.json          mean ± std over folds and every fold's numbers (written last)
    report.md, confusion_matrix.png, folds.png, learning_curves.png
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from hjcag.artifacts import (
    CHECKPOINT_FILE,
    CONTEXT_DROPPED,
    FOLDS_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    PREDICTIONS_FILE,
    RESULT_FILE,
    RUN_FILE,
    STAGES_FILE,
    WEIGHTS_FILE,
    fold_dir,
    fold_weights,
    read_json,
    write_json,
)
from hjcag.data.features_file import FeatureSet
from hjcag.device import resolve_device, torch_threads
from hjcag.errors import ConfigError, HjcagError
from hjcag.identity import params_identity
from hjcag.model_catalog import check_model_name
from hjcag.params import CONTEXT_AUTO, ModelConfig, Params, parse_modalities
from hjcag.train.fit import base_checkpoint, fit_model, stage_summary, trained_config
from hjcag.train.folds import Fold, make_folds
from hjcag.train.loop import EpochCallback, TensorData, cpu_state, predict
from hjcag.train.metrics import SCALAR_METRICS, aggregate, classification_metrics
from hjcag.train.report import write_report
from hjcag.train.robustness import robustness_table
from hjcag.train.unit_lock import training_unit

log = logging.getLogger(__name__)


def fold_seed(seed: int, fold_index: int) -> int:
    """Each fold has its own seed, so a fold's result does not depend on which folds ran before it."""
    return int(seed) * 1000 + int(fold_index)


def data_digest(fs: FeatureSet) -> str:
    """SHA-256 of ids, labels, groups, splits, label names and the feature arrays."""
    h = hashlib.sha256()
    for name, column in (("utterance_id", fs.utterance_id), ("label", fs.label), ("group", fs.group),
                         ("split", fs.split)):
        h.update(name.encode())
        if column is not None:
            h.update("\x1f".join(np.asarray(column).astype(str).tolist()).encode())
    h.update("\x1f".join(fs.label_names).encode())
    for m in fs.modalities:
        x = np.ascontiguousarray(fs.features[m], dtype=np.float32)
        h.update(f"{m}{x.shape}".encode())
        h.update(memoryview(x).cast("B"))
    return h.hexdigest()


def run_identity(fs: FeatureSet, params: Params, modalities: Sequence[str], model_name: str) -> dict[str, Any]:
    """Everything that determines a run's numbers: the params (:func:`hjcag.identity.params_identity`), the
    modalities and the data; `fs` must already hold only `modalities`."""
    return {
        **params_identity(params, model_name),
        "modalities": list(modalities),
        "labels": list(fs.label_names),
        "data": data_digest(fs),
    }


def fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _check_or_start_run(out_dir: Path, identity: dict[str, Any]) -> str:
    digest = fingerprint(identity)
    run_file = out_dir / RUN_FILE
    stored = read_json(run_file) if run_file.exists() else None
    if stored is not None and stored.get("fingerprint") == digest:
        return digest
    started = _any_fold_progress(out_dir)
    if stored is not None and started:
        before = stored.get("identity", {})
        changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
        if "modalities" in changed and "data" in changed:  # the data digest covers the selected modalities only
            changed.remove("data")
        raise HjcagError(
            f"'{out_dir}' holds a run started with different settings (changed: {', '.join(changed) or '?'}). "
            f"Resuming it would mix results. Pick a new --out directory, or delete '{out_dir}' to start over."
        )
    if started:
        raise HjcagError(
            f"'{out_dir}' has fold directories but no {RUN_FILE}, so it cannot be resumed safely. "
            "Pick a new --out directory or delete it."
        )
    if stored is not None:
        log.info("%s: no fold of the run it held had started; starting over with these settings", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_file, {"fingerprint": digest, "identity": identity})
    return digest


def _any_fold_progress(out_dir: Path) -> bool:
    """Whether a fold of the run in `out_dir` has written anything (a checkpoint, weights, a result). A run that
    stopped before (bad settings, a full disk) can start over with other settings without mixing results."""
    return any(p.is_file() for d in out_dir.glob("fold_*") for p in d.rglob("*"))


def _model_config_doc(model_name: str, params: Params, fs: FeatureSet, folds: Sequence[Fold], default: str | None,
                      seeds: Sequence[int | None], results: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    config = trained_config(params.model, fs)  # seq_len: the steps the model reads (1 for utterance vectors)
    return {
        "model": model_name,
        "model_config": dataclasses.asdict(config),
        "input_dims": fs.dims,
        "num_classes": len(fs.label_names),
        "label_names": list(fs.label_names),
        "modalities": list(fs.modalities),
        "seq_len": config.seq_len,
        "weights": {
            "format": "safetensors",
            "folds": [fold_weights(f.index, s) for f in folds for s in seeds],
            # The fold with the lowest validation loss (never chosen on test scores); set when all folds are done.
            "default": default,
            # Units (fold_K) of a warm-started context run whose context was dropped: a context-free model each.
            CONTEXT_DROPPED: [r["unit"] for r in results if r.get("context_kept") is False],
        },
    }


def _write_predictions(path: Path, fs: FeatureSet, logits: torch.Tensor, gates: torch.Tensor) -> None:
    probs = torch.softmax(logits, dim=1)
    conf, pred = probs.max(dim=1)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["utterance_id", "group", "label", "predicted", "confidence",
                         *[f"gate_{m}" for m in fs.modalities]])
        for i in range(len(fs)):
            writer.writerow([fs.utterance_id[i], fs.group[i], fs.label[i], fs.label_names[int(pred[i])],
                             f"{float(conf[i]):.6f}", *[f"{float(g):.6f}" for g in gates[i]]])
    os.replace(tmp, path)


def _run_fold(
    fs: FeatureSet,
    fold: Fold,
    params: Params,
    model_name: str,
    run_seed: int | None,
    fold_dir: Path,
    device: torch.device,
    on_epoch: EpochCallback | None,
    quiet: bool,
    keep_checkpoint: bool,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    fold_dir.mkdir(parents=True, exist_ok=True)
    seed = fold_seed(params.seed if run_seed is None else run_seed, fold.index)
    train, val, test = (fs.subset(idx) for idx in (fold.train_idx, fold.val_idx, fold.test_idx))
    checkpoint = fold_dir / CHECKPOINT_FILE
    fitted = fit_model(model_name, train, val, params.model, params.train, seed=seed, device=device,
                       checkpoint_path=checkpoint, fold_index=fold.index, on_epoch=on_epoch, quiet=quiet)
    model, training = fitted.model, fitted.training  # the model the fold keeps, and its training
    logits, gates = predict(model, TensorData.from_features(test, fitted.config), params.train.batch_size, device)
    scores = classification_metrics(test.targets, logits.argmax(dim=1).numpy(), fs.label_names)

    tmp = fold_dir / (WEIGHTS_FILE + ".tmp")
    save_file({k: v.contiguous() for k, v in cpu_state(model).items()}, str(tmp))  # as kept, probe blend fitted
    os.replace(tmp, fold_dir / WEIGHTS_FILE)
    write_json(fold_dir / HISTORY_FILE, training.history)
    _write_predictions(fold_dir / PREDICTIONS_FILE, test, logits, gates)
    result = {
        "fold": fold.index,
        "unit": fold_dir.name,
        "run_seed": params.seed if run_seed is None else run_seed,
        **scores,
        "n_train": len(fold.train_idx),
        "n_val": len(fold.val_idx),
        "n_test": len(fold.test_idx),
        "best_epoch": training.best_epoch,
        "epochs_run": training.epochs_run,
        "best_val_loss": training.best_val_loss,
        "stopped_early": training.stopped_early,
        "seed": seed,
    }
    if fitted.probe is not None:  # model.probe_blend: the probe and the blend chosen on validation
        result["probe_blend"] = fitted.probe
    if fitted.stages:  # warm-started context: which model was kept, and how each stage went
        result["context_kept"] = fitted.context_kept
        # stage 1's context-free model on the same test rows (the kept model where the context was dropped), for
        # the paired comparison; never used to choose
        without = scores if not fitted.context_kept else _scores(
            fitted.base_model, dataclasses.replace(fitted.config, context="none"), test, params, device)
        result["without_context"] = {k: without[k] for k in SCALAR_METRICS}
        result["stages"] = {name: stage_summary(t) for name, t in fitted.stages.items()}
        write_json(fold_dir / STAGES_FILE, {name: {**result["stages"][name], "history": t.history}
                                            for name, t in fitted.stages.items()})
    write_json(fold_dir / RESULT_FILE, result)  # last: marks the fold as done
    if not keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
        base_checkpoint(checkpoint).unlink(missing_ok=True)
    return result, training.history


def _scores(model: torch.nn.Module, config: ModelConfig, test: FeatureSet, params: Params,
            device: torch.device) -> dict[str, Any]:
    """`model`'s classification metrics on the `test` rows, read as `config` collates them."""
    logits, _ = predict(model, TensorData.from_features(test, config), params.train.batch_size, device)
    return classification_metrics(test.targets, logits.argmax(dim=1).numpy(), test.label_names)


def default_unit(results: Sequence[dict[str, Any]]) -> str:
    """The unit serving and the registry take by default: the lowest validation loss of the model each unit kept
    (result.json's best_val_loss; where a warm-started context was dropped, the context-free model's), never a
    test score."""
    return str(min(results, key=lambda r: r["best_val_loss"])["unit"])


def _per_unit(on_epoch: EpochCallback, unit: str) -> EpochCallback:
    """The loop reports its fold index; with several seeds per fold, the unit's name tells the trainings apart."""
    return lambda _fold, epoch, metrics: on_epoch(unit, epoch, metrics)  # type: ignore[arg-type]


def select_run(fs: FeatureSet, params: Params, modalities: Sequence[str],
               model_name: str) -> tuple[FeatureSet, Params, tuple[str, ...]]:
    """The features (only `modalities`), params and modalities a run of `model_name` trains with."""
    check_model_name(model_name)  # before params.with_overrides, whose message would name the params rule
    modalities = parse_modalities(tuple(modalities))
    return fs.select(modalities), params.with_overrides(model={"name": model_name}), modalities


def require_known_folds(folds: Sequence[Fold], only_folds: Sequence[int] | None, protocol: str) -> None:
    """Refuse fold indices (``--folds``) that the protocol does not make, before any fold is written or tracked."""
    unknown = sorted(set(only_folds or ()) - {f.index for f in folds})
    if unknown:
        raise ConfigError(f"fold(s) {unknown} do not exist: the {protocol} protocol has folds "
                          f"{[f.index for f in folds]}; pick --folds among them.")


def start_run_dir(fs: FeatureSet, params: Params, modalities: Sequence[str], model_name: str,
                  out_dir: str | Path) -> str:
    """Start `out_dir` for this run (its run.json), or check that it holds a run of the same settings; return
    the settings' fingerprint. What :func:`train_and_evaluate` does first; callers that need the fingerprint
    before training (MLflow tracking resumes the parent run of the same fingerprint) call it themselves."""
    fs, params, modalities = select_run(fs, params, modalities, model_name)
    return _check_or_start_run(Path(out_dir), run_identity(fs, params, modalities, model_name))


def train_and_evaluate(
    fs: FeatureSet,
    params: Params,
    modalities: Sequence[str],
    model_name: str,
    out_dir: Path,
    on_epoch: EpochCallback | None = None,
    quiet: bool = False,
    keep_checkpoints: bool = False,
    only_folds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train `model_name` on `modalities` of `fs` under params.train.protocol; write `out_dir`; return metrics.

    Re-running on the same `out_dir` skips finished folds and resumes an interrupted one from its checkpoint;
    different settings (params, modalities, model, data) raise HjcagError instead of mixing results.
    `only_folds` trains just those fold indices (a pipeline runs the folds in parallel, then merges their
    directories and calls this again without it to aggregate); until every fold is done the return value is
    ``{"complete": False, "folds": [...]}`` and no metrics.json is written.
    """
    fs, params, modalities = select_run(fs, params, modalities, model_name)
    out_dir = Path(out_dir)
    identity = run_identity(fs, params, modalities, model_name)
    digest = _check_or_start_run(out_dir, identity)
    metrics_path = out_dir / METRICS_FILE
    if metrics_path.exists():
        done = read_json(metrics_path)
        if done.get("fingerprint") == digest:
            if not quiet:
                log.info("%s: already complete (%s); nothing to do", out_dir, METRICS_FILE)
            return done

    cfg = params.train
    folds = make_folds(fs, cfg.protocol, cfg.folds, cfg.val_fraction, params.seed)
    require_known_folds(folds, only_folds, cfg.protocol)
    write_json(out_dir / FOLDS_FILE, {
        "protocol": cfg.protocol, "seed": params.seed,
        "folds": [{"fold": f.index, **f.as_ids(fs)} for f in folds],
    })
    seeds: list[int | None] = list(cfg.seeds) or [None]  # None: the run's seed, one unit per fold (fold_K)
    doc = _model_config_doc(model_name, params, fs, folds, None, seeds)
    write_json(out_dir / MODEL_CONFIG_FILE, doc)
    device = resolve_device(cfg.device)
    if not quiet:
        log.info("%s on %s: %d utterances, %d fold(s) (%s), device %s -> %s", model_name, "+".join(modalities),
                 len(fs), len(folds), cfg.protocol, device, out_dir)
        if params.model.context == CONTEXT_AUTO:
            log.info("model.context auto: %s (%s)", doc["model_config"]["context"],
                     "the features carry the dialogue order" if fs.order is not None
                     else "the features carry no dialogue order: each utterance is read alone")

    results, histories = [], {}
    for fold in folds:
        for run_seed in seeds:
            unit = fold_dir(out_dir, fold.index, run_seed)
            if only_folds is not None and fold.index not in only_folds and not (unit / RESULT_FILE).exists():
                continue
            if (unit / RESULT_FILE).exists():
                result, history = read_json(unit / RESULT_FILE), read_json(unit / HISTORY_FILE)
                if not quiet:
                    log.info("%s: already done, skipping", unit.name)
            else:
                report = None if on_epoch is None else _per_unit(on_epoch, unit.name)
                with training_unit(unit), torch_threads(cfg.num_threads):
                    if (unit / RESULT_FILE).exists():  # finished by another process just before the lock was free
                        result, history = read_json(unit / RESULT_FILE), read_json(unit / HISTORY_FILE)
                    else:
                        result, history = _run_fold(fs, fold, params, model_name, run_seed, unit, device, report,
                                                    quiet, keep_checkpoints)
            if not quiet:
                log.info("%s: accuracy %.2f%%, weighted F1 %.2f%%, macro F1 %.2f%% (best epoch %d of %d)", unit.name,
                         100 * result["accuracy"], 100 * result["weighted_f1"], 100 * result["macro_f1"],
                         result["best_epoch"], result["epochs_run"])
            results.append(result)
            histories[unit.name] = history

    if len(results) < len(folds) * len(seeds):
        return {"complete": False, "folds": results, "n_folds": len(folds)}
    best_weights = f"{default_unit(results)}/{WEIGHTS_FILE}"
    write_json(out_dir / MODEL_CONFIG_FILE,
               _model_config_doc(model_name, params, fs, folds, best_weights, seeds, results))
    metrics: dict[str, Any] = {
        **aggregate(results, fs.label_names),
        "folds": results,
        "protocol": cfg.protocol,
        "model": model_name,
        "modalities": list(modalities),
        "labels": list(fs.label_names),
        "n_utterances": len(fs),
        "n_folds": len(folds),
        "dataset": params.dataset,
        "profile": params.profile,
        "seed": params.seed,
        "seeds": [params.seed if s is None else s for s in seeds],
        "std": "population std (ddof=0) across folds" + (" x seeds" if len(seeds) > 1 else ""),
        "fingerprint": digest,
    }
    if len(modalities) > 1:  # every modality subset on the test folds: what the endpoint does with partial input
        with torch_threads(cfg.num_threads):
            metrics["robustness"] = robustness_table(fs, folds, results, out_dir, cfg.batch_size, device)
    write_report(out_dir, metrics, histories)
    write_json(metrics_path, metrics)  # last: marks the run as complete
    return metrics
