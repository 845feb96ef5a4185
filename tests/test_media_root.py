"""Manifests name media relative to a declared data root: the same bytes in every checkout folder, and the media
found again after the folder moves, from a copy of the manifest, or (Kubeflow) under a root given explicitly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hjcag.cli import main
from hjcag.data.manifest import read_manifest
from hjcag.data.media_root import (
    DATA_ROOT_KEY,
    media_path,
    resolve_data_root,
    root_from_record,
    root_record,
    under_root,
)
from hjcag.data.prepare import prepare_dataset
from hjcag.errors import DataError
from hjcag.features.extract import extract_features
from hjcag.params import FeaturesConfig
from hjcag.validate.manifest_check import validate_manifest
from media_fixtures import MeldRow, make_meld_tree, write_wav

REPO = Path(__file__).resolve().parents[1]
LABELS = ["neutral", "joy", "anger"]
SPLITS = {
    "train": [MeldRow(0, 0, "Hi.", emotion="joy"), MeldRow(0, 1, "What?"), MeldRow(1, 0, "No!", emotion="anger"),
              MeldRow(1, 1, "Gone.", clip=False)],  # its clip is missing: quarantined
    "dev": [MeldRow(0, 0, "Hey.", emotion="joy")],
    "test": [MeldRow(0, 0, "Bye.")],
}
MANIFEST = "build/prepare/manifest.parquet"


def _checkout(folder: Path) -> Path:
    """A checkout at `folder` with the dataset at data/MELD, prepared and validated the way dvc.yaml does it:
    every path relative to the checkout, which is the working directory."""
    make_meld_tree(folder / "data" / "MELD", SPLITS)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        prepare_dataset("meld", "data/MELD", "build/prepare", "t,a,v", progress=False)
        validate_manifest(MANIFEST, LABELS, "t,a,v", "quarantine", "build/validate", docs_dir="build/data-docs")
    return folder


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One checkout the tests read (or copy) and never change."""
    return _checkout(tmp_path_factory.mktemp("checkout") / "a")


def _recorded(manifest: Path) -> str:
    return (pq.read_schema(manifest).metadata or {})[DATA_ROOT_KEY].decode()


def test_paths_round_trip_through_the_recorded_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert under_root(str(tmp_path / "data/MELD/train_splits/a.mp4"), "data/MELD") == "train_splits/a.mp4"
    assert under_root("data/MELD/train_splits/a.mp4", tmp_path / "data" / "MELD") == "train_splits/a.mp4"
    assert under_root("/elsewhere/a.wav", "data/MELD") == "/elsewhere/a.wav"  # outside: stays absolute
    assert under_root("data/MELD-2/a.wav", "data/MELD") == str(tmp_path / "data/MELD-2/a.wav")  # not a prefix
    # a relative root is recorded from the manifest's folder and comes back as it was declared
    assert root_record("data/MELD", MANIFEST) == "../../data/MELD"
    assert root_from_record("../../data/MELD", MANIFEST) == Path("data/MELD")
    assert root_from_record("../../data/MELD", tmp_path / MANIFEST) == tmp_path / "data/MELD"
    assert root_record(tmp_path / "data", MANIFEST) == str(tmp_path / "data")  # an absolute one stays absolute
    assert media_path("train_splits/a.mp4", Path("data/MELD")) == Path("data/MELD/train_splits/a.mp4")
    assert media_path("/elsewhere/a.wav", Path("data/MELD")) == Path("/elsewhere/a.wav")


def test_two_checkouts_write_the_same_bytes(checkout: Path, tmp_path: Path) -> None:
    a, b = checkout, _checkout(tmp_path / "elsewhere" / "b-longer-name")
    for name in (MANIFEST, "build/prepare/prepare_report.json", "build/validate/manifest.valid.parquet",
                 "build/validate/quarantine.parquet", "build/validate/validation.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name

    df = read_manifest(a / MANIFEST).set_index("utterance_id")
    assert df.loc["train_dia0_utt1", "video_path"] == "train_splits/dia0_utt1.mp4"
    assert not any(str(a) in str(v) for v in df.to_numpy().ravel())
    report = json.loads((a / "build/prepare/prepare_report.json").read_text())
    assert (report["source"], report["data_root"]) == ("data/MELD", "data/MELD")
    assert str(a) not in json.dumps(report)
    assert _recorded(a / MANIFEST) == _recorded(a / "build/validate/manifest.valid.parquet") == "../../data/MELD"
    quarantined = read_manifest(a / "build/validate/quarantine.parquet")
    assert quarantined.utterance_id.tolist() == ["train_dia1_utt1"]
    assert _recorded(a / "build/validate/quarantine.parquet") == "../../data/MELD"
    assert (a / "build/data-docs/index.html").is_file() and not (a / "build/validate/data_docs").exists()


def test_the_media_are_found_after_the_checkout_moves(checkout: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    moved = tmp_path / "moved"
    shutil.move(shutil.copytree(checkout, tmp_path / "a"), moved)  # nothing is left where it was
    monkeypatch.chdir(tmp_path)  # another working directory, the manifest given by an absolute path
    valid = moved / "build/validate/manifest.valid.parquet"
    assert resolve_data_root(valid) == moved / "data/MELD"
    result = validate_manifest(valid, LABELS, "t,a,v", "fail", tmp_path / "again")
    assert result.success and result.rows == 5  # every clip opened and decoded from its new place
    assert _recorded(tmp_path / "again/manifest.valid.parquet") == str(moved / "data/MELD")  # rebased


def test_an_explicit_root_wins_where_the_record_points_nowhere(checkout: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Kubeflow: the manifest artifact and the raw-data artifact lie elsewhere in every pod."""
    a, pod = checkout, tmp_path / "pod"
    (pod / "manifest").mkdir(parents=True)
    shutil.copy(a / "build/validate/manifest.valid.parquet", pod / "manifest" / "manifest.parquet")
    shutil.copytree(a / "data/MELD", pod / "raw")
    monkeypatch.chdir(pod)
    args = ["validate", "--manifest", "manifest/manifest.parquet", "--out", "out", "--modalities", "a",
            "--profile", "generic", "--labels", ",".join(LABELS), "--params", str(REPO / "params.yaml")]
    assert main(args) == 2  # the recorded ../../data/MELD is not here: one clear line, nothing written
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--data-root" in err and "data/MELD" in err, err
    assert not (pod / "out/manifest.valid.parquet").exists()
    assert main([*args, "--data-root", "raw"]) == 0
    assert _recorded(pod / "out/manifest.valid.parquet") == "../raw"
    with pytest.raises(DataError, match="--data-root"):  # feature extraction says the same
        extract_features(read_manifest("manifest/manifest.parquet"), FeaturesConfig(cache_dir=None), "a",
                         pod / "f.npz", media_root=resolve_data_root("manifest/manifest.parquet"))


def test_a_user_manifest_keeps_absolute_paths_outside_its_folder(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    outside = write_wav(tmp_path / "shared" / "u2.wav")
    write_wav(tmp_path / "mine" / "clips" / "u1.wav")
    (tmp_path / "mine" / "manifest.csv").write_text(
        f"utterance_id,dialogue_id,text,label,audio_path\nu1,d1,Hi,joy,clips/u1.wav\nu2,d2,Yo,anger,{outside}\n")
    monkeypatch.chdir(tmp_path)
    prepare_dataset("manifest", "mine/manifest.csv", "out", "t,a", progress=False)
    df = read_manifest("out/manifest.parquet").set_index("utterance_id")
    assert df.loc["u1", "audio_path"] == "clips/u1.wav" and df.loc["u2", "audio_path"] == str(outside)
    assert resolve_data_root("out/manifest.parquet") == Path("mine")
    monkeypatch.chdir(tmp_path / "shared")  # both still resolve from another working directory
    result = validate_manifest(tmp_path / "out/manifest.parquet", LABELS, "t,a", "fail", tmp_path / "val")
    assert result.success
