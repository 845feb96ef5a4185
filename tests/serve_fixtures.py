"""A tiny trained run, a matching extractor config and request builders for the serving tests.

The run is trained for real (train_and_evaluate, 2 folds, 2 epochs, widths of 8) on random features whose dims
are exactly what the small serving extractors produce: MiniLM text (384, the offline fallback), openSMILE
eGeMAPSv02 audio (88) and a tiny random ResNet (32), so raw text / wav / mp4 requests go end to end.
Import with `import serve_fixtures` (tests/conftest.py puts this directory on sys.path).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hjcag.artifacts import (
    MODEL_CONFIG_FILE,
    WEIGHTS_FILE,
    build_trained_model,
    context_dropped,
    read_json,
    trained_model_config,
    weights_path,
)
from hjcag.data.features_file import FeatureSet, align_to_length
from hjcag.params import MODALITY_NAMES, FeaturesConfig, load_params
from hjcag.serve.local import LocalTorchServe
from hjcag.train.loop import TensorData, predict
from hjcag.train.run import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
SEQ_LEN = 6
DIMS = {"t": 384, "a": 88, "v": 32}
LABELS = ("neutral", "joy", "anger")
TINY_ARCH = {"depths": [1, 1], "hidden_sizes": [16, 32], "embedding_size": 8}
CONTEXT_HEAD = "head.3.weight"  # the last layer of ConversationContext.head: the context's correction of the logits
NO_MODEL = "hjcag-tests/no-such-model"  # never in any cache: the text extractor falls back to MiniLM


def local_server(store: Path) -> LocalTorchServe:
    """A real TorchServe over the archive in `store` for a test module (use as ``with local_server(store) as ts``):
    offline, one torch thread per worker (the tests' models are tiny)."""
    return LocalTorchServe(store, env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})


def features_config() -> FeaturesConfig:
    return FeaturesConfig(text_model=NO_MODEL, audio_set="eGeMAPSv02", visual_arch=TINY_ARCH, image_size=32,
                          seq_len=SEQ_LEN, device="cpu", workers=1, cache_dir=None, progress=False)


def train_tiny_run(out: Path, dims: dict[str, int] | None = None, context: str = "none") -> Path:
    """A finished 2-fold run of HJCAG on random features of `dims` (default DIMS); returns the run directory.
    `context` (gru | transformer): with conversation context over 3 turns (dialogues of 4, two speakers), trained
    jointly from the start (no warm start), so every fold's model reads the context by construction, whatever
    validation says on this machine."""
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
        train={"epochs": 2, "folds": 2, "batch_size": 16, "device": "cpu", "num_threads": 1,
               "context_warm_start": False},
    )
    train_and_evaluate(fs, params, tuple(dims), "hjcag", out, quiet=True)
    doc = read_json(out / MODEL_CONFIG_FILE)
    assert context_dropped(doc) == [] and doc["model_config"]["context"] == context  # no fold fell back
    if context != "none":
        _make_the_context_count(out)
    return out


def _make_the_context_count(run_dir: Path) -> None:
    """Set each fold's context layer so that the conversation moves answers by a wide margin. Trained for two epochs
    from its zero start, the context head changes an answer by about 1e-3, less than a float16 state's rounding: a
    serving test could not tell a right window from a wrong one. Here the head reads the conversation summary only,
    with fixed random weights, and a GRU's input weights are scaled up so that every turn of the window counts.
    The serving tests assert the margin they rely on, so it does not hang on what training did on this machine."""
    generator = torch.Generator().manual_seed(0)
    for weights in sorted(run_dir.glob("fold_*/" + WEIGHTS_FILE)):
        state = load_file(str(weights))
        first = torch.randn(state["head.0.weight"].shape, generator=generator) / 2
        first[:, : first.shape[1] // 2] = 0  # the head's input is [the utterance, the conversation summary]
        state["head.0.weight"] = first
        state[CONTEXT_HEAD] = 3 * torch.randn(state[CONTEXT_HEAD].shape, generator=generator)
        if "encoder.weight_ih_l0" in state:  # a GRU
            state["encoder.weight_ih_l0"] = 5 * state["encoder.weight_ih_l0"]
        save_file(state, str(weights))


def dialogue(seeds: Sequence[int], speakers: Sequence[str]) -> list[dict[str, Any]]:
    """A conversation's turns in order: feature requests (:func:`feature_request`) with their speaker."""
    return [{**feature_request(seed), "speaker": who} for seed, who in zip(seeds, speakers, strict=True)]


def offline_probabilities(run_dir: Path, dialogues: Sequence[Sequence[dict[str, Any]]]) -> list[np.ndarray]:
    """Each dialogue's (turns, classes) probabilities as offline evaluation computes them: the turns as a FeatureSet
    (features aligned by the features file loader), conversation windows from the training data path
    (hjcag.data.conversation via TensorData) and its forward pass (hjcag.train.loop.predict), on the run's default
    model. It shares no code with the serving window builder, so it is the reference the serving tests hold it to."""
    doc = read_json(run_dir / MODEL_CONFIG_FILE)
    weights = weights_path(doc, None, run_dir)
    model = build_trained_model(doc, run_dir / weights)
    rows = [(d, i, turn) for d, turns in enumerate(dialogues) for i, turn in enumerate(turns)]
    features = {m: align_to_length(np.stack([np.asarray(t["features"][MODALITY_NAMES[m]], np.float32)
                                             for _, _, t in rows]), SEQ_LEN) for m in DIMS}
    fs = FeatureSet(utterance_id=np.array([f"d{d}u{i}" for d, i, _ in rows]), label=np.array([LABELS[0]] * len(rows)),
                    group=np.array([f"d{d}" for d, _, _ in rows]), features=features, label_names=LABELS,
                    speaker=np.array([t["speaker"] for _, _, t in rows]),
                    order=np.array([i for _, i, _ in rows], dtype=np.float64))
    data = TensorData.from_features(fs, trained_model_config(doc, Path(weights).parent.name))
    logits, _ = predict(model, data, 64, torch.device("cpu"))
    probs = torch.softmax(logits, dim=1).numpy()
    ends = np.cumsum([len(turns) for turns in dialogues])
    return np.split(probs, ends[:-1])


def probabilities(answer: dict[str, Any]) -> np.ndarray:
    """An endpoint answer's probabilities in the label order."""
    return np.array([answer["probabilities"][label] for label in LABELS])


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
