"""The tiny inputs CLI tests train on: a params.yaml whose demo profile is shrunk to seconds (a context-free or a
context model), and a features file of random arrays. tests/conftest.py's `params` and `features` fixtures use them.
Import with `import params_fixtures` (tests/conftest.py puts this directory on sys.path)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]  # the demo profile's labels
TINY_MODEL = {"seq_len": 3, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8}
TINY_TRAIN = {"folds": 2, "epochs": 2, "batch_size": 16, "lr": 1e-3, "patience": 2, "device": "cpu"}
TINY_CONTEXT_MODEL = {"seq_len": 4, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8,
                      "context": "gru", "context_window": 3}


def demo_params(path: Path, model: dict[str, Any], train: dict[str, Any], **sections: dict[str, Any]) -> Path:
    """Write `path`: the repository's params.yaml with the demo profile's `model`, `train` and any other `sections`
    (e.g. gates) replaced."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["profiles"]["demo"].update(model=dict(model), train=dict(train), **sections)
    path.write_text(yaml.safe_dump(doc))
    return path


def context_params(path: Path, train: dict[str, Any], **sections: dict[str, Any]) -> Path:
    """Write `path`: the demo profile with TINY_CONTEXT_MODEL, `train` and any other `sections` (e.g. gates)."""
    return demo_params(path, TINY_CONTEXT_MODEL, train, **sections)


def features_file(path: Path, labels: Sequence[str], n: int, per_dialogue: int, *, seed: int = 0,
                  audio: bool = False) -> Path:
    """Write `path`: `n` utterances labelled in turn with `labels`, `per_dialogue` to a dialogue, random (3, 6) text
    features and, with `audio`, random (5,) audio features."""
    rng = np.random.default_rng(seed)
    arrays = {"text": rng.normal(size=(n, 3, 6)).astype(np.float32)}
    if audio:
        arrays["audio"] = rng.normal(size=(n, 5)).astype(np.float32)
    np.savez(path, utterance_id=np.array([f"u{i}" for i in range(n)]),
             label=np.array([labels[i % len(labels)] for i in range(n)]),
             group=np.array([f"d{i // per_dialogue}" for i in range(n)]), **arrays)
    return path
