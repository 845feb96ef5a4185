"""Per-turn states of a conversation (issue 10): the compact form in which a client hands earlier turns back.

A context model's response carries ``"state"``: the turn's fused vector (what the context layer reads of it) as
``hjcag-state.v1.<model fingerprint>.<base64 of float16 values>``, about 200 characters at width 64. A later
request lists the states of its previous turns under ``"context"``, so a live conversation costs one feature
extraction per turn, not k. The fingerprint (a digest of the served weights) ties a state to the model that made
it: a state from another model or version is refused, never silently misread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import numpy as np
import torch
from torch import nn

from hjcag.serve.request import RequestError

PREFIX = "hjcag-state.v1"


def model_fingerprint(model: nn.Module) -> str:
    """12 hex digits of sha256 over the model's parameters and buffers, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def encode_state(vector: torch.Tensor, fingerprint: str) -> str:
    values = vector.detach().to("cpu", torch.float16).contiguous().numpy().tobytes()
    return f"{PREFIX}.{fingerprint}.{base64.b64encode(values).decode('ascii')}"


def decode_state(text: object, fingerprint: str, width: int, where: str) -> np.ndarray:
    """The (width,) float32 vector of a state this model returned; RequestError naming `where` otherwise."""
    if not isinstance(text, str):
        raise RequestError(f"{where}: a state must be the string a previous response returned under 'state'.")
    parts = text.split(".")
    if len(parts) != 4 or ".".join(parts[:2]) != PREFIX:
        raise RequestError(f"{where}: not a hjcag turn state (expected '{PREFIX}.<model>.<values>', as a previous "
                           "response's 'state').")
    if parts[2] != fingerprint:
        raise RequestError(f"{where}: the state was made by another model (fingerprint {parts[2]}); this endpoint "
                           f"serves model {fingerprint}. Send that turn's input instead of its state.", 409)
    try:
        raw = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: the state's values are not valid base64 ({exc}).") from exc
    if len(raw) != 2 * width:
        raise RequestError(f"{where}: the state holds {len(raw) // 2} values; this model's states hold {width}.")
    vector = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
    if not np.isfinite(vector).all():
        raise RequestError(f"{where}: the state holds NaN or infinite values.")
    return vector
