"""PURE: the remote side of a pass in ``pull`` and ``both``: what comes home, and conflicts.

``plan_pull`` compares the snapshot, the index (the common ancestor of both
sides, per relpath) and one complete listing, the way Unison and rclone
bisync do, and decides:

- For each tracked relpath: a remote change (the same id with other
  ``bytes``, or the id gone and a new file at the same path) comes home when
  the local file is unchanged; when both changed it is a conflict, resolved by
  ``conflict``: ``keep-both`` saves the remote version beside the local one as
  ``NAME (container conflict YYYY-MM-DD HHMMSS).EXT`` (the local version is
  pushed in ``both``), ``local-wins`` keeps the local version, ``remote-wins``
  downloads the remote version after moving the local one aside as
  ``NAME (local conflict ...).EXT``. A remote deletion is restored
  (``remote_delete = restore``: pushed again in ``both``) or carried over to an
  unchanged local file (``propagate``).
- For each remote file nobody tracks (the model's, or an upload this tool has
  no record of), mapped to a relpath by ``remote_paths`` (hostile paths refused
  with a reason): downloaded; a name that would overwrite another on this file
  system gets a suffix; a local file with the same name and no history is
  compared by content (``Compare``) or, when the sizes differ, is a conflict.

It tells the push side which relpaths to leave alone this pass and which remote
ids it accounts for. ``resolve_unrelated`` is also what the engine asks when a
``Compare`` finds different content.

Must not: import anything that performs I/O, read the clock, or depend on the
iteration order of its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field, replace

from cntr_sync.actions import (
    Compare,
    Delete,
    DeleteLocal,
    Download,
    DownloadReason,
    LocalState,
    Upload,
    mirror_entry,
)
from cntr_sync.models import (
    ConflictPolicy,
    Direction,
    IndexEntry,
    LocalFile,
    PullFailure,
    RemoteDeletePolicy,
    RemoteFile,
)
from cntr_sync.remote_paths import (
    FileSystemTraits,
    PathRules,
    Refused,
    conflict_copy_name,
    local_relpath,
    printable,
    suffixed,
)


@dataclass(frozen=True)
class PullPolicy:
    direction: Direction
    conflict: ConflictPolicy = "keep-both"
    remote_delete: RemoteDeletePolicy = "restore"
    now: float = 0.0
    rules: PathRules = field(default_factory=PathRules)
    traits: FileSystemTraits = field(default_factory=FileSystemTraits)


@dataclass(frozen=True)
class PullPlan:
    downloads: tuple[Download, ...] = ()
    compares: tuple[Compare, ...] = ()
    local_deletes: tuple[DeleteLocal, ...] = ()
    uploads: tuple[Upload, ...] = ()
    deletes: tuple[Delete, ...] = ()
    repoints: tuple[IndexEntry, ...] = ()
    forgets: tuple[str, ...] = ()
    push_skip: frozenset[str] = frozenset()
    claimed: frozenset[str] = frozenset()
    refused: tuple[tuple[str, str], ...] = ()
    waiting: tuple[tuple[str, str], ...] = ()
    conflicts: int = 0


def local_state(file: LocalFile) -> LocalState:
    return LocalState(file.size, file.mtime_ns, file.inode, file.hash)


def pulled_entry(relpath: str, remote: RemoteFile, local: LocalState, now: float) -> IndexEntry:
    """The entry of ``relpath`` mirroring ``remote``, the local side as ``local``."""
    return mirror_entry(relpath, local, remote, origin="pull", synced_at=now)


@dataclass
class _Builder:
    policy: PullPolicy
    downloads: list[Download] = field(default_factory=list)
    compares: list[Compare] = field(default_factory=list)
    local_deletes: list[DeleteLocal] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    repoints: list[IndexEntry] = field(default_factory=list)
    forgets: list[str] = field(default_factory=list)
    push_skip: set[str] = field(default_factory=set)
    claimed: set[str] = field(default_factory=set)
    refused: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[tuple[str, str]] = field(default_factory=list)
    conflicts: int = 0
    # Keys (``traits.key``) of every name in use: local files and their
    # directories, tracked relpaths, and what this pass will write.
    taken: set[str] = field(default_factory=set)
    file_keys: set[str] = field(default_factory=set)

    def occupy(self, relpath: str) -> None:
        key = self.policy.traits.key
        self.taken.add(key(relpath))
        self.file_keys.add(key(relpath))
        parts = relpath.split("/")
        for depth in range(1, len(parts)):
            self.taken.add(key("/".join(parts[:depth])))

    def copy_name(self, relpath: str, side: str) -> str:
        name = conflict_copy_name(
            relpath,
            "container" if side == "container" else "local",
            self.policy.now,
            self.taken,
            self.policy.traits,
        )
        self.occupy(name)
        return name

    def add(self, resolution: PullPlan) -> None:
        self.downloads.extend(resolution.downloads)
        self.uploads.extend(resolution.uploads)
        self.deletes.extend(resolution.deletes)
        self.repoints.extend(resolution.repoints)

    def build(self) -> PullPlan:
        return PullPlan(
            downloads=tuple(self.downloads),
            compares=tuple(self.compares),
            local_deletes=tuple(self.local_deletes),
            uploads=tuple(self.uploads),
            deletes=tuple(self.deletes),
            repoints=tuple(self.repoints),
            forgets=tuple(sorted(set(self.forgets))),
            push_skip=frozenset(self.push_skip),
            claimed=frozenset(self.claimed),
            refused=tuple(self.refused),
            waiting=tuple(self.waiting),
            conflicts=self.conflicts,
        )


def plan_pull(
    local: Mapping[str, LocalFile],
    index: Mapping[str, IndexEntry],
    remote_by_id: Mapping[str, RemoteFile],
    *,
    owned: Set[str],
    uncertain: Callable[[str], bool],
    policy: PullPolicy,
    failures: Mapping[str, PullFailure] | None = None,
    ignored: Callable[[str], bool] = lambda _relpath: False,
) -> PullPlan:
    """The remote side of one pass. ``owned``: remote ids the push side accounts for."""
    out = _Builder(policy)
    failures = failures or {}
    for relpath in (*local, *index):
        out.occupy(relpath)

    by_target = _map_foreign(remote_by_id.values(), owned | _indexed(index), policy, ignored, out)
    for relpath, entry in sorted(index.items()):
        _tracked(
            relpath, entry, local.get(relpath), remote_by_id, by_target, failures, uncertain, out
        )
    for target in sorted(by_target):
        for position, remote in enumerate(by_target[target]):
            _untracked(target, remote, position == 0, local, index, failures, uncertain, out)
    return out.build()


def _indexed(index: Mapping[str, IndexEntry]) -> set[str]:
    return {entry.remote_id for entry in index.values()}


def _map_foreign(
    remote: Iterable[RemoteFile],
    owned: Set[str],
    policy: PullPolicy,
    ignored: Callable[[str], bool],
    out: _Builder,
) -> dict[str, list[RemoteFile]]:
    """Remote files nobody tracks, by the relpath they land at (oldest first)."""
    by_target: dict[str, list[RemoteFile]] = {}
    for item in sorted(remote, key=lambda r: (r.created_at or 0, r.id)):
        if item.id in owned:
            continue
        mapped = local_relpath(item.path, item.source, policy.rules)
        if isinstance(mapped, Refused):
            if not mapped.quiet:
                out.refused.append((printable(item.path), mapped.reason))
            continue
        if ignored(mapped):
            continue  # the ignore rules leave it alone, as they do locally
        by_target.setdefault(mapped, []).append(item)
    return by_target


def _waiting(
    remote: RemoteFile, relpath: str, failures: Mapping[str, PullFailure], out: _Builder
) -> bool:
    failure = failures.get(remote.id)
    if failure is None or failure.retry_at <= out.policy.now:
        return False
    out.waiting.append((relpath, failure.error))
    out.claimed.add(remote.id)
    return True


def _size_changed(live: RemoteFile, entry: IndexEntry) -> bool:
    # Without a hash, ``bytes`` is all the API says; null on either side says nothing.
    return (
        live.size is not None and entry.remote_size is not None and live.size != entry.remote_size
    )


def _tracked(
    relpath: str,
    entry: IndexEntry,
    local_file: LocalFile | None,
    remote_by_id: Mapping[str, RemoteFile],
    by_target: dict[str, list[RemoteFile]],
    failures: Mapping[str, PullFailure],
    uncertain: Callable[[str], bool],
    out: _Builder,
) -> None:
    live = remote_by_id.get(entry.remote_id)
    if live is not None:
        out.claimed.add(live.id)
    # The id gone and a new file at the same path: the remote side rewrote it.
    newer = by_target[relpath].pop() if live is None and by_target.get(relpath) else None
    if newer is not None:
        out.claimed.add(newer.id)
        if not by_target[relpath]:
            del by_target[relpath]
    if local_file is None and uncertain(relpath):
        out.push_skip.add(relpath)
        return
    remote_now = live or newer
    if remote_now is None:
        _remote_gone(relpath, entry, local_file, out)
        return
    if newer is None and live is not None and not _size_changed(live, entry):
        return  # the remote side is as it was: local changes are the push side's
    if _waiting(remote_now, relpath, failures, out):
        out.push_skip.add(relpath)
        return
    if local_file is None:
        # Deleted here, changed there: the change wins over the deletion.
        out.downloads.append(Download(remote_now, relpath, "restore"))
        out.push_skip.add(relpath)
        return
    if local_file.hash == entry.hash:
        out.downloads.append(
            Download(remote_now, relpath, "changed", expect=local_state(local_file))
        )
        out.push_skip.add(relpath)
        return
    out.conflicts += 1
    _tracked_conflict(relpath, entry, local_file, remote_now, live, out)


def _tracked_conflict(
    relpath: str,
    entry: IndexEntry,
    local_file: LocalFile,
    remote_now: RemoteFile,
    live: RemoteFile | None,
    out: _Builder,
) -> None:
    """Both sides changed since they last agreed."""
    policy = out.policy
    repointed = replace(
        entry,
        remote_id=remote_now.id,
        remote_path=remote_now.path,
        remote_size=remote_now.size,
        remote_created_at=remote_now.created_at,
    )
    if policy.conflict == "keep-both":
        copy = out.copy_name(relpath, "container")
        if policy.direction == "pull":
            # Nothing is pushed: the original's entry moves to the version saved.
            out.downloads.append(
                Download(
                    remote_now,
                    copy,
                    "conflict-copy",
                    record=False,
                    repoint=repointed,
                    copy_of=relpath,
                )
            )
            out.push_skip.add(relpath)
        else:
            # The push side uploads the local version (replacing ``live``); a
            # rewrite under a new id stays in the container, mirrored by the copy.
            # Saved, the remote version is no longer news: the original's entry
            # moves to it, so a failed upload is retried, not copied again.
            out.downloads.append(
                Download(
                    remote_now,
                    copy,
                    "conflict-copy",
                    record=live is None,
                    repoint=repointed if live is not None else None,
                    copy_of=relpath,
                )
            )
        return
    if policy.conflict == "local-wins":
        if policy.direction == "pull":
            out.repoints.append(repointed)
            out.push_skip.add(relpath)
        elif live is None:
            # The push side uploads the local version; the rewrite goes.
            out.deletes.append(Delete(remote_now.id, remote_now.path, "conflict", relpath))
        return
    aside = out.copy_name(relpath, "local")
    out.downloads.append(
        Download(
            remote_now,
            relpath,
            "remote-wins",
            expect=local_state(local_file),
            move_aside_to=aside,
        )
    )
    out.push_skip.add(relpath)


def _remote_gone(
    relpath: str, entry: IndexEntry, local_file: LocalFile | None, out: _Builder
) -> None:
    policy = out.policy
    if local_file is None:
        out.forgets.append(relpath)
        out.push_skip.add(relpath)
        return
    if policy.remote_delete == "propagate" and local_file.hash == entry.hash:
        out.local_deletes.append(DeleteLocal(relpath, local_state(local_file)))
        out.push_skip.add(relpath)
        return
    if policy.direction == "pull":
        # Nothing can be restored by a pull: the local file stays, untracked.
        out.forgets.append(relpath)
        out.push_skip.add(relpath)
    # In both, the push side uploads it again (restore, or a local change).


def _untracked(
    target: str,
    remote: RemoteFile,
    first: bool,
    local: Mapping[str, LocalFile],
    index: Mapping[str, IndexEntry],
    failures: Mapping[str, PullFailure],
    uncertain: Callable[[str], bool],
    out: _Builder,
) -> None:
    key = out.policy.traits.key
    if uncertain(target):
        out.claimed.add(remote.id)  # being written here: next pass
        return
    if _waiting(remote, target, failures, out):
        return
    if first and target in local and target not in index:
        out.claimed.add(remote.id)
        out.push_skip.add(target)
        _unrelated(target, remote, local[target], out)
        return
    parts = target.split("/")
    parent = next(
        (
            "/".join(parts[:d])
            for d in range(1, len(parts))
            if key("/".join(parts[:d])) in out.file_keys
        ),
        None,
    )
    if parent is not None:
        out.refused.append((printable(remote.path), f"{printable(parent)} is a file here"))
        return
    if key(target) in out.taken:
        renamed = suffixed(target, out.taken, out.policy.traits)
        out.refused.append(
            (
                printable(remote.path),
                f"would overwrite {printable(target)} on this file system; "
                f"saved as {printable(renamed)}",
            )
        )
        target = renamed
    out.occupy(target)
    out.claimed.add(remote.id)
    out.downloads.append(Download(remote, target, "new"))


def _unrelated(target: str, remote: RemoteFile, local_file: LocalFile, out: _Builder) -> None:
    """A local file and a remote one share a name but no history."""
    state = local_state(local_file)
    if remote.size is not None and remote.size != local_file.size:
        out.conflicts += 1
        out.add(resolve_unrelated(remote, target, state, out.policy, out.taken, out=out))
        return
    out.compares.append(Compare(remote, target, state, out.policy.conflict))


def resolve_unrelated(
    remote: RemoteFile,
    relpath: str,
    local: LocalState,
    policy: PullPolicy,
    taken: Set[str],
    *,
    out: _Builder | None = None,
) -> PullPlan:
    """The actions of a conflict between a local file and a remote one with no history.

    ``taken``: keys of names in use, so conflict copies overwrite nothing.
    """
    builder = out or _Builder(policy, taken=set(taken))
    resolution = _Builder(policy)
    reason: DownloadReason
    if policy.conflict == "keep-both":
        copy = builder.copy_name(relpath, "container")
        reason = "conflict-copy"
        resolution.downloads.append(Download(remote, copy, reason, copy_of=relpath))
        if policy.direction == "both":
            resolution.uploads.append(_upload_local(relpath, local))
    elif policy.conflict == "local-wins":
        if policy.direction == "both":
            resolution.uploads.append(_upload_local(relpath, local))
            resolution.deletes.append(Delete(remote.id, remote.path, "conflict", relpath))
        else:
            resolution.repoints.append(pulled_entry(relpath, remote, local, policy.now))
    else:
        aside = builder.copy_name(relpath, "local")
        resolution.downloads.append(
            Download(remote, relpath, "remote-wins", expect=local, move_aside_to=aside)
        )
    return resolution.build()


def _upload_local(relpath: str, local: LocalState) -> Upload:
    return Upload(relpath, local.size, local.mtime_ns, local.hash, "conflict", inode=local.inode)
