"""Media checks: every file a chosen modality needs exists, decodes, and has a plausible duration, sample rate and
frames.

These run in plain Python (PyAV) because GX expectations look at table columns, not at files. The checks add one
column per check to the manifest frame (``audio_exists``, ``audio_decodes``, ``audio_duration_s``, ...); the manifest
suite then sets GX expectations on those columns, so media problems land in the same report, Data Docs page and
quarantine as every other problem. A value is null when an earlier check already failed (a missing file is not also
reported as undecodable), so every bad row gets one precise reason per problem.

Only modalities that were chosen are checked: a text-only run opens no media at all. How a file is probed and the
bounds it must keep live in :mod:`hjcag.features.media_rules`, which serving applies to request media too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from hjcag.cpus import pool_size
from hjcag.data.manifest import media_span, optional_str
from hjcag.features.media_rules import MediaProbe, probe_audio, probe_video
from hjcag.params import MediaConfig
from hjcag.progress import progress as progress_bar

# modality -> (path column, prefix of the result columns)
MEDIA_MODALITIES: dict[str, tuple[str, str]] = {"a": ("audio_path", "audio"), "v": ("video_path", "video")}


def result_columns(modalities: Sequence[str]) -> list[str]:
    """The columns :func:`check_media` adds for `modalities` (none for text)."""
    cols: list[str] = []
    for m in modalities:
        if m == "a":
            cols += ["audio_exists", "audio_decodes", "audio_duration_s", "audio_sample_rate", "audio_span_in_file",
                     "audio_error"]
        elif m == "v":
            cols += ["video_exists", "video_decodes", "video_duration_s", "video_frames", "video_span_in_file",
                     "video_error"]
    return cols


def _resolve(value: Any, root: Path | None) -> Path | None:
    s = optional_str(value)
    if s is None or not s.strip():
        return None
    p = Path(s.strip()).expanduser()
    return p if p.is_absolute() or root is None else root / p


def _span_checks(
    probe: MediaProbe, span: tuple[float | None, float | None], tolerance: float
) -> tuple[float | None, bool | None]:
    """(utterance duration, whether the span lies inside the file) for a probed file."""
    start, end = span
    file_dur = probe.duration_s
    if start is None and end is None:
        return file_dur, None
    lo = start or 0.0
    hi = end if end is not None else file_dur
    duration = None if hi is None else hi - lo
    inside: bool | None = None
    if file_dur is not None:
        inside = lo < file_dur and (end is None or end <= file_dur + tolerance)
    return duration, inside


def check_media(
    df: pd.DataFrame,
    modalities: Sequence[str],
    config: MediaConfig | None = None,
    media_root: str | Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per manifest row with the :func:`result_columns` of the chosen media modalities.

    Rows without a path for a modality get nulls (the manifest suite reports the missing path itself). Each file is
    opened once per distinct (path, span), on a few threads.
    """
    config = config or MediaConfig()
    root = None if media_root is None else Path(media_root)
    chosen = [m for m in modalities if m in MEDIA_MODALITIES]
    out = pd.DataFrame(index=df.index)
    if not chosen:
        return out
    records = df.to_dict("records")
    jobs: dict[tuple[Any, ...], Any] = {}
    row_keys: dict[str, list[tuple[Any, ...] | None]] = {}
    spans: dict[str, list[tuple[float | None, float | None] | None]] = {}
    for m in chosen:
        column, prefix = MEDIA_MODALITIES[m]
        keys: list[tuple[Any, ...] | None] = []
        row_spans: list[tuple[float | None, float | None] | None] = []
        for rec in records:
            path = _resolve(rec.get(column), root)
            start, end = media_span(rec, prefix)
            span: tuple[float | None, float | None] | None = (_clean_float(start), _clean_float(end))
            if not _span_ordered(*span):  # type: ignore[misc]
                span = None  # the manifest suite reports it; media checks then look at the whole file only
            row_spans.append(span)
            if path is None:
                keys.append(None)
                continue
            # audio: the file is probed once whatever the span; video: frames must lie in the span
            key = ("a", str(path)) if m == "a" else ("v", str(path), *(span or (None, None)))
            keys.append(key)
            jobs.setdefault(key, None)
        row_keys[m], spans[m] = keys, row_spans

    def run(key: tuple[Any, ...]) -> MediaProbe:
        if key[0] == "a":
            return probe_audio(Path(key[1]), config.full_decode)
        return probe_video(Path(key[1]), key[2], key[3], config.min_frames, config.full_decode)

    keys = list(jobs)
    workers = pool_size(config.workers, most=4)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys) or 1))) as pool:
        results = list(progress_bar(pool.map(run, keys), total=len(keys), desc="media checks", unit="file",
                                    disable=not progress, leave=False))
    probes = dict(zip(keys, results, strict=True))

    for m in chosen:
        prefix = MEDIA_MODALITIES[m][1]
        cols: dict[str, list[Any]] = {c: [] for c in result_columns([m])}
        for key, span in zip(row_keys[m], spans[m], strict=True):
            probe = None if key is None else probes[key]
            ok = probe is not None and probe.exists and probe.error is None
            duration, inside = (None, None)
            if ok and probe is not None and span is not None:
                duration, inside = _span_checks(probe, span, config.span_tolerance_s)
            cols[f"{prefix}_exists"].append(None if probe is None else probe.exists)
            cols[f"{prefix}_decodes"].append(None if probe is None or not probe.exists else probe.error is None)
            cols[f"{prefix}_duration_s"].append(math.nan if duration is None else float(duration))
            cols[f"{prefix}_span_in_file"].append(inside)
            cols[f"{prefix}_error"].append(None if probe is None else probe.error)
            if m == "a":
                rate = probe.sample_rate if ok and probe else None
                cols["audio_sample_rate"].append(math.nan if rate is None else float(rate))
            else:
                frames = probe.frames if ok and probe and span is not None else None
                cols["video_frames"].append(math.nan if frames is None else float(frames))
        for name, values in cols.items():
            dtype = "float64" if name.endswith(("_s", "_rate", "_frames")) else object
            out[name] = pd.Series(values, index=df.index, dtype=dtype)
    return out


def _span_ordered(start: float | None, end: float | None) -> bool:
    return (start is None or start >= 0) and (end is None or end > (start or 0.0))


def _clean_float(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
