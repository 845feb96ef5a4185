"""Edit a params file's text: add (or replace) a profile, every other byte and comment kept (``hjcag tune``
writes the values it found this way, as a profile ``hjcag train --profile`` reads)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hjcag.errors import ConfigError
from hjcag.params import deep_merge, params_from_dict

log = logging.getLogger(__name__)

PROFILE_SECTIONS = ("model", "features", "validation", "train", "gates")  # dvc.yaml tracks each per profile


def profile_body(raw: Mapping[str, Any], base_profile: str, tuned: Mapping[str, Mapping[str, Any]]
                 ) -> dict[str, Any]:
    """The base profile (every section, ``{}`` where it has none) with the tuned values merged in."""
    base = dict(((raw.get("profiles") or {}).get(base_profile)) or {})
    body = deep_merge(base, {k: dict(v) for k, v in tuned.items()})
    for section in PROFILE_SECTIONS:
        body.setdefault(section, {})
    return body


def write_profile(params_path: str | Path, name: str, base_profile: str,
                  tuned: Mapping[str, Mapping[str, Any]], comment: str = "",
                  record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Add (or replace) ``profiles.<name>`` in the params file; the rest of the file, comments included, keeps its
    bytes: the profile is a text block at the end of the ``profiles:`` mapping (or in place of the old one).
    `record` (the fields of :class:`hjcag.params.TunedOn`) becomes the profile's ``tuned_on``. The file is read back,
    and restored when the profile does not load as intended."""
    path = Path(params_path)
    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"profile name '{name}': use letters, digits, '_', '-' and '.'.")
    body = profile_body(raw, base_profile, tuned)
    if record is not None:
        body["tuned_on"] = dict(record)
    try:
        new_text = _with_profile_block(text, name, body, comment)
    except _NoBlockLayout:
        log.warning("%s: `profiles:` is not a block mapping; rewriting the file without its comments", path)
        raw.setdefault("profiles", {})
        raw["profiles"] = {**(raw["profiles"] or {}), name: body}
        new_text = yaml.safe_dump(raw, sort_keys=False)
    path.write_text(new_text, encoding="utf-8")
    try:
        written = (yaml.safe_load(new_text).get("profiles") or {}).get(name)
        if written != body:
            raise ConfigError(f"the profile read back from {path} differs from the one written")
        params_from_dict(yaml.safe_load(new_text), name, source=str(path))
    except Exception:
        path.write_text(text, encoding="utf-8")
        raise
    return body


class _NoBlockLayout(Exception):
    pass


def _with_profile_block(text: str, name: str, body: Mapping[str, Any], comment: str) -> str:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, line in enumerate(lines) if re.match(r"profiles:\s*(#.*)?$", line)), None)
    if start is None:
        if any(line.startswith("profiles:") for line in lines):
            raise _NoBlockLayout
        return "".join([*lines, "\nprofiles:\n", *_block(name, body, comment, "  ")])
    end = start + 1  # the mapping ends before the next line at column 0 that is not a comment or blank
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1  # comments and blanks before the next top-level key belong to it
    children = [ln for ln in lines[start + 1:end] if ln.strip() and not ln.lstrip().startswith("#")]
    indent = re.match(r"\s*", children[0]).group(0) if children else "  "
    own = re.compile(rf"{re.escape(indent)}{re.escape(name)}:")
    at = next((i for i in range(start + 1, end) if own.match(lines[i])), None)
    if at is None:
        return "".join([*lines[:end], *_block(name, body, comment, indent), *lines[end:]])
    stop = at + 1  # replace the old block: its lines are blank or indented deeper than `indent`
    while stop < end and (not lines[stop].strip() or len(lines[stop]) - len(lines[stop].lstrip()) > len(indent)):
        stop += 1
    while at > start + 1 and lines[at - 1].strip().startswith("# written by hjcag tune"):
        at -= 1
    return "".join([*lines[:at], *_block(name, body, comment, indent), *lines[stop:]])


def _block(name: str, body: Mapping[str, Any], comment: str, indent: str) -> list[str]:
    dumped = yaml.safe_dump({name: dict(body)}, sort_keys=False, default_flow_style=None, width=100)
    head = [f"{indent}# written by hjcag tune{': ' + comment if comment else ''}\n"]
    return head + [f"{indent}{line}\n" for line in dumped.splitlines()]
