"""Train / validation / test indices for the two evaluation protocols.

- ``cv5``: k folds grouped by ``group`` (a dialogue, or an IEMOCAP session, which makes it leave-one-session-out),
  stratified by label where the groups allow it (``StratifiedGroupKFold``). Every utterance is tested exactly once
  and no group is in two folds' test sets.
- ``holdout``: the dataset's own ``split`` column (train / dev / test), one fold; dev is the validation set.

Inside every fold the validation set is carved from the training part *by group* (so no dialogue straddles train
and validation) and it alone picks the epoch: the test fold is never used for selection.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from hjcag.data.features_file import FeatureSet
from hjcag.errors import ConfigError, DataError
from hjcag.params import PROTOCOLS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fold:
    """Row indices into the FeatureSet (sorted, int64, pairwise disjoint)."""

    index: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray

    def as_ids(self, fs: FeatureSet) -> dict[str, list[str]]:
        """The fold as utterance ids (what ``folds.json`` stores)."""
        return {
            "train": fs.utterance_id[self.train_idx].tolist(),
            "val": fs.utterance_id[self.val_idx].tolist(),
            "test": fs.utterance_id[self.test_idx].tolist(),
        }


def make_folds(
    fs: FeatureSet,
    protocol: str = "cv5",
    n_folds: int = 5,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> list[Fold]:
    """Folds for `protocol` ('cv5' or 'holdout'); deterministic for a given `seed`."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(
            f"train.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}: every fold needs a "
            "validation split for early stopping."
        )
    if protocol == "cv5":
        return _grouped_folds(fs, n_folds, val_fraction, seed)
    if protocol == "holdout":
        return [_holdout_fold(fs, val_fraction, seed)]
    raise ConfigError(f"unknown protocol '{protocol}'. Use one of {list(PROTOCOLS)}.")


def _grouped_folds(fs: FeatureSet, n_folds: int, val_fraction: float, seed: int) -> list[Fold]:
    if n_folds < 2:
        raise ConfigError(f"train.folds must be at least 2 for the cv5 protocol, got {n_folds}.")
    groups = np.asarray(fs.group).astype(str)
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise DataError(
            f"the features hold {n_groups} distinct group(s) (dialogues/sessions) but {n_folds} folds were asked "
            f"for; grouped cross-validation needs at least one group per fold. Lower train.folds to {max(n_groups, 2)} "
            "or less, use --protocol holdout, or check the 'group' column."
        )
    targets = fs.targets
    index = np.arange(len(fs))
    test_sets = _split_groups(targets, groups, n_folds, seed)
    folds = []
    for k, test_idx in enumerate(test_sets):
        rest = np.setdiff1d(index, test_idx)
        train_idx, val_idx = carve_validation(targets, groups, rest, val_fraction, seed + 1 + k)
        folds.append(Fold(k, train_idx, val_idx, np.sort(test_idx)))
    return folds


def _split_groups(targets: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[np.ndarray]:
    """Test index sets of a grouped, stratified split; falls back to plain GroupKFold if a fold would be empty."""
    x = np.zeros(len(targets))
    tests: list[np.ndarray] = []
    with warnings.catch_warnings():
        # "The least populated class in y has only N members": stratification is best effort here.
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed % 2**32)
        try:
            tests = [test for _, test in splitter.split(x, targets, groups)]
        except ValueError as exc:  # classes too small to stratify at all
            log.debug("stratified grouped split impossible (%s); using GroupKFold", exc)
    if tests and all(len(t) for t in tests):
        return tests
    log.debug("stratified grouped split left a fold empty; using GroupKFold")
    return [test for _, test in GroupKFold(n_splits=n_splits).split(x, targets, groups)]


def carve_validation(
    targets: np.ndarray, groups: np.ndarray, candidates: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split `candidates` (row indices) into (train, val) by group, val about `val_fraction` of the rows.

    Uses one fold of a stratified grouped split with round(1 / val_fraction) folds (fewer when there are fewer
    groups, so with 4 sessions left the validation set is one whole session). With a single group left there is
    no grouped way to validate, so it falls back to a random row split and says so.
    """
    cand_groups = groups[candidates]
    n_groups = len(np.unique(cand_groups))
    if n_groups >= 2:
        n_splits = min(max(2, round(1.0 / val_fraction)), n_groups)
        tests = _split_groups(targets[candidates], cand_groups, n_splits, seed)
        val_local = tests[0]
    else:
        log.warning(
            "only one group in a training part: the validation split is a random %.0f%% of its rows, "
            "not a separate group.", 100 * val_fraction
        )
        if len(candidates) < 2:
            raise DataError("a training part has fewer than 2 utterances; there is nothing to validate on.")
        rng = np.random.default_rng(seed)
        n_val = min(max(1, round(val_fraction * len(candidates))), len(candidates) - 1)
        val_local = rng.permutation(len(candidates))[:n_val]
    mask = np.zeros(len(candidates), dtype=bool)
    mask[val_local] = True
    return np.sort(candidates[~mask]), np.sort(candidates[mask])


def _holdout_fold(fs: FeatureSet, val_fraction: float, seed: int) -> Fold:
    if fs.split is None:
        raise DataError(
            "the holdout protocol needs a 'split' column (train/dev/test) in the features file, and this one has "
            "none. Add it, or use --protocol cv5 (grouped cross-validation)."
        )
    split = np.asarray(fs.split).astype(str)
    index = np.arange(len(fs))
    train_idx, val_idx, test_idx = (index[split == s] for s in ("train", "dev", "test"))
    for name, idx in (("train", train_idx), ("test", test_idx)):
        if len(idx) == 0:
            counts = {s: int((split == s).sum()) for s in ("train", "dev", "test")}
            raise DataError(
                f"the holdout protocol needs a non-empty '{name}' split, but the features' split column has "
                f"{counts}. Fix the 'split' column or use --protocol cv5."
            )
    if len(val_idx) == 0:
        log.info("no 'dev' split: carving %.0f%% of train (by dialogue) for validation", 100 * val_fraction)
        by = fs.group if fs.dialogue is None else fs.dialogue  # IEMOCAP: dialogues, not whole sessions
        train_idx, val_idx = carve_validation(fs.targets, np.asarray(by).astype(str), train_idx, val_fraction, seed)
    return Fold(0, np.sort(train_idx), np.sort(val_idx), np.sort(test_idx))
