"""Media paths relative to a declared data root, so a manifest holds the same bytes in every checkout folder.

`hjcag prepare` stores each media path relative to the dataset's root (the ``--source`` folder; for
``--dataset manifest`` the folder of the manifest file) with ``/`` separators; a file outside the root keeps its
absolute path. The root itself is recorded in the parquet's metadata (:data:`DATA_ROOT_KEY`): relative to the
manifest's folder when it was declared relative (dvc.yaml's ``data/demo``), else absolute. Validation writes the
same record into ``manifest.valid.parquet`` and ``quarantine.parquet``, rebased to their folder.

Where media is read, the root is, in this order: one given explicitly (``--data-root``; in Kubeflow the raw-data
artifact, which lives elsewhere in every pod), the one the manifest records, the manifest's own folder (a CSV or
JSONL a user wrote). Paths are compared and joined lexically, never through symlinks, so clips that are links
into a cache keep their names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hjcag.errors import DataError

DATA_ROOT_KEY = b"hjcag.data_root"


def under_root(path: str, root: str | Path) -> str:
    """`path` (absolute, or relative to the working directory) as a manifest stores it: relative to `root` with
    ``/`` separators when it lies inside `root`, else absolute."""
    absolute, base = os.path.abspath(path), os.path.abspath(root)
    rel = os.path.relpath(absolute, base)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return absolute
    return PurePath(rel).as_posix()


def media_path(value: str, root: str | Path | None) -> Path:
    """A stored media path as a path to open: an absolute one as it is, a relative one under `root`."""
    path = Path(value).expanduser()
    if path.is_absolute() or root is None:
        return path
    return Path(os.path.normpath(os.path.join(root, path)))


def root_record(root: str | Path, manifest: str | Path) -> str:
    """What a manifest written to `manifest` records for `root`: the path from the manifest's folder when `root`
    is relative (to the working directory), else `root` itself."""
    if Path(root).is_absolute():
        return os.path.normpath(root)
    rel = os.path.relpath(os.path.abspath(root), os.path.abspath(Path(manifest).parent))
    return PurePath(rel).as_posix()


def root_from_record(record: str, manifest: str | Path) -> Path:
    """The root a manifest at `manifest` records as `record` (relative records from the manifest's folder)."""
    if Path(record).is_absolute():
        return Path(record)
    return Path(os.path.normpath(os.path.join(Path(manifest).parent, record)))


def with_data_root(table: pa.Table, root: str | Path, manifest: str | Path) -> pa.Table:
    """`table` with `root` recorded in its schema metadata, for writing to `manifest`."""
    metadata = dict(table.schema.metadata or {})
    metadata[DATA_ROOT_KEY] = root_record(root, manifest).encode("utf-8")
    return table.replace_schema_metadata(metadata)


def recorded_root(manifest: str | Path) -> Path | None:
    """The data root a parquet manifest records, or None (no record, or not a parquet file)."""
    manifest = Path(manifest)
    if manifest.suffix.lower() != ".parquet" or not manifest.is_file():
        return None
    try:
        metadata = pq.read_schema(manifest).metadata or {}
    except (pa.ArrowInvalid, OSError):
        return None  # reading the manifest itself reports it
    record = metadata.get(DATA_ROOT_KEY)
    return None if record is None else root_from_record(record.decode("utf-8"), manifest)


def resolve_data_root(manifest: str | Path, given: str | Path | None = None) -> Path:
    """The folder relative media paths of `manifest` are under: `given`, else the recorded root, else the
    manifest's own folder."""
    if given is not None and str(given).strip():
        return Path(given)
    return recorded_root(manifest) or Path(manifest).parent


def require_root(root: Path | None, paths: Iterable[Any], where: str) -> None:
    """One clear error, instead of every file missing, when relative media `paths` of `where` are to be read under
    a `root` that is not a folder here."""
    if root is None or root.is_dir():
        return
    if any(isinstance(p, str) and p.strip() and not Path(p.strip()).is_absolute() for p in paths):
        raise DataError(f"data root '{root}' of {where} is not a folder here, and the manifest names its media "
                        "relative to it. Pass --data-root with the dataset's folder (or move the dataset back).")
