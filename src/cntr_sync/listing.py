"""PURE: a container listing kept as columns, and the files in it by id.

A full pass holds the whole listing while it plans: at 100,000 files a list of
``RemoteFile`` values (each with its own ``name`` string, size and time objects)
and the planner's dict of them by id cost ~300 B a file beyond the id and path
strings. ``Listing`` keeps one row per listed file in columns (the id and path
strings, sizes and creation times in arrays, the source as a byte)
and makes a ``RemoteFile`` only when one is asked for, equal to the one
``names.to_remote_file`` makes. ``Listing.by_id`` is the planner's
``plan_inputs.RemoteFiles`` over the same rows (the first row of an id wins).

The index shares the listing's strings (``Listing.shared``): an entry's remote
id and path are the listing's own objects where they are equal, so each is held
once.

Must not: import anything that performs I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, ValuesView
from itertools import compress

from cntr_sync.models import RemoteFile
from cntr_sync.names import remote_names
from cntr_sync.plan_inputs import RemoteFiles

# Stands for None in the size and time columns; a value the column cannot hold
# (None's stand-in itself, or beyond 64 bits) is kept aside, by row.
_NONE = -(2**63)
_LOW, _HIGH = _NONE + 1, 2**63 - 1
# Sources are codes in a byte; past 255 distinct ones (a hostile server), rows keep theirs aside.
_OTHER_SOURCE = 255


class Listing:
    """Every file one listing returned, in its order, duplicates included."""

    __slots__ = (
        "_by_id",
        "_codes",
        "_created",
        "_ids",
        "_paths",
        "_sizes",
        "_source_codes",
        "_sources",
        "_wide",
    )

    def __init__(self, files: Iterable[RemoteFile] = ()) -> None:
        self._ids: list[str] = []
        self._paths: list[str] = []
        self._sizes = array("q")
        self._created = array("q")
        # The source of each row as a code (a byte) into the distinct sources seen;
        # a row whose code would not fit a byte is kept aside.
        self._codes = bytearray()
        self._sources: list[str] = []
        self._source_codes: dict[str, int] = {}
        # Rows whose size, time or source does not fit a column: (size, created_at, source).
        self._wide: dict[int, tuple[int | None, int | None, str]] = {}
        # The lookup by id, built on the first one (and again after an ``add``).
        self._by_id: _SortedIds | None = None
        for file in files:
            self.add(file.id, file.path, file.size, file.source, file.created_at)

    def add(
        self, file_id: str, path: str, size: int | None, source: str, created_at: int | None
    ) -> None:
        """One more listed file (as ``names.to_remote_file`` takes it)."""
        row = len(self._ids)
        self._ids.append(file_id)
        self._paths.append(path)
        code = self._source_codes.get(source)
        if code is None and len(self._sources) < _OTHER_SOURCE:
            code = self._source_codes[source] = len(self._sources)
            self._sources.append(source)
        self._codes.append(_OTHER_SOURCE if code is None else code)
        if _fits(size) and _fits(created_at) and code is not None:
            self._sizes.append(_NONE if size is None else size)
            self._created.append(_NONE if created_at is None else created_at)
        else:
            self._sizes.append(_NONE)
            self._created.append(_NONE)
            self._wide[row] = (size, created_at, source)
        self._by_id = None

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[RemoteFile]:
        return (self.file(row) for row in range(len(self._ids)))

    def file_id(self, row: int) -> str:
        return self._ids[row]

    def file(self, row: int) -> RemoteFile:
        """The listed file at ``row``, as planning sees it."""
        path = self._paths[row]
        if row in self._wide:
            size, created_at, source = self._wide[row]
        else:
            raw_size, raw_created = self._sizes[row], self._created[row]
            size = None if raw_size == _NONE else raw_size
            created_at = None if raw_created == _NONE else raw_created
            source = self._sources[self._codes[row]]
        return RemoteFile(
            id=self._ids[row],
            path=path,
            name=remote_names(path)[0],
            size=size,
            source=source,
            created_at=created_at,
        )

    def created_times(self) -> Iterator[tuple[str, int | None]]:
        """Each row's id and ``created_at`` (no ``RemoteFile`` made)."""
        for row, file_id in enumerate(self._ids):
            if row in self._wide:
                yield file_id, self._wide[row][1]
            else:
                raw = self._created[row]
                yield file_id, None if raw == _NONE else raw

    def by_id(self) -> RemoteById:
        """The listed files by id (an id listed twice: its first row)."""
        return RemoteById(self, self._lookup())

    def shared(self, remote_id: str, remote_path: str) -> tuple[str, str]:
        """``(remote_id, remote_path)`` as the listing's own string objects where it
        lists that id (the path too where it is the same), else as given."""
        row = self._lookup().row(remote_id)
        if row is None:
            return remote_id, remote_path
        path = self._paths[row]
        return self._ids[row], path if path == remote_path else remote_path

    def _lookup(self) -> _SortedIds:
        if self._by_id is None:
            self._by_id = _SortedIds(self._ids)
        return self._by_id


class _SortedIds:
    """The rows of a listing by id: the ids sorted, beside their rows.

    A dict of 100,000 ids to their rows is ~6 MB at a pass's peak (the table and
    an int object a row); a sorted list of the same strings and an array of rows
    is 1.6 MB, and a lookup is a binary search in C.
    """

    __slots__ = ("_first", "_ids", "_rows", "count")

    def __init__(self, ids: list[str]) -> None:
        order = sorted(range(len(ids)), key=ids.__getitem__)  # stable: first rows first
        self._ids = [ids[row] for row in order]
        self._rows = array("q", order)
        del order
        # Whether a row is the first of its id (the one the lookup gives).
        self._first = bytearray(len(ids))
        previous: str | None = None
        for file_id, row in zip(self._ids, self._rows, strict=True):
            if file_id != previous:
                self._first[row] = 1
                previous = file_id
        self.count = self._first.count(1)

    def row(self, file_id: str) -> int | None:
        at = bisect_left(self._ids, file_id)
        if at < len(self._ids) and self._ids[at] == file_id:
            return self._rows[at]
        return None

    @property
    def first_rows(self) -> bytearray:
        """A byte a row, 1 where the row is the first of its id (read only)."""
        return self._first


class RemoteById(RemoteFiles):
    """A ``Listing``'s files by id, in listing order; each value is made when it is
    looked up."""

    __slots__ = ("_listing", "_lookup")

    def __init__(self, listing: Listing, lookup: _SortedIds) -> None:
        self._listing = listing
        self._lookup = lookup

    def __getitem__(self, file_id: str) -> RemoteFile:
        row = self._lookup.row(file_id)
        if row is None:
            raise KeyError(file_id)
        return self._listing.file(row)

    def row(self, file_id: str) -> int | None:
        """The row of ``file_id`` in the listing (below ``len(listing)``), if listed."""
        return self._lookup.row(file_id)

    @property
    def rows(self) -> int:
        """How many rows the listing has (duplicates included): rows are below it."""
        return len(self._listing)

    def get(self, file_id: str, default: RemoteFile | None = None) -> RemoteFile | None:  # type: ignore[override]
        row = self._lookup.row(file_id)
        return default if row is None else self._listing.file(row)

    def __contains__(self, file_id: object) -> bool:
        return isinstance(file_id, str) and self._lookup.row(file_id) is not None

    def __iter__(self) -> Iterator[str]:
        return (self._listing.file_id(row) for row in self._first_rows())

    def ids_and_rows(self) -> Iterator[tuple[str, int]]:
        ids, first = self._listing._ids, self._lookup.first_rows
        return zip(compress(ids, first), compress(range(len(ids)), first), strict=True)

    def __len__(self) -> int:
        return self._lookup.count

    def values(self) -> ValuesView[RemoteFile]:
        return _Values(self)

    def _first_rows(self) -> Iterator[int]:
        return compress(range(len(self._listing)), self._lookup.first_rows)


class _Values(ValuesView[RemoteFile]):
    """The files of a ``RemoteById``, made row by row (no lookup by id)."""

    _mapping: RemoteById

    def __iter__(self) -> Iterator[RemoteFile]:
        by_id = self._mapping
        file = by_id._listing.file
        return (file(row) for row in by_id._first_rows())


def _fits(value: int | None) -> bool:
    return value is None or _LOW <= value <= _HIGH


__all__ = ["Listing", "RemoteById"]
