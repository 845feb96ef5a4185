"""Request parsing and limits: JSON bodies in, validated requests (aligned features, raw inputs) or a RequestError.

A request is a JSON object with any subset of ``text`` (str), ``audio`` (base64 wav), ``video`` (base64 mp4; gives
the visual features and, when no ``audio`` is sent, the audio features from its sound track, as at training time)
and ``features`` ({"text" | "audio" | "visual": [d] or [[d] x T]}, each array also packed as {"dtype": "float16" |
"float32", "shape": [d] or [T, d], "b64": its values' little-endian bytes, row by row, in base64}: a third of the
JSON's size in float16, and no number parsing). Modalities the request lacks are masked out of the gate.
``{"instances": [request, ...]}`` (KServe v1) is answered with ``{"predictions": [response, ...]}``.

A model trained with conversation context (``model.context``) also reads ``speaker`` (str) and ``context``: the
previous turns of the conversation, oldest first, at most ``model.context_window`` of them, each either in the same
input forms as the request itself (with its ``speaker``) or as ``{"state": ..., "speaker": ...}``, the state an
earlier response returned for that turn (:mod:`hjcag.serve.state`). A model whose text features were extracted with
``features.text_context`` k > 0 reads them too, for raw ``text``: its encoder reads the up to k preceding turns'
speakers and texts, which the last state sent carries (so ``context`` may hold one turn when the model has no
``model.context``); a turn sent as inputs adds its own ``speaker`` and ``text``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hjcag.data.features_file import align_to_length
from hjcag.errors import DataError, HjcagError
from hjcag.params import MODALITY_NAMES

REQUEST_KEYS = ("text", "audio", "video", "features")
CONVERSATION_KEYS = ("speaker", "context")  # a context model's request; a state turn is {"state", "speaker"}
MAX_SPEAKER_CHARS = 200  # a speaker's name or id (a text-context model's states carry k of them)
FEATURE_KEYS = {name: m for m, name in MODALITY_NAMES.items()}  # "text" -> "t", ...
# A feature array may also come packed: the little-endian bytes of its values, row by row, in base64.
PACKED_DTYPES = {"float16": "<f2", "float32": "<f4"}
PACKED_HINT = '{"dtype": "float16" | "float32", "shape": [d] or [T, d], "b64": base64 of the values, row by row}'


class RequestError(HjcagError):
    """A request the predictor cannot answer; `status` is the HTTP status (4xx) to send with `message`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_response(self) -> dict[str, Any]:
        return {"code": self.status, "type": "RequestError", "message": self.message}


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, so a single body cannot tie up a worker (the HTTP layer caps the body size)."""

    max_text_chars: int = 20_000
    max_media_bytes: int = 16 * 2**20  # decoded bytes of one base64 wav / mp4 (its duration, sample rate and
    # frames must be valid media as validation defines it: the model's MediaConfig, see hjcag.features.media_rules)
    max_feature_steps: int = 4096  # rows of a (T, d) feature array
    max_instances: int = 64  # requests in one {"instances": [...]} body


@dataclass
class Request:
    """One validated request: aligned features so far, raw inputs still to extract, or its error."""

    features: dict[str, np.ndarray] = field(default_factory=dict)  # m -> (L, d) float32
    raw: dict[str, Any] = field(default_factory=dict)  # m -> str (text) | Path (media file)
    audio_from_video: bool = False
    error: RequestError | None = None
    speaker: str | None = None
    turns: list[Turn] = field(default_factory=list)  # previous turns, oldest first (context models)
    spoken: tuple[SpokenTurn, ...] = ()  # text-context models: (speaker, text) of the last k turns, this one last
    text_turns: int = 0  # text-context models: the earlier turns its raw text's encoder input reads


SpokenTurn = tuple["str | None", "str | None"]  # (speaker, text); text None: the turn was sent without raw text


@dataclass(frozen=True)
class TurnState:
    """What a state string holds: the turn's fused vector (models with model.context) and the (speaker, text) of the
    last k turns up to it (models with features.text_context k)."""

    vector: np.ndarray | None = None
    spoken: tuple[SpokenTurn, ...] | None = None


@dataclass
class Turn:
    """A previous turn of the conversation: a state an earlier response returned, or the turn's own inputs."""

    speaker: str | None
    state: np.ndarray | None = None  # (D,) float32
    request: Request | None = None
    spoken: tuple[SpokenTurn, ...] | None = None  # a state's last k (speaker, text), this turn last


@dataclass
class Body:
    """One request body of a batch: its requests (several for KServe's "instances"), or an error."""

    requests: list[Request]
    kserve: bool = False
    error: RequestError | None = None


class RequestParser:
    """Parses request bodies for one model: its `modalities`, `input_dims`, `seq_len` and `limits`. `check_raw(m)`
    raises RequestError when raw input of modality m cannot be served here."""

    def __init__(self, modalities: Sequence[str], input_dims: Mapping[str, int], seq_len: int, limits: Limits,
                 check_raw: Callable[[str], object], context_turns: int = 0,
                 decode_state: Callable[[object, str], TurnState] | None = None,
                 no_context: str = "it was trained with model.context: none") -> None:
        """`context_turns`: how many previous turns the model reads (0: none, `context` is refused, saying
        `no_context` why); `decode_state(text, where)` turns a state string back into its vector or raises
        RequestError."""
        self.modalities, self.input_dims, self.seq_len = tuple(modalities), dict(input_dims), seq_len
        self.limits, self.check_raw = limits, check_raw
        self.context_turns, self.decode_state, self.no_context = context_turns, decode_state, no_context

    def parse(self, body: Any) -> Body:
        try:
            obj = _decode_json(body)
            if isinstance(obj, dict) and "instances" in obj:
                extra = sorted(set(obj) - {"instances"})
                instances = obj["instances"]
                if extra or not isinstance(instances, list) or not instances:
                    raise RequestError(
                        "a KServe v1 body is {\"instances\": [request, ...]} with at least one request and no other "
                        f"keys{f'; found also {extra}' if extra else ''}."
                    )
                if len(instances) > self.limits.max_instances:
                    raise RequestError(f"{len(instances)} instances in one body; the limit is "
                                       f"{self.limits.max_instances}.", 413)
                return Body([self._parse_request(x) for x in instances], kserve=True)
            return Body([self._parse_request(obj)])
        except RequestError as exc:
            return Body([], error=exc)

    def _parse_request(self, obj: Any) -> Request:
        try:
            return self._validate(obj)
        except RequestError as exc:
            return Request(error=exc)

    def _validate(self, obj: Any, turn: bool = False) -> Request:
        if not isinstance(obj, dict):
            raise RequestError(f"a request must be a JSON object with any of {list(REQUEST_KEYS)}; got a JSON "
                               f"{_json_type(obj)}.")
        allowed = [*REQUEST_KEYS, "speaker"] if turn else [*REQUEST_KEYS, *CONVERSATION_KEYS]
        if "context" in obj and not turn and not self.context_turns:
            raise RequestError(f"this model reads no conversation context ({self.no_context}); remove 'context'.")
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            raise RequestError(f"unknown key(s) {unknown} in the {'turn' if turn else 'request'}; allowed keys are "
                               f"{allowed}.")
        request = Request(speaker=self._speaker(obj.get("speaker")))
        if obj.get("context") is not None:
            request.turns = self._turns(obj["context"])
        features = obj.get("features")
        if features is not None:
            if not isinstance(features, dict):
                raise RequestError(f"'features' must be an object like {{\"text\": [[...]], \"audio\": [...]}}; got "
                                   f"a JSON {_json_type(features)}.")
            for key, value in features.items():
                m = self._modality(key, f"features.{key}")
                request.features[m] = self._feature_array(key, value)
        if obj.get("text") is not None:
            request.raw["t"] = self._text(obj["text"])
        if obj.get("audio") is not None:
            request.raw["a"] = _b64decode("audio", obj["audio"], self.limits.max_media_bytes)
        if obj.get("video") is not None:
            video = _b64decode("video", obj["video"], self.limits.max_media_bytes)
            # The clip's sound track gives the audio features when no wav is sent, as at training time.
            feeds_audio = "a" in self.modalities and "a" not in request.raw and "a" not in request.features
            if "v" in self.modalities:
                request.raw["v"] = video
                feeds_audio = feeds_audio and self._raw_available("a")
            elif not feeds_audio:
                raise RequestError(f"'video' is not used by this model (it uses {self._names()}); remove it.")
            if feeds_audio:
                request.raw["a"] = video
                request.audio_from_video = True
        for m in request.raw:
            name = MODALITY_NAMES[m]
            if m not in self.modalities:
                raise RequestError(f"'{name}' is not used by this model (it uses {self._names()}); remove it.")
            if m in request.features:
                raise RequestError(f"{name} is given both raw and as features.{name}; send one of them.")
            self.check_raw(m)  # refuses early when this modality cannot be extracted for this model
        if not request.features and not request.raw:
            raise RequestError(
                "the request has no input: send at least one of 'text' (a string), 'audio' (base64 wav), 'video' "
                f"(base64 mp4) or 'features' ({{\"text\"|\"audio\"|\"visual\": [...]}}); this model uses "
                f"{self._names()}."
            )
        return request

    def _names(self) -> str:
        return ", ".join(MODALITY_NAMES[m] for m in self.modalities)

    @staticmethod
    def _speaker(value: Any, where: str = "") -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise RequestError(f"'{where}speaker' must be a string (the speaker's name or id); got a JSON "
                               f"{_json_type(value)}.")
        if len(value) > MAX_SPEAKER_CHARS:
            raise RequestError(f"'{where}speaker' has {len(value)} characters; the limit is {MAX_SPEAKER_CHARS}.",
                               413)
        return value.strip() or None

    def _turns(self, value: Any) -> list[Turn]:
        """The request's previous turns, oldest first: states or inputs, at most `context_turns` of them."""
        if not isinstance(value, list):
            raise RequestError(f"'context' must be a list of the previous turns, oldest first; got a JSON "
                               f"{_json_type(value)}.")
        if len(value) > self.context_turns:
            raise RequestError(f"'context' has {len(value)} turns; this model reads at most {self.context_turns} "
                               f"(its context_window). Send the last {self.context_turns}.")
        turns = []
        for i, item in enumerate(value):
            where = f"context[{i}]"
            if isinstance(item, dict) and "state" in item:
                extra = sorted(set(item) - {"state", "speaker"})
                if extra:
                    raise RequestError(f"{where}: a state turn is {{\"state\": ..., \"speaker\": ...}}; found also "
                                       f"{extra}. Send either the state or the turn's inputs.")
                assert self.decode_state is not None
                state = self.decode_state(item["state"], where)
                turns.append(Turn(self._speaker(item.get("speaker"), f"{where}."), state=state.vector,
                                  spoken=state.spoken))
                continue
            try:
                inner = self._validate(item, turn=True)
            except RequestError as exc:
                raise RequestError(f"{where}: {exc.message}", exc.status) from exc
            turns.append(Turn(inner.speaker, request=inner))
        return turns

    def _modality(self, key: str, where: str) -> str:
        m = FEATURE_KEYS.get(key)
        if m is None:
            raise RequestError(f"unknown modality '{key}' in {where}; use text, audio or visual.")
        if m not in self.modalities:
            raise RequestError(f"{where}: this model does not use {key} (it uses {self._names()}); remove it.")
        return m

    def _feature_array(self, key: str, value: Any) -> np.ndarray:
        m = FEATURE_KEYS[key]
        shape_hint = (f"a list of {self.input_dims[m]} numbers, or a list of such lists (one per time step), or "
                      f"{PACKED_HINT}")
        if isinstance(value, dict):
            array = _packed_array(f"features.{key}", value, self.limits.max_media_bytes)
        else:
            try:
                array = np.asarray(value)
            except ValueError:  # ragged nesting
                array = np.asarray([], dtype=object)
        if array.dtype.kind not in "iuf" or array.ndim not in (1, 2) or array.size == 0:
            raise RequestError(f"features.{key} must be {shape_hint}; got "
                               f"{_describe_array(array, value)}.")
        if array.ndim == 2 and array.shape[0] > self.limits.max_feature_steps:
            raise RequestError(f"features.{key} has {array.shape[0]} time steps; the limit is "
                               f"{self.limits.max_feature_steps} (the model uses {self.seq_len}).", 413)
        if array.ndim == 2 and array.shape[0] > 1 and self.seq_len == 1:
            raise RequestError(f"features.{key} has {array.shape[0]} time steps, but this model reads one step per "
                               f"utterance (it was trained on utterance vectors): send its vector of "
                               f"{self.input_dims[m]} numbers, or a [1, {self.input_dims[m]}] array.")
        with np.errstate(over="ignore"):  # too large for float32 -> inf, refused just below
            array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise RequestError(f"features.{key} holds NaN or infinite values (or numbers too large for float32).")
        return self.aligned(m, array, f"{key} features")

    def aligned(self, m: str, array: np.ndarray, what: str) -> np.ndarray:
        """(d,) or (T, d) -> (L, d): broadcast / crop / zero-pad exactly as the features file loader does; L is the
        step count the model was trained with (1 for utterance vectors: a vector is one step)."""
        expected = self.input_dims[m]
        if array.shape[-1] != expected:
            raise RequestError(f"{what} have {array.shape[-1]} dims, the model expects {expected}.")
        return np.ascontiguousarray(align_to_length(array[None], self.seq_len)[0], dtype=np.float32)

    def _text(self, value: Any) -> str:
        if not isinstance(value, str):
            raise RequestError(f"'text' must be a string; got a JSON {_json_type(value)}.")
        if not value.strip():
            raise RequestError("'text' is empty; leave it out to mask the text modality.")
        if len(value) > self.limits.max_text_chars:
            raise RequestError(f"'text' has {len(value)} characters; the limit is {self.limits.max_text_chars}.", 413)
        return value


    def _raw_available(self, m: str) -> bool:
        try:
            self.check_raw(m)
            return True
        except RequestError:
            return False


def settle(body: Body) -> Body:
    """A body fails with its first failing request (named by index in a KServe body); a request fails with its
    first failing context turn (named by index)."""
    for request in body.requests:
        turn = next((i for i, t in enumerate(request.turns) if t.request is not None and t.request.error), None)
        if turn is not None and request.error is None:
            error = request.turns[turn].request.error  # type: ignore[union-attr]
            assert error is not None
            request.error = RequestError(f"context[{turn}]: {error.message}", error.status)
    failed = next((i for i, r in enumerate(body.requests) if r.error is not None), None)
    if failed is not None and body.error is None:
        error = body.requests[failed].error
        assert error is not None
        body.error = RequestError(f"instances[{failed}]: {error.message}", error.status) if body.kserve else error
    return body


def _decode_json(body: Any) -> Any:
    if body is None:  # also what TorchServe hands over for form-encoded or multipart bodies
        raise RequestError("the request body is empty; send a JSON object as the body with Content-Type: "
                           "application/json (form or multipart fields are not read).")
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"the request body is not UTF-8 text (byte {exc.start}); send a JSON object.") from exc
    if isinstance(body, str):
        if not body.strip():
            raise RequestError("the request body is empty; send a JSON object.")
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise RequestError(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                               f"{exc.colno}.") from exc
    return body


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _describe_array(array: np.ndarray, value: Any) -> str:
    if not isinstance(value, list):
        return f"a JSON {_json_type(value)}"
    if array.dtype == object:
        return "a ragged or mixed list"
    if array.size == 0:
        return "an empty list"
    if array.dtype.kind not in "iuf":
        return "a list holding non-numbers"
    return f"an array of shape {list(array.shape)}"


def pack_array(values: Any, dtype: str = "float16") -> dict[str, Any]:
    """A feature array in the packed request form that :func:`_packed_array` reads (what a client sends)."""
    array = np.ascontiguousarray(values, dtype=PACKED_DTYPES[dtype])
    return {"dtype": dtype, "shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def _packed_array(where: str, value: Mapping[str, Any], limit: int) -> np.ndarray:
    """{"dtype", "shape", "b64"} -> the array: the compact form of a feature array (the numbers' bytes instead of
    their decimal text: a quarter to a half of the size, and no number parsing)."""
    if set(value) != {"dtype", "shape", "b64"}:
        raise RequestError(f"{where} as an object must be {PACKED_HINT}; got the keys {sorted(value)}.")
    dtype = PACKED_DTYPES.get(value["dtype"]) if isinstance(value["dtype"], str) else None
    if dtype is None:
        raise RequestError(f"{where}.dtype must be {' or '.join(map(json.dumps, PACKED_DTYPES))}; got "
                           f"{json.dumps(value['dtype'])}.")
    shape = value["shape"]
    if not (isinstance(shape, list) and len(shape) in (1, 2)
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise RequestError(f"{where}.shape must be [d] or [T, d], positive whole numbers; got {json.dumps(shape)}.")
    data = _b64decode(f"{where}.b64", value["b64"], limit)
    need = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(data) != need:
        raise RequestError(f"{where}.b64 holds {len(data)} bytes; shape {shape} of {value['dtype']} takes {need}.")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _b64decode(key: str, value: Any, limit: int) -> bytes:
    if not isinstance(value, str):
        raise RequestError(f"'{key}' must be a base64 string; got a JSON {_json_type(value)}.")
    if len(value) > limit * 4 // 3 + 4:
        raise RequestError(f"'{key}' is larger than the {limit // 2**20} MiB limit.", 413)
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value  # data: URLs
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"'{key}' is not valid base64 ({exc}).") from exc
    if not data:
        raise RequestError(f"'{key}' is empty; leave it out to mask the modality.")
    return data


def media_error(exc: DataError | str, path: Path) -> RequestError:
    """A decode failure of a request's media, without the server's temporary file name."""
    what = "video" if path.name == "video.mp4" else "audio"
    message = str(exc).replace(str(path), what).replace(path.name, what)
    return RequestError(f"{what} could not be decoded: {message}")
