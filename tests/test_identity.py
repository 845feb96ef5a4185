"""One definition of what params a model was trained with (hjcag.identity): a run's fingerprint and the registry's
params hash both derive from it, and the fingerprint keeps its value (existing run directories resume with it)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from hjcag.data.features_file import FeatureSet
from hjcag.identity import params_identity
from hjcag.params import GateConfig, params_from_dict
from hjcag.registry.tracking import params_hash
from hjcag.train.run import data_digest, fingerprint, run_identity

FS = FeatureSet(utterance_id=np.array(["u0", "u1", "u2"]), label=np.array(["a", "b", "a"]),
                group=np.array(["d0", "d0", "d1"]), features={"t": np.arange(12, dtype=np.float32).reshape(3, 2, 2)})
PARAMS = params_from_dict({"seed": 3, "train": {"device": "cpu", "num_threads": 2, "seeds": [1, 2]}})


@pytest.mark.parametrize(("model_name", "pinned"), [("hjcag", "ebb17d2df9ba68d7"), ("mult", "4816f22a5bc3f901")])
def test_the_run_fingerprint_keeps_its_value(model_name: str, pinned: str) -> None:
    """Pinned from the code before hjcag.identity existed. A new value means every existing run directory refuses to
    resume and the demo's archive names change: update the pin only for a change that must retrain."""
    assert fingerprint(run_identity(FS, PARAMS, ("t",), model_name)) == pinned


def test_a_run_identity_is_the_params_identity_with_the_modalities_and_the_data() -> None:
    identity = run_identity(FS, PARAMS, ("t",), "hjcag")
    assert identity == {**params_identity(PARAMS, "hjcag"), "modalities": ["t"], "labels": ["a", "b"],
                        "data": data_digest(FS)}
    assert "mult" not in identity["model_config"] and "mult" in params_identity(PARAMS, "mult")["model_config"]
    assert not {"device", "num_threads"} & set(identity["train"])


def test_the_params_hash_is_the_hash_of_the_params_identity() -> None:
    canonical = json.dumps(params_identity(PARAMS, "hjcag"), sort_keys=True, separators=(",", ":"))
    assert params_hash(PARAMS, "hjcag") == hashlib.sha256(canonical.encode()).hexdigest()
    elsewhere = dataclasses.replace(PARAMS.with_overrides(train={"device": "auto", "num_threads": 8}),
                                    profile="other", gates=GateConfig(min_accuracy=0.5))
    assert params_hash(elsewhere, "hjcag") == params_hash(PARAMS, "hjcag")  # neither where it ran nor the gates
    assert params_hash(PARAMS.with_overrides(train={"lr": 0.5}), "hjcag") != params_hash(PARAMS, "hjcag")
    assert params_hash(PARAMS, "concat") != params_hash(PARAMS, "hjcag")


def test_a_setting_only_one_model_reads_enters_only_that_models_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which model.* keys belong to one model is declared in its catalogue entry (no model name in hjcag.identity):
    giving the concat baseline ``mult`` as its own setting moves ``mult`` from MulT's identity to concat's."""
    from hjcag import model_catalog

    assert "mult" in params_identity(PARAMS, "mult")["model_config"]
    assert "mult" not in params_identity(PARAMS, "concat")["model_config"]
    entries = tuple(dataclasses.replace(e, own_settings=("mult",) if e.name == "concat" else ())
                    for e in model_catalog.MODELS)
    monkeypatch.setattr(model_catalog, "MODELS", entries)
    assert "mult" in params_identity(PARAMS, "concat")["model_config"]
    assert "mult" not in params_identity(PARAMS, "mult")["model_config"]
