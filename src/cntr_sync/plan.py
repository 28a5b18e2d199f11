"""The planner: a pure function from what we know to what must be done.

``plan(local, index, remote, ..., policy)`` compares the local snapshot, the
index (the common ancestor of both sides, per relpath) and one complete remote
listing, and returns a ``Plan`` (``actions``). This module decides the push
side: uploads, remote deletes and index bookkeeping (adoptions, refreshed
stats, forgotten entries). With ``direction`` pull or both, ``pull.plan_pull``
decides the remote side first (downloads, conflicts, local deletes) into the
same ``PlanBuilder``, whose ``decided`` relpaths this side leaves alone; in pull
mode no upload or remote delete survives. Whether a plan must be refused is
``brakes.check_brakes``'s to say. The inputs are read-only mappings (``plan_inputs``): this
module never asks how they are stored.

Must not: import anything that performs I/O, read the clock, or depend on
iteration order of its inputs. It is tested with plain values.

Ownership rules, in one place:
- A remote file is *ours* when the index names it, when it is a pending delete
  (the old id of a replaced file), or when it is a ``user`` upload whose name equals the
  upload name of a local relpath that this pass syncs (the mirror owns the
  names of the files it mirrors).
- Ours and current: kept. Ours and superseded (the old version of a replaced
  file, a duplicate, an ambiguous upload of older content): deleted, always,
  since that is part of replacing the file.
- Ours and its local file gone: deleted only with ``delete`` (a file the pull
  side brought in is deleted so only in ``both``; ``push`` leaves it).
- A conflict copy this tool made (``conflict_copies``, recorded in the index)
  with no entry is never uploaded: it holds a remote version, not a local
  change. A file of yours merely named like one is a file like any other.
- Everything else (assistant files, user files with other names) is left
  alone, unless ``delete`` and ``delete_unknown``.
- Names are trusted only while the server keeps them: when a gateway replaces
  upload names (``server_keeps_names`` is False), nothing is matched by name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Literal

from cntr_sync import pull
from cntr_sync.actions import (
    AccountedIds,
    Delete,
    DeleteReason,
    Plan,
    PlanBuilder,
    Refresh,
    Upload,
    UploadReason,
)
from cntr_sync.models import (
    IndexEntry,
    LocalFile,
    PendingDelete,
    PullFailure,
    RemoteFile,
    UploadIntent,
)
from cntr_sync.name_match import (
    shared_names,
    unaccounted,
    unindexed_uploads_by_name,
    verify_unmatched_uploads,
)
from cntr_sync.names import (
    basename,
    canonical,
    infer_prefix,
    names_dropped,
    remote_names,
    upload_name,
)
from cntr_sync.plan_inputs import IndexEntries, Policy, RemoteFiles

# A remote file adopted without an index must not predate the local file's
# last change (else the local file changed after that upload). ``created_at``
# has whole seconds, hence one second of slack; a larger slack would adopt
# stale content after a quick edit, while clock skew only costs a re-upload.
ADOPT_CLOCK_SLACK_S = 1


def plan(
    local: Mapping[str, LocalFile],
    index: IndexEntries,
    remote: RemoteFiles,
    *,
    intents: Mapping[str, UploadIntent] | None = None,
    pending_deletes: Sequence[PendingDelete] = (),
    policy: Policy | None = None,
    uncertain: Callable[[str], bool] | None = None,
    failures: Mapping[str, PullFailure] | None = None,
    ignored: Callable[[str], bool] | None = None,
    conflict_copies: Container[str] = frozenset(),
) -> Plan:
    """Decide every action of one pass. ``remote`` must be a complete listing.

    ``uncertain(relpath)`` is true for paths the scan could not read (a file
    being written, an unreadable directory): they are absent from ``local``
    but must not be taken as deleted, so nothing about them changes.
    ``ignored(relpath)``: excluded by the ignore rules (or ``--exclude``): left alone on
    both sides, neither uploaded, downloaded nor deleted, unless ``delete_excluded``
    deletes our remote copy. ``conflict_copies``: the relpaths of the conflict copies
    this tool made (never uploaded). Pull and both only: ``failures``, remote files
    whose download failed (retried after their time).
    """
    policy = policy or Policy()
    intents = intents or {}
    is_uncertain = uncertain or (lambda _relpath: False)
    is_ignored = ignored or (lambda _relpath: False)
    out = PlanBuilder(AccountedIds(remote))
    push_policy = policy
    if policy.direction != "push":
        owned = set(index.remote_ids())
        owned |= {pending.remote_id for pending in pending_deletes}
        if policy.server_keeps_names is False:
            # A server that renames uploads (Bifrost: every one is "file") hides
            # our own stray uploads among other uploads: pull only the model's files.
            owned |= {item.id for item in remote.values() if item.source == "user"}
        if policy.direction == "both":
            owned |= _ours_by_name(local, index, intents, remote, owned, policy)
        else:
            # Pull matches nothing by name: what is not indexed is the model's.
            push_policy = replace(policy, server_keeps_names=False)
        pull.plan_pull(
            out,
            local,
            index,
            remote,
            owned=owned,
            uncertain=is_uncertain,
            policy=policy,
            failures=failures,
            ignored=is_ignored,
        )
    return _plan_push(
        out,
        local,
        index,
        remote,
        intents,
        pending_deletes,
        push_policy,
        is_uncertain,
        is_ignored,
        conflict_copies,
    )


def _ours_by_name(
    local: Mapping[str, LocalFile],
    index: IndexEntries,
    intents: Mapping[str, UploadIntent],
    remote: RemoteFiles,
    owned: set[str],
    policy: Policy,
) -> set[str]:
    """Uploads the push side accounts for in ``both``: never pulled as the model's files.

    Same-name uploads of relpaths with a history here (an entry or an intent);
    on a server that drops names, every upload; and, after a lost index on a
    server that keeps only base names, uploads named like a nested local
    file's base name with its size (checked by content, not pulled as junk at
    the top); after a lost index, same-name uploads of a local file with no
    history whose size and time fit it (the push side adopts them, proving the
    content first where names fold together). Any other same-name upload of a
    local file with no history is the pull side's: compared by content, or a
    conflict.
    """
    user = [r for r in remote.values() if r.source == "user" and r.id not in owned]
    if names_dropped(r.path for r in user):
        return {r.id for r in user}
    prefix = policy.server_adds_prefix
    if prefix is None:
        prefix = infer_prefix(r.path for r in user)
    ours: set[str] = set()
    by_name = unindexed_uploads_by_name(remote, user, owned, policy, prefix, local)
    for relpath in index.keys() | intents.keys():
        ours.update(r.id for r in by_name.get(canonical(upload_name(relpath))))
    if by_name:
        # A local file with no history and an upload of its name, size and time: ours
        # (a lost index), recovered by the push side as pushed, not pulled and compared.
        for relpath, file in local.items():
            if relpath not in index and relpath not in intents:
                ours.update(
                    r.id
                    for r in by_name.get(canonical(upload_name(relpath)))
                    if _size_matches(r, file.size) and _not_older_than(r, file)
                )
    nested = {
        (canonical(basename(relpath)), file.size)
        for relpath, file in local.items()
        if "/" in relpath and relpath not in index
    }
    for item in user:
        name = canonical(basename(remote_names(item.path, prefix)[0]))
        if (name, item.size) in nested:
            ours.add(item.id)
    return ours


def _plan_push(
    out: PlanBuilder,
    local: Mapping[str, LocalFile],
    index: IndexEntries,
    remote: RemoteFiles,
    intents: Mapping[str, UploadIntent],
    pending_deletes: Sequence[PendingDelete],
    policy: Policy,
    uncertain: Callable[[str], bool],
    ignored: Callable[[str], bool],
    conflict_copies: Container[str],
) -> Plan:
    """The push side: uploads, remote deletes and bookkeeping, then the plan.

    Relpaths in ``out.decided`` (the pull side's this pass) are left alone; remote
    ids in ``out.accounted`` are neither unknown nor matched by name here.
    """
    # Only remote ids are ever looked up in ``accounted``, so indexed ids that are not
    # listed do no harm there.
    out.accounted.update(index.remote_ids())

    for pending in pending_deletes:
        target = remote.get(pending.remote_id)
        if target is None:
            out.obsolete_deletes.append(pending.remote_id)
        else:
            out.delete(target, "pending", pending.relpath)

    # Here the accounted ids are the indexed, pending and pull side's ones: excluded
    # from matching by name.
    prefix, dropped = _server_naming(remote, out.accounted, policy)
    by_name = unindexed_uploads_by_name(
        remote, unaccounted(remote, out.accounted), out.accounted, policy, prefix, local
    )

    first_upload = len(out.uploads)  # the pull side's conflict uploads come before
    relpaths = _relpaths(local, index, intents)
    # Relpaths whose upload names compare equal (NFC and NFD, '"' and '%22'): a name
    # cannot tell whose upload is whose, so only content can (verify_unmatched_uploads).
    shared = shared_names(relpaths) if by_name else set()
    for relpath in relpaths:
        same_name: list[RemoteFile] = []
        if by_name:  # else (most passes) no upload waits to be matched by name
            name = canonical(upload_name(relpath))
            if name not in shared:
                same_name = by_name.take(name)
        if relpath in out.decided or (relpath not in local and uncertain(relpath)):
            _hold(index.get(relpath), same_name, out)
            continue
        if relpath not in local and ignored(relpath):
            _excluded(relpath, index.get(relpath), same_name, remote, policy, out)
            continue
        _plan_relpath(
            relpath,
            local=local.get(relpath),
            entry=index.get(relpath),
            intent=intents.get(relpath),
            same_name=same_name,
            remote=remote,
            policy=policy,
            out=out,
            is_copy=relpath in conflict_copies,
        )

    verify_unmatched_uploads(
        local,
        remote,
        intents,
        policy,
        prefix,
        dropped=dropped,
        out=out,
        first_upload=first_upload,
    )
    unknown_kept = 0
    for item in unaccounted(remote, out.accounted):
        if policy.delete and policy.delete_unknown:
            out.delete(item, "unknown", None)
        else:
            unknown_kept += 1

    return out.build(
        tracked=len(index),
        unknown_kept=unknown_kept,
        moves=_count_moves(out.deletes, out.uploads, index),
        push=policy.direction != "pull",
    )


def _server_naming(
    remote: RemoteFiles, accounted: AccountedIds, policy: Policy
) -> tuple[bool | None, bool]:
    """(whether the server adds hash prefixes, whether it drops names), as the policy
    knows it or the unaccounted uploads tell. Their paths are held here only: after a
    lost index, a list of 100,000 of them was still held at the peak of planning."""
    user_paths = [r.path for r in unaccounted(remote, accounted) if r.source == "user"]
    prefix = policy.server_adds_prefix
    if prefix is None:
        prefix = infer_prefix(user_paths)
    return prefix, policy.server_keeps_names is False or names_dropped(user_paths)


def _excluded(
    relpath: str,
    entry: IndexEntry | None,
    same_name: list[RemoteFile],
    remote: RemoteFiles,
    policy: Policy,
    out: PlanBuilder,
) -> None:
    """A relpath the ignore rules exclude: its remote copies are left alone, or, with
    ``delete_excluded`` (never in pull), deleted."""
    if not policy.delete_excluded or policy.direction == "pull":
        _hold(entry, same_name, out)
        return
    live = remote.get(entry.remote_id) if entry is not None else None
    if live is not None:
        out.delete(live, "excluded", relpath)
    elif entry is not None:
        out.forgets.append(relpath)
    for candidate in same_name:
        if candidate.id not in out.accounted:
            out.delete(candidate, "excluded", relpath)


def _relpaths(
    local: Mapping[str, LocalFile],
    index: IndexEntries,
    intents: Mapping[str, UploadIntent],
) -> list[str]:
    """Every relpath any side knows, sorted: one list, not a set and a list."""
    relpaths = list(local)
    relpaths.extend(relpath for relpath in index if relpath not in local)
    relpaths.extend(r for r in intents if r not in local and r not in index)
    relpaths.sort()
    return relpaths


def _count_moves(deletes: Sequence[Delete], uploads: Iterable[Upload], index: IndexEntries) -> int:
    """Removals whose content reappears in this pass's new uploads, each matched once."""
    # Only the contents of removed files are counted: a cold push of 100,000 files
    # removes none, and a count of every new upload's hash was a 5 MB dict at the
    # pass's peak.
    removed = {
        entry.hash
        for delete in deletes
        if delete.reason == "removed"
        and delete.relpath is not None
        and (entry := index.get(delete.relpath)) is not None
    }
    if not removed:
        return 0
    arriving: dict[str, int] = defaultdict(int)
    for upload in uploads:
        if upload.reason == "new" and upload.hash in removed:
            arriving[upload.hash] += 1
    moves = 0
    for delete in deletes:
        entry = index.get(delete.relpath) if delete.relpath is not None else None
        if delete.reason == "removed" and entry is not None and arriving[entry.hash] > 0:
            arriving[entry.hash] -= 1
            moves += 1
    return moves


def _hold(entry: IndexEntry | None, same_name: list[RemoteFile], out: PlanBuilder) -> None:
    """Keep everything about a relpath as it is (uncertain, or the pull side's this
    pass): its remote copies are ours."""
    if entry is not None:
        out.accounted.add(entry.remote_id)
    out.accounted.update(r.id for r in same_name)


def _plan_relpath(
    relpath: str,
    *,
    local: LocalFile | None,
    entry: IndexEntry | None,
    intent: UploadIntent | None,
    same_name: list[RemoteFile],
    remote: RemoteFiles,
    policy: Policy,
    out: PlanBuilder,
    is_copy: bool,
) -> None:
    # The entry's remote file, if listed: its id only. Most listed files a pass compares
    # are current, and a ``RemoteFile`` is made only for one the plan deletes.
    live = entry.remote_id if entry is not None and entry.remote_id in remote else None
    candidates = [r for r in same_name if r.id not in out.accounted]

    if (
        local is None
        and entry is not None
        and entry.origin == "pull"
        and policy.direction == "push"
    ):
        # Brought in by a pull and deleted here: a push leaves the model's file.
        if live is not None:
            out.accounted.add(live)
        return
    if entry is None and intent is None and local is not None and is_copy:
        # A remote version saved beside the local one: never uploaded back.
        out.local_only += 1
        return

    if local is None:
        if live is not None and policy.delete:
            out.delete(remote[live], "removed", relpath)
        elif entry is not None and live is None:
            out.forgets.append(relpath)
        if intent is not None:
            # Only an intent proves same-name uploads ours once the local file is gone.
            _drop_leftovers(relpath, intent, candidates, out=out, reason="stale-upload")
        return

    current: str | None = None  # the id of the remote file that holds the local content
    if live is not None and entry is not None and entry.hash == local.hash:
        current = live
        if (entry.size, entry.mtime_ns) != (local.size, local.mtime_ns):
            out.refreshes.append(Refresh(relpath, local.size, local.mtime_ns))

    if current is None:
        adopted = _adoptable(local, entry, intent, candidates)
        if adopted is not None:
            current = adopted.id
            reason: Literal["lost-index", "ambiguous-upload"] = (
                "ambiguous-upload" if intent is not None else "lost-index"
            )
            out.accounted.add(adopted.id)
            out.adopts.add(relpath, local, adopted, reason, policy.now)
            if live is not None:
                out.delete(remote[live], "replaced", relpath)

    if current is None:
        if entry is None:
            upload_reason: UploadReason = "new"
        elif live is None:
            upload_reason = "missing-remote"
        else:
            upload_reason = "changed"
        out.uploads.append(
            Upload(
                relpath,
                local.size,
                local.mtime_ns,
                local.hash,
                upload_reason,
                live,
                inode=local.inode,
            )
        )
        _drop_leftovers(relpath, intent, candidates, out=out, reason="stale-upload")
        return

    _drop_leftovers(relpath, intent, candidates, out=out, reason="duplicate", keep=current)


def _adoptable(
    local: LocalFile,
    entry: IndexEntry | None,
    intent: UploadIntent | None,
    candidates: list[RemoteFile],
) -> RemoteFile | None:
    """An unindexed upload that already holds the local content, if one can be trusted."""
    if intent is not None:
        # Our own upload whose answer was lost: trust it if it is what we sent.
        if intent.hash != local.hash:
            return None
        return next((r for r in candidates if _size_matches(r, local.size)), None)
    if entry is not None:
        # The index knows this file; a stranger with the same name is not its content.
        return None
    for candidate in candidates:
        if _size_matches(candidate, local.size) and _not_older_than(candidate, local):
            return candidate
    return None


def _drop_leftovers(
    relpath: str,
    intent: UploadIntent | None,
    candidates: list[RemoteFile],
    *,
    out: PlanBuilder,
    reason: DeleteReason,
    keep: str | None = None,
) -> None:
    """Same-name uploads other than the current one are superseded copies of ours."""
    for candidate in candidates:
        if candidate.id != keep:
            out.delete(candidate, reason, relpath)
    if intent is not None:
        out.cleared_intents.append(relpath)


def _size_matches(remote: RemoteFile, size: int) -> bool:
    return remote.size is None or remote.size == size


def _not_older_than(remote: RemoteFile, local: LocalFile) -> bool:
    """Whether ``remote`` was uploaded after the local file last changed.

    The ctime counts too: an edit that puts the mtime back (``cp -p``, ``touch -r``,
    some editors) still moves it, so a same-size edit is never taken for the old file.
    """
    if remote.created_at is None:
        return True
    changed_ns = max(local.mtime_ns, local.ctime_ns)
    return remote.created_at + ADOPT_CLOCK_SLACK_S >= changed_ns // 1_000_000_000
