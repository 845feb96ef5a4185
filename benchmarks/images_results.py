"""`make images` and `make image-test` timed into a results file (README "Images, built and run" quotes it):

    PYTHONPATH=$PWD/src python benchmarks/images_results.py            # -> benchmarks/results/images-<UTC time>.json
    PYTHONPATH=$PWD/src python benchmarks/images_results.py --rebuild  # also: make images again after a code change

Run it as root (buildah) in a fresh clone, with another environment's python and this checkout's src on PYTHONPATH:
it times `make install` (this checkout's .venv), `make images` into an image store of its own that starts empty
(a new folder under /var/tmp unless --store names an empty one; removed afterwards unless --keep-store), then
`make image-test`. It records each image's size and build time (build/images/summary.txt, the local Debian base
included), the image test's steps (build/images/test-summary.txt), the store's size on disk and the machine's load
before each step. `--rebuild` then adds an untracked file under src/hjcag (removed again) and times `make images`
once more: what a code change costs with the layers cached.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import results_file

REPO = Path(__file__).resolve().parents[1]
SUMMARY = REPO / "build" / "images" / "summary.txt"
TEST_SUMMARY = REPO / "build" / "images" / "test-summary.txt"
MARKER = REPO / "src" / "hjcag" / "_images_rebuild_marker.py"
ROW = re.compile(r"^(\S+)\s+(\S+)\s+([\d.]+ [kMG]?B)\s+(\d+) s$")
TEST_STEP = re.compile(r"^\s*(\d+) s\s+(.+)$")


def timed(target: str, env: dict[str, str]) -> dict[str, float]:
    """`make TARGET` in this checkout: its wall time and the load average before it."""
    load = os.getloadavg()[0]
    start = time.monotonic()
    subprocess.run(["make", target], cwd=REPO, env=env, check=True)
    seconds = time.monotonic() - start
    print(f"make {target}: {seconds:.0f} s (load before: {load:.1f})", flush=True)
    return {"seconds": seconds, "load_before": load}


def build_rows() -> dict[str, dict[str, object]]:
    """{image: {tag, size, build_seconds}} from build/images/summary.txt."""
    rows = {}
    for line in SUMMARY.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line.strip())
        if match:
            name, tag, size, seconds = match.groups()
            rows[name] = {"tag": tag, "size": size, "build_seconds": int(seconds)}
    if not rows:
        raise SystemExit(f"no image rows in {SUMMARY}: did make images finish?")
    return rows


def test_steps() -> dict[str, int]:
    """{step: seconds} from build/images/test-summary.txt."""
    steps = {}
    for line in TEST_SUMMARY.read_text(encoding="utf-8").splitlines()[1:]:
        match = TEST_STEP.match(line)
        if match:
            steps[match.group(2)] = int(match.group(1))
    return steps


def store_bytes(store: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(store)], check=True, capture_output=True, text=True).stdout.split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=None, help="an empty folder for the image store")
    parser.add_argument("--keep-store", action="store_true", help="leave the image store in place afterwards")
    parser.add_argument("--rebuild", action="store_true", help="also time make images after a code change")
    results_file.add_argument(parser)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("buildah builds here as root: run this benchmark as root (or with a Docker daemon)")
    store = args.store or Path(tempfile.mkdtemp(prefix="hjcag-images-bench-", dir="/var/tmp"))
    if store.exists() and any(store.iterdir()):
        raise SystemExit(f"image store '{store}' is not empty: the benchmark times builds from an empty store")
    record = results_file.start("images")
    env = {**os.environ, "HJCAG_IMAGE_STORE": str(store)}
    env.pop("PYTHONPATH", None)  # make runs the checkout's own .venv
    installed = (REPO / ".venv" / ".installed").exists()
    figures: dict[str, object] = {"store": str(store), "install_was_there": installed}
    try:
        figures["make_install"] = timed("install", env)
        figures["make_images"] = timed("images", env)
        figures["images"] = build_rows()
        figures["store_bytes_after_images"] = store_bytes(store)
        figures["make_image_test"] = timed("image-test", env)
        figures["image_test_steps"] = test_steps()
        if args.rebuild:
            MARKER.write_text('"""Added by benchmarks/images_results.py --rebuild; removed when it ends."""\n')
            try:
                figures["make_images_after_code_change"] = timed("images", env)
                figures["images_after_code_change"] = build_rows()
            finally:
                MARKER.unlink(missing_ok=True)
        figures["store_bytes"] = store_bytes(store)
    finally:
        if not args.keep_store:
            # images/lib.sh's `bah`: buildah on the store HJCAG_IMAGE_STORE names (working containers, if any)
            subprocess.run(["bash", "-c", ". images/lib.sh && bah rm --all"], cwd=REPO, env=env, capture_output=True,
                           check=False)
            shutil.rmtree(store, ignore_errors=True)
    steps = ("make_install", "make_images", "make_image_test")
    figures["install_images_image_test_seconds"] = sum(figures[s]["seconds"] for s in steps)  # type: ignore[index]
    for name, row in figures["images"].items():  # type: ignore[union-attr]
        print(f"{name:12s} {row['size']:>9s} {row['build_seconds']:5d} s")
    print(f"image store: {figures['store_bytes'] / 1e9:.1f} GB")
    results_file.write(record, figures, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
