"""Table 4 ablation: every configuration runs on the same folds, the table has every row, re-runs skip work; it
passes the same leak guard as train and tune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hjcag.artifacts import features_meta_path
from hjcag.cli import main
from hjcag.data.features_file import FeatureSet
from hjcag.model.table4 import CONTEXT_ROWS, TABLE4
from hjcag.params import Params, params_from_dict
from hjcag.train.ablate import ablation_markdown, run_ablation

REPO = Path(__file__).resolve().parents[1]
LABELS = ("neutral", "joy", "anger")


DIMS = {"t": 5, "a": 4, "v": 3}


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny models: torch on one thread (tests/conftest.py)


def synthetic(modalities: tuple[str, ...] = ("t", "a", "v"), n_groups: int = 12, per_group: int = 4) -> FeatureSet:
    rng = np.random.default_rng(1)
    n = n_groups * per_group
    y = rng.integers(0, len(LABELS), size=n)
    features = {
        m: (rng.normal(size=(len(LABELS), DIMS[m]))[y][:, None, :] + rng.normal(size=(n, 4, DIMS[m]))).astype(
            np.float32)
        for m in modalities
    }
    return FeatureSet(
        utterance_id=np.array([f"u{i}" for i in range(n)]),
        label=np.array(LABELS)[y],
        group=np.array([f"d{i // per_group}" for i in range(n)]),
        features=features,
        label_names=LABELS,
    )


def tiny_params(dataset: str = "demo", context: str = "none") -> Params:
    return params_from_dict({
        "seed": 3,
        "dataset": dataset,
        "model": {"seq_len": 4, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8,
                  "context": context},
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-2, "patience": 2, "folds": 2, "device": "cpu"},
    })


def test_ablation_runs_every_table4_row_on_the_same_folds(tmp_path: Path) -> None:
    fs = synthetic()
    summary = run_ablation(fs, tiny_params(), tmp_path, quiet=True)
    assert [r["slug"] for r in summary["rows"]] == [row.slug for row in TABLE4]
    # without the utterance order there is no conversation context: those rows are skipped, saying why
    assert {s["slug"]: s["reason"] for s in summary["skipped"]} == {
        row.slug: "the features carry no utterance order (key 'order')" for row in CONTEXT_ROWS}

    table = (tmp_path / "ablation.md").read_text()
    for row in summary["rows"]:
        metrics = json.loads((tmp_path / row["slug"] / "metrics.json").read_text())
        acc, wf1 = metrics["accuracy"], metrics["weighted_f1"]
        assert f"| {row['label']} | {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} | " \
               f"{100 * wf1['mean']:.2f} ± {100 * wf1['std']:.2f} |" in table
        assert metrics["modalities"] == row["modalities"]
    assert "Acc (%)" in table and "W-F1 (%)" in table
    assert json.loads((tmp_path / "ablation.json").read_text()) == summary

    # The component switches reached the model, and every configuration used the same folds.
    no_gate = json.loads((tmp_path / "no_gate" / "model_config.json").read_text())
    assert no_gate["model_config"]["gate"] is False
    folds = {json.dumps(json.loads((tmp_path / r["slug"] / "folds.json").read_text())) for r in summary["rows"]}
    assert len(folds) == 1

    # Re-running skips every finished configuration.
    before = {r["slug"]: (tmp_path / r["slug"] / "metrics.json").stat().st_mtime_ns for r in summary["rows"]}
    calls: list[tuple[str, int, int]] = []
    again = run_ablation(fs, tiny_params(), tmp_path, quiet=True, on_epoch=lambda s, f, e, m: calls.append((s, f, e)))
    assert calls == []
    assert again == summary
    assert before == {r["slug"]: (tmp_path / r["slug"] / "metrics.json").stat().st_mtime_ns for r in summary["rows"]}


def test_configurations_needing_missing_modalities_are_skipped_with_a_note(tmp_path: Path) -> None:
    fs = synthetic(modalities=("t", "a"))
    calls: list[str] = []
    summary = run_ablation(fs, tiny_params(), tmp_path, quiet=True,
                           on_epoch=lambda slug, f, e, m: calls.append(slug))
    assert [r["slug"] for r in summary["rows"]] == ["t", "a", "ta"]
    assert set(calls) == {"t", "a", "ta"}
    skipped = {s["slug"]: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == {"full", "no_bimodal", "no_trimodal", "no_gate", "v", "tv", "av",
                            *(row.slug for row in CONTEXT_ROWS)}
    assert "visual" in skipped["full"]
    table = (tmp_path / "ablation.md").read_text()
    assert "| Visual | skipped | skipped |" in table
    assert "Visual: the features have no visual modality." in table


@pytest.mark.parametrize("setting", ["none", "auto"])  # auto (the dataset profiles'): paper rows stay context-free
def test_context_rows_run_on_the_same_folds_with_every_modality_of_the_features(setting: str, tmp_path: Path) -> None:
    fs = synthetic(modalities=("t", "a"))
    fs.order = np.arange(len(fs), dtype=np.float64) % 4  # dialogues of 4 turns
    summary = run_ablation(fs, tiny_params(context=setting), tmp_path, quiet=True)
    for row in (r for r in summary["rows"] if not r["slug"].startswith("context_")):
        assert json.loads((tmp_path / row["dir"] / "model_config.json").read_text())["model_config"]["context"] \
            == "none", row["slug"]
    context = {r["slug"]: r for r in summary["rows"] if r["slug"].startswith("context_")}
    assert set(context) == {row.slug for row in CONTEXT_ROWS}
    assert all(r["modalities"] == ["t", "a"] for r in context.values())
    for row in CONTEXT_ROWS:
        config = json.loads((tmp_path / row.slug / "model_config.json").read_text())["model_config"]
        assert (config["context"], config["context_direction"]) == (row.model_overrides["context"],
                                                                    row.model_overrides["context_direction"])
    folds = {(tmp_path / r["slug"] / "folds.json").read_text() for r in summary["rows"]}
    assert len(folds) == 1
    table = (tmp_path / "ablation.md").read_text()
    assert "| HJCAG + context (gru, bidirectional: offline only) |" in table and "Context rows (not in the paper)" \
        in table
    # each context row is compared with its warm start's first stage: the paper's model on the same modalities (here
    # the Text + Audio row, as `full` is where the features have all three), fold by fold
    paper_row = next(r for r in summary["rows"] if r["slug"] == "ta")
    paper_folds = json.loads((tmp_path / "ta" / "metrics.json").read_text())["folds"]
    for row in context.values():
        comparison = row["context_comparison"]
        assert comparison["n"] == len(paper_folds)
        for key in ("accuracy", "weighted_f1", "macro_f1"):
            assert comparison["without_context"][key]["mean"] == pytest.approx(paper_row[key]["mean"], abs=1e-12)
            assert comparison["difference"][key]["mean"] == pytest.approx(
                row[key]["mean"] - paper_row[key]["mean"], abs=1e-12)
        kept, n = comparison["kept"], comparison["n"]
        gain = comparison["difference"]["weighted_f1"]
        assert (f"| {row['label']} | {kept} of {n} | " in table
                and f"{100 * gain['mean']:+.2f} ± {100 * gain['se']:.2f}" in table)


@pytest.mark.parametrize("dataset, shown", [("iemocap", True), ("meld", True), ("demo", False)])
def test_paper_columns_for_the_papers_datasets(dataset: str, shown: bool) -> None:
    stat = {"mean": 0.5, "std": 0.01}
    summary = {"dataset": dataset, "model": "hjcag", "protocol": "cv5", "n_folds": 5, "n_utterances": 10,
               "rows": [{"label": r.label, "slug": r.slug, "accuracy": stat, "weighted_f1": stat, "macro_f1": stat}
                        for r in TABLE4],
               "skipped": []}
    table = ablation_markdown(summary)
    assert ("Paper Acc" in table) is shown
    assert table.count("| 50.00 ± 1.00 | 50.00 ± 1.00 | 50.00 ± 1.00 |") == len(TABLE4)
    if dataset == "iemocap":
        assert "| HJCAG (Ours) | 50.00 ± 1.00 | 50.00 ± 1.00 | 50.00 ± 1.00 | 75.47 | 76.84 |" in table


# ---------------------------------------------------------------- one leak guard for every stage that trains

FINETUNED = {"base_model": "roberta-large", "train_rows": 30, "dev_rows": 6, "labels": list(LABELS)}


@pytest.fixture()
def cli_params(tmp_path: Path) -> Path:
    """params.yaml with the demo profile shrunk to seconds (2 folds, 2 epochs, width 8)."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    demo = doc["profiles"]["demo"]
    demo["model"] = {"seq_len": 4, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8}
    demo["train"] = {"folds": 2, "epochs": 2, "batch_size": 16, "lr": 1e-2, "patience": 2, "device": "cpu",
                     "num_threads": 1}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_features(path: Path, finetuned: dict[str, object] | None) -> Path:
    """Text and audio features; `finetuned`: the mark `hjcag features` writes into the file for the text of an
    encoder fine-tuned on the dataset's train rows."""
    fs = synthetic(("t", "a"))
    extra = {} if finetuned is None else {"text_finetuned": np.array(json.dumps(finetuned))}
    np.savez(path, utterance_id=fs.utterance_id, label=fs.label, group=fs.group, text=fs.features["t"],
             audio=fs.features["a"], **extra)
    return path


def stage_argv(command: str, features: Path, out: Path, params: Path) -> list[str]:
    argv = [command, "--features", str(features), "--out", str(out), "--params", str(params), "--protocol", "cv5"]
    if command == "tune":
        argv += ["--trials", "1", "--no-track", "--no-profile", "--storage", f"sqlite:///{out.parent / 'o.db'}"]
    return argv


@pytest.mark.parametrize("command", ["train", "tune", "ablate"])
def test_every_stage_that_trains_refuses_a_copied_file_of_fine_tuned_text_under_cv5(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_params: Path) -> None:
    """The mark is inside the .npz: a copy without the meta file beside it is refused all the same."""
    features = write_features(tmp_path / "copied.npz", FINETUNED)
    assert not features_meta_path(features).exists()
    out = tmp_path / "out"
    code = main(stage_argv(command, features, out, cli_params))
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    assert "encoder fine-tuned on the dataset's train rows (30 rows" in err and "--protocol holdout" in err
    assert not any(p.is_file() for p in out.rglob("*"))  # refused before anything was trained


def test_a_file_marked_only_in_its_meta_file_is_still_refused_and_the_mark_is_about_text(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_params: Path) -> None:
    features = write_features(tmp_path / "old.npz", None)  # written before the mark travelled inside the file
    features_meta_path(features).write_text(json.dumps({"modalities": {"text": {"finetuned": FINETUNED}}}))
    assert main(stage_argv("ablate", features, tmp_path / "out", cli_params)) == 2
    assert "fine-tuned on the dataset's train rows" in capsys.readouterr().err

    marked = write_features(tmp_path / "marked.npz", FINETUNED)
    argv = stage_argv("train", marked, tmp_path / "audio", cli_params)
    assert main([*argv, "--modalities", "a"]) == 0  # audio only: the fine-tuned text is not trained on
    assert (tmp_path / "audio" / "metrics.json").is_file()
