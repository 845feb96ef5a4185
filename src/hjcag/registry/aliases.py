"""Promotion and rollback with registry aliases (``candidate`` -> ``champion``), never the deprecated stages.

Every promotion records the champion it replaced in the new champion's version tag
``hjcag.previous_champion``; :func:`rollback` follows that tag, so repeated rollbacks walk back through the
promotion history one step at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hjcag.errors import HjcagError
from hjcag.params import Params
from hjcag.registry.tracking import get_client, quiet_mlflow, registry_uri

log = logging.getLogger(__name__)

TAG_PREVIOUS = "hjcag.previous_champion"
TAG_ROLLED_BACK = "hjcag.rolled_back"


@dataclass(frozen=True)
class AliasMove:
    name: str
    alias: str
    version: str
    previous: str | None  # the version the alias pointed at before (None if it was unset)


CANDIDATE = "candidate"  # set by `hjcag register` on every new version
CHAMPION = "champion"  # what serving deploys; moved by promote / rollback

def model_name_for(params: Params) -> str:
    """The registered model of a dataset: ``hjcag-<dataset>``."""
    return f"hjcag-{params.dataset}"


def _registered_model(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        raise HjcagError(f"no registered model '{name}' in the registry at {registry_uri()}. Register one with "
                         "`hjcag register`, or set MLFLOW_TRACKING_URI to the right server.") from exc


def _version(client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise HjcagError(f"registered model '{name}' has no version {version}. "
                         f"`hjcag registry show --name {name}` lists its versions.") from exc


def promote(name: str, version: str | int | None = None) -> AliasMove:
    """Point ``champion`` at `version` (default: the ``candidate`` version), remembering the previous champion."""
    client = get_client(existing=True)
    with quiet_mlflow():
        aliases = dict(_registered_model(client, name).aliases or {})
        if version is None:
            if CANDIDATE not in aliases:
                raise HjcagError(f"'{name}' has no '{CANDIDATE}' version to promote. Register a run that passes the "
                                 "gates (`hjcag register`), or pass --version N.")
            version = aliases[CANDIDATE]
        target = _version(client, name, str(version))
        current = aliases.get(CHAMPION)
        if current is not None and str(current) == str(target.version):
            raise HjcagError(f"version {target.version} of '{name}' is already the '{CHAMPION}'; nothing to promote.")
        if current is not None:
            client.set_model_version_tag(name, target.version, TAG_PREVIOUS, str(current))
        elif TAG_PREVIOUS in target.tags:  # stale from an earlier promotion: there is no champion to go back to
            client.delete_model_version_tag(name, target.version, TAG_PREVIOUS)
        client.set_registered_model_alias(name, CHAMPION, target.version)
    log.info("'%s': %s -> version %s (was %s)", name, CHAMPION, target.version, current or "unset")
    return AliasMove(name, CHAMPION, str(target.version), None if current is None else str(current))


def rollback(name: str) -> AliasMove:
    """Point ``champion`` back at the version it replaced when the current champion was promoted."""
    client = get_client(existing=True)
    with quiet_mlflow():
        aliases = dict(_registered_model(client, name).aliases or {})
        current = aliases.get(CHAMPION)
        if current is None:
            raise HjcagError(f"'{name}' has no '{CHAMPION}'; nothing to roll back. "
                             f"Promote a version first with `hjcag registry promote --name {name}`.")
        previous = _version(client, name, str(current)).tags.get(TAG_PREVIOUS)
        if not previous:
            raise HjcagError(f"'{CHAMPION}' of '{name}' (version {current}) replaced no earlier champion; "
                             "there is nothing to roll back to.")
        _version(client, name, previous)  # still exists?
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_model_version_tag(name, str(current), TAG_ROLLED_BACK, "true")
    log.info("'%s': %s rolled back from version %s to %s", name, CHAMPION, current, previous)
    return AliasMove(name, CHAMPION, str(previous), str(current))


def show(name: str) -> dict[str, Any]:
    """The registered model's aliases and versions with their tags (what ``hjcag registry show`` prints)."""
    client = get_client(existing=True)
    with quiet_mlflow():
        model = _registered_model(client, name)
        versions = client.search_model_versions(f"name = '{name}'")
    aliases = {alias: str(v) for alias, v in (model.aliases or {}).items()}
    return {
        "name": name,
        "registry": registry_uri(),
        "aliases": aliases,
        "versions": [
            {
                "version": str(v.version),
                "aliases": sorted(a for a, ver in aliases.items() if ver == str(v.version)),
                "run_id": v.run_id,
                "source": v.source,
                "created": v.creation_timestamp,
                "description": v.description,
                "tags": dict(v.tags),
            }
            for v in sorted(versions, key=lambda v: int(v.version))
        ],
    }


def format_show(info: dict[str, Any]) -> str:
    """A short human-readable table of :func:`show`'s result."""
    lines = [f"{info['name']} ({info['registry']})",
             "aliases: " + (", ".join(f"{a} -> v{v}" for a, v in sorted(info["aliases"].items())) or "none")]
    for v in info["versions"]:
        t = v["tags"]
        lines.append(
            f"  v{v['version']:<4} {','.join(v['aliases']) or '-':<20} acc {t.get('accuracy_mean', '?'):<9} "
            f"wF1 {t.get('weighted_f1_mean', '?'):<9} commit {t.get('git_commit', '?')[:12]} "
            f"data {t.get('dvc_data_hash', '?')[:12]} params {t.get('params_hash', '?')[:12]}"
        )
    return "\n".join(lines)
