"""The pre-extracted features interface (.npz): round trip, alignment to L, and clear errors."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hjcag.data.features_file import (
    FeatureSet,
    align_to_length,
    feature_set_from_arrays,
    load_features,
    save_features,
)
from hjcag.errors import FeatureFileError

LABELS = ("neutral", "joy", "anger")


def arrays(n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "utterance_id": np.array([f"u{i}" for i in range(n)]),
        "label": np.array([LABELS[i % 3] for i in range(n)]),
        "group": np.array([f"dia{i // 2}" for i in range(n)]),
        "split": np.array(["train", "dev", "test"] * (n // 3)),
        "speaker": np.array(["Joey", "Ross"] * (n // 2)),
        "text": rng.standard_normal((n, 5, 8)).astype(np.float32),
        "audio": rng.standard_normal((n, 4)),  # utterance-level vectors, float64
        "visual": rng.standard_normal((n, 5, 3)).astype(np.float32),
    }


def write(path: Path, data: dict[str, np.ndarray]) -> Path:
    np.savez(path, **data)
    return path


def test_round_trip(tmp_path: Path) -> None:
    fs = feature_set_from_arrays(arrays(), seq_len=5, label_names=LABELS)
    path = save_features(tmp_path / "sub" / "f.npz", fs)
    back = load_features(path, seq_len=5, label_names=LABELS)
    for key in ("utterance_id", "label", "group", "split", "speaker"):
        np.testing.assert_array_equal(getattr(back, key), getattr(fs, key))
    assert back.modalities == ("t", "a", "v")
    for m in fs.modalities:
        np.testing.assert_array_equal(back.features[m], fs.features[m])
        assert back.features[m].dtype == np.float32
    assert back.label_names == LABELS
    assert back.targets.tolist() == [0, 1, 2, 0, 1, 2]
    with np.load(path) as raw:  # a plain .npz that numpy reads as usual
        assert sorted(raw.files) == sorted(["utterance_id", "label", "group", "split", "speaker", "text", "audio",
                                            "visual"])


def test_the_same_features_give_the_same_bytes(tmp_path: Path) -> None:
    """No timestamps in the archive: DVC sees unchanged features as unchanged and does not re-train."""
    fs = feature_set_from_arrays(arrays(), seq_len=5, label_names=LABELS)
    path = save_features(tmp_path / "a.npz", fs)
    with zipfile.ZipFile(path) as archive:  # a fixed member date, not the time of writing
        assert {m.date_time for m in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert save_features(tmp_path / "b.npz", fs).read_bytes() == path.read_bytes()


def test_without_label_names_they_are_sorted_labels(tmp_path: Path) -> None:
    fs = load_features(write(tmp_path / "f.npz", arrays()), seq_len=5)
    assert fs.label_names == ("anger", "joy", "neutral")


def test_vectors_are_broadcast_over_l(tmp_path: Path) -> None:
    data = arrays()
    fs = load_features(write(tmp_path / "f.npz", data), seq_len=7)
    assert fs.features["a"].shape == (6, 7, 4)
    for t in range(7):
        np.testing.assert_allclose(fs.features["a"][:, t], data["audio"], rtol=1e-6)
    assert fs.dims == {"t": 8, "a": 4, "v": 3} and fs.seq_len == 7


def test_when_every_modality_is_a_vector_each_is_one_step(tmp_path: Path) -> None:
    """Only utterance vectors: (N, 1, d), not L copies (docs/model.md "Inputs"); saving writes them back as (N, d)."""
    data = {k: v for k, v in arrays().items() if k not in ("text", "visual")}
    data["text"] = data["audio"][:, :3] * 2
    fs = load_features(write(tmp_path / "f.npz", data), seq_len=7)
    assert {m: x.shape for m, x in fs.features.items()} == {"a": (6, 1, 4), "t": (6, 1, 3)}
    assert fs.seq_len == 1 and fs.vectors == ("t", "a")
    np.testing.assert_array_equal(fs.features["a"][:, 0], data["audio"].astype(np.float32))
    path = save_features(tmp_path / "again.npz", fs)
    with np.load(path) as raw:
        assert raw["audio"].shape == (6, 4) and raw["text"].shape == (6, 3)
    back = load_features(path, seq_len=7)
    for m in fs.modalities:
        np.testing.assert_array_equal(back.features[m], fs.features[m])


def test_selecting_only_the_vectors_of_a_mixed_set_gives_one_step(tmp_path: Path) -> None:
    """Beside sequences a vector is broadcast over L; a model that reads only vectors reads one step."""
    data = arrays()
    fs = load_features(write(tmp_path / "f.npz", data), seq_len=7)
    assert fs.vectors == ("a",) and fs.features["a"].shape == (6, 7, 4)
    audio = fs.select(("a",))
    assert audio.features["a"].shape == (6, 1, 4) and audio.seq_len == 1 and audio.vectors == ("a",)
    np.testing.assert_array_equal(audio.features["a"][:, 0], data["audio"].astype(np.float32))
    both = fs.select(("t", "a"))
    assert both.seq_len == 7 and both.features["a"] is fs.features["a"] and both.vectors == ("a",)
    assert fs.select(("t", "v")).vectors == ()
    # a mixed set saves its vectors as vectors: the same set comes back
    back = load_features(save_features(tmp_path / "again.npz", fs), seq_len=7)
    for m in fs.modalities:
        np.testing.assert_array_equal(back.features[m], fs.features[m])


def test_sequences_are_cropped_and_padded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = arrays()
    with caplog.at_level(logging.WARNING):
        short = load_features(write(tmp_path / "f.npz", data), seq_len=3)
    np.testing.assert_array_equal(short.features["t"], data["text"][:, :3])
    assert "'text' has 5 steps; aligning to L=3" in caplog.text
    long = load_features(tmp_path / "f.npz", seq_len=8)
    np.testing.assert_array_equal(long.features["t"][:, :5], data["text"])
    assert not long.features["t"][:, 5:].any()


def test_align_to_length_shapes() -> None:
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    assert align_to_length(x, 2).shape == (2, 2, 2)
    assert align_to_length(x, 5).shape == (2, 5, 2)
    assert align_to_length(x[:, 0], 4).shape == (2, 4, 2)


def test_optional_columns_and_modalities(tmp_path: Path) -> None:
    data = arrays()
    for key in ("split", "speaker", "audio", "visual"):
        del data[key]
    fs = load_features(write(tmp_path / "f.npz", data), seq_len=5)
    assert fs.split is None and fs.speaker is None and fs.modalities == ("t",)


def test_subset_and_select() -> None:
    fs = feature_set_from_arrays(arrays(), seq_len=5, label_names=LABELS)
    sub = fs.subset(np.array([1, 4]))
    assert sub.utterance_id.tolist() == ["u1", "u4"] and sub.features["v"].shape == (2, 5, 3)
    assert sub.label_names == LABELS
    only = fs.select(("t", "v"))
    assert only.modalities == ("t", "v") and len(only) == 6


def test_unknown_key_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = arrays()
    data["texts"] = data["text"]
    with caplog.at_level(logging.WARNING):
        load_features(write(tmp_path / "f.npz", data), seq_len=5)
    assert "ignoring unknown key(s) ['texts']" in caplog.text


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("key", ["utterance_id", "label", "group"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    data = arrays()
    del data[key]
    with pytest.raises(FeatureFileError, match=rf"missing required key\(s\) \['{key}'\]"):
        load_features(write(tmp_path / "f.npz", data), seq_len=5)


def test_no_modality(tmp_path: Path) -> None:
    data = {k: v for k, v in arrays().items() if k not in ("text", "audio", "visual")}
    with pytest.raises(FeatureFileError, match="no modality arrays found"):
        load_features(write(tmp_path / "f.npz", data), seq_len=5)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("audio", np.zeros((5, 4)), r"'audio' has 5 rows but 'utterance_id' has 6"),
        ("visual", np.zeros((6, 2, 2, 2)), r"'visual' has shape \(6, 2, 2, 2\); expected \(N, d\) or \(N, L, d\)"),
        ("text", np.zeros(6), r"'text' has shape \(6,\)"),
        ("text", np.zeros((6, 5, 0)), r"'text' has feature width 0"),
        ("audio", np.array([["a"] * 4] * 6), r"'audio' must be a float array"),
        ("label", np.array(["joy"] * 5), r"'label' has shape \(5,\); expected \(6,\)"),
        ("group", np.array([["g"]] * 6), r"'group' has shape \(6, 1\)"),
    ],
)
def test_wrong_shapes_name_the_key(tmp_path: Path, key: str, value: np.ndarray, message: str) -> None:
    data = arrays()
    data[key] = value
    with pytest.raises(FeatureFileError, match=message):
        load_features(write(tmp_path / "f.npz", data), seq_len=5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_key_and_rows(tmp_path: Path, bad: float) -> None:
    data = arrays()
    data["visual"][4, 2, 1] = bad
    message = r"'visual' holds NaN or inf values in 1 utterance\(s\), first rows \[4\]"
    with pytest.raises(FeatureFileError, match=message):
        load_features(write(tmp_path / "f.npz", data), seq_len=5)


def test_duplicate_ids(tmp_path: Path) -> None:
    data = arrays()
    data["utterance_id"][3] = "u1"
    with pytest.raises(FeatureFileError, match=r"duplicate utterance ids \['u1'\]"):
        load_features(write(tmp_path / "f.npz", data), seq_len=5)


def test_bad_split_values(tmp_path: Path) -> None:
    data = arrays()
    data["split"][0] = "valid"
    message = r"'split' holds \['valid'\]; allowed values are \['train', 'dev', 'test'\]"
    with pytest.raises(FeatureFileError, match=message):
        load_features(write(tmp_path / "f.npz", data), seq_len=5)


def test_labels_outside_the_label_set(tmp_path: Path) -> None:
    with pytest.raises(FeatureFileError, match=r"labels \['anger'\] are not in the dataset's label set"):
        load_features(write(tmp_path / "f.npz", arrays()), seq_len=5, label_names=("neutral", "joy"))


def test_select_unknown_modality_names_it() -> None:
    data = {k: v for k, v in arrays().items() if k != "visual"}
    fs = feature_set_from_arrays(data, seq_len=5)
    message = r"\['visual'\] were requested but the features hold only \[text, audio\]"
    with pytest.raises(FeatureFileError, match=message):
        fs.select(("t", "v"))


def test_empty_file(tmp_path: Path) -> None:
    data = {k: v[:0] for k, v in arrays().items()}
    with pytest.raises(FeatureFileError, match="holds no utterances"):
        load_features(write(tmp_path / "f.npz", data), seq_len=5)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FeatureFileError, match="not found"):
        load_features(tmp_path / "nope.npz", seq_len=5)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FeatureFileError, match=r"is not a readable \.npz"):
        load_features(bad, seq_len=5)


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    data = arrays()
    data["text"] = np.array([np.zeros(3), np.zeros(4), np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3)],
                            dtype=object)
    np.savez(path, **data)  # pickled object array: the loader must not unpickle it
    with pytest.raises(FeatureFileError, match=r"is not a readable \.npz"):
        load_features(path, seq_len=5)


def test_feature_set_constructor_defaults() -> None:
    fs = FeatureSet(
        utterance_id=np.array(["a", "b"]), label=np.array(["y", "x"]), group=np.array(["g", "g"]),
        features={"t": np.zeros((2, 3, 4), np.float32)},
    )
    assert fs.label_names == ("x", "y") and fs.modalities == ("t",) and len(fs) == 2


def test_the_fine_tuned_encoder_mark_travels_inside_the_file(tmp_path: Path) -> None:
    mark = {"base_model": "roberta-large", "train_rows": 4, "dev_rows": 1, "labels": list(LABELS)}
    fs = feature_set_from_arrays(arrays(), seq_len=5, label_names=LABELS)
    fs.text_finetuned = mark
    path = save_features(tmp_path / "f.npz", fs)
    with np.load(path) as raw:  # a plain string array: readable without pickle
        assert raw["text_finetuned"].shape == () and raw["text_finetuned"].dtype.kind == "U"
    back = load_features(path, seq_len=5, label_names=LABELS)
    assert back.text_finetuned == mark
    assert back.subset(np.array([0, 1])).text_finetuned == mark and back.select(("t", "a")).text_finetuned == mark
    assert back.select(("a", "v")).text_finetuned is None  # without the text, the features carry no such text
    unmarked = save_features(tmp_path / "plain.npz", feature_set_from_arrays(arrays(), seq_len=5))
    with np.load(unmarked) as raw:
        assert "text_finetuned" not in raw.files  # files of pre-trained encoders keep their keys and bytes


@pytest.mark.parametrize("value", [np.array("not json"), np.array('["a list"]'), np.array(["{}"]), np.array(3)])
def test_a_malformed_fine_tuned_mark_is_named(tmp_path: Path, value: np.ndarray) -> None:
    path = write(tmp_path / "f.npz", {**arrays(), "text_finetuned": value})
    with pytest.raises(FeatureFileError, match="'text_finetuned' must be a 0-d string array holding a JSON object"):
        load_features(path, seq_len=5)


def test_the_text_context_mark_travels_inside_the_file(tmp_path: Path) -> None:
    fs = feature_set_from_arrays(arrays(), seq_len=5, label_names=LABELS)
    fs.text_context = 3
    path = save_features(tmp_path / "f.npz", fs)
    with np.load(path) as raw:  # a plain integer: readable without pickle
        assert raw["text_context"].shape == () and int(raw["text_context"]) == 3
    back = load_features(path, seq_len=5, label_names=LABELS)
    assert back.text_context == 3
    assert back.subset(np.array([0, 1])).text_context == 3 and back.select(("t", "a")).text_context == 3
    assert back.select(("a", "v")).text_context == 0  # without the text, nothing was read with context
    unmarked = save_features(tmp_path / "plain.npz", feature_set_from_arrays(arrays(), seq_len=5))
    with np.load(unmarked) as raw:
        assert "text_context" not in raw.files  # files of single utterances keep their keys and bytes
    assert load_features(unmarked, seq_len=5).text_context == 0


@pytest.mark.parametrize("value", [np.array(-1), np.array(2.0), np.array([2]), np.array("2")])
def test_a_malformed_text_context_mark_is_named(tmp_path: Path, value: np.ndarray) -> None:
    path = write(tmp_path / "f.npz", {**arrays(), "text_context": value})
    with pytest.raises(FeatureFileError, match="'text_context' must be a 0-d integer array holding k >= 0"):
        load_features(path, seq_len=5)
