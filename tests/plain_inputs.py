"""The planner's inputs (``plan_inputs.IndexEntries`` and ``RemoteFiles``) over plain
dicts: what a test writes as values, and the reference the columnar stores
(``EntryTable``, ``Listing``) must plan the same as."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from cntr_sync.models import IndexEntry, RemoteFile
from cntr_sync.plan_inputs import IndexEntries, RemoteFiles


class PlainEntries(IndexEntries):
    """Index entries by relpath, in a dict."""

    def __init__(self, entries: Mapping[str, IndexEntry] | Iterable[IndexEntry] = ()) -> None:
        values = entries.values() if isinstance(entries, Mapping) else entries
        self._entries = {entry.relpath: entry for entry in values}

    def __getitem__(self, relpath: str) -> IndexEntry:
        return self._entries[relpath]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def remote_ids(self) -> Iterator[str]:
        return (entry.remote_id for entry in self._entries.values())


class PlainFiles(RemoteFiles):
    """Listed files by id (an id listed twice: its first file), in a dict."""

    def __init__(self, files: Iterable[RemoteFile] = ()) -> None:
        self._files: dict[str, RemoteFile] = {}
        for file in files:
            self._files.setdefault(file.id, file)
        self._rows = {file_id: row for row, file_id in enumerate(self._files)}

    def __getitem__(self, file_id: str) -> RemoteFile:
        return self._files[file_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def row(self, file_id: str) -> int | None:
        return self._rows.get(file_id)

    @property
    def rows(self) -> int:
        return len(self._rows)
