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

It fills the pass's ``PlanBuilder`` first: the relpaths it decides go into
``decided`` (the push side leaves them alone this pass) and the remote ids it
accounts for into ``accounted``. ``resolve_unrelated`` is also what the engine
asks when a ``Compare`` finds different content.

Must not: import anything that performs I/O, read the clock, or depend on the
iteration order of its inputs.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field, replace

from cntr_sync.actions import (
    Compare,
    DeleteLocal,
    Download,
    DownloadReason,
    Plan,
    PlanBuilder,
    Recheck,
    Upload,
    mirror_entry,
)
from cntr_sync.models import ConflictPolicy, IndexEntry, LocalFile, PullFailure, RemoteFile
from cntr_sync.plan_inputs import IndexEntries, Policy, RemoteFiles
from cntr_sync.remote_paths import Refused, TakenNames, local_relpath, printable


def pulled_entry(relpath: str, remote: RemoteFile, local: LocalFile, now: float) -> IndexEntry:
    """The entry of ``relpath`` mirroring ``remote``, the local side as ``local``."""
    return mirror_entry(relpath, local, remote, origin="pull", synced_at=now)


@dataclass
class _RemoteSide:
    """What every step of the remote side reads, and the builder it fills."""

    out: PlanBuilder
    policy: Policy
    names: TakenNames
    failures: Mapping[str, PullFailure]
    uncertain: Callable[[str], bool]
    ignored: Callable[[str], bool]
    # Tracked relpaths whose remote side looks unchanged and local side is unchanged:
    # what a content check (``Recheck``) may pick from, in relpath order.
    checkable: list[str] = field(default_factory=list)


def plan_pull(
    out: PlanBuilder,
    local: Mapping[str, LocalFile],
    index: IndexEntries,
    remote: RemoteFiles,
    *,
    owned: Set[str],
    uncertain: Callable[[str], bool],
    policy: Policy,
    failures: Mapping[str, PullFailure] | None = None,
    ignored: Callable[[str], bool] = lambda _relpath: False,
) -> None:
    """The remote side of one pass, into ``out``. ``owned``: remote ids the push side
    accounts for (never the model's files)."""
    side = _RemoteSide(
        out,
        policy,
        TakenNames(policy.traits, (*local, *index)),
        failures or {},
        uncertain,
        ignored,
    )
    by_target = _map_foreign(remote.values(), owned | set(index.remote_ids()), index, side)
    for relpath, entry in sorted(index.items()):
        _tracked(relpath, entry, local.get(relpath), remote, by_target, side)
    for relpath in _rotation(side.checkable, policy):
        entry = index[relpath]
        live = remote[entry.remote_id]
        out.rechecks.append(Recheck(live, relpath, entry, local[relpath]))
    for target in sorted(by_target):
        for position, file in enumerate(by_target[target]):
            _untracked(target, file, position == 0, local, index, side)


def _map_foreign(
    remote: Iterable[RemoteFile],
    owned: Set[str],
    index: IndexEntries,
    side: _RemoteSide,
) -> dict[str, list[RemoteFile]]:
    """Remote files nobody tracks, by the relpath they land at (oldest first).

    A file at exactly the path of one of ours (``<32 hex>-name``, which only our
    upload gets) lands at that file's relpath whoever wrote it: the model
    rewriting our file under a new id is a remote edit, never a new file.
    """
    by_target: dict[str, list[RemoteFile]] = {}
    rules = side.policy.path_rules
    for item in sorted(remote, key=lambda r: (r.created_at or 0, r.id)):
        if item.id in owned:
            continue
        mapped = local_relpath(item.path, item.source, rules)
        if item.source != "user":
            as_ours = local_relpath(item.path, "user", rules)
            entry = index.get(as_ours) if isinstance(as_ours, str) else None
            if entry is not None and entry.remote_path == item.path:
                mapped = as_ours
        if isinstance(mapped, Refused):
            if not mapped.quiet:
                side.out.refused.append((printable(item.path), mapped.reason))
            continue
        if side.ignored(mapped):
            continue  # the ignore rules leave it alone, as they do locally
        by_target.setdefault(mapped, []).append(item)
    return by_target


def _waiting(remote: RemoteFile, relpath: str, side: _RemoteSide) -> bool:
    """Whether ``remote``'s download failed before and waits for its retry time."""
    failure = side.failures.get(remote.id)
    if failure is None or failure.retry_at <= side.policy.now:
        return False
    side.out.waiting.append((relpath, failure.error))
    side.out.accounted.add(remote.id)
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
    remote: RemoteFiles,
    by_target: dict[str, list[RemoteFile]],
    side: _RemoteSide,
) -> None:
    out = side.out
    live = remote.get(entry.remote_id)
    if live is not None:
        out.accounted.add(live.id)
    if local_file is None and side.ignored(relpath):
        return  # excluded here: nothing comes home (the push side decides its copy)
    # The id gone and a new file at the same path: the remote side rewrote it.
    newer = by_target[relpath].pop() if live is None and by_target.get(relpath) else None
    if newer is not None:
        out.accounted.add(newer.id)
        if not by_target[relpath]:
            del by_target[relpath]
    if local_file is None and side.uncertain(relpath):
        out.decided.add(relpath)
        return
    remote_now = live or newer
    if remote_now is None:
        _remote_gone(relpath, entry, local_file, side)
        return
    if newer is None and live is not None and not _size_changed(live, entry):
        # As it was, as far as a listing can tell: local changes are the push side's.
        # An unchanged local file may be checked against the content (``Recheck``):
        # the entry's hash is then both sides' content, so a difference is the model's.
        if local_file is not None and live.size is not None and local_file.hash == entry.hash:
            side.checkable.append(relpath)
        return
    if _waiting(remote_now, relpath, side):
        out.decided.add(relpath)
        return
    if local_file is None:
        # Deleted here, changed there: the change wins over the deletion.
        out.downloads.append(Download(remote_now, relpath, "restore"))
        out.decided.add(relpath)
        return
    if local_file.hash == entry.hash:
        out.downloads.append(Download(remote_now, relpath, "changed", expect=local_file))
        out.decided.add(relpath)
        return
    out.conflicts += 1
    _tracked_conflict(relpath, entry, local_file, remote_now, live, side)


def _tracked_conflict(
    relpath: str,
    entry: IndexEntry,
    local_file: LocalFile,
    remote_now: RemoteFile,
    live: RemoteFile | None,
    side: _RemoteSide,
) -> None:
    """Both sides changed since they last agreed."""
    out, policy = side.out, side.policy
    conflict = _conflict_rule(policy, local_file, remote_now, entry.synced_at)
    repointed = replace(
        entry,
        remote_id=remote_now.id,
        remote_path=remote_now.path,
        remote_size=remote_now.size,
        remote_created_at=remote_now.created_at,
    )
    if conflict == "keep-both":
        copy = side.names.conflict_copy(relpath, "container", policy.now)
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
            out.decided.add(relpath)
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
    if conflict == "local-wins":
        if policy.direction == "pull":
            out.repoints.append(repointed)
            out.decided.add(relpath)
        elif live is None:
            # The push side uploads the local version; the rewrite goes.
            out.delete(remote_now, "conflict", relpath)
        return
    aside = side.names.conflict_copy(relpath, "local", policy.now)
    out.downloads.append(
        Download(remote_now, relpath, "remote-wins", expect=local_file, move_aside_to=aside)
    )
    out.decided.add(relpath)


def _remote_gone(
    relpath: str, entry: IndexEntry, local_file: LocalFile | None, side: _RemoteSide
) -> None:
    out, policy = side.out, side.policy
    if local_file is None:
        out.forgets.append(relpath)
        out.decided.add(relpath)
        return
    if policy.remote_delete == "propagate" and local_file.hash == entry.hash:
        out.local_deletes.append(DeleteLocal(relpath, local_file))
        out.decided.add(relpath)
        return
    if policy.direction == "pull":
        # Nothing can be restored by a pull: the local file stays, untracked.
        out.forgets.append(relpath)
        out.decided.add(relpath)
    # In both, the push side uploads it again (restore, or a local change).


def _untracked(
    target: str,
    remote: RemoteFile,
    first: bool,
    local: Mapping[str, LocalFile],
    index: IndexEntries,
    side: _RemoteSide,
) -> None:
    out = side.out
    if side.uncertain(target):
        out.accounted.add(remote.id)  # being written here: next pass
        return
    if _waiting(remote, target, side):
        return
    if first and target in local and target not in index:
        out.accounted.add(remote.id)
        out.decided.add(target)
        _unrelated(target, remote, local[target], side)
        return
    parent = side.names.file_above(target)
    if parent is not None:
        out.refused.append((printable(remote.path), f"{printable(parent)} is a file here"))
        return
    if target in side.names:
        renamed = side.names.free_name(target)
        out.refused.append(
            (
                printable(remote.path),
                f"would overwrite {printable(target)} on this file system; "
                f"saved as {printable(renamed)}",
            )
        )
        target = renamed
    else:
        side.names.take(target)
    out.accounted.add(remote.id)
    out.downloads.append(Download(remote, target, "new"))


def _unrelated(target: str, remote: RemoteFile, local_file: LocalFile, side: _RemoteSide) -> None:
    """A local file and a remote one share a name but no history."""
    out = side.out
    if remote.size is not None and remote.size != local_file.size:
        out.conflicts += 1
        out.extend(resolve_unrelated(remote, target, local_file, side.policy, side.names))
        return
    out.compares.append(Compare(remote, target, local_file, side.policy.conflict))


def resolve_unrelated(
    remote: RemoteFile, relpath: str, local: LocalFile, policy: Policy, names: TakenNames
) -> Plan:
    """The actions of a conflict between a local file and a remote one with no history.

    ``names``: the names in use, so conflict copies overwrite nothing (the copy's
    name is taken in it).
    """
    resolution = PlanBuilder()
    reason: DownloadReason
    conflict = _conflict_rule(policy, local, remote, None)
    if conflict == "keep-both":
        copy = names.conflict_copy(relpath, "container", policy.now)
        reason = "conflict-copy"
        resolution.downloads.append(Download(remote, copy, reason, copy_of=relpath))
        if policy.direction == "both":
            resolution.uploads.append(_upload_local(relpath, local))
    elif conflict == "local-wins":
        if policy.direction == "both":
            resolution.uploads.append(_upload_local(relpath, local))
            resolution.delete(remote, "conflict", relpath)
        else:
            resolution.repoints.append(pulled_entry(relpath, remote, local, policy.now))
    else:
        aside = names.conflict_copy(relpath, "local", policy.now)
        resolution.downloads.append(
            Download(remote, relpath, "remote-wins", expect=local, move_aside_to=aside)
        )
    return resolution.build()


def _rotation(relpaths: list[str], policy: Policy) -> list[str]:
    """The ``recheck_count`` relpaths after ``recheck_after`` (wrapping around), or, with
    none checked yet in this process, from a place the clock picks (one slot a minute),
    so that passes of one-shot runs move through the tree too."""
    count = min(policy.recheck_count, len(relpaths))
    if not count:
        return []
    if policy.recheck_after is not None:
        start = bisect_right(relpaths, policy.recheck_after)
    else:
        start = int(policy.now // 60) * count
    return [relpaths[(start + offset) % len(relpaths)] for offset in range(count)]


def _conflict_rule(
    policy: Policy, local: LocalFile, remote: RemoteFile, synced_at: float | None
) -> ConflictPolicy:
    """The rule a conflict is resolved by. ``newer`` is keep-both (the local version,
    changed last, stays and the container's is saved beside it) or remote-wins (the
    container's, changed last, comes home and the local one is saved beside it). A
    container change with no time of its own (a rewrite in place keeps the first
    version's ``created_at``) cannot be ordered: both are kept."""
    if policy.conflict != "newer":
        return policy.conflict
    changed_there = remote.created_at
    if changed_there is None or (synced_at is not None and changed_there <= synced_at):
        return "keep-both"
    return "remote-wins" if changed_there * 1_000_000_000 > local.mtime_ns else "keep-both"


def _upload_local(relpath: str, local: LocalFile) -> Upload:
    return Upload(relpath, local.size, local.mtime_ns, local.hash, "conflict", inode=local.inode)
