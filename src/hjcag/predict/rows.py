"""`hjcag predict`'s output: one row per utterance, appended to a JSON Lines file as answers come (so a re-run
resumes), then the CSV and the terminal table from it.

A row: ``utterance_id``, ``dialogue``, ``turn`` (0-based position in its dialogue), ``speaker``, ``label`` (the
prediction) and its ``probability``, ``probabilities`` (per label), ``gate`` ({"text", "audio", "visual"}: 0 for a
modality the turn lacks or the model does not use), ``context_turns`` (how many previous turns the answer read),
``true_label`` (the input's own label, when it has one), ``model`` and ``version``; in the JSONL also ``state``
and ``context_window`` (a context model's turn state and how many a request may send: what a resumed dialogue
sends for it).
"""

from __future__ import annotations

import csv
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hjcag.client.conversation import Answer
from hjcag.errors import HjcagError
from hjcag.params import MODALITIES, MODALITY_NAMES
from hjcag.predict.inputs import Utterance

GATES = tuple(MODALITY_NAMES[m] for m in MODALITIES)  # text, audio, visual
DEFAULT_NAME = "predictions.jsonl"


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """(JSONL, CSV): ``--out FILE.jsonl`` -> FILE.jsonl and FILE.csv beside it; ``--out DIR`` ->
    DIR/predictions.jsonl and DIR/predictions.csv."""
    out = Path(out)
    jsonl = out if out.suffix.lower() == ".jsonl" else out / DEFAULT_NAME
    return jsonl, jsonl.with_suffix(".csv")


def make_row(utterance: Utterance, position: int, answer: Answer) -> dict[str, Any]:
    label = str(answer["label"])
    gate = answer.get("gate") or {}
    row: dict[str, Any] = {
        "utterance_id": utterance.utterance_id,
        "dialogue": utterance.dialogue,
        "turn": position,
        "speaker": utterance.speaker,
        "label": label,
        "probability": float(answer["probabilities"][label]),
        "probabilities": {str(k): float(v) for k, v in answer["probabilities"].items()},
        "gate": {name: float(gate.get(name, 0.0)) for name in GATES},
        "context_turns": int(answer.get("context_turns", 0)),
        "true_label": utterance.true_label,
        "model": answer.get("model"),
        "version": answer.get("version"),
    }
    if answer.get("state") is not None:
        row["state"] = answer["state"]
        row["context_window"] = answer.get("context_window")
    return row


class RowsFile:
    """The JSON Lines output, appended row by row from several threads; reading it back (:meth:`resume`) keeps
    every complete row and drops a half-written last line (an interrupted run's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._model: tuple[Any, Any] | None = None

    def resume(self) -> dict[str, dict[str, Any]]:
        """The rows already written, by utterance id (a truncated last line is cut off the file)."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        good = 0  # bytes of complete lines
        rows = []
        for number, line in enumerate(data.splitlines(keepends=True), start=1):
            if not line.endswith(b"\n"):
                break  # the last line, half written by an interrupted run: answered again
            good += len(line)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict) or "utterance_id" not in row or "probabilities" not in row:
                raise HjcagError(f"'{self.path}' line {number} is not a row of `hjcag predict`; pass another --out "
                                 "(or remove the file to start over).")
            rows.append(row)
        if good < len(data):
            with self.path.open("r+b") as f:
                f.truncate(good)
        self.rows = rows
        if rows:
            self._model = (rows[0].get("model"), rows[0].get("version"))
        return {str(r["utterance_id"]): r for r in rows}

    def append(self, row: dict[str, Any]) -> None:
        with self._lock:
            model = (row.get("model"), row.get("version"))
            if self._model is None:
                self._model = model
            elif model != self._model:
                raise HjcagError(f"'{self.path}' holds answers of model {self._model[0]} version {self._model[1]}; "
                                 f"this one is {model[0]} version {model[1]}. Pass another --out.")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.rows.append(row)


def in_input_order(rows: Iterable[Mapping[str, Any]], dialogues: Sequence[Sequence[Utterance]]) -> list[dict]:
    """`rows` ordered as the input's dialogues and turns (rows of utterances not in the input last)."""
    rank = {u.utterance_id: i for i, u in enumerate(u for d in dialogues for u in d)}
    return sorted((dict(r) for r in rows), key=lambda r: rank.get(str(r["utterance_id"]), len(rank)))


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """The rows flat: probabilities as ``p_<label>``, gate weights as ``gate_<modality>``; no state."""
    labels: list[str] = []
    for row in rows:
        labels += [k for k in row["probabilities"] if k not in labels]
    header = ["utterance_id", "dialogue", "turn", "speaker", "label", "probability", *(f"p_{k}" for k in labels),
              *(f"gate_{g}" for g in GATES), "context_turns", "true_label", "model", "version"]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            writer.writerow([r["utterance_id"], r["dialogue"], r["turn"], r.get("speaker") or "", r["label"],
                             f"{r['probability']:.6f}", *(f"{r['probabilities'].get(k, 0.0):.6f}" for k in labels),
                             *(f"{r['gate'].get(g, 0.0):.6f}" for g in GATES), r["context_turns"],
                             r.get("true_label") or "", r.get("model") or "", r.get("version") or ""])
    os.replace(tmp, path)
    return path


def table(rows: Sequence[Mapping[str, Any]], limit: int = 20) -> str:
    """A short text table of the first `limit` rows, and how many labels of each kind."""
    head = f"{'dialogue':<14} {'turn':>4}  {'speaker':<12} {'label':<10} {'p':>5}  " + "  ".join(
        f"{g[:5]:>5}" for g in GATES) + "  ctx"
    lines = [head]
    for r in rows[:limit]:
        gates = "  ".join(f"{r['gate'].get(g, 0.0):5.2f}" for g in GATES)
        lines.append(f"{str(r['dialogue'])[:14]:<14} {r['turn']:>4}  {str(r.get('speaker') or '-')[:12]:<12} "
                     f"{str(r['label'])[:10]:<10} {r['probability']:5.2f}  {gates}  {r['context_turns']:>3}")
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more rows")
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["label"])] = counts.get(str(r["label"]), 0) + 1
    lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)
