"""MLflow tracking: one parent run per training run, a nested run per fold.

The parent run holds the flattened params, the final scores (mean and std over folds) and the reports and plots;
each fold run holds its per-epoch curves (step = epoch), its test scores and its predictions. Two ways in:

- :func:`train_with_tracking` logs while training (per-epoch metrics stream in through ``on_epoch``);
- :func:`log_training_run` logs a finished run directory after the fact (a DVC/KFP stage trains first and
  logs afterwards), reading ``metrics.json`` and every ``fold_K/history.json``.

Both end in the same layout. All calls go through an explicit :class:`MlflowClient` on the URIs of
:func:`tracking_uri` / :func:`registry_uri`, so nothing depends on a run being "active" in MLflow's global state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hjcag.artifacts import (
    BASE,
    CONTEXT,
    FOLDS_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_CONFIG_FILE,
    REPORT_FILE,
    RUN_FILE,
    STAGES_FILE,
    read_json,
)
from hjcag.errors import HjcagError
from hjcag.identity import params_identity
from hjcag.mlflow_store import missing_store, registry_uri, sqlite_file, tracking_uri
from hjcag.params import Params

log = logging.getLogger(__name__)

TAG_KIND = "hjcag.kind"            # "parent" | "fold"
TAG_FINGERPRINT = "hjcag.fingerprint"
TAG_RUN_DIR = "hjcag.run_dir"
TAG_COMPLETE = "hjcag.complete"    # "true" once every fold and artifact is logged (on a fold run: its results)
TAG_FOLD = "hjcag.fold"
TAG_CONTEXT_KEPT = "hjcag.context_kept"  # a warm-started context fold: "true" | "false" (the context-free model kept)
TAG_FOLDS_DONE = "hjcag.folds_done"  # parent of a partial run (--folds): "0,2 of 5", the folds logged so far
TAG_GATE = "hjcag.gate"            # "passed" | "failed", set by the register step
PARENT_TAG = "mlflow.parentRunId"  # what makes a run "nested" in MLflow's UI and search

REPORT_FILES = (METRICS_FILE, REPORT_FILE, MODEL_CONFIG_FILE, FOLDS_FILE, RUN_FILE)
PLOT_SUFFIXES = (".png", ".svg")
FOLD_FILES = ("history.json", "result.json", "predictions.csv", STAGES_FILE)
EPOCH_METRICS = ("train_loss", "val_loss", "val_acc", "val_weighted_f1", "lr")
# A warm-started context fold streams its two stages' epochs as <stage>_<metric> (hjcag.train.fit.stage_callback);
# the unprefixed epoch metrics are the kept model's, logged from its history.json once the fold is done.
STAGE_PREFIXES = ("", f"{BASE}_", f"{CONTEXT}_")
FOLD_SCALARS = ("accuracy", "weighted_f1", "macro_f1")
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100


# ---------------------------------------------------------------- URIs, client, noise


def get_client(*, existing: bool = False) -> Any:
    """An MlflowClient on the configured URIs; also points MLflow's global (fluent) API at them. `existing`: for
    commands that only read the registry, a SQLite store that is not there yet is an error, not a new file."""
    import mlflow
    from mlflow import MlflowClient

    t_uri, r_uri = tracking_uri(), registry_uri()
    if existing and (why := missing_store(r_uri)):
        raise HjcagError(why)
    if mlflow.get_tracking_uri() != t_uri:
        mlflow.set_tracking_uri(t_uri)
    if mlflow.get_registry_uri() != r_uri:
        mlflow.set_registry_uri(r_uri)
    with quiet_mlflow():  # the first access to a new SQLite store runs its migrations, chattily
        client = MlflowClient(tracking_uri=t_uri, registry_uri=r_uri)
        client.search_experiments(max_results=1)
    return client


_QUIET_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Mute MLflow's chatter for one block: database migrations, artifact progress bars, a "View run" link
    printed for every run that ends (fold runs too), advisory warnings. Errors still surface; our own log lines
    say what was logged and registered, with the link to the parent run."""
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    saved_env = {k: os.environ.get(k) for k in _QUIET_ENV}
    os.environ.update(_QUIET_ENV)
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            for category in (FutureWarning, UserWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=r"mlflow(\.|$)")
            warnings.filterwarnings("ignore", message=r".*(pkg_resources|starlette|pydantic).*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_url(experiment_id: str, run_id: str) -> str:
    """Where to see a run: the tracking server's UI page, or the run id for local stores."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} in {uri}"


def _sqlite_artifact_root(uri: str) -> str | None:
    """For ``sqlite:///x/y.db``: ``file:///abs/x/mlartifacts``, so artifacts live next to the database
    (MLflow's own default is ``./mlruns`` of whatever directory the process happens to run in)."""
    db_path = sqlite_file(uri)
    return None if db_path is None else (db_path.absolute().parent / "mlartifacts").as_uri()


def experiment_name(params: Params, experiment: str | None = None) -> str:
    """`experiment`, else ``MLFLOW_EXPERIMENT_NAME``, else ``hjcag-<dataset>``."""
    return experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"hjcag-{params.dataset}"


def get_or_create_experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise HjcagError(f"MLflow experiment '{name}' is deleted. Restore it (`mlflow experiments restore`) "
                             "or choose another name with MLFLOW_EXPERIMENT_NAME.")
        return str(found.experiment_id)
    root = _sqlite_artifact_root(tracking_uri())
    location = f"{root}/{_safe(name)}" if root else None
    return str(client.create_experiment(name, artifact_location=location))


# ---------------------------------------------------------------- params


def params_document(params: Params) -> dict[str, Any]:
    """The resolved params (after profile and overrides) as plain JSON-able data."""
    return json.loads(json.dumps({
        "profile": params.profile,
        "dataset": params.dataset,
        "seed": params.seed,
        "labels": list(params.labels),
        "model": dataclasses.asdict(params.model),
        "train": dataclasses.asdict(params.train),
        "gates": dataclasses.asdict(params.gates),
    }))


def params_hash(params: Params, model_name: str) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no whitespace) of the params a `model_name` model was trained
    with (:func:`hjcag.identity.params_identity`, the params part of its run's fingerprint). Gates, the profile's
    name and runtime-only settings (device, threads) are not in it: a new threshold re-checks a run without
    re-registering it."""
    canonical = json.dumps(params_identity(params, model_name), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'model': {'widths': {'t': 64}}} -> {'model.widths.t': '64'}; lists become JSON."""
    flat: dict[str, str] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = str(value)
    return flat


def flat_params(params: Params) -> dict[str, str]:
    return flatten(params_document(params))


# ---------------------------------------------------------------- low-level logging helpers


def _safe(name: str) -> str:
    """A metric/artifact-safe name (MLflow allows letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", str(name))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _log_metrics(client: Any, run_id: str, values: Mapping[str, Any], step: int = 0) -> None:
    from mlflow.entities import Metric

    ts = _now_ms()
    metrics = [Metric(_safe(k), float(v), ts, int(step)) for k, v in values.items()
               if v is not None and isinstance(v, int | float) and math.isfinite(float(v))]
    for start in range(0, len(metrics), _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + _MAX_METRICS_PER_BATCH])


def _epoch_metric(name: str) -> bool:
    return any(name.startswith(prefix) and name.removeprefix(prefix) in EPOCH_METRICS for prefix in STAGE_PREFIXES)


def _log_history(client: Any, run_id: str, history: Sequence[Mapping[str, Any]]) -> None:
    """Per-epoch metrics with step = epoch (1-based, as the training loop counts)."""
    from mlflow.entities import Metric

    ts = _now_ms()
    metrics = []
    for i, row in enumerate(history):
        step = int(row.get("epoch", i + 1))
        metrics += [Metric(k, float(row[k]), ts + i, step) for k in EPOCH_METRICS
                    if row.get(k) is not None and math.isfinite(float(row[k]))]
    for start in range(0, len(metrics), _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + _MAX_METRICS_PER_BATCH])


def _log_params(client: Any, run_id: str, values: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in values.items()]
    for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start:start + _MAX_PARAMS_PER_BATCH])


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """metrics.json -> flat {accuracy_mean, accuracy_std, ..., f1_<label>_mean, ...} for the parent run."""
    out: dict[str, float] = {}
    for name in FOLD_SCALARS:
        for stat in ("mean", "std"):
            value = (metrics.get(name) or {}).get(stat)
            if value is not None:
                out[f"{name}_{stat}"] = float(value)
    for label, stats in (metrics.get("per_class_f1") or {}).items():
        for stat in ("mean", "std"):
            if (stats or {}).get(stat) is not None:
                out[f"f1_{_safe(label)}_{stat}"] = float(stats[stat])
    for row in metrics.get("robustness") or []:  # the model with only these modalities present
        for name in ("accuracy", "weighted_f1"):
            out[f"only_{_safe(row['modalities'])}_{name}"] = float(row[name]["mean"])
    comparison = metrics.get("context_comparison") or {}
    for name, stat in (comparison.get("without_context") or {}).items():  # a warm start's stage-1 models on test
        out[f"without_context_{name}_mean"] = float(stat["mean"])
    return out


def fold_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """A fold's result.json -> test_* scores and training summary numbers."""
    out = {f"test_{k}": result[k] for k in FOLD_SCALARS if result.get(k) is not None}
    out.update({f"test_f1_{_safe(label)}": v for label, v in (result.get("per_class_f1") or {}).items()
                if v is not None})
    out.update({k: result[k] for k in ("best_epoch", "best_val_loss", "epochs_run") if result.get(k) is not None})
    for stage, summary in (result.get("stages") or {}).items():  # a warm-started context fold's two stages
        out.update({f"{stage}_{k}": float(v) for k, v in summary.items() if v is not None})
    out.update({f"test_without_context_{k}": float(v) for k, v in (result.get("without_context") or {}).items()})
    return out


# ---------------------------------------------------------------- the run logger


class RunLogger:
    """Creates the parent run and one nested run per fold, then fills them in.

    With `resume` (the id of an unfinished parent run, see :func:`unfinished_parent`) it continues that run
    instead: status back to RUNNING, its fold runs reused, epochs they already hold not logged again, and fold runs
    already logged in full (by a partial run: ``--folds``) left as they are.
    """

    def __init__(self, params: Params, experiment: str | None = None, run_name: str | None = None,
                 tags: Mapping[str, str] | None = None, resume: str | None = None) -> None:
        self.client = get_client()
        self.params = params
        self.fold_runs: dict[str, str] = {}  # unit (fold_K, or fold_K_seed_S) -> its nested run
        # unit -> (metric prefix, epoch) already logged (live, or before a resume); prefix "" is the kept model's
        self._streamed: dict[str, set[tuple[str, int]]] = {}
        self._logged: set[str] = set()  # units whose fold run holds its results and is FINISHED
        with quiet_mlflow():
            self.experiment_id = get_or_create_experiment(self.client, experiment_name(params, experiment))
            if resume is None:
                run = self.client.create_run(self.experiment_id, run_name=run_name,
                                             tags={TAG_KIND: "parent", **(tags or {})})
                self.parent_run_id: str = run.info.run_id
                _log_params(self.client, self.parent_run_id, flat_params(params))
            else:
                self.parent_run_id = resume
                self._reopen()

    def _reopen(self) -> None:
        """Continue the parent run `self.parent_run_id` where a killed or failed process left it."""
        c, parent = self.client, self.parent_run_id
        c.update_run(parent, status="RUNNING")
        for run in _nested_runs(c, self.experiment_id, parent):
            unit = run.info.run_name
            self.fold_runs[unit] = run.info.run_id
            if run.data.tags.get(TAG_COMPLETE) == "true":
                self._logged.add(unit)
                continue
            if run.info.status != "RUNNING":
                c.update_run(run.info.run_id, status="RUNNING")
            self._streamed[unit] = {(prefix, m.step) for prefix in STAGE_PREFIXES for name in EPOCH_METRICS
                                    for m in c.get_metric_history(run.info.run_id, prefix + name)}
        # MLflow refuses to change a logged param: log only the new ones (a runtime-only setting such as
        # train.num_threads may differ on a resume; the run keeps the value it started with).
        logged = c.get_run(parent).data.params
        _log_params(c, parent, {k: v for k, v in flat_params(self.params).items() if k not in logged})
        log.info("resuming MLflow run %s (%d fold run(s) so far)", parent, len(self.fold_runs))

    def fold_run(self, unit: str) -> str:
        if unit not in self.fold_runs:
            fold = unit.split("_")[1]
            run = self.client.create_run(
                self.experiment_id, run_name=unit,
                tags={PARENT_TAG: self.parent_run_id, TAG_KIND: "fold", TAG_FOLD: fold},
            )
            self.fold_runs[unit] = run.info.run_id
        return self.fold_runs[unit]

    def on_epoch(self, unit: str, epoch: int, metrics: dict[str, float]) -> None:
        """The run's ``on_epoch`` callback: stream one epoch into the fold's (unit's) run (once: an epoch trained
        again after a resume from an earlier checkpoint is not logged twice)."""
        values = {k: v for k, v in metrics.items() if _epoch_metric(k)}
        prefix = next((p for p in STAGE_PREFIXES[1:] if any(k.startswith(p) for k in values)), "")
        seen = self._streamed.setdefault(unit, set())
        if (prefix, int(epoch)) in seen:
            return
        seen.add((prefix, int(epoch)))
        _log_metrics(self.client, self.fold_run(unit), values, step=epoch)

    def _log_fold(self, run_dir: Path, result: Mapping[str, Any]) -> None:
        """Log one finished fold (unit) of `run_dir` into its nested run and end that run FINISHED; a fold run
        already logged in full is left alone."""
        unit = str(result["unit"])
        if unit in self._logged:
            return
        c = self.client
        run_id, fold_dir = self.fold_run(unit), run_dir / unit
        _log_params(c, run_id, {"fold": str(result["fold"]), **{
            n: str(result[n]) for n in ("n_train", "n_val", "n_test", "seed", "run_seed") if n in result}})
        if (fold_dir / HISTORY_FILE).exists():  # epochs not streamed live (e.g. before a resume)
            seen = self._streamed.get(unit, set())
            _log_history(c, run_id, [row for i, row in enumerate(read_json(fold_dir / HISTORY_FILE))
                                     if ("", int(row.get("epoch", i + 1))) not in seen])
        _log_metrics(c, run_id, fold_metrics(result))
        if result.get("context_kept") is not None:
            c.set_tag(run_id, TAG_CONTEXT_KEPT, str(result["context_kept"]).lower())
        for name in FOLD_FILES:
            if (fold_dir / name).exists():
                c.log_artifact(run_id, str(fold_dir / name), "fold")
        c.set_tag(run_id, TAG_COMPLETE, "true")
        c.set_terminated(run_id, "FINISHED")
        self._logged.add(unit)

    def complete(self, run_dir: Path) -> str:
        """Log everything a finished run directory holds; mark all runs FINISHED; return the parent run id."""
        run_dir = Path(run_dir)
        metrics = read_json(run_dir / METRICS_FILE)
        c, parent = self.client, self.parent_run_id
        with quiet_mlflow():
            _log_params(c, parent, {
                "run.model": metrics.get("model", ""),
                "run.modalities": ",".join(metrics.get("modalities", [])),
                "run.protocol": metrics.get("protocol", ""),
                "run.n_folds": str(metrics.get("n_folds", "")),
                "run.n_utterances": str(metrics.get("n_utterances", "")),
                "run.labels": ",".join(metrics.get("labels", [])),  # class index order (may come from the data)
            })
            for result in metrics.get("folds", []):
                self._log_fold(run_dir, result)
            _log_metrics(c, parent, final_metrics(metrics))
            for name in REPORT_FILES:
                if (run_dir / name).exists():
                    c.log_artifact(parent, str(run_dir / name), "report")
            for plot in sorted(p for p in run_dir.iterdir() if p.suffix in PLOT_SUFFIXES):
                c.log_artifact(parent, str(plot), "plots")
            c.log_text(parent, json.dumps(params_document(self.params), indent=2), "report/params.json")
            c.set_tag(parent, TAG_FINGERPRINT, str(metrics.get("fingerprint", "")))
            c.set_tag(parent, TAG_RUN_DIR, str(run_dir.absolute()))
            c.set_tag(parent, TAG_FOLDS_DONE, _folds_done(metrics.get("folds", []), metrics.get("n_folds")))
            c.set_tag(parent, TAG_COMPLETE, "true")
            c.set_terminated(parent, "FINISHED")
        log.info("logged %s to MLflow with %d fold run(s): %s", run_dir, len(self.fold_runs),
                 run_url(self.experiment_id, parent))
        return parent

    def partial(self, run_dir: Path, results: Sequence[Mapping[str, Any]], n_folds: int) -> str:
        """End a run that trained only some folds (``--folds``): their fold runs logged in full and FINISHED, the
        parent FINISHED but not complete (no scores: they need every fold). The next tracked training of the same
        run directory and settings resumes this parent run and completes it once every fold is there."""
        c, parent = self.client, self.parent_run_id
        with quiet_mlflow():
            for result in results:
                self._log_fold(Path(run_dir), result)
            done = _folds_done(results, n_folds)
            c.set_tag(parent, TAG_FOLDS_DONE, done)
            c.set_tag(parent, TAG_COMPLETE, "false")
            c.set_terminated(parent, "FINISHED")
        log.info("logged fold(s) %s of %s to MLflow; the run completes when every fold is trained: %s", done,
                 run_dir, run_url(self.experiment_id, parent))
        return parent

    def fail(self) -> None:
        """Mark the parent run and the fold runs it was filling FAILED (fold runs logged in full stay FINISHED)."""
        with quiet_mlflow():
            for unit, run_id in self.fold_runs.items():
                if unit not in self._logged:
                    self.client.set_terminated(run_id, "FAILED")
            self.client.set_terminated(self.parent_run_id, "FAILED")


def _folds_done(results: Sequence[Mapping[str, Any]], n_folds: Any) -> str:
    """"0,2 of 5": the folds (not units: a fold trained with several seeds counts once) of `results`."""
    folds = sorted({int(r["fold"]) for r in results})
    return f"{','.join(map(str, folds))} of {n_folds}"


def _default_run_name(run_dir: Path) -> str:
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.exists():
        m = read_json(metrics_path)
        return f"{m.get('model', 'run')}-{'+'.join(m.get('modalities', []))}-{str(m.get('fingerprint', ''))[:8]}"
    return run_dir.name


def log_training_run(run_dir: str | Path, params: Params, experiment: str | None = None,
                     run_name: str | None = None) -> str:
    """Log a finished run directory (parent run + nested fold runs) and return the parent run id."""
    run_dir = Path(run_dir)
    if not (run_dir / METRICS_FILE).exists():
        raise HjcagError(f"'{run_dir}' has no metrics.json; finish the run with `hjcag train` before logging it.")
    logger = RunLogger(params, experiment, run_name or _default_run_name(run_dir))
    try:
        return logger.complete(run_dir)
    except BaseException:
        logger.fail()
        raise


def find_logged_run(run_dir: str | Path, params: Params, experiment: str | None = None) -> str | None:
    """The id of a completely logged parent run of this run directory's results (same fingerprint), if any."""
    metrics_path = Path(run_dir) / METRICS_FILE
    if not metrics_path.exists():
        return None
    fp = str(read_json(metrics_path).get("fingerprint", ""))
    client = get_client()
    with quiet_mlflow():
        exp = client.get_experiment_by_name(experiment_name(params, experiment))
        if exp is None or not fp:
            return None
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{TAG_FINGERPRINT}` = '{fp}' and tags.`{TAG_COMPLETE}` = 'true' "
                          f"and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
    return runs[0].info.run_id if runs else None


def ensure_logged(run_dir: str | Path, params: Params, experiment: str | None = None) -> str:
    """The parent run id of `run_dir`, logging it first unless an identical run is already logged."""
    found = find_logged_run(run_dir, params, experiment)
    if found is not None:
        log.info("%s is already logged to MLflow as run %s", run_dir, found)
        return found
    return log_training_run(run_dir, params, experiment)


def _nested_runs(client: Any, experiment_id: str, parent: str) -> list[Any]:
    return list(client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'",
                                   max_results=1000))


def unfinished_parent(client: Any, experiment_id: str, run_dir: Path, fingerprint: str) -> str | None:
    """The newest parent run that trained `run_dir` with these settings and never completed (its process was
    killed, or failed), so a resumed training continues it rather than leaving it beside a second one."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'parent' and tags.`{TAG_FINGERPRINT}` = '{fingerprint}'",
        order_by=["attributes.start_time DESC"], max_results=100,
    )
    where = str(run_dir.absolute())
    return next((r.info.run_id for r in runs
                 if r.data.tags.get(TAG_RUN_DIR) == where and r.data.tags.get(TAG_COMPLETE) != "true"), None)


def fail_stale_parents(client: Any, experiment_id: str, run_dir: Path, keep: str) -> list[str]:
    """Mark FAILED the parent runs (and their fold runs) still RUNNING for `run_dir` other than `keep`: runs of
    earlier settings whose process was killed. The directory now holds another run, so they can never finish."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'parent' and "
                              "attributes.status = 'RUNNING'", max_results=1000)
    where, stale = str(run_dir.absolute()), []
    for run in runs:
        if run.info.run_id != keep and run.data.tags.get(TAG_RUN_DIR) == where:
            for fold in _nested_runs(client, experiment_id, run.info.run_id):
                if fold.info.status == "RUNNING":
                    client.set_terminated(fold.info.run_id, "FAILED")
            client.set_terminated(run.info.run_id, "FAILED")
            stale.append(run.info.run_id)
    if stale:
        log.warning("marked %d unfinished MLflow run(s) of %s FAILED (killed runs of other settings): %s",
                    len(stale), run_dir, ", ".join(stale))
    return stale


def tracked_run_logger(params: Params, model_name: str, out_dir: Path, fingerprint: str,
                       experiment: str | None = None) -> RunLogger:
    """The logger of a tracked training into `out_dir`: the unfinished parent run of the same run directory and
    settings when there is one (a resume after kill -9, Ctrl-C or a failure), else a new parent run."""
    client = get_client()
    with quiet_mlflow():
        experiment_id = get_or_create_experiment(client, experiment_name(params, experiment))
        resume = unfinished_parent(client, experiment_id, out_dir, fingerprint)
    tags = {TAG_RUN_DIR: str(out_dir.absolute()), TAG_FINGERPRINT: fingerprint}
    logger = RunLogger(params, experiment, run_name=f"{model_name}-{out_dir.name}", tags=tags, resume=resume)
    with quiet_mlflow():
        fail_stale_parents(client, experiment_id, out_dir, keep=logger.parent_run_id)
    return logger


def train_with_tracking(fs: Any, params: Params, modalities: Sequence[str], model_name: str, out_dir: str | Path,
                        experiment: str | None = None, quiet: bool = False,
                        only_folds: Sequence[int] | None = None) -> tuple[dict[str, Any], str]:
    """:func:`hjcag.train.run.train_and_evaluate` with live MLflow logging; returns (metrics, parent run id).

    The parent run is tagged with the run directory and its settings' fingerprint from the start, so running the
    same command again after the process was killed continues that parent run: one parent run per run directory
    and settings, FINISHED once the run is complete. `only_folds` trains just those folds, as the untracked run
    does (``{"complete": False, ...}`` until every fold is there); the parent run then ends FINISHED without
    scores (tag ``hjcag.complete`` false, ``hjcag.folds_done`` the folds so far), and the training that brings
    the last fold resumes and completes it."""
    from hjcag.train.folds import make_folds
    from hjcag.train.run import require_known_folds, start_run_dir, train_and_evaluate

    out_dir = Path(out_dir)
    if only_folds is not None:  # a mistyped fold starts no MLflow run
        cfg = params.train
        require_known_folds(make_folds(fs, cfg.protocol, cfg.folds, cfg.val_fraction, params.seed), only_folds,
                            cfg.protocol)
    digest = start_run_dir(fs, params, modalities, model_name, out_dir)  # refuses other settings before MLflow
    logger = tracked_run_logger(params, model_name, out_dir, digest, experiment)
    try:
        metrics = train_and_evaluate(fs, params, modalities, model_name, out_dir, on_epoch=logger.on_epoch,
                                     quiet=quiet, only_folds=only_folds)
        if metrics.get("complete") is False:
            return metrics, logger.partial(out_dir, metrics["folds"], metrics["n_folds"])
        return metrics, logger.complete(out_dir)
    except BaseException:
        logger.fail()
        raise
