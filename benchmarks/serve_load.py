"""Serving load test: concurrent clients against a real TorchServe endpoint, beside the in-process predictor.

What it does, all on this machine and on loopback only:

1. trains a small HJCAG run on random features whose dims match the serving extractors (MiniLM text 384, openSMILE
   --audio-set, ResNet-50 2048; 1 epoch, 2 folds: the weights are irrelevant to speed), or takes --run DIR;
2. for each --setting (default: the shipped model-config.yaml), packages it (`hjcag.serve.package.package_model`)
   with that model-config.yaml and starts `torchserve` with hjcag's config.properties on free loopback ports;
3. warms the server up (--warmup requests), then measures, with keep-alive HTTP and token auth against
   POST /predictions/hjcag (feature requests: distinct pre-extracted text (L, 384), audio (d_a,), visual (L, 2048)
   features as JSON numbers, or packed with --body float16 | float32):
   * lone requests: one at a time, each followed by the same body in process, interleaved so both see the same
     moment of the machine's load; the ratio of the p50s, and their difference, is what a lone request pays for
     serving (targets: <= 5 ms added at demo widths, <= 1.3x at the paper's);
   * --clients threads at once, with the in-process predictor (batch 1) timed just before and just after on the
     same bodies and the same cores: laid out as the server's workers (one worker: this process with as many torch
     threads as a worker; N workers: N processes); the ratio of requests/s is what serving costs under load
     (target >= 0.9);
   * raw requests (unless --raw-requests 0): a sentence + a base64 mp4 clip, 1 client then --clients;
4. times the in-process predictor one request at a time and in batches of 8 on all the bodies (reference).

It prints both ratios per setting and repeat and a Markdown table of them, and writes everything to its results file
(benchmarks/results_file.py; --results PATH). The worker layout (workers x threads) is read from the shipped files:
workers from model-config.yaml's minWorkers, the cap of each worker's torch threads from k8s/base's OMP_NUM_THREADS
(deployment_layouts, which also lists each overlay's), under which the handler gives a small model one thread
(hjcag.serve.threads; the in-process side applies the same rule, and each run records both choices); --threads N
sets N threads on both sides instead. --targets measures issue 23's serving targets in one run: demo
and paper widths, packed float16 bodies, the shipped layout, and a table of target, measured, verdict.
Offline, text falls back to MiniLM and ResNet-50 runs with random weights (the same speed as trained ones).

    python benchmarks/serve_load.py                                   # defaults: about 3-4 minutes on 2 CPU cores
    python benchmarks/serve_load.py --clients 16 --feature-requests 1000 --raw-requests 64 --results out/serve.json
    python benchmarks/serve_load.py --raw-requests 0 --repeat 2 --setting shipped --setting d50:maxBatchDelay=50
    python benchmarks/serve_load.py --targets --repeat 3                  # issue 23's targets, pass / fail each
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import platform
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import results_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # media_fixtures: real mp4 clips written with PyAV

LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
BATCH_HEADER = "x-hjcag-batch-size"  # set by the handler: the size of the batch that answered
TIMING_HEADER = "Server-Timing"  # set by the handler: "handler;dur=MS", its own time for the batch
SENTENCE = "oh my god you got the tickets I can't believe it that is so great we should go tonight"


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)} | {
        "mean_ms": round(float(ms.mean()), 1)}


# ----------------------------------------------------------------------------------------------- setup


def make_run(out: Path, dims: dict[str, int], seq_len: int, widths: str, context: int = 0) -> Path:
    from hjcag.data.features_file import FeatureSet
    from hjcag.params import load_params
    from hjcag.train.run import train_and_evaluate

    rng = np.random.default_rng(0)
    n = 16 * len(LABELS)  # enough per class for grouped, stratified folds and their validation splits
    y = np.arange(n) % len(LABELS)
    features = {m: rng.normal(size=(n, seq_len, d)).astype(np.float32) for m, d in dims.items()}
    fs = FeatureSet(utterance_id=np.array([f"u{i}" for i in range(n)]), label=np.array(LABELS)[y],
                    group=np.array([f"dia{i // 8}" for i in range(n)]), features=features, label_names=LABELS,
                    speaker=np.array(["Ross", "Rachel"] * (n // 2)), order=np.arange(n, dtype=np.float64) % 8)
    params = load_params(ROOT / "params.yaml", "demo")
    model: dict[str, Any] = {"seq_len": seq_len}
    train: dict[str, Any] = {"epochs": 1, "folds": 2, "batch_size": 8, "device": "cpu"}
    if context:  # conversation context over `context` previous turns (issue 10), trained jointly: on random
        # features the warm start's validation check may drop the layer, and the archive would serve no states
        model |= {"context": "gru", "context_window": context}
        train |= {"context_warm_start": False}
    if widths == "paper":
        model |= {"widths": {"t": 1024, "a": 1582, "v": 512}, "gate_width": 512, "classifier_hidden": 256}
    params = params.with_overrides(model=model, train=train)
    train_and_evaluate(fs, params, ("t", "a", "v"), "hjcag", out, quiet=True)
    return out


def feature_bodies(count: int, dims: dict[str, int], seq_len: int, encoding: str = "json") -> list[bytes]:
    """Feature requests: the arrays as JSON numbers (`encoding` "json"), or packed as float16 / float32 bytes in
    base64 ({"dtype", "shape", "b64"}: hjcag.serve.request)."""
    from hjcag.serve.request import pack_array

    rng = np.random.default_rng(1)
    bodies = []
    for _ in range(count):
        arrays = {"text": np.round(rng.normal(size=(seq_len, dims["t"])), 4),
                  "audio": np.round(rng.normal(size=dims["a"]), 4),
                  "visual": np.round(np.abs(rng.normal(size=(seq_len, dims["v"]))), 4)}
        if encoding == "json":
            features: dict[str, Any] = {k: v.tolist() for k, v in arrays.items()}
        else:
            features = {k: pack_array(v, encoding) for k, v in arrays.items()}
        bodies.append(json.dumps({"features": features}).encode())
    return bodies


def raw_bodies(count: int, folder: Path, seconds: float) -> list[bytes]:
    import media_fixtures

    words = SENTENCE.split()
    bodies = []
    for i in range(count):
        clip = media_fixtures.write_video(folder / f"clip{i}.mp4", duration_s=seconds, size=(320, 180), fps=24,
                                          freq=150.0 + 10 * i, seed=i)
        text = " ".join(words[i % 5:] + words[: i % 5])
        bodies.append(json.dumps({"text": text, "video": base64.b64encode(clip.read_bytes()).decode()}).encode())
    return bodies


# ------------------------------------------------------------------------------------------------ load


def load_phase(host: str, port: int, token: str, bodies: Sequence[bytes], clients: int,
               max_seconds: float) -> dict[str, Any]:
    """`clients` threads, each with one keep-alive connection, take bodies from a shared queue until it is empty
    or `max_seconds` have passed; returns latency percentiles and requests/s over the phase."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    batch_sizes: list[int] = []  # how many requests shared each answer's forward pass (the handler's header)
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))
    deadline = time.perf_counter() + max_seconds
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=300)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                conn.request("POST", "/predictions/hjcag", body=bodies[i], headers=headers)
                response = conn.getresponse()
                response.read()
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    batch_sizes.append(int(response.getheader(BATCH_HEADER) or 0))
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"requests": len(latencies), "clients": clients, "seconds": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 2), "statuses": statuses,
            "mean_batch": round(float(np.mean(batch_sizes)), 2) if batch_sizes else None, **percentiles(latencies)}


def in_process(run: Callable[[Sequence[bytes]], Any], bodies: Sequence[bytes], batch: int,
               max_seconds: float) -> dict[str, Any]:
    """The predictor called directly on the same JSON bodies, `batch` at a time, until done or out of time; with
    the CPU it took per request and the cores it kept busy (this process's CPU time over the wall time)."""
    latencies: list[float] = []
    done = 0
    started, cpu = time.perf_counter(), time.process_time()
    for lo in range(0, len(bodies), batch):
        if time.perf_counter() - started > max_seconds:
            break
        t0 = time.perf_counter()
        run(bodies[lo : lo + batch])
        latencies.append(time.perf_counter() - t0)
        done += len(bodies[lo : lo + batch])
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"requests": done, "batch": batch, "seconds": round(wall, 2), "requests_per_s": round(done / wall, 2),
            "cpu_ms_per_request": round(1000 * cpu / max(done, 1), 2), "cores_busy": round(cpu / wall, 2),
            **{k.replace("_ms", "_ms_per_call"): v for k, v in percentiles(latencies).items()}}


def _in_process_worker(unpacked: str, device: str, thread_env: dict[str, str], bodies: list[bytes],
                       max_seconds: float, start: Any, results: Any) -> None:
    """One in-process copy of a server worker, in its own process: load, take the worker's torch threads (the
    handler's rule under `thread_env`), warm up, wait for the others, then answer `bodies` one at a time
    (in_process_layout)."""
    from hjcag.serve.predictor import Predictor

    predictor = Predictor.load(Path(unpacked), device=device)
    predictor.use_serving_threads(thread_env)
    predictor.predict_many(bodies[:4])
    start.wait()
    started, cpu, done = time.perf_counter(), time.process_time(), 0
    for body in bodies:
        if time.perf_counter() - started > max_seconds:
            break
        predictor.predict_many([body])
        done += 1
    results.put((done, started, time.perf_counter(), time.process_time() - cpu))


def in_process_layout(run: Callable[[Sequence[bytes]], Any], bodies: Sequence[bytes], layout: Layout,
                      max_seconds: float, unpacked: Path, device: str, thread_env: dict[str, str]) -> dict[str, Any]:
    """The in-process predictor on the same cores as the server's workers: `layout.workers` copies, batch 1, each
    with the torch threads a worker chooses under `thread_env` (hjcag.serve.threads). One worker: `run` in this
    process (already set so). More: that many processes (CLOCK_MONOTONIC is shared, so the rate is all answers over
    first start to last end)."""
    if layout.workers <= 1:
        return in_process(run, bodies, 1, max_seconds)
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(layout.workers + 1), context.Queue()
    processes = [context.Process(target=_in_process_worker, args=(str(unpacked), device, thread_env,
                                                                  list(bodies[k :: layout.workers]), max_seconds,
                                                                  start, results))
                 for k in range(layout.workers)]
    for process in processes:
        process.start()
    start.wait(timeout=600)
    answers = [results.get(timeout=600 + max_seconds) for _ in processes]
    for process in processes:
        process.join()
    done = sum(a[0] for a in answers)
    wall, cpu = max(a[2] for a in answers) - min(a[1] for a in answers), sum(a[3] for a in answers)
    return {"requests": done, "batch": 1, "processes": layout.workers, "seconds": round(wall, 2),
            "requests_per_s": round(done / wall, 2), "cpu_ms_per_request": round(1000 * cpu / max(done, 1), 2),
            "cores_busy": round(cpu / wall, 2)}


def lone_phase(host: str, port: int, token: str, run: Callable[[Sequence[bytes]], Any],
               bodies: Sequence[bytes]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """One request at a time, alternating: the endpoint, the same body through the project's client
    (:class:`hjcag.client.Client`, as ``hjcag predict --endpoint`` sends it: a dict it serializes), then the
    in-process predictor. All see the same moment of a shared machine's load, so the ratios of their p50s hold even
    when the load drifts. Returns the endpoint's, the client's and the in-process figures."""
    from hjcag.client import Client

    client = Client(f"http://{host}:{port}", token)
    endpoint: list[float] = []
    via_client: list[float] = []
    local: list[float] = []
    handler: list[float] = []  # the handler's own time (its Server-Timing header), seconds
    statuses: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection(host, port, timeout=300)
    try:
        for body in bodies:
            t0 = time.perf_counter()
            conn.request("POST", "/predictions/hjcag", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            endpoint.append(time.perf_counter() - t0)
            statuses[response.status] = statuses.get(response.status, 0) + 1
            timing = response.getheader(TIMING_HEADER) or ""
            if timing.startswith("handler;dur="):
                handler.append(float(timing.split("=", 1)[1]) / 1000)
            request = json.loads(body)
            t0 = time.perf_counter()
            client.answer(request)
            via_client.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run([body])
            local.append(time.perf_counter() - t0)
    finally:
        conn.close()
        client.close()
    lone = {"requests": len(endpoint), "clients": 1, "statuses": statuses, **percentiles(endpoint)}
    if handler:
        lone["handler_mean_ms"] = round(1000 * float(np.mean(handler)), 2)
    return (lone, {"requests": len(via_client), "clients": 1, **percentiles(via_client)},
            {"requests": len(local), "batch": 1, **percentiles(local)})


def frontend_metrics(port: int) -> dict[str, float]:
    """TorchServe's Prometheus counters for hjcag: requests, and microseconds in the frontend (receipt to answer)
    and in its queue (the batching wait), summed over all requests so far."""
    names = {"ts_inference_requests_total": "requests", "ts_inference_latency_microseconds": "inside_us",
             "ts_queue_latency_microseconds": "queue_us"}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    out = dict.fromkeys(names.values(), 0.0)
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in names and 'model_name="hjcag"' in rest:
            out[names[name]] += float(line.rsplit(" ", 1)[1])
    return out


def lone_split(before: dict[str, float], after: dict[str, float], lone: dict[str, Any],
               local: dict[str, Any]) -> dict[str, float]:
    """Where a lone request's mean time goes: HTTP and the client, TorchServe's batching wait, the hand-over to
    the worker and back (the rest of the frontend's time), the handler; against the same requests in process."""
    n = max(after["requests"] - before["requests"], 1)
    inside = (after["inside_us"] - before["inside_us"]) / n / 1000
    queue = (after["queue_us"] - before["queue_us"]) / n / 1000
    handler = float(lone.get("handler_mean_ms", 0.0))
    split = {"client_ms": lone["mean_ms"], "http_and_client_ms": lone["mean_ms"] - inside, "batch_wait_ms": queue,
             "worker_hand_over_ms": inside - queue - handler, "handler_ms": handler,
             "in_process_ms": local["mean_ms"]}
    return {k: round(v, 2) for k, v in split.items()}


def cpu_seconds(root_pid: int) -> dict[str, float]:
    """CPU seconds so far of TorchServe's processes (the Java frontend, the Python workers) and of this one."""
    import psutil

    out = {"frontend": 0.0, "workers": 0.0, "client": 0.0}
    root = psutil.Process(root_pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(proc.cmdline())
            key = "workers" if "model_service_worker" in cmd else "frontend" if "java" in cmd.split(" ", 1)[0] else ""
            if key:
                times = proc.cpu_times()
                out[key] += times.user + times.system
    times = psutil.Process().cpu_times()
    out["client"] = times.user + times.system
    return out


def cpu_split(before: dict[str, float], after: dict[str, float], phase: dict[str, Any]) -> dict[str, float]:
    """CPU ms per request of each party over a load phase, and how busy the workers were (% of one core)."""
    n = max(phase["requests"], 1)
    split = {f"{k}_cpu_ms_per_request": 1000 * (after[k] - before[k]) / n for k in before}
    split["workers_busy_percent"] = 100 * (after["workers"] - before["workers"]) / max(phase["seconds"], 1e-9)
    return {k: round(v, 2) for k, v in split.items()}


def context_phase(host: str, port: int, token: str, bodies: Sequence[bytes], turns: int) -> dict[str, Any]:
    """One request at a time, alternating: a body alone, then the same body with `turns` previous turns sent as
    the states the endpoint returned (issue 10: a live conversation pays one extraction per turn, not k)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection(host, port, timeout=300)

    def post(body: bytes) -> tuple[float, int, dict[str, Any]]:
        t0 = time.perf_counter()
        conn.request("POST", "/predictions/hjcag", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        return time.perf_counter() - t0, response.status, json.loads(payload)

    try:
        states = []
        for i, body in enumerate(bodies[:turns]):
            _, status, answer = post(body)
            if "state" not in answer:
                raise SystemExit(f"the endpoint answered {status} without a state (a model without its context "
                                 f"layer?): {json.dumps(answer)[:300]}")
            states.append({"state": answer["state"], "speaker": ("Ross", "Rachel")[i % 2]})
        alone, with_states, statuses = [], [], {}
        for body in bodies:
            request = json.loads(body)
            seconds, status, _ = post(json.dumps({**request, "speaker": "Ross"}).encode())
            alone.append(seconds)
            statuses[status] = statuses.get(status, 0) + 1
            seconds, status, answer = post(json.dumps({**request, "speaker": "Ross", "context": states}).encode())
            with_states.append(seconds)
            statuses[status] = statuses.get(status, 0) + 1
            assert status != 200 or answer["context_turns"] == turns, answer
    finally:
        conn.close()
    out = {"turns": turns, "requests": 2 * len(bodies), "statuses": statuses,
           "alone": percentiles(alone), "with_states": percentiles(with_states)}
    out["latency_ratio"] = round(out["with_states"]["p50_ms"] / max(out["alone"]["p50_ms"], 1e-9), 2)
    return out


# ------------------------------------------------------------------------------------------- worker layout


@dataclass(frozen=True)
class Layout:
    """How a deployment runs the model: `workers` worker processes of `threads` torch threads each, within a CPU
    limit. Read from the shipped files (deployment_layouts), so the benchmark measures what ships."""

    source: str  # the file(s) it was read from
    workers: int  # worker processes TorchServe starts: model-config.yaml's minWorkers (KServe: its model_snapshot)
    threads: int | None  # the container's OMP_NUM_THREADS; None: not pinned (torch then takes all the node's cores)
    cpu_limit: float | None = None  # the container's CPU limit, cores
    max_workers: int | None = None  # HJCAG_MAX_WORKERS: the cap the memory limit allows (worker_cap.py)

    def describe(self) -> str:
        threads = "unpinned" if self.threads is None else self.threads
        cpus = "no" if self.cpu_limit is None else f"{self.cpu_limit:g}"
        return f"{self.workers} worker(s) x {threads} thread(s), {cpus} CPU limit, worker cap {self.max_workers}"

    def notes(self) -> list[str]:
        """What in this layout does not fit its CPU limit."""
        out = []
        if self.threads is None:
            out.append("OMP_NUM_THREADS is not set: each worker's torch uses all the node's cores")
        elif self.cpu_limit is not None and self.workers * self.threads > self.cpu_limit:
            out.append(f"{self.workers} x {self.threads} threads exceed the {self.cpu_limit:g}-CPU limit")
        elif self.cpu_limit is not None and self.workers * self.threads < self.cpu_limit:
            out.append(f"{self.workers} x {self.threads} threads leave part of the {self.cpu_limit:g}-CPU limit idle")
        return out


def _cores(value: Any) -> float | None:
    """A Kubernetes CPU quantity ('2', '500m', 1.5) in cores."""
    if value is None:
        return None
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _container_layout(container: dict[str, Any], workers: int, source: str) -> Layout:
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    threads, cap = env.get("OMP_NUM_THREADS"), env.get("HJCAG_MAX_WORKERS")
    return Layout(source, workers, None if threads is None else int(threads),
                  _cores(container.get("resources", {}).get("limits", {}).get("cpu")),
                  None if cap is None else int(cap))


def _patch_container(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`base` with a strategic-merge `patch` of its env (merged by name) and resources (merged per key)."""
    env = {e["name"]: e for e in base.get("env", [])} | {e["name"]: e for e in patch.get("env", [])}
    resources = {key: base.get("resources", {}).get(key, {}) | patch.get("resources", {}).get(key, {})
                 for key in ("requests", "limits")}
    return base | {"env": list(env.values()), "resources": resources}


def deployment_layouts(root: Path = ROOT) -> dict[str, Layout]:
    """The worker layout of each way hjcag ships the endpoint: k8s/base (the Deployment every overlay but kserve
    builds on), the overlays that patch it, and the kserve overlay's InferenceService. Workers come from the
    archive's model-config.yaml (minWorkers: what TorchServe starts), threads and limits from the manifests."""
    import yaml

    model_config = yaml.safe_load((root / "src/hjcag/serve/torchserve/model-config.yaml").read_text(encoding="utf-8"))
    workers = int(model_config.get("minWorkers", 1))

    def torchserve(doc: dict[str, Any]) -> dict[str, Any]:
        containers = doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        return next((c for c in containers if c.get("name") == "torchserve"), {})

    base_file = root / "k8s/base/deployment.yaml"
    base = torchserve(yaml.safe_load(base_file.read_text(encoding="utf-8")))
    layouts = {"k8s/base": _container_layout(base, workers, "model-config.yaml + k8s/base/deployment.yaml")}
    for patch_file in sorted((root / "k8s/overlays").glob("*/deployment-patch.yaml")):
        patch = torchserve(yaml.safe_load(patch_file.read_text(encoding="utf-8")))
        name = f"k8s/overlays/{patch_file.parent.name}"
        layouts[name] = _container_layout(_patch_container(base, patch), workers,
                                          f"model-config.yaml + k8s/base + {name}/deployment-patch.yaml")
    kserve = root / "k8s/overlays/kserve"
    if (kserve / "inferenceservice.yaml").exists():
        predictor = yaml.safe_load((kserve / "inferenceservice.yaml").read_text(encoding="utf-8"))["spec"]["predictor"]
        kserve_workers = workers
        properties = kserve / "model-storage/config/config.properties"
        for line in properties.read_text(encoding="utf-8").splitlines() if properties.exists() else ():
            if line.startswith("model_snapshot="):
                models = json.loads(line.split("=", 1)[1])["models"]
                kserve_workers = int(next(iter(next(iter(models.values())).values()))["minWorkers"])
        layouts["k8s/overlays/kserve"] = _container_layout(
            predictor.get("pytorch", {}), kserve_workers,
            "k8s/overlays/kserve: inferenceservice.yaml + model-storage/config/config.properties")
    return layouts


def shipped_layout(root: Path = ROOT) -> Layout:
    """The layout the benchmark measures by default: k8s/base's (dev, pvc and prod build on it)."""
    return deployment_layouts(root)["k8s/base"]


# ------------------------------------------------------------------------------------------------ main


@dataclass
class Setting:
    """One server configuration to measure: model-config.yaml overrides, TS_* server variables, log4j2 file."""

    name: str
    model_config: dict[str, int] = field(default_factory=dict)
    server_env: dict[str, str] = field(default_factory=dict)
    builtin_logs: bool = False  # TorchServe's built-in log4j2 configuration instead of hjcag's log4j2.xml


def parse_setting(text: str) -> Setting:
    """'NAME' or 'NAME:key=value,...' -> a Setting.

    Keys of model-config.yaml (batchSize, maxBatchDelay, minWorkers, maxWorkers, ...) change the archive; keys
    starting with TS_ (TS_NUMBER_OF_NETTY_THREADS, TS_NETTY_CLIENT_THREADS, ...) go to the server's environment
    (config.properties has enable_envvars_config=true), and so do HJCAG_ ones (HJCAG_TORCH_THREADS=2: the worker's
    torch threads, which the in-process side then takes too); logs=builtin starts TorchServe with its own log4j2
    configuration (a dozen log lines per request) instead of hjcag's. 'shipped' alone is what hjcag ships.
    """
    name, _, rest = text.partition(":")
    setting = Setting(name or "shipped")
    for item in filter(None, rest.split(",")):
        key, sep, value = (part.strip() for part in item.partition("="))
        if key == "logs" and value in ("builtin", "hjcag"):
            setting.builtin_logs = value == "builtin"
        elif not sep or not value.lstrip("-").isdigit():
            raise SystemExit(f"--setting {text!r}: '{item}' is not KEY=INTEGER or logs=builtin|hjcag; e.g. "
                             "'d5:maxBatchDelay=5,batchSize=8' or 't2:HJCAG_TORCH_THREADS=2'")
        elif key.startswith(("TS_", "HJCAG_")):
            setting.server_env[key] = value
        else:
            setting.model_config[key] = int(value)
    return setting


def server_threads(log: str) -> int | None:
    """The torch threads the server's (last started) worker chose: its handler logs 'torch threads: N ...'."""
    import re

    found = re.findall(r"torch threads: (\d+) torch thread", log)
    return int(found[-1]) if found else None


def archive_for(run_dir: Path, out: Path, config: Any, overrides: dict[str, int]) -> Path:
    """hjcag.mar of `run_dir` with the shipped model-config.yaml, `overrides` applied on top."""
    import yaml

    from hjcag.serve.package import MODEL_CONFIG_YAML, package_model

    model_config = yaml.safe_load(MODEL_CONFIG_YAML.read_text(encoding="utf-8")) | overrides
    out.mkdir(parents=True, exist_ok=True)
    (out / "model-config.yaml").write_text(yaml.safe_dump(model_config), encoding="utf-8")
    return package_model(run_dir, out / "store", features_config=config, model_config_yaml=out / "model-config.yaml")


def in_process_rate(run: dict[str, Any]) -> float:
    """In-process requests/s at batch 1 on the server's layout: the mean of the runs just before and just after the
    endpoint's clients."""
    return float(np.mean([run[f"in_process_features_{when}"]["requests_per_s"] for when in ("before", "after")]))


def ratios(run: dict[str, Any]) -> dict[str, float]:
    """lone: endpoint p50 / in-process p50, one request at a time, interleaved (paper widths: target <= 1.3), and
    their difference, what serving adds to a lone request (demo widths: target <= 5 ms); throughput: endpoint
    requests/s with --clients clients / in-process requests/s at batch 1 on the same layout, the mean of the runs just
    before and just after (target >= 0.9); features requests."""
    endpoint, local = run["endpoint_features_1client"]["p50_ms"], run["in_process_features_lone"]["p50_ms"]
    throughput = run["endpoint_features"]["requests_per_s"] / max(in_process_rate(run), 1e-9)
    out = {"lone_latency_ratio": round(endpoint / max(local, 1e-9), 2), "lone_added_ms": round(endpoint - local, 1),
           "throughput_ratio": round(throughput, 2)}
    if "client_features_lone" in run:  # what hjcag.client.Client adds over a bare keep-alive POST of the same body
        out["client_added_ms"] = round(run["client_features_lone"]["p50_ms"] - endpoint, 1)
    out |= cpu_ceiling(run)
    if "endpoint_raw" in run:
        out["raw_throughput_ratio"] = round(run["endpoint_raw"]["requests_per_s"]
                                            / max(run["in_process_raw_batch1"]["requests_per_s"], 1e-9), 2)
    return out


def cpu_ceiling(run: dict[str, Any], cpus: int | None = os.cpu_count()) -> dict[str, float]:
    """The CPU arithmetic of the throughput ratio. Under the clients the endpoint spends CPU per request in the Java
    frontend, the worker(s) and this client, all on this machine's cores; the in-process side spends its own per
    request and keeps `cores_busy` cores busy. With the endpoint CPU-bound on the layout's cores (workers x threads,
    at most this machine's), the ratio can be at most (cores / endpoint CPU) / (in-process rate): the ceiling. Below
    0.9, the target is out of reach for this layout whatever the scheduling."""
    cpu, layout = run.get("endpoint_features_cpu"), run.get("layout", {})
    local = [run.get(f"in_process_features_{when}", {}) for when in ("before", "after")]
    if not cpu or not all("cpu_ms_per_request" in phase for phase in local):
        return {}
    endpoint_ms = sum(cpu[f"{k}_cpu_ms_per_request"] for k in ("frontend", "workers", "client"))
    cores = min(layout.get("workers", 1) * (layout.get("threads") or cpus or 1), cpus or 1)
    ceiling = 1000 * cores / max(endpoint_ms, 1e-9) / max(in_process_rate(run), 1e-9)
    return {"endpoint_cpu_ms_per_request": round(endpoint_ms, 2), "in_process_cpu_ms_per_request":
            round(float(np.mean([phase["cpu_ms_per_request"] for phase in local])), 2),
            "in_process_cores_busy": round(float(np.mean([phase["cores_busy"] for phase in local])), 2),
            "cpu_ceiling_ratio": round(ceiling, 2)}


# ----------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One serving target (issue 23, item 4): a figure of ratios() at some widths, and its bound."""

    widths: str
    key: str  # a key of ratios()
    bound: float
    at_most: bool  # True: measured <= bound; False: measured >= bound
    what: str

    def holds(self, measured: float) -> bool:
        return measured <= self.bound if self.at_most else measured >= self.bound

    def text(self) -> str:
        return f"{self.widths} widths, {self.what} {'<=' if self.at_most else '>='} {self.bound:g}"


TARGETS = (
    Target("demo", "lone_added_ms", 5.0, True, "lone request, endpoint p50 - in-process p50 (ms)"),
    Target("demo", "throughput_ratio", 0.9, False, "8 clients, endpoint / in-process req/s, same cores"),
    Target("paper", "lone_latency_ratio", 1.3, True, "lone request, endpoint p50 / in-process p50"),
    Target("paper", "throughput_ratio", 0.9, False, "8 clients, endpoint / in-process req/s, same cores"),
)


def evaluate_targets(runs: Sequence[dict[str, Any]], targets: Sequence[Target] = TARGETS) -> list[dict[str, Any]]:
    """Per setting and target: every repeat's figure, their median and the verdict on the median (MISSING when no
    run measured those widths)."""
    rows = []
    for setting in dict.fromkeys(run["setting"] for run in runs):
        for target in targets:
            chosen = [run for run in runs if run["setting"] == setting and run["widths"] == target.widths]
            values = [run[target.key] for run in chosen]
            median = round(float(np.median(values)), 2) if values else None
            verdict = "MISSING" if median is None else "PASS" if target.holds(median) else "FAIL"
            layouts = sorted({(run["layout"]["workers"], run["layout"]["threads"]) for run in chosen})
            rows.append({"setting": setting, "layout": ", ".join(f"{w} x {t}" for w, t in layouts),
                         "shipped_layout": all(run["layout"]["shipped"] for run in chosen), "target": target.text(),
                         "values": values, "measured": median, "verdict": verdict})
    return rows


# ------------------------------------------------------------------------------------------------ main


def measure_widths(args: argparse.Namespace, widths: str, settings: Sequence[Setting], layout: Layout, tmp: Path,
                   config: Any, dims: dict[str, int], env: dict[str, str]) -> list[dict[str, Any]]:
    """Every setting, --repeat times, of a run at `widths` (trained here unless --run): one dict per measurement."""
    from hjcag.serve.local import DEFAULT_LOG_CONFIG, LocalTorchServe
    from hjcag.serve.package import read_archive_record
    from hjcag.serve.predictor import Predictor
    from hjcag.serve.threads import THREADS_ENV

    tmp = tmp / widths
    t0 = time.perf_counter()
    run_dir = args.run or make_run(tmp / "run", dims, args.seq_len, widths, args.context)
    shipped = archive_for(run_dir, tmp / "shipped", config, {})
    with zipfile.ZipFile(shipped) as z:
        z.extractall(tmp / "unpacked")
    version = read_archive_record(shipped)["version"]
    print(f"\n##### {widths} widths: run + archive in {time.perf_counter() - t0:.1f} s: {shipped} ({version})")
    features = feature_bodies(args.feature_requests, dims, args.seq_len, args.body)
    lone = features[: args.lone_requests]
    raw = raw_bodies(args.raw_requests, tmp, args.clip_seconds)
    print(f"bodies: {len(features)} feature requests ({args.body}) of "
          f"~{np.mean([len(b) for b in features]) / 1024:.0f} KiB, {len(raw)} raw requests"
          + (f" of ~{np.mean([len(b) for b in raw]) / 1024:.0f} KiB" if raw else ""))
    predictor = Predictor.load(tmp / "unpacked", device=args.device)
    if raw:
        predictor.load_extractors()
    predictor.predict_many(features[:8] + raw[:2])  # warm-up

    runs = []
    for index, setting in enumerate(settings):
        overrides, server_env = setting.model_config, setting.server_env
        mar = archive_for(run_dir, tmp / f"setting{index}", config, overrides) if overrides else shipped
        log_config = None if setting.builtin_logs else DEFAULT_LOG_CONFIG
        # The torch threads a worker of this setting chooses (the handler's rule, or HJCAG_TORCH_THREADS): the
        # in-process predictor takes the same, here and in in_process_layout's processes.
        thread_env = env | {k: v for k, v in server_env.items() if k.startswith("HJCAG_")}
        choice = predictor.use_serving_threads(thread_env)
        measured = Layout("this benchmark", overrides.get("minWorkers", layout.workers), choice.threads)
        is_shipped = (measured.workers == layout.workers and THREADS_ENV not in thread_env
                   and thread_env.get("OMP_NUM_THREADS") == str(layout.threads))
        for repeat in range(args.repeat):
            run: dict[str, Any] = {"setting": setting.name, "widths": widths, "body": args.body,
                                   "repeat": repeat + 1, "model_config": overrides, "server_env": server_env,
                                   "builtin_logs": setting.builtin_logs,
                                   "layout": {"workers": measured.workers, "threads": measured.threads,
                                              "thread_cap": choice.cap, "threads_chosen": choice.describe(),
                                              "shipped": is_shipped}}
            print(f"\n=== {widths} widths, {setting.name} {overrides or ''} {server_env or ''}"
                  f"{' (TorchServe built-in logs)' if setting.builtin_logs else ''} "
                  f"(repeat {repeat + 1}/{args.repeat}): {measured.workers} worker(s) x {measured.threads} thread(s)"
                  f"{'' if run['layout']['shipped'] else ' (NOT the shipped layout)'}; {choice.describe()}",
                  flush=True)
            t0 = time.perf_counter()
            with LocalTorchServe(mar.parent, env=env | server_env, log_config=log_config) as server:
                print(f"torchserve ready in {time.perf_counter() - t0:.1f} s on {server.inference_url}")
                run["layout"]["server_threads"] = server_threads(server.log_tail(2_000_000))
                if run["layout"]["server_threads"] != choice.threads:
                    print(f"WARNING: the server's worker chose {run['layout']['server_threads']} torch thread(s), "
                          f"in process {choice.threads}: the comparison is not on the same cores", flush=True)
                host, port = "127.0.0.1", server.ports["inference"]
                assert server.token is not None
                warm = [features[i % len(features)] for i in range(args.warmup)] + raw[:2]
                load_phase(host, port, server.token, warm, args.clients, 300)
                if args.context:
                    run["context"] = context_phase(host, port, server.token, lone, args.context)
                    print(f"context, {args.context} turn states vs none, lone requests: p50 "
                          f"{run['context']['with_states']['p50_ms']} / {run['context']['alone']['p50_ms']} ms "
                          f"= {run['context']['latency_ratio']} (target <= 1.2)", flush=True)
                metrics_before = frontend_metrics(server.ports["metrics"])
                run["endpoint_features_1client"], run["client_features_lone"], run["in_process_features_lone"] = \
                    lone_phase(host, port, server.token, predictor.predict_many, lone)
                run["lone_split"] = lone_split(metrics_before, frontend_metrics(server.ports["metrics"]),
                                               run["endpoint_features_1client"], run["in_process_features_lone"])
                print("lone, endpoint:", run["endpoint_features_1client"], "\nlone, through hjcag.client.Client:",
                      run["client_features_lone"], "\nlone, in-process:",
                      run["in_process_features_lone"], "\nlone, where the time goes (mean ms):",
                      run["lone_split"], flush=True)
                # In-process just before and just after the clients: the same machine load as the endpoint's, and
                # the server's layout (its workers' count and threads) without the server.
                local = (predictor.predict_many, features[: max(1, len(features) // 2)], measured, args.max_seconds,
                         tmp / "unpacked", args.device, thread_env)
                run["in_process_features_before"] = in_process_layout(*local)
                assert server.process is not None
                cpu_before = cpu_seconds(server.process.pid)
                run["endpoint_features"] = load_phase(host, port, server.token, features, args.clients,
                                                      args.max_seconds)
                run["endpoint_features_cpu"] = cpu_split(cpu_before, cpu_seconds(server.process.pid),
                                                         run["endpoint_features"])
                run["in_process_features_after"] = in_process_layout(*local)
                for key in ("in_process_features_before", "endpoint_features", "endpoint_features_cpu",
                            "in_process_features_after"):
                    print(f"{key}:", run[key], flush=True)
                if raw:
                    run["endpoint_raw_1client"] = load_phase(host, port, server.token, raw[: max(1, len(raw) // 8)],
                                                             1, args.max_seconds)
                    run["endpoint_raw"] = load_phase(host, port, server.token, raw, args.clients, args.max_seconds)
                    print("endpoint, raw, 1 client:", run["endpoint_raw_1client"], "\nendpoint, raw, "
                          f"{args.clients} clients:", run["endpoint_raw"], flush=True)
            for phase, bodies in (("features", features), ("raw", raw)):
                for batch in (1, 8) if bodies else ():
                    key = f"in_process_{phase}_batch{batch}"
                    run[key] = in_process(predictor.predict_many, bodies, batch, args.max_seconds)
                    print(f"in-process, {phase}, batch {batch}:", run[key], flush=True)
            run |= ratios(run)
            print(f"lone request: endpoint / in-process p50 = {run['lone_latency_ratio']:.2f}, "
                  f"+{run['lone_added_ms']} ms (hjcag.client.Client: +{run.get('client_added_ms')} ms more); "
                  f"{args.clients} clients: endpoint / in-process req/s = "
                  f"{run['throughput_ratio']:.2f}", flush=True)
            runs.append(run)
    return runs


def print_tables(runs: Sequence[dict[str, Any]], clients: int) -> None:
    many_widths = len({run["widths"] for run in runs}) > 1
    repeats = max(run["repeat"] for run in runs) > 1

    def label(run: dict[str, Any]) -> str:
        return (run["setting"] + (f", {run['widths']} widths" if many_widths else "")
                + (f" #{run['repeat']}" if repeats else ""))

    print(f"\n| setting | layout | lone p50 ms endpoint / in-process | lone ratio | lone added ms | {clients} clients "
          f"req/s endpoint / in-process | throughput ratio | {clients} clients p50 / p95 ms | mean batch |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        e1, e, r1 = run["endpoint_features_1client"], run["endpoint_features"], run["in_process_features_lone"]
        layout = f"{run['layout']['workers']} x {run['layout']['threads']}"
        print(f"| {label(run)} | {layout} | {e1['p50_ms']} / {r1['p50_ms']} | {run['lone_latency_ratio']} | "
              f"{run['lone_added_ms']} | {e['requests_per_s']} / {in_process_rate(run):.2f} | "
              f"{run['throughput_ratio']} | {e['p50_ms']} / {e['p95_ms']} | {e['mean_batch']} |")
    print("\nWhere the time goes. Lone request, mean ms: the client's wait = HTTP and client + TorchServe's batching "
          "wait + hand-over to the worker and back + the handler (in process: the same work without a server). "
          f"{clients} clients: CPU ms per request of the Java frontend, the Python worker(s) and this client, and "
          "how busy the workers were (% of one core); in process: CPU ms per request and cores kept busy; the "
          "throughput ceiling those CPU figures allow on the layout's cores (cpu_ceiling).\n"
          "| setting | client | HTTP + client | batch wait | hand-over | handler | in process | frontend CPU | "
          "worker CPU | client CPU | workers busy % | in-process CPU | in-process cores | throughput ceiling |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        sp, cpu = run["lone_split"], run["endpoint_features_cpu"]
        print(f"| {label(run)} | {sp['client_ms']} | {sp['http_and_client_ms']} | {sp['batch_wait_ms']} | "
              f"{sp['worker_hand_over_ms']} | {sp['handler_ms']} | {sp['in_process_ms']} | "
              f"{cpu['frontend_cpu_ms_per_request']} | {cpu['workers_cpu_ms_per_request']} | "
              f"{cpu['client_cpu_ms_per_request']} | {cpu['workers_busy_percent']} | "
              f"{run.get('in_process_cpu_ms_per_request', '')} | {run.get('in_process_cores_busy', '')} | "
              f"{run.get('cpu_ceiling_ratio', '')} |")
    for run in runs:
        if "endpoint_raw" in run:
            print(f"raw, {label(run)}: endpoint {run['endpoint_raw']['requests_per_s']} req/s, "
                  f"in-process {run['in_process_raw_batch1']['requests_per_s']} (ratio {run['raw_throughput_ratio']})")


def print_layouts(layouts: dict[str, Layout], thread_env: dict[str, str]) -> None:
    from hjcag.serve.threads import THREADS_ENV

    base = layouts["k8s/base"]
    print("Worker layouts the shipped files choose (workers: model-config.yaml minWorkers; threads: OMP_NUM_THREADS, "
          "the cap of each worker's torch threads: hjcag.serve.threads gives a small model one):")
    for name, layout in layouts.items():
        notes = layout.notes()
        print(f"  {name}: {layout.describe()}" + (f"  [{'; '.join(notes)}]" if notes else ""))
    threads = (f"{thread_env[THREADS_ENV]} thread(s) ({THREADS_ENV})" if THREADS_ENV in thread_env else
               f"the handler's choice of thread(s) under a cap of {thread_env.get('OMP_NUM_THREADS', 'unpinned')}")
    print(f"Measured: {base.workers} worker(s) x {threads} (in process: the same, without the server)")


def thread_setting(text: str) -> int | str:
    """--threads: 'auto' or a positive integer."""
    if text.strip() == "auto":
        return "auto"
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto' or a positive number of threads")
    return int(text)


def worker_thread_env(threads: int | str, layout: Layout) -> dict[str, str]:
    """The server's thread variables, which the in-process side reads too: auto: the shipped layout's
    OMP_NUM_THREADS as the cap and the handler's rule; N: N threads, explicitly (HJCAG_TORCH_THREADS)."""
    from hjcag.serve.threads import THREADS_ENV

    cap = str(layout.threads or 1 if threads == "auto" else threads)
    env = {"OMP_NUM_THREADS": cap, "MKL_NUM_THREADS": cap}
    return env if threads == "auto" else env | {THREADS_ENV: cap}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a trained run directory (default: train a small one)")
    p.add_argument("--targets", action="store_true",
                   help="issue 23's serving targets in one run: demo and paper widths, packed float16 bodies, the "
                        "shipped worker layout, no raw phase (unless those options are given), then a table of "
                        "target, measured, verdict")
    p.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    p.add_argument("--feature-requests", type=int, default=400)
    p.add_argument("--lone-requests", type=int, default=50,
                   help="feature requests sent one at a time, each followed by the same body in process")
    p.add_argument("--warmup", type=int, default=64, help="requests to warm the server (its JIT) before measuring")
    p.add_argument("--raw-requests", type=int, default=None,
                   help="default 32 (0 with --targets); 0 skips the raw phase (quicker sweeps)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="cap per phase (endpoint and in-process)")
    p.add_argument("--clip-seconds", type=float, default=2.0, help="length of each raw request's mp4")
    p.add_argument("--seq-len", type=int, default=30, help="L")
    p.add_argument("--audio-set", default="IS10_paraling", help="openSMILE set: IS10_paraling (1582), eGeMAPSv02")
    p.add_argument("--visual-frames", type=int, default=4,
                   help="frames decoded + embedded per clip (repeated to L); L is the paper's, slow on CPUs")
    p.add_argument("--widths", choices=["demo", "paper"], default="demo",
                   help="model widths (params profile); --targets measures both")
    p.add_argument("--body", choices=["json", "float16", "float32"], default=None,
                   help="feature arrays as JSON numbers, or packed: float16 / float32 bytes in base64 (default json; "
                        "float16 with --targets)")
    p.add_argument("--device", default="cpu", help="in-process predictor device (the server picks its own)")
    p.add_argument("--threads", type=thread_setting, default=None, metavar="N|auto",
                   help="torch CPU threads per worker, in the server's workers (OMP_NUM_THREADS and "
                        "HJCAG_TORCH_THREADS) and in process; auto: what the handler chooses for the model "
                        "(hjcag.serve.threads: one for a small model, else the cap) under k8s/base's OMP_NUM_THREADS. "
                        "Default 1 (steadier on a shared or busy CPU); with --targets, auto (what ships)")
    p.add_argument("--setting", action="append", dest="settings", metavar="NAME[:KEY=INT,...]",
                   help="a server setting to measure, repeatable: model-config.yaml keys (batchSize, maxBatchDelay, "
                        "minWorkers, ...) and TS_* variables over the shipped ones; default: 'shipped'")
    p.add_argument("--repeat", type=int, default=1, help="measure every setting this many times (noise)")
    p.add_argument("--context", type=int, default=0, metavar="K",
                   help="serve a conversation-context model reading K previous turns, and time lone requests with K "
                        "turn states against the same requests alone (target: at most 1.2x)")
    results_file.add_argument(p)
    args = p.parse_args(argv)
    if args.targets and args.run:
        p.error("--targets trains its own demo- and paper-width runs; --run serves one run")
    layouts = deployment_layouts()
    layout = layouts["k8s/base"]
    if args.threads is None:
        args.threads = "auto" if args.targets else 1
    if args.body is None:
        args.body = "float16" if args.targets else "json"
    if args.raw_requests is None:
        args.raw_requests = 0 if args.targets else 32
    record = results_file.start("serve_load")
    settings = [parse_setting(s) for s in args.settings or ["shipped"]]

    from huggingface_hub import constants

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no downloads: the offline fallbacks, as in the tests
    constants.HF_HUB_OFFLINE = os.environ["HF_HUB_OFFLINE"] == "1"

    import torch

    from hjcag.params import FeaturesConfig

    config = FeaturesConfig(audio_set=args.audio_set, seq_len=args.seq_len, visual_frames=args.visual_frames,
                            device="cpu", cache_dir=None, progress=False)
    dims = {"t": 384, "a": {"IS10_paraling": 1582, "eGeMAPSv02": 88, "ComParE_2016": 6373}[args.audio_set],
            "v": 2048}
    thread_env = worker_thread_env(args.threads, layout)
    print_layouts(layouts, thread_env)
    results: dict[str, Any] = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                           "python": platform.python_version()},
                               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                               "layouts": {name: vars(value) for name, value in layouts.items()}, "runs": []}
    env = {"HF_HUB_OFFLINE": os.environ["HF_HUB_OFFLINE"]} | thread_env
    torch.set_num_threads(int(thread_env["OMP_NUM_THREADS"]))
    with tempfile.TemporaryDirectory(prefix="hjcag-serve-load-") as tmp_name:
        for widths in ("demo", "paper") if args.targets else (args.widths,):
            results["runs"] += measure_widths(args, widths, settings, layout, Path(tmp_name), config, dims, env)

    print_tables(results["runs"], args.clients)
    if args.targets:
        results["targets"] = evaluate_targets(results["runs"])
        print(f"\nServing targets (issue 23): {args.body} bodies, {args.clients} clients"
              f"{'' if args.clients == 8 else ' (the targets are stated for 8 clients)'}; layout: workers x threads "
              f"(shipped: {layout.workers} x the handler's choice under a cap of {layout.threads} threads)\n"
              "| setting | layout | target | measured (median; runs) | verdict |\n|---|---|---|---|---|")
        for row in results["targets"]:
            values = ", ".join(f"{v:g}" for v in row["values"])
            shipped = "shipped" if row["shipped_layout"] else "not shipped"
            print(f"| {row['setting']} | {row['layout']} ({shipped}) | {row['target']} | {row['measured']} "
                  f"({values}) | {row['verdict']} |")
    threads = None if args.threads == "auto" else args.threads
    results_file.write(record, results, args.results, seeds=[0], threads=threads, profiles=["demo"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
