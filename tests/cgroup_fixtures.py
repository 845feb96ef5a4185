"""Stand-ins for /sys/fs/cgroup: the CPU quota a container would see (tests of hjcag.cpus and hjcag.serve.threads)."""

from __future__ import annotations

from pathlib import Path


def cgroup(root: Path, files: dict[str, str]) -> Path:
    """A stand-in for /sys/fs/cgroup holding `files` (relative path: content, as the kernel writes them)."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def quota(root: Path, cpus: float) -> Path:
    """A cgroup v2 folder whose cpu.max gives `cpus` CPUs (docker run --cpus `cpus`)."""
    return cgroup(root, {"cpu.max": f"{round(cpus * 100000)} 100000\n"})
