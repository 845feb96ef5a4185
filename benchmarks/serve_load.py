"""Serving load test: concurrent clients against a real TorchServe endpoint, beside the in-process predictor.

What it does, all on this machine and on loopback only:

1. trains a small HJCAG run on random features whose dims match the serving extractors (MiniLM text 384, openSMILE
   --audio-set, ResNet-50 2048; 1 epoch, 2 folds: the weights are irrelevant to speed), or takes --run DIR;
2. packages it (`hjcag.serve.package.package_model`) and starts `torchserve` with hjcag's config.properties and
   the archive's model-config.yaml (batchSize 8, maxBatchDelay 50 ms, 1 worker) on free loopback ports;
3. fires `--clients` threads (keep-alive HTTP, token auth) at POST /predictions/hjcag:
   * feature requests: distinct pre-extracted features (text (L, 384), audio (d_a,), visual (L, 2048)) as JSON;
   * raw requests: a sentence + a base64 mp4 clip (video, and audio from its sound track);
   each phase bounded by --feature-requests / --raw-requests and --max-seconds, and each preceded by one client
   alone on an eighth of the bodies (the per-request cost of serving, without queueing);
4. times the in-process predictor (the same archive, the same JSON bodies) one request at a time and in batches
   of 8: the ratio to the endpoint's requests/s is what serving costs (HTTP, the Java frontend, IPC to the
   worker, batching delay, JSON).

It prints p50 / p95 / p99 latency and requests/s per phase, and writes them to --json when given.
Offline, text falls back to MiniLM and ResNet-50 runs with random weights (the same speed as trained ones).

    python benchmarks/serve_load.py                                   # defaults: about 3-4 minutes on 2 CPU cores
    python benchmarks/serve_load.py --clients 16 --feature-requests 1000 --raw-requests 64 --json out/serve.json
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # media_fixtures: real mp4 clips written with PyAV

LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
SENTENCE = "oh my god you got the tickets I can't believe it that is so great we should go tonight"


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)} | {
        "mean_ms": round(float(ms.mean()), 1)}


# ----------------------------------------------------------------------------------------------- setup


def make_run(out: Path, dims: dict[str, int], seq_len: int, widths: str) -> Path:
    from hjcag.data.features_file import FeatureSet
    from hjcag.params import load_params
    from hjcag.train.run import train_and_evaluate

    rng = np.random.default_rng(0)
    n = 16 * len(LABELS)  # enough per class for grouped, stratified folds and their validation splits
    y = np.arange(n) % len(LABELS)
    features = {m: rng.normal(size=(n, seq_len, d)).astype(np.float32) for m, d in dims.items()}
    fs = FeatureSet(utterance_id=np.array([f"u{i}" for i in range(n)]), label=np.array(LABELS)[y],
                    group=np.array([f"dia{i // 8}" for i in range(n)]), features=features, label_names=LABELS)
    params = load_params(ROOT / "params.yaml", "demo")
    model: dict[str, Any] = {"seq_len": seq_len}
    if widths == "paper":
        model |= {"widths": {"t": 1024, "a": 1582, "v": 512}, "gate_width": 512, "classifier_hidden": 256}
    params = params.with_overrides(model=model, train={"epochs": 1, "folds": 2, "batch_size": 8, "device": "cpu"})
    train_and_evaluate(fs, params, ("t", "a", "v"), "hjcag", out, quiet=True)
    return out


def feature_bodies(count: int, dims: dict[str, int], seq_len: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    bodies = []
    for _ in range(count):
        request = {"features": {
            "text": np.round(rng.normal(size=(seq_len, dims["t"])), 4).tolist(),
            "audio": np.round(rng.normal(size=dims["a"]), 4).tolist(),
            "visual": np.round(np.abs(rng.normal(size=(seq_len, dims["v"]))), 4).tolist(),
        }}
        bodies.append(json.dumps(request).encode())
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
            "requests_per_s": round(len(latencies) / wall, 2), "statuses": statuses, **percentiles(latencies)}


def in_process(run: Callable[[Sequence[bytes]], Any], bodies: Sequence[bytes], batch: int,
               max_seconds: float) -> dict[str, Any]:
    """The predictor called directly on the same JSON bodies, `batch` at a time, until done or out of time."""
    latencies: list[float] = []
    done = 0
    started = time.perf_counter()
    for lo in range(0, len(bodies), batch):
        if time.perf_counter() - started > max_seconds:
            break
        t0 = time.perf_counter()
        run(bodies[lo : lo + batch])
        latencies.append(time.perf_counter() - t0)
        done += len(bodies[lo : lo + batch])
    wall = time.perf_counter() - started
    return {"requests": done, "batch": batch, "seconds": round(wall, 2), "requests_per_s": round(done / wall, 2),
            **{k.replace("_ms", "_ms_per_call"): v for k, v in percentiles(latencies).items()}}


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a trained run directory (default: train a small one)")
    p.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    p.add_argument("--feature-requests", type=int, default=400)
    p.add_argument("--raw-requests", type=int, default=32)
    p.add_argument("--max-seconds", type=float, default=60.0, help="cap per phase (endpoint and in-process)")
    p.add_argument("--clip-seconds", type=float, default=2.0, help="length of each raw request's mp4")
    p.add_argument("--seq-len", type=int, default=30, help="L")
    p.add_argument("--audio-set", default="IS10_paraling", help="openSMILE set: IS10_paraling (1582), eGeMAPSv02")
    p.add_argument("--visual-frames", type=int, default=4,
                   help="frames decoded + embedded per clip (repeated to L); L is the paper's, slow on CPUs")
    p.add_argument("--widths", choices=["demo", "paper"], default="demo", help="model widths (params profile)")
    p.add_argument("--device", default="cpu", help="in-process predictor device (the server picks its own)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads, in process and in the server's worker (OMP_NUM_THREADS); 0 = torch's "
                        "default. One thread is steadier on a shared or busy CPU")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    from huggingface_hub import constants

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no downloads: the offline fallbacks, as in the tests
    constants.HF_HUB_OFFLINE = os.environ["HF_HUB_OFFLINE"] == "1"

    import torch

    from hjcag.params import FeaturesConfig
    from hjcag.serve.local import LocalTorchServe
    from hjcag.serve.package import package_model, read_archive_record
    from hjcag.serve.predictor import Predictor

    config = FeaturesConfig(audio_set=args.audio_set, seq_len=args.seq_len, visual_frames=args.visual_frames,
                            device="cpu", cache_dir=None, progress=False)
    dims = {"t": 384, "a": {"IS10_paraling": 1582, "eGeMAPSv02": 88, "ComParE_2016": 6373}[args.audio_set],
            "v": 2048}
    with tempfile.TemporaryDirectory(prefix="hjcag-serve-load-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        run_dir = args.run or make_run(tmp / "run", dims, args.seq_len, args.widths)
        mar = package_model(run_dir, tmp / "store", features_config=config)
        with zipfile.ZipFile(mar) as z:
            z.extractall(tmp / "unpacked")
        print(f"run + archive in {time.perf_counter() - t0:.1f} s: {mar} ({read_archive_record(mar)['version']})")
        features = feature_bodies(args.feature_requests, dims, args.seq_len)
        raw = raw_bodies(args.raw_requests, tmp, args.clip_seconds)
        print(f"bodies: {len(features)} feature requests of ~{np.mean([len(b) for b in features]) / 1024:.0f} KiB, "
              f"{len(raw)} raw requests of ~{np.mean([len(b) for b in raw]) / 1024:.0f} KiB")

        results: dict[str, Any] = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                               "python": platform.python_version()},
                                   "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
        t0 = time.perf_counter()
        env = {"HF_HUB_OFFLINE": os.environ["HF_HUB_OFFLINE"]}
        if args.threads > 0:
            torch.set_num_threads(args.threads)
            env |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        with LocalTorchServe(mar.parent, env=env) as server:
            print(f"torchserve ready in {time.perf_counter() - t0:.1f} s on {server.inference_url}")
            host, port = "127.0.0.1", server.ports["inference"]
            assert server.token is not None
            load_phase(host, port, server.token, features[: args.clients] + raw[:2], args.clients, 120)  # warm-up
            for name, bodies in (("features", features), ("raw", raw)):
                # One client first: the per-request cost of serving, without queueing behind other clients.
                single = bodies[: max(1, len(bodies) // 8)]
                results[f"endpoint_{name}_1client"] = load_phase(host, port, server.token, single, 1,
                                                                 args.max_seconds)
                print(f"endpoint, {name}, 1 client:", results[f"endpoint_{name}_1client"], flush=True)
                results[f"endpoint_{name}"] = load_phase(host, port, server.token, bodies, args.clients,
                                                         args.max_seconds)
                print(f"endpoint, {name}, {args.clients} clients:", results[f"endpoint_{name}"], flush=True)

        predictor = Predictor.load(tmp / "unpacked", device=args.device)
        predictor.load_extractors()
        predictor.predict_many(features[:8] + raw[:2])  # warm-up
        for name, bodies in (("features", features), ("raw", raw)):
            for batch in (1, 8):
                key = f"in_process_{name}_batch{batch}"
                results[key] = in_process(predictor.predict_many, bodies, batch, args.max_seconds)
                print(f"in-process, {name}, batch {batch}:", results[key], flush=True)

    print("\n| phase | requests | req/s | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|---|")
    for name in ("features", "raw"):
        for key, label in ((f"endpoint_{name}_1client", "1 client"), (f"endpoint_{name}", f"{args.clients} clients")):
            e = results[key]
            print(f"| endpoint {name} ({label}) | {e['requests']} | {e['requests_per_s']} | "
                  f"{e['p50_ms']} | {e['p95_ms']} | {e['p99_ms']} |")
        for batch in (1, 8):
            r = results[f"in_process_{name}_batch{batch}"]
            print(f"| in-process {name}, batch {batch} | {r['requests']} | {r['requests_per_s']} | "
                  f"{r['p50_ms_per_call']} | {r['p95_ms_per_call']} | {r['p99_ms_per_call']} |")
    for name in ("features", "raw"):
        ratio = results[f"endpoint_{name}"]["requests_per_s"] / max(results[f"in_process_{name}_batch1"]
                                                                     ["requests_per_s"], 1e-9)
        results[f"ratio_{name}"] = round(ratio, 3)
        print(f"{name}: endpoint / in-process (batch 1) throughput = {ratio:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
