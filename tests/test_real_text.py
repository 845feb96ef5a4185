"""benchmarks/real_text.py's pure helpers: which dataset a source is and its labels, the params copy that runs MELD's
recipes on another dataset's labels, and the trimmed copy of a smoke run (the benchmark itself needs real data and
minutes: not in the suite; no test reads ../shared)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_text  # noqa: E402
import results_table  # noqa: E402

from hjcag.data.manifest import read_generic_manifest  # noqa: E402
from hjcag.data.meld import read_meld_csv  # noqa: E402
from hjcag.params import load_params  # noqa: E402

MANIFEST = """utterance_id,dialogue_id,speaker,turn,text,label,split
a0,A,p0,0,"hi, you",joyful,train
a1,A,p1,1,hello,neutral,train
b0,B,p0,0,no,mad,train
c0,C,p0,0,why,neutral,dev
d0,D,p1,0,yes,neutral,test
c1,C,p1,1,because,sad,dev
e0,E,p0,0,ok,neutral,dev
f0,F,p0,0,fine,joyful,test
"""
MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "toy.csv"
    path.write_text(MANIFEST)
    return path


def test_a_manifest_takes_its_name_from_the_file_and_its_labels_from_the_data_most_frequent_first(
        tmp_path: Path) -> None:
    dataset = real_text.open_dataset(manifest(tmp_path), None, None)
    assert (dataset.name, dataset.kind) == ("toy", "manifest")
    assert dataset.labels == ("neutral", "joyful", "mad", "sad")  # 4, 2, then the ties by name
    record = dataset.record(2)
    assert record["labels"] == list(dataset.labels) and record["max_dialogues"] == 2
    assert record["sha256"] == {"toy.csv": real_text.results_file.sha256(manifest(tmp_path))}


def test_a_dataset_params_yaml_names_keeps_its_label_order(tmp_path: Path) -> None:
    meld_dir = tmp_path / "MELD"
    meld_dir.mkdir()
    assert real_text.open_dataset(meld_dir, None, None).labels == load_params(ROOT / "params.yaml", "meld").labels
    named = real_text.open_dataset(manifest(tmp_path), "manifest", "meld")
    assert named.labels == load_params(ROOT / "params.yaml", "meld").labels


def test_meld_recipes_run_unchanged_on_the_datasets_labels(tmp_path: Path) -> None:
    dataset = real_text.open_dataset(manifest(tmp_path), None, None)
    params = real_text.write_params(tmp_path, dataset, 1, contexts=("gru",), seeds=(1,))
    repository = load_params(ROOT / "params.yaml", "meld")
    for profile in ("demo", "meld", "meld-finetuned", "meld-gru", "finetune", "finetuned"):
        loaded = load_params(params, profile)
        assert (loaded.dataset, loaded.labels) == ("toy", dataset.labels), profile
    meld = load_params(params, "meld")
    assert repository.model.context == "auto" and meld.model.context == "none"  # the recipe without context
    assert meld.model == dataclasses.replace(repository.model, context="none") and meld.train.lr == repository.train.lr
    assert meld.train.class_weights == repository.train.class_weights
    assert load_params(params, "meld-gru").model == dataclasses.replace(repository.model, context="gru")


def test_on_meld_the_params_copy_keeps_the_repositorys_labels(tmp_path: Path) -> None:
    meld_dir = tmp_path / "MELD"
    meld_dir.mkdir()
    params = real_text.write_params(tmp_path, real_text.open_dataset(meld_dir, None, None), 1)
    for profile in ("demo", "meld", "finetune"):
        assert load_params(params, profile).dataset == "meld"
    assert load_params(params, "meld").labels == load_params(ROOT / "params.yaml", "meld").labels


def test_first_dialogues_keeps_the_first_n_of_each_split_in_order_of_appearance() -> None:
    keep = real_text.first_dialogues(["A", "A", "B", "C", "D", "C", "E"], ["tr", "tr", "tr", "dv", "te", "dv", "dv"], 1)
    assert keep.tolist() == [True, True, False, True, True, True, False]


def test_a_trimmed_manifest_is_read_by_prepare(tmp_path: Path) -> None:
    dataset = real_text.open_dataset(manifest(tmp_path), None, None)
    path = real_text.trimmed_source(dataset, tmp_path / "source", 1)
    rows = read_generic_manifest(path, ("t",)).rows
    assert [r["utterance_id"] for r in rows] == ["a0", "a1", "c0", "d0", "c1"]
    assert rows[0]["text"] == "hi, you" and rows[0]["turn"] == 0.0 and rows[2]["split"] == "dev"


def test_a_trimmed_meld_folder_keeps_its_layout_and_text(tmp_path: Path) -> None:
    source = tmp_path / "MELD"
    source.mkdir()
    for split in ("train", "dev", "test"):
        lines = [f'{i},"It’s, {split} {i}",Joey,joy,positive,{d},{i},1,1,"00:00:01,000","00:00:02,000"\n'
                 for i, d in enumerate((0, 0, 1))]
        (source / f"{split}_sent_emo.csv").write_bytes((MELD_HEADER + "".join(lines)).encode("cp1252"))
    out = real_text.trimmed_source(real_text.open_dataset(source, None, None), tmp_path / "source", 1)
    for split in ("train", "dev", "test"):
        records = read_meld_csv(out / f"{split}_sent_emo.csv")
        assert [r.utterance for r in records] == [f"It’s, {split} 0", f"It’s, {split} 1"]
    assert len(pd.read_csv(out / "dev_sent_emo.csv")) == 2


def test_the_table_names_the_dataset_its_rows_are_on() -> None:
    line = results_table.dataset_line({"name": "toy", "kind": "manifest", "sha256": {"toy.csv": "ab" * 32},
                                       "labels": ["neutral", "joyful"], "max_dialogues": 20})
    assert line == ("dataset: toy (manifest: toy.csv abababababab); per-class F1 in the order neutral joyful; first "
                    "20 dialogues of each split")


def test_the_fine_tuning_run_takes_the_benchmarks_settings_and_the_overrides(tmp_path: Path) -> None:
    dataset = real_text.open_dataset(manifest(tmp_path), None, None)
    repository = load_params(ROOT / "params.yaml", "meld").features
    plain = load_params(real_text.write_params(tmp_path, dataset, 1), "finetune").features
    # the one run is the meld profile's, as a user gets it from `hjcag finetune-text --profile meld`
    fields = ("finetune_lr", "finetune_epochs", "finetune_repeats", "finetune_patience", "finetune_class_weights")
    assert [getattr(plain, f) for f in fields] == [getattr(repository, f) for f in fields] == [2e-5, 3, 1, 1, "sqrt"]
    overrides = {"lr": 1e-4, "epochs": 5, "class_weights": "none"}
    changed = load_params(real_text.write_params(tmp_path, dataset, 1, finetune_overrides=overrides),
                          "finetune").features
    assert (changed.finetune_lr, changed.finetune_epochs, changed.finetune_repeats) == (1e-4, 5, 1)
    assert (plain.finetune_class_weights, changed.finetune_class_weights) == ("sqrt", "none")
    args = real_text.parser("x").parse_args(["data", "--finetune-patience", "2", "--finetune-select",
                                             "val_weighted_f1", "--finetune-lr", "5e-5"])
    chosen = load_params(real_text.write_params(tmp_path, dataset, 1,
                                                finetune_overrides=real_text.finetune_overrides(args)),
                         "finetune").features
    assert (chosen.finetune_patience, chosen.finetune_select, chosen.finetune_lr) == (2, "val_weighted_f1", 5e-5)
    assert (plain.finetune_patience, plain.finetune_select, chosen.finetune_epochs) == (1, "val_loss", 3)


def test_encoders_are_checked_before_any_stage_runs() -> None:
    assert real_text.chosen_encoders(None, finetune=False) == ("minilm",)  # the default: what the run makes
    assert real_text.chosen_encoders(None, finetune=True) == ("minilm", "minilm-ft")
    assert real_text.parser("x").parse_args(["data"]).encoders is None
    assert real_text.chosen_encoders("minilm-ft", finetune=True) == ("minilm-ft",)
    assert real_text.chosen_encoders("minilm,minilm-ft", finetune=True) == ("minilm", "minilm-ft")
    with pytest.raises(SystemExit, match=r"minilm-ft \(it needs --finetune\)"):
        real_text.chosen_encoders("minilm,minilm-ft", finetune=False)
    with pytest.raises(SystemExit, match="roberta; choose among minilm, minilm-ft"):
        real_text.chosen_encoders("roberta", finetune=True)
    with pytest.raises(SystemExit, match="none given"):
        real_text.chosen_encoders(",", finetune=True)


def test_another_text_encoder_is_run_frozen_and_fine_tuned_under_its_own_name(tmp_path: Path) -> None:
    """--text-model: the encoder every text stage reads (the base of the fine-tuning too), its feature sets named
    after its folder, its fine-tuned copy in a folder of its own (a shared --work never mixes two encoders')."""
    folder = "/models/all-mpnet-base-v2/"
    features = real_text.encoder_features(folder)
    assert features == {"all-mpnet-base-v2": "frozen all-mpnet-base-v2",
                        "all-mpnet-base-v2-ft": "fine-tuned all-mpnet-base-v2"}
    assert real_text.encoder_features(None) == real_text.FEATURES
    assert real_text.chosen_encoders(None, False, features) == ("all-mpnet-base-v2",)
    assert real_text.chosen_encoders(None, True, features) == tuple(features)
    with pytest.raises(SystemExit, match=r"all-mpnet-base-v2-ft \(it needs --finetune\)"):
        real_text.chosen_encoders("all-mpnet-base-v2-ft", False, features)
    with pytest.raises(SystemExit, match="minilm; choose among all-mpnet-base-v2, all-mpnet-base-v2-ft"):
        real_text.chosen_encoders("minilm", True, features)

    dataset = real_text.open_dataset(manifest(tmp_path), None, None)
    params = real_text.write_params(tmp_path, dataset, 1, text_model=folder)
    assert load_params(params, "demo").features.text_model == folder  # the frozen features
    assert load_params(params, "finetune").features.text_model == folder  # the base of the fine-tuning
    assert load_params(params, "finetuned").features.text_model == str(tmp_path / "text-ft-all-mpnet-base-v2")
    default = real_text.write_params(tmp_path, dataset, 1)
    assert load_params(default, "finetuned").features.text_model == str(tmp_path / "text-ft")
    assert load_params(default, "demo").features.text_model == load_params(ROOT / "params.yaml").features.text_model


def test_context_recipes_are_paired_with_meld_of_their_own_kind() -> None:
    """A context recipe minus `meld`, seed by seed; its model-alone row minus `meld`'s model alone; recipes without
    context (meld-finetuned, meld-tuned) and the probe get no pair."""
    def row(key: str, dev: list[float], test: list[float]) -> dict[str, object]:
        units = [{"seed": seed, "context_kept": True, "dev": {"weighted_f1": d}, "test": {"weighted_f1": t}}
                 for seed, d, t in zip((1, 2), dev, test, strict=True)]
        return {"key": f"enc/{key}", "encoder": "enc", "recipe": key, "per_seed": units}

    rows = [row("linear-probe", [0.5, 0.5], [0.5, 0.5]),
            row("meld", [0.50, 0.52], [0.60, 0.62]), row("meld/model-alone", [0.40, 0.42], [0.30, 0.32]),
            row("meld-finetuned", [0.9, 0.9], [0.9, 0.9]), row("meld-finetuned/model-alone", [0.9, 0.9], [0.9, 0.9]),
            row("meld-tuned", [0.9, 0.9], [0.9, 0.9]),
            row("meld-gru", [0.51, 0.55], [0.61, 0.61]), row("meld-gru/model-alone", [0.41, 0.45], [0.31, 0.31]),
            row("meld-transformer-bi", [0.50, 0.52], [0.64, 0.66])]
    pairs = {p["key"]: p for p in real_text.paired_differences(rows)}
    assert sorted(pairs) == ["enc/meld-gru - meld", "enc/meld-gru/model-alone - meld",
                             "enc/meld-transformer-bi - meld"]
    for key in ("enc/meld-gru - meld", "enc/meld-gru/model-alone - meld"):  # the same gains against each own base
        assert pairs[key]["dev"]["weighted_f1_diff"] == pytest.approx([0.01, 0.03])
        assert pairs[key]["test"]["weighted_f1_diff"] == pytest.approx([0.01, -0.01])
    assert pairs["enc/meld-transformer-bi - meld"]["test"]["mean"] == pytest.approx(0.04)
