"""Per-utterance feature cache: one ``.npy`` per (content hash, extractor config), written atomically.

The key hashes what determines the features: the media bytes (or the text) plus everything about the extractor
that changes its output (model id and weights fingerprint, feature set, L, span, ...). A re-run therefore extracts
nothing twice, and a run interrupted half-way resumes where it stopped, because entries are written as soon as
each batch is done. Changing any setting changes the key, so stale entries are never read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hjcag.artifacts import file_digest

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_file_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) so a dialog video shared by many
    utterances is read once per process."""
    path = Path(path)
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _file_hashes:
        _file_hashes[memo_key] = file_digest(path)
    return _file_hashes[memo_key]


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dir_fingerprint(path: str | Path) -> str:
    """A cheap identity of a local model directory: small files by content, large ones by size and mtime."""
    path = Path(path)
    h = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = item.stat()
        h.update(str(item.relative_to(path)).encode())
        if stat.st_size <= _CHUNK:
            h.update(item.read_bytes())
        else:
            h.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()


def cache_key(content_hash: str, config: Mapping[str, Any]) -> str:
    """The entry name for `content_hash` under an extractor `config` (JSON-serialisable)."""
    blob = json.dumps({"content": content_hash, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class FeatureCache:
    """A directory of ``<namespace>/<key[:2]>/<key>.npy``; ``root=None`` disables caching."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = None if root is None else Path(root)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _path(self, namespace: str, key: str) -> Path:
        assert self.root is not None
        return self.root / namespace / key[:2] / f"{key}.npy"

    def get(self, namespace: str, key: str) -> np.ndarray | None:
        if self.root is None:
            return None
        path = self._path(namespace, key)
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:  # a damaged entry is a miss, not a failure
            log.warning("feature cache: ignoring unreadable entry %s (%s); it will be recomputed.", path, exc)
            return None

    def put(self, namespace: str, key: str, value: np.ndarray) -> None:
        """Write atomically: a temporary file in the same directory, then os.replace."""
        if self.root is None:
            return
        path = self._path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(value), allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
