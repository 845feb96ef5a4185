"""A tiny trained run, a matching extractor config and request builders for the serving tests.

The run is trained for real (train_and_evaluate, 2 folds, 2 epochs, widths of 8) on random features whose dims
are exactly what the small serving extractors produce: MiniLM text (384, the offline fallback), openSMILE
eGeMAPSv02 audio (88) and a tiny random ResNet (32), so raw text / wav / mp4 requests go end to end.
Import with `import serve_fixtures` (tests/conftest.py puts this directory on sys.path).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from hjcag.data.features_file import FeatureSet
from hjcag.params import FeaturesConfig, load_params
from hjcag.train.run import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
SEQ_LEN = 6
DIMS = {"t": 384, "a": 88, "v": 32}
LABELS = ("neutral", "joy", "anger")
TINY_ARCH = {"depths": [1, 1], "hidden_sizes": [16, 32], "embedding_size": 8}
NO_MODEL = "hjcag-tests/no-such-model"  # never in any cache: the text extractor falls back to MiniLM


def features_config() -> FeaturesConfig:
    return FeaturesConfig(text_model=NO_MODEL, audio_set="eGeMAPSv02", visual_arch=TINY_ARCH, image_size=32,
                          seq_len=SEQ_LEN, device="cpu", workers=1, cache_dir=None, progress=False)


def train_tiny_run(out: Path, dims: dict[str, int] | None = None, context: str = "none") -> Path:
    """A finished 2-fold run of HJCAG on random features of `dims` (default DIMS); returns the run directory.
    `context` (gru | transformer): with conversation context over 3 turns (dialogues of 4, two speakers)."""
    dims = dims or DIMS
    rng = np.random.default_rng(0)
    n = 40
    y = rng.integers(0, len(LABELS), n)
    features = {m: (rng.normal(size=(n, SEQ_LEN, d)) + y[:, None, None]).astype(np.float32) for m, d in dims.items()}
    fs = FeatureSet(utterance_id=np.array([f"u{i:02d}" for i in range(n)]), label=np.array(LABELS)[y],
                    group=np.array([f"dia{i // 4}" for i in range(n)]), features=features, label_names=LABELS,
                    speaker=np.array(["Ross", "Rachel"] * (n // 2)), order=np.arange(n, dtype=np.float64) % 4)
    params = load_params(ROOT / "params.yaml", "demo").with_overrides(
        model={"seq_len": SEQ_LEN, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8,
               "context": context, "context_window": 3},
        train={"epochs": 2, "folds": 2, "batch_size": 16, "device": "cpu", "num_threads": 1},
    )
    train_and_evaluate(fs, params, tuple(dims), "hjcag", out, quiet=True)
    return out


def feature_request(seed: int, modalities: str = "tav", steps: int | None = None) -> dict[str, Any]:
    """A pre-extracted features request; (d,) vectors, or (steps, d) sequences when `steps` is given."""
    rng = np.random.default_rng(seed)
    names = {"t": "text", "a": "audio", "v": "visual"}
    feats = {}
    for m in modalities:
        shape = (DIMS[m],) if steps is None else (steps, DIMS[m])
        feats[names[m]] = np.round(rng.normal(size=shape), 4).tolist()
    return {"features": feats}


def packed(values: Any, dtype: str = "float32") -> dict[str, Any]:
    """A feature array in the packed request form: {"dtype", "shape", "b64" of its little-endian bytes}."""
    array = np.ascontiguousarray(values, dtype={"float16": "<f2", "float32": "<f4"}[dtype])
    return {"dtype": dtype, "shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")
