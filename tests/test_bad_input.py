"""Bad input through the real `hjcag` command line: a wrong params value or section, a file where the --out folder
belongs, a read-only --out. Each ends in one line naming what, where and the fix, exit code 2, no traceback, and
nothing written that would stand in the way of the same command once the input is fixed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hjcag.cli import main
from params_fixtures import features_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text("utterance_id,dialogue_id,speaker,text,label\nu1,d1,A,hello there,joy\nu2,d1,B,oh no,sadness\n")
    return path


def edited(params: Path, edit: Callable[[dict[str, Any]], None], name: str = "edited.yaml") -> Path:
    doc = yaml.safe_load(params.read_text())
    edit(doc)
    path = params.with_name(name)
    path.write_text(yaml.safe_dump(doc))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clear_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("hjcag ")]
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and "error:" in lines[0], err
    for fragment in fragments:
        assert fragment in lines[0], err


# ---------------------------------------------------------------- params.yaml


def test_a_bad_type_stops_train_before_any_output_and_the_fixed_params_run_in_the_same_out(
    capsys: pytest.CaptureFixture[str], params: Path, features: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    for key, value, kind in (("epochs", "ten", "a whole number"), ("lr", "fast", "a number")):
        bad = edited(params, lambda d, k=key, v=value: d["profiles"]["demo"]["train"].update({k: v}))
        code, _, err = run(capsys, "train", "--features", str(features), "--out", str(out), "--params", str(bad))
        assert_clear_error(code, err, str(bad), f"profiles.demo.train.{key} is '{value}'", kind)
        assert not (out / "run.json").exists()

    # fixed, with lr as `1e-3` (YAML 1.1, so PyYAML, reads that as a string): read as the number it means
    fixed = params.with_name("fixed.yaml")
    fixed.write_text(params.read_text().replace("lr: 0.001", "lr: 1e-3"))
    assert "lr: 1e-3" in fixed.read_text()
    code, _, err = run(capsys, "train", "--features", str(features), "--out", str(out), "--params", str(fixed))
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["identity"]["train"]["lr"] == 0.001
    assert (out / "metrics.json").is_file()


def test_a_run_that_failed_before_its_first_fold_starts_over_with_fixed_params(
    capsys: pytest.CaptureFixture[str], params: Path, features: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    too_many = edited(params, lambda d: d["profiles"]["demo"]["train"].update(folds=20))
    code, _, err = run(capsys, "train", "--features", str(features), "--out", str(out), "--params", str(too_many))
    assert_clear_error(code, err, "14 distinct group(s)", "train.folds")
    code, _, err = run(capsys, "train", "--features", str(features), "--out", str(out), "--params", str(params))
    assert code == 0 and "different settings" not in err, err
    assert json.loads((out / "metrics.json").read_text())["n_folds"] == 2


def test_a_gate_that_is_not_a_number_or_above_one_is_refused_before_the_gate_runs(
    capsys: pytest.CaptureFixture[str], params: Path, tmp_path: Path
) -> None:
    report = tmp_path / "gate.json"
    for value, fragment in (("high", "it takes a number"), (1.5, "it must be in [0, 1]")):
        bad = edited(params, lambda d, v=value: d["gates"].update(min_accuracy=v))
        code, _, err = run(capsys, "gate", "--run", str(tmp_path / "no-run"), "--params", str(bad),
                           "--report", str(report))
        assert_clear_error(code, err, "gates.min_accuracy is", fragment)
        assert not report.exists()


@pytest.mark.parametrize(("edit", "fragments"), [
    (lambda d: d.update(gate=d.pop("gates")), ["unknown section 'gate'", "did you mean 'gates'?"]),
    (lambda d: d["profiles"]["meld"].update(trian=d["profiles"]["meld"].pop("train")),
     ["unknown section 'trian' in profiles.meld", "did you mean 'train'?"]),
    (lambda d: d["train"].update(epoch=3), ["unknown key 'epoch' in train", "did you mean 'epochs'?"]),
    (lambda d: d["features"].update(finetune={"reapeats": 1}),
     ["unknown key 'reapeats' in features.finetune", "did you mean 'repeats'?"]),
    (lambda d: d["train"].update(protocol="loso"), ["train.protocol is 'loso'", "one of ['cv5', 'holdout']"]),
    (lambda d: d["model"].update(dropout=1.0), ["model.dropout is 1.0", "in [0, 1)"]),
])
def test_a_misspelled_section_key_or_a_value_out_of_range_is_named(
    capsys: pytest.CaptureFixture[str], params: Path, features: Path, tmp_path: Path,
    edit: Callable[[dict[str, Any]], None], fragments: list[str]
) -> None:
    """Checked as a whole: a typo in a profile other than the one in use stops the command too."""
    bad = edited(params, edit)
    code, _, err = run(capsys, "train", "--features", str(features), "--out", str(tmp_path / "run"),
                       "--params", str(bad))
    assert_clear_error(code, err, str(bad), *fragments)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- --out


def stage_commands(tmp_path: Path, params: Path, features: Path, manifest: Path, out: Path) -> dict[str, list[str]]:
    """Each stage with its output under `out`; every input exists (or is not read before the output is checked)."""
    p = ["--params", str(params)]
    return {
        "prepare": ["prepare", "--dataset", "manifest", "--source", str(manifest), "--modalities", "t",
                    "--out", str(out / "prepare"), *p],
        "validate": ["validate", "--manifest", str(manifest), "--modalities", "t", "--out", str(out / "validate"), *p],
        "features": ["features", "--manifest", str(manifest), "--modalities", "t", "--cache", "none",
                     "--out", str(out / "features.npz"), *p],
        "train": ["train", "--features", str(features), "--out", str(out / "run"), *p],
        "evaluate": ["evaluate", "--run", str(tmp_path / "run"), "--out", str(out / "evaluate")],
        "gate": ["gate", "--run", str(tmp_path / "run"), "--report", str(out / "gate.json"), *p],
    }


STAGES = ["prepare", "validate", "features", "train", "evaluate", "gate"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_file_where_the_out_folder_belongs_is_named(
    capsys: pytest.CaptureFixture[str], params: Path, features: Path, manifest: Path, tmp_path: Path, stage: str
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file\n")
    argv = stage_commands(tmp_path, params, features, manifest, blocker / "sub")[stage]
    code, _, err = run(capsys, *argv)
    option = "--report" if stage == "gate" else "--out"
    assert_clear_error(code, err, "not-a-folder' is a file, not a folder", f"pass another {option}")
    assert blocker.read_text() == "a file\n"


def _read_only_mounts() -> bool:
    """Whether this machine lets a process see a folder read-only (a private mount namespace, as any user where
    user namespaces are on): the one way to get a read-only --out that root cannot write either."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp"
                            " && ! touch /tmp/.hjcag-ro-probe"], capture_output=True)
    return probe.returncode == 0


READ_ONLY_WAYS = (["mount"] if _read_only_mounts() else []) + (["chmod"] if os.geteuid() != 0 else [])


@pytest.mark.skipif(not READ_ONLY_WAYS, reason="needs unshare with user namespaces, or a non-root user for chmod "
                                                "(root writes into a chmod 555 folder)")
@pytest.mark.parametrize("stage", ["prepare", "train", "evaluate", "gate"])
def test_a_read_only_out_folder_is_named_and_nothing_is_left_behind(
    capsys: pytest.CaptureFixture[str], params: Path, features: Path, manifest: Path, tmp_path: Path, stage: str
) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    argv = stage_commands(tmp_path, params, features, manifest, read_only)[stage]
    if "mount" in READ_ONLY_WAYS:  # a real read-only file system (EROFS), in a child process of its own
        script = (f"mount --bind {read_only} {read_only} && mount -o remount,bind,ro {read_only} && "
                  'exec "$@"')
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m", "hjcag.cli", *argv],
                              capture_output=True, text=True, env=env, timeout=300)
        code, err, fragment = proc.returncode, proc.stderr, "is on a read-only file system"
    else:  # a folder this (non-root) user may not write to (EACCES)
        read_only.chmod(0o555)
        try:
            code, _, err = run(capsys, *argv)
        finally:
            read_only.chmod(0o755)
        fragment = "permission denied"
    assert_clear_error(code, err, str(read_only), fragment, "--report" if stage == "gate" else "--out")
    assert list(read_only.iterdir()) == []


# ---------------------------------------------------------------- two trainings into one --out


def test_a_fold_another_process_trains_is_refused_and_the_run_resumes_once_it_is_gone(
    capsys: pytest.CaptureFixture[str], params: Path, features: Path, tmp_path: Path
) -> None:
    """Another `hjcag train` holds fold_1 of the same --out (here a process holding just its lock): this one trains
    fold_0, stops at fold_1 with one line naming it and the holder's pid, and resumes once the holder is gone (even
    killed with SIGKILL: the kernel drops the lock)."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from hjcag.train.unit_lock import "
         "training_unit\nwith training_unit(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)",
         str(out / "fold_1")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        argv = ("train", "--features", str(features), "--out", str(out), "--params", str(params))
        code, _, err = run(capsys, *argv)
        assert_clear_error(code, err, f"fold_1 of '{out}' is being trained by another process (pid {holder.pid})",
                           "another --out")
        assert (out / "fold_0" / "result.json").is_file() and not (out / "fold_1").exists()
        fold_0_done = (out / "fold_0" / "result.json").stat().st_mtime_ns
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert (out / "fold_0" / "result.json").stat().st_mtime_ns == fold_0_done  # kept, not trained again
    assert json.loads((out / "metrics.json").read_text())["n_folds"] == 2


# ---------------------------------------------------------------- --track --folds


@pytest.fixture()
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real SQLite MLflow store of this test only."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def _tracked_runs(uri: str) -> tuple[list[Any], list[Any]]:
    """(parent runs, fold runs sorted by name) of the demo experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("hjcag-demo").experiment_id])
    parents = [r for r in runs if r.data.tags.get("hjcag.kind") == "parent"]
    folds = sorted((r for r in runs if r.data.tags.get("hjcag.kind") == "fold"), key=lambda r: r.info.run_name)
    return parents, folds


def test_track_with_folds_trains_only_those_folds_and_the_run_bringing_the_last_completes_the_mlflow_run(
    capsys: pytest.CaptureFixture[str], params: Path, features: Path, tmp_path: Path, mlflow_store: str
) -> None:
    from mlflow import MlflowClient

    out = tmp_path / "run"
    three = edited(params, lambda d: d["profiles"]["demo"]["train"].update(folds=3))
    argv = ("train", "--features", str(features), "--out", str(out), "--params", str(three), "--track")
    code, _, err = run(capsys, *argv, "--folds", "1,7")  # a fold the protocol lacks: refused before MLflow
    assert_clear_error(code, err, "fold(s) [7] do not exist: the cv5 protocol has folds [0, 1, 2]")
    assert not (tmp_path / "mlruns.db").exists() and not list(out.glob("fold_*"))
    code, stdout, err = run(capsys, *argv, "--folds", "1")
    assert code == 0, err
    (parent,), (fold_1,) = _tracked_runs(mlflow_store)
    assert f"fold(s) [1] of 3 done in {out} (MLflow run {parent.info.run_id}" in stdout
    assert sorted(p.name for p in out.glob("fold_*")) == ["fold_1"] and not (out / "metrics.json").exists()
    assert fold_1.info.run_name == "fold_1" and fold_1.info.status == "FINISHED"
    assert parent.info.status == "FINISHED" and parent.data.tags["hjcag.complete"] == "false"
    assert parent.data.tags["hjcag.folds_done"] == "1 of 3" and "accuracy_mean" not in parent.data.metrics

    code, stdout, err = run(capsys, *argv, "--folds", "0,2")  # the last folds: the same parent run completes
    assert code == 0 and "over 3 fold(s)" in stdout, err
    (resumed,), folds = _tracked_runs(mlflow_store)
    assert resumed.info.run_id == parent.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags["hjcag.complete"] == "true" and "accuracy_mean" in resumed.data.metrics
    assert [f.info.run_name for f in folds] == ["fold_0", "fold_1", "fold_2"]
    assert all(f.info.status == "FINISHED" for f in folds) and folds[1].info.run_id == fold_1.info.run_id
    client = MlflowClient(tracking_uri=mlflow_store)
    assert [len(client.get_metric_history(f.info.run_id, "test_accuracy")) for f in folds] == [1, 1, 1]


# ---------------------------------------------------------------- fewer than two classes


@pytest.fixture()
def one_class(tmp_path: Path) -> Path:
    """Features whose every row has the same label."""
    return features_file(tmp_path / "one_class.npz", ["joy"], 40, 4)


@pytest.mark.parametrize("command", ["train", "tune", "ablate"])
def test_a_single_class_is_refused_before_any_training(
    capsys: pytest.CaptureFixture[str], params: Path, one_class: Path, tmp_path: Path, command: str
) -> None:
    out = tmp_path / "out"
    argv = [command, "--features", str(one_class), "--out", str(out), "--params", str(params)]
    code, _, err = run(capsys, *argv, *(["--no-track", "--no-profile"] if command == "tune" else []))
    assert_clear_error(code, err, f"'{one_class}' holds only one class (joy: 40 utterances)",
                       "a classifier needs at least 2 classes", "Check its 'label' key")
    assert not out.exists() or list(out.iterdir()) == []


def test_a_single_class_left_by_labels_is_refused_by_train_and_validate_features(
    capsys: pytest.CaptureFixture[str], params: Path, features: Path, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "train", "--features", str(features), "--out", str(tmp_path / "run"),
                       "--params", str(params), "--labels", "joy")
    assert_clear_error(code, err, "holds only one class (joy: 10 utterances) after --labels",
                       "Name at least two of its classes with --labels")
    assert list((tmp_path / "run").iterdir()) == []
    code, _, err = run(capsys, "validate-features", "--features", str(features), "--out", str(tmp_path / "val"),
                       "--labels", "joy")
    assert_clear_error(code, err, "holds only one class (joy: 10 utterances) after --labels")
    code, out, err = run(capsys, "validate-features", "--features", str(features), "--out", str(tmp_path / "val"),
                         "--labels", "joy,anger")
    assert code == 0 and "passed" in out and "class counts: anger 10, joy 10" in out, err


def test_validate_features_fails_a_single_class_file_and_says_why(
    capsys: pytest.CaptureFixture[str], one_class: Path, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "validate-features", "--features", str(one_class), "--out", str(tmp_path / "val"))
    assert_clear_error(code, err, "features validation failed", "holds only one class (joy: 40 utterances)",
                       "do not train on this file")
    report = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert report["success"] is False and report["class_counts"] == {"joy": 40}
    assert any("only one class" in f for f in report["table_failures"])


# ---------------------------------------------------------------- duplicate utterance ids in prepare


@pytest.fixture()
def duplicated(tmp_path: Path) -> Path:
    """A user's manifest where u1 names two different utterances (lines 2 and 4)."""
    path = tmp_path / "dup.csv"
    path.write_text("utterance_id,dialogue_id,speaker,text,label\nu1,d1,A,hello there,joy\nu2,d1,B,oh no,sadness\n"
                    "u1,d2,A,I am furious,anger\nu3,d2,B,fine,neutral\n")
    return path


def test_prepare_stops_at_duplicate_ids_under_policy_fail_naming_both_lines(
    capsys: pytest.CaptureFixture[str], params: Path, duplicated: Path, tmp_path: Path
) -> None:
    out = tmp_path / "prepare"
    code, _, err = run(capsys, "prepare", "--dataset", "manifest", "--source", str(duplicated), "--modalities", "t",
                       "--out", str(out), "--params", str(params))
    assert_clear_error(code, err, f"'u1' at {duplicated}:2 and {duplicated}:4", "--policy quarantine")
    assert not (out / "manifest.parquet").exists() and not (out / "prepare_report.json").exists()


@pytest.mark.parametrize("how", ["params", "option"])
def test_prepare_quarantines_every_copy_of_a_duplicate_id_under_policy_quarantine(
    capsys: pytest.CaptureFixture[str], params: Path, duplicated: Path, tmp_path: Path, how: str
) -> None:
    import pandas as pd

    out = tmp_path / "prepare"
    argv = ["prepare", "--dataset", "manifest", "--source", str(duplicated), "--modalities", "t", "--out", str(out)]
    if how == "params":
        argv += ["--params", str(edited(params, lambda d: d["validation"].update(policy="quarantine")))]
    else:
        argv += ["--params", str(params), "--policy", "quarantine"]
    code, stdout, err = run(capsys, *argv)
    assert code == 0 and "dropped: {'duplicate_id': 2}" in stdout, err
    assert sorted(pd.read_parquet(out / "manifest.parquet")["utterance_id"]) == ["u2", "u3"]
    dropped = json.loads((out / "prepare_report.json").read_text())["dropped"]
    assert [(d["utterance_id"], d["line"], d["reason"]) for d in dropped] == [("u1", 2, "duplicate_id"),
                                                                            ("u1", 4, "duplicate_id")]
    assert dropped[0]["detail"].startswith(f"quarantined: same utterance_id as {duplicated}:4")


# ---------------------------------------------------------------- validate on a raw CSV


def test_validate_refuses_a_raw_csv_in_one_line_that_says_to_prepare_it_and_validates_what_prepare_writes(
    capsys: pytest.CaptureFixture[str], params: Path, manifest: Path, tmp_path: Path
) -> None:
    """The README's manifest columns beyond utterance_id, label and the modalities' are optional: `prepare` fills
    them; `validate` checks what prepare wrote."""
    out = tmp_path / "validate"
    argv = ["--modalities", "t", "--params", str(params)]
    code, _, err = run(capsys, "validate", "--manifest", str(manifest), "--out", str(out), *argv)
    assert_clear_error(code, err, f"manifest '{manifest}' lacks column(s) ['session', 'audio_path'",
                       f"Run `hjcag prepare --dataset manifest --source {manifest} --modalities t --out DIR` first")
    assert list(out.iterdir()) == []

    code, _, err = run(capsys, "prepare", "--dataset", "manifest", "--source", str(manifest), "--out",
                       str(tmp_path / "prepare"), *argv)
    assert code == 0, err
    code, stdout, err = run(capsys, "validate", "--manifest", str(tmp_path / "prepare" / "manifest.parquet"),
                            "--out", str(out), *argv)
    assert code == 0 and "2 row(s), passed" in stdout, err
    assert (out / "manifest.valid.parquet").is_file()
