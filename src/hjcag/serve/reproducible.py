"""The same files make the same archive bytes: torch-model-archiver's zip, normalised after the fact.

The archiver stamps every zip entry with its file's modification time, orders entries as the file system lists
them and writes the current time into ``MAR-INF/MANIFEST.json`` (``createdOn``). Rewritten here: entries sorted by
name, one timestamp for all of them and for ``createdOn``, one permission mode. The timestamp is
``SOURCE_DATE_EPOCH`` when set (the reproducible-builds convention), else 1980-01-01, the earliest a zip holds.
So an archive's sha256 (its record, the Kubernetes init container's check, ``dvc.lock``) changes only with its
content.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import zipfile
from pathlib import Path

MANIFEST_ENTRY = "MAR-INF/MANIFEST.json"
ZIP_EPOCH = dt.datetime(1980, 1, 1, tzinfo=dt.UTC)
FILE_MODE = 0o644


def archive_time() -> dt.datetime:
    """``SOURCE_DATE_EPOCH`` (seconds, UTC) when set and valid, else the zip epoch (never earlier than it)."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    try:
        when = dt.datetime.fromtimestamp(int(raw), dt.UTC) if raw else ZIP_EPOCH
    except (ValueError, OverflowError, OSError):
        when = ZIP_EPOCH
    return max(when, ZIP_EPOCH)


def normalise_archive(path: str | Path) -> Path:
    """Rewrite the .mar zip at `path` in place (atomically) as the module docstring says."""
    path = Path(path)
    when = archive_time()
    stamp = (when.year, when.month, when.day, when.hour, when.minute, when.second)
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist() if not info.is_dir()]
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as dst:
        for info, data in sorted(entries, key=lambda entry: entry[0].filename):
            if info.filename == MANIFEST_ENTRY:
                manifest = json.loads(data)
                manifest["createdOn"] = when.strftime("%d/%m/%Y %H:%M:%S")  # the archiver's own format
                data = json.dumps(manifest, indent=2).encode("utf-8")
            out = zipfile.ZipInfo(info.filename, date_time=stamp)
            out.compress_type = info.compress_type
            out.external_attr = FILE_MODE << 16
            dst.writestr(out, data)
    os.replace(tmp, path)
    return path
