"""The durable truth of one mirror pair: an SQLite file per (base URL, root, container spec).

Owns: which remote file holds which relpath (``entries``), uploads started but
not yet recorded (``intents``), remote files of ours that must still go
(``doomed``), the container in use and what the server does with filenames
(``meta``), and the container-independent hash cache (``hashes``). Owns the
pair's lock too: one process at a time per pair.

Must not: talk to the API, read the sync tree, or hold anything secret. No
method takes an API key, and the base URL is stored without user:password.

Every write is one transaction, committed before the method returns, so a
crash loses at most the work in flight. The one exception is the hash cache:
``store`` is buffered and written in batches (a lost row only costs a re-hash),
because a commit per file would dominate a first scan of 100k files.

One thread only (sqlite3's default check enforces it). sqlite3 and OSError
failures become ``LocalError`` naming the file; ``LockedError`` when another
process holds the pair.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cntr_sync.errors import LocalError, LockedError
from cntr_sync.models import DoomedFile, IndexEntry, UploadIntent

# Each migration is the list of statements that takes the schema from version
# N to N + 1 (PRAGMA user_version). Append; never edit a released migration.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # A single row (id = 1): the pair this file belongs to and its container.
        """CREATE TABLE meta (
            id             INTEGER PRIMARY KEY CHECK (id = 1),
            base_url       TEXT NOT NULL,
            root           TEXT NOT NULL,
            container_spec TEXT NOT NULL,
            container_id   TEXT,
            container_name TEXT,
            names_kept     INTEGER CHECK (names_kept IN (0, 1)),
            created_at     REAL NOT NULL
        )""",
        """CREATE TABLE entries (
            container_id TEXT NOT NULL,
            relpath      TEXT NOT NULL,
            remote_id    TEXT NOT NULL,
            remote_path  TEXT NOT NULL,
            size         INTEGER NOT NULL CHECK (size >= 0),
            mtime_ns     INTEGER NOT NULL,
            hash         TEXT NOT NULL,
            uploaded_at  REAL NOT NULL,
            PRIMARY KEY (container_id, relpath)
        ) WITHOUT ROWID""",
        "CREATE INDEX entries_by_remote_id ON entries (remote_id)",
        """CREATE TABLE intents (
            relpath      TEXT PRIMARY KEY,
            container_id TEXT NOT NULL,
            filename     TEXT NOT NULL,
            size         INTEGER NOT NULL CHECK (size >= 0),
            hash         TEXT NOT NULL,
            started_at   REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE doomed (
            remote_id    TEXT PRIMARY KEY,
            container_id TEXT NOT NULL,
            relpath      TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE hashes (
            relpath  TEXT PRIMARY KEY,
            inode    INTEGER NOT NULL,
            size     INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            hash     TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_HASH_BATCH = 1000
# SQLite result codes that mean "this file is not (or no longer) a database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_ENTRY_COLUMNS = "relpath, remote_id, remote_path, size, mtime_ns, hash, uploaded_at"


def pair_stem(base_url: str, root: Path, container_spec: str) -> str:
    """File name stem of a pair's index and lock: 24 hex of a sha256 of the pair."""
    key = f"{_strip_userinfo(base_url)}\0{root.resolve()}\0{container_spec}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def _strip_userinfo(url: str) -> str:
    # A base URL may carry user:password@; that must neither be stored nor
    # change the pair's file name when the password rotates.
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class Index:
    """The index of one pair, locked for this process. Use ``Index.open``; close it."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, lock_path: Path, lock_fd: int | None
    ) -> None:
        self._conn = conn
        self._path = path
        self._lock_path = lock_path
        self._lock_fd = lock_fd
        self._closed = False
        self._claim_fd: int | None = None
        self._claimed: str | None = None
        self._pending_hashes: dict[str, tuple[int, int, int, str]] = {}

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
        look while a daemon or another sync holds the pair; WAL keeps reads safe.
        """
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalError(
                f"cannot create state directory {state_dir}: {exc.strerror}", path=str(state_dir)
            ) from None
        stem = pair_stem(base_url, root, container_spec)
        path = state_dir / f"{stem}.sqlite"
        lock_path = state_dir / f"{stem}.lock"
        lock_fd = _acquire_lock(lock_path, root, container_spec) if lock else None
        try:
            conn = _connect(path)
            try:
                _migrate(conn, path)
                _init_meta(conn, path, _strip_userinfo(base_url), root, container_spec)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if lock_fd is not None:
                _release_lock(lock_fd)
            raise
        return cls(conn, path, lock_path, lock_fd)

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
        """Write buffered hashes, close the database and release the lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush_hashes()
        finally:
            self._conn.close()
            self._release_claim()
            if self._lock_fd is not None:
                _release_lock(self._lock_fd)
                self._lock_fd = None

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
    def names_kept(self) -> bool | None:
        """Whether the server keeps upload filenames; None until it was observed."""
        value: int | None = self._meta("names_kept")
        return None if value is None else bool(value)

    def claim_container(self, base_url: str, container_id: str) -> None:
        """Hold a lock on the container itself for as long as this index is open.

        The pair lock is keyed by the container as the user named it; a second
        pair naming the same container differently (its id, or another root)
        would otherwise sync into it at the same time and each pass would
        delete the other's uploads. Readers (``lock=False``) claim nothing.
        """
        if self._lock_fd is None or self._claimed == container_id:
            return
        key = f"{_strip_userinfo(base_url)}\0{container_id}"
        stem = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        fd = _flock(self._path.parent / f"container-{stem}.lock", f"into container {container_id}")
        self._release_claim()
        self._claim_fd, self._claimed = fd, container_id

    def _release_claim(self) -> None:
        if self._claim_fd is not None:
            _release_lock(self._claim_fd)
        self._claim_fd, self._claimed = None, None

    def set_container(self, container_id: str, name: str) -> None:
        """Use this container from now on.

        A different container than the stored one means the old one expired or
        was replaced and its files are gone, so its entries, intents and doomed
        rows go too. The hash cache stays: it describes the local tree.
        """
        with self._write() as db:
            db.execute("DELETE FROM entries WHERE container_id <> ?", (container_id,))
            db.execute("DELETE FROM intents WHERE container_id <> ?", (container_id,))
            db.execute("DELETE FROM doomed WHERE container_id <> ?", (container_id,))
            db.execute(
                "UPDATE meta SET container_id = ?, container_name = ? WHERE id = 1",
                (container_id, name),
            )

    def set_names_kept(self, value: bool) -> None:
        with self._write() as db:
            db.execute("UPDATE meta SET names_kept = ? WHERE id = 1", (int(value),))

    # -- entries

    def entries(self) -> dict[str, IndexEntry]:
        """Every entry of the current container, by relpath."""
        rows = self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE container_id = ?",  # noqa: S608
            (self.container_id,),
        )
        return {row[0]: IndexEntry(*row) for row in rows}

    def entry_count(self) -> int:
        rows = self._read(
            "SELECT count(*) FROM entries WHERE container_id = ?", (self.container_id,)
        )
        count: int = rows[0][0]
        return count

    def record_upload(self, entry: IndexEntry, *, doomed: DoomedFile | None = None) -> None:
        """An upload succeeded: store the entry, drop its intent, doom ``doomed`` if given.

        If the entry replaces one with another remote id, that old remote file
        is doomed as well, so it can never be orphaned.
        """
        with self._write() as db:
            container_id = self._require_container(db)
            _upsert_entry(db, container_id, entry)
            db.execute("DELETE FROM intents WHERE relpath = ?", (entry.relpath,))
            if doomed is not None:
                _insert_doomed(db, container_id, doomed)

    def adopt(self, entry: IndexEntry) -> None:
        """A remote file is ours after all (e.g. an ambiguous upload): index it."""
        self.adopt_many([entry])

    def adopt_many(self, entries: Iterable[IndexEntry]) -> None:
        """``adopt`` for many entries in one transaction (rebuilding a lost index)."""
        with self._write() as db:
            container_id = self._require_container(db)
            for entry in entries:
                _upsert_entry(db, container_id, entry)
                db.execute("DELETE FROM intents WHERE relpath = ?", (entry.relpath,))

    def refresh_stat(self, relpath: str, size: int, mtime_ns: int) -> None:
        """The file was touched but its content (hash) is unchanged."""
        with self._write() as db:
            db.execute(
                "UPDATE entries SET size = ?, mtime_ns = ? WHERE container_id = ? AND relpath = ?",
                (size, mtime_ns, self._require_container(db), relpath),
            )

    def forget(self, relpath: str) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM entries WHERE container_id = ? AND relpath = ?",
                (self._require_container(db), relpath),
            )

    def record_delete(self, remote_id: str) -> None:
        """The remote file is gone: drop its entry and its doomed row, if any."""
        with self._write() as db:
            db.execute("DELETE FROM entries WHERE remote_id = ?", (remote_id,))
            db.execute("DELETE FROM doomed WHERE remote_id = ?", (remote_id,))

    # -- intents and doomed files

    def add_intent(self, intent: UploadIntent) -> None:
        """Record an upload about to start; replaces an earlier intent for the relpath."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO intents"
                " (relpath, container_id, filename, size, hash, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    intent.relpath,
                    self._require_container(db),
                    intent.filename,
                    intent.size,
                    intent.hash,
                    intent.started_at,
                ),
            )

    def clear_intent(self, relpath: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM intents WHERE relpath = ?", (relpath,))

    def intents(self) -> dict[str, UploadIntent]:
        rows = self._read(
            "SELECT relpath, filename, size, hash, started_at FROM intents WHERE container_id = ?",
            (self.container_id,),
        )
        return {row[0]: UploadIntent(*row) for row in rows}

    def add_doomed(self, doomed: DoomedFile) -> None:
        with self._write() as db:
            _insert_doomed(db, self._require_container(db), doomed)

    def doomed(self) -> list[DoomedFile]:
        rows = self._read(
            "SELECT remote_id, relpath FROM doomed WHERE container_id = ? ORDER BY remote_id",
            (self.container_id,),
        )
        return [DoomedFile(*row) for row in rows]

    # -- the hash cache (scan.HashCache)

    def lookup(self, relpath: str, inode: int, size: int, mtime_ns: int) -> str | None:
        pending = self._pending_hashes.get(relpath)
        if pending is not None:
            return pending[3] if pending[:3] == (inode, size, mtime_ns) else None
        rows = self._read(
            "SELECT hash FROM hashes WHERE relpath = ? AND inode = ? AND size = ? AND mtime_ns = ?",
            (relpath, inode, size, mtime_ns),
        )
        return str(rows[0][0]) if rows else None

    def store(self, relpath: str, inode: int, size: int, mtime_ns: int, digest: str) -> None:
        self._pending_hashes[relpath] = (inode, size, mtime_ns, digest)
        if len(self._pending_hashes) >= _HASH_BATCH:
            self.flush_hashes()

    def flush_hashes(self) -> None:
        """Write buffered ``store`` calls (``close`` does this too)."""
        if not self._pending_hashes:
            return
        rows = [(relpath, *row) for relpath, row in self._pending_hashes.items()]
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO hashes (relpath, inode, size, mtime_ns, hash)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        self._pending_hashes.clear()

    def prune_hashes(self, keep: Iterable[str]) -> int:
        """Drop cached hashes of relpaths not in ``keep``; returns how many went."""
        self.flush_hashes()
        with self._write() as db:
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
        return removed

    # -- plumbing

    def _meta(self, column: str) -> Any:
        rows = self._read(f"SELECT {column} FROM meta WHERE id = 1", ())  # noqa: S608
        return rows[0][0]

    def _require_container(self, db: sqlite3.Connection) -> str:
        row = db.execute("SELECT container_id FROM meta WHERE id = 1").fetchone()
        if row[0] is None:
            # A caller bug, not a user-facing condition.
            raise RuntimeError("the index has no container yet: call set_container first")
        container_id: str = row[0]
        return container_id

    def _read(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _db_error(self._path, exc) from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with _transaction(self._conn) as db:
                yield db
        except sqlite3.Error as exc:
            raise _db_error(self._path, exc) from exc


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    # IMMEDIATE takes the write lock up front; the connection is in autocommit
    # mode (isolation_level=None), so BEGIN/COMMIT here are the only boundaries.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _upsert_entry(db: sqlite3.Connection, container_id: str, entry: IndexEntry) -> None:
    old = db.execute(
        "SELECT remote_id FROM entries WHERE container_id = ? AND relpath = ?",
        (container_id, entry.relpath),
    ).fetchone()
    if old is not None and old[0] != entry.remote_id:
        _insert_doomed(db, container_id, DoomedFile(old[0], entry.relpath))
    db.execute(
        f"INSERT OR REPLACE INTO entries (container_id, {_ENTRY_COLUMNS})"  # noqa: S608
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            container_id,
            entry.relpath,
            entry.remote_id,
            entry.remote_path,
            entry.size,
            entry.mtime_ns,
            entry.hash,
            entry.uploaded_at,
        ),
    )


def _insert_doomed(db: sqlite3.Connection, container_id: str, doomed: DoomedFile) -> None:
    db.execute(
        "INSERT OR REPLACE INTO doomed (remote_id, container_id, relpath) VALUES (?, ?, ?)",
        (doomed.remote_id, container_id, doomed.relpath),
    )


# -- opening -----------------------------------------------------------------------


def _acquire_lock(lock_path: Path, root: Path, container_spec: str) -> int:
    return _flock(lock_path, f"{root} -> {container_spec}")


def _flock(lock_path: Path, what: str) -> int:
    # flock is tied to the open file description and the kernel drops it when
    # the holder dies, even by SIGKILL: a leftover lock file with a dead PID
    # never blocks anyone, so there is no stale-PID logic. The PID is only
    # there to name the holder in the error.
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LocalError(
            f"cannot open lock {lock_path}: {exc.strerror}", path=str(lock_path)
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        raise LockedError(
            f"another cntr-sync ({holder}) is syncing {what}; lock {lock_path}",
            pid=pid,
        ) from None
    except OSError as exc:
        os.close(fd)
        raise LocalError(f"cannot lock {lock_path}: {exc.strerror}", path=str(lock_path)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError):
        return None  # the holder may be between truncate and write


def _release_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)  # closing the last descriptor releases the flock


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise _db_error(path, exc) from exc
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise _db_error(path, exc) from exc
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    try:
        with _transaction(conn):
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LocalError(
                    f"index {path} was made by a newer cntr-sync (schema {version}, this one"
                    f" knows {SCHEMA_VERSION}); upgrade cntr-sync or delete the file",
                    path=str(path),
                )
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            # PRAGMA takes no parameters; SCHEMA_VERSION is our own int.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.Error as exc:
        raise _db_error(path, exc) from exc


def _init_meta(
    conn: sqlite3.Connection, path: Path, base_url: str, root: Path, container_spec: str
) -> None:
    try:
        with _transaction(conn):
            conn.execute(
                "INSERT OR IGNORE INTO meta (id, base_url, root, container_spec, created_at)"
                " VALUES (1, ?, ?, ?, ?)",
                (base_url, str(root.resolve()), container_spec, time.time()),
            )
    except sqlite3.Error as exc:
        raise _db_error(path, exc) from exc


def _db_error(path: Path, exc: sqlite3.Error) -> LocalError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return LocalError(
            f"index {path} is corrupt or not a cntr-sync index ({exc}); delete it and the"
            " next sync re-adopts the remote files",
            path=str(path),
        )
    return LocalError(f"index {path} failed: {exc}", path=str(path))
