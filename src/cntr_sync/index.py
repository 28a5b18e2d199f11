"""The durable truth of one mirror pair: an SQLite file per (base URL, root, container spec).

Owns which remote file holds which relpath (``entries``), uploads started but
not yet recorded (``intents``), remote files of ours that must still go
(``pending_deletes``), and the container in use and what the server does with
filenames (``meta``). The same file holds the hash
cache (``hashes`` and ``hash_deltas``, run by ``hashcache.SqliteHashCache`` on
this connection), the journal and the conflict copies made (``journal``,
``conflict_copies``); the pair's lock is a ``locks.FileLock`` taken before the file
is opened. The file's schema, migrations and opening are ``index_file``'s.

Must not: talk to the API, read the sync tree, or hold anything secret. No
method takes an API key, and the base URL is stored without user:password.

Every write is one transaction, committed before the method returns, so a
crash loses at most the work in flight (the hash cache alone writes in
batches: a lost row only costs a re-hash).

One thread only (sqlite3's default check enforces it). sqlite3 and OSError
failures become ``LocalError`` naming the file; ``LockedError`` when another
process holds the pair.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from cntr_sync.entry_table import EntryRow, EntryTable
from cntr_sync.errors import LocalError
from cntr_sync.hashcache import SqliteHashCache
from cntr_sync.index_file import (
    connect,
    copy_for_reading,
    create_private,
    db_error,
    in_wal,
    index_path,
    init_meta,
    leave_wal,
    migrate,
    strip_userinfo,
    transaction,
    use_wal,
)
from cntr_sync.listing import Listing
from cntr_sync.locks import FileLock
from cntr_sync.models import IndexEntry, LocalFile, PendingDelete, PullFailure, UploadIntent

_ENTRY_COLUMNS = (
    "relpath, remote_id, remote_path, size, mtime_ns, hash, synced_at,"
    " origin, remote_size, remote_created_at"
)


class Index:
    """The index of one pair, locked for this process. Use ``Index.open``; close it."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, lock_path: Path, lock: FileLock | None
    ) -> None:
        self._conn = conn
        self._path = path
        self._lock_path = lock_path
        self._lock = lock
        self._closed = False
        self._claim: FileLock | None = None
        self._claimed: str | None = None
        # Between ``begin_batch`` and ``end_batch``: writes join one transaction,
        # begun by the first of them (a batch with no write writes nothing).
        self._batching = False
        self._batched = False  # that transaction is open
        self._meta_rows: dict[str, Any] = {}
        # Whether the file is in WAL mode: switched on by the first write, off by
        # ``settle`` (a crash may have left it on). Readers' copies stay as they are.
        self._wal = lock is not None and in_wal(conn)
        self.hashes = SqliteHashCache(self)

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        base_url: str,
        root: Path,
        container_spec: str,
        lock: bool = True,
    ) -> Index:
        """Lock the pair, then open (creating or migrating) its database.

        ``lock=False`` is for readers that change nothing (``status``): they may
        look while a daemon or another sync holds the pair, and never write, not
        even to a read-only state directory: they work on a copy in memory
        (migrated there if the file is older; empty if there is no file yet).
        State files are created 0600 in a 0700 directory: they name your files.
        """
        path = index_path(state_dir, base_url, root, container_spec)
        lock_path = path.with_suffix(".lock")
        if not lock:
            conn = copy_for_reading(path)
            try:
                migrate(conn, path)
                init_meta(conn, path, strip_userinfo(base_url), root, container_spec)
            except BaseException:
                conn.close()
                raise
            return cls(conn, path, lock_path, None)
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalError(
                f"cannot create state directory {state_dir}: {exc.strerror}", path=str(state_dir)
            ) from None
        pair_lock = FileLock.acquire(lock_path, f"{root} -> {container_spec}")
        try:
            create_private(path)
            # Set up on a connection of its own: the migrations' statements would stay
            # in the kept connection's statement cache (about 230 KiB a pair, which a
            # daemon with 500 pairs holds 500 times).
            with contextlib.closing(connect(path)) as setup:
                migrate(setup, path)
                init_meta(setup, path, strip_userinfo(base_url), root, container_spec)
            conn = connect(path)
        except BaseException:
            if pair_lock is not None:
                pair_lock.release()
            raise
        return cls(conn, path, lock_path, pair_lock)

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Write buffered hashes, close the database and release the locks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.hashes.flush()
            self.settle()
        finally:
            self._conn.close()
            self._release_claim()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    # -- meta

    @property
    def path(self) -> Path:
        return self._path

    @property
    def lock_path(self) -> Path:
        return self._lock_path

    @property
    def container_id(self) -> str | None:
        value: str | None = self._meta("container_id")
        return value

    @property
    def container_name(self) -> str | None:
        value: str | None = self._meta("container_name")
        return value

    @property
    def server_keeps_names(self) -> bool | None:
        """Whether the server keeps upload filenames; None until it was observed."""
        value: int | None = self._meta("server_keeps_names")
        return None if value is None else bool(value)

    def claim_container(self, base_url: str, container_id: str) -> None:
        """Hold a lock on the container itself for as long as this index is open.

        The pair lock is keyed by the container as the user named it; a second
        pair naming the same container differently (its id, or another root)
        would otherwise sync into it at the same time and each pass would
        delete the other's uploads. Readers (``lock=False``) claim nothing.
        """
        if self._lock is None or self._claimed == container_id:
            return
        key = f"{strip_userinfo(base_url)}\0{container_id}"
        stem = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        claim = FileLock.acquire(
            self._path.parent / f"container-{stem}.lock", f"into container {container_id}"
        )
        self._release_claim()
        self._claim, self._claimed = claim, container_id

    def _release_claim(self) -> None:
        if self._claim is not None:
            self._claim.release()
        self._claim, self._claimed = None, None

    def set_container(self, container_id: str, name: str) -> None:
        """Use this container from now on.

        A different container than the stored one means the old one expired or
        was replaced and its files are gone, so its entries, intents and pending
        deletes go too. The hash cache stays: it describes the local tree.
        """
        with self.write() as db:
            db.execute("DELETE FROM entries WHERE container_id <> ?", (container_id,))
            db.execute("DELETE FROM intents WHERE container_id <> ?", (container_id,))
            db.execute("DELETE FROM pending_deletes WHERE container_id <> ?", (container_id,))
            db.execute("DELETE FROM pull_failures WHERE container_id <> ?", (container_id,))
            db.execute(
                "UPDATE meta SET container_id = ?, container_name = ? WHERE id = 1",
                (container_id, name),
            )

    @property
    def server_adds_prefix(self) -> bool | None:
        """Whether the server prefixes upload names with 32 hex digits; None until seen."""
        value: int | None = self._meta("server_adds_prefix")
        return None if value is None else bool(value)

    def set_server_adds_prefix(self, value: bool) -> None:
        with self.write() as db:
            db.execute("UPDATE meta SET server_adds_prefix = ? WHERE id = 1", (int(value),))

    def set_server_keeps_names(self, value: bool) -> None:
        with self.write() as db:
            db.execute("UPDATE meta SET server_keeps_names = ? WHERE id = 1", (int(value),))

    # -- entries

    def entries(
        self, local: Mapping[str, LocalFile] | None = None, listing: Listing | None = None
    ) -> dict[str, IndexEntry]:
        """Every entry of the current container, by relpath.

        Row by row rather than all rows first (at 100,000 entries the list of row
        tuples alone is ~14 MB at the pass's peak). A full pass holds the scan, the
        listing and the entries at once, so each string or number is held once:
        an entry takes the relpath, hash, size and mtime objects of the file in
        ``local`` (the scan's files) and the remote id and path of ``listing``
        where they are equal (~400 B a file less at 100,000 files).
        """
        return {entry.relpath: entry for entry in self._shared_entries(local, listing)}

    def entry_table(self, local: Mapping[str, LocalFile], listing: Listing) -> EntryTable:
        """``entries(local, listing)`` as an ``EntryTable``: the same entries in columns
        (~100 B an entry less), for a full pass, which holds them all while it plans."""
        return EntryTable.from_rows(self._shared_rows(local, listing, ordered=True))

    def _shared_entries(
        self,
        local: Mapping[str, LocalFile] | None,
        listing: Listing | None,
        *,
        ordered: bool = False,
    ) -> Iterator[IndexEntry]:
        """The entries, row by row, sharing ``local``'s and ``listing``'s objects
        (``_shared_row``); by relpath if ``ordered``."""
        for row in self._shared_rows(local, listing, ordered=ordered):
            yield IndexEntry(*row)

    def _shared_rows(
        self,
        local: Mapping[str, LocalFile] | None,
        listing: Listing | None,
        *,
        ordered: bool = False,
    ) -> Iterator[EntryRow]:
        """``_shared_entries``' fields, row by row (``_shared_row``)."""
        share = listing.shared if listing is not None else _as_given
        seen = (local or {}).get
        # Files uploaded in the same second share one creation time object.
        times: dict[int | None, int | None] = {}
        order = " ORDER BY relpath" if ordered else ""
        try:
            cursor = self._conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE container_id = ?{order}",  # noqa: S608
                (self.container_id,),
            )
            for row in cursor:
                yield _shared_row(row, seen(row[0]), share, times)
        except sqlite3.Error as exc:
            raise db_error(self._path, exc) from exc

    def entries_under(self, relpaths: Iterable[str]) -> dict[str, IndexEntry]:
        """The entries at each of ``relpaths`` or below it (a directory), by relpath.

        One indexed range query per path: the cost follows the paths, not the tree.
        """
        found: dict[str, IndexEntry] = {}
        for relpath in relpaths:
            # Everything below "a/b" sorts between "a/b/" and "a/b0" ('0' follows '/').
            # Two lookups of the primary key: with an OR SQLite scans the whole table
            # (27 ms at 100,000 rows, against well under 1 ms).
            rows = self.read(
                f"SELECT {_ENTRY_COLUMNS} FROM entries"  # noqa: S608
                " WHERE container_id = ? AND relpath = ?"
                f" UNION ALL SELECT {_ENTRY_COLUMNS} FROM entries"
                " WHERE container_id = ? AND relpath >= ? AND relpath < ?",
                (self.container_id, relpath, self.container_id, relpath + "/", relpath + "0"),
            )
            found.update((row[0], IndexEntry(*row)) for row in rows)
        return found

    def has_unfinished_work(self) -> bool:
        """Whether an upload's outcome or a delete is still open (a listing must decide)."""
        container_id = self.container_id
        rows = self.read(
            "SELECT (SELECT count(*) FROM intents WHERE container_id = ?)"
            " + (SELECT count(*) FROM pending_deletes WHERE container_id = ?)",
            (container_id, container_id),
        )
        return bool(rows[0][0])

    def entry_count(self) -> int:
        rows = self.read(
            "SELECT count(*) FROM entries WHERE container_id = ?", (self.container_id,)
        )
        count: int = rows[0][0]
        return count

    def record_upload(
        self, entry: IndexEntry, *, pending_delete: PendingDelete | None = None
    ) -> None:
        """An upload succeeded: store the entry, drop its intent, record ``pending_delete``.

        If the entry replaces one with another remote id, that old remote file
        becomes a pending delete as well, so it can never be orphaned.
        """
        with self.write() as db:
            container_id = self._require_container(db)
            _upsert_entry(db, container_id, entry)
            db.execute("DELETE FROM intents WHERE relpath = ?", (entry.relpath,))
            if pending_delete is not None:
                _insert_pending_delete(db, container_id, pending_delete)

    def record_download(self, entry: IndexEntry) -> None:
        """A download (or a content match) made ``entry.relpath`` mirror a remote file."""
        with self.write() as db:
            _upsert_entry(db, self._require_container(db), entry)
            db.execute("DELETE FROM pull_failures WHERE remote_id = ?", (entry.remote_id,))

    def adopt(self, entry: IndexEntry) -> None:
        """A remote file is ours after all (e.g. an ambiguous upload): index it."""
        self.adopt_many([entry])

    def adopt_many(self, entries: Iterable[IndexEntry]) -> None:
        """``adopt`` for many entries in one transaction (rebuilding a lost index)."""
        with self.write() as db:
            container_id = self._require_container(db)
            for entry in entries:
                _upsert_entry(db, container_id, entry)
                db.execute("DELETE FROM intents WHERE relpath = ?", (entry.relpath,))

    def refresh_stat(self, relpath: str, size: int, mtime_ns: int) -> None:
        """The file was touched but its content (hash) is unchanged."""
        with self.write() as db:
            db.execute(
                "UPDATE entries SET size = ?, mtime_ns = ? WHERE container_id = ? AND relpath = ?",
                (size, mtime_ns, self._require_container(db), relpath),
            )

    def forget(self, relpath: str) -> None:
        with self.write() as db:
            db.execute(
                "DELETE FROM entries WHERE container_id = ? AND relpath = ?",
                (self._require_container(db), relpath),
            )

    def record_delete(self, remote_id: str) -> None:
        """The remote file is gone: drop its entry and its pending delete, if any."""
        with self.write() as db:
            db.execute("DELETE FROM entries WHERE remote_id = ?", (remote_id,))
            db.execute("DELETE FROM pending_deletes WHERE remote_id = ?", (remote_id,))
            db.execute("DELETE FROM pull_failures WHERE remote_id = ?", (remote_id,))

    # -- intents and pending deletes

    def add_intent(self, intent: UploadIntent) -> None:
        """Record an upload about to start; replaces an earlier intent for the relpath."""
        self.add_intents([intent])

    def add_intents(self, intents: Iterable[UploadIntent]) -> None:
        """Record uploads about to start, in one transaction of their own (committed
        even inside a batch: an intent must be on disk before its request leaves)."""
        batched = self._batching
        self.end_batch()  # what the batch holds goes first, then the intents alone
        try:
            with self.write() as db:
                container_id = self._require_container(db)
                db.executemany(
                    "INSERT OR REPLACE INTO intents"
                    " (relpath, container_id, filename, size, hash, started_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (i.relpath, container_id, i.filename, i.size, i.hash, i.started_at)
                        for i in intents
                    ],
                )
        finally:
            if batched:
                self.begin_batch()

    def clear_intent(self, relpath: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM intents WHERE relpath = ?", (relpath,))

    def intents(self) -> dict[str, UploadIntent]:
        rows = self.read(
            "SELECT relpath, filename, size, hash, started_at FROM intents WHERE container_id = ?",
            (self.container_id,),
        )
        return {row[0]: UploadIntent(*row) for row in rows}

    def add_pending_delete(self, pending: PendingDelete) -> None:
        with self.write() as db:
            _insert_pending_delete(db, self._require_container(db), pending)

    def pending_deletes(self) -> list[PendingDelete]:
        rows = self.read(
            "SELECT remote_id, relpath FROM pending_deletes WHERE container_id = ?"
            " ORDER BY remote_id",
            (self.container_id,),
        )
        return [PendingDelete(*row) for row in rows]

    # -- downloads that failed

    def record_pull_failure(self, failure: PullFailure) -> None:
        with self.write() as db:
            db.execute(
                "INSERT OR REPLACE INTO pull_failures"
                " (remote_id, container_id, relpath, attempts, retry_at, error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    failure.remote_id,
                    self._require_container(db),
                    failure.relpath,
                    failure.attempts,
                    failure.retry_at,
                    failure.error,
                ),
            )

    def clear_pull_failure(self, remote_id: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM pull_failures WHERE remote_id = ?", (remote_id,))

    def pull_failures(self) -> dict[str, PullFailure]:
        """Failed downloads of the current container, by remote id."""
        rows = self.read(
            "SELECT remote_id, relpath, attempts, retry_at, error FROM pull_failures"
            " WHERE container_id = ?",
            (self.container_id,),
        )
        return {row[0]: PullFailure(*row) for row in rows}

    # -- plumbing (also what ``SqliteHashCache`` runs on)

    def read(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        """Rows of one query; SQLite failures become ``LocalError`` naming the file."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise db_error(self._path, exc) from exc

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed on exit; SQLite failures become ``LocalError``.

        Between ``begin_batch`` and ``end_batch`` it is part of that transaction.
        """
        self._meta_rows.clear()
        if self._batching:
            try:
                if not self._batched:
                    self._writing()
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._batched = True
                yield self._conn
            except sqlite3.Error as exc:
                raise db_error(self._path, exc) from exc
            return
        try:
            self._writing()
            with transaction(self._conn) as db:
                yield db
        except sqlite3.Error as exc:
            raise db_error(self._path, exc) from exc

    def begin_batch(self) -> None:
        """Start one transaction that the following writes join, until ``end_batch``.

        For records that a crash may lose (the next listing rebuilds them from
        the intents), never for an intent, which must be on disk before its upload.
        """
        self._batching = True

    def end_batch(self) -> None:
        """Commit the batch (roll it back if the commit fails)."""
        self._batching = False
        if not self._batched:
            return
        self._batched = False
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise db_error(self._path, exc) from exc

    def settle(self) -> None:
        """After a pass that wrote: the file back to the rollback journal, so that a
        later pass that only reads (the daemon's idle polls) writes nothing to the
        state directory, not even the WAL's -shm. Writes nothing when nothing was
        written; a reader holding the file leaves it in WAL until the next time."""
        if not self._wal or self._batching or self._batched or self._lock is None:
            return
        try:
            self._wal = not leave_wal(self._conn)
        except sqlite3.Error as exc:
            raise db_error(self._path, exc) from exc

    def _writing(self) -> None:
        """Before a write transaction: WAL, for the commits of the pass (see ``settle``)."""
        if not self._wal and self._lock is not None:
            use_wal(self._conn)
            self._wal = True

    def _meta(self, column: str) -> Any:
        # Kept until the next write: only this process writes the index (it holds the lock).
        if column not in self._meta_rows:
            rows = self.read(f"SELECT {column} FROM meta WHERE id = 1", ())  # noqa: S608
            self._meta_rows[column] = rows[0][0]
        return self._meta_rows[column]

    def _require_container(self, db: sqlite3.Connection) -> str:
        row = db.execute("SELECT container_id FROM meta WHERE id = 1").fetchone()
        if row[0] is None:
            # A caller bug, not a user-facing condition.
            raise RuntimeError("the index has no container yet: call set_container first")
        container_id: str = row[0]
        return container_id


def _upsert_entry(db: sqlite3.Connection, container_id: str, entry: IndexEntry) -> None:
    old = db.execute(
        "SELECT remote_id FROM entries WHERE container_id = ? AND relpath = ?",
        (container_id, entry.relpath),
    ).fetchone()
    if old is not None and old[0] != entry.remote_id:
        _insert_pending_delete(db, container_id, PendingDelete(old[0], entry.relpath))
    db.execute(
        f"INSERT OR REPLACE INTO entries (container_id, {_ENTRY_COLUMNS})"  # noqa: S608
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            container_id,
            entry.relpath,
            entry.remote_id,
            entry.remote_path,
            entry.size,
            entry.mtime_ns,
            entry.hash,
            entry.synced_at,
            entry.origin,
            entry.remote_size,
            entry.remote_created_at,
        ),
    )


def _insert_pending_delete(
    db: sqlite3.Connection, container_id: str, pending: PendingDelete
) -> None:
    db.execute(
        "INSERT OR REPLACE INTO pending_deletes (remote_id, container_id, relpath)"
        " VALUES (?, ?, ?)",
        (pending.remote_id, container_id, pending.relpath),
    )


# -- opening -----------------------------------------------------------------------


def _shared_row(
    row: tuple[Any, ...],
    local: LocalFile | None,
    share: Callable[[str, str], tuple[str, str]],
    times: dict[int | None, int | None],
) -> EntryRow:
    """The entry fields of one row (``_ENTRY_COLUMNS``), holding the objects of ``local``
    and of the listing (``share``) wherever they are equal to its own."""
    (
        relpath,
        remote_id,
        remote_path,
        size,
        mtime_ns,
        digest,
        synced_at,
        origin,
        remote_size,
        remote_created_at,
    ) = row
    if local is not None:
        relpath = local.relpath
        digest = local.hash if local.hash == digest else digest
        size = local.size if local.size == size else size
        mtime_ns = local.mtime_ns if local.mtime_ns == mtime_ns else mtime_ns
    remote_id, remote_path = share(remote_id, remote_path)
    return (
        relpath,
        remote_id,
        remote_path,
        size,
        mtime_ns,
        digest,
        synced_at,
        "pull" if origin == "pull" else "push",
        size if remote_size == size else remote_size,
        times.setdefault(remote_created_at, remote_created_at),
    )


def _as_given(remote_id: str, remote_path: str) -> tuple[str, str]:
    return remote_id, remote_path
