"""Process locks: one writer per pair, and one per container.

Owns the lock files in the state directory: ``flock`` on a file that holds the
holder's PID. The kernel drops an flock when its holder dies, even by
SIGKILL, so a leftover file never blocks anyone and there is no stale-PID
logic. Taking a lock writes nothing (a pass that does nothing writes nothing
to the state directory): the holder named in the error is found in
``/proc/locks`` by the file's inode, else read from the file (where an older
cntr-sync wrote its PID).

Must not: read or write anything but its own lock files, or wait: a lock that
is held raises ``LockedError`` at once (rclone bisync's habit: refuse, do not queue).
"""

from __future__ import annotations

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
            pid = _holder(fd)
            os.close(fd)
            holder = f"pid {pid}" if pid is not None else "pid unknown"
            raise LockedError(
                f"another cntr-sync ({holder}) is syncing {what}; lock {path}", pid=pid
            ) from None
        except OSError as exc:
            os.close(fd)
            raise LocalError(f"cannot lock {path}: {exc.strerror}", path=str(path)) from None
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        os.close(fd)  # closing the last descriptor releases the flock


def _holder(fd: int) -> int | None:
    """The PID holding the flock on ``fd``'s file: the kernel's word, else the file's."""
    return _flock_holder(fd) or _read_pid(fd)


def _flock_holder(fd: int, table: Path = Path("/proc/locks")) -> int | None:
    """The PID ``/proc/locks`` gives for an flock on ``fd``'s file (Linux), if any.

    A line reads ``1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF``: the PID,
    then the device (major:minor, hex) and the inode.
    """
    try:
        info = os.fstat(fd)
        lines = table.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        device, _, inode = fields[5].rpartition(":")
        major, _, minor = device.partition(":")
        try:
            same = (int(inode), int(major, 16), int(minor, 16)) == (
                info.st_ino,
                os.major(info.st_dev),
                os.minor(info.st_dev),
            )
            if same:
                return int(fields[4]) or None
        except ValueError:
            continue
    return None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError):
        return None  # no PID written (this version writes none) or a partial write
