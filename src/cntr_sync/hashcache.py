"""The hash cache: content digests remembered by (relpath, inode, size, mtime_ns, ctime_ns).

The change time is in the key because an edit that keeps the size and puts
the old mtime back (``touch -r``, some editors and archivers) changes nothing
else a stat shows; the kernel sets ctime on every change and nobody can set
it back.

Owns the ``HashCache`` protocol that ``scan`` asks before reading a file (for
each directory it lists, a ``DirectoryDigests``: "the digest for this stat, if
any", and "remember this one"), and its three implementations:
``SqliteHashCache`` (the durable one, two tables in the pair's index file,
written in batches), ``ReadThroughCache`` (reads the durable cache, keeps its
own writes in memory: what a dry run uses, so it changes nothing on disk) and
``MemoryHashCache`` (the memory a ``ReadThroughCache`` keeps its writes in;
tests use it too). A cached row, (inode, size, mtime_ns, ctime_ns, digest), is
this module's own: callers see digests only.

The SQLite cache keeps a directory's files in two places:

- ``hashes``: one row per directory (its relpath, "" for the root; how many
  files; the newest ctime among them; one blob, a ``marshal`` of
  ``{name: (inode, size, mtime_ns, ctime_ns, digest)}``, see ``encode`` and
  ``decode``). A whole-tree scan reads every row in one ``SELECT`` and decodes
  a directory's blob (in C) when the walk lists it: a row and a decode per
  directory, not six columns per file.
- ``hash_deltas``: one row per file changed since its directory's blob was
  written (its digest, or NULL: the file is gone). A store or a forget outside
  a whole-tree scan (the daemon's incremental passes, a download) writes one
  of these small rows, never the directory's blob.

A lookup takes a file's delta row over its blob's. A whole-tree scan folds a
directory's deltas into its blob as it leaves the directory, with what it
hashed there, and rewrites only the blobs of directories that had deltas or
new digests (or a damaged blob); the rewrite deletes the directory's deltas.
A blob whose checksum does not match (or that is not a marshalled dict) is
taken as no row: its files are hashed again and the row rewritten.

A lookup outside a whole-tree scan reads the file's delta row; if there is none,
its directory's newest ctime, and only when the file's ctime is not newer (so
that it may match a row) the blob, which it keeps while it is asked about the
same directory. A changed file's ctime is newer than any its directory's blob
holds, so a daemon's one-file change never decodes a blob.

Must not: hash anything itself, or hold anything but digests of local files.
It describes the local tree, so it outlives containers: a new container does
not empty it.
"""

from __future__ import annotations

import marshal
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from operator import itemgetter
from typing import Any, Protocol

from xxhash import xxh3_64_digest

# Files buffered (as deltas or folded blobs) before one transaction writes them: a
# commit per file would dominate a first scan of 100k files, and a WAL commit does not
# sync, so 50 of them cost no more CPU than 4. A batch of 25,000 kept ~6 MiB more at
# a lost index's peak (100,000 new digests: the buffered rows, their blobs and the
# transaction's memory, left as free fragments in the heap the plan grows into). A
# lost row only costs a re-hash.
HASH_BATCH = 2_000

_INSERT_DIR = "INSERT OR REPLACE INTO hashes (dir, files, newest, entries) VALUES (?, ?, ?, ?)"
_INSERT_DELTA = (
    "INSERT OR REPLACE INTO hash_deltas (dir, name, inode, size, mtime_ns, ctime_ns, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_DIRS = "SELECT dir, entries FROM hashes"
_SELECT_DELTAS = "SELECT dir, name, inode, size, mtime_ns, ctime_ns, hash FROM hash_deltas"

# One cached digest: (inode, size, mtime_ns, ctime_ns, digest).
_Row = tuple[int, int, int, int, str]
# A directory's rows by file name, as one blob holds them.
_Entries = dict[str, _Row]
# A directory's deltas by file name: a row, or None for a file that is gone.
_Deltas = dict[str, _Row | None]

_CTIME = itemgetter(3)

# marshal's version 2: no back-references. From version 3 on, every object whose
# reference count is above one (all of a scan's: its LocalFile holds the same ints
# and digest) goes through a table of objects written so far: callgrind, 20k rows
# of a cold scan, 3.0k instructions a row to write at version 4, 2.3k at 2.
MARSHAL_VERSION = 2


def split(relpath: str) -> tuple[str, str]:
    """(directory, name) of a relpath: the row and the key within it."""
    directory, _, name = relpath.rpartition("/")
    return directory, name


def encode(entries: _Entries) -> bytes:
    """The blob of one directory's row: a checksum of the marshal that follows it."""
    data = marshal.dumps(entries, MARSHAL_VERSION)
    return xxh3_64_digest(data) + data


def decode(blob: object) -> _Entries | None:
    """A directory's entries from its blob; None when the blob is damaged.

    Damaged means a checksum that does not match, or a marshal that is not a dict.
    The rows' shape is not checked one by one (a generator over them cost ~1.5k
    instructions a file, 6 % of a warm scan): a blob whose checksum matches was
    written by ``encode``, from rows of four ints and a str.
    """
    if type(blob) is not bytes or len(blob) < _CHECKSUM:
        return None
    data = memoryview(blob)[_CHECKSUM:]
    if xxh3_64_digest(data) != blob[:_CHECKSUM]:
        return None
    try:
        entries = marshal.loads(data)  # noqa: S302 (our own file, 0600, checksummed)
    except (ValueError, EOFError, TypeError):
        return None
    return entries if type(entries) is dict else None


# The checksum's bytes at the start of a blob (xxh3-64).
_CHECKSUM = 8


def _delta(row: tuple[Any, ...]) -> _Row | None:
    """A delta row's (inode, size, mtime_ns, ctime_ns, digest) as selected; None for a
    file that is gone, and for a row of any other shape (damaged: it hides the blob's)."""
    if (
        type(row[4]) is str
        and type(row[0]) is int
        and type(row[1]) is int
        and type(row[2]) is int
        and type(row[3]) is int
    ):
        return (row[0], row[1], row[2], row[3], row[4])
    return None


def _overlay(entries: dict[str, Any], deltas: _Deltas) -> None:
    """Lay ``deltas`` over ``entries``: a row replaces, None removes."""
    for name, row in deltas.items():
        if row is None:
            entries.pop(name, None)
        else:
            entries[name] = row


class DirectoryDigests(Protocol):
    """The cached digests of one directory's files, as a scan asks for them while it
    lists the directory (``HashCache.directory``)."""

    @property
    def empty(self) -> bool:
        """True when the cache holds no digest of any file here (every directory of a
        first scan): no stat can find one, so the scan need not stat to ask."""
        ...

    def digest(self, name: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str | None:
        """The digest cached for the file ``name`` if it still has this stat (inode,
        size, mtime, ctime); else None."""
        ...

    def add(
        self, name: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None:
        """Remember ``digest``, read from ``name`` while it had this stat."""
        ...

    def close(self) -> None:
        """The scan has left the directory: the cache keeps what ``add`` gave it."""
        ...


class HashCache(Protocol):
    """Remembers digests by (relpath, inode, size, mtime_ns, ctime_ns)."""

    def lookup(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int
    ) -> str | None: ...

    def store(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None: ...

    def forget(self, relpath: str) -> None:
        """The file at ``relpath`` is gone: its digest may go too."""
        ...

    def directory(self, relpath: str) -> DirectoryDigests:
        """The digests of the files of ``relpath`` (a directory, "" for the root), for a
        scan that lists it; the scan closes it when it leaves the directory."""
        ...

    def scanning(self) -> AbstractContextManager[None]:
        """Around one whole-tree scan: the cache may prepare for a lookup of every file."""
        ...


class PerFileDigests:
    """A ``DirectoryDigests`` that asks a cache's ``lookup`` and ``store`` file by file:
    the memory and read-through caches', and any cache's outside a whole-tree scan."""

    __slots__ = ("_cache", "_prefix")

    # Unknown: per file, nothing is known of the directory as a whole.
    empty = False

    def __init__(self, cache: HashCache, directory: str) -> None:
        self._cache = cache
        self._prefix = f"{directory}/" if directory else ""

    def digest(self, name: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str | None:
        return self._cache.lookup(self._prefix + name, inode, size, mtime_ns, ctime_ns)

    def add(
        self, name: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None:
        self._cache.store(self._prefix + name, inode, size, mtime_ns, ctime_ns, digest)

    def close(self) -> None:
        pass


class MemoryHashCache:
    """A dict-backed ``HashCache``: what a dry run's ``ReadThroughCache`` keeps its own
    writes in, and what tests use where no file is wanted."""

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._by_relpath = _Rows(self._rows)

    def lookup(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int
    ) -> str | None:
        return self._by_relpath.digest(relpath, inode, size, mtime_ns, ctime_ns)

    def store(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None:
        self._rows[relpath] = (inode, size, mtime_ns, ctime_ns, digest)

    def forget(self, relpath: str) -> None:
        self._rows.pop(relpath, None)

    def directory(self, relpath: str) -> DirectoryDigests:
        return PerFileDigests(self, relpath)

    def scanning(self) -> AbstractContextManager[None]:
        return nullcontext()


class Database(Protocol):
    """What the SQLite cache needs of its file (``index.Index`` provides it)."""

    def read(self, sql: str, params: tuple[object, ...]) -> list[Any]: ...

    def write(self) -> AbstractContextManager[sqlite3.Connection]: ...


class SqliteHashCache:
    """The ``hashes`` and ``hash_deltas`` tables of an index file; writes are buffered,
    ``flush`` writes them. It shares the index's connection, transactions and error
    messages."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # _Deltas not yet written, by directory, then name (None: forgotten).
        self._pending: dict[str, _Deltas] = {}
        # Whole directories to write as blobs (their deltas deleted), by directory.
        self._folded: dict[str, _Entries] = {}
        # Files in the two above: a flush when it reaches HASH_BATCH.
        self._buffered = 0
        # While a whole-tree scan runs (``scanning``): the blobs by directory as
        # selected, and the delta rows by directory, then name; None otherwise.
        self._blobs: dict[str, bytes] | None = None
        self._deltas: dict[str, _Deltas] | None = None
        # Directories the scan took that must be rewritten even with nothing new
        # (they had deltas, or their blob was damaged).
        self._dirty: set[str] = set()
        # The last directory ``lookup`` read whole, with its deltas laid over.
        self._recent: tuple[str, _Entries] | None = None

    # -- a whole-tree scan

    @contextmanager
    def _scanning(self) -> Iterator[None]:
        blobs, deltas = dict(self._db.read(_SELECT_DIRS, ())), self._all_deltas()
        self._blobs, self._deltas = blobs, deltas
        self._dirty = set()
        self._recent = None
        try:
            yield
        finally:
            self._blobs = self._deltas = None
            self._dirty = set()
            self._recent = None

    def scanning(self) -> AbstractContextManager[None]:
        """Select every row once for the scan's lookups; drop them when it ends."""
        return self._scanning()

    def _scanned(self, directory: str) -> tuple[_Entries, bool]:
        """A directory's entries as the scan loaded them (its blob let go, deltas laid
        over), and whether its row must be rewritten even with nothing new."""
        assert self._blobs is not None and self._deltas is not None
        blob = self._blobs.pop(directory, None)
        deltas = self._deltas.pop(directory, None)
        folded = self._folded.get(directory)
        if folded is not None:
            return folded, False  # folded since it was written: newer than both
        dirty = False
        if blob is None:
            entries: _Entries = {}
        else:
            decoded = decode(blob)
            if decoded is None:
                entries, dirty = {}, True
            else:
                entries = decoded
        if deltas:
            _overlay(entries, deltas)
            dirty = True
        return entries, dirty

    def directory(self, relpath: str) -> DirectoryDigests:
        """In a whole-tree scan, the directory's rows as loaded, buffered deltas laid
        over, folded into its blob when the scan closes it; else ``PerFileDigests``."""
        if self._blobs is None:
            return PerFileDigests(self, relpath)
        entries, dirty = self._scanned(relpath)
        if dirty:
            self._dirty.add(relpath)
        pending = self._pending.get(relpath)
        if pending:
            _overlay(entries, pending)
        return _ScannedDirectory(self, relpath, entries)

    def _fold(self, directory: str, entries: _Entries, new: _Entries) -> None:
        """Fold the directory's deltas and ``new`` rows into ``entries`` (what the scan
        took), kept as its blob if anything changed; the next flush writes it."""
        before = self._folded.get(directory)
        buffered = len(before) if before is not None else 0  # ``entries`` itself, if any
        pending = self._pending.pop(directory, None)
        if pending:
            self._buffered -= len(pending)
            _overlay(entries, pending)
        if new:
            entries.update(new)
        if not (pending or new or directory in self._dirty):
            return
        self._dirty.discard(directory)
        self._buffered += len(entries) - buffered
        self._folded[directory] = entries
        if self._buffered >= HASH_BATCH:
            self.flush()

    # -- single files

    def lookup(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int
    ) -> str | None:
        directory, name = split(relpath)
        pending = self._pending.get(directory)
        if pending is not None and name in pending:
            rows: Mapping[str, _Row | None] = pending
        else:
            rows = self._rows_holding(directory, name, ctime_ns)
        return _Rows(rows).digest(name, inode, size, mtime_ns, ctime_ns)

    def _rows_holding(self, directory: str, name: str, ctime_ns: int) -> Mapping[str, _Row | None]:
        """Rows by name that hold the stored row of one file, if it has one (what the
        buffer does not hold)."""
        folded = self._folded.get(directory)
        if folded is not None:
            return folded
        recent = self._recent
        if recent is not None and recent[0] == directory:
            return recent[1]
        if self._blobs is not None:
            # In a whole-tree scan that does not take rows itself (a dry run's).
            entries, _ = self._scanned(directory)
            self._recent = (directory, entries)
            return entries
        rows = self._db.read(
            "SELECT inode, size, mtime_ns, ctime_ns, hash FROM hash_deltas"
            " WHERE dir = ? AND name = ?",
            (directory, name),
        )
        if rows:
            return {name: _delta(rows[0])}
        rows = self._db.read("SELECT newest FROM hashes WHERE dir = ?", (directory,))
        if not rows or ctime_ns > rows[0][0]:
            return {}  # newer than every row of the blob: none can match
        entries = self._stored(directory)
        self._recent = (directory, entries)
        return entries

    def _stored(self, directory: str) -> _Entries:
        """A directory's rows on disk: its blob, its deltas laid over."""
        rows = self._db.read("SELECT entries FROM hashes WHERE dir = ?", (directory,))
        entries = (decode(rows[0][0]) or {}) if rows else {}
        deltas = self._db.read(
            "SELECT name, inode, size, mtime_ns, ctime_ns, hash FROM hash_deltas WHERE dir = ?",
            (directory,),
        )
        _overlay(entries, {row[0]: _delta(row[1:]) for row in deltas})
        return entries

    def store(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None:
        self._delta(relpath, (inode, size, mtime_ns, ctime_ns, digest))

    def forget(self, relpath: str) -> None:
        """A delta that says the file is gone (its blob's row, if any, no longer counts)."""
        self._delta(relpath, None)

    def _delta(self, relpath: str, row: _Row | None) -> None:
        directory, name = split(relpath)
        pending = self._pending.get(directory)
        if pending is None:
            pending = self._pending[directory] = {}
        if name not in pending:
            self._buffered += 1
        pending[name] = row
        # Not in the middle of a scan's directory: ``_fold`` flushes between them.
        if self._buffered >= HASH_BATCH and self._blobs is None:
            self.flush()

    # -- writing

    def flush(self) -> None:
        """Write buffered blobs and deltas in one transaction (closing the index does too).

        A folded directory's blob replaces its row and its deltas are deleted;
        deltas buffered since are written after, so they stay on top.
        """
        folded, pending = self._folded, self._pending
        if not folded and not pending:
            return
        blobs = [
            _blob_row(directory, entries)
            for directory, entries in sorted(folded.items())
            if entries
        ]
        emptied = [(directory,) for directory, entries in folded.items() if not entries]
        deltas = [
            (directory, name, *row) if row is not None else (directory, name, *_GONE)
            for directory, named in sorted(pending.items())
            for name, row in named.items()
        ]
        with self._db.write() as db:
            if folded:
                db.executemany(_INSERT_DIR, blobs)
                db.executemany("DELETE FROM hashes WHERE dir = ?", emptied)
                db.executemany(
                    "DELETE FROM hash_deltas WHERE dir = ?", ((directory,) for directory in folded)
                )
            db.executemany(_INSERT_DELTA, deltas)
        if self._deltas is not None:
            # In a scan: directories it has yet to take find these deltas on disk.
            for directory, named in pending.items():
                self._deltas.setdefault(directory, {}).update(named)
        folded.clear()
        pending.clear()
        self._buffered = 0
        self._recent = None

    def _all_deltas(self) -> dict[str, _Deltas]:
        """Every delta row on disk, by directory, then name."""
        deltas: dict[str, _Deltas] = {}
        for row in self._db.read(_SELECT_DELTAS, ()):
            named = deltas.get(row[0])
            if named is None:
                named = deltas[row[0]] = {}
            named[row[1]] = _delta(row[2:])
        return deltas

    def count(self) -> int:
        """Files cached on disk, at most (a delta over a blob's row counts twice;
        buffered ones not yet written are not counted)."""
        files = self._db.read("SELECT coalesce(sum(files), 0) FROM hashes", ())
        deltas = self._db.read("SELECT count(*) FROM hash_deltas WHERE hash IS NOT NULL", ())
        return int(files[0][0]) + int(deltas[0][0])

    def prune(self, keep: Iterable[str]) -> int:
        """Drop cached hashes of relpaths not in ``keep``; returns how many went.

        Folds every directory's deltas into its blob on the way. A damaged blob
        counts as the files it said it held.
        """
        self.flush()
        kept: dict[str, set[str]] = {}
        for relpath in keep:
            directory, name = split(relpath)
            names = kept.get(directory)
            if names is None:
                names = kept[directory] = set()
            names.add(name)
        deltas = self._all_deltas()
        removed = 0
        rewrite: list[tuple[str, int, int, bytes]] = []
        drop: list[tuple[str]] = []
        stored = {
            directory: (files, blob)
            for directory, files, blob in self._db.read(
                "SELECT dir, files, entries FROM hashes", ()
            )
        }
        for directory in sorted(stored.keys() | deltas.keys()):
            files, blob = stored.get(directory, (0, None))
            decoded = decode(blob) if blob is not None else {}
            damaged = decoded is None
            if decoded is None:
                removed += int(files)  # damaged: what it said it held
            entries = decoded or {}
            named = deltas.get(directory)
            if named:
                _overlay(entries, named)
            names = kept.get(directory, set())
            left = {name: row for name, row in entries.items() if name in names}
            removed += len(entries) - len(left)
            if not left:
                drop.append((directory,))
            elif len(left) < len(entries) or named or damaged:
                rewrite.append(_blob_row(directory, left))
        with self._db.write() as db:
            db.executemany("DELETE FROM hashes WHERE dir = ?", drop)
            db.executemany(_INSERT_DIR, rewrite)
            db.execute("DELETE FROM hash_deltas")
        self._recent = None
        return removed


class _Rows:
    """Cached rows by key (a file's name in its directory, or a relpath).

    ``digest`` is the one place that says whether a cached digest still holds: the
    row's inode, size, mtime and ctime are the file's.
    """

    __slots__ = ("_rows",)

    def __init__(self, rows: Mapping[str, _Row | None]) -> None:
        self._rows = rows

    def digest(self, key: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str | None:
        row = self._rows.get(key)
        if (
            row is not None
            and row[0] == inode
            and row[1] == size
            and row[2] == mtime_ns
            and row[3] == ctime_ns
        ):
            return row[4]
        return None


class _ScannedDirectory(_Rows):
    """One directory's rows as a whole-tree scan took them (``SqliteHashCache.directory``)."""

    __slots__ = ("_cache", "_directory", "_entries", "_new", "empty")

    def __init__(self, cache: SqliteHashCache, directory: str, entries: _Entries) -> None:
        super().__init__(entries)
        self._cache = cache
        self._directory = directory
        self._entries = entries  # the rows above, which the cache keeps as they are
        self._new: _Entries = {}  # what the scan hashed here
        self.empty = not entries

    def add(
        self, name: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None:
        self._new[name] = (inode, size, mtime_ns, ctime_ns, digest)

    def close(self) -> None:
        self._cache._fold(self._directory, self._entries, self._new)


def _blob_row(directory: str, entries: _Entries) -> tuple[str, int, int, bytes]:
    """A ``hashes`` row of a directory with files: its relpath, how many, the newest
    change time among them (what a lookup checks before it decodes) and the blob."""
    return (directory, len(entries), max(map(_CTIME, entries.values())), encode(entries))


# A delta that says "gone": no stat, no digest.
_GONE = (None, None, None, None, None)


class ReadThroughCache:
    """Reads ``backing``; keeps its own writes in memory (dry runs write nothing).

    ``keep_writes`` False: keeps none, for a cache that serves one scan, which asks
    each file once (a dry run after a lost index hashed 100,000 files: ~11 MiB).
    """

    def __init__(self, backing: HashCache, *, keep_writes: bool = True) -> None:
        self._backing = backing
        self._memory = MemoryHashCache()
        self._keep_writes = keep_writes

    def scanning(self) -> AbstractContextManager[None]:
        # The backing cache prepares; ``directory`` does not hand its rows out, so
        # a file is looked up in this cache's own writes first.
        return self._backing.scanning()

    def directory(self, relpath: str) -> DirectoryDigests:
        return PerFileDigests(self, relpath)

    def lookup(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int
    ) -> str | None:
        key = (relpath, inode, size, mtime_ns, ctime_ns)
        return self._memory.lookup(*key) or self._backing.lookup(*key)

    def store(
        self, relpath: str, inode: int, size: int, mtime_ns: int, ctime_ns: int, digest: str
    ) -> None:
        if self._keep_writes:
            self._memory.store(relpath, inode, size, mtime_ns, ctime_ns, digest)

    def forget(self, relpath: str) -> None:
        self._memory.forget(relpath)
