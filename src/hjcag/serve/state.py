"""Per-turn states of a conversation (issue 10): the compact form in which a client hands earlier turns back.

A context model's response carries ``"state"``: the turn's fused vector (what the context layer reads of it) as
``hjcag-state.v1.<model fingerprint>.<base64 of float16 values>``, about 200 characters at width 64. A later
request lists the states of its previous turns under ``"context"``, so a live conversation costs one feature
extraction per turn, not k. The fingerprint (a digest of the served weights) ties a state to the model that made
it: a state from another model or version is refused, never silently misread.

A model whose text features were extracted with ``features.text_context`` k > 0 (its encoder reads the k preceding
turns, :mod:`hjcag.features.text_context`) returns ``hjcag-state.v2.<fingerprint>.<values>.<turns>.<check>``
instead: ``values`` as in v1 (empty when the model has no ``model.context``), ``turns`` the base64 of the UTF-8
JSON ``[[speaker or null, text or null], ...]`` of the last k turns, this one last (so the next request's encoder
input is built from the previous answer's state alone), and ``check`` 12 hex digits of sha256 over the rest, so a
cut or edited state is refused. Its size is bounded by k turns of at most ``Limits.max_text_chars`` characters and
speakers of at most ``MAX_SPEAKER_CHARS``. Models with text_context 0 keep v1, exactly as before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from hjcag.serve.request import MAX_SPEAKER_CHARS, RequestError, SpokenTurn, TurnState

PREFIX = "hjcag-state.v1"
PREFIX_V2 = "hjcag-state.v2"


def model_fingerprint(model: nn.Module) -> str:
    """12 hex digits of sha256 over the model's parameters and buffers, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def encode_state(vector: torch.Tensor | None, fingerprint: str, spoken: Sequence[SpokenTurn] | None = None) -> str:
    """v1 (`vector` only) when `spoken` is None, else v2 (see the module docstring)."""
    values = "" if vector is None else base64.b64encode(
        vector.detach().to("cpu", torch.float16).contiguous().numpy().tobytes()).decode("ascii")
    if spoken is None:
        return f"{PREFIX}.{fingerprint}.{values}"
    turns = base64.b64encode(json.dumps([list(t) for t in spoken], ensure_ascii=False).encode("utf-8")).decode("ascii")
    body = f"{PREFIX_V2}.{fingerprint}.{values}.{turns}"
    return f"{body}.{_check(body)}"


def _check(body: str) -> str:
    return hashlib.sha256(body.encode("ascii")).hexdigest()[:12]


def decode_state(text: object, fingerprint: str, width: int, where: str, text_context: int = 0,
                 max_text_chars: int = 20_000) -> TurnState:
    """What a state this model returned holds; RequestError naming `where` otherwise. `width`: the fused vector's
    (0: the model keeps none); `text_context`: how many turns of text its states carry (0: a v1 state)."""
    if not isinstance(text, str):
        raise RequestError(f"{where}: a state must be the string a previous response returned under 'state'.")
    parts = text.split(".")
    prefix = PREFIX_V2 if text_context else PREFIX
    fields = 6 if text_context else 4
    if len(parts) != fields or ".".join(parts[:2]) != prefix:
        raise RequestError(f"{where}: not a hjcag turn state of this model (expected '{prefix}.<model>...', as a "
                           "previous response's 'state').")
    if parts[2] != fingerprint:
        raise RequestError(f"{where}: the state was made by another model (fingerprint {parts[2]}); this endpoint "
                           f"serves model {fingerprint}. Send that turn's input instead of its state.", 409)
    if text_context and parts[5] != _check(".".join(parts[:5])):
        raise RequestError(f"{where}: the state was altered or cut (its check does not match); send it exactly as "
                           "the previous response returned it.")
    vector = _vector(parts[3], width, where) if width else None
    if not text_context:
        assert vector is not None
        return TurnState(vector=vector)
    return TurnState(vector=vector, spoken=_spoken(parts[4], text_context, max_text_chars, where))


def _vector(values: str, width: int, where: str) -> np.ndarray:
    try:
        raw = base64.b64decode(values, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: the state's values are not valid base64 ({exc}).") from exc
    if len(raw) != 2 * width:
        raise RequestError(f"{where}: the state holds {len(raw) // 2} values; this model's states hold {width}.")
    vector = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
    if not np.isfinite(vector).all():
        raise RequestError(f"{where}: the state holds NaN or infinite values.")
    return vector


def _spoken(turns: str, text_context: int, max_text_chars: int, where: str) -> tuple[SpokenTurn, ...]:
    """The state's [[speaker, text], ...]: at most `text_context` turns of strings (or nulls) within the limits."""
    try:
        doc = json.loads(base64.b64decode(turns, validate=True).decode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: the state's turns do not decode ({exc}).") from exc
    ok = isinstance(doc, list) and len(doc) <= text_context and all(
        isinstance(t, list) and len(t) == 2
        and (t[0] is None or (isinstance(t[0], str) and len(t[0]) <= MAX_SPEAKER_CHARS))
        and (t[1] is None or (isinstance(t[1], str) and len(t[1]) <= max_text_chars)) for t in doc)
    if not ok:
        raise RequestError(f"{where}: the state's turns are not at most {text_context} [speaker, text] pairs within "
                           "the request limits.")
    return tuple((t[0], t[1]) for t in doc)
