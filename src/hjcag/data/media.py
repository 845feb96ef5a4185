"""Write small video clips with an audio track (PyAV), as the synthetic demo dataset needs.

Reading media lives in :mod:`hjcag.features.media_io`; MELD's CSVs and layout in :mod:`hjcag.data.meld`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AAC_FRAME = 1024  # samples per AAC frame


def write_clip(
    path: str | Path,
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
) -> Path:
    """Encode RGB `frames` (n, H, W, 3) uint8 and an optional mono float `audio` (-1..1) into one file.

    ``.mp4`` gets H.264 (libx264, yuv420p) + AAC, as MELD ships; any other extension gets MPEG-4 Part 2 + 16-bit
    PCM (``.avi``, as IEMOCAP ships). H and W must be even (yuv420p).
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (n, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    n, height, width, _ = frames.shape
    if n == 0 or height % 2 or width % 2:
        raise ValueError(f"need at least one frame of even size, got {frames.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    mp4 = path.suffix.lower() == ".mp4"
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("libx264" if mp4 else "mpeg4", rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        if mp4:
            # Bit-identical output from run to run, also when clips are encoded on several threads at once:
            # x264 on one thread and without macroblock-tree look-ahead (whose result was seen to vary then).
            vstream.codec_context.thread_count = 1
            x264 = "threads=1:lookahead-threads=1:mbtree=0:rc-lookahead=0"
            vstream.options = {"preset": "veryfast", "crf": "18", "x264-params": x264}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac" if mp4 else "pcm_s16le", rate=sample_rate, layout="mono")
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
        if astream is not None and audio is not None:
            _encode_audio(container, astream, np.asarray(audio, dtype=np.float32).reshape(-1), sample_rate, mp4)
    return path


def _encode_audio(
    container: av.container.OutputContainer, stream: av.AudioStream, signal: np.ndarray, rate: int, aac: bool
) -> None:
    signal = np.clip(signal, -1.0, 1.0)
    for lo in range(0, len(signal), AAC_FRAME):
        part = signal[None, lo : lo + AAC_FRAME]
        if aac:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout="mono")
        else:
            pcm = np.ascontiguousarray((part * 32767).astype(np.int16))
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, lo, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
