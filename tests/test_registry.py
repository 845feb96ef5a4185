"""MLflow tracking, gates, registration and aliases against a real MLflow (SQLite stores and one `mlflow server`).

One small real training run (2 folds x 2 epochs, tiny widths) is shared by the module. Every test gets its own
SQLite store in its tmp_path: a copy of a store migrated once per module, because migrating a new store costs
seconds. The repository's mlruns.db is never touched (the tests run in tmp_path with the URIs set explicitly).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from hjcag.artifacts import FEATURES_FILE, features_meta_path, load_trained_model, write_json
from hjcag.data.features_file import FeatureSet, save_features
from hjcag.device import torch_threads
from hjcag.errors import ConfigError, HjcagError
from hjcag.params import MODALITY_NAMES, GateConfig, Params, load_params
from hjcag.registry import aliases, gate, register, tracking
from hjcag.train.loop import TensorData
from hjcag.train.run import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]
LABELS = ("neutral", "joy", "anger")
DIMS = {"t": 6, "a": 5, "v": 4}
SEQ_LEN = 4
EPOCHS = 2


def tiny_features(n_groups: int = 12, per_group: int = 4, seed: int = 0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    y = rng.integers(0, len(LABELS), size=n)
    features = {m: (rng.normal(size=(len(LABELS), d))[y][:, None, :] + rng.normal(size=(n, SEQ_LEN, d)))
                .astype(np.float32) for m, d in DIMS.items()}
    return FeatureSet(utterance_id=np.array([f"u{i:03d}" for i in range(n)]), label=np.array(LABELS)[y],
                      group=np.array([f"dia{i // per_group}" for i in range(n)]), features=features,
                      label_names=LABELS)


def tiny_params(**gates: float) -> Params:
    params = load_params(REPO / "params.yaml", "demo").with_overrides(
        model={"seq_len": SEQ_LEN, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8},
        train={"epochs": EPOCHS, "folds": 2, "batch_size": 16, "patience": 5, "device": "cpu", "num_threads": 1},
    )
    return dataclasses.replace(params, gates=GateConfig(**{"min_accuracy": 0.0, "min_weighted_f1": 0.0, **gates}))


@dataclasses.dataclass(frozen=True)
class Trained:
    run_dir: Path
    features: Path
    fs: FeatureSet
    params: Params
    metrics: dict[str, Any]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("trained")
    fs, params = tiny_features(), tiny_params()
    with torch_threads(1):
        metrics = train_and_evaluate(fs, params, ("t", "a", "v"), "hjcag", root / "run", quiet=True)
    # the features' record, as the train stage copies it into a run (what serving checks raw input against)
    write_json(features_meta_path(root / "run" / FEATURES_FILE),
               {"modalities": {MODALITY_NAMES[m]: {"dim": d, "model": "test"} for m, d in DIMS.items()}})
    return Trained(root / "run", save_features(root / "features.npz", fs), fs, params, metrics)


def _git_repo(path: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=path,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (path / "README").write_text("x\n")
    git("add", "README")
    git("commit", "-q", "-m", "init")
    return git("rev-parse", "HEAD")


def _children(client: MlflowClient, parent: str) -> list[Any]:
    run = client.get_run(parent)
    return client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")


def _artifacts(client: MlflowClient, run_id: str, path: str) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, path)}


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def _expected_frame(run_dir: Path, inputs: dict[str, np.ndarray]) -> Any:
    model, doc = load_trained_model(run_dir)
    with torch.no_grad():
        out = model({m: torch.from_numpy(x) for m, x in inputs.items()})
    return register.output_frame(out.logits, out.gate, doc)


# ---------------------------------------------------------------- pure parts (no store)


def test_tracking_uri_defaults_to_local_sqlite_and_follows_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    assert tracking.tracking_uri() == "sqlite:///mlruns.db" == tracking.registry_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000" == tracking.registry_uri()


def test_reading_commands_leave_no_store_where_there_was_none(tmp_path: Path,
                                                               point_mlflow_at: Callable[[str], None]) -> None:
    """`hjcag registry show|promote|rollback` and `hjcag package --model-uri` only read: where the SQLite store
    is not, they say so, and MLflow (which creates a store on connect) never runs to leave an empty one behind."""
    from hjcag.serve.package import resolve_model_uri

    db = tmp_path / "elsewhere" / "mlruns.db"
    db.parent.mkdir()
    point_mlflow_at(f"sqlite:///{db}")
    for read in (lambda: aliases.show("hjcag-demo"), lambda: aliases.promote("hjcag-demo"),
                 lambda: aliases.rollback("hjcag-demo"),
                 lambda: resolve_model_uri("models:/hjcag-demo@champion", tmp_path / "download")):
        with pytest.raises(HjcagError, match=r"no MLflow store at sqlite:///.*elsewhere/mlruns\.db \(.* does not "
                                             r"exist\)\. .*MLFLOW_TRACKING_URI"):
            read()
    assert not db.exists()

def test_gates_name_the_failed_threshold_and_the_shortfall(tmp_path: Path) -> None:
    metrics = {"accuracy": {"mean": 0.62, "std": 0.01}, "weighted_f1": {"mean": 0.70, "std": 0.02}}
    result = gate.check_gates(metrics, GateConfig(min_accuracy=0.65, min_weighted_f1=0.70))
    assert not result.passed
    assert [c.gate for c in result.failures] == ["min_accuracy"]  # equal to the threshold passes
    assert result.failures[0].shortfall == pytest.approx(0.03)
    assert gate.check_gates({"accuracy": 0.9, "weighted_f1": 0.9}, GateConfig(0.5, 0.5)).passed  # flat values
    assert not gate.check_gates({"accuracy": {"mean": None}, "weighted_f1": 1.0}, GateConfig(0.0, 0.0)).passed
    with pytest.raises(HjcagError, match="weighted_f1"):
        gate.check_gates({"accuracy": 0.9}, GateConfig())

    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(gate.GateFailed) as failed:
        gate.gate_run(tmp_path, GateConfig(min_accuracy=0.65), report=tmp_path / "gate.json")
    assert "min_accuracy: accuracy 0.6200 < 0.6500 (short by 0.0300, i.e. 3.00 percentage points)" in str(failed.value)
    assert json.loads((tmp_path / "gate.json").read_text())["passed"] is False
    assert gate.gate_run(tmp_path, GateConfig(min_accuracy=0.6)).passed


def test_data_hash_is_the_files_md5_and_agrees_with_dvc_lock(tmp_path: Path) -> None:
    features = tmp_path / "data" / "features.npz"
    features.parent.mkdir()
    features.write_bytes(b"some features")
    md5 = hashlib.md5(b"some features").hexdigest()
    assert register.data_hash(features, dvc_lock=None) == md5
    lock = tmp_path / "dvc.lock"
    lock.write_text(f"schema: '2.0'\nstages:\n  features:\n    outs:\n    - path: data/features.npz\n"
                    f"      hash: md5\n      md5: {md5}\n      size: 13\n")
    assert register._dvc_lock_md5(features, lock) == md5
    assert register.data_hash(features, lock) == md5
    lock.write_text(lock.read_text().replace(md5, "0" * 32))  # stale lock: the file's bytes win
    assert register.data_hash(features, lock) == md5
    with pytest.raises(HjcagError, match="not found"):
        register.data_hash(tmp_path / "missing.npz")


# ---------------------------------------------------------------- tracking


def test_a_finished_run_logs_as_a_parent_with_nested_fold_runs(trained: Trained, mlflow_client: MlflowClient) -> None:
    parent = tracking.log_training_run(trained.run_dir, trained.params)
    run = mlflow_client.get_run(parent)
    assert mlflow_client.get_experiment(run.info.experiment_id).name == "hjcag-demo"
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["model.widths.t"] == "8" and p["train.epochs"] == str(EPOCHS) and p["gates.min_accuracy"] == "0.0"
    assert p["run.modalities"] == "t,a,v" and p["dataset"] == "demo"
    m = run.data.metrics
    assert m["accuracy_mean"] == pytest.approx(trained.metrics["accuracy"]["mean"])
    assert m["weighted_f1_std"] == pytest.approx(trained.metrics["weighted_f1"]["std"])
    assert {"f1_joy_mean", "macro_f1_mean"} <= set(m)
    assert {"confusion_matrix.png", "folds.png", "learning_curves.png"} <= _artifacts(mlflow_client, parent, "plots")
    assert {"metrics.json", "report.md", "model_config.json", "params.json"} <= _artifacts(mlflow_client, parent,
                                                                                            "report")
    # Artifacts live next to the database, not in the working directory's ./mlruns.
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(Path.cwd() / "mlartifacts")

    folds = sorted(_children(mlflow_client, parent), key=lambda r: int(r.data.tags["hjcag.fold"]))
    assert [r.data.tags["hjcag.fold"] for r in folds] == ["0", "1"]
    for fold_run, result in zip(folds, trained.metrics["folds"], strict=True):
        history = json.loads((trained.run_dir / f"fold_{result['fold']}" / "history.json").read_text())
        val_loss = mlflow_client.get_metric_history(fold_run.info.run_id, "val_loss")
        assert [x.step for x in val_loss] == [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
        assert [x.value for x in val_loss] == pytest.approx([row["val_loss"] for row in history])
        assert fold_run.data.metrics["test_accuracy"] == pytest.approx(result["accuracy"])
        assert {"history.json", "predictions.csv", "result.json"} <= _artifacts(mlflow_client, fold_run.info.run_id,
                                                                                "fold")

    # Logging "if not yet logged" reuses the run instead of creating a second one.
    assert tracking.ensure_logged(trained.run_dir, trained.params) == parent
    assert len(mlflow_client.search_runs([run.info.experiment_id], filter_string="tags.`hjcag.kind` = 'parent'")) == 1


def test_training_with_tracking_streams_each_epoch_once(tmp_path: Path, mlflow_client: MlflowClient) -> None:
    params = tiny_params()
    with torch_threads(1):
        metrics, parent = tracking.train_with_tracking(tiny_features(seed=1), params, ("t", "a", "v"), "hjcag",
                                                       tmp_path / "run", experiment="live", quiet=True)
    folds = _children(mlflow_client, parent)
    assert len(folds) == 2 and mlflow_client.get_run(parent).data.metrics["accuracy_mean"] == pytest.approx(
        metrics["accuracy"]["mean"])
    for fold_run in folds:
        history = mlflow_client.get_metric_history(fold_run.info.run_id, "train_loss")
        assert [x.step for x in history] == list(range(1, EPOCHS + 1))  # logged once, not again at the end
        written = (tmp_path / "run" / f"fold_{fold_run.data.tags['hjcag.fold']}" / "history.json").stat().st_mtime
        assert max(x.timestamp for x in history) <= written * 1000  # streamed while training, before the fold ended
        assert fold_run.info.status == "FINISHED"


# ---------------------------------------------------------------- gates and registration


def test_a_gate_failure_registers_nothing_and_says_by_how_much(trained: Trained, mlflow_client: MlflowClient) -> None:
    strict = tiny_params(min_accuracy=0.99, min_weighted_f1=0.0)
    with pytest.raises(gate.GateFailed) as failed:
        register.log_and_register(trained.run_dir, strict, trained.features)
    acc = trained.metrics["accuracy"]["mean"]
    assert f"min_accuracy: accuracy {acc:.4f} < 0.9900 (short by {0.99 - acc:.4f}" in str(failed.value)
    assert "nothing was registered" in str(failed.value)
    assert [c.metric for c in failed.value.result.failures] == ["accuracy"]
    assert mlflow_client.search_registered_models() == []
    parent = tracking.find_logged_run(trained.run_dir, strict)
    assert parent is not None and mlflow_client.get_run(parent).data.tags["hjcag.gate"] == "failed"


def test_params_other_than_the_runs_are_refused(trained: Trained, mlflow_client: MlflowClient) -> None:
    other = trained.params.with_overrides(train={"epochs": EPOCHS + 1})
    with pytest.raises(ConfigError, match=r"train\.epochs: run 2 vs params 3"):
        register.log_and_register(trained.run_dir, other, trained.features)
    assert mlflow_client.search_registered_models() == []


def test_register_tags_signature_alias_and_loads_back(trained: Trained, mlflow_client: MlflowClient,
                                                      tmp_path: Path) -> None:
    commit = _git_repo(tmp_path)
    mv = register.log_and_register(trained.run_dir, trained.params, trained.features)
    assert (mv.name, mv.version, mv.aliases, mv.reused) == ("hjcag-demo", "1", ("candidate",), False)
    assert str(mlflow_client.get_model_version_by_alias("hjcag-demo", "candidate").version) == "1"
    tags = mlflow_client.get_model_version("hjcag-demo", "1").tags
    assert tags["git_commit"] == commit
    assert tags["dvc_data_hash"] == hashlib.md5(trained.features.read_bytes()).hexdigest()
    identity = json.loads((trained.run_dir / "run.json").read_text())["identity"]  # what the fingerprint covers
    trained_with = {k: identity[k] for k in ("model", "model_config", "train", "seed")}  # its params part
    canonical = json.dumps(trained_with, sort_keys=True, separators=(",", ":"))
    assert tags["params_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert tags["params_hash"] == tracking.params_hash(tiny_params(min_accuracy=0.1), "hjcag")  # gates do not train
    elsewhere = trained.params.with_overrides(train={"device": "auto", "num_threads": 3})
    assert tags["params_hash"] == tracking.params_hash(elsewhere, "hjcag")  # nor does where it ran
    assert tags["params_hash"] != tracking.params_hash(trained.params.with_overrides(train={"lr": 0.5}), "hjcag")
    assert mv.run_id == tracking.find_logged_run(trained.run_dir, trained.params)

    info = mlflow.models.get_model_info("models:/hjcag-demo@candidate")
    inputs = info.signature.inputs.to_dict()
    assert [(s["name"], list(s["tensor-spec"]["shape"])) for s in inputs] == [
        ("t", [-1, SEQ_LEN, 6]), ("a", [-1, SEQ_LEN, 5]), ("v", [-1, SEQ_LEN, 4])]
    assert {"label", "confidence", "prob_joy", "gate_v"} <= set(info.signature.outputs.input_names())
    assert info.saved_input_example_info is not None

    # The registered pyfunc predicts what the run's own model predicts, on real rows.
    (tmp_path / "pyfunc").mkdir()  # mlflow's default is a temp folder it never removes
    loaded = mlflow.pyfunc.load_model("models:/hjcag-demo@candidate", dst_path=str(tmp_path / "pyfunc"))
    rows = TensorData.from_features(trained.fs.subset(np.arange(7)))
    inputs_np = {m: x.numpy() for m, x in rows.inputs.items()}
    got, want = loaded.predict(inputs_np), _expected_frame(trained.run_dir, inputs_np)
    assert list(got["label"]) == list(want["label"])
    np.testing.assert_allclose(got.drop(columns="label").to_numpy(), want.drop(columns="label").to_numpy(),
                               rtol=1e-6, atol=1e-7)

    # The run directory (config + every fold's weights) is recoverable from the registered version.
    local = register.download_run_dir("models:/hjcag-demo/1", tmp_path / "download")
    assert sorted(p.name for p in local.glob("fold_*")) == ["fold_0", "fold_1"]
    for fold in (0, 1):
        a, _ = load_trained_model(local, fold)
        b, _ = load_trained_model(trained.run_dir, fold)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    meta = features_meta_path(trained.run_dir / FEATURES_FILE)  # packaging from the registry finds the record
    assert features_meta_path(local / FEATURES_FILE).read_bytes() == meta.read_bytes()

    again = register.log_and_register(trained.run_dir, trained.params, trained.features)
    assert (again.version, again.reused) == ("1", True)
    assert len(mlflow_client.search_model_versions("name = 'hjcag-demo'")) == 1


def test_promote_and_rollback_move_the_champion(trained: Trained, mlflow_client: MlflowClient) -> None:
    name = "hjcag-demo"
    with pytest.raises(HjcagError, match="no registered model"):
        aliases.promote(name)
    parent = tracking.log_training_run(trained.run_dir, trained.params)
    v1 = register.register_run(trained.run_dir, trained.params, "data-a", parent_run_id=parent)
    assert aliases.promote(name) == aliases.AliasMove(name, "champion", v1.version, None)
    with pytest.raises(HjcagError, match="replaced no earlier champion"):
        aliases.rollback(name)
    v2 = register.register_run(trained.run_dir, trained.params, "data-b", parent_run_id=parent)
    assert (v1.version, v2.version) == ("1", "2")
    assert _aliases(mlflow_client, name) == {"candidate": "2", "champion": "1"}
    with pytest.raises(HjcagError, match="already the 'champion'"):
        aliases.promote(name, version=1)
    with pytest.raises(HjcagError, match="no version 9"):
        aliases.promote(name, version=9)

    assert aliases.promote(name).previous == "1"
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == "2"
    moved = aliases.rollback(name)
    assert (moved.version, moved.previous) == ("1", "2")
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == "1"
    assert mlflow_client.get_model_version(name, "2").tags["hjcag.rolled_back"] == "true"
    with pytest.raises(HjcagError, match="nothing to roll back to"):
        aliases.rollback(name)

    shown = aliases.show(name)
    assert shown["aliases"] == {"candidate": "2", "champion": "1"}
    assert [(v["version"], v["aliases"]) for v in shown["versions"]] == [("1", ["champion"]), ("2", ["candidate"])]
    assert "champion -> v1" in aliases.format_show(shown)


# ---------------------------------------------------------------- a real tracking server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch,
                  point_mlflow_at: Callable[[str], None]) -> Iterator[tuple[str, Path]]:
    db, artifacts, port = tmp_path / "server.db", tmp_path / "server-artifacts", _free_port()
    shutil.copy(migrated_mlflow_db, db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log_file = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", str(artifacts)],
        cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.2)
        monkeypatch.chdir(tmp_path)
        point_mlflow_at(url)
        yield url, artifacts
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: uvicorn and its worker
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log_file.close()


def test_log_register_promote_and_load_through_a_tracking_server(
    trained: Trained, mlflow_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, artifacts = mlflow_server
    mv = register.log_and_register(trained.run_dir, trained.params, trained.features)
    assert aliases.promote(mv.name).version == mv.version == "1"
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    assert _aliases(client, mv.name) == {"candidate": "1", "champion": "1"}
    assert len(_children(client, mv.run_id)) == 2
    assert client.get_run(mv.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    assert list(artifacts.rglob("learning_curves.png")) and list(artifacts.rglob("model.safetensors"))

    inputs = register.input_example(json.loads((trained.run_dir / "model_config.json").read_text()), batch=3)
    (tmp_path / "pyfunc").mkdir()
    got = mlflow.pyfunc.load_model(f"models:/{mv.name}@champion", dst_path=str(tmp_path / "pyfunc")).predict(inputs)
    np.testing.assert_allclose(got["confidence"], _expected_frame(trained.run_dir, inputs)["confidence"], rtol=1e-6)
