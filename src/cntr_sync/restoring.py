"""Putting a kept version back: the one function ``cntr-sync restore`` and
``cntr_sync.restore()`` share.

Owns: choosing the version (the newest, or the newest kept at or before a
moment: ``backups.parse_moment``), putting it back (``transfer.restore_version``:
the file there now is kept first, so a restore can be undone) and turning what
can go wrong into the error tree: ``ConfigError`` for a path or a time that
makes no sense, ``LocalError`` naming the path for no version, a symlink in the
way or a file system that refuses.

A restore is a local edit like any other: it takes no lock, so a daemon running
beside it sees the new file at its next pass and pushes it; a download the
daemon planned before the restore finds the file changed and is put off.

Must not: print, or touch the index or the network.
"""

from __future__ import annotations

from pathlib import Path

from cntr_sync.backups import KeptVersion, PassBackups, parse_moment, version_at
from cntr_sync.errors import ConfigError, LocalError
from cntr_sync.remote_paths import printable, restorable_relpath
from cntr_sync.transfer import UnsafeTarget, restore_version


def restore_kept(
    kept_in: Path, root: Path, path: str, at: float | str | None, *, now: float, name: str = "at"
) -> KeptVersion:
    """Put ``path``'s newest version kept at or before ``at`` (Unix seconds, or as
    ``parse_moment`` reads it; any time if None) back under ``root``; the version
    restored. ``name``: how errors call ``at`` (``--at`` on the command line)."""
    relpath = restorable_relpath(path)
    moment: float | str | None = at
    if isinstance(at, str):
        try:
            moment = parse_moment(at, now)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    version = version_at(kept_in, relpath, moment)
    if version is None:
        when = f" kept at or before {at}" if at is not None else ""
        raise LocalError(f"no version of {printable(relpath)}{when} in {kept_in}", path=path)
    try:
        restore_version(root, relpath, version.path, PassBackups(kept_in, now).keep)
    except UnsafeTarget as exc:
        raise LocalError(f"cannot restore {printable(relpath)}: {exc}", path=path) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LocalError(f"cannot restore {printable(relpath)}: {reason}", path=path) from None
    return version
