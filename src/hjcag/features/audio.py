"""Audio features: openSMILE functionals over the utterance, one (d,) vector each.

The default is the INTERSPEECH 2010 paralinguistic set (1582-d, the paper's IEMOCAP features), read from the
config file shipped inside the ``opensmile`` package; eGeMAPSv02 (88-d) and ComParE_2016 (6373-d) are the
package's standard sets. The signal is the wav, or the clip's audio track, at 16 kHz mono (see media_io).
Functionals are (N, d); the features file loader broadcasts them over L, as the paper does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hjcag.errors import ConfigError, DataError
from hjcag.features.media_io import SAMPLE_RATE, MediaRef, load_audio, thread_map
from hjcag.params import AUDIO_SETS

log = logging.getLogger(__name__)
IS10_CONFIG = Path("core") / "config" / "is09-13" / "IS10_paraling_compat.conf"


def build_smile(feature_set: str) -> Any:
    """An ``opensmile.Smile`` computing functionals of `feature_set` (one of AUDIO_SETS)."""
    import opensmile

    if feature_set == "IS10_paraling":
        config = Path(opensmile.__file__).parent / IS10_CONFIG
        if not config.exists():  # pragma: no cover - depends on the installed package
            raise ConfigError(f"the opensmile package has no {IS10_CONFIG}; reinstall opensmile==2.6.0.")
        # `func` is the sink level of the IS10 config: all 1582 functionals concatenated.
        return opensmile.Smile(feature_set=str(config), feature_level="func")
    if feature_set in ("eGeMAPSv02", "ComParE_2016"):
        return opensmile.Smile(
            feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel.Functionals
        )
    raise ConfigError(f"features.audio_set is '{feature_set}'; use one of {list(AUDIO_SETS)}.")


class AudioExtractor:
    """(MediaRef) -> (d,) openSMILE functionals of the 16 kHz mono signal."""

    modality = "a"
    namespace = "audio"

    def __init__(self, feature_set: str = "IS10_paraling", min_duration_s: float = 0.25, workers: int = 1) -> None:
        self.feature_set = feature_set
        self.workers = max(1, workers)
        self.min_duration_s = min_duration_s
        self.smile = build_smile(feature_set)
        self.audio_seconds = 0.0  # totals for the real-time factor
        self.smile_seconds = 0.0
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return len(self.smile.feature_names)

    def describe(self) -> dict[str, Any]:
        import opensmile

        return {
            "feature_set": self.feature_set,
            "level": "functionals",
            "opensmile": opensmile.__version__,
            "sample_rate": SAMPLE_RATE,
            "min_duration_s": self.min_duration_s,
        }

    def cache_config(self) -> dict[str, Any]:
        return {"extractor": "opensmile", **self.describe()}

    def content_hash(self, item: MediaRef) -> str:
        return item.content_hash()

    def features_of_signal(self, signal: np.ndarray, source: str = "signal") -> np.ndarray:
        """Functionals of one 16 kHz mono signal. Signals shorter than `min_duration_s` are zero-padded (both
        sides) so that openSMILE has enough frames; openSMILE returns NaN below about 0.1 s."""
        need = int(self.min_duration_s * SAMPLE_RATE)
        if signal.size < need:
            log.warning("%s: audio lasts %.3f s; zero-padded to %.2f s.", source, signal.size / SAMPLE_RATE,
                        self.min_duration_s)
            left = (need - signal.size) // 2
            signal = np.pad(signal, (left, need - signal.size - left))
        t0 = time.perf_counter()
        values = self.smile.process_signal(signal, SAMPLE_RATE).to_numpy(dtype=np.float32).reshape(-1)
        with self._lock:
            self.smile_seconds += time.perf_counter() - t0
            self.audio_seconds += signal.size / SAMPLE_RATE
        if not np.isfinite(values).all():
            raise DataError(f"{source}: openSMILE returned non-finite features.")
        return values

    def _one(self, item: MediaRef) -> np.ndarray:
        return self.features_of_signal(load_audio(item.path, item.start_s, item.end_s), str(item.path))

    def extract(self, items: Sequence[MediaRef]) -> list[np.ndarray]:
        # Decoding (PyAV) and openSMILE (a C library called through ctypes) both run without the GIL.
        return thread_map(self._one, items, self.workers)
