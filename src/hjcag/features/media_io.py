"""PyAV decode helpers: utterance audio at 16 kHz mono, and L frames sampled uniformly from a clip or a span.

Spans are in seconds relative to the start of the media file; ``None`` means the whole file. Every decode error
becomes a :class:`~hjcag.errors.DataError` naming the file, so the caller can list all bad utterances at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import av
import numpy as np

from hjcag.errors import DataError

SAMPLE_RATE = 16_000
T = TypeVar("T")
R = TypeVar("R")


def thread_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` on up to `workers` threads, in order; the first exception propagates."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _span(start_s: float | None, end_s: float | None, path: Path) -> tuple[float, float | None]:
    start = 0.0 if start_s is None or math.isnan(start_s) else float(start_s)
    end = None if end_s is None or math.isnan(end_s) else float(end_s)
    if start < 0 or (end is not None and end <= start):
        raise DataError(f"{path}: invalid time span [{start_s}, {end_s}] (need 0 <= start_s < end_s).")
    return start, end


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be opened as media ({exc}).") from exc


def media_duration(path: str | Path) -> float | None:
    """The container's duration in seconds (None when the container does not say)."""
    with _open(Path(path)) as container:
        return _container_duration(container)


def _container_duration(container: av.container.InputContainer) -> float | None:
    return None if container.duration is None else container.duration / av.time_base


def _stream_duration(stream: av.stream.Stream, container: av.container.InputContainer) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return _container_duration(container)


def load_audio(
    path: str | Path,
    start_s: float | None = None,
    end_s: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Decode the first audio stream of `path` to mono float32 at `sample_rate`, cut to [start_s, end_s].

    Works for wav files and for the audio track of video clips. Encoders such as AAC pad the last frame, so the
    decoded signal is trimmed to the stream's (or container's) true duration.
    """
    path = Path(path)
    start, end = _span(start_s, end_s, path)
    with _open(path) as container:
        if not container.streams.audio:
            raise DataError(f"{path}: no audio stream.")
        stream = container.streams.audio[0]
        duration = _stream_duration(stream, container)
        if duration is not None and start >= duration:
            raise DataError(
                f"{path}: span starts at {start:.3f} s but the audio lasts {duration:.3f} s. start_s/end_s must "
                f"be relative to this file (leave them empty for per-utterance clips)."
            )
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        try:
            if start > 0:
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else 0.0
                if end is not None and t >= end:
                    break
                if first_time is None:
                    first_time = t
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            raise DataError(f"{path}: audio cannot be decoded ({exc}).") from exc
    signal = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    first_time = first_time or 0.0
    stop = end if end is not None else duration
    if stop is not None and duration is not None:
        stop = min(stop, duration)
    lo = max(0, round((start - first_time) * sample_rate))
    hi = len(signal) if stop is None else min(len(signal), round((stop - first_time) * sample_rate))
    signal = signal[lo:hi]
    if signal.size == 0:
        raise DataError(f"{path}: no audio samples in span [{start_s}, {end_s}].")
    return np.ascontiguousarray(signal)


def sample_frames(
    path: str | Path,
    n_frames: int,
    start_s: float | None = None,
    end_s: float | None = None,
    size: int = 224,
) -> np.ndarray:
    """`n_frames` RGB frames sampled uniformly in [start_s, end_s] of the first video stream: (n, size, size, 3) uint8.

    Target times are the centres of `n_frames` equal slices of the span; each takes the frame shown at that time
    (frames repeat when the span has fewer frames than targets). Frames are resized to size x size (whole frame,
    no crop).
    """
    path = Path(path)
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    start, end = _span(start_s, end_s, path)
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream.")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = _stream_duration(stream, container)
        if duration is not None and start >= duration:
            raise DataError(
                f"{path}: span starts at {start:.3f} s but the video lasts {duration:.3f} s. start_s/end_s must "
                f"be relative to this file (leave them empty for per-utterance clips)."
            )
        stop = end if end is not None else duration
        if stop is None:
            raise DataError(f"{path}: the container does not state its duration; give end_s in the manifest.")
        if duration is not None:
            stop = min(stop, duration)
        targets = start + (np.arange(n_frames) + 0.5) * (stop - start) / n_frames
        picked: list[np.ndarray | None] = [None] * n_frames
        i = 0
        prev: av.VideoFrame | None = None
        fps = float(stream.average_rate) if stream.average_rate else 25.0
        try:
            if start > 0:
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index / fps
                # `prev` is on screen until `frame` starts: it covers every target before t.
                while i < n_frames and targets[i] < t:
                    picked[i] = _rgb(prev if prev is not None else frame, size)
                    i += 1
                if i >= n_frames:
                    break
                prev = frame
            while i < n_frames and prev is not None:
                picked[i] = _rgb(prev, size)
                i += 1
        except av.error.FFmpegError as exc:
            raise DataError(f"{path}: video cannot be decoded ({exc}).") from exc
    if any(p is None for p in picked):
        raise DataError(f"{path}: no video frames in span [{start_s}, {end_s}].")
    return np.stack(picked)  # type: ignore[arg-type]


def _rgb(frame: av.VideoFrame, size: int) -> np.ndarray:
    return frame.to_ndarray(width=size, height=size, format="rgb24")


@dataclass(frozen=True)
class MediaRef:
    """One utterance's media: a file and an optional span inside it (seconds; None = whole file)."""

    path: Path
    start_s: float | None = None
    end_s: float | None = None

    def content_hash(self) -> str:
        """Identity for the feature cache: the file's bytes plus the span."""
        from hjcag.features.cache import file_sha256

        return f"{file_sha256(self.path)}:{self.start_s}:{self.end_s}"
