"""What a stage writes into a log that is not a terminal: each fallback warning once, progress as a few lines
(no carriage-return redraws of a tqdm bar), a bar only on a terminal."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hjcag.progress import LogProgress, progress, quiet_library_bars

REPO = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal_log_lines_elsewhere() -> None:
    from tqdm import tqdm

    bar = progress(total=3, desc="x", stream=Terminal(), disable=True)
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress(total=3, desc="x", stream=io.StringIO()), LogProgress)


def test_log_progress_says_every_tenth_and_where_it_stopped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hjcag.progress"), LogProgress(total=200, desc="fold 1",
                                                                             unit="epoch") as bar:
        for _ in range(47):  # stops early, as early stopping does
            bar.set_postfix(val_loss="0.5")
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(",")[0] for line in lines] == [
        "fold 1: 20/200 epoch (10 %)", "fold 1: 40/200 epoch (20 %)", "fold 1: 47/200 epoch (24 %)"]
    assert lines[0].endswith("val_loss=0.5")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hjcag.progress"):
        assert list(LogProgress(range(1000), desc="items")) == list(range(1000))
        LogProgress(total=5, desc="off", disable=True).update(5)
        resumed = LogProgress(total=10, initial=5, desc="resumed")
        resumed.close()  # nothing happened since the resume: nothing to say
    assert len(caplog.records) == 10 and caplog.records[-1].getMessage().startswith("items: 1000/1000 it (100 %)")


def test_a_cli_stage_in_a_log_says_each_fallback_once_and_progress_in_a_few_lines(tmp_path: Path) -> None:
    """`hjcag features` with stderr piped (not a TTY) and the text model unreachable: the MiniLM fallback is
    announced once, and the 30 utterances' progress takes at most one line per tenth, with no redraws."""
    n = 30
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"utterance_id": [f"u{i}" for i in range(n)], "dialogue_id": [f"d{i // 3}" for i in range(n)],
                  "label": ["joy"] * n, "text": [f"utterance number {i}" for i in range(n)],
                  "audio_path": [None] * n, "video_path": [None] * n, "start_s": [None] * n,
                  "end_s": [None] * n}).to_parquet(manifest)
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["features"].update(text_model="hjcag-tests/no-such-model", text_batch_size=2, device="cpu")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "hjcag.cli", "features", "--manifest", str(manifest), "--out",
                           str(tmp_path / "features.npz"), "--modalities", "t", "--cache", "none", "--params",
                           str(tmp_path / "params.yaml")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert err.count("FALLING BACK") == 1, err
    progress_lines = [line for line in err.splitlines() if "text features:" in line]
    assert 1 <= len(progress_lines) <= 11, err
    assert progress_lines[-1].split("text features: ")[1].startswith(f"{n}/{n} utt (100 %)")
    assert "\r" not in err


def test_hugging_face_bars_follow_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off (HF_HUB_DISABLE_PROGRESS_BARS) when stderr is not a terminal, so "Loading weights" redraws stay out of
    logs; left alone on a terminal and when the user set the switch."""
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_library_bars(Terminal())
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    quiet_library_bars(io.StringIO())
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    quiet_library_bars(io.StringIO())
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"


def test_a_model_loaded_outside_the_cli_draws_no_bar_into_a_log() -> None:
    """A process that is not the CLI (a KFP component, a benchmark, a notebook) and imported transformers before
    hjcag: loading the text encoder with stderr piped writes no "Loading weights" bar."""
    script = ("import transformers\n"
              "from hjcag.features.text import TextExtractor\n"
              "print(TextExtractor('hjcag-tests/no-such-model', seq_len=4, device='cpu').model.config.hidden_size)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.split() == ["384"], proc.stderr[-3000:]
    assert "Loading weights" not in proc.stderr and "\r" not in proc.stderr, proc.stderr[-3000:]
