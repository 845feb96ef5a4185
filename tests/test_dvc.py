"""The real dvc.yaml under a real `dvc repro`, on tiny demo data in a scratch git repository.

One full reproduction (every stage, real extractors, MLflow in a scratch SQLite store) is shared by the tests;
each test leaves the repository as it found it. One more, in a clone elsewhere, checks that dvc.lock does not
depend on the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["demo_data", "prepare", "validate", "features", "validate_features", "train", "evaluate", "gate",
          "register", "package"]


@dataclass
class Project:
    root: Path
    env: dict[str, str]
    first_log: str
    first_lock: str = ""
    first_imports: list[dict] = field(default_factory=list)  # per hjcag process of the first repro (IMPORTS_HOOK)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(args), cwd=self.root, env=self.env, text=True, capture_output=True, timeout=600)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(str(Path(sys.executable).with_name("dvc")), *args, check=check)

    def edit_params(self, edit) -> str:  # type: ignore[no-untyped-def]
        """Apply `edit(doc)` to params.yaml; returns the old text for `restore_params`."""
        path = self.root / "params.yaml"
        old = path.read_text()
        doc = yaml.safe_load(old)
        edit(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return old

    def restore_params(self, text: str) -> None:
        (self.root / "params.yaml").write_text(text)

    def registered_versions(self) -> list[str]:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{self.root / 'mlruns.db'}")
        return sorted(str(v.version) for v in client.search_model_versions("name='hjcag-demo'"))


def tiny_params(doc: dict) -> None:
    """The demo profile, shrunk so a full reproduction takes about a minute on two cores."""
    doc["demo_data"] = {"size": "tiny", "seed": 13, "context_cue": 0.0}
    demo = doc["profiles"]["demo"]
    demo["model"] = {"seq_len": 4, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8,
                     "mult": {"d_model": 8, "heads": 2, "layers": 1}}
    demo["train"] = {"epochs": 2, "batch_size": 64, "lr": 1e-3, "patience": 2}
    demo["features"] = {"visual_frames": 2, "image_size": 64}
    demo["gates"] = {"min_accuracy": 0.0, "min_weighted_f1": 0.0}


# A sitecustomize on the stages' PYTHONPATH: each `hjcag` process writes, as it exits, its command and the files of
# the hjcag modules it imported (what the stage ran, lazy imports included) into $HJCAG_TEST_IMPORTS.
IMPORTS_HOOK = """
import atexit, json, os, sys

def _record_hjcag_imports():
    if os.path.basename(sys.argv[0]) != "hjcag" or len(sys.argv) < 2:
        return
    import hjcag
    src = os.path.dirname(os.path.dirname(hjcag.__file__))
    files = sorted({"src/" + os.path.relpath(m.__file__, src) for name, m in list(sys.modules.items())
                    if name.split(".")[0] == "hjcag" and getattr(m, "__file__", None)})
    with open(os.path.join(os.environ["HJCAG_TEST_IMPORTS"], f"{os.getpid()}.json"), "w") as f:
        json.dump({"command": sys.argv[1], "files": files}, f)

atexit.register(_record_hjcag_imports)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("dvc-project")
    hooks, imports = tmp_path_factory.mktemp("hooks"), tmp_path_factory.mktemp("imports")
    (hooks / "sitecustomize.py").write_text(IMPORTS_HOOK)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src" / "hjcag", root / "src" / "hjcag", ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": "sqlite:///mlruns.db",  # the default: beside dvc.yaml, wherever the checkout is
        "HF_HUB_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",  # dvc init reports before core.analytics is set, leaving its report in /tmp
        "PYTHONPATH": os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH", "")) if p),
        "HJCAG_TEST_IMPORTS": str(imports),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    proj = Project(root, env, "")
    proj.run("git", "init", "-q")
    proj.dvc("init", "-q")
    proj.edit_params(tiny_params)
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-qm", "scratch project")
    proj.first_log = proj.dvc("repro").stdout
    proj.first_lock = (root / "dvc.lock").read_text()
    proj.first_imports = [json.loads(f.read_text()) for f in sorted(imports.glob("*.json"))]
    yield proj


# What a stage's command imports but cannot change its outputs with: the argument parser, the exception classes and
# the progress lines (deliberately not stage deps: editing them re-runs nothing).
NOT_OUTPUT_CODE = {"src/hjcag/__init__.py", "src/hjcag/cli.py", "src/hjcag/errors.py", "src/hjcag/progress.py"}


def covered(path: str, deps: list[str]) -> bool:
    """Whether a dep is `path` itself or a folder above it."""
    return any(path == d or path.startswith(d + "/") for d in deps)


def uncovered_code(stages: dict, imports: list[dict]) -> dict[str, list[str]]:
    """Per stage: the hjcag files its command imported that none of its deps covers (a file, or a folder above it)."""
    gaps = {}
    for name, stage in stages.items():
        command = stage["cmd"].split()[1]  # `hjcag <command> ...`
        files = {f for record in imports if record["command"] == command for f in record["files"]}
        deps = [str(d).split()[0].rstrip("/") for d in stage.get("deps", [])]
        missing = sorted(f for f in files - NOT_OUTPUT_CODE if not covered(f, deps))
        if missing:
            gaps[name] = missing
    return gaps


def test_every_stage_depends_on_the_code_it_runs(project: Project) -> None:
    """Editing code a stage ran re-runs the stage: each stage's deps in dvc.yaml cover every hjcag module its command
    imported in the repro (recorded by IMPORTS_HOOK), but the few that cannot change its outputs."""
    stages = yaml.safe_load((project.root / "dvc.yaml").read_text())["stages"]
    assert {r["command"] for r in project.first_imports} >= {s["cmd"].split()[1] for s in stages.values()}
    assert uncovered_code(stages, project.first_imports) == {}


def test_the_code_check_finds_a_module_no_dep_covers() -> None:
    stages = {"train": {"cmd": "hjcag train --x", "deps": ["src/hjcag/train", "src/hjcag/params.py", "build/x"]}}
    imports = [{"command": "train", "files": ["src/hjcag/train/run.py", "src/hjcag/params.py", "src/hjcag/cli.py",
                                              "src/hjcag/data/features_file.py"]},
               {"command": "gate", "files": ["src/hjcag/registry/gate.py"]}]
    assert uncovered_code(stages, imports) == {"train": ["src/hjcag/data/features_file.py"]}


def test_the_package_stage_depends_on_every_file_its_archive_carries() -> None:
    """A change to any file the archive carries re-runs `package`; one to the modules it leaves out does not."""
    from hjcag.serve.package import NOT_SERVED, served_sources

    deps = [str(d).split()[0].rstrip("/") for d in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
            ["package"]["deps"]]
    carried = [f"src/hjcag/{p.as_posix()}" for p in served_sources()]
    assert [f for f in carried if not covered(f, deps)] == []
    assert [d for d in deps if d.removeprefix("src/hjcag/") in NOT_SERVED and d != "src/hjcag/stages.py"] == []


def ran_stages(log: str) -> list[str]:
    return [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")]


def test_repro_runs_every_stage_into_a_registered_archive(project: Project) -> None:
    assert ran_stages(project.first_log) == STAGES
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)
    assert lock["stages"]["train"]["params"]["params.yaml"]["profiles.demo.train"]["epochs"] == 2

    metrics = json.loads((project.root / "build/evaluate/metrics.json").read_text())
    folds = json.loads((project.root / "build/train/metrics.json").read_text())["folds"]
    assert metrics["n_folds"] == len(folds) == 5  # the evaluated figure is the mean of the trained folds' own
    assert metrics["accuracy"] == pytest.approx(sum(f["accuracy"] for f in folds) / 5, abs=1e-9)
    shown = json.loads(project.dvc("metrics", "show", "--json").stdout)
    workspace = next(iter(shown.values()))["data"]  # keyed by revision; the workspace is ""
    assert workspace["build/evaluate/metrics.json"]["data"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert workspace["build/gate/gate.json"]["data"]["passed"] is True

    plots = project.dvc("plots", "show", "-o", "plots-out").stdout
    html = (project.root / "plots-out" / "index.html").read_text()
    assert "index.html" in plots and "predicted" in html and "val_loss" in html
    assert (project.root / "plots-out" / "static").is_dir()  # the PNG figures
    report = (project.root / "build/evaluate/report.html").read_text()  # offline: figures embedded, no CDN
    assert report.count('src="data:image/png;base64,') == 3 and "https://" not in report

    record = json.loads((project.root / "build/register/registered.json").read_text())
    assert record["name"] == "hjcag-demo" and project.registered_versions() == [str(record["version"])]
    archive = json.loads((project.root / "build/model-store/hjcag.mar.json").read_text())
    assert archive["version"] == record["version"] and len(archive["sha256"]) == 64


def test_a_second_repro_runs_nothing(project: Project) -> None:
    log = project.dvc("repro").stdout
    assert ran_stages(log) == [] and "Data and pipelines are up to date" in log


def test_redoing_validation_and_extraction_retrains_nothing(project: Project) -> None:
    """Data Docs (timestamps) and features.run.json (timings) are not tracked: the outputs come back identical."""
    lock = (project.root / "dvc.lock").read_text()
    for stage in ("validate", "features"):
        assert ran_stages(project.dvc("repro", "--force", "--single-item", stage).stdout) == [stage]
    assert ran_stages(project.dvc("repro").stdout) == []
    assert json.loads(project.dvc("status", "--json").stdout) == {}
    assert (project.root / "dvc.lock").read_text() == lock
    assert (project.root / "build/data-docs/validate/index.html").is_file()
    assert (project.root / "build/features/features.run.json").is_file()


def test_a_clone_in_another_folder_reproduces_the_same_lock(project: Project, tmp_path: Path) -> None:
    """The issue's "done when": a fresh clone (here: with the first run's dvc.lock committed) in another folder
    runs every stage, and afterwards neither git nor DVC sees a change. The feature cache comes along (it is keyed
    by content, not by path), so only extraction itself is not repeated."""
    clone = Project(tmp_path / "somewhere" / "else", project.env, "")
    clone.root.parent.mkdir(parents=True)
    project.run("git", "clone", "-q", str(project.root), str(clone.root))
    (clone.root / "dvc.lock").write_text(project.first_lock)
    clone.run("git", "add", "dvc.lock")
    clone.run("git", "commit", "-qm", "the first run's lock")
    shutil.copytree(project.root / ".cache", clone.root / ".cache")

    assert ran_stages(clone.dvc("repro").stdout) == STAGES
    assert (clone.root / "dvc.lock").read_text() == project.first_lock
    assert clone.run("git", "status", "--porcelain", "--untracked-files=no").stdout == ""
    assert json.loads(clone.dvc("status", "--json").stdout) == {}
    record = json.loads((clone.root / "build/register/registered.json").read_text())
    mlflow_ids = json.loads((clone.root / "build/register/registered.run.json").read_text())
    assert record["tracking_uri"] == "sqlite:///mlruns.db" and mlflow_ids["run_id"]  # the ids stay beside it


def test_a_parameter_reruns_only_the_stages_that_read_it(project: Project) -> None:
    old = project.edit_params(lambda d: d["profiles"]["demo"]["train"].update(epochs=3))
    try:  # training reads it; nothing upstream does
        assert sorted(json.loads(project.dvc("status", "--json").stdout)) == ["train"]
    finally:
        project.restore_params(old)

    versions = project.registered_versions()
    old = project.edit_params(lambda d: d["profiles"]["demo"]["gates"].update(min_accuracy=0.01))
    try:  # a new threshold: the gate and the registration it feeds re-run; the same run is not registered twice
        assert ran_stages(project.dvc("repro").stdout) == ["gate", "register"]
        assert project.registered_versions() == versions
    finally:
        project.restore_params(old)
    # back to the old threshold: DVC's run cache restores the old gate report instead of running it again
    assert set(ran_stages(project.dvc("repro").stdout)) <= {"gate", "register"}
    assert json.loads(project.dvc("status", "--json").stdout) == {}


def test_a_failed_gate_stops_before_register_and_says_by_how_much(project: Project) -> None:
    before = project.registered_versions()
    old = project.edit_params(lambda d: d["profiles"]["demo"]["gates"].update(min_accuracy=1.0))
    try:
        proc = project.dvc("repro", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and ran_stages(proc.stdout) == ["gate"]
        assert "min_accuracy" in out and "short by" in out and "nothing was registered" in out
        report = json.loads((project.root / "build/gate/gate.json").read_text())
        assert report["passed"] is False and report["checks"][0]["shortfall"] > 0
        assert project.registered_versions() == before
    finally:
        project.restore_params(old)
    project.dvc("repro", "gate")  # back to the committed state for the other tests
    assert json.loads(project.dvc("status", "--json").stdout) == {}


def test_push_and_pull_through_a_local_remote(project: Project, tmp_path: Path) -> None:
    project.dvc("remote", "add", "-f", "-d", "scratch", str(tmp_path / "remote"))
    project.dvc("push")
    features = project.root / "build/features/features.npz"
    digest = features.read_bytes()
    shutil.rmtree(project.root / "build/features")
    shutil.rmtree(project.root / "data/demo")
    shutil.rmtree(project.root / ".dvc/cache")
    assert json.loads(project.dvc("status", "--json").stdout)  # outputs missing
    project.dvc("pull")
    assert features.read_bytes() == digest and (project.root / "data/demo/train_sent_emo.csv").is_file()
    assert json.loads(project.dvc("status", "--json").stdout) == {}
