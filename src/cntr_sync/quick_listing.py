"""PURE: where a poll's newest-first listing may stop, and when it must not be trusted.

A remote poll lists the container newest first (``order=desc``) and reads only
the files created since the last listing: the server puts every new file, the
model's or ours, at the head. ``Mark`` is where the last listing ended: the
newest ``created_at`` it showed and the ids created at that moment.
``HeadReader`` takes the listed files one by one, keeps the new ones (above the
mark and unknown to the index) and says when to stop: at the end of the page
where the mark is reached, so that nothing is asked of the server beyond it
(one request when nothing is new).

Anything that makes the head untrustworthy is a ``doubt``, and the caller runs
a full listing instead: a file without a usable ``created_at``, times that go
up (a server or gateway that ignores ``order=desc``), a listing that ends
before the mark (files the last listing showed are gone), or, on the page where
it stops, an indexed file that should be there and is not (``expected_gone``).
Deletions and same-id rewrites are seen only by a full listing.

Must not: import anything that performs I/O, or read the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cntr_sync.models import RemoteFile

_EARLIEST = -(2**63)


@dataclass(frozen=True)
class Mark:
    """Where a listing ended, newest first: the newest ``created_at`` it showed, the
    ids created at that moment, and the newest file of all (the one a newest-first
    listing starts with while nothing is new)."""

    created_at: int
    ids: frozenset[str] = frozenset()
    newest_id: str | None = None

    @classmethod
    def of(cls, files: Iterable[tuple[str, int | None]]) -> Mark | None:
        """The mark of a complete listing's ``(id, created_at)`` pairs, oldest first
        (the server's order: of files created in the same second, the last is the
        newest); None when a file has no ``created_at`` (a poll could not place it) or
        there is none (a listing read from no mark cannot tell which file is newest
        when times tie, nor whether the server ignored ``order``: the poll after an
        empty container lists in full)."""
        newest: int | None = None
        ids: set[str] = set()
        newest_id: str | None = None
        for file_id, created_at in files:
            if created_at is None:
                return None
            if newest is None or created_at > newest:
                newest, ids = created_at, {file_id}
            elif created_at == newest:
                ids.add(file_id)
            else:
                continue
            newest_id = file_id
        if newest is None:
            return None
        return cls(newest, frozenset(ids), newest_id)

    def covers(self, file_id: str, created_at: int) -> bool:
        """Whether a file was there at the listing that left this mark."""
        return created_at < self.created_at or (
            created_at == self.created_at and file_id in self.ids
        )


@dataclass
class HeadReader:
    """Reads a newest-first listing file by file: the new files, and where to stop.

    ``known``: whether the index already records a remote id (our own uploads since
    the mark are known and not news). ``page_size``: the listing's page size.
    """

    mark: Mark
    known: Callable[[str], bool]
    page_size: int
    news: list[RemoteFile] = field(default_factory=list)
    doubt: str | None = None
    # The ids read below the mark (on the page where the mark was reached), and the
    # oldest time among them: what ``expected_gone`` compares with the index.
    below_mark: set[str] = field(default_factory=set)
    oldest_below: int | None = None
    read: int = 0
    _previous: int | None = None
    _reached: bool = False
    _head: Mark | None = None
    _ended: bool = False

    def add(self, file: RemoteFile) -> bool:
        """Take the next listed file; False once the reader should stop (a doubt, or
        the end of the page where the mark was reached)."""
        self.read += 1
        created_at = file.created_at
        if created_at is None:
            self.doubt = f"a listed file has no usable created_at ({file.id})"
            return False
        if self._previous is not None and created_at > self._previous:
            self.doubt = "the listing is not newest first (order=desc ignored?)"
            return False
        self._previous = created_at
        if self._head is None:
            self._head = Mark(created_at, frozenset({file.id}), file.id)
        elif created_at == self._head.created_at:
            self._head = Mark(created_at, self._head.ids | {file.id}, self._head.newest_id)
        covered = self.mark.covers(file.id, created_at)
        newest = self.mark.newest_id
        if covered and self.read == 1 and newest is not None and file.id != newest:
            # Nothing new, so the newest file must come first: if another does, the
            # server lists oldest first (times that tie show nothing) or it is gone.
            self.doubt = "the listing does not start at the newest file (order=desc ignored?)"
            return False
        if covered:
            self._reached = True
            self.below_mark.add(file.id)
            self.oldest_below = created_at
        elif not self.known(file.id):
            # (Past the mark only a file created in the mark's second can be new.)
            self.news.append(file)
        return not (self._reached and self.read % self.page_size == 0)

    def end(self) -> None:
        """The listing ended: a doubt when it ended before the mark (files the last
        listing showed are gone)."""
        if not self._reached and self.doubt is None:
            self.doubt = "the listing ended before the files the last listing showed"
        self._ended = True

    @property
    def head(self) -> Mark:
        """The mark this listing leaves: its newest files (the old mark when it read none)."""
        return self._head if self._head is not None else self.mark

    def expected_range(self) -> tuple[int, int] | None:
        """``(low, high)``: indexed files created after ``low`` and at most ``high``
        must all have been read below the mark; None when there is nothing to check."""
        if self.oldest_below is None:
            return None
        # Files of the oldest second read may go on past the page; where the listing
        # ended, every older indexed file was due on it.
        low = _EARLIEST if self._ended else self.oldest_below
        return low, self.mark.created_at

    def expected_gone(self, expected: Iterable[str]) -> str | None:
        """A doubt when an id the index expects within ``expected_range`` was not read."""
        missing = sorted(set(expected) - self.below_mark)
        if missing:
            return f"{len(missing)} indexed file(s) missing from the listing ({missing[0]})"
        return None


__all__ = ["HeadReader", "Mark"]
