"""PURE: what the planners read besides the scan: the pass's ``Policy``, and read-only
views of the index and of the listing.

``Policy`` is the one value that says how a pair's pass decides, for the push side
(``plan``) and the remote side (``pull``) alike. ``Policy.for_pair`` builds it from
the pair's settings, what the server has shown about upload names (recorded in
the index), the caller's clock and how the root's file system compares names.

``IndexEntries`` and ``RemoteFiles`` are the read-only mappings the planners take:
the index's entries by relpath, and one complete listing's files by id. Each adds
one question that a columnar store answers without making a value per row, so
the planners never ask which store they were given:

- ``IndexEntries.remote_ids()``: the remote id of every entry;
- ``RemoteFiles.row(file_id)`` and ``RemoteFiles.rows``: a number below ``rows``
  for each listed id, so "accounted for" is a byte per listed file
  (``actions.AccountedIds``) rather than a set of 100,000 ids at a pass's peak.

``entry_table.EntryTable`` and ``listing.RemoteById`` (``Listing(...).by_id()``)
implement them, for plain values too.

Must not: import anything that performs I/O, or read the clock.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from cntr_sync.models import (
    ConflictPolicy,
    DeleteLimit,
    Direction,
    IndexEntry,
    Pair,
    RemoteDeletePolicy,
    RemoteFile,
)
from cntr_sync.remote_paths import FileSystemTraits, PathRules


@dataclass(frozen=True)
class Policy:
    """How one pass of a pair decides. The defaults are the product's defaults."""

    direction: Direction = "push"
    conflict: ConflictPolicy = "keep-both"
    remote_delete: RemoteDeletePolicy = "restore"
    delete: bool = True
    delete_unknown: bool = False
    # Remove our remote copies of paths the ignore rules exclude (rclone's flag).
    delete_excluded: bool = False
    max_delete: DeleteLimit = field(default_factory=lambda: DeleteLimit(percent=50.0))
    # Largest remote file downloaded to check a match by content (lost index).
    adopt_verify_max_bytes: int = 256 * 1024 * 1024
    # Where remote paths land locally (pull and both).
    path_rules: PathRules = field(default_factory=PathRules)
    # Whether the server keeps upload filenames; None until an upload showed it.
    server_keeps_names: bool | None = None
    # Whether it prefixes them with 32 hex digits; None: not seen (the listing tells).
    server_adds_prefix: bool | None = None
    # How the root's file system compares names (which names would overwrite others).
    traits: FileSystemTraits = field(default_factory=FileSystemTraits)
    now: float = 0.0  # the caller's clock: conflict copies' names, entries' synced_at
    # Pull and both: tracked files whose content is checked this pass (their size did
    # not change: an in-place rewrite of the same size shows nowhere else), in
    # rotation: those after ``recheck_after`` (the last one checked), else from a
    # place the clock picks, so that successive passes cover every file.
    recheck_count: int = 0
    recheck_after: str | None = None

    @classmethod
    def for_pair(
        cls,
        pair: Pair,
        *,
        now: float,
        server_keeps_names: bool | None = None,
        server_adds_prefix: bool | None = None,
        traits: FileSystemTraits | None = None,
        recheck_after: str | None = None,
    ) -> Policy:
        """The policy of ``pair``'s pass at ``now``, with what the server has shown."""
        return cls(
            direction=pair.direction,
            conflict=pair.conflict,
            remote_delete=pair.remote_delete,
            delete=pair.delete,
            delete_unknown=pair.delete_unknown,
            delete_excluded=pair.delete_excluded,
            max_delete=pair.max_delete,
            adopt_verify_max_bytes=pair.adopt_verify_max_bytes,
            path_rules=PathRules(
                prefixes=pair.remote_prefixes,
                outside=pair.outside_prefix,
                outside_subdir=pair.outside_subdir,
            ),
            server_keeps_names=server_keeps_names,
            server_adds_prefix=server_adds_prefix,
            traits=traits or FileSystemTraits(),
            now=now,
            recheck_count=pair.verify_per_listing if pair.direction != "push" else 0,
            recheck_after=recheck_after,
        )


class IndexEntries(Mapping[str, IndexEntry]):
    """The index's entries by relpath: what the planners read of the index."""

    @abstractmethod
    def remote_ids(self) -> Iterator[str]:
        """The remote id of every entry."""


class RemoteFiles(Mapping[str, RemoteFile]):
    """One complete listing's files by id (an id listed twice: its first file)."""

    @abstractmethod
    def row(self, file_id: str) -> int | None:
        """A number below ``rows`` for a listed id, the same for each ask; None if not listed."""

    @property
    @abstractmethod
    def rows(self) -> int:
        """Every ``row`` is below this."""

    def ids_and_rows(self) -> Iterator[tuple[str, int]]:
        """Each id with its ``row``, in iteration order (a listing knows the rows as it
        goes: no lookup by id)."""
        for file_id in self:
            row = self.row(file_id)
            assert row is not None
            yield file_id, row


__all__ = ["IndexEntries", "Policy", "RemoteFiles"]
