"""A synthetic dataset in MELD's raw layout, for the demo and for tests: nothing to download, fully deterministic.

Each utterance gets a sentence, a short mp4 clip with a drawn face and a speech-like audio track. The seven MELD
emotions are spread over three cues so that each modality carries part of the label and only their combination
carries all of it:

=========  ===========  =============  =========
emotion    text         audio          face
           (valence)    (arousal)      (mouth/brows)
=========  ===========  =============  =========
neutral    neutral      low            flat
joy        positive     high           smile
surprise   positive     high           open
fear       negative     high           open
anger      negative     high           frown
sadness    negative     low            frown
disgust    negative     low            flat
=========  ===========  =============  =========

Every cue is replaced by a wrong value with probability ``CUE_FLIP`` (independently per modality) and its
signal is noisy (filler words; speaker pitch, gain and background noise; face position, lighting and pixel
noise), so no single modality, and not even a perfect fusion, is always right. The cues actually drawn are
written to ``synthetic_cues.csv`` next to the MELD CSVs.

Dialogue ids restart at 0 in every split, as in MELD, so downstream ids are ``{split}_dia{D}_utt{U}``.

Optional conversation cue (``context_cue`` = p, issue 10; 0 by default, which leaves the dataset exactly as
without it): every utterance after a dialogue's first becomes, with probability p, an *echo* of the one before it:
it takes the previous utterance's emotion, says one of a few agreeing phrases with no valence word ("Same here,
Ross."), and its voice and face cues are drawn at random. Its own media say nothing about its label; the turn
before it says everything, so only a model that reads the conversation can get echoes right.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hjcag.cpus import usable_cpus
from hjcag.data.media import write_clip
from hjcag.data.meld import CLIP_DIRS, CSV_COLUMNS, CSV_NAMES, MELD_LABELS
from hjcag.errors import ConfigError
from hjcag.progress import progress as progress_bar

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
SIZES: dict[str, tuple[int, int, int]] = {"tiny": (26, 4, 6), "small": (78, 12, 18)}  # dialogues per split
UTTERANCES_PER_DIALOGUE = (5, 11)  # inclusive range, mean 8
CUE_FLIP = 0.12
SAMPLE_RATE = 16_000
FPS = 10
FRAME_SIZE = 64
CUES_FILE = "synthetic_cues.csv"

VALENCES = ("neutral", "positive", "negative")
AROUSALS = ("low", "high")
FACES = ("flat", "smile", "open", "frown")
CUES: dict[str, tuple[str, str, str]] = {
    "neutral": ("neutral", "low", "flat"),
    "joy": ("positive", "high", "smile"),
    "surprise": ("positive", "high", "open"),
    "fear": ("negative", "high", "open"),
    "anger": ("negative", "high", "frown"),
    "sadness": ("negative", "low", "frown"),
    "disgust": ("negative", "low", "flat"),
}
SENTIMENT = {"neutral": "neutral", "positive": "positive", "negative": "negative"}
# MELD-like imbalance (neutral most frequent), flattened so every class has samples in every fold.
CLASS_SHARE: dict[str, float] = {
    "neutral": 0.30, "joy": 0.15, "surprise": 0.12, "anger": 0.12, "sadness": 0.11, "disgust": 0.10, "fear": 0.10,
}

# speaker -> (base f0 Hz, skin RGB, background RGB)
SPEAKERS: dict[str, tuple[float, tuple[int, int, int], tuple[int, int, int]]] = {
    "Joey": (110.0, (224, 184, 150), (70, 90, 140)),
    "Ross": (120.0, (232, 196, 166), (120, 80, 60)),
    "Chandler": (130.0, (218, 178, 140), (60, 110, 80)),
    "Rachel": (205.0, (240, 204, 176), (150, 70, 100)),
    "Monica": (215.0, (228, 190, 158), (90, 70, 130)),
    "Phoebe": (230.0, (236, 200, 170), (130, 120, 60)),
}

# Valence words: few, so each recurs often enough to be learnt from a tiny dataset. Every sentence carries two
# (an opener and an adjective); names, nouns and templates are filler shared by all classes.
OPENERS: dict[str, tuple[str, ...]] = {
    "positive": ("Oh good,", "Yay,", "Nice,"),
    "negative": ("Oh no,", "Ugh,", "Damn,"),
    "neutral": ("So,", "Well,", "Hmm,"),
}
ADJECTIVES: dict[str, tuple[str, ...]] = {
    "positive": ("great", "wonderful", "amazing", "perfect", "lovely"),
    "negative": ("terrible", "awful", "horrible", "the worst", "miserable"),
    "neutral": ("okay", "normal", "usual", "the same", "average"),
}
ECHOES = ("Same here, {name}.", "Me too, {name}.", "I know what you mean, {name}.", "Yeah, exactly, {name}.")
NOUNS = ("party", "apartment", "coffee", "date", "job", "movie", "weekend", "dinner")
TEMPLATES = (
    "{opener} {name}, this {noun} is {adj}.",
    "{opener} I think the {noun} was {adj}.",
    "{opener} that’s {adj}, {name}.",
    "{opener} the {noun}? It’s {adj}.",
    "{opener} you know, the {noun} is really {adj}.",
    "{opener} I’d say it was {adj}.",
    "{opener} the {noun} turned out {adj}.",
    "{opener} it’s {adj}. The whole {noun}, {name}.",
)


@dataclass(frozen=True)
class Utterance:
    """One planned utterance: its MELD row and the cues its media were drawn from."""

    split: str
    dialogue_id: int
    utterance_id: int
    speaker: str
    emotion: str
    text: str
    valence: str  # cues as drawn (after CUE_FLIP), not the label's
    arousal: str
    face: str
    duration: float
    start: float  # seconds into the episode
    season: int
    episode: int
    seed: tuple[int, ...]
    echo: bool = False  # a context-cue turn (module docstring)

    @property
    def clip_name(self) -> str:
        return f"dia{self.dialogue_id}_utt{self.utterance_id}.mp4"


# ---------------------------------------------------------------------------------------------- plan


def _draw_cue(rng: np.random.Generator, true: str, values: Sequence[str]) -> str:
    if rng.random() >= CUE_FLIP:
        return true
    others = [v for v in values if v != true]
    return others[int(rng.integers(len(others)))]


def _class_counts(n: int) -> list[str]:
    """`n` labels in CLASS_SHARE proportions (largest remainder), in a fixed order."""
    shares = np.array([CLASS_SHARE[e] for e in MELD_LABELS])
    raw = shares / shares.sum() * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return [e for e, c in zip(MELD_LABELS, counts, strict=True) for _ in range(c)]


def _sentence(rng: np.random.Generator, valence: str, names: Sequence[str]) -> str:
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    opener = OPENERS[valence][int(rng.integers(len(OPENERS[valence])))]
    adj = ADJECTIVES[valence][int(rng.integers(len(ADJECTIVES[valence])))]
    name, noun = names[int(rng.integers(len(names)))], NOUNS[int(rng.integers(len(NOUNS)))]
    return template.format(opener=opener, name=name, noun=noun, adj=adj)


def plan_dataset(size: str = "tiny", seed: int = 13, dialogues: Sequence[int] | None = None,
                 context_cue: float = 0.0) -> list[Utterance]:
    """Every utterance of the dataset (rows and cues), deterministic from `seed`; no media are written.

    `dialogues` (train, dev, test) overrides the number of dialogues per split that `size` implies; `context_cue`
    is the share of echo turns (module docstring).
    """
    if not 0.0 <= context_cue < 1.0:
        raise ConfigError(f"demo_data.context_cue must be in [0, 1) (got {context_cue}).")
    if dialogues is None:
        if size not in SIZES:
            raise ConfigError(f"demo dataset size '{size}' is unknown; use one of {list(SIZES)}.")
        dialogues = SIZES[size]
    if len(dialogues) != len(SPLITS) or min(dialogues) < 1:
        raise ConfigError(f"dialogues must give at least one dialogue for each of {SPLITS}, got {dialogues}.")
    rng = np.random.default_rng(seed)
    names = tuple(SPEAKERS)
    plan: list[Utterance] = []
    for s, (split, n_dia) in enumerate(zip(SPLITS, dialogues, strict=True)):
        lengths = rng.integers(UTTERANCES_PER_DIALOGUE[0], UTTERANCES_PER_DIALOGUE[1] + 1, size=n_dia)
        labels = _class_counts(int(lengths.sum()))
        rng.shuffle(labels)
        k = 0
        for d, n_utt in enumerate(lengths):
            cast = [names[i] for i in rng.choice(len(names), size=int(rng.integers(2, 4)), replace=False)]
            season, episode = int(rng.integers(1, 11)), int(rng.integers(1, 25))
            clock = float(rng.uniform(30, 1200))
            for u in range(int(n_utt)):
                emotion = labels[k]
                k += 1
                echo = context_cue > 0 and u > 0 and rng.random() < context_cue  # no draw at all when 0
                if echo:  # the previous turn's emotion; this turn's own cues carry nothing
                    emotion = plan[-1].emotion
                    valence, arousal, face = "neutral", AROUSALS[int(rng.integers(2))], FACES[int(rng.integers(4))]
                else:
                    valence, arousal, face = CUES[emotion]
                    valence = _draw_cue(rng, valence, VALENCES)
                    arousal = _draw_cue(rng, arousal, AROUSALS)
                    face = _draw_cue(rng, face, FACES)
                speaker = cast[int(rng.integers(len(cast)))]
                duration = round(float(rng.uniform(1.0, 1.5)), 3)
                others = [n for n in names if n != speaker]
                text = (ECHOES[int(rng.integers(len(ECHOES)))].format(name=others[int(rng.integers(len(others)))])
                        if echo else _sentence(rng, valence, others))
                plan.append(Utterance(
                    split=split, dialogue_id=d, utterance_id=u, speaker=speaker, emotion=emotion,
                    text=text,
                    valence=valence, arousal=arousal, face=face, duration=duration, start=round(clock, 3),
                    season=season, episode=episode, seed=(seed, s, d, u), echo=echo,
                ))
                clock += duration + float(rng.uniform(0.2, 1.5))
    return plan


# --------------------------------------------------------------------------------------------- audio


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, rate_hz: float) -> np.ndarray:
    """Zero-mean noise, roughly unit amplitude, varying at about `rate_hz`."""
    knots = np.arange(0.0, t[-1] + 2.0 / rate_hz, 1.0 / rate_hz)
    return np.interp(t, knots, rng.uniform(-1.0, 1.0, size=len(knots)))


def speech_like(rng: np.random.Generator, duration: float, f0_base: float, high_arousal: bool,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced, syllabic signal (float32, mono): harmonics on an f0 contour under a syllable envelope + noise.

    High arousal: higher and more variable f0, louder, faster syllables.
    """
    n = round(duration * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = f0_base * (1.35 if high_arousal else 1.0) * rng.uniform(0.93, 1.07)
    spread = rng.uniform(0.16, 0.26) if high_arousal else rng.uniform(0.04, 0.09)
    contour = 1.0 + spread * (0.6 * np.sin(2 * np.pi * rng.uniform(0.7, 1.6) * t + rng.uniform(0, 2 * np.pi))
                              + 0.4 * _smooth_noise(rng, t, 5.0)) - 0.06 * t / duration
    f0_t = f0 * contour
    phase = 2 * np.pi * np.cumsum(f0_t) / sample_rate
    voiced = np.zeros(n)
    for k in range(1, int(3800 / f0_t.min()) + 1):
        voiced += np.where(k * f0_t < 3800, np.sin(k * phase) / k**1.2, 0.0)
    voiced /= np.abs(voiced).max() + 1e-9
    # syllables: Hann bumps at jittered intervals
    rate = rng.uniform(5.5, 7.0) if high_arousal else rng.uniform(3.0, 4.2)
    env = np.zeros(n)
    onset = rng.uniform(0.04, 0.12)
    while onset < duration - 0.1:
        length = min(0.7 / rate * rng.uniform(0.8, 1.2), duration - onset)
        lo, hi = round(onset * sample_rate), round((onset + length) * sample_rate)
        env[lo:hi] += rng.uniform(0.6, 1.0) * np.hanning(hi - lo)
        onset += rng.uniform(0.8, 1.2) / rate
    gain = (0.45 if high_arousal else 0.2) * rng.uniform(0.8, 1.25)
    signal = gain * env * (0.9 * voiced + 0.1 * rng.standard_normal(n)) + 0.004 * rng.standard_normal(n)
    return np.clip(signal, -1.0, 1.0).astype(np.float32)


# -------------------------------------------------------------------------------------------- visual


def _segment_mask(xx: np.ndarray, yy: np.ndarray, p: tuple[float, float], q: tuple[float, float],
                  width: float) -> np.ndarray:
    px, py = p
    dx, dy = q[0] - px, q[1] - py
    s = np.clip(((xx - px) * dx + (yy - py) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(xx - px - s * dx, yy - py - s * dy) <= width


def draw_faces(rng: np.random.Generator, face: str, n_frames: int, skin: tuple[int, int, int],
               background: tuple[int, int, int], size: int = FRAME_SIZE) -> np.ndarray:
    """`n_frames` RGB frames (n, size, size, 3) uint8 of a cartoon face whose mouth and brows show `face`."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    scale = size / 64 * rng.uniform(0.92, 1.08)
    cx0, cy0 = size / 2 + rng.uniform(-3, 3), size / 2 + 2 + rng.uniform(-3, 3)
    light = rng.uniform(0.8, 1.15)
    drift = rng.uniform(-1.5, 1.5, size=(n_frames, 2)).cumsum(axis=0) * 0.5
    frames = np.empty((n_frames, size, size, 3), dtype=np.float32)
    for i in range(n_frames):
        cx, cy = cx0 + drift[i, 0], cy0 + drift[i, 1]
        img = np.empty((size, size, 3), dtype=np.float32)
        img[:] = np.asarray(background, np.float32) * (0.85 + 0.3 * yy[..., None] / size)
        rx, ry = 19 * scale, 24 * scale
        head = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        img[head] = skin
        img[head & (yy < cy - 0.62 * ry)] = (80, 55, 35)  # hair
        ex, ey = 7.5 * scale, cy - 5 * scale
        for side in (-1, 1):
            img[(xx - cx - side * ex) ** 2 + (yy - ey) ** 2 <= (2.3 * scale) ** 2] = (35, 30, 30)
            inner, outer = cx + side * 3 * scale, cx + side * 12 * scale
            by = ey - (7.5 if face == "open" else 5) * scale
            tilt = 3.5 * scale if face == "frown" else 0.0  # frown: inner ends pulled down
            img[_segment_mask(xx, yy, (inner, by + tilt), (outer, by - tilt * 0.3), 1.1 * scale)] = (50, 35, 25)
        my, half = cy + 10 * scale, 9 * scale
        talk = rng.uniform(0.0, 1.0)
        if face == "open":
            h = (3.8 + 2.2 * talk) * scale
            mouth = ((xx - cx) / (6.5 * scale)) ** 2 + ((yy - my - 1) / h) ** 2 <= 1
        else:
            bend = {"smile": 5.0, "frown": -5.0}.get(face, 0.0) * scale
            u = (xx - cx) / half
            curve = my + bend * (1 - u**2)
            mouth = (np.abs(u) <= 1) & (np.abs(yy - curve) <= (1.2 + 0.6 * talk) * scale)
        img[mouth] = (110, 25, 35)
        frames[i] = img * light
    frames += rng.normal(0.0, 5.0, size=frames.shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


def utterance_media(utt: Utterance) -> tuple[np.ndarray, np.ndarray]:
    """(frames (n, 64, 64, 3) uint8, audio float32 at 16 kHz) of one utterance, from its own seed."""
    rng = np.random.default_rng(list(utt.seed))
    f0, skin, background = SPEAKERS[utt.speaker]
    audio = speech_like(rng, utt.duration, f0, utt.arousal == "high")
    frames = draw_faces(rng, utt.face, max(1, round(utt.duration * FPS)), skin, background)
    return frames, audio


# --------------------------------------------------------------------------------------------- write


def _clock(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def _write_csvs(out: Path, plan: Sequence[Utterance]) -> None:
    for split in SPLITS:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        rows = [u for u in plan if u.split == split]
        for i, u in enumerate(rows, start=1):
            writer.writerow([
                i, u.text, u.speaker, u.emotion, SENTIMENT[CUES[u.emotion][0]], u.dialogue_id, u.utterance_id,
                u.season, u.episode, _clock(u.start), _clock(u.start + u.duration),
            ])
        # cp1252, like MELD's CSVs: ’ is the byte 0x92
        (out / CSV_NAMES[split]).write_bytes(buf.getvalue().encode("cp1252"))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["split", "Dialogue_ID", "Utterance_ID", "Emotion", "text_valence", "audio_arousal", "face"])
    for u in plan:
        writer.writerow([u.split, u.dialogue_id, u.utterance_id, u.emotion, u.valence, u.arousal, u.face])
    (out / CUES_FILE).write_text(buf.getvalue(), encoding="utf-8")


def _readme(size: str, seed: int, plan: Sequence[Utterance]) -> str:
    echoes = sum(u.echo for u in plan)
    echo_note = (f"Context cue: {echoes} echo turns take the previous turn's emotion and show none of their own "
                 f"(an agreeing phrase, random voice and face); only the conversation tells their label.\n"
                 if echoes else "")
    counts = {e: sum(u.emotion == e for u in plan) for e in MELD_LABELS}
    per_split = {s: sum(u.split == s for u in plan) for s in SPLITS}
    table = "\n".join(f"  {e:<9} text={v:<8} audio={a:<4} face={f}" for e, (v, a, f) in CUES.items())
    return f"""SYNTHETIC demo data in MELD's raw layout. Not MELD, not real people, not real speech.

Written by `hjcag demo-data` (hjcag.data.synthetic.write_demo_dataset), size={size}, seed={seed}.
The same size and seed always give the same rows, frames and audio.

Utterances: {len(plan)} ({per_split}); labels: {counts}.
Files: {", ".join(CSV_NAMES.values())} (MELD's columns, cp1252 like MELD) and one clip per utterance,
dia{{Dialogue_ID}}_utt{{Utterance_ID}}.mp4, under {", ".join(CLIP_DIRS.values())}: {FRAME_SIZE}x{FRAME_SIZE} H.264 at
{FPS} fps with a drawn cartoon face, and an AAC track at {SAMPLE_RATE} Hz mono with a speech-like signal
(harmonics on an f0 contour, syllable envelope, noise). Dialogue ids restart at 0 in every split, as in MELD.

How the emotion is encoded: each modality carries one cue, only the three together identify the label:
{table}
Text: template sentences with a valence opener and adjective; audio: high arousal = higher, more variable pitch, louder,
faster syllables; face: mouth shape and brows. Each cue is drawn wrong with probability {CUE_FLIP}, independently
per modality, on top of signal noise. {CUES_FILE} lists the cues actually drawn for every utterance.
{echo_note}"""


def write_demo_dataset(
    out_dir: str | Path,
    size: str = "tiny",
    seed: int = 13,
    *,
    dialogues: Sequence[int] | None = None,
    workers: int = 0,
    progress: bool = True,
    context_cue: float = 0.0,
) -> Path:
    """Write the synthetic dataset (CSVs, clips, README.txt, synthetic_cues.csv) to `out_dir`; return it.

    size: "tiny" (36 dialogues, about 290 utterances) or "small" (3x). `dialogues` (train, dev, test) overrides
    the dialogue counts (tests use a handful). `workers`: encoding threads, 0 = number of CPUs.
    """
    plan = plan_dataset(size, seed, dialogues, context_cue)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_csvs(out, plan)
    for clip_dir in CLIP_DIRS.values():
        (out / clip_dir).mkdir(exist_ok=True)

    def encode(utt: Utterance) -> None:
        frames, audio = utterance_media(utt)
        write_clip(out / CLIP_DIRS[utt.split] / utt.clip_name, frames, FPS, audio, SAMPLE_RATE)

    workers = workers or usable_cpus()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in progress_bar(pool.map(encode, plan), total=len(plan), desc="demo clips", unit="clip",
                              disable=not progress):
            pass
    (out / "README.txt").write_text(_readme(size if dialogues is None else "custom", seed, plan), encoding="utf-8")
    log.info("synthetic demo dataset: %d utterances written to %s", len(plan), out)
    return out
