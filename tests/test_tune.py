"""`hjcag tune`: the objective reads each fold's training and validation rows only (never a test fold), studies
resume, pruned trials are recorded as such, the best values become a loadable profile, and mistakes are named."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from hjcag import params_file
from hjcag.cli import main
from hjcag.data.features_file import FeatureSet, load_features
from hjcag.errors import ConfigError, HjcagError
from hjcag.params import TunedOn, load_params, params_from_dict
from hjcag.registry.tracking import quiet_mlflow
from hjcag.train import tune
from hjcag.train.folds import make_folds
from process_fixtures import kill_when

REPO = Path(__file__).resolve().parents[1]
LABELS = ("ang", "hap", "sad")
DIMS = {"t": 6, "a": 5}
SEQ_LEN = 3


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny models: torch on one thread (tests/conftest.py)


def synthetic(n_groups: int = 16, per_group: int = 5, with_split: bool = False) -> FeatureSet:
    rng = np.random.default_rng(0)
    n = n_groups * per_group
    y = rng.integers(0, len(LABELS), size=n)
    features = {m: (rng.normal(size=(len(LABELS), d))[y][:, None, :] + rng.normal(size=(n, SEQ_LEN, d)))
                .astype(np.float32) for m, d in DIMS.items()}
    group = np.array([f"dia{i // per_group}" for i in range(n)])
    split = np.array([("train", "train", "dev", "test")[(i // per_group) % 4] for i in range(n)]) if with_split \
        else None
    return FeatureSet(utterance_id=np.array([f"u{i:03d}" for i in range(n)]), label=np.array(LABELS)[y],
                      group=group, features=features, split=split, label_names=LABELS)


def tiny_raw(**tune_section: Any) -> dict[str, Any]:
    return {
        "seed": 3,
        "model": {"seq_len": SEQ_LEN, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8},
        "train": {"folds": 2, "epochs": 2, "batch_size": 16, "lr": 1e-2, "patience": 2, "device": "cpu",
                  "num_threads": 1},
        "tune": {"trials": 2, "pruner": "none",
                 "space": {"train.lr": {"low": 1e-3, "high": 3e-2, "log": True},
                           "model.widths": {"choices": [4, 8]}, "train.batch_size": {"choices": [8, 16]}},
                 **tune_section},
    }


def run(fs: FeatureSet, tmp_path: Path, raw: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    params = params_from_dict(raw or tiny_raw())
    return tune.run_tuning(fs, params, fs.modalities, "hjcag", tmp_path / "out",
                           storage=f"sqlite:///{tmp_path / 'optuna.db'}", **kwargs)


def states(summary: dict[str, Any]) -> list[str]:
    return [t["state"] for t in summary["trials"]]


# ---------------------------------------------------------------- the objective sees no test fold


def test_tuning_on_holdout_never_reads_the_test_rows(tmp_path: Path) -> None:
    """The test rows hold NaN: one read of them would make a loss NaN and fail the trial."""
    fs = synthetic(with_split=True)
    test = np.asarray(fs.split) == "test"
    for x in fs.features.values():
        x[test] = np.nan
    raw = tiny_raw()
    raw["train"]["protocol"] = "holdout"
    summary = run(fs, tmp_path, raw)
    assert states(summary) == ["COMPLETE", "COMPLETE"]
    assert all(np.isfinite(t["value"]) and len(t["fold_scores"]) == 1 for t in summary["trials"])


def test_each_cv_fold_trains_on_its_training_part_and_scores_on_its_validation_split(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = synthetic()
    params = params_from_dict(tiny_raw())
    folds = make_folds(fs, "cv5", 2, params.train.val_fraction, params.seed)
    parts: list[tuple[set[str], set[str]]] = []
    real = tune.training_parts

    def spy(fs_: FeatureSet, fold: Any) -> tuple[FeatureSet, FeatureSet]:
        train, val = real(fs_, fold)
        parts.append((set(train.utterance_id), set(val.utterance_id)))
        return train, val

    monkeypatch.setattr(tune, "training_parts", spy)
    run(fs, tmp_path, trials=1)
    assert len(parts) == len(folds) == 2
    for (train, val), fold in zip(parts, folds, strict=True):
        ids = fs.utterance_id
        assert train == set(ids[fold.train_idx]) and val == set(ids[fold.val_idx])
        assert not (train | val) & set(ids[fold.test_idx])


# ---------------------------------------------------------------- budget, resume, pruning


def test_a_study_resumes_and_only_tops_the_budget_up(tmp_path: Path) -> None:
    fs = synthetic()
    first = run(fs, tmp_path)
    assert states(first) == ["COMPLETE", "COMPLETE"]
    again = run(fs, tmp_path, trials=3)
    assert [t["number"] for t in again["trials"]] == [0, 1, 2]
    assert again["trials"][:2] == first["trials"][:2]  # the first two were not re-run
    assert run(fs, tmp_path, trials=3)["trials"] == again["trials"]  # budget reached: nothing to do
    study = json.loads((tmp_path / "out" / tune.STUDY_FILE).read_text())
    best = max(study["trials"], key=lambda t: t["value"])  # val_weighted_f1 is maximised
    assert study["finished"] == 3 and study["best"]["trial"] == best["number"]
    assert study["best"]["value"] == best["value"] and study["best"]["params"] == best["params"]


def test_a_study_started_with_another_space_is_not_mixed_into(tmp_path: Path) -> None:
    fs = synthetic()
    run(fs, tmp_path, trials=1)
    raw = tiny_raw()
    raw["tune"]["space"]["model.dropout"] = {"low": 0.0, "high": 0.5}
    with pytest.raises(ConfigError, match="--study NEW_NAME"):
        run(fs, tmp_path, raw, trials=2)


def test_pruned_trials_stop_early_and_are_recorded_as_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    monkeypatch.setattr(optuna.Trial, "should_prune", lambda self: self.number > 0)
    raw = tiny_raw(trials=3, pruner="median")
    summary = run(synthetic(), tmp_path, raw)
    assert states(summary) == ["COMPLETE", "PRUNED", "PRUNED"]
    assert [len(t["fold_scores"]) for t in summary["trials"]] == [2, 0, 0]  # stopped in the first epoch of fold 1
    assert summary["best"]["trial"] == 0


def test_a_study_without_any_complete_trial_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    monkeypatch.setattr(optuna.Trial, "should_prune", lambda self: True)
    with pytest.raises(HjcagError, match="no complete trial"):
        run(synthetic(), tmp_path, tiny_raw(trials=1, pruner="median"))
    assert json.loads((tmp_path / "out" / tune.STUDY_FILE).read_text())["trials"][0]["state"] == "PRUNED"


def test_modality_dropout_and_class_weights_are_tuned_and_a_misspelled_key_is_named(tmp_path: Path) -> None:
    raw = tiny_raw(trials=1)
    raw["tune"]["space"]["train.modality_dropout"] = {"low": 0.0, "high": 0.4}
    raw["tune"]["space"]["train.class_weights"] = {"choices": ["none", "balanced"]}
    summary = run(synthetic(), tmp_path, raw)
    assert {"train.modality_dropout", "train.class_weights"} <= set(summary["best"]["params"])
    raw["tune"]["space"]["train.modality_drop"] = {"low": 0.0, "high": 0.4}
    with pytest.raises(ConfigError, match=r"did you mean train\.modality_dropout"):
        run(synthetic(), tmp_path / "typo", raw)


def test_conversation_context_and_its_window_are_tuned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = synthetic()
    fs.order = np.arange(len(fs), dtype=np.float64) % 5  # groups of 5 utterances: their turns 0..4
    raw = tiny_raw(trials=3)
    raw["tune"]["space"] = {"model.context": {"choices": ["gru", "transformer"]},
                            "model.context_window": {"choices": [1, 3]}}
    trained: list[tuple[str, int]] = []  # what each fold of each trial was really trained with
    real = tune.fit_model

    def spy(model_name: str, train: FeatureSet, val: FeatureSet, model_cfg: Any, *args: Any, **kwargs: Any) -> Any:
        trained.append((model_cfg.context, model_cfg.context_window))
        return real(model_name, train, val, model_cfg, *args, **kwargs)

    monkeypatch.setattr(tune, "fit_model", spy)
    summary = run(fs, tmp_path, raw)
    assert [t["state"] for t in summary["trials"]] == ["COMPLETE"] * 3
    tried = [(t["params"]["model.context"], t["params"]["model.context_window"]) for t in summary["trials"]]
    assert all(set(t["params"]) == {"model.context", "model.context_window"} for t in summary["trials"])
    assert all(c in ("gru", "transformer") and w in (1, 3) for c, w in tried)
    assert trained == [values for values in tried for _fold in range(2)]  # each trial's values reached its 2 folds


def test_with_a_probe_blend_a_fold_scores_what_it_delivers_the_blend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A learning rate of ~0 leaves the model at its random start while the probe reads the class means, so on
    every fold the blend's validation weighted F1 is above the model's alone: the trial must score the blend."""
    raw = tiny_raw(trials=1)
    raw["model"]["probe_blend"] = True
    raw["tune"]["space"] = {"train.lr": {"low": 1e-9, "high": 2e-9, "log": True}}
    fitted: list[Any] = []
    real = tune.fit_model

    def spy(*args: Any, **kwargs: Any) -> Any:
        fitted.append(result := real(*args, **kwargs))
        return result

    monkeypatch.setattr(tune, "fit_model", spy)
    summary = run(synthetic(), tmp_path, raw)
    delivered = [f.probe["val_weighted_f1"] for f in fitted]
    assert len(delivered) == 2 and all(d["blend"] > d["model"] for d in delivered)  # the case tells them apart
    assert summary["trials"][0]["fold_scores"] == pytest.approx([d["blend"] for d in delivered], abs=0)


@pytest.mark.parametrize(("space", "fragment"), [
    ({"lr": {"low": 1, "high": 2}}, "SECTION.FIELD"),
    ({"gates.min_accuracy": {"low": 0, "high": 1}}, "SECTION.FIELD"),
    ({"train.lr": {"low": 2, "high": 1}}, "above high"),
    ({"train.lr": {"low": 0, "high": 1, "log": True}}, "low > 0"),
    ({"train.lr": [1, 2]}, "choices"),
    ({"model.widths": {"choices": []}}, "non-empty"),
    ({"train.lr": {"low": 1, "high": 2, "scale": "log"}}, "unknown key"),
])
def test_a_bad_space_entry_is_named(space: dict[str, Any], fragment: str) -> None:
    raw = tiny_raw()
    raw["tune"]["space"] = space
    with pytest.raises(ConfigError, match=fragment):
        params_from_dict(raw)


def test_scalar_widths_go_to_every_modality() -> None:
    params = params_from_dict(tiny_raw())
    tuned = tune.apply_values(params, {"model.widths": 16, "train.lr": 0.01})
    assert tuned.model.widths == {"t": 16, "a": 16, "v": 16} and tuned.train.lr == 0.01


# ---------------------------------------------------------------- the profile


def test_the_profile_is_added_to_params_yaml_keeping_every_comment(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text()
    path.write_text(original)
    tuned = {"model": {"widths": {"t": 128, "a": 128, "v": 128}, "dropout": 0.25}, "train": {"lr": 0.002}}
    params_file.write_profile(path, "demo-tuned", "demo", tuned, comment="study s, trial 3")
    text = path.read_text()
    assert text.startswith(original)  # `profiles:` is the file's last key: the block goes after it
    params = load_params(path, "demo-tuned")
    demo = load_params(path, "demo")
    assert params.model.widths == {"t": 128, "a": 128, "v": 128} and params.model.dropout == 0.25
    assert params.train.lr == 0.002 and params.train.epochs == demo.train.epochs  # the rest is the base profile's
    assert params.gates == demo.gates and params.features == demo.features
    assert set(yaml.safe_load(text)["profiles"]["demo-tuned"]) >= {"model", "features", "validation", "train", "gates"}

    params_file.write_profile(path, "demo-tuned", "demo", {"train": {"lr": 0.001}})  # again: replaced, not duplicated
    again = path.read_text()
    assert again.count("demo-tuned:") == 1 and again.count("# written by hjcag tune") == 1
    assert load_params(path, "demo-tuned").train.lr == 0.001 and again.startswith(original)


def test_the_profile_block_goes_inside_profiles_when_other_keys_follow(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("profile: a  # the default\nprofiles:\n    a:\n        train: {lr: 0.1}\n\n# trailing section\n"
                    "seed: 5\n")
    params_file.write_profile(path, "a-tuned", "a", {"train": {"lr": 0.5}})
    text = path.read_text()
    assert "# the default" in text and text.rstrip().endswith("# trailing section\nseed: 5")
    params = load_params(path, "a-tuned")
    assert params.train.lr == 0.5 and params.seed == 5


def test_a_tuned_on_record_is_checked_like_every_params_value() -> None:
    raw = tiny_raw()
    raw["profiles"] = {"x-tuned": {"tuned_on": {"protocol": "loso", "rows": "abc"}}}
    with pytest.raises(ConfigError, match=r"profiles\.x-tuned\.tuned_on\.protocol is 'loso'; it must be one of "
                                          r"\['cv5', 'holdout'\] \(also check profiles\.x-tuned\.tuned_on\.rows\)"):
        params_from_dict(raw, "x-tuned")
    raw["profiles"]["x-tuned"]["tuned_on"] = {"protocol": "cv5", "study": "s", "utterances": 3, "rows": ["a", "b"]}
    assert params_from_dict(raw, "x-tuned").tuned_on == TunedOn("cv5", "s", 3, ("a", "b"))
    assert params_from_dict(tiny_raw()).tuned_on is None


# ---------------------------------------------------------------- the command


@pytest.fixture()
def cli_files(tmp_path: Path) -> tuple[Path, Path]:
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    demo = doc["profiles"]["demo"]
    demo["model"] = {"seq_len": SEQ_LEN, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8}
    demo["train"] = {"folds": 2, "epochs": 2, "batch_size": 16, "lr": 1e-2, "patience": 2, "device": "cpu",
                     "num_threads": 1}
    doc["tune"]["space"] = {"train.lr": {"low": 1e-3, "high": 3e-2, "log": True},
                            "model.dropout": {"low": 0.0, "high": 0.5}, "train.class_weights": {"choices": ["none"]}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    return params, save_for_cli(tmp_path / "features.npz", synthetic())


def save_for_cli(path: Path, fs: FeatureSet, modalities: tuple[str, ...] = ("t", "a")) -> Path:
    """`fs` as a features file of the demo profile's labels (and split, when it has one)."""
    demo_labels = dict(zip(LABELS, yaml.safe_load((REPO / "params.yaml").read_text())["datasets"]["demo"]["labels"],
                           strict=False))
    names = {"t": "text", "a": "audio"}
    extra = {} if fs.split is None else {"split": fs.split}
    np.savez(path, utterance_id=fs.utterance_id, label=np.array([demo_labels[x] for x in fs.label]), group=fs.group,
             **{names[m]: fs.features[m] for m in modalities}, **extra)
    return path


def test_the_command_tracks_trials_in_mlflow_and_writes_a_profile_train_uses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        cli_files: tuple[Path, Path]) -> None:
    from mlflow import MlflowClient

    params, features = cli_files
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlruns.db'}"
    (tmp_path / "mlflow").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "tune"
    argv = ["tune", "--features", str(features), "--out", str(out), "--trials", "2", "--params", str(params),
            "--profile", "demo"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 complete" in printed and "--profile demo-tuned" in printed
    assert (tmp_path / "mlflow" / "optuna.db").exists()  # the study lives beside the MLflow store

    best = yaml.safe_load((out / tune.BEST_FILE).read_text())
    tuned = load_params(params, "demo-tuned")
    assert tuned.train.lr == pytest.approx(best["overrides"]["train"]["lr"])
    assert tuned.model.dropout == pytest.approx(best["overrides"]["model"]["dropout"])

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("hjcag-demo").experiment_id])
    kinds = sorted(r.data.tags.get("hjcag.kind") for r in runs)
    assert kinds == ["tune", "tune-trial", "tune-trial"]
    (parent,) = [r for r in runs if r.data.tags["hjcag.kind"] == "tune"]
    trials = [r for r in runs if r.data.tags["hjcag.kind"] == "tune-trial"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    assert all(r.info.status == "FINISHED" and "val_weighted_f1" in r.data.metrics for r in trials)
    assert {"train.lr", "model.dropout"} <= set(trials[0].data.params)

    assert main([*argv, "--trials", "3"]) == 0  # resumes: one more trial, same parent run
    runs = client.search_runs([parent.info.experiment_id])
    assert len(runs) == 4 and sum(r.data.tags.get("hjcag.kind") == "tune" for r in runs) == 1


def test_command_mistakes_end_in_one_clear_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_files: tuple[Path, Path]) -> None:
    params, features = cli_files
    base = ["tune", "--features", str(features), "--out", str(tmp_path / "t"), "--no-track", "--params",
            str(params), "--storage", f"sqlite:///{tmp_path / 'o.db'}"]
    assert main([*base, "--trials", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "budget" in err and "Traceback" not in err

    doc = yaml.safe_load(params.read_text())
    doc["tune"]["space"]["optimizer.lr"] = {"low": 0.1, "high": 0.2}
    params.write_text(yaml.safe_dump(doc))
    assert main([*base, "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "optimizer.lr" in err and "SECTION.FIELD" in err


# ---------------------------------------------------------------- a tuned profile never tests on its own labels


def test_a_tuned_profile_cannot_report_as_test_the_labels_it_was_tuned_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_files: tuple[Path, Path]) -> None:
    params, _ = cli_files
    fs = synthetic(with_split=True)
    features = save_for_cli(tmp_path / "split.npz", fs)
    tune_argv = ["tune", "--features", str(features), "--out", str(tmp_path / "tune"), "--trials", "1", "--no-track",
                 "--storage", f"sqlite:///{tmp_path / 'o.db'}", "--params", str(params), "--profile", "demo"]

    def tuned_on() -> dict[str, Any]:
        return yaml.safe_load(params.read_text())["profiles"]["demo-tuned"]["tuned_on"]

    def train(data: Path, protocol: str, command: str = "train") -> tuple[int, str]:
        out = tmp_path / f"{command}-{data.stem}-{protocol}"
        code = main([command, "--features", str(data), "--out", str(out), "--params", str(params),
                     "--profile", "demo-tuned", "--protocol", protocol])
        err = capsys.readouterr().err
        if code != 0:
            assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
            assert not any(p.is_file() for p in out.rglob("*")), "refused, yet something was written"
        return code, err

    assert main([*tune_argv, "--protocol", "cv5"]) == 0
    record = tuned_on()
    assert record["protocol"] == "cv5" and record["utterances"] == len(fs) and record["study"] == "demo-hjcag-ta"
    on_file = load_features(features, seq_len=SEQ_LEN)  # the rows as tuned: the file's ids and (demo) labels
    assert record["rows"] == sorted(tune.row_hashes(on_file).tolist())[:tune.ROW_SAMPLE]
    assert load_params(params, "demo-tuned").tuned_on is not None  # the params schema takes the record
    capsys.readouterr()
    # cv5 tuning picked on validation rows of every part: cv5 tests them, and so does holdout (its test split)
    for protocol in ("cv5", "holdout"):
        code, err = train(features, protocol)
        assert code == 2 and f"was tuned under cv5 (study 'demo-hjcag-ta') on rows that '{features}' holds" in err
        assert f"protocol '{protocol}' would report as test" in err and "`hjcag tune --protocol holdout`" in err
    code, err = train(features, "cv5", "ablate")  # the same guard
    assert code == 2 and "was tuned under cv5" in err
    # the same utterances with other features (text only, the first half of the rows) hold the same labels
    half = save_for_cli(tmp_path / "half.npz", fs.subset(np.arange(len(fs) // 2)), modalities=("t",))
    code, err = train(half, "cv5")
    assert code == 2 and "sampled rows" in err

    assert main([*tune_argv, "--protocol", "holdout", "--study", "on-dev"]) == 0
    assert tuned_on()["protocol"] == "holdout"
    capsys.readouterr()
    code, err = train(features, "cv5")  # holdout tuning picked on dev rows, which cv5 would test on
    assert code == 2 and "was tuned under holdout" in err and "Train with --protocol holdout" in err
    assert train(features, "holdout")[0] == 0  # dev picked the values, test is reported once

    other = synthetic(n_groups=12)  # another dataset: its rows were never tuned on
    other.utterance_id = np.char.add("other-", other.utterance_id)
    assert train(save_for_cli(tmp_path / "other.npz", other), "cv5")[0] == 0


# ---------------------------------------------------------------- a trial killed with its process


RUNNING_WITH_A_RUN = """SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a
                        ON a.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND a.key = 'mlflow_run_id'"""


def running_trial(db: Path) -> tuple[int, str] | None:
    """A trial RUNNING in the Optuna store `db` that has its MLflow run (so it is mid-trial), if any."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute(RUNNING_WITH_A_RUN).fetchone()
    except sqlite3.OperationalError:  # the tables are not there yet, or the writer holds the lock
        return None
    return None if row is None else (int(row[0]), json.loads(row[1]))


def test_a_trial_killed_with_its_process_is_marked_failed_when_the_study_resumes(
        tmp_path: Path, cli_files: tuple[Path, Path]) -> None:
    """A real `hjcag tune` process, SIGKILLed mid-trial; the same command again marks that trial FAILED in Optuna,
    study.json and MLflow instead of leaving it RUNNING forever."""
    import optuna
    from mlflow import MlflowClient

    params, features = cli_files
    doc = yaml.safe_load(params.read_text())
    doc["profiles"]["demo"]["train"].update(epochs=10, patience=10)  # a trial lasts long enough to be caught in it
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    command = [sys.executable, "-m", "hjcag.cli", "tune", "--features", str(features), "--out", str(tmp_path / "tune"),
               "--params", str(params), "--profile", "demo", "--no-profile"]
    db = tmp_path / "optuna.db"  # beside the MLflow store
    proc = subprocess.Popen([*command, "--trials", "50"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    number, run_id = kill_when(proc, lambda: running_trial(db), 240, "a trial running with its MLflow run")
    study = optuna.load_study(study_name="demo-hjcag-ta", storage=f"sqlite:///{db}")
    assert study.trials[number].state.name == "RUNNING"  # what kill -9 leaves behind
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)

    resumed = subprocess.run([*command, "--trials", str(finished + 1)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"trial(s) [{number}] were left RUNNING by a process that died; marked FAILED" in resumed.stderr

    trials = optuna.load_study(study_name="demo-hjcag-ta", storage=f"sqlite:///{db}").trials
    assert trials[number].state.name == "FAIL" and len(trials) == number + 2  # and one new trial ran
    assert not [t.number for t in trials if t.state.name == "RUNNING"]
    rows = json.loads((tmp_path / "tune" / tune.STUDY_FILE).read_text())["trials"]
    assert rows[number]["state"] == "FAIL" and "ended mid-trial" in rows[number]["error"]
    with quiet_mlflow():
        client = MlflowClient(tracking_uri=uri)
        killed = client.get_run(run_id)
        runs = client.search_runs([killed.info.experiment_id])
    assert killed.info.status == "FAILED" and killed.data.tags["hjcag.trial_state"] == "FAIL"
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags["hjcag.kind"] == "tune"]
    assert parent.info.status == "FINISHED" and len(runs) == len(trials) + 1


def test_only_a_trial_owner_whose_process_has_ended_reads_as_gone() -> None:
    with tune.trial_owner() as token:
        assert not tune.owner_is_gone(token)  # its process is alive (here: this one): its trials are left alone
    assert tune.owner_is_gone(token)  # the lock is free: a trial still naming it has no process left
    assert not tune.owner_is_gone("another-machine-1-abc")  # no lock file here: Optuna's heartbeat judges it
