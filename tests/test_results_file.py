"""benchmarks/results_file.py: a run whose hjcag is not its checkout's says so when it starts, not only in the file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import results_file  # noqa: E402


def test_another_checkouts_hjcag_is_named_at_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(results_file, "REPO", tmp_path)  # a checkout whose src is not the hjcag imported here
    (tmp_path / "params.yaml").write_text("{}\n")
    record = results_file.start("probe")
    assert record["hjcag"]["in_this_checkout"] is False
    err = capsys.readouterr().err
    assert f"not from this checkout ({tmp_path / 'src' / 'hjcag'})" in err and f"PYTHONPATH={tmp_path / 'src'}" in err


def test_this_checkouts_hjcag_starts_quietly(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import hjcag

    monkeypatch.setattr(results_file, "REPO", Path(hjcag.__file__).resolve().parents[2])
    assert results_file.start("probe")["hjcag"]["in_this_checkout"] is True
    assert "warning" not in capsys.readouterr().err
