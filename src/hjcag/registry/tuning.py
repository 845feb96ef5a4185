"""MLflow records of ``hjcag tune`` (:mod:`hjcag.train.tune`): a parent run per Optuna study, found again when the
study resumes (tags ``hjcag.kind=tune``, ``hjcag.study``), and a nested run per trial with the trial's values as
params, its running score per pruning step, its fold scores and objective, and its state: FINISHED (complete),
KILLED (pruned, tag ``hjcag.trial_state=PRUNED``) or FAILED (also when its process was killed: the resumed study
closes the run, tag ``hjcag.trial_error``)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hjcag.params import Params
from hjcag.registry.tracking import (
    PARENT_TAG,
    TAG_KIND,
    experiment_name,
    flat_params,
    get_client,
    get_or_create_experiment,
    quiet_mlflow,
)
from hjcag.train.tune import Tracker

TAG_STUDY, TAG_TRIAL, TAG_STATE = "hjcag.study", "hjcag.trial", "hjcag.trial_state"
TAG_ERROR = "hjcag.trial_error"
KIND_STUDY, KIND_TRIAL = "tune", "tune-trial"
_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


class MlflowTracker(Tracker):
    """A parent run per study (found again when the study resumes) and a nested run per trial."""

    def __init__(self, params: Params, study: str, experiment: str | None = None) -> None:
        from mlflow.entities import Param

        self.client = get_client()
        self.metric = params.tune.metric
        with quiet_mlflow():
            self.experiment_id = get_or_create_experiment(self.client, experiment_name(params, experiment))
            query = f"tags.`{TAG_KIND}` = '{KIND_STUDY}' and tags.`{TAG_STUDY}` = '{study}'"
            found = self.client.search_runs([self.experiment_id], filter_string=query,
                                            order_by=["attributes.start_time ASC"], max_results=1)
            if found:  # the study resumes: so does its parent run
                self.parent = found[0].info.run_id
                self.client.update_run(self.parent, status="RUNNING")
            else:
                self.parent = self.client.create_run(self.experiment_id, run_name=f"tune-{study}",
                                                     tags={TAG_KIND: KIND_STUDY, TAG_STUDY: study}).info.run_id
                base = {**flat_params(params), "tune.metric": self.metric, "tune.study": study}
                self.client.log_batch(self.parent, params=[Param(k, v[:6000]) for k, v in base.items()])
        self.study = study

    def start_trial(self, number: int, values: Mapping[str, Any]) -> str | None:
        from mlflow.entities import Param

        with quiet_mlflow():
            run = self.client.create_run(self.experiment_id, run_name=f"trial_{number}", tags={
                PARENT_TAG: self.parent, TAG_KIND: KIND_TRIAL, TAG_STUDY: self.study, TAG_TRIAL: str(number)})
            self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in values.items()])
        return str(run.info.run_id)

    def step(self, run_id: str | None, step: int, value: float) -> None:
        if run_id is not None and math.isfinite(value):
            with quiet_mlflow():
                self.client.log_metric(run_id, f"running_{self.metric}", value, step=step)

    def end_trial(self, run_id: str | None, state: str, value: float | None, fold_scores: Sequence[float]) -> None:
        from mlflow.entities import Metric

        if run_id is None:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(f"fold_{self.metric}", float(s), now, i) for i, s in enumerate(fold_scores)]
        if value is not None:
            metrics.append(Metric(self.metric, value, now, 0))
        with quiet_mlflow():
            if metrics:
                self.client.log_batch(run_id, metrics=metrics)
            self.client.set_tag(run_id, TAG_STATE, state)
            self.client.set_terminated(run_id, _RUN_STATUS[state])

    def abandon(self, run_id: str, reason: str) -> None:
        from mlflow.exceptions import MlflowException

        with quiet_mlflow():
            try:
                run = self.client.get_run(run_id)
            except MlflowException:  # not in this tracking store (the study was run against another one)
                return
            if run.info.status == "RUNNING":
                self.client.set_tag(run_id, TAG_STATE, "FAIL")
                self.client.set_tag(run_id, TAG_ERROR, reason[:5000])
                self.client.set_terminated(run_id, "FAILED")

    def finish(self, summary: Mapping[str, Any], files: Sequence[Path], failed: bool = False) -> None:
        from mlflow.entities import Metric

        best = summary.get("best") or {}
        with quiet_mlflow():
            if best:
                now = int(time.time() * 1000)
                self.client.log_batch(self.parent, metrics=[Metric(f"best_{self.metric}", best["value"], now,
                                                                   int(summary["finished"]))])
                self.client.set_tag(self.parent, "hjcag.best_trial", str(best["trial"]))
                self.client.set_tag(self.parent, "hjcag.best_params", json.dumps(best["params"], sort_keys=True))
            for path in files:
                if path.exists():
                    self.client.log_artifact(self.parent, str(path), "tune")
            self.client.set_terminated(self.parent, "FAILED" if failed else "FINISHED")
