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
from hjcag.params import MODALITIES, ModelConfig

__all__ = ["MODEL_NAMES", "build_model", "model_class"]


def model_class(name: str) -> type[nn.Module]:
    """The class that builds model `name` (its catalogue entry's "module:Class"); an unknown name is a ConfigError."""
    module, _, cls = model_entry(name).builder.partition(":")
    built: type[nn.Module] = getattr(importlib.import_module(module), cls)
    return built


def build_model(name: str, input_dims: Mapping[str, int], num_classes: int, config: ModelConfig) -> nn.Module:
    """Any model of the harness: forward(inputs: {m: (B, L, d_m)}, present: (B, |M|) bool | None).

    With `config.probe_blend`, the model is wrapped in :class:`ProbeBlend` (its output unchanged until the probe is
    fitted after training, hjcag.train.probe). With `config.context` other than none, that is wrapped in
    :class:`ConversationContext` (one place for every model), whose forward also takes `context` (a ContextBatch);
    none builds the model alone, as before.
    """
    modalities = tuple(m for m in MODALITIES if m in input_dims)
    if not modalities:
        raise ConfigError("a model needs at least one modality")
    base = model_class(name)(input_dims, num_classes, config)
    if config.probe_blend:
        base = ProbeBlend(base, input_dims, num_classes)
    return base if config.context == "none" else ConversationContext(base, num_classes, config)
