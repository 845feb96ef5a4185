"""Text only on a real conversation dataset's transcripts, through the project's own stages (the `hjcag` CLI).

    python benchmarks/real_text.py /data/MELD                       # MELD: the three *_sent_emo.csv files are enough
    python benchmarks/real_text.py /data/emorynlp/emorynlp.csv      # any dataset in the generic manifest layout
    python benchmarks/real_text.py /data/MELD --work runs/real_meld --threads 2 --finetune

The dataset is MELD's folder (``--dataset meld``, the default for a folder) or a manifest CSV/JSONL in the generic
layout (``--dataset manifest``, the default for a file: ``utterance_id, dialogue_id, speaker, turn, text, label,
split``, as `hjcag prepare --dataset manifest` reads it). Its name (``--name``; default ``meld``, or the manifest
file's stem, e.g. ``emorynlp``) is the params key of its label set: ``datasets.<name>.labels`` of the repository's
params.yaml where it has one, else the data's labels, most frequent first. Every recipe below runs with that label
set, unchanged otherwise: recipes are chosen on MELD, and a second dataset checks that they transfer.
``--max-dialogues N`` keeps the first N dialogues of each split (a smoke run of a minute; use a fresh --work).

Stages: prepare -> validate -> features -> [finetune-text -> features] -> train --protocol holdout, for every
recipe below, plus a linear probe on the same features as the floor any recipe should beat. The holdout protocol
is the dataset's own split: train rows train, dev rows select (early stopping; the probe's C), test rows are
reported.

Recipes (profiles written into WORK/params.yaml, on top of the repository's params.yaml):

- ``demo``: the demo profile's model and schedule (lr 1e-3, widths 64, no class weights), where issue 9 started;
- ``meld``: the repository's ``meld`` profile, the recipe chosen on MELD dev for frozen MiniLM features (widths
  64, dropout 0.3, square-root class weights, the probe blend), without conversation context (``model.context:
  none``; the profile's own ``auto`` reads the conversation on dialogue data: that is the ``meld-gru`` row);
- ``meld-finetuned``: the repository's profile tuned on MELD dev for the fine-tuned encoder's features (with
  ``--finetune``; ``--recipes meld,meld-finetuned``);
- ``meld-tuned`` (with ``--tune N``): ``hjcag tune`` searches ``tune.space`` for N trials on the dev split (the
  holdout protocol's validation part) starting from ``meld`` and writes this profile; it tunes on the fine-tuned
  encoder's features with ``--finetune``, on the frozen ones otherwise, and is trained on both;
- ``meld-gru``, ``meld-transformer`` (with ``--context gru,transformer``): the ``meld`` recipe with conversation
  context (issue 10: ``model.context``, the 8 preceding turns, causal; ``meld-gru`` is the ``meld`` profile as the
  repository ships it, whose ``context: auto`` is gru on data with dialogue order); ``--bidirectional`` adds
  ``meld-gru-bi`` / ``meld-transformer-bi`` (also the 8 following turns: an offline figure, not what a live
  endpoint can do); ``--joint gru,transformer`` adds ``meld-gru-joint`` / ``meld-transformer-joint``: the context
  layer trained with the base from a random start (``train.context_warm_start: false``) instead of around the
  trained ``meld`` model.

``--seeds 1,2,3`` trains every recipe once per seed (``train.seeds``) and reports the mean over seeds (± std for
weighted F1).

Without network access the text encoder is the pretrained MiniLM that ships with the package (the stage says so,
loudly); with ``--finetune`` it is first fine-tuned on the train rows (section 4.2, dev selects), which costs tens of
minutes on a CPU (``--finetune-lr``, ``--finetune-epochs``, ``--finetune-class-weights``, ``--finetune-patience``,
``--finetune-select``: the one run's settings;
``--encoders minilm-ft``: the probe and recipes on the fine-tuned features only). ``--text-model PATH`` runs another
encoder (a local folder or hub id), frozen and fine-tuned, its feature sets named after the folder. Re-running with
the same --work
reuses what is done (the CLI's runs resume; stages whose output exists are skipped).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import results_file
import torch
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hjcag.artifacts import (
    MODEL_CONFIG_FILE,
    RESULT_FILE,
    WEIGHTS_FILE,
    build_trained_model,
    read_json,
    trained_model_config,
)
from hjcag.data.features_file import FeatureSet, load_features
from hjcag.data.manifest import read_manifest_file
from hjcag.data.meld import decode_csv_bytes, find_meld_layout
from hjcag.model.probe import ProbeBlend
from hjcag.params import CLASS_WEIGHTS, CONTEXTS, VALIDATION_METRICS
from hjcag.train.loop import TensorData, predict

REPO = Path(__file__).resolve().parents[1]
KINDS = ("meld", "manifest")  # hjcag prepare --dataset
FEATURES = {"minilm": "frozen MiniLM", "minilm-ft": "fine-tuned MiniLM"}  # the default encoder's feature sets


def encoder_features(text_model: str | None) -> dict[str, str]:
    """The two feature sets of a run, frozen then fine-tuned, by key and label: :data:`FEATURES` for the default
    encoder (params.yaml's, MiniLM offline), else named after `text_model`'s last path part (``--text-model``)."""
    if text_model is None:
        return FEATURES
    name = re.sub(r"[^a-z0-9.]+", "-", Path(text_model.rstrip("/")).name.lower()).strip("-") or "encoder"
    return {name: f"frozen {name}", f"{name}-ft": f"fine-tuned {name}"}


def finetuned_dir(work: Path, text_model: str | None) -> Path:
    """Where the fine-tuned encoder goes: one folder per base encoder, so a --work shared by two encoders never
    takes one's fine-tuning for the other's."""
    return work / "text-ft" if text_model is None else work / f"text-ft-{next(iter(encoder_features(text_model)))}"

# The fine-tuning run is the meld profile's (params.yaml: one run of 3 epochs with square-root class weights, which
# fits a CPU: batches are padded to their own longest utterance, and MELD's are short, the 95th percentile is 30
# MiniLM tokens); the --finetune-* options change it.
REPO_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())  # read once; a recipe file changes a deep copy
FINETUNE = REPO_PARAMS["profiles"]["meld"]["features"]["finetune"]


@dataclass(frozen=True)
class Dataset:
    """The dataset a run reads: `kind` as `hjcag prepare --dataset` takes it, `name` the params key of its labels."""

    name: str
    kind: str
    source: Path  # MELD's folder, or the manifest file
    labels: tuple[str, ...]  # class order of every figure

    def files(self) -> list[Path]:
        """The files the run reads: MELD's split CSVs, or the manifest."""
        if self.kind == "meld":
            return [csv_path for csv_path, _ in find_meld_layout(self.source).values()]
        return [self.source]

    def record(self, max_dialogues: int | None) -> dict[str, object]:
        """What the results file says of the data: name, kind, path, each file's sha256, labels and the trim."""
        return {"name": self.name, "kind": self.kind, "source": str(self.source.resolve()),
                "sha256": {p.name: results_file.sha256(p) for p in self.files()}, "labels": list(self.labels),
                "max_dialogues": max_dialogues}


def open_dataset(source: Path, kind: str | None, name: str | None) -> Dataset:
    """The dataset at `source` (kind: meld for a folder, manifest for a file, unless given), its labels those of
    params.yaml's ``datasets.<name>`` where it names them, else the data's, most frequent first (ties by name)."""
    kind = kind or ("meld" if source.is_dir() else "manifest")
    name = name or ("meld" if kind == "meld" else source.stem)
    known = (REPO_PARAMS.get("datasets") or {}).get(name) or {}
    labels = tuple(known.get("labels") or ())
    if not labels:
        if kind != "manifest":
            raise SystemExit(f"params.yaml names no labels for dataset {name!r} (datasets.{name}.labels)")
        counts = Counter(read_manifest_file(source)["label"].astype(str).str.strip())
        labels = tuple(sorted(counts, key=lambda label: (-counts[label], label)))
    return Dataset(name, kind, source, labels)


def first_dialogues(dialogues: Sequence[str], splits: Sequence[str], n: int) -> np.ndarray:
    """Rows (a boolean mask) of the first `n` dialogues of each split, in the order they first appear."""
    kept: dict[str, list[str]] = {}
    for dialogue, split in dict.fromkeys(zip(dialogues, splits, strict=True)):
        if len(chosen := kept.setdefault(split, [])) < n:
            chosen.append(dialogue)
    wanted = {(d, s) for s, ds in kept.items() for d in ds}
    return np.array([(d, s) in wanted for d, s in zip(dialogues, splits, strict=True)], dtype=bool)


def trimmed_source(dataset: Dataset, out: Path, n: int) -> Path:
    """A copy of the dataset with only the first `n` dialogues of each split (``--max-dialogues``), under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if dataset.kind == "meld":  # each split is its own CSV; rows keep MELD's layout (UTF-8 where MELD mixes cp1252)
        for csv_path in dataset.files():
            rows = list(csv.reader(io.StringIO(decode_csv_bytes(csv_path.read_bytes()))))
            column = [h.strip() for h in rows[0]].index("Dialogue_ID")
            keep = first_dialogues([r[column] for r in rows[1:]], [""] * (len(rows) - 1), n)
            text = io.StringIO()
            csv.writer(text).writerows([rows[0], *(r for r, k in zip(rows[1:], keep, strict=True) if k)])
            (out / csv_path.name).write_text(text.getvalue(), encoding="utf-8")
        return out
    table = read_manifest_file(dataset.source)
    if "split" not in table.columns:
        raise SystemExit(f"{dataset.source}: no split column; the holdout protocol needs train/dev/test rows")
    dialogues = table["dialogue_id"] if "dialogue_id" in table.columns else table["utterance_id"]
    table = table[first_dialogues(dialogues.astype(str).tolist(), table["split"].astype(str).tolist(), n)]
    path = out / dataset.source.name
    if path.suffix.lower() == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def names(value: str) -> tuple[str, ...]:
    """The items of a comma-separated option (``--recipes meld,demo``), empty ones dropped."""
    return tuple(item for item in value.split(",") if item)


FINETUNE_OPTIONS = ("lr", "epochs", "class_weights", "patience", "select")  # --finetune-X -> features.finetune.X


def finetune_overrides(args: argparse.Namespace) -> dict[str, float | str]:
    """The ``--finetune-*`` options given, as ``features.finetune`` keys for the one fine-tuning run."""
    given = {key: getattr(args, f"finetune_{key}") for key in FINETUNE_OPTIONS}
    return {key: value for key, value in given.items() if value is not None}


def chosen_encoders(value: str | None, finetune: bool, features: dict[str, str] = FEATURES) -> tuple[str, ...]:
    """``--encoders``: the feature sets named in `value` (comma-separated keys of `features`, frozen then fine-tuned:
    :func:`encoder_features`; None: every set the run makes, the fine-tuned one with ``--finetune``); the fine-tuned
    one only with ``--finetune``."""
    tuned = list(features)[1]
    if value is None:
        return tuple(e for e in features if finetune or e != tuned)
    chosen = names(value)
    unknown = sorted(set(chosen) - set(features))
    if tuned in chosen and not finetune:
        unknown.append(f"{tuned} (it needs --finetune)")
    if unknown or not chosen:
        raise SystemExit(f"--encoders: {', '.join(unknown) or 'none given'}; choose among {', '.join(features)}.")
    return chosen


def write_params(work: Path, dataset: Dataset, threads: int, finetune_steps: int | None = None,
                 contexts: tuple[str, ...] = (), bidirectional: bool = False, seeds: tuple[int, ...] = (),
                 joint: tuple[str, ...] = (), text_context: int = 0,
                 finetune_overrides: dict[str, float | str] | None = None, text_model: str | None = None) -> Path:
    """WORK/params.yaml: the repository's params.yaml plus the recipes of this benchmark as profiles, every one of
    them on the dataset's label set (``datasets.<name>.labels``; for MELD the file as it is); the text encoder reads
    `text_context` preceding turns (``features.text_context``), when fine-tuned too; `finetune_overrides` (``lr``,
    ``epochs``, ``class_weights``, ...) replace :data:`FINETUNE`'s (the meld profile's); `text_model` (a local folder or
    hub id) replaces params.yaml's text encoder, frozen and as the base of the fine-tuning."""
    params = copy.deepcopy(REPO_PARAMS)
    params["datasets"] = {**(params.get("datasets") or {}), dataset.name: {"labels": list(dataset.labels)}}
    params["train"]["num_threads"] = threads
    params["features"]["text_context"] = text_context
    params["features"]["cache_dir"] = str(work / "cache")
    if text_model is not None:
        params["features"]["text_model"] = text_model
    demo = params["profiles"]["demo"]
    params["profiles"]["demo"] = {**demo, "dataset": "meld", "features": {}, "gates": {}}
    for name in ("meld", "meld-finetuned"):
        params["profiles"][name]["gates"] = {}  # the paper's trimodal gates say nothing about a text-only run
    if seeds:
        for name in ("demo", "meld", "meld-finetuned"):
            params["profiles"][name]["train"] = {**params["profiles"][name]["train"], "seeds": list(seeds)}
    for name in ("meld", "meld-finetuned"):  # the recipes without conversation context: the profiles' own
        # `context: auto` reads the conversation on dialogue data, which is the meld-gru row
        params["profiles"][name]["model"] = {**params["profiles"][name]["model"], "context": "none"}
    meld = params["profiles"]["meld"]
    for context in contexts:
        for direction in ("causal", "bidirectional") if bidirectional else ("causal",):
            model = {**meld["model"], "context": context, "context_window": 8, "context_direction": direction}
            name = f"meld-{context}" + ("-bi" if direction == "bidirectional" else "")
            params["profiles"][name] = {**copy.deepcopy(meld), "model": model}
    for context in joint:  # the context layer trained with the base from the start (no warm start)
        model = {**meld["model"], "context": context, "context_window": 8, "context_direction": "causal"}
        train = {**meld["train"], "context_warm_start": False}
        params["profiles"][f"meld-{context}-joint"] = {**copy.deepcopy(meld), "model": model, "train": train}
    # Feature-side profiles: fine-tuning, and extraction with the fine-tuned encoder.
    finetune = {**FINETUNE, "max_steps": finetune_steps, **(finetune_overrides or {})}
    params["profiles"]["finetune"] = {"dataset": "meld", "features": {"finetune": finetune}}
    params["profiles"]["finetuned"] = {"dataset": "meld",
                                       "features": {"text_model": str(finetuned_dir(work, text_model))}}
    for profile in params["profiles"].values():  # every recipe as chosen on MELD, on this dataset's labels
        if profile.get("dataset") == "meld":
            profile["dataset"] = dataset.name
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def hjcag(*args: str, params: Path, profile: str, threads: int, done: Path | None = None) -> float:
    """Run one `hjcag` stage (skipped when `done` exists); returns its wall time in seconds."""
    if done is not None and done.exists():
        print(f"[skip] hjcag {args[0]}: {done} exists")
        return 0.0
    cmd = [sys.executable, "-m", "hjcag.cli", *args, "--params", str(params), "--profile", profile]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{params.parent / 'mlruns.db'}"}  # the tuning study lands beside it
    print("$ hjcag", " ".join(cmd[3:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def scores(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, object]:
    """Accuracy, weighted and macro F1, and F1 per class (`labels`: class names in index order)."""
    per_class = f1_score(y_true, y_pred, average=None, labels=range(len(labels)), zero_division=0)
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "weighted_f1": f1_score(y_true, y_pred, average="weighted", zero_division=0),
        "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
        "per_class_f1": dict(zip(labels, per_class.tolist(), strict=True)),
    }


def split_part(fs: FeatureSet, split: str) -> FeatureSet:
    return fs.subset(np.flatnonzero(fs.split.astype(str) == split))


def evaluate_run(run_dir: Path, fs: FeatureSet, model_alone: bool = False) -> dict[str, object]:
    """Dev and test scores of a trained holdout run (`hjcag train` itself reports test only): the mean over its
    units (one per seed), with the spread of weighted F1 over seeds as `weighted_f1_std`, and under `per_seed` each
    unit's own scores, its seed, for a warm-started context whether the context was kept, and for a probe blend
    what it chose. `model_alone`: a probe blend's model without its probe (the same run: the wrapped model trains
    exactly as without the blend)."""
    doc = read_json(run_dir / MODEL_CONFIG_FILE)
    units = sorted(p.parent for p in run_dir.glob(f"*/{WEIGHTS_FILE}"))
    parts = {split: split_part(fs, split) for split in ("dev", "test")}
    per_seed: list[dict[str, object]] = []
    for unit in units:
        model = build_trained_model(doc, unit / WEIGHTS_FILE)  # loaded once, scored on both splits
        config = trained_model_config(doc, unit.name)  # context-free where the unit dropped its context layer
        data = {split: TensorData.from_features(part, config) for split, part in parts.items()}
        result = read_json(unit / RESULT_FILE)
        figures: dict[str, object] = {"unit": unit.name, "seed": result["run_seed"],
                                      "context_kept": result.get("context_kept"),
                                      "probe_blend": result.get("probe_blend")}
        if model_alone and isinstance(model, ProbeBlend):  # the same weights, the probe unused
            model.fitted.fill_(False)
        for split, part in data.items():
            logits, _ = predict(model, part, 256, torch.device("cpu"))
            figures[split] = scores(part.targets.numpy(), logits.argmax(dim=1).numpy(), fs.label_names)
        per_seed.append(figures)
    return {**{split: mean_scores([u[split] for u in per_seed]) for split in parts}, "per_seed": per_seed}


def mean_scores(per_unit: list[dict[str, object]]) -> dict[str, object]:
    mean: dict[str, object] = {k: float(np.mean([s[k] for s in per_unit])) for k in ("accuracy", "weighted_f1",
                                                                                      "macro_f1")}
    mean["weighted_f1_std"] = float(np.std([s["weighted_f1"] for s in per_unit]))
    labels = per_unit[0]["per_class_f1"]
    mean["per_class_f1"] = {label: float(np.mean([s["per_class_f1"][label] for s in per_unit])) for label in labels}
    mean["units"] = len(per_unit)
    return mean


def linear_probe(fs: FeatureSet) -> tuple[dict[str, dict[str, object]], str]:
    """Logistic regression on the mean of the non-padded token states; C and class weighting chosen on dev."""
    x = fs.features["t"]
    steps = np.abs(x).sum(axis=-1) > 0  # padded time steps are all zero
    pooled = (x * steps[..., None]).sum(axis=1) / np.maximum(steps.sum(axis=1, keepdims=True), 1)
    split, y = fs.split.astype(str), fs.targets
    train, dev, test = (split == s for s in ("train", "dev", "test"))
    scaler = StandardScaler().fit(pooled[train])
    x_all = scaler.transform(pooled)
    best = None
    for class_weight in (None, "balanced"):
        for c in (0.01, 0.03, 0.1, 0.3, 1.0):
            clf = LogisticRegression(C=c, class_weight=class_weight, max_iter=2000).fit(x_all[train], y[train])
            dev_wf1 = f1_score(y[dev], clf.predict(x_all[dev]), average="weighted")
            if best is None or dev_wf1 > best[0]:
                best = (dev_wf1, clf, f"C={c}, class_weight={class_weight}")
    _, clf, chosen = best
    return {split: scores(y[rows], clf.predict(x_all[rows]), fs.label_names)
            for split, rows in (("dev", dev), ("test", test))}, chosen


def print_table(rows: list[dict[str, object]], labels: Sequence[str]) -> None:
    short = [label[:4] for label in labels]
    print("\n| encoder | recipe | split | acc | W-F1 | macro-F1 | " + " | ".join(short) + " | s |")
    print("|" + " --- |" * (7 + len(labels)))
    for row in rows:
        for split in ("dev", "test"):
            s = row[split]
            per = " | ".join(f"{100 * s['per_class_f1'][label]:.1f}" for label in labels)
            spread = f" ± {100 * s['weighted_f1_std']:.2f}" if s.get("units", 1) > 1 else ""
            print(f"| {row['encoder']} | {row['recipe']} | {split} | {100 * s['accuracy']:.2f} | "
                  f"{100 * s['weighted_f1']:.2f}{spread} | {100 * s['macro_f1']:.2f} | {per} | {row['seconds']:.0f} |")


def context_of(profile: str) -> str | None:
    """The conversation context a recipe adds to `meld` (`meld-gru`, `meld-transformer-bi`, `meld-gru-joint`: gru,
    transformer, gru); None for a recipe without one."""
    first, _, rest = profile.partition("-")
    context = rest.split("-")[0]
    return context if first == "meld" and context in CONTEXTS and context != "none" else None


def paired_differences(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Every context recipe (`meld-gru`, `meld-transformer-bi`, ...) minus `meld` on the same encoder, seed by seed
    (the context run's stage 1 is exactly the `meld` run of its seed), a model-alone row against `meld`'s model
    alone: weighted F1 on dev and test, mean, sample std and standard error over seeds. Recipes without context
    (`meld-finetuned`, `meld-tuned`) are not paired."""
    by_key = {row["key"]: row for row in rows}
    pairs = []
    for row in rows:
        _, profile, *alone = str(row["key"]).split("/")
        base = by_key.get("/".join([str(row["encoder"]), "meld", *alone]))
        if context_of(profile) is None or base is None:
            continue
        base_seeds = {u["seed"]: u for u in base["per_seed"]}
        seeds = [u for u in row["per_seed"] if u["seed"] in base_seeds]
        pair: dict[str, object] = {"key": f"{row['key']} - meld", "encoder": row["encoder"], "recipe": row["recipe"],
                                   "seeds": [u["seed"] for u in seeds],
                                   "context_kept": [u["context_kept"] for u in seeds]}
        for split in ("dev", "test"):
            diffs = [u[split]["weighted_f1"] - base_seeds[u["seed"]][split]["weighted_f1"] for u in seeds]
            std = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("nan")
            pair[split] = {"weighted_f1_diff": diffs, "mean": float(np.mean(diffs)), "std": std,
                           "se": std / np.sqrt(len(diffs))}
        pairs.append(pair)
    for pair in pairs:
        for split in ("dev", "test"):
            d = pair[split]
            per = ", ".join(f"{100 * x:+.2f}" for x in d["weighted_f1_diff"])
            print(f"{pair['key']} / {split}: weighted F1 {100 * d['mean']:+.2f} ± {100 * d['std']:.2f} (se "
                  f"{100 * d['se']:.2f}) over seeds {pair['seeds']}: {per}; context kept {pair['context_kept']}")
    return pairs


def parser(description: str, meld_only: bool = False) -> argparse.ArgumentParser:
    """The benchmark's options; `meld_only`: real_meld_text.py's, whose one argument is MELD's folder."""
    ap = argparse.ArgumentParser(description=description)
    if meld_only:
        ap.add_argument("source", metavar="meld", type=Path, help="folder holding MELD's train/dev/test_sent_emo.csv")
        ap.set_defaults(dataset="meld", name=None)
    else:
        ap.add_argument("source", type=Path, help="MELD's folder (train/dev/test_sent_emo.csv), or a manifest "
                        "CSV/JSONL in the generic layout with a split column")
        ap.add_argument("--dataset", choices=KINDS, default=None,
                        help="the source's layout (default: meld for a folder, manifest for a file)")
        ap.add_argument("--name", default=None, help="the dataset's name, the params key of its labels "
                        "(datasets.NAME.labels; default: meld, or the manifest file's stem)")
    ap.add_argument("--max-dialogues", type=int, default=None, metavar="N",
                    help="keep only the first N dialogues of each split (a smoke run; use a fresh --work)")
    ap.add_argument("--work", type=Path, default=None,
                    help="work directory (default: runs/real_NAME, e.g. runs/real_meld)")
    ap.add_argument("--threads", type=int, default=1, help="torch / BLAS threads of every stage (default: 1)")
    ap.add_argument("--recipes", default="demo,meld", help="comma-separated profiles (default: %(default)s)")
    ap.add_argument("--tune", type=int, default=0, metavar="N",
                    help="also tune N trials on the dev split from the meld profile and train the result (meld-tuned)")
    ap.add_argument("--finetune", action="store_true", help="also fine-tune the text encoder first (slow on a CPU)")
    ap.add_argument("--finetune-steps", type=int, default=None,
                    help="stop fine-tuning after this many optimizer steps (a quick look; default: no limit)")
    ap.add_argument("--finetune-lr", type=float, default=None,
                    help="the encoder's peak learning rate (default: params.yaml's features.finetune.lr)")
    ap.add_argument("--finetune-epochs", type=int, default=None,
                    help=f"epochs of the one fine-tuning run (default: {FINETUNE['epochs']})")
    ap.add_argument("--finetune-class-weights", choices=CLASS_WEIGHTS, default=None,
                    help=f"the encoder's loss weights (default: {FINETUNE['class_weights']})")
    ap.add_argument("--finetune-patience", type=int, default=None,
                    help=f"epochs without a better dev score before it stops (default: "
                    f"{FINETUNE['patience']})")
    ap.add_argument("--finetune-select", choices=tuple(VALIDATION_METRICS), default=None,
                    help="the dev score that picks the epoch kept (default: params.yaml's features.finetune.select)")
    ap.add_argument("--text-model", default=None, metavar="PATH_OR_ID",
                    help="the text encoder, frozen and as the base of --finetune (default: params.yaml's "
                    "features.text_model, MiniLM offline); its feature sets are named after its last path part")
    ap.add_argument("--encoders", default=None, metavar="LIST",
                    help=f"the features the probe and recipes are trained on, among {','.join(FEATURES)}, or NAME and "
                    "NAME-ft with --text-model (default: every set the run makes; the -ft one needs --finetune)")
    ap.add_argument("--context", default="", help="also train the meld recipe with these contexts (gru,transformer)")
    ap.add_argument("--bidirectional", action="store_true", help="with --context: also the bidirectional variants")
    ap.add_argument("--joint", default="", help="also train the meld recipe with these contexts trained jointly from "
                    "the start (train.context_warm_start: false; gru,transformer)")
    ap.add_argument("--seeds", default="", help="comma-separated seeds: every recipe trained once per seed")
    ap.add_argument("--text-context", type=int, default=0, metavar="K",
                    help="the text encoder reads each utterance with its K preceding turns (features.text_context; "
                    "default 0: the utterance alone)")
    results_file.add_argument(ap)
    return ap


def main(benchmark: str = "real_text", meld_only: bool = False, description: str = __doc__.splitlines()[0]) -> int:
    args = parser(description, meld_only).parse_args()
    record = results_file.start(benchmark)
    dataset = open_dataset(args.source, args.dataset, args.name)
    print(f"dataset {dataset.name} ({dataset.kind}, {dataset.source}): labels {', '.join(dataset.labels)}")
    work = (args.work or Path(f"runs/real_{dataset.name}")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    contexts, joint = names(args.context), names(args.joint)
    seeds = tuple(int(x) for x in names(args.seeds))
    features_of = encoder_features(args.text_model)
    frozen, tuned = features_of
    chosen = chosen_encoders(args.encoders, args.finetune, features_of)
    overrides = finetune_overrides(args)
    params = write_params(work, dataset, args.threads, args.finetune_steps, contexts, args.bidirectional, seeds,
                          joint, args.text_context, overrides, args.text_model)
    run = {"params": params, "threads": args.threads}

    source = dataset.source
    if args.max_dialogues is not None:
        source = trimmed_source(dataset, work / "source", args.max_dialogues)
    hjcag("prepare", "--dataset", dataset.kind, "--source", str(source), "--out", str(work / "prepare"),
          "--modalities", "t", profile="demo", **run)
    hjcag("validate", "--manifest", str(work / "prepare/manifest.parquet"), "--out", str(work / "validate"),
          "--modalities", "t", profile="demo", **run)
    manifest = work / "validate/manifest.valid.parquet"
    encoders: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    if frozen in chosen:  # the frozen encoder's features (minutes): only when something is trained on them
        encoders[frozen] = work / f"features/{frozen}.npz"
        seconds[frozen] = hjcag("features", "--manifest", str(manifest), "--out", str(encoders[frozen]),
                                "--modalities", "t", profile="demo", done=encoders[frozen], **run)
    if args.finetune:
        encoders[tuned] = work / f"features/{tuned.replace('-', '_')}.npz"
        finetuned = finetuned_dir(work, args.text_model)
        seconds[tuned] = hjcag("finetune-text", "--manifest", str(manifest), "--out", str(finetuned),
                               profile="finetune", done=finetuned / "finetune.json", **run)
        seconds[tuned] += hjcag("features", "--manifest", str(manifest), "--out", str(encoders[tuned]),
                                "--modalities", "t", profile="finetuned", done=encoders[tuned], **run)

    recipes = list(names(args.recipes))
    recipes += [f"meld-{c}{suffix}" for c in contexts for suffix in ("", "-bi")[: 1 + args.bidirectional]]
    recipes += [f"meld-{c}-joint" for c in joint]
    if args.tune:  # on the features the tuned recipe is meant for: the fine-tuned encoder's when there is one
        tuned_on = encoders.get(tuned) or encoders[frozen]
        hjcag("tune", "--features", str(tuned_on), "--protocol", "holdout", "--modalities", "t",
              "--out", str(work / "tune"), "--trials", str(args.tune), "--no-track", "--write-profile",
              "meld-tuned", profile="meld", **run)
        recipes.append("meld-tuned")

    rows: list[dict[str, object]] = []
    for encoder, features in [(e, f) for e, f in encoders.items() if e in chosen]:
        print(f"features {encoder}: {features} ({seconds[encoder]:.0f} s)")
        fs = load_features(features, seq_len=30, label_names=dataset.labels).select(("t",))
        features_label = features_of[encoder] + (f", {args.text_context} preceding turns" if args.text_context else "")
        start = time.perf_counter()
        with threadpool_limits(args.threads):
            probe, probe_setting = linear_probe(fs)  # (a name of its own: `chosen` is the encoders this loop reads)
        rows.append({"key": f"{encoder}/linear-probe", "encoder": encoder, "features": features_label,
                     "recipe": f"linear probe ({probe_setting})", **probe, "seconds": time.perf_counter() - start})
        for recipe in recipes:
            out = work / "runs" / f"{encoder}-{recipe}"
            took = hjcag("train", "--features", str(features), "--protocol", "holdout", "--modalities", "t",
                         "--out", str(out), profile=recipe, **run)
            rows.append({"key": f"{encoder}/{recipe}", "encoder": encoder, "features": features_label,
                         "recipe": recipe, **evaluate_run(out, fs), "seconds": took})
            if any(u["probe_blend"] for u in rows[-1]["per_seed"]):  # the same units without their probe
                rows.append({"key": f"{encoder}/{recipe}/model-alone", "encoder": encoder,
                             "features": features_label, "recipe": f"{recipe} (model alone, no probe blend)",
                             **evaluate_run(out, fs, model_alone=True), "seconds": took})
        for row in (r for r in rows if r["encoder"] == encoder):
            for split in ("dev", "test"):
                s = row[split]
                per = ", ".join(f"{k} {100 * v:.1f}" for k, v in s["per_class_f1"].items())
                print(f"{encoder} / {row['recipe']} / {split}: accuracy {100 * s['accuracy']:.2f} %, weighted F1 "
                      f"{100 * s['weighted_f1']:.2f} %, macro F1 {100 * s['macro_f1']:.2f} %; per class: {per}")
    print_table(rows, dataset.labels)
    pairs = paired_differences(rows)
    results_file.write(record, {"rows": rows, "paired": pairs}, args.results, seeds=seeds, threads=args.threads,
                       params=params, profiles=["demo", *recipes], dataset=dataset.record(args.max_dialogues))
    return 0


if __name__ == "__main__":
    sys.exit(main())
