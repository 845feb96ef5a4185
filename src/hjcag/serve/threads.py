"""How many torch intra-op threads a serving worker uses: one for a small model, the cap for a large one.

A TorchServe worker shares the container's cores with TorchServe's Java frontend, which spends about 3 ms of CPU per
request (HTTP, batching, the hand-over to the worker). At widths 64 (about 31 MFLOPs per request) a second torch
thread buys the forward pass little and takes the core the frontend needs: the endpoint served as many requests/s
with one thread as with two, and a lone request paid ~3 ms more. At the paper's widths (about 3.2 GFLOPs) the second
thread nearly doubles the worker's rate (benchmarks/README.md, serve_load.py). So the rule, counted, not timed:

* ``HJCAG_TORCH_THREADS`` set to a positive integer: that many threads (an operator's explicit choice);
* the model on a GPU: the cap (the CPU threads only feed the device; as before);
* else: 1 thread below :data:`SMALL_MODEL_FLOPS` floating-point operations per request, the cap from there on.

The cap is ``OMP_NUM_THREADS`` (the manifests pin it to the container's CPU limit), else torch's own default bounded
by the container's CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``): torch sizes its pool from the node's
cores, so ``docker run --cpus 2`` on a 32-core node would otherwise give a large model 32 threads on 2 CPUs.
FLOPs are counted by torch's FlopCounterMode over one forward pass of a zero request with every modality present,
so the choice is the same on every start and every machine (timing 1 against 2 threads at start-up would depend on
what else the node runs then, and would pick two threads at widths 64, where the forward alone is faster with two).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from hjcag.cpus import omp_num_threads, within_quota
from hjcag.errors import ConfigError

THREADS_ENV = "HJCAG_TORCH_THREADS"
AUTO = "auto"
# Between the demo widths (64: 31 MFLOPs per request at L = 30) and the paper's (3.2 GFLOPs): a model from here on
# works at least ~5 ms per request on one thread, more than the frontend's ~3 ms (widths 256: 254 MFLOPs, 8 ms).
SMALL_MODEL_FLOPS = 200e6
# torch's own thread count when this module was imported (the node's cores, or OMP_NUM_THREADS): the cap without
# OMP_NUM_THREADS, also after a choice of one thread has lowered torch.get_num_threads().
TORCH_DEFAULT_THREADS = max(1, torch.get_num_threads())


@dataclass(frozen=True)
class ThreadChoice:
    """The torch threads a worker uses, and why."""

    threads: int
    cap: int
    flops_per_request: int | None  # None: not counted (an explicit setting or a GPU decided)
    reason: str
    cap_source: str = ""  # where the cap came from (thread_cap); "" where a caller gave it

    def describe(self) -> str:
        source = f" ({self.cap_source})" if self.cap_source else ""
        return f"{self.threads} torch thread(s) of a cap of {self.cap}{source}: {self.reason}"


def thread_cap(environ: Mapping[str, str] = os.environ, cgroup_root: Path | None = None) -> tuple[int, str]:
    """The cap, and where it came from in words (ThreadChoice.describe() says it): OMP_NUM_THREADS when it is one
    positive integer, else torch's default (the node's cores) bounded by the container's CPU quota."""
    omp = omp_num_threads(environ)
    if omp is not None:
        return omp, f"OMP_NUM_THREADS={omp}"
    cap = within_quota(TORCH_DEFAULT_THREADS, environ, cgroup_root)
    if cap < TORCH_DEFAULT_THREADS:
        return cap, f"the container's CPU quota; the node has {TORCH_DEFAULT_THREADS} cores"
    return cap, "torch's default: the node's cores"


def explicit_threads(environ: Mapping[str, str] = os.environ) -> int | None:
    """HJCAG_TORCH_THREADS as a positive integer; None when unset or 'auto'."""
    raw = environ.get(THREADS_ENV, "").strip()
    if raw in ("", AUTO):
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{THREADS_ENV}={raw!r} is not a positive integer or '{AUTO}'; set it to the torch threads "
                          "each serving worker uses, or leave it unset (one thread for a small model, else "
                          "OMP_NUM_THREADS).")
    return int(raw)


def choose_threads(flops_per_request: int, cap: int, explicit: int | None = None, device: str = "cpu") -> ThreadChoice:
    """The rule of the module docstring, for a model of `flops_per_request` FLOPs."""
    if explicit is not None:
        return ThreadChoice(explicit, cap, None, f"{THREADS_ENV}={explicit}")
    if device != "cpu":
        return ThreadChoice(cap, cap, None, f"the model runs on {device}")
    mflops = f"{flops_per_request / 1e6:,.1f} MFLOPs per request"
    if flops_per_request < SMALL_MODEL_FLOPS:
        return ThreadChoice(1, cap, flops_per_request,
                            f"{mflops}, under {SMALL_MODEL_FLOPS / 1e6:.0f}: one thread leaves the other cores to "
                            "the server")
    return ThreadChoice(cap, cap, flops_per_request, f"{mflops}, at least {SMALL_MODEL_FLOPS / 1e6:.0f}")


def use_serving_threads(count_flops: Callable[[], int], device: str = "cpu",
                        environ: Mapping[str, str] = os.environ) -> ThreadChoice:
    """Choose the threads for a model (`count_flops`: its FLOPs per request, counted only when the rule needs them)
    and set torch's intra-op threads for this process to them (Predictor.use_serving_threads records the choice)."""
    explicit, (cap, source) = explicit_threads(environ), thread_cap(environ)
    flops = count_flops() if explicit is None and device == "cpu" else 0
    choice = dataclasses.replace(choose_threads(flops, cap, explicit, device), cap_source=source)
    torch.set_num_threads(choice.threads)
    return choice
