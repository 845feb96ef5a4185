"""Framework-free predictor: JSON requests in, label + probabilities + gate weights out.

Everything a serving runtime needs between the socket and the model lives in hjcag.serve, so TorchServe's handler
(hjcag/serve/torchserve/handler.py) and any other runtime (KServe's Python server, Triton's Python backend, a test)
is a shim:

* :meth:`Predictor.load` reads a *serving bundle* (the contents of the ``.mar``, see :mod:`hjcag.serve.package`)
  or a training run directory;
* :meth:`Predictor.preprocess` turns request bodies (:mod:`hjcag.serve.request`) into aligned (L, d) arrays and a
  presence mask, extracting raw text / wav / mp4 (:mod:`hjcag.serve.raw_media`) with the same extractor
  configuration as training (the bundle carries it), and a context model's windows over the turns sent (a
  text-context model's raw text with the preceding turns' speakers and texts, as ``hjcag features`` gave them);
* :meth:`Predictor.inference` runs one forward pass over every valid request of a batch;
* :meth:`Predictor.postprocess` returns exactly one response per body, in order: a response dict, or a
  :class:`~hjcag.serve.request.RequestError` (a 4xx status and a message saying what is wrong) for that body alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
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
from hjcag.device import torch_threads
from hjcag.errors import HjcagError
from hjcag.model.context import SAME_SPEAKER, UNKNOWN_SPEAKER, ContextBatch, alone
from hjcag.params import MODALITIES, MODALITY_NAMES, MediaConfig
from hjcag.serve.raw_media import RawMedia, attach_spoken
from hjcag.serve.request import Body, Limits, Request, RequestError, RequestParser, SpokenTurn, TurnState, settle
from hjcag.serve.state import decode_state, encode_state, model_fingerprint
from hjcag.serve.threads import ThreadChoice, use_serving_threads

if TYPE_CHECKING:
    from hjcag.params import FeaturesConfig

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What :meth:`Predictor.preprocess` hands to :meth:`Predictor.inference`."""

    bodies: list[Body]
    inputs: dict[str, torch.Tensor]  # m -> (R, L, d): the N valid requests, then the raw turns of their context
    present: torch.Tensor  # (R, |M|) bool
    answers: int = -1  # N (-1: every row is a request)
    context: ContextBatch | None = None  # context models: each row's window over the rows and the sent states
    spoken: list[tuple[SpokenTurn, ...]] | None = None  # text-context models: each request's last k turns of text
    text_turns: list[int] | None = None  # and how many earlier turns its encoder input read

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

    Safe to share between threads: parsing, validation and the forward pass run concurrently; raw extraction is
    serialised (:class:`~hjcag.serve.raw_media.RawMedia`).
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
        self.seq_len = int(model_doc["seq_len"])  # the steps it was trained with: 1 for utterance vectors
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
        # features.text_context: the text encoder reads the preceding turns too (hjcag.features.text_context)
        self.text_context = (features_config.text_context
                             if features_config is not None and "t" in self.input_dims else 0)
        # how many previous turns a request may send under 'context': a text-only-context model needs the last
        # turn's state alone (it carries the k turns of text)
        self.sent_turns = self.context_turns or (1 if self.text_context else 0)
        self.fingerprint = model_fingerprint(self.model) if self.sent_turns else ""
        self.media = media or MediaConfig()  # what valid request media is: validation's definition (media_rules)
        if features_config is not None:
            features_config = features_config.replace(
                seq_len=self.seq_len, device=str(self.device), cache_dir=None, progress=False
            )
        self.raw_media = RawMedia(self.input_dims, features_config, trained_with or {}, self.media)
        no_context = "it was trained with model.context: none"
        if self.context_kept is False:
            no_context = ("its conversation-context layer was dropped in training: it did not beat the context-free "
                          "model on validation")
        self.parser = RequestParser(self.modalities, self.input_dims, self.seq_len, self.limits,
                                    self.raw_media.extractor, self.sent_turns, self._decode_state, no_context)
        self.thread_choice: ThreadChoice | None = None  # set by use_serving_threads

    def _decode_state(self, text: object, where: str) -> TurnState:
        width = int(self.model.fused_width) if self.context_turns else 0
        return decode_state(text, self.fingerprint, width, where, self.text_context, self.limits.max_text_chars)

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
        return self.raw_media.load_extractors()

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
        """Parse and validate every body, extract raw inputs (batched per modality), collate to tensors; a context
        model's batch also holds each request's window over its turns."""
        parsed = [settle(self.parser.parse(body)) for body in bodies]
        requests = [r for b in parsed if b.error is None for r in b.requests]
        if self.text_context:
            for request in requests:
                attach_spoken(request, self.text_context)
        turns = _turn_requests(requests) if self.context_turns else []  # a text-only-context model reads their text
        raw = [r for r in requests + turns if r.raw]
        if raw:
            # The extractors (ResNet-50 over frames, MiniLM) are far larger than the fusion model: they get the
            # worker's whole thread cap even when the fusion model was given one thread (hjcag.serve.threads).
            with torch_threads(self.thread_choice.cap if self.thread_choice else 0):
                self.raw_media.extract(raw, self.parser.aligned)
            parsed = [settle(b) for b in parsed]  # a request (or turn) whose media failed fails its body
        valid = [r for b in parsed if b.error is None for r in b.requests]
        spoken = [r.spoken for r in valid] if self.text_context else None
        if not self.context_turns:
            inputs, present = self._collate(valid)
            return Batch(parsed, inputs, present, spoken=spoken, text_turns=[r.text_turns for r in valid])
        rows = valid + _turn_requests(valid)  # the requests, then the turns sent as inputs
        inputs, present = self._collate(rows)
        return Batch(parsed, inputs, present, answers=len(valid), context=self._windows(valid, len(rows)),
                     spoken=spoken)

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
            # itself: same speaker, or unknown without one (as the offline windows, hjcag.data.conversation)
            context.speaker[i, k] = SAME_SPEAKER if request.speaker is not None else UNKNOWN_SPEAKER
        if states:
            context.states = torch.from_numpy(np.stack(states))
        return context

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
                outputs = Outputs(torch.softmax(out.logits.float(), dim=1).cpu(), out.gate.float().cpu(),
                                  batch.present)
                if batch.spoken is not None:  # text context only: the state carries the turns' text
                    outputs.states = [encode_state(None, self.fingerprint, s) for s in batch.spoken]
                    outputs.context_turns = batch.text_turns  # the earlier turns the encoder read
                return outputs
            out = self.model(inputs, batch.present.to(self.device), context=batch.context.to(self.device))
        n = batch.size
        turns = (batch.context.window[:n, : self.context_turns] >= 0).sum(dim=1).tolist()
        spoken = batch.spoken if batch.spoken is not None else [None] * n
        return Outputs(torch.softmax(out.logits[:n].float(), dim=1).cpu(), out.gate[:n].float().cpu(),
                       batch.present[:n], [encode_state(v, self.fingerprint, s) for v, s in zip(out.fused[:n], spoken,
                                                                                                   strict=True)], turns)

    def use_serving_threads(self, environ: Mapping[str, str] | None = None) -> ThreadChoice:
        """Set this process's torch threads as a serving worker of this model uses them (hjcag.serve.threads: one
        for a small model, else OMP_NUM_THREADS; HJCAG_TORCH_THREADS overrides) and record the choice (describe())."""
        self.thread_choice = use_serving_threads(self.flops_per_request, self.device.type,
                                                 os.environ if environ is None else environ)
        return self.thread_choice

    def flops_per_request(self) -> int:
        """Floating-point operations of the forward pass over one request with every modality present, as torch's
        FlopCounterMode counts them (matrix products, convolutions, attention): the same on every machine."""
        from torch.utils.flop_counter import FlopCounterMode

        inputs = {m: torch.zeros(1, self.seq_len, self.input_dims[m], device=self.device) for m in self.modalities}
        present = torch.ones(1, len(self.modalities), dtype=torch.bool, device=self.device)
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            self.model(inputs, present)
        return int(counter.get_total_flops())

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
                    answer["context_window"] = self.sent_turns  # how many of the states a request may send
                    if self.text_context:
                        answer["text_context"] = self.text_context  # turns of text the encoder reads
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
                "text_context": self.text_context,
                "context_kept": self.context_kept,
                "modalities": [MODALITY_NAMES[m] for m in self.modalities], "input_dims": self.input_dims,
                "seq_len": self.seq_len, "labels": list(self.labels), "device": str(self.device),
                "torch_threads": torch.get_num_threads(),
                "threads_chosen": None if self.thread_choice is None else self.thread_choice.describe(),
                "raw_input_refused": self.raw_media.refused,
                "valid_media": {k: v for k, v in dataclasses.asdict(self.media).items()
                                if k not in ("workers", "span_tolerance_s")}}


def _turn_requests(requests: Sequence[Request]) -> list[Request]:
    """The context turns sent as inputs (not states), request by request, oldest first."""
    return [t.request for r in requests for t in r.turns if t.request is not None]

