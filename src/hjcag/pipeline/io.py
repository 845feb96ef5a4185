"""How the KFP components turn their inputs into what the stages take: params as text, the raw-dataset artifact.

Artifacts between components are directories (``Output[...].path``); the stage functions in :mod:`hjcag.stages`
read and write them like any other folder. Only two things are KFP's own:

    params     every component takes the params.yaml *text* (empty: the one shipped with the code) and a profile,
               so a pipeline run carries its exact hyperparameters
    raw data   either the synthetic demo dataset written into the artifact, or a pointer (``source_dir`` in its
               metadata) to a dataset on a mounted volume, so gigabytes of media are not copied between steps.
               Manifests name media relative to this root (:mod:`hjcag.data.media_root`), and every step that
               reads media takes the artifact and passes :func:`raw_root` on as the data root: each pod finds
               the artifact at a path of its own
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hjcag.errors import ConfigError, DataError
from hjcag.params import SHIPPED_PARAMS_FILE, Params, params_from_text

REPO_ROOT = SHIPPED_PARAMS_FILE.parent  # the checkout (the image installs it editable)
PARAMS_FILE = SHIPPED_PARAMS_FILE.name
PARAMS_SOURCE = "the params_yaml pipeline parameter"  # what errors in the given text name
SOURCE_KEY = "source_dir"  # raw-dataset artifact metadata: the dataset lives on a mounted volume, here


def default_params_text() -> str:
    """The params.yaml that ships with the code (the repository's; the pipeline image installs it)."""
    path = SHIPPED_PARAMS_FILE
    if not path.is_file():
        raise ConfigError(f"no params.yaml next to the installed hjcag ({path}); pass the params as text "
                          "(the pipeline parameter params_yaml).")
    return path.read_text(encoding="utf-8")


def params_text(params_yaml: str) -> tuple[str, str]:
    """The params text a component takes (`params_yaml`; empty: the shipped params.yaml) and what errors in it name."""
    if params_yaml.strip():
        return params_yaml, PARAMS_SOURCE
    return default_params_text(), str(SHIPPED_PARAMS_FILE)


def resolve_params(params_yaml: str, profile: str) -> Params:
    """The text `params_yaml` (empty: the shipped params.yaml) under `profile` (empty: the file's ``profile:``)."""
    text, source = params_text(params_yaml)
    return params_from_text(text, profile or None, source=source)


def write_params(params_yaml: str, profile: str, workdir: str | Path) -> tuple[Params, Path]:
    """:func:`resolve_params`, and its text written to ``workdir/params.yaml`` for the stages that read a params
    file (tuning writes the tuned profile into it, packaging copies it into the archive)."""
    text, source = params_text(params_yaml)
    params = params_from_text(text, profile or None, source=source)  # checked before anything is written
    path = Path(workdir) / PARAMS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return params, path


def raw_dataset(out: str | Path, source_dir: str = "", demo_size: str = "tiny", seed: int = 13,
                context_cue: float = 0.0) -> dict[str, str]:
    """The raw-dataset artifact: a pointer to `source_dir` (a dataset on a mounted volume), or, without one, the
    synthetic demo dataset written into `out` (`context_cue`: its share of echo turns, issue 10). Returns the
    artifact's metadata."""
    from hjcag import stages

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if source_dir:
        if not Path(source_dir).is_dir():
            raise DataError(f"dataset directory '{source_dir}' not found in this step's container; mount the data "
                            "volume there (the pipeline mounts the data PVC at /data) or fix source_dir.")
        (out / "SOURCE").write_text(source_dir + "\n", encoding="utf-8")
        return {SOURCE_KEY: source_dir}
    stages.demo_data(out, size=demo_size, seed=seed, context_cue=context_cue)
    return {"demo_size": demo_size, "seed": str(seed), "context_cue": str(context_cue)}


def raw_root(path: str | Path, metadata: dict[str, Any] | None) -> Path:
    """Where the raw dataset of a raw-dataset artifact lives."""
    source = (metadata or {}).get(SOURCE_KEY)
    return Path(source) if source else Path(path)
