"""The CPUs this process may use, as a container sees them (no torch here: data stages import it too).

torch sizes its thread pool from the node's cores (or ``OMP_NUM_THREADS``), and ``os.cpu_count()`` counts them too;
neither sees a container's CPU quota. A pod limited to 2 CPUs on a 32-core node (``docker run --cpus 2``, a k8s
``limits.cpu``) would run 32 torch threads, or 8 decode workers, on 2 CPUs' time and be throttled. So where the
project picks a count itself, it reads the quota: :func:`usable_cpus` sizes worker pools, :func:`within_quota` bounds
torch's threads when nobody set them (hjcag.device.torch_threads, hjcag.serve.threads).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path | None = None) -> int | None:
    """The container's CPU quota in whole CPUs, rounded up (cgroup v2 ``cpu.max``, else v1's CFS quota and period),
    read under `root` (default :data:`CGROUP_ROOT`); None without a quota or where neither file can be read."""
    root = root or CGROUP_ROOT
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu/cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        cpus = int(quota) / int(period)
    except (ValueError, ZeroDivisionError):  # v2's "max": no quota (a period of 0: unreadable)
        return None
    return max(1, math.ceil(cpus)) if cpus > 0 else None  # v1's -1: no quota


def usable_cpus(cgroup_root: Path | None = None) -> int:
    """The CPUs this process may use: the cores it may run on (its affinity mask, else ``os.cpu_count()``), bounded
    by the container's CPU quota. The default size of the project's worker pools (decoding, openSMILE, probes)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this OS
        cores = os.cpu_count() or 1
    return max(1, min(cores, cgroup_cpu_limit(cgroup_root) or cores))


def pool_size(configured: int, most: int) -> int:
    """A worker pool's size: `configured` when positive (a params field's explicit value), else the usable CPUs, at
    most `most`."""
    return configured if configured > 0 else min(most, usable_cpus())


def omp_num_threads(environ: Mapping[str, str] = os.environ) -> int | None:
    """OMP_NUM_THREADS when it is one positive integer (torch's default then), else None."""
    raw = environ.get("OMP_NUM_THREADS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def within_quota(threads: int, environ: Mapping[str, str] = os.environ, cgroup_root: Path | None = None) -> int:
    """`threads` (torch's count), lowered to the container's CPU quota unless OMP_NUM_THREADS is set (an operator's
    choice, which torch already follows)."""
    if omp_num_threads(environ) is not None:
        return threads
    return min(threads, cgroup_cpu_limit(cgroup_root) or threads)
