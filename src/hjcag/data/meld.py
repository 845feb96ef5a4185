"""MELD as downloaded -> normalised manifest rows.

Layout: {train,dev,test}_sent_emo.csv with columns `Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID,
Utterance_ID, Season, Episode, StartTime, EndTime`, clips `dia{D}_utt{U}.mp4` under train_splits/,
dev_splits_complete/, output_repeated_splits_test/. The files may sit directly in the source folder or one or two
folders below it (MELD.Raw/train/..., as the archives unpack).

The CSVs mix encodings: mostly ASCII/UTF-8, with cp1252 bytes for typographic quotes (0x92 = ’), and copies of
them that went through the wrong decoder carry U+0092 or 'â€™' mojibake. `decode_csv_bytes` + `repair_text` turn
all of these into the intended characters.

The audio of a MELD utterance is the clip's own track, so audio_path and video_path are the same .mp4, and the
span is null (clips are already cut to the utterance).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hjcag.data.manifest import SOURCE_KEY, AdapterResult
from hjcag.errors import DataError

MELD_LABELS: tuple[str, ...] = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
CSV_NAMES: dict[str, str] = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
CLIP_DIRS: dict[str, str] = {
    "train": "train_splits",
    "dev": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}
CSV_COLUMNS: tuple[str, ...] = (
    "Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
    "Season", "Episode", "StartTime", "EndTime",
)
REQUIRED_CSV_COLUMNS: tuple[str, ...] = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")

# ------------------------------------------------------------------------------------------ text repair


def _byte_to_char(b: int) -> str:
    """cp1252 for the byte; the 5 bytes cp1252 leaves undefined map to the same code point (latin-1)."""
    try:
        return bytes([b]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(b)


_CHAR_TO_BYTE = {_byte_to_char(b): b for b in range(0x80, 0x100)}


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return _byte_to_char(exc.object[exc.start]), exc.start + 1


codecs.register_error("hjcag-cp1252-fallback", _cp1252_fallback)


def decode_csv_bytes(data: bytes) -> str:
    """UTF-8 where the bytes are valid UTF-8, cp1252 for each byte that is not (MELD's 0x92 apostrophes)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    return data.decode("utf-8", errors="hjcag-cp1252-fallback")


_CONT = "".join(re.escape(_byte_to_char(b)) for b in range(0x80, 0xC0))
_LEAD2 = "".join(re.escape(_byte_to_char(b)) for b in range(0xC2, 0xE0))
_LEAD3 = "".join(re.escape(_byte_to_char(b)) for b in range(0xE0, 0xF0))
_LEAD4 = "".join(re.escape(_byte_to_char(b)) for b in range(0xF0, 0xF5))
# UTF-8 byte sequences that were decoded as cp1252: 'â€™' is ’ (E2 80 99)
_MOJIBAKE = re.compile(f"[{_LEAD2}][{_CONT}]|[{_LEAD3}][{_CONT}]{{2}}|[{_LEAD4}][{_CONT}]{{3}}")
_C1 = re.compile("[\u0080-\u009f]")


def _unmojibake(match: re.Match[str]) -> str:
    raw = bytes(_CHAR_TO_BYTE[c] for c in match.group(0))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return match.group(0)


def _c1_to_cp1252(match: re.Match[str]) -> str:
    ch = _byte_to_char(ord(match.group(0)))
    return "" if _C1.fullmatch(ch) else ch  # undefined in cp1252: an invisible control char, drop it


def repair_text(text: str) -> str:
    """Fix cp1252 damage: 'â€™' mojibake -> ’, C1 controls such as U+0092 -> ’; strip surrounding space."""
    text = _MOJIBAKE.sub(_unmojibake, text)
    text = _C1.sub(_c1_to_cp1252, text)
    return text.strip()


# ------------------------------------------------------------------------------------------------- CSV


@dataclass(frozen=True)
class MeldRecord:
    """One CSV row, text repaired, ids normalised ('3.0' -> '3'), emotion lower-cased."""

    line: int  # line number of the row's first line in the CSV (1 = header)
    utterance: str
    speaker: str
    emotion: str
    sentiment: str
    dialogue_id: str
    utterance_id: str
    season: str
    episode: str
    start_time: str
    end_time: str

    @property
    def clip_name(self) -> str:
        return f"dia{self.dialogue_id}_utt{self.utterance_id}.mp4"


def meld_turn(utterance_id: str) -> float | None:
    """The utterance's position in its dialogue: MELD's Utterance_ID counts the turns from 0."""
    try:
        return float(utterance_id)
    except ValueError:
        return None


def _norm_id(value: str, column: str, where: str) -> str:
    v = value.strip()
    if not v:
        raise DataError(f"{where}: empty {column}. Every MELD row needs Dialogue_ID and Utterance_ID; fix the row.")
    try:
        f = float(v)
    except ValueError:
        return v
    return str(int(f)) if f.is_integer() else v


def read_meld_csv(path: str | Path) -> list[MeldRecord]:
    """All rows of one MELD *_sent_emo.csv. Raises DataError naming the file/line for unreadable input."""
    path = Path(path)
    try:
        text = decode_csv_bytes(path.read_bytes())
    except OSError as exc:
        raise DataError(f"cannot read MELD CSV '{path}': {exc}.") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_CSV_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing MELD column(s) {missing}; found {header}. Expected the header "
            f"'{','.join(CSV_COLUMNS)}'. Is this a MELD *_sent_emo.csv?"
        )
    reader.fieldnames = header
    records: list[MeldRecord] = []
    start = reader.line_num + 1
    for rec in reader:
        where = f"{path}:{start}"
        if None in rec:
            raise DataError(f"{where}: the row has more fields than the header. Quote the Utterance field.")

        def get(col: str, rec: dict[str, Any] = rec) -> str:
            return (rec.get(col) or "").strip()

        records.append(
            MeldRecord(
                line=start,
                utterance=repair_text(rec.get("Utterance") or ""),
                speaker=repair_text(get("Speaker")),
                emotion=get("Emotion").lower(),
                sentiment=get("Sentiment").lower(),
                dialogue_id=_norm_id(get("Dialogue_ID"), "Dialogue_ID", where),
                utterance_id=_norm_id(get("Utterance_ID"), "Utterance_ID", where),
                season=get("Season"),
                episode=get("Episode"),
                start_time=get("StartTime"),
                end_time=get("EndTime"),
            )
        )
        start = reader.line_num + 1
    return records


# ------------------------------------------------------------------------------------------------ layout


def _find(source: Path, name: str, want_dir: bool) -> Path | None:
    """`name` in source, or one or two folders below it (shallowest first)."""
    for pattern in (name, f"*/{name}", f"*/*/{name}"):
        for p in sorted(source.glob(pattern)):
            if (p.is_dir() if want_dir else p.is_file()) and not p.name.startswith("._"):
                return p
    return None


def find_meld_layout(source: str | Path) -> dict[str, tuple[Path, Path | None]]:
    """split -> (CSV path, clip folder or None) for every split whose CSV is present."""
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"MELD source '{source}' is not a directory. Pass the folder holding *_sent_emo.csv.")
    found = {}
    for split, csv_name in CSV_NAMES.items():
        csv_path = _find(source, csv_name, want_dir=False)
        if csv_path is not None:
            found[split] = (csv_path, _find(source, CLIP_DIRS[split], want_dir=True))
    if not found:
        raise DataError(
            f"no MELD CSV under '{source}' (looked for {', '.join(CSV_NAMES.values())} up to two folders deep). "
            "Pass --source to the unpacked MELD.Raw folder."
        )
    return found


def read_meld(source: str | Path, modalities: Sequence[str]) -> AdapterResult:
    """Manifest rows for every CSV row. Clip paths are set whether or not the file exists; prepare checks."""
    layout = find_meld_layout(source)
    needs_media = any(m in modalities for m in ("a", "v"))
    warnings = [f"MELD split '{s}' not found ({CSV_NAMES[s]}); skipped." for s in CSV_NAMES if s not in layout]
    rows: list[dict[str, Any]] = []
    sources: list[str] = []
    for split, (csv_path, clip_dir) in layout.items():
        sources.append(str(csv_path))
        if clip_dir is None:
            clip_dir = csv_path.parent / CLIP_DIRS[split]
            if needs_media:
                warnings.append(f"MELD clip folder '{CLIP_DIRS[split]}' not found near {csv_path}; "
                                f"its clips are reported missing. Unpack the {split} archive next to the CSV.")
        clip_dir = Path(os.path.abspath(clip_dir))  # lexical, as the data root is compared (media_root)
        for r in read_meld_csv(csv_path):
            clip = str(clip_dir / r.clip_name)
            rows.append({
                "utterance_id": f"{split}_dia{r.dialogue_id}_utt{r.utterance_id}",
                "dialogue_id": f"{split}_dia{r.dialogue_id}",
                "session": None,
                "speaker": r.speaker or None,
                "text": r.utterance,
                "label": r.emotion,
                "audio_path": clip,
                "video_path": clip,
                "start_s": None,
                "end_s": None,
                "turn": meld_turn(r.utterance_id),
                "split": split,
                "dataset": "meld",
                SOURCE_KEY: {"file": str(csv_path), "line": r.line},
            })
    return AdapterResult(rows=rows, rows_read=len(rows), dropped=[], issues=[], warnings=warnings, sources=sources)
