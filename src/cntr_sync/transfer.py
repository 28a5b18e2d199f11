"""The file side of a transfer: what is read for an upload and how a download lands.

Owns: opening a file for upload so that only the very file the scan hashed is
sent (same inode, size and mtime, never a symlink's target unless links are
followed), a reader that reports progress as the upload streams, and hashing a
file again when it changed under its upload. For downloads: walking to the
target directory one component at a time without following any symlink,
streaming into a ``.cntrsync-partial-*`` file there (hashed and size-checked
as it arrives), fsync, then an atomic placement that never overwrites a file
other than the one the plan expected; moving a local version aside; deleting
a local file only if it is the one the plan expected; and probing how this
file system compares names.

Must not: talk to the API (downloads get a ``fetch`` callable), touch the
index, or decide anything; the engine calls these from its worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import xxhash

from cntr_sync.backups import KeepHow
from cntr_sync.fileio import copy_fd, write_all
from cntr_sync.hashing import hash_fd, open_regular
from cntr_sync.models import LocalFile
from cntr_sync.remote_paths import FileSystemTraits
from cntr_sync.tree_names import PARTIAL_PREFIX

Tick = Callable[[], None]
#: Keeps a file of the tree before a download or a delete removes it: called with the
#: open directory, the file's name there, its relpath and how (``backups.KeepHow``);
#: raises OSError when it cannot, and then nothing is removed.
Keep = Callable[[int, str, str, KeepHow], object]


class ChangedSinceScan(Exception):
    """The file is not the one the scan saw (changed, replaced, gone): nothing was sent."""


class TickingReader(io.RawIOBase):
    """The file as an upload reads it: its first ``limit`` bytes, from one descriptor.

    ``limit`` is the size the scan saw; it is also the length httpx declares
    (it measures with ``seek``, never ``fstat``: no ``fileno``), so bytes
    appended meanwhile are never sent, and a file cut shorter shows as
    ``truncated``. Every read calls ``tick`` (a long upload is progress), and
    past ``deadline`` (monotonic seconds) a read raises ``TimeoutError``: a
    server that takes the body a byte at a time cannot hold a pass forever.
    """

    def __init__(self, fd: int, tick: Tick, limit: int, deadline: float | None = None) -> None:
        super().__init__()
        self.fd = fd
        self._tick = tick
        self._limit = limit
        self._deadline = deadline
        self._position = 0
        self.truncated = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("the length is the scanned size, not the file's")

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._limit}[whence]
        self._position = max(0, min(self._limit, base + offset))
        return self._position

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (the rest, if negative) as ``os.pread`` returns them:
        no buffer of ``size`` allocated first and copied out (``RawIOBase.read``)."""
        return self._pread(self._limit if size < 0 else size)

    def readinto(self, buffer: Any, /) -> int:
        data = self._pread(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _pread(self, size: int) -> bytes:
        self._tick()
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise TimeoutError(errno.ETIMEDOUT, "the upload took longer than request_deadline")
        wanted = min(size, self._limit - self._position)
        if wanted <= 0:
            return b""
        data = os.pread(self.fd, wanted, self._position)
        if not data:
            self.truncated = True
            return b""
        self._position += len(data)
        return data

    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


class Scanned(Protocol):
    """What the scan saw of a file (a ``LocalFile``, or the ``Upload`` made from one):
    the upload must be this file, or nothing."""

    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def inode(self) -> int: ...  # 0: unknown


def open_as_scanned(
    path: Path,
    expected: Scanned,
    *,
    follow_symlinks: bool,
    tick: Tick,
    allow_growth: bool = False,
    deadline: float | None = None,
) -> tuple[TickingReader, os.stat_result]:
    """Open ``path`` once and check it against the scan; ``ChangedSinceScan`` if it differs.

    The descriptor is what gets streamed, so a file swapped after the scan
    (for a link to ~/.ssh/id_rsa, say) is never what is sent. ``allow_growth``:
    the same file grown since (appended to) is fine; its first ``expected.size``
    bytes, what the scan hashed, are sent.
    """
    try:
        fd = open_regular(path, follow_symlinks=follow_symlinks)
    except OSError as exc:
        raise ChangedSinceScan(str(path)) from exc
    seen = os.fstat(fd)
    handle = TickingReader(fd, tick, expected.size, deadline)
    same = (seen.st_size, seen.st_mtime_ns) == (expected.size, expected.mtime_ns)
    grown = allow_growth and seen.st_size > expected.size
    if not (same or grown) or (expected.inode and seen.st_ino != expected.inode):
        handle.close()
        raise ChangedSinceScan(str(path)) from OSError(errno.ESTALE, "changed since the scan")
    return handle, seen


def rehash_if_still(root: Path, relpath: str, *, follow_symlinks: bool) -> LocalFile | None:
    """Hash ``relpath`` again; None when it is gone, unreadable, moving, or leads out of root."""
    path = root / relpath
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
    return LocalFile(
        relpath, after.st_size, after.st_mtime_ns, after.st_ino, digest, after.st_ctime_ns
    )


def _resolves_inside(path: Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


# -- downloads ---------------------------------------------------------------------------


class UnsafeTarget(Exception):
    """Writing there would go through a symlink or over something that is not a directory."""


class LocalChanged(Exception):
    """The local file is not the one the plan expected (changed, appeared, gone): no write."""


class DownloadProblem(Exception):
    """The server's answer cannot be the file: wrong size, or an empty body of unknown size."""


class _HashingSink:
    """Writes to a descriptor (or nowhere), hashing as it goes; refuses more than ``limit``.

    Rewindable to the start (a download that broke mid-stream starts over).
    """

    def __init__(self, fd: int | None, limit: int | None, tick: Tick) -> None:
        self._fd = fd
        self._limit = limit
        self._tick = tick
        self._digest = xxhash.xxh3_128()
        self.written = 0

    def write(self, data: bytes, /) -> int:
        if self._limit is not None and self.written + len(data) > self._limit:
            raise DownloadProblem(f"the body is longer than the listed {self._limit} bytes")
        if self._fd is not None:
            write_all(self._fd, data)
        self._digest.update(data)
        self.written += len(data)
        self._tick()
        return len(data)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.written

    def seek(self, offset: int, /) -> int:
        if offset != 0:
            raise io.UnsupportedOperation("only a rewind to the start")
        if self._fd is not None:
            os.lseek(self._fd, 0, os.SEEK_SET)
        self._digest.reset()
        self.written = 0
        return 0

    def truncate(self) -> int:
        if self._fd is not None:
            os.ftruncate(self._fd, self.written)
        return self.written

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


Fetch = Callable[[_HashingSink], int]


@contextlib.contextmanager
def _directory(root: Path, relpath: str, *, create: bool) -> Iterator[tuple[int, str]]:
    """The directory of ``relpath`` as an open descriptor, and the last name.

    Walks from the root one name at a time with O_NOFOLLOW: a symlink anywhere
    on the way (even one pointing inside the root) raises ``UnsafeTarget``, so
    nothing is ever written outside the root. Missing directories are created
    when ``create``.
    """
    *parents, name = relpath.split("/")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open(root, flags)
    try:
        for part in parents:
            try:
                child = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                child = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeTarget(
                        f"{part!r} on the way to {relpath!r} is a symlink or a file"
                    ) from None
                raise
            os.close(fd)
            fd = child
        yield fd, name
    finally:
        os.close(fd)


@contextlib.contextmanager
def _partial(directory: int, tag: str) -> Iterator[tuple[str, int]]:
    """A new partial file in ``directory``: its name and an open descriptor (closed on
    leaving). On any error it is removed, so a failed write leaves nothing behind."""
    partial = f"{PARTIAL_PREFIX}{tag}-{secrets.token_hex(6)}"
    fd = os.open(
        partial,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o666,
        dir_fd=directory,
    )
    try:
        try:
            yield partial, fd
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial, dir_fd=directory)
        raise


def _matches(directory: int, name: str, expect: LocalFile) -> bool:
    try:
        seen = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(seen.st_mode) and (seen.st_size, seen.st_mtime_ns, seen.st_ino) == (
        expect.size,
        expect.mtime_ns,
        expect.inode,
    )


def _check_target(directory: int, name: str, relpath: str, expect: LocalFile | None) -> None:
    """Refuse a download whose target is taken by what no scan lists (a symlink, a
    FIFO, a directory), or no longer the file the plan saw."""
    try:
        found = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        if expect is not None:
            raise LocalChanged(f"{relpath!r} is gone since the scan") from None
        return
    if not stat.S_ISREG(found.st_mode):
        raise UnsafeTarget(f"{relpath!r} is a symlink, directory or special file here")
    if expect is None:
        raise LocalChanged(f"{relpath!r} appeared since the scan")
    if not _matches(directory, name, expect):
        raise LocalChanged(f"{relpath!r} changed since the scan")


def _place_new(directory: int, source: str, target: str) -> None:
    """Give ``source`` the name ``target`` only if nothing has it (never an overwrite):
    a download put in place, a file moved aside for a conflict copy."""
    try:
        os.link(source, target, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)
    except FileExistsError:
        raise LocalChanged(f"{target!r} appeared since the scan") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A file system without hard links: check, then rename (a small race remains).
        with contextlib.suppress(FileNotFoundError):
            os.stat(target, dir_fd=directory, follow_symlinks=False)
            raise LocalChanged(f"{target!r} appeared since the scan") from None
        os.rename(source, target, src_dir_fd=directory, dst_dir_fd=directory)
        return
    os.unlink(source, dir_fd=directory)


def write_download(
    root: Path,
    relpath: str,
    fetch: Fetch,
    *,
    expected_size: int | None,
    expect: LocalFile | None,
    move_aside_to: str | None,
    mtime: float | None,
    partial_tag: str,
    tick: Tick,
    keep: Keep | None = None,
) -> LocalFile:
    """Download into ``relpath``: a partial file, fsync, then an atomic placement.

    ``expect``: the local file now at ``relpath`` (None: nothing may be there);
    anything else there raises ``LocalChanged`` and nothing is written.
    ``move_aside_to`` (same directory): that local file is first moved there.
    ``keep``: the local file a download replaces (or moves aside) is kept first.
    A crash at any point leaves at most a ``.cntrsync-partial-*`` file.
    """
    with _directory(root, relpath, create=True) as (directory, name):
        directory_name = relpath.rpartition("/")[0]
        _check_target(directory, name, relpath, expect)  # before a byte is fetched
        with _partial(directory, partial_tag) as (partial, fd):
            sink = _HashingSink(fd, expected_size, tick)
            written = fetch(sink)
            if expected_size is not None and written != expected_size:
                raise DownloadProblem(f"got {written} bytes where the listing says {expected_size}")
            if expected_size is None and written == 0:
                raise DownloadProblem("an empty body and no size in the listing")
            os.fsync(fd)
            if mtime is not None:
                os.utime(fd, ns=(int(mtime * 1e9), int(mtime * 1e9)))
            final = os.fstat(fd)
            if move_aside_to is not None:
                if expect is None or not _matches(directory, name, expect):
                    raise LocalChanged(f"{relpath!r} changed since the scan")
                aside_dir, _, aside_name = move_aside_to.rpartition("/")
                if aside_dir != directory_name:
                    raise UnsafeTarget("a conflict copy must stay in its file's directory")
                if keep is not None:
                    keep(directory, name, relpath, "copy")  # the copy may change later
                _place_new(directory, name, aside_name)  # moved aside, never over a file
                _place_new(directory, partial, name)
            elif expect is None:
                _place_new(directory, partial, name)
            else:
                if not _matches(directory, name, expect):
                    raise LocalChanged(f"{relpath!r} changed since the scan")
                if keep is not None:
                    keep(directory, name, relpath, "link")  # the rename unlinks it here
                os.rename(partial, name, src_dir_fd=directory, dst_dir_fd=directory)
            os.fsync(directory)
    return LocalFile(
        relpath, final.st_size, final.st_mtime_ns, final.st_ino, sink.hexdigest(), final.st_ctime_ns
    )


def hash_download(fetch: Fetch, *, expected_size: int | None, tick: Tick) -> str:
    """The content hash of a remote file, streamed and thrown away (nothing is written)."""
    sink = _HashingSink(None, expected_size, tick)
    written = fetch(sink)
    if expected_size is not None and written != expected_size:
        raise DownloadProblem(f"got {written} bytes where the listing says {expected_size}")
    return sink.hexdigest()


def delete_local(root: Path, relpath: str, expect: LocalFile, keep: Keep | None = None) -> None:
    """Delete ``relpath`` if it is still exactly the file the plan saw (else
    ``LocalChanged``); with ``keep``, it is moved there rather than unlinked."""
    try:
        with _directory(root, relpath, create=False) as (directory, name):
            if not _matches(directory, name, expect):
                raise LocalChanged(f"{relpath!r} changed since the scan")
            if keep is not None:
                keep(directory, name, relpath, "move")
            else:
                os.unlink(name, dir_fd=directory)
    except FileNotFoundError:
        return  # already gone: what was asked


def remove_partials(root: Path, relpaths: list[str], partial_tag: str) -> int:
    """Remove leftovers of this pair's interrupted downloads; returns how many went."""
    removed = 0
    for relpath in relpaths:
        if not relpath.rpartition("/")[2].startswith(f"{PARTIAL_PREFIX}{partial_tag}-"):
            continue  # another pair's, maybe in flight
        with (
            contextlib.suppress(OSError, UnsafeTarget),
            _directory(root, relpath, create=False) as (directory, name),
        ):
            os.unlink(name, dir_fd=directory)
            removed += 1
    return removed


# Probed once per file system per process: the probe file is a change a
# watcher would see, and the answer does not change.
_TRAITS: dict[int, FileSystemTraits] = {}


def probe_traits(root: Path, *, write: bool = True) -> FileSystemTraits:
    """How this file system compares names: case- and normalisation-insensitive or not.

    Creates one probe file in the root and looks it up under other spellings;
    a root that cannot be written to answers "sensitive" (Linux's default).
    ``write=False`` (a dry run, ``status``) creates nothing: the names already in
    the root are looked up under other spellings instead, and without one that
    can tell, the answer is "sensitive".
    """
    try:
        device = root.stat().st_dev
    except OSError:
        return FileSystemTraits()
    known = _TRAITS.get(device)
    if known is None:
        if not write:
            return _probe_existing(root)
        known = _TRAITS[device] = _probe(root)
    return known


def _probe_existing(root: Path) -> FileSystemTraits:
    """What the root's own names tell, looked up under another case or normalisation."""
    try:
        with os.scandir(root) as listing:
            names = [entry.name for entry in listing]
    except OSError:
        return FileSystemTraits()
    present = set(names)
    case = next((n for n in names if n.swapcase() != n and n.swapcase() not in present), None)
    composed = next(
        (
            n
            for n in names
            if unicodedata.normalize("NFD", n) != n
            and unicodedata.normalize("NFD", n) not in present
        ),
        None,
    )
    return FileSystemTraits(
        case_insensitive=case is not None and _same_file(root, case, case.swapcase()),
        normalization_insensitive=composed is not None
        and _same_file(root, composed, unicodedata.normalize("NFD", composed)),
    )


def _same_file(root: Path, name: str, other: str) -> bool:
    try:
        return (root / name).samefile(root / other)
    except OSError:
        return False


def _probe(root: Path) -> FileSystemTraits:
    name = f"{PARTIAL_PREFIX}probe-{secrets.token_hex(4)}-\u00e9a"
    try:
        fd = os.open(root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return FileSystemTraits()
    os.close(fd)
    try:
        return FileSystemTraits(
            case_insensitive=(root / name.upper()).exists(),
            normalization_insensitive=(root / unicodedata.normalize("NFD", name)).exists(),
        )
    finally:
        with contextlib.suppress(OSError):
            (root / name).unlink()


def restore_version(root: Path, relpath: str, source: Path, keep: Keep | None) -> None:
    """Put a kept version (the file ``source``) back at ``relpath``, never through a
    symlink; whatever file is there now is kept first (so a restore can be undone).
    The restored file gets the time of the restore: the next pass sees an edit."""
    with _directory(root, relpath, create=True) as (directory, name):
        try:
            present = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            present = None
        if present is not None and not stat.S_ISREG(present.st_mode):
            raise UnsafeTarget(f"{relpath!r} is a symlink, directory or special file here")
        with _partial(directory, "restore") as (partial, fd):
            kept = open_regular(source, follow_symlinks=False)
            try:
                before = os.fstat(kept)
                if copy_fd(kept, fd) != before.st_size:
                    raise OSError(errno.EIO, "the kept version changed while it was read", source)
            finally:
                os.close(kept)
            os.fchmod(fd, stat.S_IMODE(before.st_mode))  # a restored script runs again
            os.fsync(fd)
            if present is not None:
                if keep is not None:
                    keep(directory, name, relpath, "link")
                os.rename(partial, name, src_dir_fd=directory, dst_dir_fd=directory)
            else:
                _place_new(directory, partial, name)
            os.fsync(directory)
