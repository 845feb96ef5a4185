"""Input standardisation: statistics of the training part, saved with the weights, padding kept at zero."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hjcag.model.common import InputStandardizer
from hjcag.model.factory import MODEL_NAMES, build_model
from hjcag.params import ModelConfig


def _features(rng: np.random.Generator) -> dict[str, np.ndarray]:
    audio = rng.normal(500.0, 40.0, size=(50, 3, 4)).astype(np.float32)  # IS10-like scale
    audio[:, :, 3] = 7.0  # a constant column
    audio[:, 2] = 0.0  # a padded time step
    return {"a": audio}


def test_fit_standardises_non_zero_steps_and_keeps_padding_zero() -> None:
    features = _features(np.random.default_rng(0))
    std = InputStandardizer({"a": 4})
    std.fit(features, chunk=7)  # several chunks
    out = std({"a": torch.from_numpy(features["a"])})["a"].numpy()
    real = out[:, :2].reshape(-1, 4)
    np.testing.assert_allclose(real[:, :3].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(real[:, :3].std(axis=0), 1.0, atol=1e-3)
    np.testing.assert_allclose(real[:, 3], 0.0, atol=1e-6)  # constant column: centred, not divided by ~0
    assert np.all(out[:, 2] == 0.0)


def test_unfitted_standardizer_is_identity() -> None:
    x = torch.randn(2, 3, 4)
    assert torch.equal(InputStandardizer({"t": 4})({"t": x})["t"], x)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_statistics_travel_in_the_state_dict(name: str) -> None:
    config = ModelConfig(widths={"t": 8, "a": 8, "v": 8}, gate_width=8, classifier_hidden=8, seq_len=3,
                         mult={"d_model": 8, "heads": 2, "layers": 1})
    dims = {"t": 4, "a": 4}
    model = build_model(name, dims, 3, config)
    rng = np.random.default_rng(1)
    model.standardize.fit({m: rng.normal(100.0, 5.0, size=(20, 3, d)).astype(np.float32) for m, d in dims.items()})
    state = model.state_dict()
    assert float(state["standardize.mean_a"].mean()) == pytest.approx(100.0, abs=2.0)
    clone = build_model(name, dims, 3, config)
    clone.load_state_dict(state)
    model.eval()
    clone.eval()
    inputs = {m: torch.full((2, 3, d), 100.0) for m, d in dims.items()}
    assert torch.allclose(model(inputs).logits, clone(inputs).logits)
