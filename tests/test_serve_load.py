"""benchmarks/serve_load.py's pure helpers: the worker layout read from the shipped files, the targets' verdicts and
the CPU ceiling of the throughput ratio (the benchmark itself needs TorchServe and minutes: not in the suite)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import serve_load  # noqa: E402

BASE = """
spec:
  template:
    spec:
      containers:
        - name: torchserve
          env:
            - {name: OMP_NUM_THREADS, value: "1"}
            - {name: HJCAG_MAX_WORKERS, value: "3"}
          resources: {limits: {cpu: "2", memory: 4Gi}}
"""
PATCH = """
spec:
  template:
    spec:
      containers:
        - name: torchserve
          env:
            - {name: HJCAG_MAX_WORKERS, value: "1"}
          resources: {limits: {cpu: 500m}}
"""
KSERVE = """
spec:
  predictor:
    pytorch:
      env: [{name: HJCAG_MAX_WORKERS, value: "2"}]
      resources: {limits: {cpu: "2"}}
"""


def write(root: Path, relative: str, text: str) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text(text, encoding="utf-8")


def test_layouts_are_read_from_model_config_and_the_manifests(tmp_path: Path) -> None:
    write(tmp_path, "src/hjcag/serve/torchserve/model-config.yaml", "minWorkers: 2\nmaxWorkers: 3\n")
    write(tmp_path, "k8s/base/deployment.yaml", BASE)
    write(tmp_path, "k8s/overlays/small/deployment-patch.yaml", PATCH)
    write(tmp_path, "k8s/overlays/kserve/inferenceservice.yaml", KSERVE)
    write(tmp_path, "k8s/overlays/kserve/model-storage/config/config.properties",
          'model_snapshot={"models":{"hjcag":{"1.0":{"minWorkers":1}}}}\n')
    layouts = serve_load.deployment_layouts(tmp_path)
    base, small, kserve = (layouts[k] for k in ("k8s/base", "k8s/overlays/small", "k8s/overlays/kserve"))
    assert (base.workers, base.threads, base.cpu_limit, base.max_workers) == (2, 1, 2.0, 3)
    assert base.notes() == [] and serve_load.shipped_layout(tmp_path) == base
    # The patch merges env by name and limits per key: threads stay the base's, the cap and the CPU change.
    assert (small.workers, small.threads, small.cpu_limit, small.max_workers) == (2, 1, 0.5, 1)
    assert small.notes() == ["2 x 1 threads exceed the 0.5-CPU limit"]
    assert (kserve.workers, kserve.threads, kserve.cpu_limit) == (1, None, 2.0)
    assert "OMP_NUM_THREADS is not set" in kserve.notes()[0]


def test_the_repositorys_layouts_have_a_base_and_every_overlay_that_patches_it() -> None:
    layouts = serve_load.deployment_layouts()
    patched = {f"k8s/overlays/{p.parent.name}" for p in (ROOT / "k8s/overlays").glob("*/deployment-patch.yaml")}
    assert {"k8s/base", "k8s/overlays/kserve"} | patched == set(layouts)
    assert all(layout.workers >= 1 for layout in layouts.values())


def run(widths: str, setting: str = "shipped", **figures: float) -> dict[str, object]:
    return {"setting": setting, "widths": widths, "layout": {"workers": 1, "threads": 2, "shipped": True},
            **figures}


@pytest.mark.parametrize(("added", "verdict"), [(4.9, "PASS"), (5.0, "PASS"), (5.1, "FAIL")])
def test_targets_take_the_median_of_the_repeats_and_their_bound(added: float, verdict: str) -> None:
    runs = [run("demo", lone_added_ms=added, throughput_ratio=0.8), run("demo", lone_added_ms=99, throughput_ratio=1),
            run("demo", lone_added_ms=added, throughput_ratio=0.95)]
    rows = {row["target"]: row for row in serve_load.evaluate_targets(runs)}
    demo_lone, demo_throughput, paper_lone, _ = (rows[t.text()] for t in serve_load.TARGETS)
    assert (demo_lone["measured"], demo_lone["verdict"]) == (added, verdict)
    assert (demo_throughput["measured"], demo_throughput["verdict"]) == (0.95, "PASS")
    assert paper_lone["verdict"] == "MISSING" and demo_lone["layout"] == "1 x 2" and demo_lone["shipped_layout"]


def test_the_cpu_ceiling_is_the_endpoints_rate_on_the_layouts_cores_over_the_in_process_rate() -> None:
    local = {"requests_per_s": 250.0, "cpu_ms_per_request": 4.0, "cores_busy": 1.0}
    figures = {"layout": {"workers": 1, "threads": 2}, "in_process_features_before": local,
               "in_process_features_after": local,
               "endpoint_features_cpu": {"frontend_cpu_ms_per_request": 2.5, "workers_cpu_ms_per_request": 2.5,
                                         "client_cpu_ms_per_request": 0.0}}
    # 2 cores / 5 ms = 400 req/s at most, over 250 in process.
    assert serve_load.cpu_ceiling(figures, cpus=16)["cpu_ceiling_ratio"] == 1.6
    assert serve_load.cpu_ceiling(figures, cpus=1)["cpu_ceiling_ratio"] == 0.8  # the machine has one core
    assert serve_load.cpu_ceiling({"layout": {}}) == {}


def test_the_context_run_it_serves_keeps_its_context_layer(tmp_path: Path) -> None:
    """`--context K` times requests carrying turn states: its small run on random features must keep the context
    layer in every fold (the warm start's validation check would drop it there, and the archive serve no states)."""
    run = serve_load.make_run(tmp_path / "run", {"t": 6, "a": 5, "v": 4}, seq_len=3, widths="demo", context=4)
    folds = json.loads((run / "metrics.json").read_text())["folds"]
    assert len(folds) == 2 and all(fold.get("context_kept", True) for fold in folds), folds
    config = json.loads((run / "model_config.json").read_text())
    assert config["model_config"]["context"] == "gru" and config["weights"]["context_dropped"] == [], config["weights"]
