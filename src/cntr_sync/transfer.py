"""The file side of a transfer: opening exactly what the scan saw, and reading it again.

Owns: opening a file for upload so that only the very file the scan hashed is
sent (same inode, size and mtime, never a symlink's target unless links are
followed), a reader that reports progress as the upload streams, and hashing a
file again when it changed under its upload.

Must not: talk to the API, touch the index, or decide anything; the engine
calls these from its worker threads.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cntr_sync.scan import hash_fd, open_regular

Tick = Callable[[], None]


class ChangedSinceScan(Exception):
    """The file is not the one the scan saw (changed, replaced, gone): nothing was sent."""


class TickingReader(io.BufferedReader):
    """A buffered file that calls ``tick`` on every read: a long upload is progress."""

    def __init__(self, raw: io.FileIO, tick: Tick) -> None:
        super().__init__(raw)
        self._tick = tick

    def read(self, size: int | None = -1, /) -> bytes:
        self._tick()
        return super().read(size)


@dataclass(frozen=True)
class Expected:
    """What the scan saw of a file: the upload must be this file, or nothing."""

    size: int
    mtime_ns: int
    inode: int  # 0: unknown


def open_as_scanned(
    path: Path, expected: Expected, *, follow_symlinks: bool, tick: Tick
) -> tuple[TickingReader, os.stat_result]:
    """Open ``path`` once and check it against the scan; ``ChangedSinceScan`` if it differs.

    The descriptor is what gets streamed, so a file swapped after the scan
    (for a link to ~/.ssh/id_rsa, say) is never what is sent.
    """
    try:
        fd = open_regular(path, follow_symlinks=follow_symlinks)
    except OSError as exc:
        raise ChangedSinceScan(str(path)) from exc
    handle = TickingReader(io.FileIO(fd, "rb", closefd=True), tick)
    seen = os.fstat(fd)
    if (seen.st_size, seen.st_mtime_ns) != (expected.size, expected.mtime_ns) or (
        expected.inode and seen.st_ino != expected.inode
    ):
        handle.close()
        raise ChangedSinceScan(str(path)) from OSError(errno.ESTALE, "changed since the scan")
    return handle, seen


@dataclass(frozen=True)
class Rehashed:
    """A file hashed again, holding still while it was read."""

    size: int
    mtime_ns: int
    inode: int
    hash: str


def rehash_if_still(path: Path, root: Path, *, follow_symlinks: bool) -> Rehashed | None:
    """Hash ``path`` again; None when it is gone, unreadable, moving, or leads out of root."""
    if follow_symlinks and not _resolves_inside(path, root):
        return None  # a link now leads out of the root: the next scan decides
    try:
        fd = open_regular(path, follow_symlinks=follow_symlinks)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        digest = hash_fd(fd)
        after = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return None
    return Rehashed(after.st_size, after.st_mtime_ns, after.st_ino, digest)


def _resolves_inside(path: Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
