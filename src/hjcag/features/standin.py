"""Stand-in features: simple, transparent descriptors computed straight from a MELD-layout dataset's signals.

They are NOT the paper's features (RoBERTa text, openSMILE audio, ResNet-50 frames; see ``hjcag features``).
They exist so the whole pipeline runs in seconds on a CPU with nothing downloaded, e.g. on the synthetic demo
dataset, and every run that uses them says so.

- text: hashed bag-of-words. Each token gets a fixed pseudo-random vector seeded by ``zlib.crc32`` of the token
  (stable across processes, unlike ``hash()``); tokens are cropped / zero-padded to L.  (N, L, 64)
- audio: the clip's track at 16 kHz mono (trimmed to its true duration), cut into L equal windows; per window
  log energy, zero-crossing rate, spectral centroid / spread / roll-off / flatness, an autocorrelation pitch
  estimate and its voicing strength, 8 log band energies; plus 8 utterance-level functionals (energy and pitch
  statistics, voiced fraction, syllable rate, duration) repeated on every window.  (N, L, 24)
- visual: L frames sampled uniformly from the clip, grey, area-averaged to 16x16.  (N, L, 256)
"""

from __future__ import annotations

import itertools
import logging
import re
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from hjcag.cpus import usable_cpus
from hjcag.data.features_file import FeatureSet
from hjcag.data.meld import CLIP_DIRS, MELD_LABELS, find_meld_layout, meld_turn, read_meld_csv
from hjcag.errors import ConfigError, DataError
from hjcag.features.media_io import SAMPLE_RATE, load_audio, sample_frames
from hjcag.params import MODALITIES
from hjcag.progress import progress as progress_bar

log = logging.getLogger(__name__)

TEXT_DIM = 64
AUDIO_DIM = 24
GRID = 16  # visual: GRID x GRID grey pixels per frame
DECODE_SIZE = 64  # frames are decoded at this size, then area-averaged to GRID
NOTICE = (
    "stand-in features (hashed bag of words, frame-level audio descriptors, down-sampled grey frames), "
    "NOT RoBERTa / openSMILE / ResNet-50: use them for demos and smoke tests, not for results."
)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class StandinItem:
    """One utterance to featurise."""

    utterance_id: str
    group: str
    split: str
    speaker: str
    label: str
    text: str
    clip: Path
    turn: float | None = None  # position in the dialogue (MELD's Utterance_ID)


# ---------------------------------------------------------------------------------------------- text


@lru_cache(maxsize=65_536)
def token_vector(token: str) -> np.ndarray:
    """A fixed unit-variance vector for `token`, the same in every process (seeded by crc32)."""
    rng = np.random.default_rng(zlib.crc32(token.encode("utf-8")))
    vec = rng.standard_normal(TEXT_DIM).astype(np.float32)
    vec.setflags(write=False)
    return vec


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("’", "'").replace("‘", "'"))


def text_features(text: str, seq_len: int) -> np.ndarray:
    """(L, 64): one hashed vector per token, cropped / zero-padded to L."""
    out = np.zeros((seq_len, TEXT_DIM), dtype=np.float32)
    for i, token in enumerate(tokenize(text)[:seq_len]):
        out[i] = token_vector(token)
    return out


# --------------------------------------------------------------------------------------------- audio

_BANDS_HZ = (0, 250, 500, 1000, 1500, 2000, 3000, 4000, 8000)
_F0_RANGE_HZ = (60.0, 450.0)


def _windows(signal: np.ndarray, n: int) -> np.ndarray:
    """(n, W): `signal` cut into n equal consecutive windows (zero-padded to equal length)."""
    width = max(1, int(np.ceil(len(signal) / n)))
    padded = np.zeros(n * width, dtype=np.float64)
    padded[: len(signal)] = signal
    return padded.reshape(n, width)


def _pitch(frames: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation pitch (Hz) and voicing strength (normalised peak, 0..1) per row of `frames`."""
    n, width = frames.shape
    x = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(width)
    nfft = 1 << int(np.ceil(np.log2(2 * width)))
    spec = np.fft.rfft(x, nfft)
    ac = np.fft.irfft(np.abs(spec) ** 2, nfft)[:, :width]
    lo = max(2, int(sample_rate / _F0_RANGE_HZ[1]))
    hi = min(width // 2, int(sample_rate / _F0_RANGE_HZ[0]))
    if hi <= lo:
        return np.zeros(n), np.zeros(n)
    # unbiased: divide by the overlap length so long lags are not penalised
    norm = ac[:, lo:hi] / (ac[:, :1] + 1e-12) * width / (width - np.arange(lo, hi))
    lag = lo + norm.argmax(axis=1)
    strength = np.clip(norm.max(axis=1), 0.0, 1.0)
    return sample_rate / lag, strength


def audio_features(signal: np.ndarray, seq_len: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(L, 24) descriptors of a mono signal: 16 per window + 8 utterance-level functionals repeated on each."""
    frames = _windows(signal, seq_len)
    width = frames.shape[1]
    rms = np.sqrt((frames**2).mean(axis=1))
    log_rms = np.log10(rms + 1e-5)
    zcr = (np.abs(np.diff(np.signbit(frames).astype(np.int8), axis=1)).sum(axis=1)) / max(1, width - 1)
    nfft = max(256, 1 << int(np.ceil(np.log2(width))))
    power = np.abs(np.fft.rfft(frames * np.hanning(width), nfft)) ** 2 + 1e-12
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    total = power.sum(axis=1)
    centroid = (power * freqs).sum(axis=1) / total
    spread = np.sqrt((power * (freqs - centroid[:, None]) ** 2).sum(axis=1) / total)
    rolloff = freqs[np.minimum((np.cumsum(power, axis=1) < 0.85 * total[:, None]).sum(axis=1), len(freqs) - 1)]
    flatness = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    bands = np.stack(
        [power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in itertools.pairwise(_BANDS_HZ)],
        axis=1,
    )
    f0, voicing = _pitch(frames, sample_rate)
    voiced = (voicing > 0.45) & (log_rms > log_rms.max() - 2.0)
    log_f0 = np.where(voiced, np.log2(np.maximum(f0, 1.0) / 100.0), 0.0)
    per_window = np.column_stack([
        log_rms, zcr, centroid / 1000.0, spread / 1000.0, rolloff / 1000.0, np.log10(flatness), log_f0, voicing,
        np.log10(bands + 1e-10) / 2.0,
    ])
    vf0 = log_f0[voiced]
    functionals = np.array([
        log_rms.mean(), log_rms.std(),
        vf0.mean() if vf0.size else 0.0, vf0.std() if vf0.size > 1 else 0.0,
        voiced.mean(), _syllable_rate(signal, sample_rate) / 5.0, len(signal) / sample_rate,
        zcr.mean(),
    ])
    out = np.concatenate([per_window, np.repeat(functionals[None, :], seq_len, axis=0)], axis=1)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _syllable_rate(signal: np.ndarray, sample_rate: int) -> float:
    """Dominant modulation frequency (Hz, 1.5-10) of the 10 ms energy envelope: a rough syllable rate."""
    hop = sample_rate // 100
    n = len(signal) // hop
    if n < 8:
        return 0.0
    env = np.sqrt((signal[: n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(axis=1))
    env = env - env.mean()
    spec = np.abs(np.fft.rfft(env * np.hanning(n), 1024))
    freqs = np.fft.rfftfreq(1024, 0.01)
    band = (freqs >= 1.5) & (freqs <= 10.0)
    return float(freqs[band][spec[band].argmax()])


# -------------------------------------------------------------------------------------------- visual


def visual_features(frames: np.ndarray) -> np.ndarray:
    """(L, 256) from RGB frames (L, S, S, 3) uint8: grey, area-averaged to 16x16, centred around 0."""
    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0
    n, size = grey.shape[0], grey.shape[1]
    k = size // GRID
    small = grey[:, : GRID * k, : GRID * k].reshape(n, GRID, k, GRID, k).mean(axis=(2, 4))
    return (small.reshape(n, GRID * GRID) - 0.5).astype(np.float32)


# ------------------------------------------------------------------------------------------- dataset


def read_standin_items(dataset_dir: str | Path) -> list[StandinItem]:
    """Every utterance of a MELD-layout dataset (MELD itself or the synthetic demo set), in CSV order."""
    items: list[StandinItem] = []
    for split, (csv_path, clip_dir) in find_meld_layout(dataset_dir).items():
        folder = clip_dir if clip_dir is not None else csv_path.parent / CLIP_DIRS[split]
        for r in read_meld_csv(csv_path):
            items.append(StandinItem(
                utterance_id=f"{split}_dia{r.dialogue_id}_utt{r.utterance_id}",
                group=f"{split}_dia{r.dialogue_id}",
                split=split,
                speaker=r.speaker,
                label=r.emotion,
                text=r.utterance,
                clip=folder / r.clip_name,
                turn=meld_turn(r.utterance_id),
            ))
    if not items:
        raise DataError(f"'{dataset_dir}': the MELD CSVs hold no rows.")
    return items


def _parallel(fn: Callable[[StandinItem], dict[str, np.ndarray]], items: Sequence[StandinItem], workers: int,
              progress: bool) -> list[dict[str, np.ndarray] | DataError]:
    def safe(item: StandinItem) -> dict[str, np.ndarray] | DataError:
        try:
            return fn(item)
        except DataError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(progress_bar(pool.map(safe, items), total=len(items), desc="stand-in features", unit="utt",
                                 disable=not progress))


def extract_standin_features(
    dataset_dir: str | Path,
    seq_len: int = 30,
    modalities: Sequence[str] = MODALITIES,
    *,
    workers: int = 0,
    progress: bool = True,
) -> FeatureSet:
    """Stand-in features (see the module docstring) of every utterance of a MELD-layout dataset.

    group = ``{split}_dia{D}``, utterance_id = ``{split}_dia{D}_utt{U}``, split and speaker from the CSVs.
    Clips that are missing or cannot be decoded are all listed in one DataError.
    """
    mods = tuple(m for m in MODALITIES if m in modalities)
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown or not mods or seq_len < 1:
        raise ConfigError(f"stand-in features need modalities from {list(MODALITIES)} and seq_len >= 1; "
                          f"got modalities={list(modalities)}, seq_len={seq_len}.")
    items = read_standin_items(dataset_dir)
    log.warning("Computing %s", NOTICE)
    if any(m in mods for m in ("a", "v")):
        missing = [str(it.clip) for it in items if not it.clip.exists()]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(items)} clips are missing under '{dataset_dir}', e.g. {missing[:3]}. "
                f"Unpack every split's clips next to its CSV, or pass --modalities t."
            )

    def featurise(item: StandinItem) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "t" in mods:
            out["t"] = text_features(item.text, seq_len)
        if "a" in mods:
            out["a"] = audio_features(load_audio(item.clip), seq_len)
        if "v" in mods:
            out["v"] = visual_features(sample_frames(item.clip, seq_len, size=DECODE_SIZE))
        return out

    results = _parallel(featurise, items, workers or usable_cpus(), progress)
    failed = [(it.utterance_id, r) for it, r in zip(items, results, strict=True) if isinstance(r, DataError)]
    if failed:
        listed = "; ".join(f"{uid}: {err}" for uid, err in failed[:5])
        raise DataError(f"{len(failed)} clip(s) could not be decoded: {listed}. Replace or remove those clips.")
    rows = [r for r in results if not isinstance(r, DataError)]
    labels = np.array([it.label for it in items])
    known = set(labels) <= set(MELD_LABELS)
    return FeatureSet(
        utterance_id=np.array([it.utterance_id for it in items]),
        label=labels,
        group=np.array([it.group for it in items]),
        features={m: np.stack([r[m] for r in rows]) for m in mods},
        split=np.array([it.split for it in items]),
        speaker=np.array([it.speaker for it in items]),
        label_names=MELD_LABELS if known else tuple(sorted(set(labels))),
        order=None if any(it.turn is None for it in items) else np.array([it.turn for it in items], dtype=np.float64),
    )
