"""Framework-free predictor: JSON requests in, label + probabilities + gate weights out.

Everything a serving runtime needs between the socket and the model lives here, so TorchServe's handler
(serving/handler.py) and any other runtime (KServe's Python server, Triton's Python backend, a test) is a shim:

* :meth:`Predictor.load` reads a *serving bundle* (the contents of the ``.mar``, see :mod:`hjcag.serve.package`)
  or a training run directory;
* :meth:`Predictor.preprocess` turns request bodies into aligned (L, d) arrays and a presence mask, extracting raw
  text / wav / mp4 with the same extractor configuration as training (the bundle carries it);
* :meth:`Predictor.inference` runs one forward pass over every valid request of a batch;
* :meth:`Predictor.postprocess` returns exactly one response per body, in order: a response dict, or a
  :class:`RequestError` (a 4xx status and a message saying what is wrong) for that body alone.

A request is a JSON object with any subset of ``text`` (str), ``audio`` (base64 wav), ``video`` (base64 mp4; gives
the visual features and, when no ``audio`` is sent, the audio features from its sound track, as at training time)
and ``features`` ({"text" | "audio" | "visual": [d] or [[d] x T]}). Modalities the request lacks are masked out of
the gate. ``{"instances": [request, ...]}`` (KServe v1) is answered with ``{"predictions": [response, ...]}``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hjcag.data.features_file import align_to_length
from hjcag.errors import DataError, HjcagError
from hjcag.params import MODALITIES, MODALITY_NAMES, ModelConfig

if TYPE_CHECKING:
    from hjcag.features.extract import Extractor, FeaturesConfig

log = logging.getLogger(__name__)

# Files of a serving bundle (the root of the .mar). hjcag.serve.package writes them.
SERVING_FILE = "serving.json"  # name, version, where the model came from
MODEL_CONFIG_FILE = "model_config.json"  # the training run's model config, weights pointing at WEIGHTS_FILE
WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "index_to_name.json"  # {"0": label, ...} (TorchServe's convention for label maps)
FEATURES_FILE = "features.json"  # {"config": FeaturesConfig fields, "trained_with": {modality: extractor info}}

REQUEST_KEYS = ("text", "audio", "video", "features")
FEATURE_KEYS = {name: m for m, name in MODALITY_NAMES.items()}  # "text" -> "t", ...
# Extractor description keys that do not change the features (compared between training and serving).
_NOT_IDENTITY = {"requested_model", "dim", "extracted", "cached", "failed", "seconds"}


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
    max_media_bytes: int = 16 * 2**20  # decoded bytes of one base64 wav / mp4
    max_media_seconds: float = 60.0  # one utterance; longer media is refused before feature extraction
    max_feature_steps: int = 4096  # rows of a (T, d) feature array
    max_instances: int = 64  # requests in one {"instances": [...]} body


@dataclass
class _Request:
    """One validated request: aligned features so far, raw inputs still to extract, temp files to delete."""

    features: dict[str, np.ndarray] = field(default_factory=dict)  # m -> (L, d) float32
    raw: dict[str, Any] = field(default_factory=dict)  # m -> str (text) | Path (media file)
    audio_from_video: bool = False
    error: RequestError | None = None


@dataclass
class _Body:
    """One request body of a batch: its requests (several for KServe's "instances"), or an error."""

    requests: list[_Request]
    kserve: bool = False
    error: RequestError | None = None


@dataclass
class Batch:
    """What :meth:`Predictor.preprocess` hands to :meth:`Predictor.inference`."""

    bodies: list[_Body]
    inputs: dict[str, torch.Tensor]  # m -> (N, L, d) over the N valid requests
    present: torch.Tensor  # (N, |M|) bool

    @property
    def size(self) -> int:
        return int(self.present.shape[0])


@dataclass
class Outputs:
    probabilities: torch.Tensor  # (N, C)
    gate: torch.Tensor  # (N, |M|)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise HjcagError(f"'{path}' not found; is '{path.parent}' a serving bundle or a training run?") from exc
    except ValueError as exc:
        raise HjcagError(f"'{path}' is not valid JSON ({exc}).") from exc


def run_version(run_dir: Path) -> str:
    """A version string for an unregistered training run: 'run-' + the run's settings fingerprint."""
    run_file = Path(run_dir) / "run.json"
    if run_file.exists():
        fingerprint = str(_read_json(run_file).get("fingerprint", ""))[:8]
        if fingerprint:
            return f"run-{fingerprint}"
    return "run-unversioned"


class Predictor:
    """A trained fusion model plus the request handling around it.

    Safe to share between threads: extractors are built once under a lock and raw extraction is serialised;
    parsing, validation and the forward pass run concurrently.
    """

    def __init__(
        self,
        model: nn.Module,
        model_doc: Mapping[str, Any],
        *,
        name: str = "hjcag",
        version: str = "unversioned",
        features_config: FeaturesConfig | None = None,
        trained_with: Mapping[str, Mapping[str, Any]] | None = None,
        device: str | torch.device = "cpu",
        limits: Limits | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.doc = dict(model_doc)
        self.name = name
        self.version = version
        self.labels: tuple[str, ...] = tuple(model_doc["label_names"])
        self.input_dims: dict[str, int] = {m: int(d) for m, d in model_doc["input_dims"].items()}
        self.modalities: tuple[str, ...] = tuple(m for m in MODALITIES if m in self.input_dims)
        self.seq_len = int(model_doc["seq_len"])
        self.limits = limits or Limits()
        if features_config is not None:
            features_config = features_config.replace(
                seq_len=self.seq_len, device=str(self.device), cache_dir=None, progress=False
            )
        self.features_config = features_config
        self.trained_with = {k: dict(v) for k, v in (trained_with or {}).items()}
        self._extractors: dict[str, Extractor] = {}
        self._raw_problems: dict[str, str] = {}
        self._lock = threading.Lock()  # building extractors
        self._extract_lock = threading.Lock()  # running them: extractors are not assumed to be thread-safe

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", limits: Limits | None = None) -> Predictor:
        """From a serving bundle (an unpacked ``.mar``: serving.json ...) or a training run directory."""
        path = Path(path)
        if (path / SERVING_FILE).exists():
            return cls.from_bundle(path, device, limits)
        if (path / MODEL_CONFIG_FILE).exists():
            return cls.from_run(path, device=device, limits=limits)
        raise HjcagError(
            f"'{path}' is neither a serving bundle (no {SERVING_FILE}) nor a training run (no {MODEL_CONFIG_FILE})."
        )

    @classmethod
    def from_bundle(cls, path: Path, device: str | torch.device = "cpu", limits: Limits | None = None) -> Predictor:
        serving = _read_json(path / SERVING_FILE)
        doc = _read_json(path / MODEL_CONFIG_FILE)
        features = _read_json(path / FEATURES_FILE) if (path / FEATURES_FILE).exists() else {}
        config = None
        if features.get("config") is not None:
            from hjcag.features.extract import FeaturesConfig

            config = FeaturesConfig.from_dict(features["config"])
        model = build_trained_model(doc, path / doc["weights"]["default"])
        return cls(model, doc, name=serving["model"], version=str(serving["version"]), features_config=config,
                   trained_with=features.get("trained_with"), device=device, limits=limits)

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        fold: int | None = None,
        *,
        features_config: FeaturesConfig | None = None,
        trained_with: Mapping[str, Mapping[str, Any]] | None = None,
        name: str = "hjcag",
        version: str | None = None,
        device: str | torch.device = "cpu",
        limits: Limits | None = None,
    ) -> Predictor:
        """From a training run directory; raw inputs need `features_config` (else only ``features`` work)."""
        run_dir = Path(run_dir)
        doc = _read_json(run_dir / MODEL_CONFIG_FILE)
        model = build_trained_model(doc, run_dir / weights_of(doc, fold, run_dir))
        return cls(model, doc, name=name, version=version or run_version(run_dir), features_config=features_config,
                   trained_with=trained_with, device=device, limits=limits)

    def load_extractors(self) -> dict[str, str]:
        """Load every extractor the model can use now (rather than on the first raw request).

        Returns {modality name: "ok" | why raw input of that modality is refused}; problems are logged.
        """
        status: dict[str, str] = {}
        for m in self.modalities:
            try:
                self._extractor(m)
                status[MODALITY_NAMES[m]] = "ok"
            except RequestError as exc:
                status[MODALITY_NAMES[m]] = exc.message
        return status

    # ------------------------------------------------------------------------------------ public entry

    def predict(self, body: Any) -> dict[str, Any]:
        """One request (dict, or JSON text/bytes) -> response dict; raises :class:`RequestError`."""
        result = self.predict_many([body])[0]
        if isinstance(result, RequestError):
            raise result
        return result

    def predict_many(self, bodies: Sequence[Any]) -> list[dict[str, Any] | RequestError]:
        """A batch of request bodies -> one response or RequestError per body, in order."""
        batch = self.preprocess(bodies)
        return self.postprocess(batch, self.inference(batch))

    # ---------------------------------------------------------------------------------- preprocessing

    def preprocess(self, bodies: Sequence[Any]) -> Batch:
        """Parse and validate every body, extract raw inputs (batched per modality), collate to tensors."""
        parsed = [_settle(self._parse_body(body)) for body in bodies]
        staged = [r for b in parsed if b.error is None for r in b.requests if r.raw]
        if staged:
            with self._extract_lock, tempfile.TemporaryDirectory(prefix="hjcag-serve-") as tmp:
                for i, request in enumerate(staged):
                    self._stage_media(request, Path(tmp) / f"r{i}")
                self._extract(staged)
            parsed = [_settle(b) for b in parsed]
        valid = [r for b in parsed if b.error is None for r in b.requests]
        inputs, present = self._collate(valid)
        return Batch(parsed, inputs, present)

    def _parse_body(self, body: Any) -> _Body:
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
                return _Body([self._parse_request(x) for x in instances], kserve=True)
            return _Body([self._parse_request(obj)])
        except RequestError as exc:
            return _Body([], error=exc)

    def _parse_request(self, obj: Any) -> _Request:
        try:
            return self._validate(obj)
        except RequestError as exc:
            return _Request(error=exc)

    def _validate(self, obj: Any) -> _Request:
        if not isinstance(obj, dict):
            raise RequestError(f"a request must be a JSON object with any of {list(REQUEST_KEYS)}; got a JSON "
                               f"{_json_type(obj)}.")
        unknown = sorted(set(obj) - set(REQUEST_KEYS))
        if unknown:
            raise RequestError(f"unknown key(s) {unknown} in the request; allowed keys are {list(REQUEST_KEYS)}.")
        request = _Request()
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
            self._extractor(m)  # refuses early when this modality cannot be extracted for this model
        if not request.features and not request.raw:
            raise RequestError(
                "the request has no input: send at least one of 'text' (a string), 'audio' (base64 wav), 'video' "
                f"(base64 mp4) or 'features' ({{\"text\"|\"audio\"|\"visual\": [...]}}); this model uses "
                f"{self._names()}."
            )
        return request

    def _names(self) -> str:
        return ", ".join(MODALITY_NAMES[m] for m in self.modalities)

    def _modality(self, key: str, where: str) -> str:
        m = FEATURE_KEYS.get(key)
        if m is None:
            raise RequestError(f"unknown modality '{key}' in {where}; use text, audio or visual.")
        if m not in self.modalities:
            raise RequestError(f"{where}: this model does not use {key} (it uses {self._names()}); remove it.")
        return m

    def _feature_array(self, key: str, value: Any) -> np.ndarray:
        m = FEATURE_KEYS[key]
        shape_hint = f"a list of {self.input_dims[m]} numbers, or a list of such lists (one per time step)"
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
        with np.errstate(over="ignore"):  # too large for float32 -> inf, refused just below
            array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise RequestError(f"features.{key} holds NaN or infinite values (or numbers too large for float32).")
        return self._aligned(m, array, f"{key} features")

    def _aligned(self, m: str, array: np.ndarray, what: str) -> np.ndarray:
        """(d,) or (T, d) -> (L, d): broadcast / crop / zero-pad exactly as the features file loader does."""
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

    # ----------------------------------------------------------------------------------- extractors

    def _extractor(self, m: str) -> Extractor:
        """The (lazily built) extractor of modality `m`; RequestError when raw `m` cannot be served."""
        with self._lock:
            if m in self._raw_problems:
                raise RequestError(self._raw_problems[m])
            if m in self._extractors:
                return self._extractors[m]
            problem, extractor = self._build_extractor(m)
            if problem is not None:
                log.warning("raw %s input disabled: %s", MODALITY_NAMES[m], problem)
                self._raw_problems[m] = problem
                raise RequestError(problem)
            assert extractor is not None
            self._extractors[m] = extractor
            return extractor

    def _raw_available(self, m: str) -> bool:
        try:
            self._extractor(m)
            return True
        except RequestError:
            return False

    def _build_extractor(self, m: str) -> tuple[str | None, Extractor | None]:
        name = MODALITY_NAMES[m]
        fallback = f"Send pre-extracted features as features.{name} instead."
        if self.features_config is None:
            return f"raw {name} cannot be served: the model has no feature-extractor configuration. {fallback}", None
        from hjcag.features.extract import build_extractor

        try:
            extractor = build_extractor(m, self.features_config)
        except HjcagError as exc:
            return f"raw {name} cannot be served: its extractor does not load here ({exc}). {fallback}", None
        info = extractor.describe()
        dim, expected = int(extractor.dim), self.input_dims[m]
        if dim != expected:
            return (f"raw {name} cannot be served by this model: the {name} extractor ({_summary(info)}) gives "
                    f"{dim}-dim features but the model expects {expected}; it was trained on other {name} features. "
                    f"{fallback}"), None
        trained = self.trained_with.get(name)
        if trained:
            differ = sorted(k for k, v in info.items() if k not in _NOT_IDENTITY and k in trained and trained[k] != v)
            if differ:
                detail = "; ".join(f"{k}: trained {trained[k]!r}, serving {info[k]!r}" for k in differ)
                return (f"raw {name} cannot be served: the serving {name} extractor differs from the one the "
                        f"training features came from ({detail}). {fallback}"), None
        return None, extractor

    def _stage_media(self, request: _Request, folder: Path) -> None:
        """Write decoded media to files (the extractors read files) and refuse over-long media."""
        from hjcag.features.media_io import MediaRef, media_duration

        folder.mkdir(parents=True)
        written: dict[int, MediaRef] = {}
        for m, value in list(request.raw.items()):
            if not isinstance(value, bytes):
                continue
            key = id(value)
            if key not in written:  # video used for both visual and audio: one file
                path = folder / ("audio.wav" if m == "a" and not request.audio_from_video else "video.mp4")
                path.write_bytes(value)
                what = "video" if path.name == "video.mp4" else "audio"
                try:
                    seconds = media_duration(path)
                except DataError as exc:
                    request.error = _media_error(exc, path)
                    return
                if seconds is not None and seconds > self.limits.max_media_seconds:
                    request.error = RequestError(f"{what} lasts {seconds:.1f} s; the limit is "
                                                 f"{self.limits.max_media_seconds:.0f} s per utterance.", 413)
                    return
                written[key] = MediaRef(path)
            request.raw[m] = written[key]

    def _extract(self, requests: Sequence[_Request]) -> None:
        """Run each modality's extractor once over the batch; a failing batch is retried item by item."""
        for m in MODALITIES:
            todo = [r for r in requests if r.error is None and m in r.raw]
            if not todo:
                continue
            extractor = self._extractor(m)
            try:
                values: list[np.ndarray | RequestError] = list(extractor.extract([r.raw[m] for r in todo]))
            except DataError:
                values = [self._extract_one(extractor, r.raw[m], m) for r in todo]
            for request, value in zip(todo, values, strict=True):
                if isinstance(value, RequestError):
                    if m == "a" and request.audio_from_video and "v" in request.raw:
                        log.info("video without a usable sound track: audio masked (%s)", value.message)
                    else:
                        request.error = value
                    continue
                try:
                    request.features[m] = self._aligned(m, value, f"{MODALITY_NAMES[m]} features extracted from "
                                                                  "the request")
                except RequestError as exc:
                    request.error = exc

    def _extract_one(self, extractor: Extractor, item: Any, m: str) -> np.ndarray | RequestError:
        try:
            return extractor.extract([item])[0]
        except DataError as exc:
            return _media_error(exc, item.path) if hasattr(item, "path") else RequestError(str(exc))

    def _collate(self, requests: Sequence[_Request]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        n = len(requests)
        inputs = {}
        for m in self.modalities:
            x = np.zeros((n, self.seq_len, self.input_dims[m]), dtype=np.float32)
            for i, r in enumerate(requests):
                if m in r.features:
                    x[i] = r.features[m]
            inputs[m] = torch.from_numpy(x)
        present = torch.tensor([[m in r.features for m in self.modalities] for r in requests], dtype=torch.bool)
        return inputs, present.reshape(n, len(self.modalities))

    # ------------------------------------------------------------------------------ inference / output

    def inference(self, batch: Batch) -> Outputs:
        """One forward pass over the batch's valid requests."""
        if batch.size == 0:
            return Outputs(torch.zeros(0, len(self.labels)), torch.zeros(0, len(self.modalities)))
        inputs = {m: x.to(self.device) for m, x in batch.inputs.items()}
        with torch.inference_mode():
            out = self.model(inputs, batch.present.to(self.device))
        return Outputs(torch.softmax(out.logits.float(), dim=1).cpu(), out.gate.float().cpu())

    def postprocess(self, batch: Batch, outputs: Outputs) -> list[dict[str, Any] | RequestError]:
        """One response (or RequestError) per body of the batch, in order."""
        results: list[dict[str, Any] | RequestError] = []
        row = 0
        for body in batch.bodies:
            if body.error is not None:
                results.append(body.error)
                continue
            answers = []
            for _ in body.requests:
                answers.append(self._response(outputs.probabilities[row], outputs.gate[row]))
                row += 1
            results.append({"predictions": answers} if body.kserve else answers[0])
        return results

    def _response(self, probs: torch.Tensor, gate: torch.Tensor) -> dict[str, Any]:
        values = probs.tolist()
        return {
            "label": self.labels[int(np.argmax(values))],
            "probabilities": dict(zip(self.labels, values, strict=True)),
            "gate": {MODALITY_NAMES[m]: float(w) for m, w in zip(self.modalities, gate.tolist(), strict=True)},
            "model": self.name,
            "version": self.version,
        }

    def describe(self) -> dict[str, Any]:
        """What is being served (for logs and the benchmark)."""
        return {"model": self.name, "version": self.version, "architecture": self.doc.get("model"),
                "modalities": [MODALITY_NAMES[m] for m in self.modalities], "input_dims": self.input_dims,
                "seq_len": self.seq_len, "labels": list(self.labels), "device": str(self.device),
                "raw_input_refused": {MODALITY_NAMES[m]: p for m, p in self._raw_problems.items()}}


# ---------------------------------------------------------------------------------------------- helpers


def weights_of(doc: Mapping[str, Any], fold: int | None, where: Path) -> str:
    """The weights file (relative to the run / bundle) of `fold`, or the run's default fold."""
    weights = doc.get("weights") or {}
    chosen = weights.get("default") if fold is None else f"fold_{fold}/{WEIGHTS_FILE}"
    if chosen is None or not (where / chosen).exists():
        raise HjcagError(f"'{where}' has no trained weights ({chosen}); finish the run with `hjcag train` first"
                         f"{'' if fold is None else ' or pick another --fold'}.")
    return str(chosen)


def build_trained_model(doc: Mapping[str, Any], weights: Path) -> nn.Module:
    """Rebuild the fusion model of a model_config.json and load its safetensors weights, in eval mode.

    Done here rather than through hjcag.train.run so that serving never imports the training code.
    """
    from safetensors.torch import load_file

    from hjcag.model.factory import build_model

    config = ModelConfig(**doc["model_config"])
    model = build_model(doc["model"], doc["input_dims"], int(doc["num_classes"]), config)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def _settle(body: _Body) -> _Body:
    """A body fails with its first failing request (named by index in a KServe body)."""
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


def _media_error(exc: DataError, path: Path) -> RequestError:
    """A decode failure of a request's media, without the server's temporary file name."""
    what = "video" if path.name == "video.mp4" else "audio"
    message = str(exc).replace(str(path), what).replace(path.name, what)
    return RequestError(f"{what} could not be decoded: {message}")


def _summary(info: Mapping[str, Any]) -> str:
    keys = ("model", "feature_set", "weights", "arch")
    return ", ".join(f"{k} {info[k]}" for k in keys if info.get(k) not in (None, {}, "")) or "configured"


def features_config_dict(config: FeaturesConfig) -> dict[str, Any]:
    """The JSON form of a FeaturesConfig (what the bundle's features.json carries)."""
    return dataclasses.asdict(config)
