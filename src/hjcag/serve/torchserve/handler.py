"""TorchServe handler for hjcag: a shim over :class:`hjcag.serve.predictor.Predictor`.

All request handling (JSON parsing, validation, feature extraction, batching, responses) lives in hjcag.serve, so
another runtime needs only a shim like this one. TorchServe unpacks the .mar into the worker's model directory and
puts it on PYTHONPATH, after any PYTHONPATH the server inherited (none in the images; LocalTorchServe leaves out
folders holding another hjcag), so ``import hjcag`` below loads the hjcag code packed into the archive.

Batching (model-config.yaml: batchSize, maxBatchDelay): TorchServe hands over up to batchSize requests at once; we
return exactly one response per request, in order. A bad request gets its own 4xx status and a JSON message
({"code", "type", "message"}) through ``context.set_response_status``; the other requests of the batch are
answered normally. Only a failure of the whole batch (a bug, out of memory) gives TorchServe's 503 / 507.
"""

from __future__ import annotations

import logging
import os
import time
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
# The handler's own time for the batch (W3C Server-Timing): what a request's latency owes to hjcag, the rest
# being TorchServe's (HTTP, batching wait, the hand-over to this worker). benchmarks/serve_load.py splits it so.
TIMING_HEADER = "Server-Timing"


class HjcagHandler:
    """TorchServe entry point: initialize once per worker, then handle(batch, context) per batch."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.worker_slot: WorkerSlot | None = None
        self.initialized = False

    def initialize(self, context: Any) -> None:
        # TorchServe's worker would json.loads every application/json body before the handler (and log a traceback
        # for each malformed one). The predictor decodes bodies itself, with its own 400 messages, so one parser
        # serves every runtime and the handler's Server-Timing covers the request's whole work. The worker reads
        # this variable per request (ts/protocol/otf_message_handler.py), so setting it here, in the worker's own
        # process, before its first request, is enough.
        os.environ["TS_DECODE_INPUT_REQUEST"] = "false"
        self.claim_worker_slot(context)
        props = context.system_properties
        gpu = props.get("gpu_id")
        device = f"cuda:{gpu}" if gpu is not None and torch.cuda.is_available() else "cpu"
        self.predictor = Predictor.load(props.get("model_dir"), device=device)
        # One torch thread for a small fusion model, OMP_NUM_THREADS for a large one (hjcag.serve.threads); raw
        # inputs' feature extractors run on OMP_NUM_THREADS either way (Predictor.preprocess).
        log.info("torch threads: %s", self.predictor.use_serving_threads().describe())
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

    def postprocess(self, batch: Batch, outputs: Outputs, context: Any, started: float) -> list[dict[str, Any]]:
        """`started`: perf_counter() when the batch reached the handler, for the Server-Timing header."""
        assert self.predictor is not None
        responses = []
        results = self.predictor.postprocess(batch, outputs)
        timing = f"handler;dur={(time.perf_counter() - started) * 1000:.2f}"
        for idx, result in enumerate(results):
            context.set_response_content_type(idx, JSON)
            # How many requests shared this forward pass: lets operators (and the tests) see batching work.
            context.set_response_header(idx, BATCH_HEADER, str(len(results)))
            context.set_response_header(idx, TIMING_HEADER, timing)
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
        started = time.perf_counter()
        batch = self.preprocess(data)
        return self.postprocess(batch, self.inference(batch), context, started)
