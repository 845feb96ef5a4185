"""The model factory: every fusion model of the harness by name (docs/model.md).

It lives apart from :mod:`hjcag.model.common` so that the shared pieces (common) are imported by the models
(hjcag, baselines) and the factory imports the models: no import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from hjcag.errors import ConfigError
from hjcag.model.baselines import ConcatFusion, LateFusion, MulT
from hjcag.model.context import ConversationContext
from hjcag.model.hjcag import HJCAG
from hjcag.params import MODALITIES, MODEL_NAMES, ModelConfig

_BUILDERS: dict[str, type[nn.Module]] = {"hjcag": HJCAG, "concat": ConcatFusion, "late": LateFusion, "mult": MulT}


def build_model(name: str, input_dims: Mapping[str, int], num_classes: int, config: ModelConfig) -> nn.Module:
    """Any model of the harness: forward(inputs: {m: (B, L, d_m)}, present: (B, |M|) bool | None).

    With `config.context` other than none, the model is wrapped in :class:`ConversationContext` (one place for
    every model), whose forward also takes `context` (a ContextBatch); none builds the model alone, as before.
    """
    modalities = tuple(m for m in MODALITIES if m in input_dims)
    if not modalities:
        raise ConfigError("a model needs at least one modality")
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model '{name}'. Choose one of {list(MODEL_NAMES)}.")
    base = _BUILDERS[name](input_dims, num_classes, config)
    return base if config.context == "none" else ConversationContext(base, num_classes, config)
