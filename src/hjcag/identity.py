"""What params a model was trained with: one definition for every record that says so.

A run's fingerprint (:func:`hjcag.train.run.run_identity`: these params, the modalities and the data) decides
whether a run directory may be resumed; the registry's ``params_hash`` (:func:`hjcag.registry.tracking.params_hash`)
tags a model version with them. Both derive from :func:`params_identity`, so they cannot disagree on what counts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hjcag.model_catalog import settings_not_read_by
from hjcag.params import Params

# Train settings that do not change the numbers a run produces; a run may be resumed with different values.
RUNTIME_ONLY = ("device", "num_threads")
# Model settings added after runs existed, with the value that is the model as it was before them: at that value
# a setting is left out, so a run trained before it existed keeps its fingerprint (and its registry tag).
ADDED_MODEL_SETTINGS = {"probe_blend": False}


def params_identity(params: Params, model_name: str) -> dict[str, Any]:
    """The params a `model_name` model trains with: its name, the model section without the keys only other
    models read (:func:`hjcag.model_catalog.settings_not_read_by`: ``mult`` for all but the MulT baseline) and
    the :data:`ADDED_MODEL_SETTINGS` at their old value, the train section without :data:`RUNTIME_ONLY` settings,
    and the seed. The keys and values are part of every run's fingerprint (run.json): changing them orphans
    existing runs."""
    model_cfg = dataclasses.asdict(params.model)
    for key in settings_not_read_by(model_name):
        model_cfg.pop(key, None)
    for key, before in ADDED_MODEL_SETTINGS.items():
        if model_cfg.get(key) == before:
            model_cfg.pop(key)
    train_cfg = {k: v for k, v in dataclasses.asdict(params.train).items() if k not in RUNTIME_ONLY}
    train_cfg["betas"] = list(train_cfg["betas"])
    return {"model": model_name, "model_config": model_cfg, "train": train_cfg, "seed": params.seed}
