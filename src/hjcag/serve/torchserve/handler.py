"""TorchServe handler for hjcag: a shim over :class:`hjcag.serve.predictor.Predictor`.

All request handling (JSON parsing, validation, feature extraction, batching, responses) lives in hjcag.serve, so
another runtime needs only a shim like this one. TorchServe unpacks the .mar into the worker's model directory and
puts it first on PYTHONPATH, so ``import hjcag`` below loads the hjcag code packed into the archive.

Batching (model-config.yaml: batchSize, maxBatchDelay): TorchServe hands over up to batchSize requests at once; we
return exactly one response per request, in order. A bad request gets its own 4xx status and a JSON message
({"code", "type", "message"}) through ``context.set_response_status``; the other requests of the batch are
answered normally. Only a failure of the whole batch (a bug, out of memory) gives TorchServe's 503 / 507.
"""

from __future__ import annotations

import logging
import os
from http import HTTPStatus
from typing import Any

import torch

import hjcag
from hjcag.serve.predictor import Batch, Outputs, Predictor
from hjcag.serve.request import RequestError
from hjcag.serve.worker_cap import WorkerSlot, hold_worker_slot

log = logging.getLogger(__name__)
JSON = "application/json"
BATCH_HEADER = "x-hjcag-batch-size"


class HjcagHandler:
    """TorchServe entry point: initialize once per worker, then handle(batch, context) per batch."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.worker_slot: WorkerSlot | None = None
        self.initialized = False

    def initialize(self, context: Any) -> None:
        self.claim_worker_slot(context)
        props = context.system_properties
        gpu = props.get("gpu_id")
        device = f"cuda:{gpu}" if gpu is not None and torch.cuda.is_available() else "cpu"
        self.predictor = Predictor.load(props.get("model_dir"), device=device)
        log.info("hjcag %s from %s: %s", hjcag.__version__, os.path.dirname(hjcag.__file__), self.predictor.describe())
        if os.environ.get("HJCAG_PRELOAD_EXTRACTORS", "1") != "0":  # load them now, not on the first raw request
            for modality, status in self.predictor.load_extractors().items():
                log.info("raw %s input: %s", modality, status)
        self.initialized = True

    def claim_worker_slot(self, context: Any) -> None:
        """Before loading anything: one of the model's capped worker slots, held for the life of the process
        (hjcag.serve.worker_cap: TorchServe 0.12 itself lets the management API start any number of workers)."""
        self.worker_slot = hold_worker_slot(context)

    def preprocess(self, data: list[dict[str, Any]]) -> Batch:
        assert self.predictor is not None
        return self.predictor.preprocess([row.get("body", row.get("data")) for row in data])

    def inference(self, batch: Batch) -> Outputs:
        assert self.predictor is not None
        return self.predictor.inference(batch)

    def postprocess(self, batch: Batch, outputs: Outputs, context: Any) -> list[dict[str, Any]]:
        assert self.predictor is not None
        responses = []
        results = self.predictor.postprocess(batch, outputs)
        for idx, result in enumerate(results):
            context.set_response_content_type(idx, JSON)
            # How many requests shared this forward pass: lets operators (and the tests) see batching work.
            context.set_response_header(idx, BATCH_HEADER, str(len(results)))
            if isinstance(result, RequestError):
                context.set_response_status(result.status, HTTPStatus(result.status).phrase, idx)
                responses.append(result.to_response())
            else:
                responses.append(result)
        return responses

    def handle(self, data: list[dict[str, Any]] | None, context: Any) -> list[dict[str, Any]] | None:
        if not self.initialized:
            self.initialize(context)
        if data is None:
            return None
        batch = self.preprocess(data)
        return self.postprocess(batch, self.inference(batch), context)
