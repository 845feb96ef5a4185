"""hjcag.cpus: the CPUs a process may use in a container (its cores within the CPU quota), and the stages that size
worker pools and torch's threads from them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cgroup_fixtures import cgroup, quota
from hjcag import cpus, stages
from hjcag.cpus import cgroup_cpu_limit, pool_size, usable_cpus, within_quota
from hjcag.device import torch_threads
from hjcag.features.extract import _workers
from hjcag.params import FeaturesConfig, load_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def eight_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process may run on 8 cores, whatever this machine has; no OMP_NUM_THREADS."""
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    """torch on 2 threads in the test (more than a 1-CPU quota), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_cpu_quota_is_read_from_cgroup_v2_and_v1(tmp_path: Path) -> None:
    v2 = cgroup(tmp_path / "v2", {"cpu.max": "150000 100000\n"})  # docker run --cpus 1.5: rounded up
    v1 = cgroup(tmp_path / "v1", {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(v2) == 2 and cgroup_cpu_limit(v1) == 1
    assert cgroup_cpu_limit(quota(tmp_path / "tiny", 0.1)) == 1  # a tenth of a CPU is still one thread's worth
    no_quota = ({"cpu.max": "max 100000\n"}, {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
                {"cpu.max": "garbage\n"}, {})
    for i, files in enumerate(no_quota):
        assert cgroup_cpu_limit(cgroup(tmp_path / f"none{i}", files)) is None


def test_usable_cpus_are_the_cores_within_the_quota(tmp_path: Path, eight_cores: None) -> None:
    assert usable_cpus(quota(tmp_path / "q2", 2)) == 2
    assert usable_cpus(quota(tmp_path / "q16", 16)) == 8  # a quota above the cores: the cores
    assert usable_cpus(tmp_path / "none") == 8


def test_worker_pools_default_to_the_usable_cpus_and_an_explicit_size_wins(tmp_path: Path, eight_cores: None,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert pool_size(0, most=4) == 4 and _workers(FeaturesConfig()) == 8  # no quota here: the 8 cores, capped
    monkeypatch.setattr(cpus, "CGROUP_ROOT", quota(tmp_path / "q1", 1))
    assert pool_size(0, most=4) == 1 and _workers(FeaturesConfig()) == 1  # features.workers: 0 in a 1-CPU pod
    assert pool_size(3, most=4) == 3 and _workers(FeaturesConfig(workers=12)) == 12


def test_torch_threads_stay_within_the_quota_unless_omp_num_threads_set_them(
        tmp_path: Path, eight_cores: None, two_torch_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "CGROUP_ROOT", quota(tmp_path / "q1", 1))
    with torch_threads(0):  # train.num_threads: 0 in a 1-CPU pod
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2  # restored
    with torch_threads(3):  # train.num_threads: 3 is an explicit choice
        assert torch.get_num_threads() == 3
    assert within_quota(2, {"OMP_NUM_THREADS": "2"}) == 2  # torch follows OMP_NUM_THREADS: so does the project
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with torch_threads(0):
        assert torch.get_num_threads() == 2


@pytest.mark.parametrize("stage", ["features", "finetune_text"])
def test_the_encoder_stages_run_torch_within_the_quota(stage: str, tmp_path: Path, eight_cores: None,
                                                       two_torch_threads: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`hjcag features` and `hjcag finetune-text` (and their KFP components) run the encoders on the quota's
    threads, not the node's cores."""
    from hjcag.data import manifest, media_root
    from hjcag.features import extract, text

    seen: list[int] = []
    monkeypatch.setattr(cpus, "CGROUP_ROOT", quota(tmp_path / "q1", 1))
    monkeypatch.setattr(manifest, "read_manifest_file", lambda path: None)
    monkeypatch.setattr(media_root, "resolve_data_root", lambda path, root: None)
    record = lambda *args, **kwargs: seen.append(torch.get_num_threads()) or tmp_path  # noqa: E731
    monkeypatch.setattr(extract, "extract_features", record)
    monkeypatch.setattr(text, "finetune_text_encoder", record)
    out = tmp_path / ("features.npz" if stage == "features" else "encoder")
    getattr(stages, stage)(tmp_path / "manifest.parquet", out, load_params(REPO / "params.yaml", "demo"))
    assert seen == [1] and torch.get_num_threads() == 2


@pytest.mark.parametrize(("quota_cpus", "rule_threads"), [(1, 3), (None, 1)])
def test_predict_in_process_uses_the_serving_workers_threads_and_restores_torchs(
        quota_cpus: int | None, rule_threads: int, tmp_path: Path, eight_cores: None, two_torch_threads: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`hjcag predict --model` runs the model on the threads a serving worker of it would use (hjcag.serve.threads,
    tested in test_serve_threads.py: the rule stands in here), within the CPU quota, and gives torch's back."""
    from types import SimpleNamespace

    from hjcag.client import local
    from hjcag.predict import inputs, run
    from hjcag.serve.threads import ThreadChoice

    def rule() -> ThreadChoice:
        seen.append(torch.get_num_threads())  # what the rule starts from: torch's threads within the quota
        torch.set_num_threads(rule_threads)
        return ThreadChoice(rule_threads, 8, None, "the rule's choice")

    seen: list[int] = []
    monkeypatch.setattr(cpus, "CGROUP_ROOT", quota(tmp_path / "q", quota_cpus) if quota_cpus else tmp_path / "none")
    model = SimpleNamespace(sent_turns=0, use_serving_threads=rule)
    monkeypatch.setattr(inputs, "read_dialogues", lambda *args: [])
    monkeypatch.setattr(local.LocalClient, "load", lambda *args: local.LocalClient(model))  # type: ignore[arg-type]
    monkeypatch.setattr(run, "answer_dialogues", lambda *args: seen.append(torch.get_num_threads()) or 0)
    stages.predict(tmp_path / "manifest.csv", tmp_path / "out", model=tmp_path / "hjcag.mar")
    assert seen == [quota_cpus or 2, rule_threads] and torch.get_num_threads() == 2
