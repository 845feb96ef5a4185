"""Conversation windows: for every utterance, its neighbours in the same dialogue (issue 10, docs/model.md).

A window is a row of S = k + 1 (causal: the k preceding utterances and the utterance itself) or S = 2k + 1
(bidirectional: also the k following ones) positions into the FeatureSet, column j holding the utterance at offset
j - k from the current one (the current utterance is always column k); -1 where the dialogue has no utterance at
that offset. Windows never leave a dialogue, and they are built from one FeatureSet: the training part of a fold
never reaches into its test part (folds are grouped by dialogue or session, so no dialogue is split).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hjcag.data.features_file import FeatureSet
from hjcag.errors import ConfigError
from hjcag.model.context import OTHER_SPEAKER, SAME_SPEAKER, UNKNOWN_SPEAKER, window_size


@dataclass(frozen=True)
class ContextWindows:
    """index (N, S) int64 rows of the FeatureSet or -1; speaker (N, S) int64 relation to the current speaker
    (0 other, 1 same, 2 unknown or no utterance); dialogues: each dialogue's rows in conversation order."""

    index: np.ndarray
    speaker: np.ndarray
    dialogues: tuple[np.ndarray, ...]


def dialogue_rows(fs: FeatureSet) -> tuple[np.ndarray, ...]:
    """Each dialogue's rows in conversation order (`order`, ties by row); dialogues in order of first appearance."""
    if fs.order is None:
        raise ConfigError(
            "conversation context (model.context) needs the utterances' order within their dialogue, and these "
            "features have none. Re-run `hjcag prepare` and `hjcag features` (manifests now carry a 'turn' column; "
            "in your own manifest fill 'turn' with the utterance's index or start time), or add an 'order' key to "
            "the features file; or set model.context: none."
        )
    conversation = fs.conversation.astype(str)
    _, first, inverse = np.unique(conversation, return_index=True, return_inverse=True)
    rows = np.lexsort((np.arange(len(fs)), fs.order, first[inverse]))  # by dialogue, then order, then row
    bounds = np.flatnonzero(np.diff(inverse[rows])) + 1
    return tuple(np.split(rows, bounds))


def context_windows(fs: FeatureSet, k: int, direction: str = "causal") -> ContextWindows:
    """The window of every utterance of `fs` (see the module docstring). `k` and `direction` are a ModelConfig's
    context_window and context_direction, which it checked when it was built (k >= 1, causal | bidirectional)."""
    size = window_size(k, direction)
    index = np.full((len(fs), size), -1, dtype=np.int64)
    dialogues = dialogue_rows(fs)
    after = k if direction == "bidirectional" else 0
    for rows in dialogues:
        for pos, row in enumerate(rows):
            lo, hi = max(0, pos - k), min(len(rows), pos + after + 1)
            index[row, k - (pos - lo): k + (hi - pos)] = rows[lo:hi]
    speaker = np.full(index.shape, UNKNOWN_SPEAKER, dtype=np.int64)
    if fs.speaker is not None:
        names = fs.speaker.astype(str)
        known = np.char.str_len(names) > 0
        valid = index >= 0
        neighbour = np.where(valid, index, 0)
        both = valid & known[:, None] & known[neighbour]
        same = names[neighbour] == names[:, None]
        speaker[both] = np.where(same[both], SAME_SPEAKER, OTHER_SPEAKER)
    return ContextWindows(index=index, speaker=speaker, dialogues=dialogues)
