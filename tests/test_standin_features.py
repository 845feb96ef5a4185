"""Stand-in features on the tiny synthetic dataset: shapes, finiteness, and that each modality carries its cue."""

from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hjcag.data.features_file import FeatureSet, load_features, save_features
from hjcag.data.meld import CLIP_DIRS, CSV_NAMES, MELD_LABELS
from hjcag.data.synthetic import CUES_FILE, SAMPLE_RATE, write_demo_dataset
from hjcag.errors import ConfigError, DataError
from hjcag.features.standin import (
    AUDIO_DIM,
    TEXT_DIM,
    audio_features,
    extract_standin_features,
    text_features,
    token_vector,
    tokenize,
    visual_features,
)
from hjcag.params import load_params
from hjcag.stages import standin_features

L = 30
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FeatureSet]:
    root = write_demo_dataset(tmp_path_factory.mktemp("tiny"), size="tiny", seed=13, progress=False)
    return root, extract_standin_features(root, seq_len=L, progress=False)


def drawn_cues(root: Path) -> dict[str, dict[str, str]]:
    with (root / CUES_FILE).open() as f:
        return {f"{r['split']}_dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}": r for r in csv.DictReader(f)}


def pooled(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)


def cv_accuracy(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=3000))
    return float(cross_val_score(model, x, y, cv=GroupKFold(5), groups=groups).mean())


# ------------------------------------------------------------------------------------------ on the data


def test_shapes_ids_and_columns(tiny: tuple[Path, FeatureSet]) -> None:
    root, fs = tiny
    n_rows = sum(len((root / name).read_bytes().splitlines()) - 1 for name in CSV_NAMES.values())
    assert len(fs) == n_rows
    assert {m: x.shape for m, x in fs.features.items()} == {
        "t": (n_rows, L, TEXT_DIM), "a": (n_rows, L, AUDIO_DIM), "v": (n_rows, L, 256)
    }
    for x in fs.features.values():
        assert x.dtype == np.float32 and np.isfinite(x).all()
        assert x.std() > 0.05
    assert len(set(fs.utterance_id)) == n_rows
    assert fs.utterance_id[0] == "train_dia0_utt0" and fs.group[0] == "train_dia0"
    assert all(u.startswith(g + "_utt") for u, g in zip(fs.utterance_id, fs.group, strict=True))
    assert set(fs.split) == {"train", "dev", "test"}
    assert fs.label_names == MELD_LABELS and set(fs.label) == set(MELD_LABELS)
    assert set(fs.speaker) <= {"Joey", "Ross", "Chandler", "Rachel", "Monica", "Phoebe"}
    assert set(drawn_cues(root)) == set(fs.utterance_id)


def test_round_trip_through_the_features_file(tiny: tuple[Path, FeatureSet], tmp_path: Path) -> None:
    _, fs = tiny
    back = load_features(save_features(tmp_path / "f.npz", fs), seq_len=L, label_names=MELD_LABELS)
    np.testing.assert_array_equal(back.features["v"], fs.features["v"])
    np.testing.assert_array_equal(back.group, fs.group)


@pytest.mark.parametrize(("modality", "cue", "minimum"), [("t", "text_valence", 0.9), ("a", "audio_arousal", 0.85),
                                                          ("v", "face", 0.75)])
def test_each_modality_carries_its_cue(tiny: tuple[Path, FeatureSet], modality: str, cue: str,
                                       minimum: float) -> None:
    root, fs = tiny
    cues = drawn_cues(root)
    y = np.array([cues[u][cue] for u in fs.utterance_id])
    majority = np.unique(y, return_counts=True)[1].max() / len(y)
    acc = cv_accuracy(pooled(fs.features[modality]), y, fs.group)
    assert acc > minimum > majority + 0.2, (modality, cue, acc, majority)


def test_the_combination_beats_every_single_modality(tiny: tuple[Path, FeatureSet]) -> None:
    _, fs = tiny
    single = {m: cv_accuracy(pooled(fs.features[m]), fs.label, fs.group) for m in fs.modalities}
    fused = cv_accuracy(np.concatenate([pooled(fs.features[m]) for m in fs.modalities], axis=1), fs.label, fs.group)
    assert fused > max(single.values()) + 0.05, (fused, single)


def test_text_only_needs_no_clips_and_says_it_is_a_stand_in(tiny: tuple[Path, FeatureSet], tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    root, fs = tiny
    for name in CSV_NAMES.values():
        shutil.copy(root / name, tmp_path / name)
    with caplog.at_level(logging.WARNING):
        text = extract_standin_features(tmp_path, seq_len=L, modalities=("t",), progress=False)
    assert "NOT RoBERTa / openSMILE / ResNet-50" in caplog.text
    assert text.modalities == ("t",)
    np.testing.assert_array_equal(text.features["t"], fs.features["t"])
    with pytest.raises(DataError, match=r"clips are missing .*pass --modalities t"):
        extract_standin_features(tmp_path, seq_len=L, modalities=("t", "a"), progress=False)


def test_the_stand_in_stage_says_it_reads_no_preceding_turns(tiny: tuple[Path, FeatureSet], tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    root, fs = tiny
    params = load_params(REPO / "params.yaml", profile="demo")
    with_context = dataclasses.replace(params, features=params.features.replace(text_context=2))
    for p, says in ((params, False), (with_context, True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            out = standin_features(root, tmp_path / "f.npz", p, modalities="t")
        assert ("features.text_context is 2, but the stand-in text features read each utterance alone"
                in caplog.text) is says
        np.testing.assert_array_equal(load_features(out, L).features["t"], fs.features["t"])  # the same features


def test_undecodable_clips_are_listed(tmp_path: Path) -> None:
    root = write_demo_dataset(tmp_path / "d", seed=3, dialogues=(1, 1, 1), progress=False)
    bad = root / CLIP_DIRS["dev"] / "dia0_utt1.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(DataError, match=r"1 clip\(s\) could not be decoded: dev_dia0_utt1: "):
        extract_standin_features(root, seq_len=4, modalities=("v",), progress=False)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="modalities"):
        extract_standin_features(".", modalities=("x",))
    with pytest.raises(ConfigError, match="seq_len"):
        extract_standin_features(".", seq_len=0)


# -------------------------------------------------------------------------------------------- units


def test_token_vectors_are_stable_hashes() -> None:
    """crc32-seeded, so the same in every process (Python's hash() is salted per process)."""
    expected = np.random.default_rng(zlib.crc32(b"great")).standard_normal(TEXT_DIM)
    np.testing.assert_allclose(token_vector("great"), expected, rtol=1e-6)
    assert not np.allclose(token_vector("great"), token_vector("awful"))
    assert tokenize("Oh no, that’s AWFUL!") == ["oh", "no", "that's", "awful"]


def test_text_features_pad_and_crop() -> None:
    x = text_features("one two three", 5)
    assert x.shape == (5, TEXT_DIM) and not x[3:].any()
    np.testing.assert_array_equal(x[1], token_vector("two"))
    assert text_features(" ".join(["w"] * 9), 4).shape == (4, TEXT_DIM)
    assert not text_features("", 3).any()


def _voiced(f0: float, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amp * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))).astype(np.float32)


def test_audio_descriptors_track_pitch_and_loudness() -> None:
    low, high = audio_features(_voiced(120.0), L), audio_features(_voiced(240.0, amp=0.6), L)
    assert low.shape == (L, AUDIO_DIM) and np.isfinite(low).all()
    # column 6 is log2(f0 / 100) on voiced windows, column 0 log10 RMS
    np.testing.assert_allclose(np.median(low[:, 6]), np.log2(1.2), atol=0.05)
    np.testing.assert_allclose(np.median(high[:, 6]), np.log2(2.4), atol=0.05)
    assert high[:, 0].mean() > low[:, 0].mean() + 0.2
    silent = audio_features(np.zeros(8000, np.float32), L)
    assert np.isfinite(silent).all() and not silent[:, 6].any()
    assert audio_features(np.ones(10, np.float32), L).shape == (L, AUDIO_DIM)  # shorter than L samples


def test_visual_features_are_area_averaged_grey() -> None:
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    frames[:, :32, :32] = 255  # top-left quadrant white
    x = visual_features(frames)
    assert x.shape == (2, 256)
    grid = x[0].reshape(16, 16) + 0.5
    np.testing.assert_allclose(grid[:8, :8], 1.0, atol=1e-3)
    np.testing.assert_allclose(grid[8:, :], 0.0, atol=1e-6)
