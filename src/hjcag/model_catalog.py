"""Every fusion model of the harness, declared once: its `model.name`, the class that builds it, and whether it is
a baseline of the paper's model.

Everything that lists models reads this table: params' `model.name` rule (`MODEL_NAMES`), the factory
(:func:`hjcag.model.factory.build_model`), the CLI's `--model` choices, the demo's baselines and the ablation's
paper model. Adding a model is one `ModelEntry` here plus its module in :mod:`hjcag.model`.

It sits in the lowest layer, beside :mod:`hjcag.params`, so it must not import torch: a builder is named as
"module:Class" and the factory imports it when a model is built (every builder lives in the :mod:`hjcag.model`
package; tests/test_architecture.py holds that rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from hjcag.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str         # model.name in params.yaml, --model on the CLI
    builder: str      # "hjcag.model.<module>:<Class>", called as Class(input_dims, num_classes, config)
    baseline: bool    # a baseline of the paper's model (the demo trains each one beside it)
    description: str  # one line, for readers
    own_settings: tuple[str, ...] = ()  # model.* keys only this model reads (other models' runs leave them out)


MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("hjcag", "hjcag.model.hjcag:HJCAG", False,
               "the paper's model: hierarchical joint cross-modal attention and a modality gate"),
    ModelEntry("concat", "hjcag.model.baselines:ConcatFusion", True,
               "early fusion: pooled projections concatenated, MLP"),
    ModelEntry("late", "hjcag.model.baselines:LateFusion", True,
               "late fusion: one classifier per modality, probabilities averaged"),
    ModelEntry("mult", "hjcag.model.baselines:MulT", True, "MulT-style cross-modal transformer", ("mult",)),
)

MODEL_NAMES: tuple[str, ...] = tuple(entry.name for entry in MODELS)  # model.name's choices, in this order
BASELINES: tuple[str, ...] = tuple(entry.name for entry in MODELS if entry.baseline)
(PAPER_MODEL,) = (entry.name for entry in MODELS if not entry.baseline)  # exactly one model is not a baseline


def model_entry(name: str) -> ModelEntry:
    """The entry of model `name`; an unknown name is a ConfigError that lists the known ones."""
    for entry in MODELS:
        if entry.name == name:
            return entry
    raise ConfigError(f"unknown model '{name}'. Choose one of {list(MODEL_NAMES)}.")


def settings_not_read_by(name: str) -> tuple[str, ...]:
    """The model.* keys that only other models read: what `name`'s run identity leaves out."""
    return tuple(key for entry in MODELS if entry.name != name for key in entry.own_settings)


def check_model_name(name: str) -> None:
    """Refuse an unknown model name with the message the factory gives (callers that check before building)."""
    model_entry(name)
