"""The conflict copies this tool made, recorded in the pair's index file.

A conflict copy (``NAME (container conflict ...).EXT`` or ``NAME (local conflict
...).EXT``) holds the other version of a file both sides changed; it is never
uploaded. Only copies recorded here are treated so: a file of yours that merely
has such a name is a file like any other. ``status`` lists the recorded copies
still in the tree, with the original each belongs to, so conflicts do not pile up
unseen; a copy you delete or rename drops out of the list.

Owns the ``conflict_copies`` table (made by the first copy, so a pair without
conflicts writes nothing). An index from before this table existed may hold
copies made earlier: the first full pass records the files in the tree named
like copies (``start``, called from ``LocalSide.conflict_copies``), once.

Must not: decide what is a conflict (``pull`` does), or touch the tree.
"""

from __future__ import annotations

from collections.abc import Iterable

from cntr_sync.hashcache import Database

_CREATE = (
    "CREATE TABLE IF NOT EXISTS conflict_copies"
    " (copy TEXT PRIMARY KEY, original TEXT NOT NULL, made_at REAL NOT NULL)"
)


def exists(db: Database) -> bool:
    """Whether the table is there (a copy was ever recorded, or older ones adopted)."""
    found = db.read(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'conflict_copies'", ()
    )
    return bool(found)


def record(db: Database, copies: Iterable[tuple[str, str]], made_at: float) -> None:
    """Record ``(copy, original)`` relpaths as conflict copies made at ``made_at``."""
    rows = [(copy, original, made_at) for copy, original in copies]
    if not rows:
        return
    with db.write() as conn:
        conn.execute(_CREATE)
        conn.executemany(
            "INSERT OR REPLACE INTO conflict_copies (copy, original, made_at) VALUES (?, ?, ?)",
            rows,
        )


def made(db: Database) -> dict[str, str]:
    """Every recorded copy's relpath and the relpath of its original."""
    if not exists(db):
        return {}
    return dict(db.read("SELECT copy, original FROM conflict_copies", ()))


def forget(db: Database, copies: Iterable[str]) -> None:
    """Drop the records of copies that are gone from the tree."""
    gone = [(copy,) for copy in copies]
    if gone:
        with db.write() as conn:
            conn.executemany("DELETE FROM conflict_copies WHERE copy = ?", gone)


def start(db: Database, existing: Iterable[tuple[str, str]]) -> None:
    """Make the table, once per pair, recording ``existing`` copies: the files in the
    tree named like copies when an index from before the table was kept (their
    records are gone; a new pair passes none)."""
    with db.write() as conn:
        conn.execute(_CREATE)
        conn.executemany(
            "INSERT OR IGNORE INTO conflict_copies (copy, original, made_at) VALUES (?, ?, 0)",
            list(existing),
        )
