"""The hash cache: content digests remembered by (relpath, inode, size, mtime_ns, ctime_ns).

The change time is in the key because an edit that keeps the size and puts
the old mtime back (``touch -r``, some editors and archivers) changes nothing
else a stat shows; the kernel sets ctime on every change and nobody can set
it back.

Owns the ``HashCache`` protocol that ``scan`` asks before reading a file, and
its three implementations: ``MemoryHashCache`` (tests, one-off scans),
``SqliteHashCache`` (the durable one, a table in the pair's index file,
written in batches) and ``ReadThroughCache`` (reads the durable cache, keeps
its own writes in memory: what a dry run uses, so it changes nothing on disk).

The SQLite table holds one row per directory, not one per file: the
directory's relpath ("" for the root), how many files its row describes, and
one blob, a ``marshal`` of ``{name: (inode, size, mtime_ns, ctime_ns, digest)}``
(``encode``/``decode``). The walk reads a directory's entries together, so a
scan pays one row and one C-level decode per directory rather than a row of
six columns per file (on 100k files, 2.3 us a file of a 4.5 us-a-file walk),
and a first scan writes one row per directory. A blob that does not decode to
that shape (a damaged file) is taken as no row: its files are hashed again and
the row rewritten.

A whole-tree scan asks about every file, so it runs inside ``scanning()``:
the SQLite cache then reads its table once (one ``SELECT``) and hands the
walk each directory's entries as it lists it (``ScanRows``), and drops the
rows when the scan ends, so a long-running daemon does not hold them between
passes. Lookups outside ``scanning()`` read their directory's row (and keep
the last one decoded, so a walk of one directory reads it once).

Must not: hash anything itself, or hold anything but digests of local files.
It describes the local tree, so it outlives containers: a new container does
not empty it.
"""

from __future__ import annotations

import marshal
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol

# Files buffered before one transaction writes their directories' rows: a
# commit per file would dominate a first scan of 100k files. A lost row only
# costs a re-hash (25,000 small files: about a third of a second).
HASH_BATCH = 25_000

# Directories whose rows one SELECT reads back before a flush merges into them
# (well under SQLite's limit on parameters).
DIRS_PER_SELECT = 500

_INSERT = "INSERT OR REPLACE INTO hashes (dir, files, entries) VALUES (?, ?, ?)"
_SELECT_ALL = "SELECT dir, entries FROM hashes"

# One cached digest: (inode, size, mtime_ns, ctime_ns, digest).
Row = tuple[int, int, int, int, str]
# A directory's rows by file name, as one blob holds them.
Entries = dict[str, Row]


def split(relpath: str) -> tuple[str, str]:
    """(directory, name) of a relpath: the row and the key within it."""
    directory, _, name = relpath.rpartition("/")
    return directory, name


def encode(entries: Entries) -> bytes:
    """The blob of one directory's row."""
    return marshal.dumps(entries)


def decode(blob: object) -> Entries | None:
    """A directory's entries from its blob; None when the blob is damaged.

    Damaged means anything but a dict of 5-tuples ending in a str digest, so a
    row that decodes is safe to compare against a stat and to hand out.
    """
    if not isinstance(blob, bytes):
        return None
    try:
        entries = marshal.loads(blob)  # noqa: S302 (our own file, 0600, shape checked)
    except (ValueError, EOFError, TypeError):
        return None
    if type(entries) is not dict or not all(
        type(row) is tuple and len(row) == 5 and type(row[4]) is str for row in entries.values()
    ):
        return None
    return entries


class HashCache(Protocol):
    """Remembers digests by (relpath, inode, size, mtime_ns, ctime_ns)."""

    def lookup(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int
    ) -> str | None: ...

    def store(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None: ...

    def scanning(self) -> AbstractContextManager[ScanRows | None]:
        """Around one whole-tree scan: the cache may prepare for a lookup of every file.

        It may yield a ``ScanRows``: the scan then asks it for each directory's
        entries and looks files up in those rather than calling ``lookup``.
        """
        ...


class ScanRows(Protocol):
    """What ``HashCache.scanning`` may yield: the cache's rows a directory at a time."""

    def take(self, directory: str) -> dict[str, tuple[Any, ...]]:
        """The entries of ``directory`` (a relpath, "" for the root) by name, each
        (inode, size, mtime_ns, ctime_ns, digest), in a dict the walk may keep. The
        walk asks once per directory, uses a row's digest only if the other four
        fields match its stat, and forgets the entries when it is done with them."""
        ...

    def put(self, directory: str, entries: dict[str, Row]) -> None:
        """``store`` for every entry of ``entries`` (files of ``directory``, by name),
        which the cache may keep: the walk hands over a new dict each time."""
        ...


class MemoryHashCache:
    """A dict-backed ``HashCache`` for tests and one-shot runs."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}

    def lookup(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int
    ) -> str | None:
        row = self._rows.get(relpath)
        if row is None or row[:4] != (inode, size, mtime_ns, ctime_ns):
            return None
        return row[4]

    def store(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None:
        self._rows[relpath] = (inode, size, mtime_ns, ctime_ns, digest)

    def scanning(self) -> AbstractContextManager[None]:
        return nullcontext()


class Database(Protocol):
    """What the SQLite cache needs of its file (``index.Index`` provides it)."""

    def read(self, sql: str, params: tuple[object, ...]) -> list[Any]: ...

    def write(self) -> AbstractContextManager[sqlite3.Connection]: ...


class SqliteHashCache:
    """The ``hashes`` table of an index file; ``store`` is buffered, ``flush`` writes.

    It shares the index's connection, transactions and error messages.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        # Stores not yet written, by directory, then name.
        self._pending: dict[str, Entries] = {}
        self._pending_count = 0
        # While a scan runs (``scanning``): the table's blobs by directory, as
        # selected; None otherwise.
        self._blobs: dict[str, bytes] | None = None
        # The last directory ``lookup`` decoded (from the table, not the buffer).
        self._recent: tuple[str, Entries] | None = None

    # -- reading

    @contextmanager
    def _scanning(self) -> Iterator[ScanRows]:
        self._blobs = dict(self._db.read(_SELECT_ALL, ()))
        self._recent = None
        try:
            yield self
        finally:
            self._blobs = None
            self._recent = None

    def scanning(self) -> AbstractContextManager[ScanRows | None]:
        """Select every row once for the scan's lookups; drop them when it ends."""
        return self._scanning()

    def take(self, directory: str) -> dict[str, tuple[Any, ...]]:
        """A directory's entries for the walk, buffered stores laid over; its blob is let go
        (``ScanRows.take``)."""
        blobs = self._blobs
        blob = blobs.pop(directory, None) if blobs is not None else None
        entries = (decode(blob) or {}) if blob is not None else {}
        pending = self._pending.get(directory)
        if pending:
            entries.update(pending)
        return entries

    def _stored(self, directory: str) -> Entries:
        """A directory's entries as the table holds them (the buffer not included)."""
        recent = self._recent
        if recent is not None and recent[0] == directory:
            return recent[1]
        blobs = self._blobs
        if blobs is not None:
            # During a scan (a dry run's lookups): the rows it selected.
            blob: object = blobs.get(directory)
        else:
            rows = self._db.read("SELECT entries FROM hashes WHERE dir = ?", (directory,))
            blob = rows[0][0] if rows else None
        entries = (decode(blob) or {}) if blob is not None else {}
        self._recent = (directory, entries)
        return entries

    def lookup(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int
    ) -> str | None:
        directory, name = split(relpath)
        pending = self._pending.get(directory)
        row = pending.get(name) if pending is not None else None
        if row is None:
            row = self._stored(directory).get(name)
        if (
            row is not None
            and row[0] == inode
            and row[1] == size
            and row[2] == mtime_ns
            and row[3] == ctime_ns
        ):
            return row[4]
        return None

    def count(self) -> int:
        """Files cached on disk (buffered ones not yet written are not counted)."""
        rows = self._db.read("SELECT coalesce(sum(files), 0) FROM hashes", ())
        return int(rows[0][0])

    # -- writing

    def store(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None:
        directory, name = split(relpath)
        entries = self._pending.get(directory)
        if entries is None:
            entries = self._pending[directory] = {}
        if name not in entries:
            self._pending_count += 1
        entries[name] = (inode, size, mtime_ns, ctime_ns, digest)
        if self._pending_count >= HASH_BATCH:
            self.flush()

    def put(self, directory: str, entries: Entries) -> None:
        """``store`` for each of ``entries`` (files of ``directory`` by name); keeps the dict."""
        pending = self._pending.get(directory)
        if pending is None:
            self._pending[directory] = entries
            self._pending_count += len(entries)
        else:
            before = len(pending)
            pending.update(entries)
            self._pending_count += len(pending) - before
        if self._pending_count >= HASH_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write buffered ``store`` calls (closing the index does this too).

        Each directory's row is read back and merged with, so its other files
        stay cached; one transaction writes them all.
        """
        pending = self._pending
        if not pending:
            return
        directories = sorted(pending)
        stored = self._rows_of(directories)
        rows = []
        for directory in directories:
            entries = stored.get(directory) or {}
            entries.update(pending[directory])
            rows.append((directory, len(entries), encode(entries)))
        with self._db.write() as db:
            db.executemany(_INSERT, rows)
        pending.clear()
        self._pending_count = 0
        self._recent = None

    def _rows_of(self, directories: list[str]) -> dict[str, Entries | None]:
        """The stored entries of these directories (those that have a row)."""
        found: dict[str, Entries | None] = {}
        for at in range(0, len(directories), DIRS_PER_SELECT):
            batch = directories[at : at + DIRS_PER_SELECT]
            marks = ", ".join("?" * len(batch))
            for directory, blob in self._db.read(
                f"SELECT dir, entries FROM hashes WHERE dir IN ({marks})",  # noqa: S608 (marks only)
                tuple(batch),
            ):
                found[directory] = decode(blob)
        return found

    def prune(self, keep: Iterable[str]) -> int:
        """Drop cached hashes of relpaths not in ``keep``; returns how many went.

        A damaged row counts as the files it said it held.
        """
        self.flush()
        kept: dict[str, set[str]] = {}
        for relpath in keep:
            directory, name = split(relpath)
            names = kept.get(directory)
            if names is None:
                names = kept[directory] = set()
            names.add(name)
        removed = 0
        rewrite: list[tuple[str, int, bytes]] = []
        drop: list[tuple[str]] = []
        for directory, files, blob in self._db.read("SELECT dir, files, entries FROM hashes", ()):
            entries = decode(blob)
            names = kept.get(directory)
            if entries is None or not names:
                removed += len(entries) if entries is not None else int(files)
                drop.append((directory,))
                continue
            left = {name: row for name, row in entries.items() if name in names}
            if len(left) < len(entries):
                removed += len(entries) - len(left)
                rewrite.append((directory, len(left), encode(left)))
        if drop or rewrite:
            with self._db.write() as db:
                db.executemany("DELETE FROM hashes WHERE dir = ?", drop)
                db.executemany(_INSERT, rewrite)
        self._recent = None
        return removed


class ReadThroughCache:
    """Reads ``backing``; keeps its own writes in memory (dry runs write nothing)."""

    def __init__(self, backing: HashCache) -> None:
        self._backing = backing
        self._memory = MemoryHashCache()

    def scanning(self) -> AbstractContextManager[ScanRows | None]:
        return self._scanning()

    @contextmanager
    def _scanning(self) -> Iterator[None]:
        # The backing cache prepares, but its rows are not handed out: a lookup
        # here asks this cache's own writes first.
        with self._backing.scanning():
            yield None

    def lookup(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int
    ) -> str | None:
        key = (relpath, inode, size, mtime_ns, ctime_ns)
        return self._memory.lookup(*key) or self._backing.lookup(*key)

    def store(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None:
        self._memory.store(relpath, inode, size, mtime_ns, ctime_ns, digest)
