"""A tracked training that is killed and resumed keeps one MLflow parent run: a real `hjcag train --track` process,
SIGKILLed mid-fold, run again on the same directory, against a real SQLite store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import yaml
from mlflow import MlflowClient

from hjcag.device import torch_threads
from hjcag.registry import tracking
from process_fixtures import kill_when

REPO = Path(__file__).resolve().parents[1]
LABELS = ["neutral", "joy", "anger"]
EPOCHS = 20  # long enough that the second fold is still training when the test kills the process


def write_params(path: Path, epochs: int = EPOCHS) -> Path:
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["profiles"]["demo"]["model"] = {"seq_len": 3, "widths": {"t": 4, "a": 4, "v": 4}, "gate_width": 4,
                                        "classifier_hidden": 4}
    doc["profiles"]["demo"]["train"] = {"folds": 2, "epochs": epochs, "patience": epochs, "batch_size": 32,
                                        "lr": 1e-3, "device": "cpu", "num_threads": 1, "modality_dropout": 0.0}
    path.write_text(yaml.safe_dump(doc))
    return path


def write_features(path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 40
    np.savez(path, utterance_id=np.array([f"u{i}" for i in range(n)]),
             label=np.array([LABELS[i % len(LABELS)] for i in range(n)]),
             group=np.array([f"d{i // 4}" for i in range(n)]),
             text=rng.normal(size=(n, 3, 5)).astype(np.float32), audio=rng.normal(size=(n, 4)).astype(np.float32))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _parents(client: MlflowClient) -> list[mlflow.entities.Run]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments, filter_string="tags.`hjcag.kind` = 'parent'"))


def test_a_killed_tracked_training_resumes_its_parent_run(tmp_path: Path, mlflow_client: MlflowClient) -> None:
    params, features, out = write_params(tmp_path / "params.yaml"), write_features(tmp_path / "f.npz"), tmp_path / "run"
    command = [sys.executable, "-m", "hjcag.cli", "train", "--features", str(features), "--out", str(out),
               "--params", str(params), "--track"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    # kill it once the first fold is done and the second one has checkpointed an epoch
    kill_when(proc, (out / "fold_1" / "checkpoint.pt").exists, 180, "the second fold's first checkpoint")
    assert (out / "fold_0" / "result.json").exists() and not (out / "metrics.json").exists()
    [killed] = _parents(mlflow_client)
    assert killed.info.status == "RUNNING"  # what kill -9 leaves behind

    resumed = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming MLflow run" in resumed.stderr and "resuming after epoch" in resumed.stderr
    # stderr is a pipe, not a terminal: progress comes as a few log lines, not as tqdm redraws
    assert "\r" not in resumed.stderr
    assert 1 <= sum("hjcag.progress: fold 1:" in line for line in resumed.stderr.splitlines()) <= 11

    [parent] = _parents(mlflow_client)  # the same run, not a second one beside it
    assert parent.info.run_id == killed.info.run_id
    assert parent.info.status == "FINISHED" and parent.data.tags["hjcag.complete"] == "true"
    assert "accuracy_mean" in parent.data.metrics
    folds = mlflow_client.search_runs([parent.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(f.info.run_name for f in folds) == ["fold_0", "fold_1"]
    for fold in folds:
        assert fold.info.status == "FINISHED"
        steps = [m.step for m in mlflow_client.get_metric_history(fold.info.run_id, "train_loss")]
        assert sorted(steps) == list(range(1, EPOCHS + 1))  # every epoch once: none lost, none logged twice


def test_a_restarted_directory_fails_the_unfinished_run_of_other_settings(tmp_path: Path,
                                                                          mlflow_client: MlflowClient) -> None:
    """A killed run whose directory is then restarted with other settings cannot resume: it is marked FAILED
    instead of staying RUNNING forever."""
    from hjcag.data.features_file import load_features
    from hjcag.params import load_params

    out = tmp_path / "run"
    params = load_params(write_params(tmp_path / "params.yaml", epochs=2), "demo")
    fs = load_features(write_features(tmp_path / "f.npz"), seq_len=3, label_names=tuple(LABELS))
    experiment = mlflow_client.create_experiment("hjcag-demo")
    orphan = mlflow_client.create_run(experiment, tags={"hjcag.kind": "parent", "hjcag.run_dir": str(out.absolute()),
                                                        "hjcag.fingerprint": "0123456789abcdef"})
    orphan_fold = mlflow_client.create_run(experiment, tags={"mlflow.parentRunId": orphan.info.run_id})
    with torch_threads(1):
        _, parent = tracking.train_with_tracking(fs, params, ("t", "a"), "hjcag", out, quiet=True)
    assert parent != orphan.info.run_id and mlflow_client.get_run(parent).info.status == "FINISHED"
    assert mlflow_client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert mlflow_client.get_run(orphan_fold.info.run_id).info.status == "FAILED"
