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

A whole-tree scan asks about every file, so it runs inside ``scanning()``:
the SQLite cache then reads its table once into a dict (one ``SELECT``, not
one per file: 1.0 s of a 100k-file scan) and drops the dict when the scan
ends, so a long-running daemon does not hold it between passes. Lookups
outside ``scanning()`` still read one row each (a scan of a few paths).

Must not: hash anything itself, or hold anything but digests of local files.
It describes the local tree, so it outlives containers: a new container does
not empty it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from itertools import chain
from typing import Any, Protocol

# Rows buffered before one transaction writes them, in key order: a commit per
# file would dominate a first scan of 100k files, and so do small batches, as
# each one rewrites pages all over the table's B-tree (measured on 100k rows:
# 1.5 s of CPU in batches of 1,000, 0.5 s in one). A lost row only costs a
# re-hash (25,000 small files: about a third of a second).
HASH_BATCH = 25_000

# Rows written by one INSERT statement: executemany's cost per statement (binding
# aside: stepping, resetting, the GIL given up and taken back) is then shared.
# Measured on 100k rows: 0.41 s of CPU one row a statement, 0.28 s at 50.
ROWS_PER_INSERT = 50
_INSERT_ONE = (
    "INSERT OR REPLACE INTO hashes (relpath, inode, size, mtime_ns, ctime_ns, hash)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_MANY = _INSERT_ONE + ", (?, ?, ?, ?, ?, ?)" * (ROWS_PER_INSERT - 1)

# One cached digest: (inode, size, mtime_ns, ctime_ns, digest).
Row = tuple[int, int, int, int, str]
# The same with its relpath first, as the ``hashes`` table holds it.
FullRow = tuple[str, int, int, int, int, str]

# What ``scanning`` may yield: rows by relpath, each (relpath, inode, size, mtime_ns,
# ctime_ns, digest), for the walk to look up without a call: it takes a file's row
# out (``pop``), and uses the digest only if the other four fields match its stat.
ScanRows = dict[str, tuple[Any, ...]]


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

        It may yield its rows (``ScanRows``): the scan then looks files up in them
        rather than calling ``lookup``, so ``lookup`` must answer from them alone.
        """
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
        self._pending: dict[str, FullRow] = {}
        # While a scan runs (``scanning``): the table's rows as selected,
        # (relpath, inode, size, mtime_ns, ctime_ns, hash), with the buffered
        # ones laid over them, by relpath; None otherwise. The walk asks for each
        # relpath once: a lookup takes its row out, a store does not put one in.
        self._loaded: ScanRows | None = None

    @contextmanager
    def _scanning(self) -> Iterator[ScanRows]:
        rows = self._db.read(
            "SELECT relpath, inode, size, mtime_ns, ctime_ns, hash FROM hashes", ()
        )
        # The rows themselves, not slices of them: a tuple less per file.
        loaded = {row[0]: row for row in rows}
        del rows
        loaded.update(self._pending)
        self._loaded = loaded
        try:
            yield loaded
        finally:
            self._loaded = None

    def scanning(self) -> AbstractContextManager[ScanRows | None]:
        """Load every row once for the scan's lookups (and yield them); drop them when it ends."""
        return self._scanning()

    def lookup(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int
    ) -> str | None:
        loaded = self._loaded
        if loaded is not None:
            # Taken out, not read: the walk asks once per relpath, and the memory a
            # row frees goes to the snapshot's entry, so the peak is one of them.
            row = loaded.pop(relpath, None)
            if (
                row is not None
                and row[1] == inode
                and row[2] == size
                and row[3] == mtime_ns
                and row[4] == ctime_ns
            ):
                return str(row[5])
            return None
        pending = self._pending.get(relpath)
        if pending is not None:
            return pending[5] if pending[1:5] == (inode, size, mtime_ns, ctime_ns) else None
        rows = self._db.read(
            "SELECT hash FROM hashes WHERE relpath = ? AND inode = ? AND size = ?"
            " AND mtime_ns = ? AND ctime_ns = ?",
            (relpath, inode, size, mtime_ns, ctime_ns),
        )
        return str(rows[0][0]) if rows else None

    def store(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None:
        self._pending[relpath] = (relpath, inode, size, mtime_ns, ctime_ns, digest)
        if len(self._pending) >= HASH_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write buffered ``store`` calls (closing the index does this too)."""
        if not self._pending:
            return
        # In key order: the table is a B-tree on relpath, and the walk's order is not.
        # The keys alone are sorted (strings: 2.5x cheaper than sorting the rows).
        pending = self._pending
        keys = sorted(pending)
        whole = len(keys) - len(keys) % ROWS_PER_INSERT
        batches = (keys[at : at + ROWS_PER_INSERT] for at in range(0, whole, ROWS_PER_INSERT))
        with self._db.write() as db:
            # ROWS_PER_INSERT rows a statement: a third less CPU than a row each.
            db.executemany(_INSERT_MANY, (_parameters(pending, batch) for batch in batches))
            db.executemany(_INSERT_ONE, map(pending.__getitem__, keys[whole:]))
        pending.clear()

    def count(self) -> int:
        """Rows cached on disk (buffered ones not yet written are not counted)."""
        rows = self._db.read("SELECT count(*) FROM hashes", ())
        return int(rows[0][0])

    def prune(self, keep: Iterable[str]) -> int:
        """Drop cached hashes of relpaths not in ``keep``; returns how many went."""
        self.flush()
        with self._db.write() as db:
            # A temp table and one anti-join: 100k parameters in a NOT IN list
            # would exceed SQLite's variable limit, and row-by-row is slow.
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS keep_paths"
                " (relpath TEXT PRIMARY KEY) WITHOUT ROWID"
            )
            db.execute("DELETE FROM keep_paths")
            db.executemany(
                "INSERT OR IGNORE INTO keep_paths (relpath) VALUES (?)", ((p,) for p in keep)
            )
            removed = db.execute(
                "DELETE FROM hashes WHERE relpath NOT IN (SELECT relpath FROM keep_paths)"
            ).rowcount
            db.execute("DELETE FROM keep_paths")
        return int(removed)


def _parameters(rows: dict[str, FullRow], keys: list[str]) -> tuple[object, ...]:
    """The rows of ``keys``, one after the other: the parameters of ``_INSERT_MANY``."""
    return tuple(chain.from_iterable(map(rows.__getitem__, keys)))


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
