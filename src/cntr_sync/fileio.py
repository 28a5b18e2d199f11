"""Writing bytes to a file descriptor in full: the one loop that does.

``os.write`` may write less than it is given (a full disk, a quota, a signal):
a caller that ignores the count cuts a file short without an error. Downloads,
backups and restores all write through ``write_all``; a backup's copy and a
restore go through ``copy_fd``, which also says how many bytes it copied so the
caller can check them against the size it expects.

Owns: those two loops. Must not: open, fsync, rename or decide anything; the
callers (``transfer``, ``backups``) do.
"""

from __future__ import annotations

import errno
import os

COPY_CHUNK = 1 << 20


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (OSError if the system refuses)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:  # no progress and no error: never spin on it
            raise OSError(errno.ENOSPC, "the file system took no more bytes")
        view = view[written:]


def copy_fd(source: int, target: int) -> int:
    """Copy ``source`` from its current offset to its end into ``target``; the bytes copied."""
    copied = 0
    while chunk := os.read(source, COPY_CHUNK):
        write_all(target, chunk)
        copied += len(chunk)
    return copied
