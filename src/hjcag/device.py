"""Pick the torch device and CPU thread count from ``TrainConfig.device`` / ``TrainConfig.num_threads``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from hjcag.cpus import within_quota
from hjcag.errors import ConfigError
from hjcag.params import DEVICES

log = logging.getLogger(__name__)

DEVICE_CHOICES = DEVICES


@contextmanager
def torch_threads(num_threads: int = 0) -> Iterator[None]:
    """Use `num_threads` intra-op CPU threads inside the block, then restore torch's setting (also where the block
    changed it). 0: torch's setting, lowered to the container's CPU quota when OMP_NUM_THREADS does not set it
    (:func:`hjcag.cpus.within_quota`).

    Small models train much faster on one thread when the CPU is shared: idle OpenMP workers spin.
    """
    if num_threads < 0:
        raise ConfigError(f"train.num_threads must be >= 0 (0 = torch's default), got {num_threads}.")
    before = torch.get_num_threads()
    threads = num_threads or within_quota(before)
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def resolve_device(spec: str = "auto", num_threads: int = 0) -> torch.device:
    """'auto' -> CUDA when a GPU is visible, else CPU; 'cpu'; 'cuda' or 'cuda:N' (error if no GPU).

    ``num_threads > 0`` sets torch's intra-op CPU threads for the process (0 keeps torch's default); use
    :func:`torch_threads` to set them for a block only.
    """
    spec = str(spec).strip().lower()
    if spec not in DEVICE_CHOICES and not spec.startswith("cuda:"):
        raise ConfigError(f"train.device '{spec}' is not supported; use one of {list(DEVICE_CHOICES)} (or cuda:N).")
    if num_threads < 0:
        raise ConfigError(f"train.num_threads must be >= 0 (0 = torch's default), got {num_threads}.")
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    if spec == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda" if spec == "auto" else spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device '{spec}' asks for GPU {device.index} but only {torch.cuda.device_count()} are visible."
            )
        return device
    if spec == "auto":
        return torch.device("cpu")
    raise ConfigError(
        f"train.device is '{spec}' but torch sees no CUDA GPU (torch {torch.__version__}). "
        "Set train.device to 'auto' or 'cpu' in params.yaml, or install a CUDA build of torch."
    )
