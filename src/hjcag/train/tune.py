"""``hjcag tune``: an Optuna search over ``tune.space`` whose objective never sees a test fold.

A trial trains every fold of ``train.protocol`` on the fold's *training* part and scores it on the fold's
*validation* split (carved from the training part by group, :mod:`hjcag.train.folds`): ``tune.metric`` at the
epoch early stopping keeps, averaged over folds. The test rows of a fold are never indexed. With
``model.probe_blend`` a fold's weighted F1 is its blend's (what ``hjcag train`` delivers,
:meth:`hjcag.train.fit.FittedModel.val_score`); the per-epoch scores that pruning sees are the model's alone (the
probe is fitted after the last epoch).

- Storage: an Optuna RDB study, by default ``optuna.db`` beside the MLflow SQLite store; re-running the same
  command loads the study (``load_if_exists``) and only tops the budget up (finished = complete + pruned trials).
- Pruning: after every epoch the trial reports the running score (finished folds' scores and the current fold's
  best so far) at step ``fold position x EPOCH_STRIDE + epoch``, so all trials compare the same fold and epoch.
- MLflow (through a :class:`Tracker`, :mod:`hjcag.registry.tuning`): one parent run per study, a nested run per
  trial with its values, its per-epoch running score and its state (FINISHED, KILLED when pruned, FAILED).
- A trial whose process died (kill -9, out of memory) would stay RUNNING: each process holds an ``flock`` for as
  long as it runs trials and names it in every trial it starts (:func:`trial_owner`); a resumed study marks FAILED
  (in Optuna, study.json and MLflow) the RUNNING trials whose owner's lock is free (:func:`fail_orphaned_trials`),
  and Optuna's heartbeat catches those of a process on another machine after ``GRACE_S``.
- Output: ``<out>/best.yaml`` (the best values as section overrides), ``<out>/study.json`` (every trial), and
  :func:`hjcag.params_file.write_profile` puts the best values into params.yaml as a profile ``hjcag train
  --profile`` reads.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from hjcag.artifacts import BASE, CONTEXT, write_json
from hjcag.data.features_file import FeatureSet
from hjcag.device import resolve_device, torch_threads
from hjcag.errors import ConfigError, HjcagError
from hjcag.mlflow_store import DEFAULT_TRACKING_URI, sqlite_file
from hjcag.params import TUNABLE_SECTIONS, Params, SearchDimension
from hjcag.train.fit import fit_model
from hjcag.train.folds import Fold, make_folds
from hjcag.train.run import fingerprint, fold_seed, run_identity, select_run
from hjcag.train.unit_lock import LOCK_DIR, exclusive_lock

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

BEST_FILE = "best.yaml"
STUDY_FILE = "study.json"
STORAGE_FILE = "optuna.db"
EPOCH_STRIDE = 100_000  # pruning step = fold position x EPOCH_STRIDE + epoch (no fold runs that many epochs)
HEARTBEAT_S = 60  # a trial whose process died is marked failed after GRACE_S without a heartbeat
GRACE_S = 180
IDENTITY_ATTR = "hjcag_identity"
OWNER_ATTR = "hjcag_owner"  # the trial's process: the token of its lock (trial_owner)


# ---------------------------------------------------------------- the search space


def search_space(params: Params) -> list[SearchDimension]:
    """``tune.space``, every key a field of its params section (a typo is an error naming the closest field)."""
    for dim in params.tune.space:
        known = [f.name for f in dataclasses.fields(getattr(params, dim.section))]
        if dim.name not in known:
            close = difflib.get_close_matches(dim.name, known, n=1)
            hint = f"did you mean {dim.section}.{close[0]}?" if close else f"{dim.section} has {sorted(known)}"
            raise ConfigError(f"tune.space: '{dim.key}' is not a params field; {hint}")
    if not params.tune.space:
        raise ConfigError("tune.space has nothing to tune: add SECTION.FIELD entries (e.g. train.lr: {low: 1.0e-5, "
                          "high: 1.0e-3, log: true}) to the tune section of params.yaml.")
    return list(params.tune.space)


def suggest(trial: optuna.Trial, space: Sequence[SearchDimension]) -> dict[str, Any]:
    """One value per dimension, named by its dotted key."""
    values: dict[str, Any] = {}
    for dim in space:
        if dim.choices is not None:
            values[dim.key] = trial.suggest_categorical(dim.key, list(dim.choices))
        elif dim.is_int:
            values[dim.key] = trial.suggest_int(dim.key, int(dim.low), int(dim.high), step=int(dim.step or 1),
                                                log=dim.log)
        else:
            values[dim.key] = trial.suggest_float(dim.key, float(dim.low), float(dim.high), step=dim.step,
                                                  log=dim.log)
    return values


def overrides(params: Params, values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{dotted key: value} -> {section: {field: value}}; a scalar for a per-modality mapping (model.widths) is
    given to every modality."""
    sections: dict[str, dict[str, Any]] = {s: {} for s in TUNABLE_SECTIONS}
    for key, value in values.items():
        section, name = key.split(".", 1)
        current = getattr(getattr(params, section), name)
        if isinstance(current, Mapping) and not isinstance(value, Mapping):
            value = {k: value for k in current}
        sections[section][name] = value
    return {s: v for s, v in sections.items() if v}


def apply_values(params: Params, values: Mapping[str, Any]) -> Params:
    return params.with_overrides(**overrides(params, values))


# ---------------------------------------------------------------- the objective


def training_parts(fs: FeatureSet, fold: Fold) -> tuple[FeatureSet, FeatureSet]:
    """A fold's training and validation rows; its test rows are never read while tuning."""
    return fs.subset(fold.train_idx), fs.subset(fold.val_idx)


class _Pruning:
    """The training loop's on_epoch callback: report the running score, stop the trial when Optuna prunes it."""

    def __init__(self, trial: optuna.Trial, metric: str, position: int, finished: Sequence[float],
                 on_step: Callable[[int, float], None]) -> None:
        self.trial, self.metric, self.position, self.finished = trial, metric, position, list(finished)
        self.on_step = on_step
        self.best_loss, self.current = math.inf, math.nan

    def __call__(self, fold: int, epoch: int, metrics: dict[str, float]) -> None:
        import optuna

        if any(k.startswith(f"{BASE}_") for k in metrics):  # a warm start's first stage: pruned on its second
            return
        metrics = {k.removeprefix(f"{CONTEXT}_"): v for k, v in metrics.items()}
        if metrics["val_loss"] < self.best_loss:
            self.best_loss, self.current = metrics["val_loss"], float(metrics[self.metric])
        running = float(np.mean([*self.finished, self.current]))
        step = self.position * EPOCH_STRIDE + epoch
        self.trial.report(running, step)
        self.on_step(step, running)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"fold {fold}, epoch {epoch}: running {self.metric} {running:.4f}")


@dataclass
class Objective:
    """Mean over folds of ``tune.metric`` on each fold's validation split, for one trial's values."""

    fs: FeatureSet
    params: Params
    model_name: str
    space: Sequence[SearchDimension]
    tracker: Tracker
    owner: str | None = None  # this process's token (trial_owner), recorded in each trial it runs
    fold_scores: dict[int, list[float]] = field(default_factory=dict)

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        if self.owner is not None:
            trial.set_user_attr(OWNER_ATTR, self.owner)
        values = suggest(trial, self.space)
        params = apply_values(self.params, values)
        run_id = self.tracker.start_trial(trial.number, values)
        trial.set_user_attr("mlflow_run_id", run_id)
        scores: list[float] = []
        self.fold_scores[trial.number] = scores
        try:
            with torch_threads(params.train.num_threads):
                self._train_folds(trial, params, scores, run_id)
        except optuna.TrialPruned:
            trial.set_user_attr("fold_scores", scores)
            self.tracker.end_trial(run_id, "PRUNED", None, scores)
            raise
        except ConfigError:
            self.tracker.end_trial(run_id, "FAIL", None, scores)
            raise
        except HjcagError as exc:  # e.g. training diverged with this lr: a failed trial, not a failed study
            log.warning("trial %d failed: %s", trial.number, exc)
            trial.set_user_attr("error", str(exc))
            self.tracker.end_trial(run_id, "FAIL", None, scores)
            return math.nan  # Optuna records the trial as FAIL and goes on
        except BaseException:
            self.tracker.end_trial(run_id, "FAIL", None, scores)
            raise
        value = float(np.mean(scores))
        trial.set_user_attr("fold_scores", scores)
        self.tracker.end_trial(run_id, "COMPLETE", value, scores)
        return value

    def _train_folds(self, trial: optuna.Trial, params: Params, scores: list[float], run_id: str | None) -> None:
        cfg, metric = params.train, params.tune.metric
        device = resolve_device(cfg.device)
        folds = make_folds(self.fs, cfg.protocol, cfg.folds, cfg.val_fraction, params.seed)
        for position, fold in enumerate(folds):
            train, val = training_parts(self.fs, fold)
            report = _Pruning(trial, metric, position, scores,
                              lambda step, value: self.tracker.step(run_id, step, value))
            fitted = fit_model(self.model_name, train, val, params.model, cfg, seed=fold_seed(params.seed, fold.index),
                               device=device, fold_index=fold.index, on_epoch=report, quiet=True)
            scores.append(fitted.val_score(metric))  # what the fold delivers: with model.probe_blend, the blend's


# ---------------------------------------------------------------- MLflow


class Tracker:
    """Where trials are recorded: nowhere (this class), or MLflow (:class:`hjcag.registry.tuning.MlflowTracker`)."""

    def start_trial(self, number: int, values: Mapping[str, Any]) -> str | None:
        return None

    def step(self, run_id: str | None, step: int, value: float) -> None:
        return None

    def end_trial(self, run_id: str | None, state: str, value: float | None, fold_scores: Sequence[float]) -> None:
        return None

    def abandon(self, run_id: str, reason: str) -> None:
        """The trial of `run_id` failed in a process that could not say so (it was killed): mark it failed."""
        return None

    def finish(self, summary: Mapping[str, Any], files: Sequence[Path], failed: bool = False) -> None:
        return None


# ---------------------------------------------------------------- trials of dead processes


def _lock_path(token: str) -> Path:
    return Path(tempfile.gettempdir()) / LOCK_DIR / f"tune-{token}.lock"


@contextmanager
def trial_owner() -> Iterator[str]:
    """A token naming this process, under an exclusive ``flock`` held until the block ends (after Optuna has
    recorded the last trial's state). The kernel releases it when the process dies, even by kill -9: a later run
    that can take the lock knows the trials naming the token have no process left. The lock file lives in this
    machine's temp folder (like :mod:`hjcag.train.unit_lock`), so only processes of this machine are judged."""
    token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    with exclusive_lock(_lock_path(token)):  # a new file: nobody else holds it
        yield token  # the file stays after, so the token still reads as "ended" later


def owner_is_gone(token: str) -> bool:
    """True when the process of `token` (:func:`trial_owner`) has ended; False while it runs, and when this
    machine cannot tell (a token of another machine: Optuna's heartbeat judges those)."""
    try:
        with exclusive_lock(_lock_path(token), create=False):
            return True
    except (FileNotFoundError, BlockingIOError):
        return False


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAILED the RUNNING trials of `study` whose process has died (its owner lock is free, or Optuna's
    heartbeat is older than GRACE_S); returns their numbers. A trial another live process is running is left
    alone."""
    import optuna

    storage = study._storage  # Optuna's public API cannot change another process's trial
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        token = trial.user_attrs.get(OWNER_ATTR)
        if not token or not owner_is_gone(token):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "error", f"its process ({token}) ended mid-trial (killed?)")
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its process finished it after all
        failed.append(trial.number)
    running = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # another machine's dead process: no heartbeat for GRACE_S
    failed += [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
               if t.number in running]
    if failed:
        log.warning("study '%s': trial(s) %s were left RUNNING by a process that died; marked FAILED",
                    study.study_name, failed)
    return failed


def close_failed_runs(study: optuna.Study, tracker: Tracker) -> None:
    """Every FAILED trial's tracker run ends FAILED too (a no-op for those their own process closed)."""
    for trial in study.get_trials(deepcopy=False):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if trial.state.name == "FAIL" and run_id:
            tracker.abandon(run_id, str(trial.user_attrs.get("error") or "failed"))


# ---------------------------------------------------------------- the study


def default_storage(out: Path, uri: str) -> str:
    """``optuna.db`` beside the MLflow SQLite store of tracking URI `uri`; with a tracking server,
    ``<out>/optuna.db``."""
    db = sqlite_file(uri)
    if db is not None:
        return f"sqlite:///{db.absolute().parent / STORAGE_FILE}"
    return f"sqlite:///{(out / STORAGE_FILE).absolute()}"


def default_study_name(params: Params, model_name: str, modalities: Sequence[str]) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{params.profile}-{model_name}-{''.join(modalities)}")


def study_identity(fs: FeatureSet, params: Params, modalities: Sequence[str], model_name: str) -> str:
    """What must match for a study to be resumed: the data, the fixed params, the metric and the space."""
    identity = run_identity(fs, params, modalities, model_name)
    identity["tune"] = {"metric": params.tune.metric,
                        "space": [dataclasses.asdict(d) for d in params.tune.space]}
    return fingerprint(json.loads(json.dumps(identity, default=list)))


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO; our own line per trial says more (fold scores, pruned where)."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def open_study(name: str, storage: str, params: Params, identity: str) -> optuna.Study:
    """Create the study or load it to resume; refuse one started on other data, params, metric or space."""
    import optuna

    tune = params.tune
    rdb = _rdb_storage(storage)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=tune.warmup_epochs)
        if tune.pruner == "median" else optuna.pruners.NopPruner())
    existing = _existing_trials(rdb, name)
    # A fresh seed per invocation: a resumed TPE must not replay the first invocation's random start-up trials.
    sampler = optuna.samplers.TPESampler(seed=params.seed + existing)
    study = optuna.create_study(storage=rdb, study_name=name, direction=tune.direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored is None:
        study.set_user_attr(IDENTITY_ATTR, identity)
        study.set_user_attr("metric", tune.metric)
    elif stored != identity:
        raise ConfigError(f"study '{name}' in {storage} was started with other data, params, tune.metric or "
                          "tune.space; resuming it would mix trials. Pass --study NEW_NAME, or delete the study "
                          f"(optuna delete-study --study-name {name} --storage {storage}).")
    if study.direction.name.lower() != tune.direction:
        raise ConfigError(f"study '{name}' {study.direction.name.lower()}s, but tune.metric {tune.metric} is to be "
                          f"{tune.direction}d; pass --study NEW_NAME.")
    return study


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    if (db := sqlite_file(url)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and what makes resuming safe
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except (ValueError, ImportError, SQLAlchemyError) as exc:  # a malformed URL or an unreachable database
        raise ConfigError(f"cannot open the Optuna storage '{url}': {exc}. Pass --storage sqlite:///PATH.db.") from exc


def _existing_trials(storage: optuna.storages.RDBStorage, name: str) -> int:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False)) if study_id is not None else 0


FINISHED_STATES = ("COMPLETE", "PRUNED")


def finished_trials(study: optuna.Study) -> int:
    return sum(t.state.name in FINISHED_STATES for t in study.get_trials(deepcopy=False))


def remaining_trials(study: optuna.Study, trials: int | None, minutes: float | None) -> int | None:
    """How many more trials this invocation may start (None: only the minutes limit it)."""
    if trials is None and minutes is None:
        raise ConfigError("tuning needs a budget: --trials N and/or --minutes M (or tune.trials / tune.minutes).")
    if trials is not None and trials <= 0 and minutes is None:
        raise ConfigError(f"the trial budget is {trials}: give --trials N with N >= 1, or --minutes M.")
    if trials is None:
        return None
    return max(0, trials - finished_trials(study))


def _log_trial(trial: optuna.trial.FrozenTrial, metric: str) -> None:
    values = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    folds = trial.user_attrs.get("fold_scores") or []
    if trial.state.name == "COMPLETE":
        what = f"{metric} {trial.value:.4f}"
    elif trial.state.name == "PRUNED":
        what = f"pruned after {len(folds)} fold(s)"
    else:
        what = f"failed ({trial.user_attrs.get('error', 'see above')})"
    scores = f" folds [{', '.join(f'{s:.3f}' for s in folds)}]" if folds else ""
    log.info("trial %d: %s%s | %s", trial.number, what, scores, values)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- results


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = t.duration.total_seconds() if t.duration is not None else None
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
                     "fold_scores": t.user_attrs.get("fold_scores"), "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                     "error": t.user_attrs.get("error"), "duration_s": duration})
    return rows


def best_of(study: optuna.Study, params: Params, space: Sequence[SearchDimension]) -> dict[str, Any] | None:
    """The best complete trial: its number, value, values and section overrides (None before one completes)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return None
    best = study.best_trial
    known = {d.key for d in space}
    values = {k: v for k, v in best.params.items() if k in known}
    return {"trial": best.number, "value": float(best.value), "params": values,
            "overrides": overrides(params, values)}


def write_results(out: Path, study: optuna.Study, params: Params, space: Sequence[SearchDimension], storage: str,
                  profile: str | None, record: Mapping[str, Any]) -> dict[str, Any]:
    """``best.yaml`` (the best values as section overrides) and ``study.json`` (every trial, and `record`: what the
    study tuned on) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    best = best_of(study, params, space)
    summary = {
        "study": study.study_name, "storage": storage, "metric": params.tune.metric,
        "direction": params.tune.direction, "base_profile": params.profile, "profile": profile,
        "finished": finished_trials(study), "best": best, "trials": trial_rows(study), "tuned_on": dict(record),
    }
    write_json(out / STUDY_FILE, summary)
    if best is not None:
        doc = {"study": study.study_name, "trial": best["trial"], "metric": params.tune.metric,
               "value": best["value"], "base_profile": params.profile, "profile": profile,
               "overrides": best["overrides"]}
        header = (f"# hjcag tune: the best of study '{study.study_name}' (trial {best['trial']}, "
                  f"{params.tune.metric} {best['value']:.4f} on the folds' validation splits)\n")
        (out / BEST_FILE).write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return summary


# ---------------------------------------------------------------- what the values were tuned on

ROW_SAMPLE = 16  # hashes of tuned rows a profile records (tuned_on.rows)


def row_hashes(fs: FeatureSet) -> np.ndarray:
    """(N,) a 16-hex-digit SHA-256 of each row's (utterance_id, label): the rows whose labels can leak, whatever
    modalities or encoder their features come from."""
    pairs = zip(fs.utterance_id.astype(str), fs.label.astype(str), strict=True)
    return np.array([hashlib.sha256(f"{u}\x1f{y}".encode()).hexdigest()[:16] for u, y in pairs])


def tuned_on(fs: FeatureSet, params: Params, study: str) -> dict[str, Any]:
    """The ``tuned_on`` record of a profile tuned on `fs`: the protocol, and the ROW_SAMPLE smallest row hashes, a
    uniform sample of the rows, so training data sharing a good part of them (the same file, a subset, other
    features of the same utterances) is recognised without storing every id."""
    return {"protocol": params.train.protocol, "study": study, "utterances": len(fs),
            "rows": sorted(set(row_hashes(fs).tolist()))[:ROW_SAMPLE]}


def shared_rows(fs: FeatureSet, record: Sequence[str]) -> int:
    """How many of the sampled tuned rows `record` (``tuned_on.rows``) `fs` holds."""
    return len(set(record) & set(row_hashes(fs).tolist()))


# ---------------------------------------------------------------- entry point


def run_tuning(fs: FeatureSet, params: Params, modalities: Sequence[str], model_name: str, out: str | Path, *,
               trials: int | None = None, minutes: float | None = None, study_name: str | None = None,
               storage: str | None = None, tracker: Tracker | None = None, profile_name: str | None = None,
               tracking_uri: str = DEFAULT_TRACKING_URI) -> dict[str, Any]:
    """Run (or resume) the study until `trials` (default tune.trials) are finished or `minutes` (default
    tune.minutes) have passed; write `out`/best.yaml and `out`/study.json (naming `profile_name`, the profile the
    caller writes); return the summary. The study lives in `storage`, default :func:`default_storage`."""
    fs, params, modalities = select_run(fs, params, modalities, model_name)
    out = Path(out)
    space = search_space(params)
    trials = params.tune.trials if trials is None else trials
    minutes = params.tune.minutes if minutes is None else minutes
    storage = storage or default_storage(out, tracking_uri)
    name = study_name or default_study_name(params, model_name, modalities)
    tracker = tracker or Tracker()
    with _quiet_optuna(), trial_owner() as owner:
        study = open_study(name, storage, params, study_identity(fs, params, modalities, model_name))
        fail_orphaned_trials(study)
        close_failed_runs(study, tracker)
        todo = remaining_trials(study, trials, minutes)
        done = finished_trials(study)
        log.info("study '%s' (%s): %d finished trial(s); %s more%s; %s on the folds' validation splits",
                 name, storage, done, "no" if todo == 0 else (todo if todo is not None else "unlimited"),
                 f" within {minutes:g} min" if minutes else "", params.tune.metric)
        objective = Objective(fs, params, model_name, space, tracker, owner)
        failed = False
        try:
            if todo != 0:
                study.optimize(objective, n_trials=todo, timeout=minutes * 60 if minutes else None,
                               callbacks=[lambda _s, t: _log_trial(t, params.tune.metric)], gc_after_trial=True)
        except BaseException:
            failed = True
            raise
        finally:
            close_failed_runs(study, tracker)  # also those Optuna's heartbeat failed while this run went on
            summary = write_results(out, study, params, space, storage, profile_name, tuned_on(fs, params, name))
            tracker.finish(summary, [out / BEST_FILE, out / STUDY_FILE], failed=failed)
    best = summary["best"]
    if best is None:
        raise HjcagError(f"study '{name}' has no complete trial yet (all {len(summary['trials'])} were pruned or "
                         "failed); run again with a larger budget, a wider tune.space or tune.pruner: none.")
    log.info("best: trial %d, %s %.4f | %s", best["trial"], params.tune.metric, best["value"],
             ", ".join(f"{k}={_short(v)}" for k, v in best["params"].items()))
    return summary
