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
from hjcag.pipeline.training import _on_gpu, _with_mlflow, features_tasks

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
    feats = features_tasks(p, source_dir, dataset_kind, demo_size, modalities, standin_features, feature_cache)
    tuned = _on_gpu(_with_mlflow(c.tune(features=feats.outputs["features"], trials=tune_trials,
                                        modalities=modalities, storage=tune_storage, experiment=experiment, **p)))
    return Tuned(params_yaml=tuned.outputs["params_yaml"], profile=tuned.outputs["profile"])
