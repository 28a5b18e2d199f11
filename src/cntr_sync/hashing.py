"""Reading a local file to hash it: the one place that does.

Owns: the content digest (xxh3-128, hex) of a regular file, read in 1 MiB chunks
(``hash_file``, ``hash_fd``); opening a path only if it is a regular file
(``open_regular``, which uploads use too); and the first scan's read of a small
file whose stat and digest both come through one descriptor (``hash_listed_file``,
the one place that reads a whole file in one call).

Must not: read anything that is not a regular file (opening a FIFO for reading
blocks, so it is opened non-blocking and closed unread; a device is never opened,
the callers check the directory entry's type first), write anything, or decide
what a digest means (the scan and ``transfer`` do).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

import xxhash

HASH_CHUNK = 1 << 20

# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
# The same, refusing a symlink in the last component (ELOOP).
_OPEN_NO_FOLLOW = _OPEN_FLAGS | os.O_NOFOLLOW

Tick = Callable[[], None]
StrPath = str | os.PathLike[str]


def no_tick() -> None:
    """A ``Tick`` that reports nothing."""


def open_regular(path: StrPath, *, follow_symlinks: bool = True) -> int:
    """Open a regular file read-only; OSError for anything else.

    ``follow_symlinks=False`` refuses a symlink in the last component (ELOOP),
    so a file swapped for a link after the scan cannot smuggle its target in.
    """
    fd = os.open(path, _OPEN_FLAGS if follow_symlinks else _OPEN_NO_FOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def hash_file(path: StrPath, *, tick: Tick = no_tick, limit: int | None = None) -> str:
    """xxh3-128 hex digest of a regular file (its first ``limit`` bytes, if given).

    Raises ``OSError`` (the scan maps it); refuses anything that is not a
    regular file once opened, so a path swapped for a FIFO cannot block us.
    """
    fd = open_regular(path)
    try:
        return hash_fd(fd, tick=tick, limit=limit)
    finally:
        os.close(fd)


def hash_fd(fd: int, *, tick: Tick = no_tick, limit: int | None = None) -> str:
    """xxh3-128 hex digest of an open file from its start (its first ``limit`` bytes,
    if given); the fd stays open.

    ``tick`` is called after every chunk: a large file is progress, not a hang.
    """
    digest = xxhash.xxh3_128()
    offset = 0
    while True:
        want = HASH_CHUNK if limit is None else min(HASH_CHUNK, limit - offset)
        if want <= 0:
            break
        chunk = os.pread(fd, want, offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
        tick()
    return digest.hexdigest()


def hash_listed_file(entry: os.DirEntry[str]) -> tuple[os.stat_result, str] | None:
    """A small regular file's stat and digest, both taken through one descriptor; None
    for anything else (not a regular file, larger than a chunk, changed while it was
    read, any error), which the caller then decides the long way.

    For a first scan, where no cached digest can match and so no lstat is needed to
    look one up: the descriptor's fstat is the file's stat, and a second fstat after
    the read is the check that it held still. Only an entry the listing calls a
    regular file (scandir's d_type) is opened, so a device never is; it is opened
    before any stat with ``O_NOFOLLOW``, so a symlink swapped in since fails (ELOOP)
    instead of being followed, and nothing is read unless the fstat says "regular
    file", so a FIFO swapped in is opened (non-blocking) and closed unread. A file
    renamed over this path after the open is not what was read: the inode in the
    stat is the one that was, and uploads check it (``transfer.open_as_scanned``).
    """
    try:
        if not entry.is_file(follow_symlinks=False):
            return None
        fd = os.open(entry.path, _OPEN_NO_FOLLOW)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        size = before.st_size
        if not stat.S_ISREG(before.st_mode) or size > HASH_CHUNK:
            return None
        # The whole file in one read, and its digest in one call (the same as the
        # streamed one): most files of a tree are small.
        content = os.pread(fd, size, 0) if size else b""
        after = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if (
        len(content) != size
        or after.st_size != size
        or after.st_mtime_ns != before.st_mtime_ns
        or after.st_ctime_ns != before.st_ctime_ns
    ):
        return None
    return before, xxhash.xxh3_128_hexdigest(content)
