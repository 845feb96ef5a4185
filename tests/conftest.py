"""Fixtures several test modules share. Plain helpers live in tests/*_fixtures.py modules (`import params_fixtures`
etc.: this file puts tests/ on sys.path); a module's own fixture of the same name overrides one here."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).parent))  # lets tests `import media_fixtures`


@pytest.fixture()
def one_cpu_thread() -> Iterator[None]:
    """torch on one thread for the test, restored after. Tiny models run fastest on one, and much faster when the
    machine's cores are busy. A module takes it with `pytestmark = pytest.mark.usefixtures("one_cpu_thread")`."""
    from hjcag.device import torch_threads

    with torch_threads(1):
        yield


# ---------------------------------------------------------------- tiny CLI inputs


@pytest.fixture()
def params(tmp_path: Path) -> Path:
    """params.yaml with the demo profile shrunk to seconds: 2 folds, 2 epochs, width 8."""
    from params_fixtures import TINY_MODEL, TINY_TRAIN, demo_params

    return demo_params(tmp_path / "params.yaml", TINY_MODEL, TINY_TRAIN)


@pytest.fixture()
def features(tmp_path: Path) -> Path:
    """70 utterances of the demo profile's 7 labels, 5 to a dialogue, with text and audio features."""
    from params_fixtures import DEMO_LABELS, features_file

    return features_file(tmp_path / "features.npz", DEMO_LABELS, 70, 5, audio=True)


# ---------------------------------------------------------------- MLflow


@pytest.fixture(scope="module")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store with MLflow's schema migrations done, once per module (they take seconds): a test
    copies it rather than migrating a store of its own."""
    from mlflow import MlflowClient

    from hjcag.registry import tracking

    db = tmp_path_factory.mktemp("template") / "mlruns.db"
    with tracking.quiet_mlflow():
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture()
def point_mlflow_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """A function that points MLflow's tracking and registry at a URI (in the environment, which subprocesses
    inherit) for this test; after it, MLflow's global state forgets the URI and monkeypatch restores the env."""
    def point(uri: str) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
        monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)

    yield point
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture()
def mlflow_client(tmp_path: Path, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch,
                  point_mlflow_at: Callable[[str], None]) -> MlflowClient:
    """A private SQLite tracking + registry store (a copy of the migrated one) that MLflow points at; the working
    directory is tmp_path (not a git repository)."""
    from mlflow import MlflowClient

    db = tmp_path / "mlruns.db"
    shutil.copy(migrated_mlflow_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.chdir(tmp_path)
    point_mlflow_at(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
