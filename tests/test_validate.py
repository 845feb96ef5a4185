"""Validation stage: GX manifest suite + PyAV media checks + features suite, on real files (no mocks).

The broken manifest holds one row (or pair of rows) per problem, so one validation run per policy covers every case;
each case then asserts the exact offending utterance ids in validation.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import media_fixtures
from hjcag import stages
from hjcag.cli import _parse_dims as parse_dims
from hjcag.data.manifest import manifest_frame, read_manifest, write_manifest
from hjcag.errors import ConfigError, HjcagError
from hjcag.params import MediaConfig, params_from_dict
from hjcag.validate.engine import ValidationError
from hjcag.validate.features_check import validate_features
from hjcag.validate.manifest_check import validate_manifest
from hjcag.validate.media_checks import check_media

LABELS = ["neutral", "joy", "anger"]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    garbage = root / "broken.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # an mp4 header, then noise
    return {
        "wav": media_fixtures.write_wav(root / "a.wav", duration_s=0.3),
        "wav8k": media_fixtures.write_wav(root / "a8k.wav", duration_s=0.3, sample_rate=8_000),
        "mp4": media_fixtures.write_video(root / "v.mp4", duration_s=0.5, fps=10),
        "broken": garbage,
        "missing": root / "gone.wav",
    }


def _row(uid: str, dialogue: str, media: dict[str, Path], **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "utterance_id": uid, "dialogue_id": dialogue, "speaker": "A", "text": f"utterance {uid}",
        "label": LABELS[int(uid[-1]) % 3] if uid[-1].isdigit() else "neutral",
        "audio_path": str(media["wav"]), "video_path": str(media["mp4"]), "split": "train", "dataset": "demo",
    }
    row.update(overrides)
    return row


def _good_rows(media: dict[str, Path], n: int = 6) -> list[dict[str, object]]:
    rows = [_row(f"ok{i}", f"d{i // 2}", media) for i in range(n)]
    rows[1].update(start_s=0.1, end_s=0.4)  # a span inside the 0.5 s clip is fine
    rows[5].update(audio_path=str(media["mp4"]))  # MELD-style: the audio is the clip's own track
    return rows


# each case: the utterance ids that must be reported, and the check that reports them
CASES = {
    "duplicate_id": ({"dup"}, "utterance_id_unique"),
    "unknown_label": ({"badlabel"}, "label_known"),
    "empty_text": ({"notext"}, "text_not_empty"),
    "reversed_span": ({"reversed"}, "span_ordered"),
    "dialogue_across_splits": ({"split_a", "split_b"}, "dialogue_one_split"),
    "missing_media": ({"nofile"}, "audio_exists"),
    "undecodable_media": ({"broken"}, "video_decodes"),
}


def _bad_rows(media: dict[str, Path]) -> list[dict[str, object]]:
    return [
        *_good_rows(media),
        _row("dup", "dx", media), _row("dup", "dx", media, label="joy"),
        _row("badlabel", "dy", media, label="contempt"),
        _row("notext", "dz", media, text="   "),
        _row("reversed", "dw", media, start_s=0.4, end_s=0.1),
        _row("split_a", "dsplit", media, split="train"), _row("split_b", "dsplit", media, split="test"),
        _row("nofile", "dv", media, audio_path=str(media["missing"])),
        _row("broken", "du", media, video_path=str(media["broken"])),
    ]


@pytest.fixture(scope="module")
def failed(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ValidationError]:
    out = tmp_path_factory.mktemp("failed")
    (out / "features.npz").write_bytes(b"extracted earlier")  # another stage's output in the same directory
    with pytest.raises(ValidationError) as info:
        validate_manifest(manifest_frame(_bad_rows(media)), LABELS, "t,a,v", "fail", out)
    return out, info.value


def _report(out: Path) -> dict:
    return json.loads((out / "validation.json").read_text())


def _offenders(report: dict, check: str) -> set[str]:
    found = [e for e in report["expectations"] if e["check"] == check]
    assert found, f"no check {check} in the report"
    return {o["utterance_id"] for e in found for o in e["offending"]}


def test_valid_manifest_passes(media: dict[str, Path], tmp_path: Path) -> None:
    path = write_manifest(manifest_frame(_good_rows(media)), tmp_path / "manifest.parquet")
    result = validate_manifest(path, LABELS, "t,a,v", "fail", tmp_path / "val")
    report = _report(tmp_path / "val")
    assert result.success and report["success"] and report["outcome"] == "passed"
    assert report["offending_rows"] == [] and report["table_failures"] == []
    assert report["class_counts"] == {"neutral": 2, "joy": 2, "anger": 2}
    checks = {e["check"] for e in report["expectations"]}
    assert {"utterance_id_unique", "label_known", "span_ordered", "audio_decodes", "video_frames"} <= checks
    assert all(e["success"] for e in report["expectations"])
    assert (tmp_path / "val" / "data_docs" / "index.html").is_file()
    assert report["failed_checks"] == []
    valid = read_manifest(tmp_path / "val" / "manifest.valid.parquet")
    pd.testing.assert_frame_equal(valid, read_manifest(path))


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_problem_is_reported_with_its_rows(case: str, failed: tuple[Path, ValidationError]) -> None:
    out, _ = failed
    ids, check = CASES[case]
    report = _report(out)
    assert _offenders(report, check) == ids
    flagged = {e["utterance_id"] for e in report["offending_rows"] if check in e["checks"]}
    assert flagged == ids
    reasons = [r for e in report["offending_rows"] if e["utterance_id"] in ids for r in e["reasons"]]
    assert reasons and all(isinstance(r, str) and r for r in reasons)


def test_only_the_bad_rows_are_reported(failed: tuple[Path, ValidationError]) -> None:
    out, _ = failed
    report = _report(out)
    expected = set().union(*(ids for ids, _ in CASES.values()))
    assert {e["utterance_id"] for e in report["offending_rows"]} == expected
    assert len(report["offending_rows"]) == len(expected) + 1  # both rows of the duplicate id
    broken = next(e for e in report["offending_rows"] if e["utterance_id"] == "broken")
    assert any("does not decode" in r and "Error" in r for r in broken["reasons"])  # the decoder's message


def test_fail_policy_raises_after_writing_the_report(failed: tuple[Path, ValidationError], media: dict) -> None:
    out, error = failed
    assert isinstance(error, HjcagError)
    message = str(error)
    assert "validation failed" in message and "label_known" in message and "badlabel" in message
    assert "--policy quarantine" in message
    report = _report(out)
    assert report["success"] is False and report["outcome"] == "failed"
    assert report["outputs"]["valid_manifest"] is None
    assert not (out / "manifest.valid.parquet").exists()
    assert (out / "data_docs" / "index.html").is_file()
    assert (out / "features.npz").read_bytes() == b"extracted earlier"  # nothing of other stages is lost
    assert all(p.exists() for k, p in media.items() if k != "missing")


def test_quarantine_drops_exactly_the_bad_rows(media: dict[str, Path], tmp_path: Path) -> None:
    rows = _bad_rows(media)
    result = validate_manifest(manifest_frame(rows), LABELS, "t,a,v", "quarantine", tmp_path)
    bad = set().union(*(ids for ids, _ in CASES.values()))
    assert result.outcome == "quarantined" and not result.success
    valid = read_manifest(tmp_path / "manifest.valid.parquet")
    assert list(valid["utterance_id"]) == [r["utterance_id"] for r in rows if r["utterance_id"] not in bad]
    quarantined = pd.read_parquet(tmp_path / "quarantine.parquet")
    assert sorted(quarantined["utterance_id"]) == sorted(r["utterance_id"] for r in rows if r["utterance_id"] in bad)
    assert quarantined["reasons"].str.len().gt(0).all()
    assert "label is not in the dataset's label set" in quarantined.set_index("row_number").loc[8, "reasons"]
    report = _report(tmp_path)
    assert report["valid_rows"] == len(valid) and report["class_counts_valid"] == {"neutral": 2, "joy": 2, "anger": 2}


def test_text_only_opens_no_media(media: dict[str, Path], tmp_path: Path) -> None:
    rows = [_row(f"t{i}", f"d{i}", media, audio_path=str(media["missing"]), video_path=None) for i in range(3)]
    result = validate_manifest(manifest_frame(rows), LABELS, "t", "fail", tmp_path)
    assert result.success
    assert not any(c.check.startswith(("audio", "video")) for c in result.checks)


def test_dialogue_across_folds_and_missing_column(media: dict[str, Path], tmp_path: Path) -> None:
    df = manifest_frame(_good_rows(media))
    df["fold"] = [0, 0, 1, 2, 2, 2]  # dialogue d0 = rows 0,1 (fold 0 only); d1 = rows 2,3 (folds 1 and 2)
    with pytest.raises(ValidationError):
        validate_manifest(df, LABELS, "t", "fail", tmp_path / "folds", folds_column="fold")
    assert _offenders(_report(tmp_path / "folds"), "dialogue_one_fold") == {"ok2", "ok3"}
    # a missing column cannot be quarantined away: it raises under either policy
    with pytest.raises(ValidationError, match="required column 'speaker' is missing"):
        validate_manifest(df.drop(columns=["speaker"]), LABELS, "t", "quarantine", tmp_path / "cols")
    assert not (tmp_path / "cols" / "manifest.valid.parquet").exists()
    with pytest.raises(ValidationError, match="the manifest has no rows"):
        validate_manifest(df.iloc[:0], LABELS, "t", "quarantine", tmp_path / "empty")
    with pytest.raises(ConfigError):
        validate_manifest(df, LABELS, "t", "ignore", tmp_path / "x")


def test_media_bounds_are_configurable(media: dict[str, Path]) -> None:
    rows = [_row("r0", "d0", media), _row("r1", "d0", media, audio_path=str(media["wav8k"]), start_s=0.0, end_s=0.4)]
    df = manifest_frame(rows)
    strict = MediaConfig(min_sample_rate=16_000, max_duration_s=0.35)
    checked = check_media(df, ("a", "v"), strict)
    assert list(checked["audio_sample_rate"]) == [16_000.0, 8_000.0]
    assert checked["audio_duration_s"].tolist() == pytest.approx([0.3, 0.3], abs=0.02)  # separate wav: used whole
    assert checked["video_duration_s"].tolist() == pytest.approx([0.5, 0.4], abs=0.02)  # clip: the span
    assert list(checked["video_frames"]) == [1.0, 1.0] and list(checked["video_decodes"]) == [True, True]
    assert check_media(df, ("t",)).empty

    # frames inside a span of the 0.5 s, 10 fps clip (frames at 0.0, 0.1, ... 0.4): seeking, gaps, overruns
    spans = [(0.3, 0.45), (0.25, 0.29), (0.6, 0.9)]
    df = manifest_frame([_row(f"s{i}", "d", media, start_s=a, end_s=b) for i, (a, b) in enumerate(spans)])
    checked = check_media(df, ("v",))
    assert list(checked["video_frames"]) == [1.0, 0.0, 0.0]
    assert list(checked["video_span_in_file"]) == [True, True, False]
    with pytest.raises(ConfigError):
        MediaConfig.from_dict({"min_rate": 1})


def _features(tmp_path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    ids = np.array([f"u{i}" for i in range(n)])
    text = rng.normal(size=(n, 4, 8)).astype(np.float32)
    audio = rng.normal(size=(n, 6)).astype(np.float32)
    text[3, 2, 1] = np.nan
    audio[7, 0] = np.inf
    audio[:, 4] = 0.25  # a constant column
    path = tmp_path / "features.npz"
    np.savez(path, utterance_id=ids, label=np.array(["joy", "anger"] * (n // 2)), group=ids, text=text, audio=audio)
    return path


def test_features_suite(tmp_path: Path) -> None:
    path = _features(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ValidationError) as info:
        validate_features(path, {"t": 8, "a": 7}, tmp_path / "val")  # audio is 6 wide, not 7
    report = _report(tmp_path / "val")
    assert report["success"] is False and "column_not_constant" in str(info.value)
    assert _offenders(report, "text_finite") == {"u3"}
    assert _offenders(report, "audio_finite") == {"u7"}
    constant = next(e for e in report["expectations"] if e["check"] == "column_not_constant")
    assert [(o["modality"], o["feature_index"]) for o in constant["offending"]] == [("audio", 4)]
    wrong = next(e for e in report["expectations"] if e["check"] == "dim_as_configured")
    assert [o["modality"] for o in wrong["offending"]] == ["audio"]
    assert {e.get("utterance_id") for e in report["offending_rows"]} >= {"u3", "u7"}
    assert (tmp_path / "val" / "data_docs" / "index.html").is_file()
    assert path.read_bytes() == before  # the features file is never modified

    clean = tmp_path / "clean.npz"
    rng = np.random.default_rng(1)
    np.savez(clean, utterance_id=np.array(["a", "b", "c"]), label=np.array(["joy", "anger", "joy"]),
             group=np.array(["g"] * 3), visual=rng.normal(size=(3, 2, 4)))
    result = validate_features(clean, {"visual": 4}, tmp_path / "ok")
    assert result.success and _report(tmp_path / "ok")["success"] and not result.warnings

    constant = tmp_path / "constant.npz"  # a constant column is reported, but does not stop training
    visual = rng.normal(size=(3, 2, 4))
    visual[:, :, 2] = 0.0
    np.savez(constant, utterance_id=np.array(["a", "b", "c"]), label=np.array(["joy", "anger", "joy"]),
             group=np.array(["g"] * 3), visual=visual)
    result = validate_features(constant, {"visual": 4}, tmp_path / "constant")
    assert result.success and any(w.startswith("column_not_constant") for w in result.warnings)


def test_dims_helpers(tmp_path: Path) -> None:
    assert parse_dims("t=1024, a=1582") == {"t": 1024, "a": 1582}
    with pytest.raises(ConfigError):
        parse_dims("t:1024")
    npz = tmp_path / "f.npz"
    assert stages.recorded_dims(npz) == {}
    (tmp_path / "f.meta.json").write_text(json.dumps({"modalities": {"text": {"dim": 384}, "audio": {"dim": 88}}}))
    assert stages.recorded_dims(npz) == {"text": 384, "audio": 88}


def test_stages_take_policy_and_bounds_from_params(media: dict[str, Path], tmp_path: Path) -> None:
    rows = [_row("r0", "d0", media), _row("r1", "d1", media, audio_path=str(media["wav8k"]))]
    path = write_manifest(manifest_frame(rows), tmp_path / "manifest.parquet")
    params = params_from_dict({
        "dataset": "demo", "datasets": {"demo": {"labels": LABELS}},
        "validation": {"policy": "quarantine", "media": {"min_sample_rate": 16_000}},
    })
    result = stages.validate(path, tmp_path / "val", params, "t,a", progress=False)
    assert result.outcome == "quarantined" and [e["utterance_id"] for e in result.offending_rows] == ["r1"]
    assert "audio sample rate outside [16000, 96000] Hz (audio_sample_rate=8000)" in result.offending_rows[0]["reasons"]
    with pytest.raises(ValidationError):  # the command line's --policy wins over params
        stages.validate(path, tmp_path / "val2", params, "t,a", policy="fail", progress=False)

    features = _features(tmp_path)
    (tmp_path / "features.meta.json").write_text(json.dumps({"modalities": {"text": {"dim": 8}, "audio": {"dim": 6}}}))
    with pytest.raises(ValidationError) as info:
        stages.validate_features(features, tmp_path / "fval")
    assert "dim_as_configured" not in str(info.value) and "column_not_constant" in str(info.value)
    with pytest.raises(ValidationError, match="dim_as_configured"):
        stages.validate_features(features, tmp_path / "fval2", dims=parse_dims("t=9"))
