"""PURE: what a pass can do, the ``Plan`` that lists it, and the one builder of plans.

Remote actions (``Upload``, ``Delete``) change the container; local actions
(``Download``, ``Compare``, ``DeleteLocal``) change the local tree; the rest
(``Adopt``, ``Refresh``, forgets, repointed entries) change only the index.
The planners (``pull`` for the remote side, then ``plan`` for the push side)
fill one ``PlanBuilder``; the engine carries the ``Plan`` out. A local file
appears in actions as the scan saw it (``models.LocalFile``): a write or a
delete must find it unchanged, or not happen. Nothing here performs I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from cntr_sync.models import ConflictPolicy, IndexEntry, LocalFile, Origin, RemoteFile
from cntr_sync.plan_inputs import RemoteFiles

UploadReason = Literal["new", "changed", "missing-remote", "conflict"]
DeleteReason = Literal[
    "removed",
    "replaced",
    "duplicate",
    "stale-upload",
    "pending",
    "unknown",
    "conflict",
    "excluded",
]
DownloadReason = Literal["new", "changed", "restore", "conflict-copy", "remote-wins"]


@dataclass(frozen=True, slots=True)
class Upload:
    """Upload the local file; then delete ``replaces`` (the old id), if any."""

    relpath: str
    size: int
    mtime_ns: int  # the stat the hash belongs to: a different one at upload time means "changed"
    hash: str
    reason: UploadReason
    replaces: str | None = None
    inode: int = 0  # of the scanned file; 0: unknown


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete a remote file. ``relpath`` is the local path it mirrored, if known."""

    remote_id: str
    path: str
    reason: DeleteReason
    relpath: str | None = None


@dataclass(frozen=True, slots=True)
class Adopt:
    """Record an existing remote file as the mirror of ``entry.relpath`` (index only)."""

    entry: IndexEntry
    reason: Literal["lost-index", "ambiguous-upload", "same-content"]


@dataclass(frozen=True, slots=True)
class Refresh:
    """The file was touched but its content is unchanged: update the stat (index only)."""

    relpath: str
    size: int
    mtime_ns: int


def mirror_entry(
    relpath: str, local: LocalFile, remote: RemoteFile, *, origin: Origin, synced_at: float
) -> IndexEntry:
    """The index entry saying ``relpath`` (as ``local``) and ``remote`` hold the same content."""
    return IndexEntry(
        relpath=relpath,
        remote_id=remote.id,
        remote_path=remote.path,
        size=local.size,
        mtime_ns=local.mtime_ns,
        hash=local.hash,
        synced_at=synced_at,
        origin=origin,
        # The local size's object where equal: a columnar listing makes a new int each time.
        remote_size=local.size if remote.size == local.size else remote.size,
        remote_created_at=remote.created_at,
    )


@dataclass(frozen=True, slots=True)
class Download:
    """Write the remote file's content at ``relpath`` (atomically, never through a link).

    ``expect``: the local file there now, which must still be exactly that
    (None: nothing may be there). ``move_aside_to``: first move that local file
    to this name (``remote-wins``: the local version survives as a copy).
    ``record``: index ``relpath`` as the mirror of ``remote`` afterwards.
    ``repoint``: an entry written once the download succeeded (a conflict copy
    in pull mode moves the original's entry to the remote version it saved).
    ``copy_of``: the relpath this is a conflict copy of; if the copy fails, that
    relpath is not uploaded this pass (the upload would replace the version
    the copy was to save).
    """

    remote: RemoteFile
    relpath: str
    reason: DownloadReason
    expect: LocalFile | None = None
    move_aside_to: str | None = None
    record: bool = True
    repoint: IndexEntry | None = None
    copy_of: str | None = None


@dataclass(frozen=True, slots=True)
class Compare:
    """A local file and a remote one share a name but no history: download and compare.

    Equal content: adopt (nothing is written). Different: the engine asks
    ``pull.resolve_unrelated`` for the conflict's actions under ``policy``.
    """

    remote: RemoteFile
    relpath: str
    local: LocalFile
    policy: ConflictPolicy


@dataclass(frozen=True, slots=True)
class Verify:
    """A local file with no history may already be in the container under another
    name (a lost index on a server that drops directories or whole names):
    download the candidates and adopt the one with the same content; else ``upload``.
    """

    relpath: str
    local: LocalFile
    candidates: tuple[RemoteFile, ...]
    upload: Upload


@dataclass(frozen=True, slots=True)
class Recheck:
    """Download a tracked file whose listed size did not change and compare its content
    with ``entry.hash`` (the local file is unchanged too): the model may have rewritten
    it in place with the same size, which no listing shows. Different content comes
    home as a remote edit.
    """

    remote: RemoteFile
    relpath: str
    entry: IndexEntry
    local: LocalFile


@dataclass(frozen=True, slots=True)
class DeleteLocal:
    """Delete a local file whose remote file was deleted (``remote_delete = propagate``)."""

    relpath: str
    expect: LocalFile


LocalAction = Download | Compare | Verify | Recheck | DeleteLocal
RemoteAction = Upload | Delete


@dataclass(frozen=True)
class Plan:
    uploads: tuple[Upload, ...] = ()
    deletes: tuple[Delete, ...] = ()
    downloads: tuple[Download, ...] = ()
    compares: tuple[Compare, ...] = ()
    verifies: tuple[Verify, ...] = ()
    # Content checks of unchanged-looking files (pull and both): not changes, so not
    # counted as transfers, and a dry run does none.
    rechecks: tuple[Recheck, ...] = ()
    local_deletes: tuple[DeleteLocal, ...] = ()
    adopts: tuple[Adopt, ...] = ()
    refreshes: tuple[Refresh, ...] = ()
    repoints: tuple[IndexEntry, ...] = ()
    forgets: tuple[str, ...] = ()
    cleared_intents: tuple[str, ...] = ()
    # Pending deletes whose remote file is no longer listed: nothing left to do.
    obsolete_deletes: tuple[str, ...] = ()
    unknown_kept: int = 0
    tracked: int = 0
    # Removals whose content is uploaded again under another name in this pass:
    # a rename or a move, not a loss.
    moves: int = 0
    conflicts: int = 0
    # Remote files not written locally, and why: (remote path, reason).
    refused: tuple[tuple[str, str], ...] = ()
    # Remote files whose failed download waits for its retry time: (relpath, error).
    waiting: tuple[tuple[str, str], ...] = ()
    # Local files never uploaded: conflict copies without a remote twin.
    local_only: int = 0

    @property
    def transfers(self) -> int:
        """Actions that cost API calls."""
        return (
            len(self.uploads)
            + len(self.deletes)
            + len(self.downloads)
            + len(self.compares)
            + len(self.verifies)
            + len(self.local_deletes)
        )

    @property
    def local_actions(self) -> tuple[LocalAction, ...]:
        return (
            *self.downloads,
            *self.compares,
            *self.verifies,
            *self.rechecks,
            *self.local_deletes,
        )

    @property
    def is_noop(self) -> bool:
        return not (
            self.transfers
            or self.adopts
            or self.refreshes
            or self.repoints
            or self.forgets
            or self.cleared_intents
            or self.obsolete_deletes
        )

    @property
    def removals(self) -> int:
        """Deletions of tracked files because their local file is gone."""
        return sum(1 for d in self.deletes if d.reason == "removed")

    @property
    def destructive(self) -> int:
        """Deletions that lose a file rather than replace or move one: what the brakes weigh.

        Remote deletions of removed and unknown files, and local deletions that
        carry a remote deletion over (``remote_delete = propagate``).
        """
        lost = sum(1 for d in self.deletes if d.reason in ("removed", "unknown"))
        return lost - self.moves + len(self.local_deletes)

    @property
    def unknown_total(self) -> int:
        """Remote files that are not ours, deleted or kept."""
        return self.unknown_kept + sum(1 for d in self.deletes if d.reason == "unknown")

    @property
    def upload_bytes(self) -> int:
        return sum(u.size for u in self.uploads)

    @property
    def download_bytes(self) -> int:
        """Bytes to download, where the listing says (``bytes: null`` counts 0)."""
        fetched = [d.remote.size for d in self.downloads] + [c.remote.size for c in self.compares]
        return sum(size or 0 for size in fetched)


class AccountedIds:
    """Remote ids a plan accounts for (ours, or acted on): whatever is not in here and
    is listed is a stranger's file ("unknown").

    A byte per listed file (``RemoteFiles.row``), and a set for ids that are not
    listed: a set of 100,000 listed ids would be 4 MB at a pass's peak.
    """

    __slots__ = ("_listed", "_others", "_row")

    def __init__(self, remote: RemoteFiles | None = None) -> None:
        self._row: Callable[[str], int | None] = remote.row if remote is not None else _unlisted
        self._listed = bytearray(remote.rows if remote is not None else 0)
        self._others: set[str] = set()

    def add(self, file_id: str) -> None:
        row = self._row(file_id)
        if row is None:
            self._others.add(file_id)
        else:
            self._listed[row] = 1

    def update(self, file_ids: Iterable[str]) -> None:
        for file_id in file_ids:
            self.add(file_id)

    def __contains__(self, file_id: object) -> bool:
        if not isinstance(file_id, str):
            return False
        row = self._row(file_id)
        return bool(self._listed[row]) if row is not None else file_id in self._others

    def unaccounted(self, remote: RemoteFiles) -> Iterator[str]:
        """The ids of ``remote`` (the listing these ids are counted against) not
        accounted for, each as it is when reached: its row's byte, no lookup by id."""
        listed = self._listed
        if len(listed) != remote.rows:  # counted against another listing: look each up
            return (file_id for file_id in remote if file_id not in self)
        return (file_id for file_id, row in remote.ids_and_rows() if not listed[row])


def _unlisted(_file_id: str) -> None:
    return None


@dataclass
class PlanBuilder:
    """The actions of one pass as the planners decide them; ``build`` makes the ``Plan``.

    The remote side (``pull``) runs first: the relpaths it decides go into
    ``decided`` (the push side leaves them alone this pass), and every remote id
    either side accounts for into ``accounted``.
    """

    accounted: AccountedIds = field(default_factory=AccountedIds)
    uploads: list[Upload] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    compares: list[Compare] = field(default_factory=list)
    verifies: list[Verify] = field(default_factory=list)
    rechecks: list[Recheck] = field(default_factory=list)
    local_deletes: list[DeleteLocal] = field(default_factory=list)
    adopts: list[Adopt] = field(default_factory=list)
    refreshes: list[Refresh] = field(default_factory=list)
    repoints: list[IndexEntry] = field(default_factory=list)
    forgets: list[str] = field(default_factory=list)
    cleared_intents: list[str] = field(default_factory=list)
    obsolete_deletes: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[tuple[str, str]] = field(default_factory=list)
    conflicts: int = 0
    local_only: int = 0
    decided: set[str] = field(default_factory=set)
    _deleted: set[str] = field(default_factory=set)

    def delete(self, remote: RemoteFile, reason: DeleteReason, relpath: str | None) -> None:
        """Delete ``remote`` (once, however many reasons the planners find)."""
        self._add_delete(Delete(remote.id, remote.path, reason, relpath))

    def _add_delete(self, delete: Delete) -> None:
        if delete.remote_id not in self._deleted:
            self._deleted.add(delete.remote_id)
            self.accounted.add(delete.remote_id)
            self.deletes.append(delete)

    def extend(self, part: Plan) -> None:
        """Add the transfers and repointed entries of ``part`` (a conflict's resolution)."""
        self.downloads.extend(part.downloads)
        self.uploads.extend(part.uploads)
        for delete in part.deletes:
            self._add_delete(delete)
        self.repoints.extend(part.repoints)

    def build(
        self, *, tracked: int = 0, unknown_kept: int = 0, moves: int = 0, push: bool = True
    ) -> Plan:
        """The plan; ``push`` False (a pull pair) drops every upload and remote delete."""
        return Plan(
            uploads=tuple(self.uploads) if push else (),
            deletes=tuple(self.deletes) if push else (),
            downloads=tuple(self.downloads),
            compares=tuple(self.compares),
            verifies=tuple(self.verifies) if push else (),
            rechecks=tuple(self.rechecks),
            local_deletes=tuple(self.local_deletes),
            adopts=tuple(self.adopts),
            refreshes=tuple(self.refreshes),
            repoints=tuple(self.repoints),
            forgets=tuple(sorted(set(self.forgets))),
            cleared_intents=tuple(self.cleared_intents),
            obsolete_deletes=tuple(self.obsolete_deletes),
            unknown_kept=unknown_kept,
            tracked=tracked,
            moves=moves if push else 0,
            conflicts=self.conflicts,
            refused=tuple(self.refused),
            waiting=tuple(self.waiting),
            local_only=self.local_only,
        )
