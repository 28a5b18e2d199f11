"""The journal: every action a pass carried out, per pair, kept for ``journal_keep_days``.

"What did the model change in my tree today, and when?" Each action a pass
carries out (an upload, a replace, a delete, a download, a local delete, a
conflict copy, a backup, an adoption) and each that failed is one row: its time
(UTC seconds), the pass's id, the action, the relpath (or remote path), bytes,
the reason the planner gave, and the outcome (``done``, or ``failed: ...``).

Owns the ``journal`` table of the pair's index file. It is made by the first row
(a pair that never acted has none), rows join the index's current transaction
(the pass records outcomes in batches), and a pass that does nothing writes
nothing. ``read`` gives rows oldest first; ``prune`` drops rows past their age.
The same records are what the daemon's per-transfer log lines say.

Must not: decide anything, or hold a secret (paths, counts and reasons only).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cntr_sync.hashcache import Database

JournalAction = Literal[
    "upload",
    "replace",
    "delete",
    "download",
    "delete-local",
    "conflict-copy",
    "backup",
    "adopt",
]

_CREATE = (
    "CREATE TABLE IF NOT EXISTS journal (time REAL NOT NULL, pass TEXT NOT NULL,"
    " action TEXT NOT NULL, path TEXT NOT NULL, bytes INTEGER, reason TEXT NOT NULL,"
    " outcome TEXT NOT NULL)"
)
_CREATE_INDEX = "CREATE INDEX IF NOT EXISTS journal_time ON journal (time)"
_INSERT = (
    "INSERT INTO journal (time, pass, action, path, bytes, reason, outcome)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One action a pass carried out (or tried to)."""

    time: float
    pass_id: str
    action: str
    path: str
    bytes: int | None
    reason: str
    outcome: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def new_pass_id(now: float) -> str:
    """A pass's id: its UTC start time and a few random letters (``20261207T140512Z-3fa9``)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(2)


class Journal:
    """The rows of one pass, written through the pair's index (thread: its recorder's)."""

    def __init__(
        self,
        db: Database,
        pass_id: str,
        clock: Callable[[], float],
        listener: Callable[[JournalEntry], None] | None = None,
    ) -> None:
        """``listener`` hears each row once it is written (the daemon's events)."""
        self._db = db
        self.pass_id = pass_id
        self._clock = clock
        self._listener = listener
        self._made = False
        self.entries: list[JournalEntry] = []

    def record(
        self,
        action: JournalAction,
        path: str,
        *,
        size: int | None = None,
        reason: str = "",
        failed: str | None = None,
    ) -> JournalEntry:
        entry = JournalEntry(
            self._clock(),
            self.pass_id,
            action,
            path,
            size,
            reason,
            "done" if failed is None else f"failed: {failed}",
        )
        with self._db.write() as db:
            if not self._made:
                db.execute(_CREATE)
                db.execute(_CREATE_INDEX)
                self._made = True
            db.execute(
                _INSERT,
                (
                    entry.time,
                    entry.pass_id,
                    entry.action,
                    entry.path,
                    entry.bytes,
                    entry.reason,
                    entry.outcome,
                ),
            )
        self.entries.append(entry)
        if self._listener is not None:
            self._listener(entry)
        return entry


def _has_journal(db: Database) -> bool:
    return bool(
        db.read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'", ())
    )


def read(db: Database, *, since: float | None = None) -> list[JournalEntry]:
    """The journal's rows (from ``since`` on, if given), oldest first."""
    if not _has_journal(db):
        return []
    rows = db.read(
        "SELECT time, pass, action, path, bytes, reason, outcome FROM journal"
        " WHERE time >= ? ORDER BY time, rowid",
        (since if since is not None else float("-inf"),),
    )
    return [JournalEntry(*row) for row in rows]


def prune(db: Database, *, before: float) -> int:
    """Drop rows older than ``before``; writes nothing when there are none."""
    if not _has_journal(db):
        return 0
    (oldest,) = db.read("SELECT min(time) FROM journal", ())[0]
    if oldest is None or oldest >= before:
        return 0
    with db.write() as conn:
        return conn.execute("DELETE FROM journal WHERE time < ?", (before,)).rowcount
