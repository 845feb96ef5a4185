"""The `hjcag` command line: user mistakes end in one clear line and exit code 2, never a traceback; the
train (fold by fold) -> evaluate -> gate commands chain on a tiny features file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

import hjcag.cli
import hjcag.params
from hjcag.cli import COMMANDS, build_parser, main
from params_fixtures import features_file

REPO = Path(__file__).resolve().parents[1]
LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clear_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_a_missing_features_file_is_named(capsys: pytest.CaptureFixture[str], params: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "train", "--features", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "r"),
                       "--params", str(params))
    assert_clear_error(code, err, "nope.npz")
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_an_unknown_modality_and_an_unknown_profile_are_named(
    capsys: pytest.CaptureFixture[str], params: Path, features: Path, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "train", "--features", str(features), "--modalities", "t,x", "--out",
                       str(tmp_path / "r"), "--params", str(params))
    assert_clear_error(code, err, "'x'")
    code, _, err = run(capsys, "gate", "--run", str(tmp_path), "--params", str(params), "--profile", "imdb")
    assert_clear_error(code, err, "imdb", "demo")


def test_package_refuses_a_file_that_is_not_a_register_record(
    capsys: pytest.CaptureFixture[str], params: Path, tmp_path: Path
) -> None:
    record = tmp_path / "registered.json"
    record.write_text("{\"unexpected\": 1}")
    code, _, err = run(capsys, "package", "--record", str(record), "--out", str(tmp_path / "store"),
                       "--params", str(params))
    assert_clear_error(code, err, "registered.json", "hjcag register --record")


def test_folds_trained_apart_then_aggregated_evaluated_and_gated(
    capsys: pytest.CaptureFixture[str], params: Path, features: Path, tmp_path: Path
) -> None:
    run_dir, common = tmp_path / "run", ["--features", str(features), "--params", str(params)]
    code, out, _ = run(capsys, "train", *common, "--out", str(run_dir), "--folds", "1")
    assert code == 0 and "fold(s) [1] of 2 done" in out and not (run_dir / "metrics.json").exists()
    code, out, _ = run(capsys, "train", *common, "--out", str(run_dir), "--folds", "0")
    assert code == 0
    code, out, _ = run(capsys, "train", *common, "--out", str(run_dir))  # both folds there: aggregates only
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert code == 0 and "over 2 fold(s)" in out and len(metrics["folds"]) == 2

    code, out, _ = run(capsys, "evaluate", "--run", str(run_dir), "--out", str(tmp_path / "eval"))
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert code == 0 and summary["accuracy"] == pytest.approx(metrics["accuracy"]["mean"])
    predictions = (tmp_path / "eval" / "predictions.csv").read_text()
    assert predictions.startswith("utterance_id,group,fold,seed,actual,predicted")

    strict = yaml.safe_load(params.read_text())
    strict["profiles"]["demo"]["gates"] = {"min_accuracy": 1.0, "min_weighted_f1": 0.0}  # unreachable here
    strict_path = tmp_path / "strict.yaml"
    strict_path.write_text(yaml.safe_dump(strict))
    code, _, err = run(capsys, "gate", "--run", str(run_dir), "--params", str(strict_path),
                       "--report", str(tmp_path / "gate.json"))
    assert_clear_error(code, err, "min_accuracy", "short by", "nothing was registered")
    assert json.loads((tmp_path / "gate.json").read_text())["passed"] is False


def test_finetune_text_writes_a_model_that_features_can_use(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import pandas as pd
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no hub: the text model falls back to MiniLM
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["profiles"]["demo"]["features"] = {"text_model": "hjcag-tests/no-such-model", "device": "cpu",
                                           "finetune": {"repeats": 1, "batch_size": 4, "epochs": 1, "max_steps": 2}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    texts = ["I love this!", "This is awful.", "Great news!", "I hate waiting.", "Wonderful day.", "Terrible."]
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"utterance_id": [f"u{i}" for i in range(6)], "text": texts, "label": ["joy", "anger"] * 3,
                  "split": ["train"] * 4 + ["dev", "test"]}).to_parquet(manifest)

    code, out, _ = run(capsys, "finetune-text", "--manifest", str(manifest), "--out", str(tmp_path / "ft"),
                       "--params", str(params))
    assert code == 0 and "features.text_model" in out
    summary = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert summary["labels"] == LABELS and summary["train_rows"] == 4 and summary["dev_rows"] == 1

    code, _, err = run(capsys, "finetune-text", "--manifest", str(tmp_path / "missing.parquet"), "--out",
                       str(tmp_path / "ft2"), "--params", str(params))
    assert_clear_error(code, err, "missing.parquet", "hjcag prepare")


@pytest.fixture()
def own_labels(tmp_path: Path) -> Path:
    """A features file of a user's own three-class data (labels no params.yaml profile names)."""
    return features_file(tmp_path / "own.npz", ("positive", "negative", "mixed"), 60, 4, seed=1)


def test_a_profile_without_labels_takes_them_from_the_data(capsys: pytest.CaptureFixture[str],
                                                           caplog: pytest.LogCaptureFixture, params: Path,
                                                           own_labels: Path, tmp_path: Path) -> None:
    small = yaml.safe_load(params.read_text())["profiles"]["demo"]
    doc = yaml.safe_load(params.read_text())
    doc["profiles"]["generic"].update(model=small["model"], train=small["train"])
    params.write_text(yaml.safe_dump(doc))
    code, _, err = run(capsys, "train", "--features", str(own_labels), "--out", str(tmp_path / "r"),
                       "--params", str(params), "--profile", "generic")
    assert code == 0, err
    assert "the labels come from the data, in this order: mixed, negative, positive" in caplog.text
    assert json.loads((tmp_path / "r" / "run.json").read_text())["identity"]["labels"] == [
        "mixed", "negative", "positive"]
    assert json.loads((tmp_path / "r" / "model_config.json").read_text())["label_names"] == [
        "mixed", "negative", "positive"]

    # --labels fixes the order, or trains on a subset of the classes
    code, _, err = run(capsys, "train", "--features", str(own_labels), "--out", str(tmp_path / "r2"),
                       "--params", str(params), "--profile", "generic", "--labels", "positive,negative")
    assert code == 0, err
    assert "leaving out 20 utterance(s) of class(es) ['mixed']" in caplog.text
    metrics = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert metrics["labels"] == ["positive", "negative"] and metrics["n_utterances"] == 40


def test_labels_that_disagree_with_the_data_are_a_clear_error(capsys: pytest.CaptureFixture[str], params: Path,
                                                              own_labels: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "train", "--features", str(own_labels), "--out", str(tmp_path / "r"),
                       "--params", str(params), "--labels", "positive,happy")
    assert_clear_error(code, err, "--labels names ['happy']", "'mixed', 'negative', 'positive'")
    # the demo profile names MELD's seven emotions: a file of other labels is refused, saying what to do
    code, _, err = run(capsys, "train", "--features", str(own_labels), "--out", str(tmp_path / "r2"),
                       "--params", str(params))
    assert_clear_error(code, err, "not in the dataset's label set", "--labels", "--profile generic")


CLI_ONLY_CHOICES = {("registry", "action")}  # sets of choices that only the command line has


def test_every_choice_list_of_the_cli_is_a_set_declared_in_params() -> None:
    """Adding a model, protocol or policy to hjcag.params reaches the CLI: no command repeats a set of choices."""
    declared = {value for name, value in vars(hjcag.params).items() if name.isupper() and isinstance(value, tuple)}
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    checked = 0
    for command, parser in commands.items():
        for action in parser._actions:
            if action.choices is None or (command, action.dest) in CLI_ONLY_CHOICES:
                continue
            assert tuple(action.choices) in declared, f"hjcag {command} {action.option_strings}: {action.choices}"
            checked += 1
    assert checked >= 9


def test_every_command_is_registered_beside_its_function_in_pipeline_order() -> None:
    """Each `cmd_*` of hjcag.cli is one `@command` (its options beside it); `hjcag --help` lists them in this order."""
    handlers = {name: f for name, f in vars(hjcag.cli).items() if name.startswith("cmd_") and callable(f)}
    assert sorted(c.run.__name__ for c in COMMANDS) == sorted(handlers)
    assert all(c.run.__name__ == "cmd_" + c.name.replace("-", "_") for c in COMMANDS)
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(commands) == [c.name for c in COMMANDS] == [
        "demo", "demo-data", "standin-features", "prepare", "features", "finetune-text", "validate",
        "validate-features", "train", "tune", "ablate", "evaluate", "gate", "register", "registry", "package",
        "serve-local", "predict"]


def test_every_option_of_every_command_says_what_it_takes() -> None:
    """`hjcag COMMAND --help` explains each option: none is listed with its name alone."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    bare = [f"hjcag {command} {action.option_strings[-1]}" for command, parser in commands.items()
            for action in parser._actions if action.option_strings and not action.help]
    assert bare == []
    assert sum(len(parser._actions) for parser in commands.values()) > 100  # the check read every command's options


def test_version_is_the_one_the_package_and_its_install_state(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"hjcag {hjcag.__version__}"
    assert importlib.metadata.version("hjcag") == hjcag.__version__  # pyproject reads it from hjcag.__version__
