"""IEMOCAP as shipped (IEMOCAP_full_release) -> normalised manifest rows.

Per session: SessionN/dialog/EmoEvaluation/<dialog>.txt (turn lines `[start - end]\tTURN\tEMOTION\t[V, A, D]`
among per-evaluator lines), dialog/transcriptions/<dialog>.txt (`TURN [start-end]: text`),
sentences/wav/<dialog>/<turn>.wav (the turn, already cut) and dialog/avi/DivX/<dialog>.avi (the whole dialog).

video_path is the dialog's avi and start_s/end_s the turn's span in it; audio_path is the turn's own wav, used
whole (see `hjcag.data.manifest.media_span`). Group = dialog, session = SessionN for leave-one-session-out folds.
Only the paper's six classes are kept; turns with other labels (xxx, oth, sur, fea, dis) are dropped and counted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hjcag.data.manifest import SOURCE_KEY, AdapterResult
from hjcag.errors import DataError

IEMOCAP_LABELS: tuple[str, ...] = ("hap", "sad", "neu", "ang", "exc", "fru")

_NUM = r"[0-9]+(?:\.[0-9]*)?"
_EMO_LINE = re.compile(rf"^\[\s*({_NUM})\s*-\s*({_NUM})\s*\]\s+(\S+)\s+(\S+)\s+\[[^\]]*\]\s*$")
_TRANSCRIPT_LINE = re.compile(rf"^(\S+)\s+\[\s*({_NUM})\s*-\s*({_NUM})\s*\]:\s?(.*)$")
_SESSION_DIR = re.compile(r"^Session(\d+)$")
EMO_FORMAT = "[START - END]<TAB>TURN_NAME<TAB>EMOTION<TAB>[V, A, D]"


def find_sessions(source: str | Path) -> list[Path]:
    """SessionN folders: the source itself, its children, or its grandchildren (IEMOCAP_full_release/...)."""
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"IEMOCAP source '{source}' is not a directory. Pass the folder holding Session1..5.")
    if _SESSION_DIR.match(source.name):
        return [source]
    for pattern in ("Session*", "*/Session*"):
        sessions = [p for p in source.glob(pattern) if p.is_dir() and _SESSION_DIR.match(p.name)]
        if sessions:
            return sorted(sessions, key=lambda p: int(_SESSION_DIR.match(p.name).group(1)))  # type: ignore[union-attr]
    raise DataError(
        f"no Session1..Session5 folder under '{source}'. Pass --source to the unpacked IEMOCAP_full_release folder."
    )


def parse_emo_evaluation(path: str | Path) -> list[tuple[int, float, float, str, str]]:
    """(line, start, end, turn, emotion) for each turn line. Other lines (header, evaluator lines) are skipped;
    a line that starts like a turn line but does not parse raises DataError with the file and line number."""
    path = Path(path)
    turns = []
    for n, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("["):
            continue
        m = _EMO_LINE.match(line)
        if m is None:
            raise DataError(
                f"{path}:{n}: malformed EmoEvaluation line {raw!r}; expected {EMO_FORMAT}. Restore the line from the "
                "original IEMOCAP release or delete it."
            )
        turns.append((n, float(m.group(1)), float(m.group(2)), m.group(3), m.group(4).strip().lower()))
    return turns


def parse_transcription(path: str | Path) -> dict[str, str]:
    """turn name -> text. Lines that are not `TURN [start-end]: text` are ignored (IEMOCAP has a few)."""
    texts: dict[str, str] = {}
    path = Path(path)
    if not path.is_file():
        return texts
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _TRANSCRIPT_LINE.match(raw.strip())
        if m is not None:
            texts.setdefault(m.group(1), m.group(4).strip())
    return texts


def speaker_of(turn: str) -> str | None:
    """Ses01F_impro01_M012 -> 'Ses01M' (session + gender of the speaking actor: one actor per session/gender)."""
    head, _, tail = turn.rpartition("_")
    if len(head) < 5 or not tail or tail[0] not in "FM":
        return None
    return head[:5] + tail[0]


def read_iemocap(
    source: str | Path, modalities: Sequence[str], labels: Sequence[str] = IEMOCAP_LABELS
) -> AdapterResult:
    """Manifest rows for every turn labelled with one of `labels`; the rest go to `dropped`. Media paths are set
    whether or not the files exist; prepare checks them against the chosen modalities."""
    keep = set(labels)
    rows: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    warnings: list[str] = []
    sources: list[str] = []
    rows_read = 0
    for session_dir in find_sessions(source):
        session = session_dir.name
        emo_dir = session_dir / "dialog" / "EmoEvaluation"
        emo_files = sorted(p for p in emo_dir.glob("*.txt") if not p.name.startswith("._")) if emo_dir.is_dir() else []
        if not emo_files:
            warnings.append(f"{session}: no EmoEvaluation/*.txt under {emo_dir}; session skipped.")
            continue
        session_dir = Path(os.path.abspath(session_dir))  # lexical, as the data root is compared (media_root)
        for emo_path in emo_files:
            dialog = emo_path.stem
            sources.append(str(emo_path))
            tr_path = session_dir / "dialog" / "transcriptions" / f"{dialog}.txt"
            texts = parse_transcription(tr_path)
            if not tr_path.is_file() and "t" in modalities:
                warnings.append(f"{session}/{dialog}: transcription file {tr_path} missing; texts left empty.")
            avi = str(session_dir / "dialog" / "avi" / "DivX" / f"{dialog}.avi")
            for line, start, end, turn, emotion in parse_emo_evaluation(emo_path):
                rows_read += 1
                where = {"file": str(emo_path), "line": line}
                if emotion not in keep:
                    dropped.append({"utterance_id": turn, **where, "reason": "excluded_label", "label": emotion,
                                    "detail": f"label '{emotion}' is not one of {', '.join(labels)}"})
                    continue
                rows.append({
                    "utterance_id": turn,
                    "dialogue_id": dialog,
                    "session": session,
                    "speaker": speaker_of(turn),
                    "text": texts.get(turn, ""),
                    "label": emotion,
                    "audio_path": str(session_dir / "sentences" / "wav" / dialog / f"{turn}.wav"),
                    "video_path": avi,
                    "start_s": start,
                    "end_s": end,
                    "turn": start,  # the turn's start time in the dialog orders the conversation
                    "split": None,
                    "dataset": "iemocap",
                    SOURCE_KEY: where,
                })
    return AdapterResult(rows=rows, rows_read=rows_read, dropped=dropped, issues=[], warnings=warnings,
                         sources=sources)
