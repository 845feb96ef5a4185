"""Real, tiny media files and dataset trees for tests.

Everything here writes genuine containers with PyAV (wav/PCM, mp4/H.264+AAC, avi/MPEG-4 Part 2+PCM), so code
under test decodes real files, never mocks. Defaults are tiny (0.3 s, 32x32) to keep tests fast.

`make_meld_tree` and `make_iemocap_tree` lay files out exactly as the datasets ship, with hooks to inject the
awkward cases (missing clips, cp1252 bytes, bad lines). Import with `import media_fixtures` (tests/conftest.py
puts this directory on sys.path).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16_000


def _tone(duration_s: float, sample_rate: int, freq: float, channels: int) -> np.ndarray:
    """(channels, n) float32 sine, amplitude 0.3."""
    n = max(1, round(duration_s * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[None, :], channels, axis=0)


def write_wav(
    path: str | Path,
    duration_s: float = 0.3,
    sample_rate: int = SAMPLE_RATE,
    freq: float = 440.0,
    channels: int = 1,
) -> Path:
    """A 16-bit PCM wav holding a sine tone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = (_tone(duration_s, sample_rate, freq, channels) * 32767).astype(np.int16)
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate, layout=layout)
        # packed s16 wants shape (1, n * channels), channels interleaved
        frame = av.AudioFrame.from_ndarray(samples.T.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _video_frames(n: int, size: tuple[int, int], seed: int) -> Iterable[np.ndarray]:
    """Distinct RGB frames: a colour ramp that shifts every frame, so decoders see real content."""
    w, h = size
    base = np.random.default_rng(seed).integers(0, 255, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.empty((h, w, 3), dtype=np.uint8)
        for c in range(3):
            img[..., c] = (base[c] + 8 * xx + 4 * yy + 20 * i * (c + 1)) % 256
        yield img


def write_video(
    path: str | Path,
    duration_s: float = 0.3,
    size: tuple[int, int] = (32, 32),
    fps: int = 10,
    audio: bool = True,
    sample_rate: int = SAMPLE_RATE,
    freq: float = 440.0,
    seed: int = 0,
) -> Path:
    """A video clip with an optional mono audio track; codecs follow the extension.

    .mp4 -> H.264 + AAC (as MELD ships); .avi -> MPEG-4 Part 2 ("DivX") + PCM (as IEMOCAP ships).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    vcodec, acodec, aformat = ("libx264", "aac", "fltp") if suffix == ".mp4" else ("mpeg4", "pcm_s16le", "s16")
    n_frames = max(1, round(duration_s * fps))
    with av.open(str(path), "w") as container:
        vstream = container.add_stream(vcodec, rate=fps)
        vstream.width, vstream.height = size
        vstream.pix_fmt = "yuv420p"
        astream = container.add_stream(acodec, rate=sample_rate, layout="mono") if audio else None
        for i, img in enumerate(_video_frames(n_frames, size, seed)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
        if astream is not None:
            tone = _tone(duration_s, sample_rate, freq, 1)
            if aformat == "s16":
                tone = (tone * 32767).astype(np.int16)
            chunk = 1024  # AAC's frame size; fine for PCM too
            for start in range(0, tone.shape[1], chunk):
                part = np.ascontiguousarray(tone[:, start : start + chunk])
                aframe = av.AudioFrame.from_ndarray(part, format=aformat, layout="mono")
                aframe.sample_rate = sample_rate
                aframe.pts = start
                aframe.time_base = Fraction(1, sample_rate)
                for packet in astream.encode(aframe):
                    container.mux(packet)
            for packet in astream.encode(None):
                container.mux(packet)
    return path


# --------------------------------------------------------------------------------------------- MELD layout

MELD_HEADER = (
    "Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
    "Season", "Episode", "StartTime", "EndTime",
)
MELD_CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
MELD_CSV_NAMES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


@dataclass
class MeldRow:
    """One CSV row. `utterance` is written in cp1252 (so ’ becomes the byte 0x92, as in the real CSVs)."""

    dialogue_id: int
    utterance_id: int
    utterance: str = "Hello there."
    speaker: str = "Joey"
    emotion: str = "neutral"
    sentiment: str = "neutral"
    clip: bool = True  # write dia{D}_utt{U}.mp4


def make_meld_tree(
    root: str | Path,
    splits: dict[str, Sequence[MeldRow]],
    media: bool = True,
    duration_s: float = 0.3,
) -> Path:
    """MELD as downloaded: {split}_sent_emo.csv (cp1252 bytes) + clips under the split's folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(MELD_HEADER)
        for i, r in enumerate(rows, start=1):
            writer.writerow([
                i, r.utterance, r.speaker, r.emotion, r.sentiment, r.dialogue_id, r.utterance_id,
                3, 7, "00:14:38,127", "00:14:40,000",
            ])
        (root / MELD_CSV_NAMES[split]).write_bytes(buf.getvalue().encode("cp1252"))
        if media:
            for j, r in enumerate(rows):
                if r.clip:
                    clip = root / MELD_CLIP_DIRS[split] / f"dia{r.dialogue_id}_utt{r.utterance_id}.mp4"
                    if not clip.exists():
                        write_video(clip, duration_s=duration_s, seed=j)
    return root


# ------------------------------------------------------------------------------------------ IEMOCAP layout


@dataclass
class IemocapTurn:
    """One turn of a dialog. `wav`/`transcript` control whether its files are written."""

    name: str  # e.g. Ses01F_impro01_F000
    emotion: str = "neu"
    start: float = 0.0
    end: float = 0.3
    text: str = "Excuse me."
    wav: bool = True
    transcript: bool = True


@dataclass
class IemocapDialog:
    name: str  # e.g. Ses01F_impro01
    turns: list[IemocapTurn] = field(default_factory=list)
    avi: bool = True
    extra_emo_lines: list[str] = field(default_factory=list)  # appended verbatim to EmoEvaluation


def make_iemocap_tree(
    root: str | Path,
    sessions: dict[int, Sequence[IemocapDialog]],
    media: bool = True,
) -> Path:
    """IEMOCAP_full_release as shipped: SessionN/dialog/{EmoEvaluation,transcriptions,avi/DivX},
    SessionN/sentences/wav/<dialog>/<turn>.wav. EmoEvaluation files carry the real header and per-evaluator lines."""
    root = Path(root)
    for number, dialogs in sessions.items():
        sess = root / f"Session{number}"
        emo_dir = sess / "dialog" / "EmoEvaluation"
        tr_dir = sess / "dialog" / "transcriptions"
        avi_dir = sess / "dialog" / "avi" / "DivX"
        for d in (emo_dir / "Categorical", tr_dir, avi_dir):
            d.mkdir(parents=True, exist_ok=True)
        for k, dialog in enumerate(dialogs):
            emo = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            tr = []
            for turn in dialog.turns:
                emo += [
                    f"[{turn.start:.4f} - {turn.end:.4f}]\t{turn.name}\t{turn.emotion}\t[2.5000, 2.5000, 2.5000]",
                    "C-E1:\tNeutral;\t()",
                    "A-E1:\tval 3; act 2; dom  3;\t()",
                    "",
                ]
                if turn.transcript:
                    tr.append(f"{turn.name} [{turn.start:08.4f}-{turn.end:08.4f}]: {turn.text}")
                if media and turn.wav:
                    write_wav(sess / "sentences" / "wav" / dialog.name / f"{turn.name}.wav",
                              duration_s=max(0.05, turn.end - turn.start))
            emo += dialog.extra_emo_lines
            (emo_dir / f"{dialog.name}.txt").write_text("\n".join(emo) + "\n")
            (tr_dir / f"{dialog.name}.txt").write_text("\n".join(tr) + "\n")
            if media and dialog.avi:
                end = max((t.end for t in dialog.turns), default=0.3)
                write_video(avi_dir / f"{dialog.name}.avi", duration_s=end + 0.1, seed=k)
    return root
