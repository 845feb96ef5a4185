"""Context in the text encoder (``features.text_context: k``): the encoder reads each utterance together with the
up to k preceding turns of its dialogue, as EmoBERTa and CoMPM do.

Input format, for RoBERTa and BERT-style tokenizers alike: a sentence *pair*. The first segment holds the preceding
turns, oldest first, each as ``"Speaker: text"`` (just ``"text"`` when the speaker is unknown), joined by spaces;
the second segment is the current utterance, ``"Speaker: text"`` likewise (RoBERTa: ``<s> context </s></s>
current </s>``; BERT: ``[CLS] context [SEP] current [SEP]``). The first utterance of a dialogue has an empty first
segment. When the pair is longer than ``features.max_tokens``, the context loses its *oldest* tokens first; the
current utterance is cut (at its end, as with k = 0) only when it alone does not fit.

The feature rows keep the k = 0 layout: step 0 is the [CLS] / ``<s>`` state, then the states of the current
segment's tokens (its closing separator included), so models and the linear probe read the same (L, d) rows.
Context is causal: never a following turn. Turns are ordered as the conversation context orders them
(:func:`hjcag.data.conversation.dialogue_rows`): by dialogue, then ``turn``, then manifest row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hjcag.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

SpokenTurn = tuple["str | None", str]  # (speaker or None, text)


@dataclass(frozen=True)
class ContextText:
    """One utterance and the turns its encoder reads before it (oldest first, at most k)."""

    text: str
    speaker: str | None = None
    context: tuple[SpokenTurn, ...] = ()

    def segments(self) -> tuple[str, str]:
        """(the context segment, the current segment) of the encoder's sentence pair."""
        return " ".join(tagged(s, t) for s, t in self.context if t), tagged(self.speaker, self.text)

    def content_hash(self) -> str:
        """What the cache key hashes: the exact pair the encoder reads (so a changed earlier turn re-extracts)."""
        blob = json.dumps({"text_context": self.segments()}, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def recorded_text_context(record: Mapping[str, Any] | None) -> int:
    """The k a record says its text was read with: an extractor's description, the text entry of a features record,
    a fine-tuned encoder's finetune.json. Context-free text is recorded without the key (so its records and cache
    keys kept their bytes when context came in): absent means 0. The one reader of that rule."""
    return int((record or {}).get("text_context") or 0)


def tagged(speaker: str | None, text: str) -> str:
    """``"Speaker: text"``, or the text alone when the speaker is unknown."""
    return f"{speaker}: {text}" if speaker else text


def clean_speaker(value: Any) -> str | None:
    """A manifest / request speaker as the tag: stripped text, None when missing or blank."""
    if value is None:
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    text = str(value).strip()
    return text or None


def dialogue_order(dialogue: Sequence[str], turn: np.ndarray) -> list[np.ndarray]:
    """Each dialogue's rows in conversation order: by `turn`, ties by row; dialogues by first appearance (the order
    of :func:`hjcag.data.conversation.dialogue_rows`)."""
    names = np.asarray(dialogue, dtype=str)
    _, first, inverse = np.unique(names, return_index=True, return_inverse=True)
    rows = np.lexsort((np.arange(len(names)), turn, first[inverse]))
    bounds = np.flatnonzero(np.diff(inverse[rows])) + 1
    return list(np.split(rows, bounds))


def context_inputs(manifest: pd.DataFrame, texts: Sequence[str], k: int) -> list[ContextText]:
    """The encoder input of every manifest row: its text (`texts`, by row) with the up to `k` preceding turns of
    its dialogue (``dialogue_id``, ordered by ``turn``), each with its ``speaker`` (optional column)."""
    import pandas as pd

    for column in ("dialogue_id", "turn"):
        if column not in manifest.columns:
            raise ConfigError(f"features.text_context: {k} needs the manifest column '{column}' (the dialogue and "
                              f"the utterance's place in it); add it, or set features.text_context: 0.")
    turn = pd.to_numeric(manifest["turn"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(turn).all():
        bad = manifest["utterance_id"].astype(str).to_numpy()[~np.isfinite(turn)][:5].tolist()
        raise DataError(f"features.text_context: {k} needs a numeric 'turn' in every manifest row; "
                        f"{int((~np.isfinite(turn)).sum())} lack one (first: {bad}). Fill it, or set "
                        f"features.text_context: 0.")
    dialogue = manifest["dialogue_id"].map(lambda v: "" if clean_speaker(v) is None else str(v)).tolist()
    if "" in dialogue:
        bad = manifest["utterance_id"].astype(str).to_numpy()[np.array(dialogue) == ""][:5].tolist()
        raise DataError(f"features.text_context: {k} needs every row's 'dialogue_id'; {dialogue.count('')} lack one "
                        f"(first: {bad}). Fill it, or set features.text_context: 0.")
    speakers = ([clean_speaker(v) for v in manifest["speaker"]] if "speaker" in manifest.columns
                else [None] * len(manifest))
    out: list[ContextText | None] = [None] * len(manifest)
    for rows in dialogue_order(dialogue, turn):
        for pos, row in enumerate(rows):
            before = rows[max(0, pos - k): pos]
            out[row] = ContextText(texts[row], speakers[row], tuple((speakers[r], texts[r]) for r in before))
    return [x for x in out if x is not None]


# ------------------------------------------------------------------------------------------ tokenisation


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair (special tokens included) and where the current segment starts."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    current_start: int


def encode_pair(tokenizer: Any, item: ContextText, max_tokens: int) -> EncodedPair:
    """`item` as the encoder's sentence pair within `max_tokens`: the context loses its oldest tokens first; the
    current segment is cut at its end only when it alone does not fit. (The tokenizer builds the whole pair, special
    tokens and all; tokens are then dropped from it, so any pair format the tokenizer has is kept.)"""
    context, current = item.segments()
    enc = tokenizer(context, current, truncation=False)
    segment = enc.sequence_ids()
    specials = sum(s is None for s in segment)
    n_ctx, n_cur = segment.count(0), segment.count(1)
    keep_cur = min(n_cur, max(1, max_tokens - specials))
    drop_ctx = max(0, n_ctx - max(0, max_tokens - specials - keep_cur))
    kept, seen_ctx, seen_cur = [], 0, 0
    for i, s in enumerate(segment):
        if s == 0:
            seen_ctx += 1
            if seen_ctx <= drop_ctx:
                continue
        elif s == 1:
            seen_cur += 1
            if seen_cur > keep_cur:
                continue
        kept.append(i)
    ids = [enc["input_ids"][i] for i in kept]
    types = [enc["token_type_ids"][i] for i in kept] if "token_type_ids" in enc else None
    start = next(j for j, i in enumerate(kept) if segment[i] == 1)
    return EncodedPair(ids, types, start)


def pair_row(pair: EncodedPair) -> dict[str, list[int]]:
    """An encoded pair as the tokenizer's unpadded row (what ``tokenizer.pad`` batches)."""
    row = {"input_ids": pair.input_ids, "attention_mask": [1] * len(pair.input_ids)}
    if pair.token_type_ids is not None:
        row["token_type_ids"] = pair.token_type_ids
    return row


def pad_pairs(tokenizer: Any, pairs: Sequence[EncodedPair]) -> dict[str, Any]:
    """A padded batch (torch tensors) of encoded pairs."""
    return dict(tokenizer.pad([pair_row(p) for p in pairs], return_tensors="pt"))
