"""The SQLite file under an ``Index``: its schema and migrations, and how it is opened.

Owns: the statements that take the schema from each version to the next
(``PRAGMA user_version``), the file's name per pair (``index_path``), creating it
0600, opening it, its journal mode (the rollback journal while a pass only reads,
WAL while it writes), a private copy for readers that must not write
(``status``), the single ``meta`` row (and ``indexed_pairs``: every file's, read
only), transactions, and turning sqlite3 errors
into a ``LocalError`` that names the file. ``index.Index`` is everything a pass
asks of the file.

Must not: hold anything secret (a base URL is stored without user:password), or
know what a pass does with the rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from cntr_sync.errors import LocalError

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
    (
        # Plainer words: remote files of ours that must still go, and whether
        # the server keeps the filenames we upload.
        "ALTER TABLE doomed RENAME TO pending_deletes",
        "ALTER TABLE meta RENAME COLUMN names_kept TO server_keeps_names",
    ),
    (
        # Two-way sync: an entry is the common ancestor of both sides, from either.
        "ALTER TABLE entries RENAME COLUMN uploaded_at TO synced_at",
        "ALTER TABLE entries ADD COLUMN origin TEXT NOT NULL DEFAULT 'push'"
        " CHECK (origin IN ('push', 'pull'))",
        "ALTER TABLE entries ADD COLUMN remote_size INTEGER",
        "ALTER TABLE entries ADD COLUMN remote_created_at INTEGER",
        # Remote files whose download failed (no content, wrong size): retried
        # after retry_at, with a backoff that grows with attempts.
        """CREATE TABLE pull_failures (
            remote_id    TEXT PRIMARY KEY,
            container_id TEXT NOT NULL,
            relpath      TEXT NOT NULL,
            attempts     INTEGER NOT NULL CHECK (attempts >= 1),
            retry_at     REAL NOT NULL,
            error        TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
    (
        # The change time joins the hash cache's key (a cache: dropped, not migrated).
        "DROP TABLE hashes",
        """CREATE TABLE hashes (
            relpath  TEXT PRIMARY KEY,
            inode    INTEGER NOT NULL,
            size     INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            ctime_ns INTEGER NOT NULL,
            hash     TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
    (
        # Whether the server prefixes upload names with 32 hex digits.
        "ALTER TABLE meta ADD COLUMN server_adds_prefix INTEGER"
        " CHECK (server_adds_prefix IN (0, 1))",
    ),
    (
        # The hash cache (hashcache.py): one row per directory, its files' rows in
        # one blob, read and written by whole-tree scans; and one row per file
        # changed since (NULL hash: gone), what a single change writes. A cache:
        # dropped, not migrated; the next scan re-hashes.
        "DROP TABLE hashes",
        """CREATE TABLE hashes (
            dir     TEXT PRIMARY KEY,
            files   INTEGER NOT NULL,
            newest  INTEGER NOT NULL,
            entries BLOB NOT NULL
        )""",
        """CREATE TABLE hash_deltas (
            dir      TEXT NOT NULL,
            name     TEXT NOT NULL,
            inode    INTEGER,
            size     INTEGER,
            mtime_ns INTEGER,
            ctime_ns INTEGER,
            hash     TEXT,
            PRIMARY KEY (dir, name)
        ) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# SQLite result codes that mean "this file is not (or no longer) a database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def index_path(state_dir: Path, base_url: str, root: Path, container_spec: str) -> Path:
    """A pair's index file, ``STATE_DIR/<stem>.sqlite``; its lock (``.lock``) and
    backups (``.backups``) sit beside it under the same stem."""
    return state_dir / f"{pair_stem(base_url, root, container_spec)}.sqlite"


def pair_stem(base_url: str, root: Path, container_spec: str) -> str:
    """File name stem of a pair's index and lock: 24 hex of a sha256 of the pair."""
    key = f"{strip_userinfo(base_url)}\0{root.resolve()}\0{container_spec}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def strip_userinfo(url: str) -> str:
    # A base URL may carry user:password@; that must neither be stored nor
    # change the pair's file name when the password rotates.
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    # IMMEDIATE takes the write lock up front; the connection is in autocommit
    # mode (isolation_level=None), so BEGIN/COMMIT here are the only boundaries.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it would use the umask);
    SQLite gives its -wal and -shm files the same mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise LocalError(f"cannot create index {path}: {exc.strerror}", path=str(path)) from None


def copy_for_reading(path: Path) -> sqlite3.Connection:
    """A private copy of the index, read without writing anything beside it.

    The copy is SQLite's own temporary database (the empty file name: a file in
    the temporary directory, deleted when the connection closes, with only its
    page cache in memory), not ``:memory:``: at 100,000 files the index is ~50 MB,
    all of which an in-memory copy keeps resident (``status`` peaked 40 MB above
    ``sync``). Where the temporary copy fails (no writable temporary directory),
    the copy is made in memory, as before.
    """
    if not path.exists():
        return sqlite3.connect(":memory:", isolation_level=None)
    temporary = sqlite3.connect("", isolation_level=None)
    try:
        _backup(path, temporary)
    except (sqlite3.Error, LocalError):
        temporary.close()
    else:
        return temporary
    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        _backup(path, memory)
    except BaseException:
        memory.close()
        raise
    return memory


def _backup(path: Path, copy: sqlite3.Connection) -> None:
    """Copy the index at ``path`` into ``copy``, opening it read-only."""
    source = None
    for mode in ("ro", "ro&immutable=1"):
        # A WAL database in a read-only directory cannot be opened "ro" (no
        # -shm file can be made); "immutable" reads the file as it is.
        try:
            source = sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True)
            source.backup(copy)
            return
        except sqlite3.Error as exc:
            if mode != "ro":
                raise db_error(path, exc) from exc
        finally:
            if source is not None:
                source.close()
                source = None


def connect(path: Path) -> sqlite3.Connection:
    try:
        # A daemon pair's turns run on whichever pool thread is free, one at a time:
        # the connection moves between threads, and is never used by two at once.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise db_error(path, exc) from exc
    try:
        # The rollback journal until the first write (``use_wal``): opening and
        # reading a WAL file writes its -shm, and a pass that finds nothing to do
        # must write nothing to the state directory.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise db_error(path, exc) from exc
    return conn


def in_wal(conn: sqlite3.Connection) -> bool:
    """Whether the file is in WAL mode (``use_wal`` was called, or a crash left it so)."""
    mode: str = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return mode.lower() == "wal"


def use_wal(conn: sqlite3.Connection) -> None:
    """WAL for the writes to come: a commit costs no fsync (``synchronous = NORMAL``)
    and readers (``status``) never wait for the writer."""
    conn.execute("PRAGMA journal_mode = WAL")


def leave_wal(conn: sqlite3.Connection) -> bool:
    """Back to the rollback journal (the WAL checkpointed, its -wal and -shm files
    removed), so that the next open and the reads after it write nothing. False,
    with the file left in WAL, when a reader holds it: that costs nothing but the
    -shm writes of the next open. Not inside a transaction."""
    (wait_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute("PRAGMA busy_timeout = 0")  # a reader's copy must not hold up the pass
    try:
        mode: str = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
    except sqlite3.OperationalError:
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
    return mode.lower() != "wal"


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to ``SCHEMA_VERSION``. A current file is only read: a pass
    that finds nothing to do must write nothing to the state directory."""
    try:
        if _schema_version(conn, path) == SCHEMA_VERSION:
            return
        with transaction(conn):
            # Again inside the write lock: another process may have migrated meanwhile.
            version = _schema_version(conn, path)
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                # PRAGMA takes no parameters; SCHEMA_VERSION is our own int.
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.Error as exc:
        raise db_error(path, exc) from exc


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise LocalError(
            f"index {path} was made by a newer cntr-sync (schema {version}, this one"
            f" knows {SCHEMA_VERSION}); upgrade cntr-sync or delete the file",
            path=str(path),
        )
    return version


def init_meta(
    conn: sqlite3.Connection, path: Path, base_url: str, root: Path, container_spec: str
) -> None:
    """The ``meta`` row, written once (a file that has it is only read)."""
    try:
        if conn.execute("SELECT 1 FROM meta WHERE id = 1").fetchone() is not None:
            return
        with transaction(conn):
            conn.execute(
                "INSERT OR IGNORE INTO meta (id, base_url, root, container_spec, created_at)"
                " VALUES (1, ?, ?, ?, ?)",
                (base_url, str(root.resolve()), container_spec, time.time()),
            )
    except sqlite3.Error as exc:
        raise db_error(path, exc) from exc


def db_error(path: Path, exc: sqlite3.Error) -> LocalError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return LocalError(
            f"index {path} is corrupt or not a cntr-sync index ({exc}); delete it and the"
            " next sync re-adopts the remote files",
            path=str(path),
        )
    return LocalError(f"index {path} failed: {exc}", path=str(path))


@dataclass(frozen=True)
class IndexedPair:
    """What one index file says about its pair (its ``meta`` row)."""

    path: Path
    base_url: str
    root: str
    container_id: str | None


def indexed_pairs(state_dir: Path) -> list[IndexedPair]:
    """The pair and container of every index file in ``state_dir``, read without
    writing (``cntr-sync containers``); a file that cannot be read is left out."""
    found: list[IndexedPair] = []
    for path in sorted(state_dir.glob("*.sqlite")):
        try:
            conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
            try:
                row = conn.execute(
                    "SELECT base_url, root, container_id FROM meta WHERE id = 1"
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            continue
        if row is not None:
            found.append(IndexedPair(path, *row))
    return found
