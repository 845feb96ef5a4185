"""ERC feature pickles (DialogueRNN / MMGCN layouts), built here in exactly the published layout."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hjcag import stages
from hjcag.data.erc_pickle import IEMOCAP_LABELS, detect_layout, load_erc_pickle
from hjcag.errors import FeatureFileError
from hjcag.params import params_from_dict

MELD_LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
D_T, D_A, D_V = 6, 5, 4


def iemocap_tuple(seed: int = 0) -> list[Any]:
    """The 9 items of IEMOCAP_features_raw.pkl: 3 train dialogues, 1 test dialogue, speakers 'M'/'F'."""
    rng = np.random.default_rng(seed)
    sizes = {"Ses01F_impro01": 3, "Ses01F_script02": 4, "Ses02M_impro03": 2, "Ses05F_impro01": 3}
    ids, spk, lab, text, audio, visual, sent = {}, {}, {}, {}, {}, {}, {}
    for k, (vid, n) in enumerate(sizes.items()):
        ids[vid] = [f"{vid}_F{i:03d}" for i in range(n)]
        spk[vid] = ["M" if (i + k) % 2 else "F" for i in range(n)]
        lab[vid] = [int(x) for x in (np.arange(n) + k) % 6]
        text[vid] = [rng.standard_normal(D_T) for _ in range(n)]  # list of (d,) arrays
        audio[vid] = rng.standard_normal((n, D_A))  # or one (n, d) array
        visual[vid] = [list(rng.standard_normal(D_V)) for _ in range(n)]  # or lists of floats
        sent[vid] = [f"Sentence {i}." for i in range(n)]
    train_vid = ["Ses01F_impro01", "Ses01F_script02", "Ses02M_impro03"]
    test_vid = ["Ses05F_impro01"]
    return [ids, spk, lab, text, audio, visual, sent, train_vid, test_vid]


def meld_tuple(visual: bool = False) -> list[Any]:
    """MELD_features_raw.pkl (9 items, no visual, sentiment last) or MMGCN's 10-item variant with visual."""
    rng = np.random.default_rng(1)
    sizes = {0: 3, 1: 2, 1038: 2}  # int dialogue ids, as in the MELD pickles
    ids, spk, lab, text, audio, vis, sent, senti = {}, {}, {}, {}, {}, {}, {}, {}
    for vid, n in sizes.items():
        ids[vid] = list(range(n))
        spk[vid] = [np.eye(9)[(vid + i) % 3].tolist() for i in range(n)]  # one-hot speaker vectors
        lab[vid] = [(vid + 2 * i) % 7 for i in range(n)]
        text[vid] = rng.standard_normal((n, D_T)).astype(np.float32)
        audio[vid] = rng.standard_normal((n, D_A)).astype(np.float32)
        vis[vid] = rng.standard_normal((n, D_V)).astype(np.float32)
        sent[vid] = [f"Utterance {i}" for i in range(n)]
        senti[vid] = [i % 3 for i in range(n)]
    train, test = [0, 1], [1038]
    if visual:
        return [ids, spk, lab, text, audio, vis, sent, train, test, senti]
    return [ids, spk, lab, text, audio, sent, train, test, senti]


def dump(path: Path, items: Any) -> Path:
    with path.open("wb") as f:
        pickle.dump(tuple(items) if isinstance(items, list) else items, f, protocol=2)
    return path


def test_iemocap_layout_with_label_names(tmp_path: Path) -> None:
    items = iemocap_tuple()
    fs = load_erc_pickle(dump(tmp_path / "iemocap.pkl", items), seq_len=7, label_names=IEMOCAP_LABELS)
    assert len(fs) == 12
    assert fs.modalities == ("t", "a", "v")
    # utterance vectors, every modality: one step each (docs/model.md "Inputs"), not L = 7 copies
    assert {m: x.shape for m, x in fs.features.items()} == {"t": (12, 1, D_T), "a": (12, 1, D_A), "v": (12, 1, D_V)}
    assert fs.vectors == ("t", "a", "v") and fs.seq_len == 1
    assert fs.utterance_id[:3].tolist() == ["Ses01F_impro01_0", "Ses01F_impro01_1", "Ses01F_impro01_2"]
    # IEMOCAP is grouped by session (cv5 = leave-one-session-out); the dialogue travels beside it
    assert fs.group[0] == "Ses01" and fs.group[-1] == "Ses05"
    assert fs.dialogue is not None and fs.dialogue[0] == "Ses01F_impro01" and fs.dialogue[-1] == "Ses05F_impro01"
    assert fs.split.tolist() == ["train"] * 9 + ["test"] * 3
    assert fs.speaker[:3].tolist() == ["F", "M", "F"]
    assert fs.label_names == IEMOCAP_LABELS
    expected = [IEMOCAP_LABELS[i] for vid in items[7] + items[8] for i in items[2][vid]]
    assert fs.label.tolist() == expected
    # values preserved
    np.testing.assert_allclose(fs.features["t"][0, 0], items[3]["Ses01F_impro01"][0], rtol=1e-6)
    np.testing.assert_allclose(fs.features["a"][-1, 0], items[4]["Ses05F_impro01"][-1], rtol=1e-6)


def test_without_label_names_labels_are_index_strings_in_numeric_order(tmp_path: Path) -> None:
    items = iemocap_tuple()
    for vid in items[2]:
        items[2][vid] = [np.int64(10) if i == 0 else np.int64(2) for i in range(len(items[2][vid]))]
    fs = load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3)
    assert fs.label_names == ("2", "10")
    assert set(fs.label) == {"2", "10"}
    assert fs.targets.tolist().count(1) == 4  # one "10" per dialogue


def test_meld_layout_without_visual_and_one_hot_speakers(tmp_path: Path) -> None:
    fs = load_erc_pickle(dump(tmp_path / "meld.pkl", meld_tuple()), seq_len=4, label_names=MELD_LABELS)
    assert fs.modalities == ("t", "a")
    assert len(fs) == 7
    assert fs.utterance_id.tolist()[-2:] == ["1038_0", "1038_1"]
    assert fs.split.tolist() == ["train"] * 5 + ["test"] * 2
    assert fs.speaker[:3].tolist() == ["spk0", "spk1", "spk2"]
    assert fs.label[:3].tolist() == ["neutral", "fear", "joy"]
    with pytest.raises(FeatureFileError, match="visual"):
        fs.select(("t", "a", "v"))


def test_meld_layout_with_visual(tmp_path: Path) -> None:
    fs = load_erc_pickle(dump(tmp_path / "meld_v.pkl", meld_tuple(visual=True)), seq_len=4, label_names=MELD_LABELS)
    assert fs.modalities == ("t", "a", "v")
    assert fs.dims == {"t": D_T, "a": D_A, "v": D_V}


def test_the_stages_read_a_pkl_as_features(tmp_path: Path) -> None:
    params = params_from_dict({"model": {"seq_len": 5}, "dataset": "iemocap",
                               "datasets": {"iemocap": {"labels": list(IEMOCAP_LABELS)}}})
    fs = stages.load_features(dump(tmp_path / "feat.pkl", iemocap_tuple()), params)
    assert len(fs) == 12 and fs.seq_len == 1  # utterance vectors: one step, whatever model.seq_len


def test_per_utterance_sequences_are_padded_and_aligned(tmp_path: Path) -> None:
    items = iemocap_tuple()
    rng = np.random.default_rng(3)
    # (T, d) per utterance with varying T: padded to the longest, then cropped/padded to L
    items[3] = {vid: [rng.standard_normal((2 + i, D_T)) for i in range(len(v))] for vid, v in items[2].items()}
    fs = load_erc_pickle(dump(tmp_path / "seq.pkl", items), seq_len=3, label_names=IEMOCAP_LABELS)
    first = items[3]["Ses01F_impro01"][0]  # T=2
    np.testing.assert_allclose(fs.features["t"][0, :2], first, rtol=1e-6)
    assert not fs.features["t"][0, 2].any()


def test_dialogues_in_neither_split_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = iemocap_tuple()
    items[7] = items[7][:2]
    with caplog.at_level(logging.WARNING):
        fs = load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3, label_names=IEMOCAP_LABELS)
    assert fs.dialogue is not None and "Ses02M_impro03" not in set(fs.dialogue)
    assert "neither trainVid nor testVid" in caplog.text


def test_sets_of_dialogue_ids_are_accepted(tmp_path: Path) -> None:
    items = iemocap_tuple()
    items[7], items[8] = set(items[7]), set(items[8])
    fs = load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3, label_names=IEMOCAP_LABELS)
    assert len(fs) == 12


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("n_items", [7, 8, 11])
def test_wrong_tuple_length_names_the_expected_layouts(tmp_path: Path, n_items: int) -> None:
    items = [*iemocap_tuple(), {}, {}][:n_items]
    with pytest.raises(FeatureFileError, match=r"matches no known ERC pickle layout.*videoIDs, videoSpeakers"):
        load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3)


def test_not_a_tuple(tmp_path: Path) -> None:
    with pytest.raises(FeatureFileError, match="holds a dict"):
        load_erc_pickle(dump(tmp_path / "x.pkl", {"text": 1}), seq_len=3)


def test_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(FeatureFileError, match="cannot be unpickled"):
        load_erc_pickle(path, seq_len=3)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FeatureFileError, match="not found"):
        load_erc_pickle(tmp_path / "none.pkl", seq_len=3)


def test_mismatched_lengths_name_dialogue_and_item(tmp_path: Path) -> None:
    items = iemocap_tuple()
    items[4]["Ses01F_script02"] = items[4]["Ses01F_script02"][:3]
    with pytest.raises(FeatureFileError, match=r"'Ses01F_script02'.*videoAudio has 3 entries but videoLabels has 4"):
        load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3)


def test_dialogue_missing_from_an_item(tmp_path: Path) -> None:
    items = iemocap_tuple()
    del items[5]["Ses05F_impro01"]
    with pytest.raises(FeatureFileError, match=r"'Ses05F_impro01'.*missing from videoVisual"):
        load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3)


def test_inconsistent_feature_width(tmp_path: Path) -> None:
    items = iemocap_tuple()
    items[3]["Ses05F_impro01"] = [np.zeros(D_T + 1) for _ in range(3)]
    with pytest.raises(FeatureFileError, match="videoText mixes shapes"):
        load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3)


def test_ragged_vectors_inside_a_dialogue(tmp_path: Path) -> None:
    items = iemocap_tuple()
    items[3]["Ses01F_impro01"] = [np.zeros(D_T), np.zeros(D_T + 1), np.zeros(D_T)]
    with pytest.raises(FeatureFileError, match=r"'Ses01F_impro01'.*videoText holds utterances of shapes"):
        load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3)


def test_nan_features_are_rejected_naming_the_key(tmp_path: Path) -> None:
    items = iemocap_tuple()
    items[4]["Ses01F_impro01"][1, 0] = np.nan
    with pytest.raises(FeatureFileError, match="'audio' holds NaN or inf"):
        load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3)


def test_label_index_beyond_label_names(tmp_path: Path) -> None:
    items = meld_tuple()  # MELD's 7 classes read with IEMOCAP's 6 names
    items[2][1] = [6, 1]
    with pytest.raises(FeatureFileError, match=r"label indices \[6\] exceed the 6 label names"):
        load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3, label_names=IEMOCAP_LABELS)


def test_non_integer_label(tmp_path: Path) -> None:
    items = iemocap_tuple()
    items[2]["Ses01F_impro01"][0] = "hap"
    with pytest.raises(FeatureFileError, match=r"'Ses01F_impro01', utterance 0: label 'hap' is not a class index"):
        load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3)


def test_dialogue_in_both_splits(tmp_path: Path) -> None:
    items = iemocap_tuple()
    items[8] = [*items[8], "Ses01F_impro01"]
    with pytest.raises(FeatureFileError, match="in both trainVid and testVid"):
        load_erc_pickle(dump(tmp_path / "x.pkl", items), seq_len=3)


def test_detect_layout_tells_variants_apart() -> None:
    assert detect_layout(tuple(iemocap_tuple()), "x") == "iemocap"
    assert detect_layout(tuple(meld_tuple()), "x") == "meld"
    assert detect_layout(tuple(meld_tuple(visual=True)), "x") == "meld-visual"


def test_python2_byte_strings_are_read_as_latin1(tmp_path: Path) -> None:
    """Python 2 pickles store str as byte strings (SHORT_BINSTRING); latin1 turns b'Jos\\xe9' into 'José'."""
    items = iemocap_tuple()
    items[1]["Ses01F_impro01"] = ["José"] * 3
    raw = pickle.dumps(tuple(items), protocol=2)
    py3 = b"X\x05\x00\x00\x00Jos\xc3\xa9"  # BINUNICODE 'José'
    assert py3 in raw
    path = tmp_path / "py2.pkl"
    path.write_bytes(raw.replace(py3, b"U\x04Jos\xe9"))  # SHORT_BINSTRING, as Python 2 writes str
    fs = load_erc_pickle(path, seq_len=3, label_names=IEMOCAP_LABELS)
    assert fs.speaker[:3].tolist() == ["José"] * 3


def test_iemocap_cv5_is_leave_one_session_out_and_holdout_carves_dev_by_dialogue(tmp_path: Path) -> None:
    from hjcag.train.folds import make_folds

    items = iemocap_tuple()
    fs = load_erc_pickle(dump(tmp_path / "s.pkl", items), seq_len=3, label_names=IEMOCAP_LABELS)
    for fold in make_folds(fs, "cv5", 3, 0.3, seed=0):  # three sessions in this small pickle
        test_sessions = set(fs.group[fold.test_idx])
        assert len(test_sessions) == 1 and not test_sessions & set(fs.group[fold.train_idx])
        assert not test_sessions & set(fs.group[fold.val_idx])

    # holdout: every trainVid dialogue of one session, so only a carve by dialogue can hold some out
    one_session = [{("Ses01M_impro03" if k == "Ses02M_impro03" else k): v for k, v in d.items()} for d in items[:7]]
    items = [*one_session, ["Ses01F_impro01", "Ses01F_script02", "Ses01M_impro03"], items[8]]
    fs = load_erc_pickle(dump(tmp_path / "h.pkl", items), seq_len=3, label_names=IEMOCAP_LABELS)
    (holdout,) = make_folds(fs, "holdout", 5, 0.3, seed=0)
    assert set(fs.dialogue[holdout.test_idx]) == {"Ses05F_impro01"}  # testVid, as given
    val, train = set(fs.dialogue[holdout.val_idx]), set(fs.dialogue[holdout.train_idx])
    assert val and train and not val & train  # whole dialogues of the trainVid session
    assert set(fs.group[holdout.val_idx]) == set(fs.group[holdout.train_idx]) == {"Ses01"}
