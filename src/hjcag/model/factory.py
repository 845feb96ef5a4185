"""The model factory: every fusion model of the harness by name (docs/model.md), as :mod:`hjcag.model_catalog`
declares them.

It lives apart from :mod:`hjcag.model.common` so that the shared pieces (common) are imported by the models
(hjcag, baselines) and the factory imports the models: no import cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from torch import nn

from hjcag.errors import ConfigError
from hjcag.model.context import ConversationContext
from hjcag.model.probe import ProbeBlend
from hjcag.model_catalog import MODEL_NAMES, model_entry
from hjcag.params import CONTEXTS, MODALITIES, ModelConfig

__all__ = ["MODEL_NAMES", "build_model", "model_class"]


def model_class(name: str) -> type[nn.Module]:
    """The class that builds model `name` (its catalogue entry's "module:Class"); an unknown name is a ConfigError."""
    module, _, cls = model_entry(name).builder.partition(":")
    built: type[nn.Module] = getattr(importlib.import_module(module), cls)
    return built


def build_model(name: str, input_dims: Mapping[str, int], num_classes: int, config: ModelConfig) -> nn.Module:
    """Any model of the harness: forward(inputs: {m: (B, L, d_m)}, present: (B, |M|) bool | None).

    With `config.context` other than none, the model is wrapped in :class:`ConversationContext` (one place for every
    model), whose forward also takes `context` (a ContextBatch); none builds the model alone, as before. With
    `config.probe_blend`, that is wrapped in :class:`ProbeBlend` (outermost: the probe is blended with the whole
    model's decision; its output is the wrapped model's until the probe is fitted after training,
    hjcag.train.probe).
    """
    modalities = tuple(m for m in MODALITIES if m in input_dims)
    if config.context not in CONTEXTS:
        raise ConfigError(f"model.context {config.context!r} is resolved against the features before a model is "
                          "built (hjcag.train.fit.trained_config); build with gru, transformer or none.")
    if not modalities:
        raise ConfigError("a model needs at least one modality")
    model = model_class(name)(input_dims, num_classes, config)
    if config.context != "none":
        model = ConversationContext(model, num_classes, config)
    return ProbeBlend(model, input_dims, num_classes) if config.probe_blend else model
