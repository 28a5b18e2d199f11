"""PURE: the index's entries as columns, for the one place that holds them all.

A full pass plans with every entry of the container in memory beside the scan
and the listing. A dict of ``IndexEntry`` values costs ~175 B an entry beyond
the strings and numbers it shares with the scan and the listing (the object,
its ``synced_at`` float, the dict's table); ``EntryTable`` keeps the same fields
in columns sorted by relpath (~75 B an entry) and makes an ``IndexEntry`` when
one is looked up, equal to the one ``Index.entries`` gives. It is the planner's
``plan_inputs.IndexEntries``, for a handful of plain entries too.

Must not: import anything that performs I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, ValuesView

from cntr_sync.models import IndexEntry, Origin
from cntr_sync.plan_inputs import IndexEntries

# An entry's fields, in ``IndexEntry``'s order.
EntryRow = tuple[str, str, str, int, int, str, float, Origin, int | None, int | None]


class EntryTable(IndexEntries):
    """Entries by relpath (each relpath once), iterated in relpath order."""

    __slots__ = (
        "_created",
        "_hashes",
        "_mtimes",
        "_origins",
        "_relpaths",
        "_remote_ids",
        "_remote_paths",
        "_remote_sizes",
        "_sizes",
        "_synced",
    )

    def __init__(self, entries: Iterable[IndexEntry] = ()) -> None:
        self._clear()
        unsorted = False
        for entry in entries:
            if self._relpaths and entry.relpath <= self._relpaths[-1]:
                unsorted = True
            self._append(entry)
        if unsorted:
            # Rows in relpath order; a relpath given twice: the last, as in a dict.
            latest = {entry.relpath: entry for entry in self.values()}
            self._clear()
            for relpath in sorted(latest):
                self._append(latest[relpath])

    def _clear(self) -> None:
        self._relpaths: list[str] = []
        self._remote_ids: list[str] = []
        self._remote_paths: list[str] = []
        self._sizes: list[int] = []
        self._mtimes: list[int] = []
        self._hashes: list[str] = []
        self._synced = array("d")
        self._origins = bytearray()  # 1: pull
        self._remote_sizes: list[int | None] = []
        self._created: list[int | None] = []

    @classmethod
    def from_rows(cls, rows: Iterable[EntryRow]) -> EntryTable:
        """The table of ``rows`` (an ``IndexEntry``'s fields, in its order), without an
        ``IndexEntry`` a row: how the index loads a whole container's entries."""
        table = cls()
        unsorted = False
        for row in rows:
            if table._relpaths and row[0] <= table._relpaths[-1]:
                unsorted = True
            table._append_row(*row)
        # Out of order: sorted and made unique, as the constructor does.
        return cls(table.values()) if unsorted else table

    def _append(self, entry: IndexEntry) -> None:
        self._append_row(
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
        )

    def _append_row(
        self,
        relpath: str,
        remote_id: str,
        remote_path: str,
        size: int,
        mtime_ns: int,
        digest: str,
        synced_at: float,
        origin: Origin,
        remote_size: int | None,
        remote_created_at: int | None,
    ) -> None:
        self._relpaths.append(relpath)
        self._remote_ids.append(remote_id)
        self._remote_paths.append(remote_path)
        self._sizes.append(size)
        self._mtimes.append(mtime_ns)
        self._hashes.append(digest)
        self._synced.append(synced_at)
        self._origins.append(1 if origin == "pull" else 0)
        self._remote_sizes.append(remote_size)
        self._created.append(remote_created_at)

    def _row(self, relpath: object) -> int | None:
        if not isinstance(relpath, str):
            return None
        at = bisect_left(self._relpaths, relpath)
        if at < len(self._relpaths) and self._relpaths[at] == relpath:
            return at
        return None

    def _entry(self, row: int) -> IndexEntry:
        return IndexEntry(
            self._relpaths[row],
            self._remote_ids[row],
            self._remote_paths[row],
            self._sizes[row],
            self._mtimes[row],
            self._hashes[row],
            self._synced[row],
            "pull" if self._origins[row] else "push",
            self._remote_sizes[row],
            self._created[row],
        )

    def __getitem__(self, relpath: str) -> IndexEntry:
        row = self._row(relpath)
        if row is None:
            raise KeyError(relpath)
        return self._entry(row)

    def get(self, relpath: str, default: IndexEntry | None = None) -> IndexEntry | None:  # type: ignore[override]
        row = self._row(relpath)
        return default if row is None else self._entry(row)

    def __contains__(self, relpath: object) -> bool:
        return self._row(relpath) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._relpaths)

    def __len__(self) -> int:
        return len(self._relpaths)

    def values(self) -> ValuesView[IndexEntry]:
        return _Values(self)

    def remote_ids(self) -> Iterator[str]:
        """The remote id of every entry, without making the entries."""
        return iter(self._remote_ids)


class _Values(ValuesView[IndexEntry]):
    """The entries of an ``EntryTable``, made row by row (no lookup by relpath)."""

    _mapping: EntryTable

    def __iter__(self) -> Iterator[IndexEntry]:
        table = self._mapping
        return (table._entry(row) for row in range(len(table)))


__all__ = ["EntryTable"]
