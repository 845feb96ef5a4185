"""The configurations of the paper's Table 4 (ablations and modality subsets), in the paper's row order, and the
conversation-context rows this project adds (not in the paper; issue 10)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Table4Row:
    label: str                      # the row's name in the paper
    slug: str                       # directory / JSON key
    modalities: tuple[str, ...]     # () = every modality the features hold
    model_overrides: dict[str, Any] = field(default_factory=dict)


TABLE4: tuple[Table4Row, ...] = (
    Table4Row("HJCAG (Ours)", "full", ("t", "a", "v")),
    Table4Row("w/o bi-modal joint", "no_bimodal", ("t", "a", "v"), {"bimodal": False}),
    Table4Row("w/o tri-modal joint", "no_trimodal", ("t", "a", "v"), {"trimodal": False}),
    Table4Row("w/o multimodal gate", "no_gate", ("t", "a", "v"), {"gate": False}),
    Table4Row("Text", "t", ("t",)),
    Table4Row("Audio", "a", ("a",)),
    Table4Row("Visual", "v", ("v",)),
    Table4Row("Text + Audio", "ta", ("t", "a")),
    Table4Row("Text + Visual", "tv", ("t", "v")),
    Table4Row("Audio + Visual", "av", ("a", "v")),
)


def _context_row(kind: str, direction: str) -> Table4Row:
    label = f"HJCAG + context ({kind}, {direction}{': offline only' if direction == 'bidirectional' else ''})"
    slug = f"context_{kind}" + ("_bidirectional" if direction == "bidirectional" else "")
    return Table4Row(label, slug, (), {"context": kind, "context_direction": direction})


CONTEXT_ROWS: tuple[Table4Row, ...] = tuple(
    _context_row(kind, direction) for kind in ("gru", "transformer") for direction in ("causal", "bidirectional")
)
