"""hjcag.serve.threads: a serving worker's torch threads, chosen from the model's FLOPs per request (counted, not
timed). tests/test_torchserve.py checks that TorchServe's worker applies the choice."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from cgroup_fixtures import cgroup
from hjcag.errors import ConfigError
from hjcag.model.factory import build_model
from hjcag.params import ModelConfig
from hjcag.serve import threads
from hjcag.serve.predictor import Predictor
from hjcag.serve.threads import (
    SMALL_MODEL_FLOPS,
    THREADS_ENV,
    TORCH_DEFAULT_THREADS,
    choose_threads,
    explicit_threads,
    thread_cap,
)

DIMS = {"t": 384, "a": 1582, "v": 2048}  # what the serving extractors give (MiniLM, openSMILE IS10, ResNet-50)
DEMO = {"widths": {"t": 64, "a": 64, "v": 64}, "gate_width": 64, "classifier_hidden": 64}  # params.yaml demo/meld
PAPER = {"widths": {"t": 1024, "a": 1582, "v": 512}, "gate_width": 512, "classifier_hidden": 256}  # params.yaml


def predictor(widths: dict[str, Any], seq_len: int = 30) -> Predictor:
    """An untrained HJCAG model of `widths` behind a Predictor (its FLOPs do not depend on the weights)."""
    config = dataclasses.replace(ModelConfig(), seq_len=seq_len, **widths)
    model = build_model("hjcag", DIMS, 7, config)
    doc = {"model": "hjcag", "label_names": [f"c{i}" for i in range(7)], "input_dims": DIMS, "seq_len": seq_len,
           "num_classes": 7, "model_config": dataclasses.asdict(config)}
    return Predictor(model, doc)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_one_thread_below_the_threshold_the_cap_from_it_on_and_an_explicit_setting_wins() -> None:
    small, large = int(SMALL_MODEL_FLOPS) - 1, int(SMALL_MODEL_FLOPS)
    assert choose_threads(small, cap=4).threads == 1
    assert choose_threads(large, cap=4).threads == 4
    assert choose_threads(small, cap=4, explicit=3).threads == 3
    assert choose_threads(large, cap=4, explicit=1).threads == 1
    assert choose_threads(small, cap=4, device="cuda").threads == 4  # on a GPU the CPU threads only feed it
    assert "MFLOPs per request" in choose_threads(small, cap=2).describe()


def test_the_cap_is_omp_num_threads_and_the_explicit_setting_is_checked(tmp_path: Path) -> None:
    assert thread_cap({"OMP_NUM_THREADS": "3"}) == (3, "OMP_NUM_THREADS=3")
    no_quota = tmp_path  # no cgroup files: this machine's own CPU quota, if any, does not enter
    assert thread_cap({"OMP_NUM_THREADS": "4,2"}, no_quota)[0] == thread_cap({}, no_quota)[0] == TORCH_DEFAULT_THREADS
    assert explicit_threads({}) is None and explicit_threads({THREADS_ENV: "auto"}) is None
    assert explicit_threads({THREADS_ENV: " 2 "}) == 2
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ConfigError, match=f"{THREADS_ENV}=.*positive integer or 'auto'"):
            explicit_threads({THREADS_ENV: bad})


def test_without_omp_num_threads_the_cap_is_the_containers_cpu_quota(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "TORCH_DEFAULT_THREADS", 8)  # an 8-core node, whatever this machine has
    v2 = cgroup(tmp_path / "v2", {"cpu.max": "150000 100000\n"})  # docker run --cpus 1.5
    v1 = cgroup(tmp_path / "v1", {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert thread_cap({}, v2) == (2, "the container's CPU quota; the node has 8 cores")  # the quota, not 8
    assert thread_cap({}, v1)[0] == 1
    wide = cgroup(tmp_path / "wide", {"cpu.max": "1600000 100000\n"})
    assert thread_cap({}, wide) == (8, "torch's default: the node's cores")  # a quota above the node's cores
    assert thread_cap({}, tmp_path / "none")[0] == 8
    assert thread_cap({"OMP_NUM_THREADS": "3"}, v1) == (3, "OMP_NUM_THREADS=3")  # an explicit setting wins


def test_demo_widths_get_one_thread_and_the_papers_widths_the_cap(restore_threads: None) -> None:
    """The two models issue 23's serving targets name, at the serving extractors' dims and L = 30 steps."""
    demo, paper = predictor(DEMO), predictor(PAPER)
    assert demo.flops_per_request() < SMALL_MODEL_FLOPS / 4  # ~31 MFLOPs: well clear of the threshold
    assert paper.flops_per_request() > SMALL_MODEL_FLOPS * 4  # ~3.2 GFLOPs
    environ = {"OMP_NUM_THREADS": "2"}
    assert demo.use_serving_threads(environ).threads == 1 and torch.get_num_threads() == 1
    assert demo.describe()["torch_threads"] == 1 and "one thread" in demo.describe()["threads_chosen"]
    assert paper.use_serving_threads(environ).threads == 2 and torch.get_num_threads() == 2
    assert paper.use_serving_threads(environ | {THREADS_ENV: "1"}).threads == 1 and torch.get_num_threads() == 1
    assert paper.describe()["threads_chosen"] == f"1 torch thread(s) of a cap of 2 (OMP_NUM_THREADS=2): {THREADS_ENV}=1"


def test_raw_extraction_runs_on_the_cap_when_the_model_got_one_thread(restore_threads: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    demo = predictor(DEMO)
    assert demo.use_serving_threads({"OMP_NUM_THREADS": "2"}).threads == 1
    seen: list[int] = []  # torch's threads while the (stand-in) extractors run
    monkeypatch.setattr(demo.parser, "check_raw", lambda m: None)
    monkeypatch.setattr(demo.raw_media, "extract", lambda *args: seen.append(torch.get_num_threads()))
    demo.preprocess([{"text": "a raw request"}])
    assert seen == [2] and torch.get_num_threads() == 1
