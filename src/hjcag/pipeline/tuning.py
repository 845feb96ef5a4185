"""The KFP tuning pipeline ``hjcag-tuning``: raw data -> prepare -> validate -> features -> tune (``hjcag tune`` on
the folds' validation splits, on a GPU node). Its outputs are the params text with the tuned profile
(``<profile>-tuned``) and that profile's name: pass them as ``params_yaml`` and ``profile`` to the training pipeline
(:mod:`hjcag.pipeline.training`), which then trains, gates, registers and deploys the tuned model.

A separate pipeline rather than a branch of the training one: ``kfp.local`` (what the tests run the training
pipeline with) does not hand a task's string outputs to the tasks inside a ``ParallelFor``.
"""

from typing import NamedTuple

from kfp import dsl

from hjcag.pipeline import components as c
from hjcag.pipeline.training import _on_gpu, _with_data, _with_mlflow

PIPELINE_NAME = "hjcag-tuning"


class Tuned(NamedTuple):
    params_yaml: str
    profile: str


@dsl.pipeline(name=PIPELINE_NAME, description="HJCAG tuning: validate, extract features, Optuna search on each "
              "fold's validation split; outputs the params with the tuned profile for the training pipeline.")
def tuning_pipeline(
    params_yaml: str = "",
    profile: str = "",
    source_dir: str = "",
    dataset_kind: str = "meld",
    demo_size: str = "tiny",
    modalities: str = "t,a,v",
    standin_features: bool = False,
    feature_cache: str = "",
    experiment: str = "",
    tune_trials: int = 20,
    tune_storage: str = "",
) -> Tuned:
    """The training pipeline's data parameters, plus tune_trials (the study's budget) and tune_storage (an Optuna
    storage URL; empty: a SQLite file in the tune step's output, so each run starts a new study)."""
    p = {"params_yaml": params_yaml, "profile": profile}
    raw = _with_data(c.raw_data(source_dir=source_dir, demo_size=demo_size, **p))
    manifest = _with_data(c.prepare(raw=raw.outputs["raw"], dataset_kind=dataset_kind, modalities=modalities, **p))
    validated = _with_data(c.validate(manifest=manifest.outputs["manifest"], modalities=modalities, **p))
    feats = _on_gpu(_with_data(c.features(raw=raw.outputs["raw"], validated=validated.outputs["validated"],
                                          modalities=modalities, standin=standin_features, cache_dir=feature_cache,
                                          **p)))
    tuned = _on_gpu(_with_mlflow(c.tune(features=feats.outputs["features"], trials=tune_trials,
                                        modalities=modalities, storage=tune_storage, experiment=experiment, **p)))
    return Tuned(params_yaml=tuned.outputs["params_yaml"], profile=tuned.outputs["profile"])
