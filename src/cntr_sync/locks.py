"""Process locks: one writer per pair, and one per container.

Owns the lock files in the state directory: ``flock`` on a file that holds the
holder's PID. The kernel drops an flock when its holder dies, even by
SIGKILL, so a leftover file with a dead PID never blocks anyone and there is
no stale-PID logic; the PID is there only to name the holder in the error.

Must not: read or write anything but its own lock files, or wait: a lock that
is held raises ``LockedError`` at once (rclone bisync's habit: refuse, do not queue).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from cntr_sync.errors import LocalError, LockedError


class FileLock:
    """An exclusive flock on ``path``, held until ``release`` (idempotent)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, what: str) -> FileLock:
        """Lock ``path`` now, or raise ``LockedError`` naming ``what`` and the holder."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LocalError(f"cannot open lock {path}: {exc.strerror}", path=str(path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            holder = f"pid {pid}" if pid is not None else "pid unknown"
            raise LockedError(
                f"another cntr-sync ({holder}) is syncing {what}; lock {path}", pid=pid
            ) from None
        except OSError as exc:
            os.close(fd)
            raise LocalError(f"cannot lock {path}: {exc.strerror}", path=str(path)) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            # A full disk must not leave the lock held by a descriptor nobody owns.
            os.close(fd)
            raise LocalError(f"cannot write lock {path}: {exc.strerror}", path=str(path)) from None
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError):
        return None  # the holder may be between truncate and write
