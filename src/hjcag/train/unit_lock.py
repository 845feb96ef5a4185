"""One training process per fold unit: two `hjcag train` into the same --out must not write one fold's checkpoint.

Two runs of the same settings into one run directory are a resume and a duplicate: both would train fold_0 and
overwrite each other's checkpoint mid-write (the second one failed with a missing '.tmp', or left a checkpoint
of the other's epoch). Each unit (fold_K, or fold_K_seedS) is trained under an exclusive, non-blocking ``flock``;
the second process stops at once with a clear error and the first is untouched. Different folds of one directory
may still train side by side (``hjcag train --folds 0`` and ``--folds 1``).

The lock files live in the system's temp folder, keyed by the unit's resolved path, not in the run directory: its
contents are DVC outputs and stay byte-identical between machines. The kernel releases a lock when its process
dies (even by kill -9), so a stale lock never blocks a resume. Locks on one machine only: runs on two machines
that share the folder over the network are not covered.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hjcag.errors import HjcagError

LOCK_DIR = "hjcag-locks"  # under the system's temp folder: locks of this machine only


def lock_path(unit: Path) -> Path:
    """Where the lock of `unit` lives: <temp>/hjcag-locks/<sha256 of its resolved path>.lock."""
    key = hashlib.sha256(str(Path(unit).resolve()).encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / LOCK_DIR / f"{key}.lock"


@contextlib.contextmanager
def exclusive_lock(path: Path, create: bool = True) -> Iterator[int]:
    """Hold an exclusive ``flock`` on `path` while the body runs (the kernel drops it if the process dies), giving
    the file's descriptor; BlockingIOError at once when another process holds it, FileNotFoundError when `path`
    does not exist and `create` is False."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield fd
    finally:
        os.close(fd)  # releases the lock; the file stays


@contextlib.contextmanager
def training_unit(unit: Path) -> Iterator[None]:
    """Hold `unit`'s lock while its body runs; HjcagError at once if another process holds it."""
    path = lock_path(unit)
    with contextlib.ExitStack() as held:
        try:
            fd = held.enter_context(exclusive_lock(path))
        except BlockingIOError:
            try:
                holder = path.read_text(errors="replace").strip()[:32] or "?"
            except OSError:
                holder = "?"
            raise HjcagError(
                f"{unit.name} of '{unit.parent}' is being trained by another process (pid {holder}). Two trainings "
                "of one fold would overwrite each other's checkpoint: wait for it to finish (then re-run to resume "
                "the rest), or train into another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
