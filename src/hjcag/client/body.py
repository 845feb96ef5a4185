"""One turn of a conversation as the endpoint takes it (:mod:`hjcag.serve.request`): raw text, a wav or mp4 in
base64, pre-extracted features in the packed form. The previous turns (``context``) are the conversation's
business (:mod:`hjcag.client.conversation`), not the turn's. :func:`request_json` is the JSON every client sends."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hjcag.errors import DataError
from hjcag.serve.request import FEATURE_KEYS, PACKED_DTYPES, pack_array

Media = str | Path | bytes  # a file to read, or its bytes
DEFAULT_DTYPE = "float32"  # packed features: the very numbers of the list form (float16 halves the body, ~1e-3 off)


def turn(
    *,
    text: str | None = None,
    audio: Media | None = None,
    video: Media | None = None,
    features: Mapping[str, Any] | None = None,
    speaker: str | None = None,
    dtype: str = DEFAULT_DTYPE,
) -> dict[str, Any]:
    """A request body for one turn: any subset of `text`, `audio` (wav), `video` (mp4), `features`
    ({"text" | "audio" | "visual": (d,) or (T, d) array}, sent packed as `dtype`: "float32" or "float16") and the
    `speaker` (a context model tells same- and other-speaker turns apart)."""
    if dtype not in PACKED_DTYPES:
        raise DataError(f"dtype must be {' or '.join(PACKED_DTYPES)}, not {dtype!r}.")
    body: dict[str, Any] = {}
    if text is not None:
        body["text"] = text
    if audio is not None:
        body["audio"] = _b64(audio)
    if video is not None:
        body["video"] = _b64(video)
    if features:
        unknown = sorted(set(features) - set(FEATURE_KEYS))
        if unknown:
            raise DataError(f"unknown feature key(s) {unknown}; use {sorted(FEATURE_KEYS)}.")
        body["features"] = {key: pack_array(np.asarray(value), dtype) for key, value in features.items()}
    if speaker is not None:
        body["speaker"] = speaker
    return body


def _b64(media: Media) -> str:
    if isinstance(media, bytes):
        return base64.b64encode(media).decode("ascii")
    path = Path(media)
    if not path.is_file():
        raise DataError(f"media file '{path}' not found.")
    return base64.b64encode(path.read_bytes()).decode("ascii")


def request_json(body: Any) -> str:
    """The JSON text of a request body. A numpy array in it is sent packed (float32: the very numbers) and a numpy
    number as a number, so a body built by hand from numpy goes as :func:`turn` would send it."""
    try:
        return json.dumps(body, default=_numpy_as_json)
    except TypeError as exc:
        raise DataError(f"the request body cannot be sent as JSON: {exc}; build it with hjcag.client.turn(text=, "
                        "audio=, video=, features=, speaker=).") from None


def _numpy_as_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return pack_array(value, DEFAULT_DTYPE)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r:.60} is not a JSON value")
