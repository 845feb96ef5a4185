"""User-facing errors.

Anything a user can cause (a bad file, a wrong option, a missing key) raises a subclass of
:class:`HjcagError` with a message that says what is wrong, where, and how to fix it. The CLI prints
the message without a traceback and exits with status 2; everything else is a bug and keeps its traceback.
An OSError a user can fix (a read-only or full disk, a missing permission, a file where a folder belongs) is
described in one line by :func:`os_error_message`.
"""

from __future__ import annotations

import errno
import os


class HjcagError(Exception):
    """Base class for errors caused by user input or configuration."""


class ConfigError(HjcagError):
    """params.yaml or a command-line option is invalid."""


class FeatureFileError(HjcagError):
    """A features file (.npz / .pkl) is missing a key, has a wrong shape or holds non-finite values."""


class DataError(HjcagError):
    """A dataset (CSV, manifest, media) cannot be read or is inconsistent."""


class OutputError(HjcagError):
    """A path cannot be written or read: no permission, a read-only or full disk, a file where a folder belongs."""


def os_error_message(exc: OSError, path: str | os.PathLike[str] | None = None, option: str | None = None) -> str | None:
    """One line for an OSError the user can fix (what, which path, how), or None for any other kind, which is a
    bug and keeps its traceback. `path` names the file when the error does not (a failed write() does not);
    `option` is the command-line option that chose it (the fix then names it)."""
    fix = _FIXES.get(exc.errno) if exc.errno is not None else None
    if fix is None:
        return None
    where = exc.filename if exc.filename is not None else path
    target = f"'{os.fsdecode(where)}'" if where is not None else "the output"
    other = f"pass another {option}" if option else "use another path"
    blocker = _file_in_the_way(where) if exc.errno == errno.ENOTDIR and where is not None else None
    return fix.format(target=target, other=other, blocker=blocker or "a part of the path") + (
        f" ({exc.strerror})" if exc.strerror else "")


def _file_in_the_way(path: str | os.PathLike[str]) -> str | None:
    """The first existing component of `path` that is a file, not a folder (what ENOTDIR complains about)."""
    current = os.path.abspath(os.fsdecode(path))
    parts = []
    while True:
        parts.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for part in reversed(parts[1:]):  # from the root down, excluding the path itself
        if os.path.lexists(part) and not os.path.isdir(part):
            return part
    return None


_FIXES: dict[int, str] = {
    errno.EACCES: "{target}: permission denied; make it writable for this user (chmod / chown) or {other}",
    errno.EPERM: "{target}: operation not permitted; make it writable for this user (chmod / chown) or {other}",
    errno.EROFS: "{target} is on a read-only file system; {other} on a writable disk",
    errno.ENOTDIR: "{target}: '{blocker}' is a file, not a folder; move that file away or {other}",
    errno.EEXIST: "{target} exists and is not a folder; move it away or {other}",
    errno.EISDIR: "{target} is a folder where a file is expected; remove it or {other} (a file path)",
    errno.ENOSPC: "no space left on the disk of {target}; free some space or {other}, then run the command again",
    errno.EDQUOT: "disk quota exceeded writing {target}; free some space or {other}, then run the command again",
    errno.ENOENT: "{target} does not exist; check the path",
    errno.ENAMETOOLONG: "{target}: a file name in the path is too long; {other}",
}
