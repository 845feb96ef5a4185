"""`hjcag features`: a normalised manifest in, the core ``.npz`` features file out.

For each requested modality the orchestration hashes every utterance's content (text, or media bytes + span),
reads what the per-utterance cache already holds, extracts only the rest in batches (writing each batch to the
cache as it goes, so an interrupted run resumes), and assembles ``text`` (N, L, d_t), ``audio`` (N, d_a) and
``visual`` (N, L, d_v). Missing or undecodable media are never dropped silently: missing files stop the run
before any work, decode failures are collected and reported together after everything else is cached.

Spans follow :func:`hjcag.data.manifest.media_span`: ``start_s`` / ``end_s`` locate the utterance inside
``video_path`` (IEMOCAP dialog videos; empty for MELD's per-utterance clips), and inside ``audio_path`` only when
that is the same file or there is no video; a separate audio file (IEMOCAP's per-turn wav) is used whole. A row
with no ``audio_path`` takes its audio from the video's track, cut like the video.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from hjcag.artifacts import features_meta_path, features_run_path
from hjcag.cpus import pool_size
from hjcag.data.features_file import SPLITS, FeatureSet, save_features
from hjcag.data.manifest import media_span
from hjcag.data.media_root import require_root
from hjcag.errors import ConfigError, DataError
from hjcag.features.cache import FeatureCache, cache_key
from hjcag.features.media_io import MediaRef
from hjcag.features.text_context import context_inputs
from hjcag.params import MODALITY_NAMES, FeaturesConfig, parse_modalities
from hjcag.progress import progress as progress_bar

log = logging.getLogger(__name__)
GROUP_COLUMNS = {"dialogue": "dialogue_id", "session": "session"}
MAX_LISTED = 20


class Extractor(Protocol):
    modality: str
    namespace: str

    @property
    def dim(self) -> int: ...

    def describe(self) -> dict[str, Any]: ...

    def cache_config(self) -> dict[str, Any]: ...

    def content_hash(self, item: Any) -> str: ...

    def extract(self, items: Sequence[Any]) -> list[np.ndarray]: ...


def _workers(config: FeaturesConfig) -> int:
    return pool_size(config.workers, most=8)


def build_extractor(modality: str, config: FeaturesConfig) -> Extractor:
    if modality == "t":
        from hjcag.features.text import TextExtractor

        return TextExtractor(config.text_model, config.text_fallback, config.max_tokens, config.seq_len,
                             config.text_batch_size, config.device, config.text_context)
    if modality == "a":
        from hjcag.features.audio import AudioExtractor

        return AudioExtractor(config.audio_set, config.audio_min_duration_s, _workers(config))
    if modality == "v":
        from hjcag.features.visual import VisualExtractor

        return VisualExtractor(config.visual_model, config.visual_weights_dir, config.seq_len,
                               config.visual_batch_size, config.image_size, config.device, config.visual_arch,
                               config.seed, _workers(config), config.visual_frames)
    raise ConfigError(f"unknown modality '{modality}'")


# ------------------------------------------------------------------------------------------------- inputs


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _seconds(value: Any) -> float | None:
    if _is_missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan  # reported as an invalid span by media_io


def _resolve(path: Any, media_root: Path | None) -> Path:
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() or media_root is None else media_root / p


def _items(manifest: pd.DataFrame, modality: str, media_root: Path | None) -> tuple[list[Any], list[str]]:
    """The extractor inputs of every row, and 'utterance: reason' for rows that cannot be extracted."""
    items: list[Any] = []
    problems: list[str] = []
    rows = manifest.to_dict("records")
    for row in rows:
        uid = row["utterance_id"]
        if modality == "t":
            text = row.get("text")
            if _is_missing(text):
                problems.append(f"{uid}: empty text")
            items.append("" if _is_missing(text) else str(text))
            continue
        start, end = _seconds(row.get("start_s")), _seconds(row.get("end_s"))
        if any(v is not None and not (math.isfinite(v) and v >= 0) for v in (start, end)) or (
            start is not None and end is not None and end <= start
        ):
            problems.append(f"{uid}: invalid span start_s={row.get('start_s')!r} end_s={row.get('end_s')!r}")
            items.append(None)
            continue
        clean = {**row, "start_s": start, "end_s": end}
        if modality == "a" and not _is_missing(row.get("audio_path")):
            ref = MediaRef(_resolve(row["audio_path"], media_root), *media_span(clean, "audio"))
        elif not _is_missing(row.get("video_path")):  # for audio: the video's own track, cut like the video
            ref = MediaRef(_resolve(row["video_path"], media_root), *media_span(clean, "video"))
        else:
            what = "audio_path or video_path" if modality == "a" else "video_path"
            problems.append(f"{uid}: no {what}")
            items.append(None)
            continue
        if not ref.path.is_file():
            problems.append(f"{uid}: {ref.path} not found")
        items.append(ref)
    return items, problems


def _listing(problems: Sequence[str]) -> str:
    shown = "\n  ".join(problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"\n  {shown}{more}"


def _required_columns(modalities: Sequence[str], group_column: str) -> list[str]:
    cols = ["utterance_id", "label", group_column]
    if "t" in modalities:
        cols.append("text")
    return cols


# --------------------------------------------------------------------------------------------- extraction


@dataclass
class ModalityResult:
    values: list[np.ndarray | None]
    extracted: int
    cached: int
    failures: list[str]
    seconds: float


def run_extractor(
    extractor: Extractor,
    items: Sequence[Any],
    ids: Sequence[str],
    cache: FeatureCache,
    batch_size: int,
    progress: bool = True,
) -> ModalityResult:
    """Features of every item: cache hits read back, misses extracted in batches and cached per batch.

    Identical content (the same text twice, the same clip and span) is extracted once. A batch that fails to
    decode is retried item by item, so one bad file costs only itself; failures are returned, not raised.
    """
    started = time.perf_counter()
    config = extractor.cache_config()
    keys = [cache_key(extractor.content_hash(item), config) for item in items]
    values: list[np.ndarray | None] = [None] * len(items)
    pending: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        hit = cache.get(extractor.namespace, key)
        if hit is not None:
            values[i] = hit
        else:
            pending.setdefault(key, []).append(i)
    cached = sum(v is not None for v in values)
    order = list(pending)
    failures: list[str] = []
    extracted = 0
    name = MODALITY_NAMES[extractor.modality]
    with progress_bar(total=len(order), desc=f"{name} features", unit="utt", disable=not progress) as bar:
        for lo in range(0, len(order), batch_size):
            batch_keys = order[lo : lo + batch_size]
            batch_items = [items[pending[k][0]] for k in batch_keys]
            try:
                results: list[np.ndarray | None] = list(extractor.extract(batch_items))
            except DataError:
                results = []
                for key, item in zip(batch_keys, batch_items, strict=True):
                    try:
                        results.append(extractor.extract([item])[0])
                    except DataError as exc:
                        failures.append(f"{ids[pending[key][0]]}: {exc}")
                        results.append(None)
            for key, value in zip(batch_keys, results, strict=True):
                if value is None:
                    continue
                cache.put(extractor.namespace, key, value)
                extracted += 1
                for i in pending[key]:
                    values[i] = value
            bar.update(len(batch_keys))
    return ModalityResult(values, extracted, cached, failures, time.perf_counter() - started)


def _stack(values: list[np.ndarray | None], seq_len: int | None, dim: int) -> np.ndarray:
    """(d,) vectors -> (N, d); (n_i, d) sequences -> (N, L, d), zero-padded after n_i / cropped at L.

    Entries of `values` are released as they are copied, so peak memory stays near one copy of the output.
    """
    shape = (len(values), dim) if seq_len is None else (len(values), seq_len, dim)
    out = np.zeros(shape, dtype=np.float32)
    for i, v in enumerate(values):
        assert v is not None
        if seq_len is None:
            out[i] = v
        else:
            n = min(len(v), seq_len)
            out[i, :n] = v[:n]
        values[i] = None
    return out


def _column(manifest: pd.DataFrame, name: str) -> np.ndarray:
    return manifest[name].map(lambda v: "" if _is_missing(v) else str(v)).to_numpy(dtype=str)


def _split_column(manifest: pd.DataFrame) -> np.ndarray | None:
    if "split" not in manifest.columns:
        return None
    split = _column(manifest, "split")
    if (split == "").all():
        return None
    bad = sorted(set(split) - set(SPLITS))
    if bad:
        shown = ["(empty)" if b == "" else b for b in bad]
        raise DataError(f"manifest: column 'split' holds {shown}; either every row has one of {list(SPLITS)} "
                        f"or none has a split.")
    return split


def _order_column(manifest: pd.DataFrame) -> np.ndarray | None:
    """The manifest's `turn` as the features' `order` (conversation context needs it); None when it has none."""
    if "turn" not in manifest.columns:
        return None
    turn = pd.to_numeric(manifest["turn"], errors="coerce").to_numpy(dtype=np.float64)
    known = np.isfinite(turn)
    if not known.any():
        return None
    if not known.all():
        log.warning("manifest: %d of %d rows have no 'turn'; the features carry no utterance order, so conversation "
                    "context (model.context) cannot use them. Fill the column to enable it.", int((~known).sum()),
                    len(turn))
        return None
    return turn


# --------------------------------------------------------------------------------------------------- entry


def extract_features(
    manifest_df: pd.DataFrame,
    config: FeaturesConfig,
    modalities: str | Sequence[str],
    out_path: str | Path,
    media_root: str | Path | None = None,
    extractors: Mapping[str, Extractor] | None = None,
) -> Path:
    """Extract `modalities` for every manifest row and write the features ``.npz`` to `out_path`.

    Relative media paths are resolved against `media_root`; `extractors` replaces the configured extractor of a
    modality (e.g. 't': a custom one). Text of an encoder fine-tuned by ``hjcag finetune-text`` is marked inside
    the ``.npz`` (key ``text_finetuned``), as is text read with its preceding turns (key ``text_context``). Also
    writes ``<out>.meta.json`` (models, dims) and ``<out>.run.json`` (extracted vs cached counts, timings). Raises
    DataError listing the utterances whose media is missing or undecodable.
    """
    mods = parse_modalities(modalities)
    out_path = Path(out_path)
    cache = FeatureCache(config.cache_dir)
    root = None if media_root is None else Path(media_root)
    for column in ("audio_path", "video_path"):
        if column in manifest_df.columns and any(m in mods for m in "av"):
            require_root(root, manifest_df[column].tolist(), "the manifest")
    group_column = GROUP_COLUMNS[config.group_by]
    missing_cols = [c for c in _required_columns(mods, group_column) if c not in manifest_df.columns]
    if missing_cols:
        raise DataError(f"manifest lacks column(s) {missing_cols} needed for modalities {list(mods)} "
                        f"(group_by={config.group_by}).")
    manifest = manifest_df.reset_index(drop=True)
    if manifest.empty:
        raise DataError("manifest has no rows.")
    ids = _column(manifest, "utterance_id")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any() or (ids == "").any():
        raise DataError(f"manifest: utterance_id must be unique and non-empty; duplicates "
                        f"{uniq[counts > 1][:5].tolist()}, {(ids == '').sum()} empty.")
    labels = _column(manifest, "label")
    if (labels == "").any():
        raise DataError(f"manifest: {(labels == '').sum()} row(s) have no label; first: "
                        f"{ids[labels == ''][:5].tolist()}.")
    groups = _column(manifest, group_column)
    if (groups == "").any():
        raise DataError(f"manifest: {(groups == '').sum()} row(s) have no '{group_column}' (features.group_by="
                        f"{config.group_by}); first: {ids[groups == ''][:5].tolist()}.")
    split = _split_column(manifest)

    inputs = {m: _items(manifest, m, root) for m in mods}
    problems = [f"[{MODALITY_NAMES[m]}] {p}" for m in mods for p in inputs[m][1]]
    if problems:
        raise DataError(
            f"{len(problems)} utterance input(s) are missing; fix the manifest or quarantine these rows with "
            f"`hjcag validate` first:{_listing(problems)}"
        )
    if "t" in mods and config.text_context:  # each text with its preceding turns (hjcag.features.text_context)
        inputs["t"] = (context_inputs(manifest, inputs["t"][0], config.text_context), [])

    features: dict[str, np.ndarray] = {}
    # only what determines the features: not the cache's folder, which gives the same values wherever it is
    meta: dict[str, Any] = {"utterances": len(manifest), "seq_len": config.seq_len, "group_by": config.group_by,
                            "modalities": {}}
    log.info("feature cache: %s", "off" if cache.root is None else cache.root)
    run_stats: dict[str, Any] = {}
    failures: list[str] = []
    for m in mods:
        extractor = (extractors or {}).get(m) or build_extractor(m, config)
        batch = {"t": config.text_batch_size, "a": config.audio_batch_size, "v": config.visual_batch_size}[m]
        result = run_extractor(extractor, inputs[m][0], ids, cache, batch, config.progress)
        failures += [f"[{MODALITY_NAMES[m]}] {f}" for f in result.failures]
        meta["modalities"][MODALITY_NAMES[m]] = {**extractor.describe(), "dim": extractor.dim}
        run_stats[MODALITY_NAMES[m]] = {"extracted": result.extracted, "cached": result.cached,
                                        "failed": len(result.failures), "seconds": round(result.seconds, 2)}
        if not result.failures:
            features[m] = _stack(result.values, None if m == "a" else config.seq_len, extractor.dim)
        log.info("%s: %d utterances, %d from cache; %d extracted (identical inputs once), %d failed in %.1f s",
                 MODALITY_NAMES[m], len(result.values), result.cached, result.extracted, len(result.failures),
                 result.seconds)
    if failures:
        raise DataError(
            f"{len(failures)} utterance(s) could not be decoded (everything else is cached; re-run after fixing "
            f"or quarantining them):{_listing(failures)}"
        )

    fs = FeatureSet(
        utterance_id=ids,
        label=labels,
        group=groups,
        features=features,
        split=split,
        speaker=_column(manifest, "speaker") if "speaker" in manifest.columns else None,
        dialogue=_column(manifest, "dialogue_id") if group_column != "dialogue_id" else None,
        order=_order_column(manifest),
        # inside the file, not only in the meta record beside it: a copied .npz keeps the leak guard's mark
        text_finetuned=(meta["modalities"].get("text") or {}).get("finetuned"),
        text_context=config.text_context if "t" in mods else 0,  # likewise: how raw text must be read to serve it
    )
    partial = out_path.with_name(out_path.stem + ".partial.npz")
    save_features(partial, fs)
    os.replace(partial, out_path)
    meta["dims"] = {MODALITY_NAMES[m]: int(x.shape[-1]) for m, x in features.items()}
    features_meta_path(out_path).write_text(json.dumps(meta, indent=2, default=str))
    features_run_path(out_path).write_text(json.dumps(run_stats, indent=2))
    return out_path
