"""`model.context: auto` (issue 22 item 6): conversation context where the data has dialogue order, the model alone
where it has none. Resolved against the features when training starts; the trained model records what it was."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from hjcag.cli import main
from hjcag.data.features_file import FeatureSet, save_features
from hjcag.errors import ConfigError
from hjcag.model.factory import build_model
from hjcag.params import AUTO_CONTEXT, ModelConfig, load_params, resolve_context
from params_fixtures import REPO, TINY_CONTEXT_MODEL, TINY_TRAIN, demo_params

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def test_auto_is_gru_with_dialogue_order_and_none_without() -> None:
    auto = ModelConfig(context="auto")
    assert resolve_context(auto, has_order=True).context == AUTO_CONTEXT == "gru"
    assert resolve_context(auto, has_order=False).context == "none"
    for setting in ("none", "gru", "transformer"):  # a concrete setting is kept, order or not
        assert resolve_context(ModelConfig(context=setting), has_order=False).context == setting


def test_an_unresolved_auto_is_never_built() -> None:
    with pytest.raises(ConfigError, match="resolved against the features"):
        build_model("hjcag", {"t": 6}, 3, ModelConfig(context="auto"))


def test_profiles_that_read_dialogues_default_to_auto_and_the_paper_model_stays_one_setting_away(
        tmp_path: Path) -> None:
    for profile in ("meld", "iemocap", "generic"):
        assert load_params(REPO / "params.yaml", profile).model.context == "auto", profile
    assert load_params(REPO / "params.yaml", "demo").model.context == "none"
    assert load_params(REPO / "params.yaml", None).model.context == "none"  # the top level: the paper's model


def dialogue_features(path: Path, with_order: bool) -> Path:
    """40 utterances in dialogues of 5 turns, two speakers, text (40, 4, 6); the order key only `with_order`."""
    rng = np.random.default_rng(0)
    n = 40
    y = np.arange(n) % 3
    return save_features(path, FeatureSet(
        utterance_id=np.array([f"u{i:02d}" for i in range(n)]), label=np.array(["x", "y", "z"])[y],
        group=np.array([f"d{i // 5}" for i in range(n)]),
        features={"t": (rng.normal(size=(n, 4, 6)) + y[:, None, None]).astype(np.float32)},
        speaker=np.array(["A", "B"] * (n // 2)),
        order=(np.arange(n) % 5).astype(np.float64) if with_order else None, label_names=("x", "y", "z")))


@pytest.mark.parametrize(("with_order", "expected"), [(True, "gru"), (False, "none")])
def test_a_run_with_auto_trains_and_records_what_the_features_allow(
        with_order: bool, expected: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    params = demo_params(tmp_path / "params.yaml", {**TINY_CONTEXT_MODEL, "context": "auto"},
                         {**TINY_TRAIN, "num_threads": 1})
    features = dialogue_features(tmp_path / "features.npz", with_order)
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="hjcag.train.run"):
        assert main(["train", "--features", str(features), "--params", str(params), "--profile", "demo",
                     "--labels", "x,y,z", "--out", str(out)]) == 0
    doc = json.loads((out / "model_config.json").read_text())
    assert doc["model_config"]["context"] == expected
    assert f"model.context auto: {expected}" in caplog.text
    results = [json.loads(p.read_text()) for p in sorted(out.glob("fold_*/result.json"))]
    assert results and all(("context_kept" in r) is with_order for r in results)  # a warm start only with order
