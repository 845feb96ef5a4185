"""The synthetic MELD-layout demo dataset: layout, determinism, real decodable clips, and the cue design."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from hjcag.data import synthetic
from hjcag.data.meld import CLIP_DIRS, CSV_COLUMNS, CSV_NAMES, MELD_LABELS, read_meld, read_meld_csv
from hjcag.data.synthetic import CUES, CUES_FILE, plan_dataset, write_demo_dataset
from hjcag.errors import ConfigError
from hjcag.features.media_io import load_audio, sample_frames

FEW = (2, 1, 1)  # dialogues per split: enough to check everything, fast to write


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("demo"), seed=5, dialogues=FEW, progress=False)


def _clips(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.glob("*/*.mp4"))


# ----------------------------------------------------------------------------------------------- plan


def test_tiny_and_small_sizes() -> None:
    tiny, small = plan_dataset("tiny", 13), plan_dataset("small", 13)
    dialogues = {s: len({u.dialogue_id for u in tiny if u.split == s}) for s in ("train", "dev", "test")}
    assert dialogues == {"train": 26, "dev": 4, "test": 6}
    assert 250 <= len(tiny) <= 330
    assert len({(u.split, u.dialogue_id) for u in small}) == 3 * 36
    assert 2.5 * len(tiny) < len(small) < 3.5 * len(tiny)


def test_every_class_in_every_split_neutral_most_frequent() -> None:
    plan = plan_dataset("tiny", 13)
    for split in ("train", "dev", "test"):
        counts = Counter(u.emotion for u in plan if u.split == split)
        assert set(counts) == set(MELD_LABELS), split
        assert min(counts.values()) >= 3, (split, counts)
        assert counts.most_common(1)[0][0] == "neutral"


def test_dialogue_and_utterance_ids_restart_per_split() -> None:
    plan = plan_dataset("tiny", 13)
    for split in ("train", "dev", "test"):
        rows = [u for u in plan if u.split == split]
        assert rows[0].dialogue_id == 0 and rows[0].utterance_id == 0
        dias = sorted({u.dialogue_id for u in rows})
        assert dias == list(range(len(dias)))
        for d in dias:
            assert [u.utterance_id for u in rows if u.dialogue_id == d] == list(range(sum(u.dialogue_id == d
                                                                                         for u in rows)))


def test_cues_follow_the_table_with_some_noise() -> None:
    plan = plan_dataset("small", 13)
    for i, attr in enumerate(("valence", "arousal", "face")):
        wrong = np.mean([getattr(u, attr) != CUES[u.emotion][i] for u in plan])
        assert 0.06 < wrong < 0.2, (attr, wrong)
    # no single cue identifies the emotion, the three together do
    combos = {e: c for e, c in CUES.items()}
    assert len(set(combos.values())) == len(MELD_LABELS)
    for i in range(3):
        assert len({c[i] for c in combos.values()}) < len(MELD_LABELS)
    # the text carries the drawn valence through its words
    for u in plan[:50]:
        assert any(adj in u.text for adj in synthetic.ADJECTIVES[u.valence]), (u.valence, u.text)
        assert u.text.startswith(synthetic.OPENERS[u.valence]), (u.valence, u.text)


def test_plan_is_deterministic_and_seed_dependent() -> None:
    assert plan_dataset("tiny", 7) == plan_dataset("tiny", 7)
    assert plan_dataset("tiny", 7) != plan_dataset("tiny", 8)


def test_unknown_size() -> None:
    with pytest.raises(ConfigError, match=r"size 'huge' is unknown; use one of \['tiny', 'small'\]"):
        plan_dataset("huge")


# --------------------------------------------------------------------------------------------- layout


def test_layout(demo: Path) -> None:
    assert {p.name for p in demo.iterdir()} == {*CSV_NAMES.values(), *CLIP_DIRS.values(), "README.txt", CUES_FILE}
    assert "SYNTHETIC" in (demo / "README.txt").read_text()
    expected = []
    for split in ("train", "dev", "test"):
        raw = (demo / CSV_NAMES[split]).read_bytes()
        header = raw.split(b"\n", 1)[0].decode()
        assert header == ",".join(CSV_COLUMNS)
        with (demo / CSV_NAMES[split]).open(newline="", encoding="cp1252") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["Sr No."]) for r in rows] == list(range(1, len(rows) + 1))
        for r in rows:
            assert r["Emotion"] in MELD_LABELS
            assert r["Sentiment"] == {"neutral": "neutral", "positive": "positive", "negative": "negative"}[
                CUES[r["Emotion"]][0]]
            for col in ("StartTime", "EndTime"):
                assert re.fullmatch(r"\d\d:\d\d:\d\d,\d\d\d", r[col]), r[col]
            assert r["EndTime"] > r["StartTime"]
            expected.append(Path(CLIP_DIRS[split]) / f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}.mp4")
    assert _clips(demo) == sorted(expected)


def test_csv_is_cp1252_like_meld_and_reads_back_through_the_meld_reader(demo: Path) -> None:
    raw = b"".join((demo / name).read_bytes() for name in CSV_NAMES.values())
    assert b"\x92" in raw  # ’ as MELD's CSVs store it
    records = [r for name in CSV_NAMES.values() for r in read_meld_csv(demo / name)]
    texts = " ".join(r.utterance for r in records)
    assert "’" in texts and "\x92" not in texts
    result = read_meld(demo, ("t", "a", "v"))
    assert not result.warnings
    ids = [r["utterance_id"] for r in result.rows]
    assert len(ids) == len(set(ids)) == len(_clips(demo))
    assert all(Path(r["video_path"]).exists() for r in result.rows)


def test_cues_file_matches_csv(demo: Path) -> None:
    with (demo / CUES_FILE).open() as f:
        cues = list(csv.DictReader(f))
    records = [r for name in CSV_NAMES.values() for r in read_meld_csv(demo / name)]
    assert [c["Emotion"] for c in cues] == [r.emotion for r in records]
    assert {c["face"] for c in cues} <= set(synthetic.FACES)


# ---------------------------------------------------------------------------------------------- media


def test_clips_have_video_and_audio_streams(demo: Path) -> None:
    durations = {}
    for name in CSV_NAMES.values():
        for r in read_meld_csv(demo / name):
            durations[r.clip_name] = r
    for rel in _clips(demo):
        with av.open(str(demo / rel)) as container:
            assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
            v, a = container.streams.video[0], container.streams.audio[0]
            assert (v.codec_context.width, v.codec_context.height) == (64, 64)
            assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
            assert a.codec_context.sample_rate == 16_000 and a.codec_context.channels == 1
            assert 0.9 < container.duration / av.time_base < 1.7
        audio = load_audio(demo / rel)
        assert 0.95 * 16_000 <= len(audio) <= 1.55 * 16_000
        assert 0.01 < float(np.sqrt(np.mean(audio**2))) < 0.5  # audible, not clipped
        frames = sample_frames(demo / rel, 4, size=64)
        assert frames.shape == (4, 64, 64, 3) and frames.std() > 10


def test_same_seed_gives_identical_rows_frames_and_audio(demo: Path, tmp_path: Path) -> None:
    again = write_demo_dataset(tmp_path / "again", seed=5, dialogues=FEW, workers=1, progress=False)
    for name in (*CSV_NAMES.values(), CUES_FILE, "README.txt"):
        assert (again / name).read_bytes() == (demo / name).read_bytes(), name
    assert _clips(again) == _clips(demo)
    for rel in _clips(demo):
        assert (again / rel).read_bytes() == (demo / rel).read_bytes(), rel
        np.testing.assert_array_equal(load_audio(again / rel), load_audio(demo / rel))
        np.testing.assert_array_equal(sample_frames(again / rel, 6, size=64), sample_frames(demo / rel, 6, size=64))


def test_another_seed_gives_other_data(demo: Path, tmp_path: Path) -> None:
    other = write_demo_dataset(tmp_path / "other", seed=6, dialogues=FEW, progress=False)
    assert (other / CSV_NAMES["train"]).read_bytes() != (demo / CSV_NAMES["train"]).read_bytes()


def test_arousal_and_face_show_in_the_signals() -> None:
    """High arousal is louder and higher-pitched; the mouth region differs between faces."""
    plan = plan_dataset("tiny", 13)
    high = next(u for u in plan if u.arousal == "high" and u.speaker == "Joey")
    low = next(u for u in plan if u.arousal == "low" and u.speaker == "Joey")
    (_, a_high), (_, a_low) = synthetic.utterance_media(high), synthetic.utterance_media(low)
    assert np.sqrt(np.mean(a_high**2)) > 1.4 * np.sqrt(np.mean(a_low**2))
    skin, bg = synthetic.SPEAKERS["Joey"][1:]
    faces = {f: synthetic.draw_faces(np.random.default_rng(1), f, 2, skin, bg).astype(float) for f in synthetic.FACES}
    mouth = (slice(36, 52), slice(18, 46))
    for f in ("smile", "open", "frown"):
        assert np.abs(faces[f][0][mouth] - faces["flat"][0][mouth]).mean() > 5, f
