"""Dataset adapters -> normalised manifest, on real tiny media laid out exactly as the datasets ship."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import pandas as pd
import pyarrow.parquet as pq
import pytest

from hjcag.data.manifest import (
    ARROW_SCHEMA,
    MANIFEST_COLUMNS,
    manifest_frame,
    media_span,
    read_manifest,
    write_manifest,
)
from hjcag.data.media_root import media_path, resolve_data_root
from hjcag.data.meld import decode_csv_bytes, read_meld_csv, repair_text
from hjcag.data.prepare import prepare_dataset
from hjcag.errors import ConfigError, DataError, HjcagError
from media_fixtures import (
    IemocapDialog,
    IemocapTurn,
    MeldRow,
    make_iemocap_tree,
    make_meld_tree,
    write_video,
    write_wav,
)


def _manifest(out: Path) -> pd.DataFrame:
    return read_manifest(out / "manifest.parquet").set_index("utterance_id", drop=False)


def _report(out: Path) -> dict:
    return json.loads((out / "prepare_report.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------ MELD


def _meld_splits() -> dict[str, list[MeldRow]]:
    return {
        "train": [
            MeldRow(0, 0, "Oh my God, he\u2019s lost it. He\u2019s totally lost it.", "Phoebe", "surprise"),
            MeldRow(0, 1, "What?", "Monica", "Neutral"),
            MeldRow(1, 0, "I said \u201cno\u201d\u2026", "Ross", "anger"),
        ],
        "dev": [MeldRow(0, 0, "Hi.", "Joey", "joy")],
        "test": [MeldRow(0, 0, "Bye.", "Chandler", "sadness")],
    }


def test_meld_builds_normalised_manifest_with_real_clips(tmp_path: Path) -> None:
    src = make_meld_tree(tmp_path / "MELD.Raw", _meld_splits())
    report = prepare_dataset("meld", src, tmp_path / "out", "t,a,v", progress=False)
    df = _manifest(tmp_path / "out")

    assert list(df.columns) == list(MANIFEST_COLUMNS)
    # ids are unique across splits even though dia0_utt0 occurs in all three
    assert sorted(df.index) == sorted(
        ["train_dia0_utt0", "train_dia0_utt1", "train_dia1_utt0", "dev_dia0_utt0", "test_dia0_utt0"]
    )
    row = df.loc["train_dia0_utt1"]
    assert (row.dialogue_id, row.split, row.label, row.speaker, row.dataset) == (
        "train_dia0", "train", "neutral", "Monica", "meld"
    )
    assert row.session is None and math.isnan(row.start_s) and math.isnan(row.end_s)
    assert row.video_path == "train_splits/dia0_utt1.mp4"  # relative to the data root, the source folder
    assert row.audio_path == row.video_path  # MELD's audio is the clip's own track
    assert df.loc["test_dia0_utt0"].video_path == "output_repeated_splits_test/dia0_utt0.mp4"
    root = resolve_data_root(tmp_path / "out" / "manifest.parquet")
    assert root.resolve() == src.resolve() and report.data_root == str(src)
    with av.open(media_path(row.video_path, root)) as clip:  # a real, decodable clip
        assert clip.streams.video and clip.streams.audio

    assert report.rows_read == report.rows_written == 5
    assert report.split_counts == {"train": 3, "dev": 1, "test": 1}
    assert report.dialogues == 4
    assert not report.dropped and not report.issues and not report.missing_media
    saved = _report(tmp_path / "out")
    assert saved["label_counts"] == {"surprise": 1, "neutral": 1, "anger": 1, "joy": 1, "sadness": 1}


def test_meld_cp1252_apostrophes_come_out_as_proper_characters(tmp_path: Path) -> None:
    src = make_meld_tree(tmp_path / "m", _meld_splits(), media=False)
    raw = (src / "train_sent_emo.csv").read_bytes()
    assert b"he\x92s" in raw and b"\x93no\x94\x85" in raw  # the fixture really holds cp1252 bytes

    prepare_dataset("meld", src, tmp_path / "out", "t", progress=False)
    df = _manifest(tmp_path / "out")
    assert df.loc["train_dia0_utt0"].text == "Oh my God, he’s lost it. He’s totally lost it."
    assert df.loc["train_dia1_utt0"].text == "I said “no”…"


@pytest.mark.parametrize(
    ("damaged", "fixed"),
    [
        ("I\u0092m fine", "I’m fine"),  # cp1252 byte decoded as latin-1
        ("I\u00e2\u20ac\u2122m fine", "I’m fine"),  # UTF-8 bytes decoded as cp1252 ('â€™')
        ("said \u00e2\u20ac\u0153hi\u00e2\u20ac\u009d", "said “hi”"),  # includes a byte cp1252 leaves undefined
        ("caf\u00e9 na\u00efve \u2019", "café naïve ’"),  # already correct: untouched
        ("  Wait\u0085  ", "Wait…"),
    ],
)
def test_repair_text(damaged: str, fixed: str) -> None:
    assert repair_text(damaged) == fixed


def test_decode_csv_bytes_mixes_utf8_and_cp1252() -> None:
    assert decode_csv_bytes(b"\xef\xbb\xbfI\x92m caf\xc3\xa9") == "I’m café"


def test_meld_utf8_csv_with_mojibake_is_repaired(tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "dev_sent_emo.csv").write_text(
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
        '1,"You\u00e2\u20ac\u2122re, like, \u0092here\u0092",Joey,joy,positive,3.0,2,1,1,"0:0:1,0","0:0:2,0"\n',
        encoding="utf-8",
    )
    (rec,) = read_meld_csv(src / "dev_sent_emo.csv")
    assert rec.utterance == "You’re, like, ’here’"
    assert (rec.dialogue_id, rec.utterance_id, rec.line) == ("3", "2", 2)


def test_meld_text_only_needs_only_the_csv(tmp_path: Path) -> None:
    src = make_meld_tree(tmp_path / "m", _meld_splits(), media=False)
    report = prepare_dataset("meld", src, tmp_path / "out", "t", progress=False)
    df = _manifest(tmp_path / "out")
    assert report.rows_written == 5 and not report.missing_media
    assert df.audio_path.isna().all() and df.video_path.isna().all()


def test_meld_missing_clip_is_reported_not_fatal(tmp_path: Path) -> None:
    splits = _meld_splits()
    splits["train"][1].clip = False
    src = make_meld_tree(tmp_path / "m", splits)
    report = prepare_dataset("meld", src, tmp_path / "out", "t,v", progress=False)
    df = _manifest(tmp_path / "out")
    assert report.rows_written == 5  # kept: what to do with it is validation's policy
    assert [(m["utterance_id"], m["modality"]) for m in report.missing_media] == [("train_dia0_utt1", "video")]
    missing = report.missing_media[0]
    assert missing["path"].endswith("train_splits/dia0_utt1.mp4") and missing["line"] == 3
    assert df.loc["train_dia0_utt1"].video_path == missing["path"]
    # audio was not chosen: its (equally missing) file is not required and is nulled
    assert df.loc["train_dia0_utt1"].audio_path is None
    assert df.loc["train_dia0_utt0"].audio_path is not None


def test_meld_empty_utterance_and_unknown_label_are_flagged(tmp_path: Path) -> None:
    splits = _meld_splits()
    splits["train"][1].utterance = "   "
    splits["dev"][0].emotion = "happy"
    src = make_meld_tree(tmp_path / "m", splits, media=False)
    report = prepare_dataset("meld", src, tmp_path / "out", "t", progress=False)
    problems = {(i["utterance_id"], i["problem"], i["line"]) for i in report.issues}
    assert problems == {("train_dia0_utt1", "empty_text", 3), ("dev_dia0_utt0", "unknown_label", 2)}
    assert report.issue_counts == {"empty_text": 1, "unknown_label": 1}
    df = _manifest(tmp_path / "out")
    assert df.loc["train_dia0_utt1"].text == "" and df.loc["dev_dia0_utt0"].label == "happy"
    # without the text modality an empty utterance is not a problem
    report = prepare_dataset("meld", src, tmp_path / "out2", "a", progress=False)
    assert "empty_text" not in report.issue_counts


def test_meld_duplicate_ids_follow_the_validation_policy(tmp_path: Path) -> None:
    splits = _meld_splits()
    splits["train"].append(MeldRow(0, 1, "What again?", "Monica", "neutral"))
    src = make_meld_tree(tmp_path / "m", splits, media=False)
    with pytest.raises(DataError, match=r"'train_dia0_utt1' at \S+train_sent_emo.csv:3 and \S+train_sent_emo.csv:5"):
        prepare_dataset("meld", src, tmp_path / "out", "t", progress=False)  # policy fail: which copy is right?
    assert not (tmp_path / "out" / "manifest.parquet").exists()
    report = prepare_dataset("meld", src, tmp_path / "out", "t", progress=False, policy="quarantine")
    df = _manifest(tmp_path / "out")
    assert df.utterance_id.is_unique and len(df) == 4 and "train_dia0_utt1" not in df.index
    assert [(d["utterance_id"], d["reason"], d["line"]) for d in report.dropped] == [
        ("train_dia0_utt1", "duplicate_id", 3), ("train_dia0_utt1", "duplicate_id", 5)]
    assert ":5" in report.dropped[0]["detail"] and ":3" in report.dropped[1]["detail"]
    assert report.dropped_counts == {"duplicate_id": 2}


def test_meld_nested_layout_and_partial_splits(tmp_path: Path) -> None:
    make_meld_tree(tmp_path / "MELD.Raw" / "train", {"train": _meld_splits()["train"]})
    report = prepare_dataset("meld", tmp_path / "MELD.Raw", tmp_path / "out", "t,a,v", progress=False)
    assert report.rows_written == 3 and not report.missing_media
    assert any("'dev' not found" in w for w in report.warnings)


def test_meld_bad_csv_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    with pytest.raises(DataError, match=r"no MELD CSV under .*train_sent_emo\.csv"):
        prepare_dataset("meld", src, tmp_path / "out", "t", progress=False)
    (src / "train_sent_emo.csv").write_text("Sr No.,Text,Speaker,Emotion\n1,hi,Joey,joy\n")
    with pytest.raises(DataError, match=r"train_sent_emo\.csv: missing MELD column\(s\) \['Utterance'"):
        prepare_dataset("meld", src, tmp_path / "out", "t", progress=False)
    (src / "train_sent_emo.csv").write_text(
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n1,hi,Joey,joy,positive,,0\n"
    )
    with pytest.raises(DataError, match=r"train_sent_emo\.csv:2: empty Dialogue_ID"):
        prepare_dataset("meld", src, tmp_path / "out", "t", progress=False)


# --------------------------------------------------------------------------------------------- IEMOCAP


def _iemocap_sessions() -> dict[int, list[IemocapDialog]]:
    return {
        1: [
            IemocapDialog("Ses01F_impro01", [
                IemocapTurn("Ses01F_impro01_F000", "neu", 0.10, 0.40, "Excuse me."),
                IemocapTurn("Ses01F_impro01_M000", "xxx", 0.45, 0.70, "Do you have your forms?"),
                IemocapTurn("Ses01F_impro01_F001", "fru", 0.80, 1.10, "Yeah."),
            ]),
            IemocapDialog("Ses01F_script01_1", [
                IemocapTurn("Ses01F_script01_1_M000", "exc", 0.00, 0.30, "Guess what?"),
                IemocapTurn("Ses01F_script01_1_F000", "sur", 0.35, 0.60, "What?"),
            ]),
        ],
        2: [
            IemocapDialog("Ses02M_impro03", [
                IemocapTurn("Ses02M_impro03_F000", "hap", 0.20, 0.50, "I got in!"),
                IemocapTurn("Ses02M_impro03_M000", "ang", 0.55, 0.90, "You what?"),
            ]),
        ],
    }


def test_iemocap_builds_manifest_and_drops_other_labels(tmp_path: Path) -> None:
    src = make_iemocap_tree(tmp_path / "IEMOCAP_full_release", _iemocap_sessions())
    report = prepare_dataset("iemocap", tmp_path, tmp_path / "out", "t,a,v", progress=False)  # nested source
    df = _manifest(tmp_path / "out")

    assert sorted(df.label) == ["ang", "exc", "fru", "hap", "neu"]
    assert report.rows_read == 7 and report.rows_written == 5
    assert report.dropped_counts == {"excluded_label": 2}
    assert report.dropped_label_counts == {"xxx": 1, "sur": 1}
    assert report.session_counts == {"Session1": 3, "Session2": 2}
    assert not report.missing_media and not report.issues

    row = df.loc["Ses01F_impro01_F001"]
    assert (row.dialogue_id, row.session, row.speaker, row.text, row.split) == (
        "Ses01F_impro01", "Session1", "Ses01F", "Yeah.", None
    )
    assert (row.start_s, row.end_s) == pytest.approx((0.80, 1.10))
    # relative to the source given (tmp_path, which holds IEMOCAP_full_release)
    assert row.video_path == "IEMOCAP_full_release/Session1/dialog/avi/DivX/Ses01F_impro01.avi"
    assert row.audio_path == "IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F001.wav"
    root = resolve_data_root(tmp_path / "out" / "manifest.parquet")
    assert (root / row.video_path).resolve() == (src / "Session1/dialog/avi/DivX/Ses01F_impro01.avi").resolve()
    assert df.loc["Ses02M_impro03_M000"].speaker == "Ses02M"
    # the span cuts the dialog video; the per-turn wav is used whole
    assert media_span(row, "video") == pytest.approx((0.80, 1.10))
    assert media_span(row, "audio") == (None, None)
    with av.open(media_path(row.audio_path, root)) as wav:
        assert wav.streams.audio[0].sample_rate == 16_000
    with av.open(media_path(row.video_path, root)) as avi:
        assert avi.duration / 1e6 >= row.end_s  # the span lies inside the dialog video


def test_iemocap_malformed_emo_line_names_file_and_line(tmp_path: Path) -> None:
    sessions = _iemocap_sessions()
    sessions[2][0].extra_emo_lines = ["[1.2000 - ]\tSes02M_impro03_F001\thap\t[2.5, 2.5, 2.5]"]
    make_iemocap_tree(tmp_path / "I", sessions, media=False)
    with pytest.raises(DataError, match=r"Ses02M_impro03\.txt:11: malformed EmoEvaluation line") as err:
        prepare_dataset("iemocap", tmp_path / "I", tmp_path / "out", "t", progress=False)
    assert "[START - END]" in str(err.value)
    assert isinstance(err.value, HjcagError)


def test_iemocap_missing_media_and_transcript(tmp_path: Path) -> None:
    sessions = _iemocap_sessions()
    sessions[1][0].turns[0].wav = False
    sessions[1][0].turns[2].transcript = False
    sessions[2][0].avi = False
    make_iemocap_tree(tmp_path / "I", sessions)
    report = prepare_dataset("iemocap", tmp_path / "I", tmp_path / "out", "t,a,v", progress=False)
    missing = {(m["utterance_id"], m["modality"]) for m in report.missing_media}
    assert missing == {
        ("Ses01F_impro01_F000", "audio"), ("Ses02M_impro03_F000", "video"), ("Ses02M_impro03_M000", "video"),
    }
    assert report.missing_media_counts == {"audio": 1, "video": 2}
    assert [(i["utterance_id"], i["problem"]) for i in report.issues] == [("Ses01F_impro01_F001", "empty_text")]


def test_iemocap_text_only_without_any_media(tmp_path: Path) -> None:
    make_iemocap_tree(tmp_path / "I", _iemocap_sessions(), media=False)
    report = prepare_dataset("iemocap", tmp_path / "I" / "Session2", tmp_path / "out", "t", progress=False)
    df = _manifest(tmp_path / "out")
    assert report.rows_written == 2 and not report.missing_media
    assert df.audio_path.isna().all() and df.video_path.isna().all()
    assert set(df.session) == {"Session2"}


def test_iemocap_no_sessions_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no Session1\.\.Session5 folder"):
        prepare_dataset("iemocap", tmp_path, tmp_path / "out", "t", progress=False)


# --------------------------------------------------------------------------------------- generic manifest


def _user_media(root: Path) -> None:
    write_wav(root / "media" / "u1.wav")
    write_video(root / "media" / "u1.mp4")
    write_wav(root / "media" / "u2.wav")


def test_generic_csv_resolves_relative_paths_and_fills_optional_columns(tmp_path: Path) -> None:
    _user_media(tmp_path)
    (tmp_path / "manifest.csv").write_text(
        "utterance_id,text,label,audio_path,video_path,speaker,notes\n"
        "u1,Hello there,happy,media/u1.wav,media/u1.mp4,A,x\n"
        f"u2,Fine,sad,{tmp_path / 'media' / 'u2.wav'},,B,y\n"
    )
    report = prepare_dataset("manifest", tmp_path, tmp_path / "out", "t,a", progress=False)
    df = _manifest(tmp_path / "out")
    assert df.loc["u1"].audio_path == "media/u1.wav"  # relative to the manifest's folder, the data root
    assert df.loc["u1"].video_path == "media/u1.mp4"  # exists: kept
    assert df.loc["u2"].audio_path == "media/u2.wav"  # written absolute, but inside the data root
    assert df.loc["u2"].video_path is None
    assert df.loc["u1"].dialogue_id == "u1" and df.loc["u1"].dataset == "custom"
    assert df.loc["u1"].split is None and math.isnan(df.loc["u1"].start_s)
    assert not report.missing_media and not report.issues
    assert any("notes" in w for w in report.warnings) and any("dialogue_id" in w for w in report.warnings)


def test_generic_jsonl_matches_csv(tmp_path: Path) -> None:
    _user_media(tmp_path)
    rows = [
        {"utterance_id": "u1", "dialogue_id": "d1", "text": "Hi", "label": "neu", "audio_path": "media/u1.wav",
         "start_s": 0.0, "end_s": 0.2, "split": "Validation", "session": "S1"},
        {"utterance_id": "u2", "dialogue_id": "d1", "text": "Yo", "label": "ang", "audio_path": "media/u2.wav",
         "split": "train"},
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    prepare_dataset("manifest", tmp_path / "data.jsonl", tmp_path / "out", "t,a", labels=["neu", "ang"],
                    progress=False)
    df = _manifest(tmp_path / "out")
    assert (df.loc["u1"].split, df.loc["u1"].session, df.loc["u1"].end_s) == ("dev", "S1", 0.2)
    assert df.loc["u2"].split == "train" and df.loc["u2"].session is None


def test_generic_manifest_errors_point_at_the_row(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("utterance_id,label,audio_path\nu1,neu,a.wav\n")
    with pytest.raises(DataError, match=r"m\.csv: missing column\(s\) \['text'\].* The file has the inputs of "
                                        r"modalities a only: pass --modalities a\.$"):
        prepare_dataset("manifest", path, tmp_path / "out", "t,a", progress=False)
    # audio only: no text column needed; the missing wav is reported, not fatal
    report = prepare_dataset("manifest", path, tmp_path / "out", "a", progress=False)
    assert report.missing_media[0]["path"] == "a.wav"  # as the manifest names it, relative to the data root

    path.write_text("utterance_id,label,text,split\nu1,neu,hi,train\nu2,neu,ho,holdout\n")
    with pytest.raises(DataError, match=r"m\.csv:3: split 'holdout' is not one of train, dev, test"):
        prepare_dataset("manifest", path, tmp_path / "out", "t", progress=False)
    path.write_text('utterance_id,label,text,start_s\nu1,neu,"multi\nline",1.5\nu2,neu,ho,soon\n')
    with pytest.raises(DataError, match=r"m\.csv:4: start_s 'soon' is not a number"):
        prepare_dataset("manifest", path, tmp_path / "out", "t", progress=False)
    path.write_bytes(b"utterance_id,label,text\nu1,neu,ok\nu2,neu,I\x92m\n")
    with pytest.raises(DataError, match=r"m\.csv:3: not UTF-8"):
        prepare_dataset("manifest", path, tmp_path / "out", "t", progress=False)
    (tmp_path / "m.jsonl").write_text('{"utterance_id": "u1", "label": "x"}\n{"utterance_id": \n')
    with pytest.raises(DataError, match=r"m\.jsonl:2: not valid JSON"):
        prepare_dataset("manifest", tmp_path / "m.jsonl", tmp_path / "out", "v", progress=False)


def test_generic_duplicates_and_unknown_labels(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("utterance_id,label,text\nu1,neu,a\nu2,joy,b\nu1,ang,c\n")
    report = prepare_dataset("manifest", path, tmp_path / "out", "t", labels=["neu", "ang"], progress=False,
                             policy="quarantine")
    df = _manifest(tmp_path / "out")
    assert list(df.utterance_id) == ["u2"]
    assert report.dropped_counts == {"duplicate_id": 2} and [d["line"] for d in report.dropped] == [2, 4]
    assert report.issue_counts == {"unknown_label": 1}


# ---------------------------------------------------------------------------------------- manifest + prepare


def test_manifest_parquet_round_trip_keeps_nulls_and_types(tmp_path: Path) -> None:
    df = manifest_frame([
        {"utterance_id": "a", "dialogue_id": "d", "label": "joy", "text": "’ok’", "start_s": 1.0, "end_s": 2.5,
         "dataset": "x"},
        {"utterance_id": "b", "dialogue_id": "d", "label": "joy", "text": None, "dataset": "x", "split": "test"},
    ])
    write_manifest(df, tmp_path / "m.parquet")
    assert pq.read_schema(tmp_path / "m.parquet").equals(ARROW_SCHEMA)
    back = read_manifest(tmp_path / "m.parquet")
    assert list(back.columns) == list(MANIFEST_COLUMNS)
    assert back.loc[0, "text"] == "’ok’" and back.loc[1, "text"] is None and back.loc[1, "audio_path"] is None
    assert back.loc[0, "end_s"] == 2.5 and math.isnan(back.loc[1, "start_s"]) and back.start_s.dtype == "float64"
    df.drop(columns=["label"]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"lacks columns \['label'\]"):
        read_manifest(tmp_path / "bad.parquet")


def test_media_span_rule() -> None:
    same = {"audio_path": "/c.mp4", "video_path": "/c.mp4", "start_s": 1.0, "end_s": 2.0}
    audio_only = {"audio_path": "/long.wav", "video_path": None, "start_s": 1.0, "end_s": 2.0}
    whole = {"audio_path": "/c.mp4", "video_path": "/c.mp4", "start_s": float("nan"), "end_s": None}
    assert media_span(same, "audio") == (1.0, 2.0)
    assert media_span(audio_only, "audio") == (1.0, 2.0)
    assert media_span(whole, "video") == (None, None)


def test_prepare_rejects_bad_arguments_and_empty_results(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset kind 'voxceleb'"):
        prepare_dataset("voxceleb", tmp_path, tmp_path / "out")
    with pytest.raises(DataError, match="does not exist"):
        prepare_dataset("meld", tmp_path / "nope", tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown modality"):
        prepare_dataset("meld", tmp_path, tmp_path / "out", "t,x")
    # every turn outside the six classes: an error, with the report explaining why and no stale manifest
    make_iemocap_tree(tmp_path / "I", {1: [IemocapDialog("Ses01F_impro01", [IemocapTurn("Ses01F_impro01_F000",
                                                                                            "xxx")])]}, media=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.parquet").write_bytes(b"stale")
    with pytest.raises(DataError, match="no utterance left"):
        prepare_dataset("iemocap", tmp_path / "I", tmp_path / "out", "t", progress=False)
    assert _report(tmp_path / "out")["dropped_label_counts"] == {"xxx": 1}
    assert not (tmp_path / "out" / "manifest.parquet").exists()
