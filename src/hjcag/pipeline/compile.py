"""Compile the training pipeline to YAML: ``python -m hjcag.pipeline.compile --out pipelines/hjcag_training.yaml``,
and each stage's component to ``components/<stage>.yaml`` (``--components-dir``).

Both are committed; tests/test_kfp_pipeline.py fails when they differ from a fresh compile.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_OUT = Path("pipelines/hjcag_training.yaml")
TUNING_OUT = Path("pipelines/hjcag_tuning.yaml")
DEFAULT_COMPONENTS_DIR = Path("components")


def compile_pipeline(out: str | Path = DEFAULT_OUT) -> Path:
    from kfp import compiler

    from hjcag.pipeline.training import training_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, str(out))
    return out


def compile_tuning_pipeline(out: str | Path = TUNING_OUT) -> Path:
    """The optional tuning pipeline (:mod:`hjcag.pipeline.tuning`), whose outputs feed the training pipeline."""
    from kfp import compiler

    from hjcag.pipeline.tuning import tuning_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(tuning_pipeline, str(out))
    return out


def compile_components(out_dir: str | Path = DEFAULT_COMPONENTS_DIR) -> list[Path]:
    """One component spec per stage: ``<out_dir>/<stage>.yaml``."""
    from kfp import compiler

    from hjcag.pipeline.components import ALL

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for component in ALL:
        path = out_dir / f"{component.name.replace('-', '_')}.yaml"
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hjcag.pipeline.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"YAML to write (default: {DEFAULT_OUT})")
    parser.add_argument("--components-dir", default=str(DEFAULT_COMPONENTS_DIR),
                        help=f"where each component's spec goes (default: {DEFAULT_COMPONENTS_DIR}/)")
    args = parser.parse_args(argv)
    print(f"compiled the KFP pipeline to {compile_pipeline(args.out)}")
    print(f"compiled the KFP tuning pipeline to {compile_tuning_pipeline(Path(args.out).with_name(TUNING_OUT.name))}")
    specs = compile_components(args.components_dir)
    print(f"compiled {len(specs)} component specs to {args.components_dir}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
