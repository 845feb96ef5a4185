"""The model catalogue (hjcag.model_catalog) is the one declaration of the models: the factory builds every entry,
and params, the CLI, the demo and the ablation read their names from it instead of listing them again."""

from __future__ import annotations

import argparse
import inspect

import pytest
import torch

import hjcag.demo
import hjcag.model.factory
import hjcag.params
from hjcag import model_catalog
from hjcag.cli import build_parser
from hjcag.errors import ConfigError
from hjcag.model.factory import build_model, model_class
from hjcag.model.table4 import TABLE4
from hjcag.model_catalog import BASELINES, MODEL_NAMES, MODELS, PAPER_MODEL, ModelEntry
from hjcag.params import ModelConfig
from hjcag.train import ablate
from hjcag.train.run import select_run

TINY = ModelConfig(widths={"t": 8, "a": 8, "v": 8}, gate_width=8, classifier_hidden=8, seq_len=3,
                   mult={"d_model": 8, "heads": 2, "layers": 1})
DIMS = {"t": 4, "a": 5, "v": 6}


@pytest.mark.parametrize("entry", MODELS, ids=lambda e: e.name)
def test_the_factory_builds_every_declared_model(entry: ModelEntry) -> None:
    model = build_model(entry.name, DIMS, 3, TINY)
    assert type(model) is model_class(entry.name)
    assert f"{type(model).__module__}:{type(model).__name__}" == entry.builder
    logits = model({m: torch.randn(2, 3, d) for m, d in DIMS.items()}).logits
    assert logits.shape == (2, 3)


def test_the_names_are_derived_from_the_entries() -> None:
    assert tuple(e.name for e in MODELS) == MODEL_NAMES and len(set(MODEL_NAMES)) == len(MODEL_NAMES)
    assert BASELINES == tuple(e.name for e in MODELS if e.baseline) == tuple(n for n in MODEL_NAMES if n != PAPER_MODEL)
    assert ModelConfig().name == PAPER_MODEL  # the default model is the paper's


def test_params_the_factory_the_cli_and_the_demo_read_the_catalogue() -> None:
    assert hjcag.params.MODEL_NAMES is MODEL_NAMES  # model.name's rule
    assert hjcag.model.factory.MODEL_NAMES is MODEL_NAMES
    assert hjcag.demo.BASELINES is BASELINES
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    model_options = {command: action.choices for command, parser in commands.items() for action in parser._actions
                     if action.dest == "model" and action.choices is not None}  # predict's --model is a path
    assert set(model_options) == {"train", "tune"}
    assert all(choices is MODEL_NAMES for choices in model_options.values()), model_options


def test_the_ablation_takes_the_paper_model_from_the_catalogue() -> None:
    assert inspect.signature(ablate.run_ablation).parameters["model_name"].default == PAPER_MODEL
    fs = type("Features", (), {"modalities": ("t", "a", "v"), "order": None})()
    switches = next(row for row in TABLE4 if row.model_overrides)
    assert ablate._skip_reason(switches, fs, PAPER_MODEL) is None  # type: ignore[arg-type]
    for name in BASELINES:
        assert "HJCAG model only" in str(ablate._skip_reason(switches, fs, name))  # type: ignore[arg-type]


def test_the_factory_reads_the_catalogue_when_it_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new entry is all the factory needs: no second table of builders."""
    extra = ModelEntry("extra", "hjcag.model.baselines:ConcatFusion", True, "a test's extra model")
    monkeypatch.setattr(model_catalog, "MODELS", (*MODELS, extra))
    assert type(build_model("extra", DIMS, 3, TINY)).__name__ == "ConcatFusion"


def test_an_unknown_model_has_one_message_everywhere() -> None:
    message = f"unknown model 'gpt'. Choose one of {list(MODEL_NAMES)}."
    with pytest.raises(ConfigError) as factory:
        build_model("gpt", DIMS, 3, TINY)
    with pytest.raises(ConfigError) as run:
        select_run(None, None, ("t",), "gpt")  # type: ignore[arg-type]  # the name is checked first
    assert str(factory.value) == str(run.value) == message
