"""Inputs for the `hjcag predict` tests: two conversations of four turns (serve_fixtures' feature requests) written
as a features .npz, rows shuffled, so `predict` has to put each dialogue's turns back in order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import serve_fixtures as sf

# The last turn of each reads 3 earlier ones (the tiny run's context_window), of both speakers.
DIALOGUES = [sf.dialogue((1, 2, 3, 4), ("Ross", "Rachel", "Ross", "Monica")),
             sf.dialogue((11, 12, 13, 14), ("Joey", "Joey", "Chandler", "Joey"))]
SHUFFLE = (5, 0, 3, 1, 7, 2, 6, 4)  # the file's rows: d1u1, d0u0, d0u3, d0u1, d1u3, d0u2, d1u2, d1u0


def utterance_id(dialogue: int, turn: int) -> str:
    return f"d{dialogue}u{turn}"


def write_features(path: Path, dialogues: Sequence[Sequence[dict[str, Any]]] = DIALOGUES,
                   rows: Sequence[int] = SHUFFLE) -> Path:
    """`dialogues` as a features .npz (utterance_id, dialogue, speaker, order, label and (N, d) arrays), its rows
    in the order `rows` (indices into the dialogues' turns, flattened)."""
    flat = [(d, i, t) for d, turns in enumerate(dialogues) for i, t in enumerate(turns)]
    flat = [flat[r] for r in rows]
    arrays: dict[str, np.ndarray] = {
        "utterance_id": np.array([utterance_id(d, i) for d, i, _ in flat]),
        "dialogue": np.array([f"d{d}" for d, _, _ in flat]),
        "speaker": np.array([t["speaker"] for _, _, t in flat]),
        "order": np.array([i for _, i, _ in flat], dtype=np.float64),
        "label": np.array([sf.LABELS[1]] * len(flat)),
    }
    for key in ("text", "audio", "visual"):
        arrays[key] = np.stack([np.asarray(t["features"][key], np.float32) for _, _, t in flat])
    np.savez(path, **arrays)
    return path
