"""The tiny demo archive the image tests serve, and the requests they send.

    python images/demo_archive.py --out model-store [--requests DIR]

The archive is the serving tests' (tests/serve_fixtures.py): HJCAG trained for real for 2 epochs on random
features whose widths are what the small serving extractors produce (MiniLM text, openSMILE eGeMAPS audio, a tiny
ResNet), so raw text / wav / mp4 requests run end to end without any downloaded weights. --requests writes the
request bodies: features.json (pre-extracted features) and raw.json (text + a 0.4 s mp4 with sound, base64).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import media_fixtures  # noqa: E402
import serve_fixtures as sf  # noqa: E402
from hjcag.device import torch_threads  # noqa: E402
from hjcag.serve.package import package_model  # noqa: E402


def write_archive(store: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp, torch_threads(1):
        run_dir = sf.train_tiny_run(Path(tmp) / "run")
        return package_model(run_dir, store, features_config=sf.features_config(), params_path=ROOT / "params.yaml")


def write_requests(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "features.json").write_text(json.dumps(sf.feature_request(0)), encoding="utf-8")
    mp4 = media_fixtures.write_video(out / "clip.mp4", duration_s=0.4, freq=500.0)
    raw = {"text": "Oh my God, you did it!", "video": sf.b64(mp4)}
    (out / "raw.json").write_text(json.dumps(raw), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model store to write hjcag.mar into")
    parser.add_argument("--requests", type=Path, help="also write the request bodies here")
    args = parser.parse_args()
    print(f"wrote {write_archive(args.out)}")
    if args.requests:
        write_requests(args.requests)
        print(f"wrote the requests to {args.requests}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
