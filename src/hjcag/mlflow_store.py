"""Where MLflow keeps runs and registered models: the one reading of ``MLFLOW_TRACKING_URI`` /
``MLFLOW_REGISTRY_URI`` and of a SQLite store's file path.

MLflow creates a SQLite store on first connect, so a command that only reads (``hjcag registry show``, ``hjcag
package --model-uri``) checks :func:`missing_store` first rather than leave an empty ``mlruns.db`` behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"  # in the working directory, as `mlflow ui` finds it
SQLITE_PREFIX = "sqlite:///"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store ``mlruns.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def registry_uri() -> str:
    """``MLFLOW_REGISTRY_URI`` if set, else the tracking URI (MLflow's own default)."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri()


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (relative paths stay relative); None for any other URI."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return Path(unquote(uri[len(SQLITE_PREFIX):].split("?", 1)[0]))


def missing_store(uri: str) -> str | None:
    """Why there is nothing to read at `uri` (a SQLite store whose file does not exist), else None."""
    db = sqlite_file(uri)
    if db is None or db.exists():
        return None
    where = "" if db.is_absolute() else f" in {Path.cwd()}"
    return (f"there is no MLflow store at {uri} ({db} does not exist{where}). Run from the folder where "
            "`hjcag register` ran, or set MLFLOW_TRACKING_URI to your tracking server.")
