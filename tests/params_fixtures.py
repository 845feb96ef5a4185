"""A params.yaml for CLI tests of conversation context: the repository's file with the demo profile set to a tiny
context model. Import with `import params_fixtures` (tests/conftest.py puts this directory on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_CONTEXT_MODEL = {"seq_len": 4, "widths": {"t": 8, "a": 8, "v": 8}, "gate_width": 8, "classifier_hidden": 8,
                      "context": "gru", "context_window": 3}


def context_params(path: Path, train: dict[str, Any], **sections: dict[str, Any]) -> Path:
    """Write `path`: the demo profile with TINY_CONTEXT_MODEL, `train` and any other `sections` (e.g. gates)."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["profiles"]["demo"].update(model=dict(TINY_CONTEXT_MODEL), train=train, **sections)
    path.write_text(yaml.safe_dump(doc))
    return path
