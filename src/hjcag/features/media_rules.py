"""What valid media is, in one place: how a file is probed (PyAV) and the bounds it must keep.

The bounds are params.yaml's ``validation.media`` (:class:`~hjcag.params.MediaConfig`: duration, sample rate,
frames). Validation applies them to every manifest row (:mod:`hjcag.validate.media_checks` probes the files,
:mod:`hjcag.validate.manifest_suite` turns each :class:`Bound` into a GX expectation); serving applies the same
bounds, carried in the model archive (``media.json``), to every wav / mp4 of a request
(:mod:`hjcag.serve.predictor`), so the endpoint refuses what the pipeline would have refused. Only PyAV is needed
here: the serving image has no pandas-on-parquet or Great Expectations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av

from hjcag.params import MediaConfig


@dataclass
class MediaProbe:
    exists: bool
    error: str | None = None  # why it does not open / decode
    duration_s: float | None = None  # of the file (stream if known, else container)
    sample_rate: int | None = None
    frames: int | None = None  # decoded video frames in the span (capped unless full_decode)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _stream_duration(stream: av.stream.Stream, container: av.container.InputContainer) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None if container.duration is None else container.duration / av.time_base


def probe_audio(path: Path, full_decode: bool = False) -> MediaProbe:
    """Open `path`, decode its first audio frame (or all of them) and read duration and sample rate."""
    if not path.is_file():
        return MediaProbe(exists=False)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return MediaProbe(exists=True, error="no audio stream")
            stream = container.streams.audio[0]
            duration = _stream_duration(stream, container)
            samples, rate = 0, stream.codec_context.sample_rate or None
            for frame in container.decode(stream):
                samples += frame.samples
                rate = frame.sample_rate or rate
                if not full_decode:
                    break
            if samples == 0:
                return MediaProbe(exists=True, error="no audio frame could be decoded", duration_s=duration)
            if full_decode and rate:
                duration = samples / rate
            return MediaProbe(exists=True, duration_s=duration, sample_rate=rate)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        return MediaProbe(exists=True, error=_error_text(exc))


def probe_video(
    path: Path, start_s: float | None, end_s: float | None, min_frames: int = 1, full_decode: bool = False
) -> MediaProbe:
    """Open `path` and decode video frames inside [start_s, end_s): up to `min_frames` of them, or all."""
    if not path.is_file():
        return MediaProbe(exists=False)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return MediaProbe(exists=True, error="no video stream")
            stream = container.streams.video[0]
            duration = _stream_duration(stream, container)
            start = start_s or 0.0
            if start > 0:
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            frames, decoded_any = 0, False
            for frame in container.decode(stream):
                decoded_any = True
                t = frame.time
                if t is not None and t < start - 1e-3:
                    continue
                if t is not None and end_s is not None and t >= end_s:
                    break
                frames += 1
                if not full_decode and frames >= max(1, min_frames):
                    break
            if not decoded_any:
                return MediaProbe(exists=True, error="no video frame could be decoded", duration_s=duration, frames=0)
            return MediaProbe(exists=True, duration_s=duration, frames=frames)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        return MediaProbe(exists=True, error=_error_text(exc))


@dataclass(frozen=True)
class Bound:
    """One bound of valid media: the probed value in `column` must lie in [low, high] (None: unbounded)."""

    check: str  # the check's name in validation reports, e.g. "audio_sample_rate"
    column: str  # the media-check column holding the value, e.g. "audio_sample_rate"
    quantity: str  # "audio sample rate"
    unit: str  # "Hz", "s" or "" (frames)
    low: float | None
    high: float | None
    settings: str  # the validation.media keys that set it

    def describe(self) -> str:
        """The reason a validation report gives for a row outside the bound."""
        if self.check == "video_frames":
            return f"fewer than {self.low} video frame(s) in the time span"
        return f"{self.quantity} outside [{self.low}, {self.high}] {self.unit}"

    def violated_by(self, value: float | None) -> bool:
        """Whether `value` lies outside (an unknown value is not judged here, as in the GX expectation)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return (self.low is not None and value < self.low) or (self.high is not None and value > self.high)

    def too_large(self, value: float) -> bool:
        return self.high is not None and value > self.high

    def explain(self, value: float) -> str:
        """Why `value` is not valid media, and which settings say so."""
        unit = f" {self.unit}" if self.unit else ""
        if self.check == "video_frames":
            return (f"the video has {value:g} decodable frame(s); valid media has at least {self.low:g} "
                    f"(validation.media.{self.settings})")
        return (f"{self.quantity} is {value:g}{unit}; valid media has {self.low:g} to {self.high:g}{unit} "
                f"(validation.media.{self.settings})")


def media_bounds(config: MediaConfig, modality: str) -> list[Bound]:
    """The bounds of `config` for audio ("a") or video ("v") files, in the order they are checked."""
    prefix = {"a": "audio", "v": "video"}[modality]
    bounds = [Bound(f"{prefix}_duration", f"{prefix}_duration_s", f"{prefix} duration", "s", config.min_duration_s,
                    config.max_duration_s, "min_duration_s / max_duration_s")]
    if modality == "a":
        bounds.append(Bound("audio_sample_rate", "audio_sample_rate", "audio sample rate", "Hz",
                            config.min_sample_rate, config.max_sample_rate, "min_sample_rate / max_sample_rate"))
    else:
        bounds.append(Bound("video_frames", "video_frames", "video frames", "", config.min_frames, None,
                            "min_frames"))
    return bounds


def probed_values(probe: MediaProbe, modality: str) -> dict[str, float | None]:
    """A probe's values by media-check column, for :meth:`Bound.violated_by`."""
    prefix = {"a": "audio", "v": "video"}[modality]
    values: dict[str, float | None] = {f"{prefix}_duration_s": probe.duration_s}
    if modality == "a":
        values["audio_sample_rate"] = None if probe.sample_rate is None else float(probe.sample_rate)
    else:
        values["video_frames"] = None if probe.frames is None else float(probe.frames)
    return values
