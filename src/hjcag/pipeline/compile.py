"""Compile the training pipeline to YAML: ``python -m hjcag.pipeline.compile --out pipelines/hjcag_training.yaml``.

The compiled YAML is committed; tests/test_kfp_pipeline.py fails when it differs from a fresh compile.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_OUT = Path("pipelines/hjcag_training.yaml")


def compile_pipeline(out: str | Path = DEFAULT_OUT) -> Path:
    from kfp import compiler

    from hjcag.pipeline.training import training_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, str(out))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hjcag.pipeline.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"YAML to write (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    print(f"compiled the KFP pipeline to {compile_pipeline(args.out)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
