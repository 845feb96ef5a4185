"""Framework-free predictor: JSON requests in, label + probabilities + gate weights out.

Everything a serving runtime needs between the socket and the model lives in hjcag.serve, so TorchServe's handler
(hjcag/serve/torchserve/handler.py) and any other runtime (KServe's Python server, Triton's Python backend, a test)
is a shim:

* :meth:`Predictor.load` reads a *serving bundle* (the contents of the ``.mar``, see :mod:`hjcag.serve.package`)
  or a training run directory;
* :meth:`Predictor.preprocess` turns request bodies (:mod:`hjcag.serve.request`) into aligned (L, d) arrays and a
  presence mask, extracting raw text / wav / mp4 with the same extractor configuration as training (the bundle
  carries it);
* :meth:`Predictor.inference` runs one forward pass over every valid request of a batch;
* :meth:`Predictor.postprocess` returns exactly one response per body, in order: a response dict, or a
  :class:`~hjcag.serve.request.RequestError` (a 4xx status and a message saying what is wrong) for that body alone.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hjcag.artifacts import (
    EXTRACTORS_FILE,
    MEDIA_FILE,
    MODEL_CONFIG_FILE,
    RUN_FILE,
    SERVING_FILE,
    build_trained_model,
    read_json,
    trained_model_config,
    unit_model_doc,
    weights_path,
)
from hjcag.errors import DataError, HjcagError
from hjcag.model.context import SAME_SPEAKER, UNKNOWN_SPEAKER, ContextBatch, alone
from hjcag.params import MODALITIES, MODALITY_NAMES, MediaConfig
from hjcag.serve.request import Body, Limits, Request, RequestError, RequestParser, media_error, settle
from hjcag.serve.state import decode_state, encode_state, model_fingerprint

if TYPE_CHECKING:
    from hjcag.features.extract import Extractor
    from hjcag.params import FeaturesConfig

log = logging.getLogger(__name__)


class _NoSoundTrack(Exception):
    """A clip's sound track is missing or does not decode: its audio is masked, not an error."""


# Extractor description keys that do not change the features (compared between training and serving).
_NOT_IDENTITY = {"requested_model", "dim", "extracted", "cached", "failed", "seconds"}


@dataclass
class Batch:
    """What :meth:`Predictor.preprocess` hands to :meth:`Predictor.inference`."""

    bodies: list[Body]
    inputs: dict[str, torch.Tensor]  # m -> (R, L, d): the N valid requests, then the raw turns of their context
    present: torch.Tensor  # (R, |M|) bool
    answers: int = -1  # N (-1: every row is a request)
    context: ContextBatch | None = None  # context models: each row's window over the rows and the sent states

    @property
    def size(self) -> int:
        return int(self.present.shape[0]) if self.answers < 0 else self.answers


@dataclass
class Outputs:
    probabilities: torch.Tensor  # (N, C)
    gate: torch.Tensor  # (N, |M|)
    present: torch.Tensor  # (N, |M|) bool: the modalities each answer used
    states: list[str] | None = None  # context models: each answer's turn state
    context_turns: list[int] | None = None  # and how many previous turns it read


def run_version(run_dir: Path, unit: str) -> str:
    """A version string for one unit (fold_K) of an unregistered training run: 'run-' + the run's settings
    fingerprint + the unit, so that every fold's model has a version of its own."""
    run_file = Path(run_dir) / RUN_FILE
    if run_file.exists():
        fingerprint = str(read_json(run_file).get("fingerprint", ""))[:8]
        if fingerprint:
            return f"run-{fingerprint}-{unit}"
    return f"run-unversioned-{unit}"


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
        media: MediaConfig | None = None,
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
        self.context = trained_model_config(model_doc)
        # None: trained without context; False: its warm-started context layer was dropped (a context-free model)
        self.context_kept: bool | None = model_doc.get("context_kept")
        if self.context.context != "none" and self.context.context_direction != "causal":
            raise HjcagError(
                f"this model reads the following turns too (model.context_direction: "
                f"{self.context.context_direction}), which a live endpoint never has: it is for offline evaluation "
                "only. Serve a model trained with context_direction: causal."
            )
        self.context_turns = self.context.context_window if self.context.context != "none" else 0
        self.fingerprint = model_fingerprint(self.model) if self.context_turns else ""
        self.media = media or MediaConfig()  # what valid request media is: validation's definition (media_rules)
        no_context = "it was trained with model.context: none"
        if self.context_kept is False:
            no_context = ("its conversation-context layer was dropped in training: it did not beat the context-free "
                          "model on validation")
        self.parser = RequestParser(self.modalities, self.input_dims, self.seq_len, self.limits, self._extractor,
                                    self.context_turns, self._decode_state, no_context)
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

    def _decode_state(self, text: object, where: str) -> np.ndarray:
        return decode_state(text, self.fingerprint, int(self.model.fused_width), where)

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
        serving = read_json(path / SERVING_FILE)
        doc = read_json(path / MODEL_CONFIG_FILE)
        features = read_json(path / EXTRACTORS_FILE) if (path / EXTRACTORS_FILE).exists() else {}
        config = None
        if features.get("config") is not None:
            from hjcag.params import FeaturesConfig

            config = FeaturesConfig.from_dict(features["config"])
        # an archive older than media.json: the default bounds, which are params.yaml's defaults
        media = MediaConfig.from_dict(read_json(path / MEDIA_FILE)) if (path / MEDIA_FILE).exists() else None
        model = build_trained_model(doc, path / doc["weights"]["default"])
        return cls(model, doc, name=serving["model"], version=str(serving["version"]), features_config=config,
                   trained_with=features.get("trained_with"), device=device, limits=limits, media=media)

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
        media: MediaConfig | None = None,
    ) -> Predictor:
        """From a training run directory; raw inputs need `features_config` (else only ``features`` work) and are
        checked against `media` (default: MediaConfig's defaults)."""
        run_dir = Path(run_dir)
        doc = read_json(run_dir / MODEL_CONFIG_FILE)
        weights = weights_path(doc, fold, run_dir)
        unit = Path(weights).parent.name
        model = build_trained_model(doc, run_dir / weights)
        return cls(model, unit_model_doc(doc, unit), name=name, version=version or run_version(run_dir, unit),
                   features_config=features_config, trained_with=trained_with, device=device, limits=limits,
                   media=media)

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
        parsed = [settle(self.parser.parse(body)) for body in bodies]
        requests = [r for b in parsed if b.error is None for r in b.requests]
        staged = [r for r in requests + _turn_requests(requests) if r.raw]
        if staged:
            with self._extract_lock, tempfile.TemporaryDirectory(prefix="hjcag-serve-") as tmp:
                for i, request in enumerate(staged):
                    self._stage_media(request, Path(tmp) / f"r{i}")
                self._extract(staged)
            parsed = [settle(b) for b in parsed]
        valid = [r for b in parsed if b.error is None for r in b.requests]
        if not self.context_turns:
            inputs, present = self._collate(valid)
            return Batch(parsed, inputs, present)
        rows = valid + _turn_requests(valid)  # the requests, then the turns sent as inputs
        inputs, present = self._collate(rows)
        return Batch(parsed, inputs, present, answers=len(valid), context=self._windows(valid, len(rows)))

    def _windows(self, requests: Sequence[Request], n_rows: int) -> ContextBatch:
        """Each request's window: its turns (rows of the batch, or sent states after them) then itself."""
        k = self.context_turns
        context = alone(n_rows, k, "causal", torch.device("cpu"))
        states: list[np.ndarray] = []
        turn_row = len(requests)
        for i, request in enumerate(requests):
            for j, turn in enumerate(request.turns):
                column = k - len(request.turns) + j
                if turn.request is not None:
                    context.window[i, column] = turn_row
                    turn_row += 1
                else:
                    assert turn.state is not None
                    context.window[i, column] = n_rows + len(states)
                    states.append(turn.state)
                known = turn.speaker is not None and request.speaker is not None
                context.speaker[i, column] = (int(turn.speaker == request.speaker) if known else UNKNOWN_SPEAKER)
            context.speaker[i, k] = SAME_SPEAKER
        if states:
            context.states = torch.from_numpy(np.stack(states))
        return context

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

    def _stage_media(self, request: Request, folder: Path) -> None:
        """Write decoded media to files (the extractors read files) and refuse media that validation would refuse
        (duration, sample rate, frames: the model's MediaConfig); a clip without a usable sound track gives no
        audio (masked) rather than an error."""
        from hjcag.features.media_io import MediaRef

        folder.mkdir(parents=True)
        written: dict[int, MediaRef] = {}
        for m, value in list(request.raw.items()):
            if not isinstance(value, bytes):
                continue
            key = id(value)
            if key not in written:  # video used for both visual and audio: one file
                path = folder / ("audio.wav" if m == "a" and not request.audio_from_video else "video.mp4")
                path.write_bytes(value)
                written[key] = MediaRef(path)
            try:
                request.error = self._invalid_media(m, written[key].path, m == "a" and request.audio_from_video)
            except _NoSoundTrack:
                log.info("video without a usable sound track: audio masked")
                del request.raw[m]
                continue
            if request.error is not None:
                return
            request.raw[m] = written[key]

    def _invalid_media(self, m: str, path: Path, track: bool) -> RequestError | None:
        """Why the media file `path` of modality `m` is not valid media, or None: the same probe and bounds as
        the pipeline's validation. `track`: `path` is a clip giving its sound track (raises _NoSoundTrack when
        it has none that decodes)."""
        from hjcag.features.media_rules import media_bounds, probe_audio, probe_video, probed_values

        cfg = self.media
        if m == "a":
            probe = probe_audio(path, cfg.full_decode)
        else:
            probe = probe_video(path, None, None, cfg.min_frames, cfg.full_decode)
        if probe.error is not None:
            if track:
                raise _NoSoundTrack(probe.error)
            return media_error(probe.error, path)
        what = "the video's sound track" if track else ("audio" if m == "a" else "video")
        values = probed_values(probe, m)
        for bound in media_bounds(cfg, m):
            value = values[bound.column]
            if value is None or not bound.violated_by(value):
                continue
            if bound.unit == "s" and bound.too_large(value):
                return RequestError(f"{what} lasts {value:.1f} s; the limit is {bound.high:g} s per utterance "
                                    f"(validation.media.max_duration_s of the model's params).", 413)
            return RequestError(f"{what}: {bound.explain(value)}. The pipeline's validation refuses such media, "
                                "so the model never saw any: send media within these bounds.")
        return None

    def _extract(self, requests: Sequence[Request]) -> None:
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
                    request.features[m] = self.parser.aligned(m, value, f"{MODALITY_NAMES[m]} features extracted from "
                                                                  "the request")
                except RequestError as exc:
                    request.error = exc

    def _extract_one(self, extractor: Extractor, item: Any, m: str) -> np.ndarray | RequestError:
        try:
            return extractor.extract([item])[0]
        except DataError as exc:
            return media_error(exc, item.path) if hasattr(item, "path") else RequestError(str(exc))

    def _collate(self, requests: Sequence[Request]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
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
            return Outputs(torch.zeros(0, len(self.labels)), torch.zeros(0, len(self.modalities)), batch.present)
        inputs = {m: x.to(self.device) for m, x in batch.inputs.items()}
        with torch.inference_mode():
            if batch.context is None:
                out = self.model(inputs, batch.present.to(self.device))
                return Outputs(torch.softmax(out.logits.float(), dim=1).cpu(), out.gate.float().cpu(), batch.present)
            out = self.model(inputs, batch.present.to(self.device), context=batch.context.to(self.device))
        n = batch.size
        turns = (batch.context.window[:n, : self.context_turns] >= 0).sum(dim=1).tolist()
        return Outputs(torch.softmax(out.logits[:n].float(), dim=1).cpu(), out.gate[:n].float().cpu(),
                       batch.present[:n], [encode_state(v, self.fingerprint) for v in out.fused[:n]], turns)

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
                answer = self._response(outputs.probabilities[row], outputs.gate[row], outputs.present[row])
                if outputs.states is not None and outputs.context_turns is not None:
                    answer["state"] = outputs.states[row]
                    answer["context_turns"] = outputs.context_turns[row]
                if self.context_kept is not None:  # trained with context: whether this model reads it
                    answer["context_kept"] = self.context_kept
                answers.append(answer)
                row += 1
            results.append({"predictions": answers} if body.kserve else answers[0])
        return results

    def _response(self, probs: torch.Tensor, gate: torch.Tensor, present: torch.Tensor) -> dict[str, Any]:
        values = probs.tolist()
        return {
            "label": self.labels[int(np.argmax(values))],
            "probabilities": dict(zip(self.labels, values, strict=True)),
            "gate": {MODALITY_NAMES[m]: float(w) for m, w in zip(self.modalities, gate.tolist(), strict=True)},
            "modalities": [MODALITY_NAMES[m] for m, on in zip(self.modalities, present.tolist(), strict=True) if on],
            "model": self.name,
            "version": self.version,
        }

    def describe(self) -> dict[str, Any]:
        """What is being served (for logs and the benchmark)."""
        return {"model": self.name, "version": self.version, "architecture": self.doc.get("model"),
                "context": {"kind": self.context.context, "window": self.context_turns} if self.context_turns else None,
                "context_kept": self.context_kept,
                "modalities": [MODALITY_NAMES[m] for m in self.modalities], "input_dims": self.input_dims,
                "seq_len": self.seq_len, "labels": list(self.labels), "device": str(self.device),
                "raw_input_refused": {MODALITY_NAMES[m]: p for m, p in self._raw_problems.items()},
                "valid_media": {k: v for k, v in dataclasses.asdict(self.media).items()
                                if k not in ("workers", "span_tolerance_s")}}


def _turn_requests(requests: Sequence[Request]) -> list[Request]:
    """The context turns sent as inputs (not states), request by request, oldest first."""
    return [t.request for r in requests for t in r.turns if t.request is not None]


def _summary(info: Mapping[str, Any]) -> str:
    keys = ("model", "feature_set", "weights", "arch")
    return ", ".join(f"{k} {info[k]}" for k in keys if info.get(k) not in (None, {}, "")) or "configured"
