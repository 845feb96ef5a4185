"""Fold splitting: grouping, stratification, every utterance tested once, validation never touches test, holdout."""

from __future__ import annotations

import numpy as np
import pytest

from hjcag.data.features_file import FeatureSet
from hjcag.errors import ConfigError, DataError, HjcagError
from hjcag.train.folds import make_folds

LABELS = ("ang", "hap", "neu", "sad")


def feature_set(n_groups: int = 40, per_group: int = 8, seed: int = 0, split: np.ndarray | None = None,
                group_prefix: str = "dia") -> FeatureSet:
    """Labels drawn per utterance (skewed class frequencies), groups are contiguous blocks of rows."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    y = rng.choice(len(LABELS), size=n, p=[0.4, 0.3, 0.2, 0.1])
    return FeatureSet(
        utterance_id=np.array([f"u{i}" for i in range(n)]),
        label=np.array(LABELS)[y],
        group=np.array([f"{group_prefix}{i // per_group}" for i in range(n)]),
        features={"t": rng.normal(size=(n, 2, 3)).astype(np.float32)},
        split=split,
        label_names=LABELS,
    )


def groups_of(fs: FeatureSet, idx: np.ndarray) -> set[str]:
    return set(fs.group[idx].tolist())


def test_cv5_tests_every_utterance_exactly_once_and_keeps_groups_together() -> None:
    fs = feature_set()
    folds = make_folds(fs, "cv5", n_folds=5, val_fraction=0.1, seed=3)
    assert [f.index for f in folds] == [0, 1, 2, 3, 4]
    tested = np.concatenate([f.test_idx for f in folds])
    assert sorted(tested.tolist()) == list(range(len(fs)))  # each row once
    for i, a in enumerate(folds):
        for b in folds[i + 1 :]:
            assert not groups_of(fs, a.test_idx) & groups_of(fs, b.test_idx)
    for f in folds:
        parts = [f.train_idx, f.val_idx, f.test_idx]
        assert all(len(p) > 0 for p in parts)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(fs)))  # a partition of all rows
        # no group straddles train / val / test
        assert not groups_of(fs, f.train_idx) & groups_of(fs, f.val_idx)
        assert not groups_of(fs, f.train_idx) & groups_of(fs, f.test_idx)
        assert not groups_of(fs, f.val_idx) & groups_of(fs, f.test_idx)
        # the validation split is a modest share of the training part, not the test fold
        share = len(f.val_idx) / (len(f.val_idx) + len(f.train_idx))
        assert 0.03 < share < 0.25


def test_cv5_is_stratified() -> None:
    fs = feature_set(n_groups=100, per_group=4)
    overall = np.bincount(fs.targets, minlength=len(LABELS)) / len(fs)
    for f in make_folds(fs, "cv5", n_folds=5, val_fraction=0.1, seed=0):
        share = np.bincount(fs.targets[f.test_idx], minlength=len(LABELS)) / len(f.test_idx)
        assert np.abs(share - overall).max() < 0.05, (share, overall)


def test_cv5_is_deterministic_per_seed() -> None:
    fs = feature_set()
    a = make_folds(fs, "cv5", 5, 0.1, seed=1)
    b = make_folds(fs, "cv5", 5, 0.1, seed=1)
    c = make_folds(fs, "cv5", 5, 0.1, seed=2)
    for x, y in zip(a, b, strict=True):
        for part in ("train_idx", "val_idx", "test_idx"):
            np.testing.assert_array_equal(getattr(x, part), getattr(y, part))
    assert any(not np.array_equal(x.test_idx, y.test_idx) for x, y in zip(a, c, strict=True))


def test_five_sessions_give_leave_one_session_out() -> None:
    fs = feature_set(n_groups=5, per_group=30, group_prefix="Ses0")
    folds = make_folds(fs, "cv5", n_folds=5, val_fraction=0.1, seed=0)
    test_sessions = [groups_of(fs, f.test_idx) for f in folds]
    assert all(len(s) == 1 for s in test_sessions)
    assert set().union(*test_sessions) == {f"Ses0{i}" for i in range(5)}
    for f in folds:  # validation is one of the four remaining sessions
        assert len(groups_of(fs, f.val_idx)) == 1
        assert len(groups_of(fs, f.train_idx)) == 3


def test_fewer_groups_than_folds_is_a_clear_error() -> None:
    fs = feature_set(n_groups=3, per_group=10)
    with pytest.raises(DataError, match=r"3 distinct group\(s\).*5 folds"):
        make_folds(fs, "cv5", n_folds=5, val_fraction=0.1, seed=0)


def test_bad_protocol_and_val_fraction_are_config_errors() -> None:
    fs = feature_set()
    with pytest.raises(ConfigError, match="unknown protocol"):
        make_folds(fs, "loso", 5, 0.1, 0)
    with pytest.raises(ConfigError, match="val_fraction"):
        make_folds(fs, "cv5", 5, 0.0, 0)


def test_holdout_uses_the_split_column_with_dev_as_validation() -> None:
    n_groups, per = 20, 5
    split = np.array(["train"] * 60 + ["dev"] * 15 + ["test"] * 25)
    fs = feature_set(n_groups=n_groups, per_group=per, split=split)
    folds = make_folds(fs, "holdout", n_folds=5, val_fraction=0.1, seed=0)
    assert len(folds) == 1
    (fold,) = folds
    np.testing.assert_array_equal(fold.train_idx, np.arange(60))
    np.testing.assert_array_equal(fold.val_idx, np.arange(60, 75))
    np.testing.assert_array_equal(fold.test_idx, np.arange(75, 100))


def test_holdout_without_dev_carves_validation_from_train_by_group() -> None:
    split = np.array(["train"] * 80 + ["test"] * 20)
    fs = feature_set(n_groups=20, per_group=5, split=split)
    (fold,) = make_folds(fs, "holdout", n_folds=5, val_fraction=0.2, seed=0)
    np.testing.assert_array_equal(fold.test_idx, np.arange(80, 100))
    assert len(fold.val_idx) > 0
    assert sorted(np.concatenate([fold.train_idx, fold.val_idx]).tolist()) == list(range(80))
    assert not groups_of(fs, fold.train_idx) & groups_of(fs, fold.val_idx)


def test_holdout_errors_name_the_problem() -> None:
    with pytest.raises(HjcagError, match="'split' column"):
        make_folds(feature_set(), "holdout", 5, 0.1, 0)
    no_test = np.array(["train"] * 200 + ["dev"] * 120)
    with pytest.raises(HjcagError, match="non-empty 'test' split"):
        make_folds(feature_set(split=no_test), "holdout", 5, 0.1, 0)
