"""The KFP training pipeline: the committed YAML matches a fresh compile, and the real pipeline runs locally.

The local runs use ``kfp.local.SubprocessRunner(use_venv=False)``: every component runs as a subprocess of this
interpreter, with the control flow of the compiled pipeline (ParallelFor over the folds, Collected, dsl.If on the
gate), on the tiny synthetic dataset with stand-in features, a tiny model (2 folds x 2 epochs) and MLflow in a
SQLite store under tmp_path. The deploy step runs with dry_run (no cluster here): it records the patch it would
apply (the patch bodies themselves are tested in test_kfp_deploy.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hjcag.pipeline.compile import compile_components, compile_pipeline

REPO = Path(__file__).resolve().parents[1]
COMPILED = REPO / "pipelines" / "hjcag_training.yaml"
FOLDS = 2


def test_compiled_pipeline_is_up_to_date(tmp_path: Path) -> None:
    fresh = list(yaml.safe_load_all(compile_pipeline(tmp_path / "fresh.yaml").read_text()))
    assert COMPILED.exists(), f"{COMPILED.relative_to(REPO)} is missing: run `make pipeline` and commit it."
    committed = list(yaml.safe_load_all(COMPILED.read_text()))
    assert committed == fresh, (
        f"{COMPILED.relative_to(REPO)} is out of date with src/hjcag/pipeline/: run `make pipeline` "
        "(python -m hjcag.pipeline.compile --out pipelines/hjcag_training.yaml) and commit the result."
    )


def test_compiled_component_specs_are_up_to_date(tmp_path: Path) -> None:
    fresh = {p.name: yaml.safe_load(p.read_text()) for p in compile_components(tmp_path)}
    committed = {p.name: yaml.safe_load(p.read_text()) for p in (REPO / "components").glob("*.yaml")}
    assert sorted(committed) == sorted(fresh) and committed == fresh, (
        "components/*.yaml are out of date with src/hjcag/pipeline/components.py: run `make pipeline` and commit them."
    )
    assert fresh["train_fold.yaml"]["root"]["inputDefinitions"]["artifacts"]["features"]["artifactType"][
        "schemaTitle"] == "system.Dataset"


def test_only_the_volume_targets_mount_the_model_store() -> None:
    """torchserve-pvc and kserve write the archive to the model-store PVC; the torchserve target ships it in an
    image and its overlays create no such PVC, so its deploy task must not mount one (it could never start)."""
    doc = list(yaml.safe_load_all(COMPILED.read_text()))
    spec, platform = doc[0], doc[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    branches = {task["taskInfo"]["name"]: (task.get("triggerPolicy", {}).get("condition"), name)
                for comp in spec["components"].values() for name, task in comp.get("dag", {}).get("tasks", {}).items()}
    condition, volume = branches["volume-rollout"]
    assert condition == "inputs.parameter_values['pipelinechannel--deploy_target'] != 'torchserve'"
    assert branches["image-rollout"][0] == f"!({condition})"  # the else branch
    executor = {comp: spec["components"][comp]["executorLabel"] for comp in spec["components"]
                if comp.startswith("comp-deploy")}
    volume_task = spec["components"][f"comp-{volume}"]["dag"]["tasks"]
    image_task = spec["components"][f"comp-{branches['image-rollout'][1]}"]["dag"]["tasks"]
    (volume_deploy,) = (t["componentRef"]["name"] for t in volume_task.values())
    (image_deploy,) = (t["componentRef"]["name"] for t in image_task.values())
    assert platform[executor[volume_deploy]]["pvcMount"][0]["mountPath"] == "/model-store"
    assert executor[image_deploy] not in platform  # no volume, no other cluster setting


def test_compiled_pipeline_requests_gpus_and_cluster_settings() -> None:
    doc = list(yaml.safe_load_all(COMPILED.read_text()))
    spec, platform = doc[0], doc[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    resources = {name: ex["container"].get("resources", {}) for name, ex in spec["deploymentSpec"]["executors"].items()}
    gpu = sorted(n for n, r in resources.items() if r.get("accelerator", {}).get("resourceType") == "nvidia.com/gpu")
    assert gpu == ["exec-features", "exec-train-fold"]
    assert platform["exec-train-fold"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert platform["exec-features"]["pvcMount"][0]["mountPath"] == "/data"
    assert platform["exec-register"]["secretAsEnv"][0]["secretName"] == "hjcag-mlflow"
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example.com/hjcag/hjcag-pipeline:0.1.0"}


# ---------------------------------------------------------------- local runs


def tiny_params_yaml(min_accuracy: float) -> str:
    """The repository's params.yaml, demo profile shrunk to seconds: tiny widths, 2 folds x 2 epochs, CPU."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    demo = raw["profiles"]["demo"]
    demo["model"] = {**demo.get("model", {}), "seq_len": 6, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8,
                     "classifier_hidden": 8}
    demo["train"] = {**demo.get("train", {}), "epochs": 2, "folds": FOLDS, "patience": 2, "device": "cpu",
                     "num_threads": 1}
    demo["gates"] = {"min_accuracy": min_accuracy, "min_weighted_f1": 0.0}
    return yaml.safe_dump(raw)


def run_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, min_accuracy: float) -> tuple[Path, str]:
    """Run the pipeline with kfp.local; return (the run's output directory, the MLflow tracking URI)."""
    from kfp import local
    from kfp.local import config

    from hjcag.pipeline.training import training_pipeline

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the component subprocesses inherit the environment
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    # Each component's compiled command writes its code into `mktemp -d` and leaves it there (in a pod, the pod's
    # disk): give the subprocesses a temp folder of the test's own.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    root = tmp_path / "kfp"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               workspace_root=str(tmp_path / "workspace"), raise_on_error=True)
    try:
        training_pipeline(params_yaml=tiny_params_yaml(min_accuracy), profile="demo", standin_features=True,
                          deploy_dry_run=True)
    finally:
        config.LocalExecutionConfig.instance = None
    (run,) = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("hjcag-training-")]
    return run, uri


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def passed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One local run whose gate passes, shared by the tests that only read it (each run takes over a minute)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_locally(tmp_path_factory.mktemp("kfp-passed"), monkeypatch, min_accuracy=0.0)


LOCAL_RUN_WARNINGS = [
    "ignore:You may be attemping to run a task:RuntimeWarning",  # our image's name has no "python" in it
    "ignore:.*have no effect in the current local runner:UserWarning",  # GPU requests, display names
]


@pytest.mark.slow
@pytest.mark.filterwarnings(*LOCAL_RUN_WARNINGS)
def test_pipeline_trains_folds_in_parallel_registers_packages_and_plans_the_rollout(
        passed_run: tuple[Path, str]) -> None:
    from mlflow import MlflowClient

    run, uri = passed_run

    # One task per fold (ParallelFor), merged by evaluate (Collected) into one aggregated run.
    iterations = sorted(p.name for p in run.iterdir() if "-iteration-" in p.name)
    assert len(iterations) == FOLDS
    for name in iterations:
        assert len(list((run / name / "train-fold" / "model").glob("fold_*/result.json"))) == 1
    metrics = read_json(run / "evaluate" / "run" / "metrics.json")
    assert metrics["n_folds"] == FOLDS and {f["fold"] for f in metrics["folds"]} == set(range(FOLDS))
    summary = read_json(run / "evaluate" / "evaluation" / "metrics.json")
    assert summary["accuracy"] == pytest.approx(sum(f["accuracy"] for f in metrics["folds"]) / FOLDS, abs=1e-9)
    assert read_json(run / "gate" / "report" / "gate.json")["passed"] is True

    # Registered in MLflow with the alias 'candidate'.
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("hjcag-demo", "candidate")
    assert str(version.version) == "1"
    assert {"git_commit", "dvc_data_hash", "params_hash"} <= set(version.tags)

    # Packaged from the registered version.
    mar = run / "package" / "mar" / "hjcag.mar"
    assert mar.stat().st_size > 0
    record = read_json(Path(f"{mar}.json"))
    assert (record["model"], record["registered_version"], record["version"]) == ("hjcag-demo", "1", "1")

    # The deploy step (dry run) planned the TorchServe PVC rollout of that archive.
    rollout = read_json(run / "deploy" / "rollout")
    assert rollout["dry_run"] is True and rollout["target"] == "torchserve-pvc"
    assert rollout["sha256"] == record["sha256"]
    template = rollout["patch"]["spec"]["template"]
    assert template["metadata"]["annotations"]["hjcag.io/model-version"] == "hjcag-demo/1"
    assert template["spec"]["containers"][0]["volumeMounts"][0]["subPath"] == "1"
    assert "written" not in rollout and "applied" not in rollout


@pytest.mark.slow
@pytest.mark.filterwarnings(*LOCAL_RUN_WARNINGS)
def test_a_failed_gate_ends_the_run_with_a_report_and_registers_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, uri = run_locally(tmp_path, monkeypatch, min_accuracy=1.0)

    report = read_json(run / "gate" / "report" / "gate.json")
    assert report["passed"] is False
    (accuracy,) = [c for c in report["checks"] if c["gate"] == "min_accuracy"]
    assert accuracy["passed"] is False
    assert accuracy["shortfall"] == pytest.approx(1.0 - accuracy["value"])
    assert "short by" in report["summary"] and "min_accuracy" in report["summary"]

    # dsl.If skipped everything after the gate: nothing registered, packaged or deployed.
    assert not any((run / name).exists() for name in ("register", "package", "deploy"))
    db = tmp_path / "mlruns.db"
    if db.exists():
        from mlflow import MlflowClient

        assert MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models() == []


@pytest.mark.slow
@pytest.mark.filterwarnings(*LOCAL_RUN_WARNINGS)
def test_the_cli_and_the_kfp_components_run_the_same_stages_to_the_same_bytes(
        passed_run: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One stage layer: `hjcag <stage>` (what dvc.yaml runs, all folds in one process) and the KFP components
    (folds in parallel tasks, merged) give byte-identical evaluation metrics and gate report, and register a
    version with the same tags."""
    from mlflow import MlflowClient

    from hjcag.cli import main

    kfp_run, kfp_uri = passed_run
    cli = tmp_path / "cli-side"
    cli.mkdir()
    params = cli / "params.yaml"
    params.write_text(tiny_params_yaml(min_accuracy=0.0))
    cli_uri = f"sqlite:///{cli / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cli_uri)
    p = ["--params", str(params), "--profile", "demo"]
    seed = str(yaml.safe_load(params.read_text())["seed"])
    for argv in (
        ["demo-data", "--out", str(cli / "data"), "--size", "tiny", "--seed", seed],
        ["prepare", "--dataset", "meld", "--source", str(cli / "data"), "--out", str(cli / "prepare"), *p],
        ["validate", "--manifest", str(cli / "prepare" / "manifest.parquet"), "--out", str(cli / "validate"), *p],
        ["standin-features", "--data", str(cli / "data"), "--out", str(cli / "features" / "features.npz"),
         "--keep", str(cli / "validate" / "manifest.valid.parquet"), *p],
        ["train", "--features", str(cli / "features" / "features.npz"), "--out", str(cli / "run"), *p],
        ["evaluate", "--run", str(cli / "run"), "--out", str(cli / "evaluate")],
        ["gate", "--run", str(cli / "run"), "--report", str(cli / "gate" / "gate.json"), *p],
        ["register", "--run", str(cli / "run"), "--features", str(cli / "features" / "features.npz"),
         "--dvc-lock", "none", *p],
    ):
        assert main(argv) == 0, argv

    assert (cli / "features" / "features.npz").read_bytes() == (
        kfp_run / "features" / "features" / "features.npz").read_bytes()
    assert (cli / "evaluate" / "metrics.json").read_bytes() == (
        kfp_run / "evaluate" / "evaluation" / "metrics.json").read_bytes()
    assert (cli / "gate" / "gate.json").read_bytes() == (kfp_run / "gate" / "report" / "gate.json").read_bytes()

    def tags(uri: str) -> dict[str, str]:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = client.get_model_version_by_alias("hjcag-demo", "candidate")
        return {k: version.tags[k] for k in ("git_commit", "dvc_data_hash", "params_hash")}

    assert tags(cli_uri) == tags(kfp_uri)
