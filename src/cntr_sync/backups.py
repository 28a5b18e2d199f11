"""Backups: the local files a pass replaced or deleted because of the container, kept.

A model's mistake must be undoable. Before a pass removes local bytes because of
the remote side (a download over an existing file, a propagated remote deletion,
a ``remote-wins`` conflict), the previous file is kept here, in a layout a
person can restore from with ``cp``::

    BACKUP_DIR/2026-12-07T140512Z/notes/plan.md    # as it was before that pass

One folder per pass, named by the pass's UTC start time (``-2``, ``-3`` when two
passes start within one second, or when one pass keeps a relpath twice), the
file at its relpath inside. Where the
backup directory is on the root's file system, a file is kept by a hard link (a
replaced file) or a rename (a deleted one): no copy of a large file. Elsewhere it
is copied, and fsynced before the tree is touched.

Owns: keeping a file (``PassBackups.keep``, given the open directory that holds
it, as ``transfer`` walks there), listing what is kept (``versions``), retention
(``prune``: ``backup_keep_days`` and ``backup_max_bytes``, oldest first, never
the newest version of a file) and choosing the version to restore
(``version_at``). Putting a version back into the tree is ``transfer.restore_version``'s.

Must not: touch the index or the network, or follow a symlink in the tree.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cntr_sync.fileio import copy_fd

#: How a file leaves the tree: a link (it is replaced next), a move (it is deleted),
#: or a copy (its bytes stay in the tree under another name, and may change there).
KeepHow = Literal["link", "move", "copy"]

_FOLDER = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{6})Z(?:-(\d+))?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_STAMP = "%Y-%m-%dT%H%M%S"


@dataclass(frozen=True, slots=True)
class KeptVersion:
    """One kept version of a file: its relpath, when it was kept (the pass's UTC start,
    seconds), its size and where it is."""

    relpath: str
    kept_at: float
    size: int
    path: Path
    folder: str

    def to_json(self) -> dict[str, object]:
        """As ``--json`` shows it: the relpath, the pass folder, bytes, the kept file."""
        return {
            "path": self.relpath,
            "kept": self.folder,
            "bytes": self.size,
            "file": str(self.path),
        }


def folder_time(name: str) -> float | None:
    """The UTC time a pass folder's name stands for; None for anything else."""
    found = _FOLDER.match(name)
    if found is None:
        return None
    return float(calendar.timegm(time.strptime(found.group(1), _STAMP)))


class PassBackups:
    """The versions one pass keeps, in one folder made when the first is kept.

    Thread-safe: the pass's local actions run in a pool.
    """

    def __init__(self, directory: Path, started_at: float) -> None:
        self.directory = directory
        self.started_at = started_at
        self.kept: list[KeptVersion] = []
        self._folders: list[Path] = []
        self._lock = threading.Lock()

    def keep(self, directory_fd: int, name: str, relpath: str, how: KeepHow) -> KeptVersion:
        """Keep ``name`` (in the open directory ``directory_fd``) as ``relpath``'s version.

        Raises ``OSError`` when it cannot be kept; then the caller must leave the
        file as it is: nothing is removed from the tree without its backup.
        """
        folder = self._folder_for(relpath)
        target = folder / relpath
        found = os.stat(name, dir_fd=directory_fd, follow_symlinks=False)
        if not stat.S_ISREG(found.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", relpath)
        kept = False
        if how != "copy":
            try:
                if how == "link":
                    os.link(name, target, src_dir_fd=directory_fd, follow_symlinks=False)
                else:
                    os.rename(name, target, src_dir_fd=directory_fd)
                kept = True
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                    raise
        if not kept:
            _copy_out(directory_fd, name, target)
            if how == "move":
                os.unlink(name, dir_fd=directory_fd)
        kept_at = folder_time(folder.name) or self.started_at  # as versions() reads it back
        version = KeptVersion(relpath, kept_at, found.st_size, target, folder.name)
        with self._lock:
            self.kept.append(version)
        return version

    def _folder_for(self, relpath: str) -> Path:
        """The folder ``relpath`` is kept in: the pass's, or a further one for a relpath
        this pass keeps again (its parent directory made under the lock)."""
        with self._lock:
            for folder in self._folders:
                if not os.path.lexists(folder / relpath):
                    break
            else:
                folder = _new_folder(self.directory, self.started_at)
                self._folders.append(folder)
            (folder / relpath).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder


def _new_folder(directory: Path, started_at: float) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime(_STAMP, time.gmtime(started_at)) + "Z"
    number = 1
    while True:
        folder = directory / (stamp if number == 1 else f"{stamp}-{number}")
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            number += 1
            continue
        return folder


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) != (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    )


def _copy_out(directory_fd: int, name: str, target: Path) -> None:
    """Copy a file of the tree (never through a symlink) to ``target``, fsynced; an
    OSError if it changed meanwhile (size, mtime or ctime), so nothing is removed
    from the tree on the strength of a torn copy."""
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory_fd)
    try:
        written = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            before = os.fstat(source)
            copied = copy_fd(source, written)
            if copied != before.st_size or _changed(before, os.fstat(source)):
                # Written to while it was copied: no backup, so it stays in the tree.
                raise OSError(errno.EAGAIN, "the file changed while it was copied", name)
            os.fchmod(written, stat.S_IMODE(before.st_mode))  # as a link or a move keeps it
            os.fsync(written)
        except BaseException:
            os.close(written)
            with contextlib.suppress(OSError):
                target.unlink()
            raise
        os.close(written)
    finally:
        os.close(source)


# -- what is kept ----------------------------------------------------------------------


def versions(directory: Path, relpath: str | None = None) -> list[KeptVersion]:
    """Every kept version (of ``relpath`` only, if given), oldest first."""
    found: list[KeptVersion] = []
    try:
        folders = sorted(os.scandir(directory), key=lambda entry: _folder_key(entry.name))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for folder in folders:
        kept_at = folder_time(folder.name)
        if kept_at is None or not folder.is_dir(follow_symlinks=False):
            continue
        base = Path(folder.path)
        for path, size in _files(base):
            name = path.relative_to(base).as_posix()
            if relpath is None or name == relpath:
                found.append(KeptVersion(name, kept_at, size, path, folder.name))
    return found


def version_at(directory: Path, relpath: str, at: float | str | None = None) -> KeptVersion | None:
    """The newest version of ``relpath`` kept at or before ``at``: a time (Unix
    seconds), or a pass folder's name (that folder, or an earlier one: two passes in
    one second have folders ``T...Z`` and ``T...Z-2``); any time if None.
    ValueError for a string that names no folder (``parse_moment`` reads the rest)."""
    if isinstance(at, str):
        if not is_folder_name(at):
            raise ValueError(f"{at!r} is not a backup folder's name")
        last = _folder_key(at)
        candidates = [v for v in versions(directory, relpath) if _folder_key(v.folder) <= last]
    else:
        candidates = [v for v in versions(directory, relpath) if at is None or v.kept_at <= at]
    return candidates[-1] if candidates else None


def is_folder_name(text: str) -> bool:
    """Whether ``text`` names a pass folder (``2026-12-07T140512Z``, ``...Z-2``)."""
    return _FOLDER.match(text) is not None


def parse_moment(text: str, now: float) -> float | str:
    """A moment as a person writes it: ``1h``, ``30m``, ``2d`` ago; an ISO 8601
    time (UTC unless it says); or a pass folder's name, returned as it is (it
    picks that folder even among several of one second: ``folder_time`` for its
    time). ValueError for anything else."""
    text = text.strip()
    found = _DURATION.match(text)
    if found is not None:
        return now - float(found.group(1)) * _UNIT_SECONDS[found.group(2)]
    if is_folder_name(text):
        return text
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: write 1h, 30m, 2d, 2026-12-07T14:05 or a backup folder's name"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def prune(directory: Path, *, keep_days: float, max_bytes: int, now: float) -> list[KeptVersion]:
    """Remove versions older than ``keep_days``, then the oldest until the rest fit
    ``max_bytes``; never the newest version of a file. Returns what went (a version
    that cannot be removed stays, and is not in it)."""
    kept = versions(directory)
    newest: dict[str, KeptVersion] = {}
    for version in kept:
        newest[version.relpath] = version  # oldest first: the last one wins
    protected = {id(version) for version in newest.values()}
    total = sum(version.size for version in kept)
    cutoff = now - keep_days * 86_400
    removed: list[KeptVersion] = []
    for version in kept:
        if id(version) in protected:
            continue
        if version.kept_at < cutoff or total > max_bytes:
            try:
                version.path.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                continue  # not removable (permissions): it stays, and counts
            total -= version.size
            removed.append(version)
    for folder in {version.path.parents[0] for version in removed}:
        _remove_empty_up_to(folder, directory)
    return removed


def _remove_empty_up_to(folder: Path, top: Path) -> None:
    while folder != top and folder.is_relative_to(top):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _files(base: Path) -> Iterator[tuple[Path, int]]:
    for dirpath, _dirnames, filenames in os.walk(base):
        for filename in filenames:
            path = Path(dirpath) / filename
            with contextlib.suppress(FileNotFoundError):
                yield path, path.lstat().st_size


def _folder_key(name: str) -> tuple[str, int]:
    found = _FOLDER.match(name)
    if found is None:
        return (name, 0)
    return (found.group(1), int(found.group(2) or 1))
