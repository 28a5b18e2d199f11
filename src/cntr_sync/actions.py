"""PURE: what a pass can do, and the ``Plan`` that lists it.

Remote actions (``Upload``, ``Delete``) change the container; local actions
(``Download``, ``Compare``, ``DeleteLocal``) change the local tree; the rest
(``Adopt``, ``Refresh``, forgets, repointed entries) change only the index.
The planners (``plan`` for the push side, ``pull`` for the remote side) build
them; the engine carries them out. Nothing here performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cntr_sync.models import ConflictPolicy, IndexEntry, Origin, RemoteFile

UploadReason = Literal["new", "changed", "missing-remote", "conflict"]
DeleteReason = Literal[
    "removed", "replaced", "duplicate", "stale-upload", "pending", "unknown", "conflict"
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


@dataclass(frozen=True, slots=True)
class LocalState:
    """A local file as the scan saw it: a write must find it unchanged, or not happen."""

    size: int
    mtime_ns: int
    inode: int
    hash: str
    ctime_ns: int = 0  # known for a file a download just wrote; 0 for a scanned one


def mirror_entry(
    relpath: str, local: LocalState, remote: RemoteFile, *, origin: Origin, synced_at: float
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
        remote_size=remote.size,
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
    expect: LocalState | None = None
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
    local: LocalState
    policy: ConflictPolicy


@dataclass(frozen=True, slots=True)
class Verify:
    """A local file with no history may already be in the container under another
    name (a lost index on a server that drops directories or whole names):
    download the candidates and adopt the one with the same content; else ``upload``.
    """

    relpath: str
    local: LocalState
    candidates: tuple[RemoteFile, ...]
    upload: Upload


@dataclass(frozen=True, slots=True)
class DeleteLocal:
    """Delete a local file whose remote file was deleted (``remote_delete = propagate``)."""

    relpath: str
    expect: LocalState


LocalAction = Download | Compare | Verify | DeleteLocal
RemoteAction = Upload | Delete


@dataclass(frozen=True)
class Plan:
    uploads: tuple[Upload, ...] = ()
    deletes: tuple[Delete, ...] = ()
    downloads: tuple[Download, ...] = ()
    compares: tuple[Compare, ...] = ()
    verifies: tuple[Verify, ...] = ()
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
        return (*self.downloads, *self.compares, *self.verifies, *self.local_deletes)

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
