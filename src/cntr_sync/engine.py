"""One reconcile pass: container -> scan -> list -> plan -> brakes -> apply -> record.

The one-shot command runs one pass; the daemon runs the same pass again and
again; push, pull and both are the same pass with another plan. Between
listings the daemon runs incremental passes: the paths its events named are
scanned, planned against the index (trusted as the container's state since the
last clean full pass) and applied, with no listing; anything that casts doubt
on the index (a failure, an open upload or delete, an ignore file changed, a
container replaced) makes the next pass a full one. A remote poll reads only
the head of the listing (``remote_poll``) and plans the new files the same
incremental way, within ``full_listing_interval`` of the last full listing;
when to list in full is decided here. Owns the order
of steps and the rules that keep data safe: nothing is deleted, on either
side, unless the listing was complete and the brakes agree; an expired
container is replaced and refilled (``containers`` finds, creates and
replaces it; this module decides when). ``apply`` carries the plan out and
records each outcome in the index as it arrives.

Must not: talk HTTP except through ``ContainersClient``, touch SQLite except
through ``Index``, decide what to do (``plan`` and ``pull`` decide), find,
create or replace a container itself (``containers`` does), or touch files
other than through ``local_side`` (the root, the scan, what is kept beside the
tree) and ``transfer``. Clocks are injected: ``clock``
(wall time, seconds) for what is compared with file times and stored,
``monotonic`` for durations and the pass's deadline. A single transfer's
``request_deadline`` runs on the real monotonic clock, as its socket does.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from cntr_sync import conflict_copies
from cntr_sync.actions import Plan
from cntr_sync.api import ContainersClient
from cntr_sync.apply import Applier
from cntr_sync.backups import PassBackups
from cntr_sync.brakes import check_brakes
from cntr_sync.containers import ContainerResolver
from cntr_sync.entry_table import EntryTable
from cntr_sync.errors import (
    ContainerExpiredError,
    LocalError,
    NotFoundError,
    SafetyBrakeError,
)
from cntr_sync.hashing import no_tick
from cntr_sync.index import Index
from cntr_sync.journal import Journal, JournalEntry, new_pass_id
from cntr_sync.listing import Listing
from cntr_sync.local_side import LocalSide
from cntr_sync.logs import get_logger
from cntr_sync.models import Container, IndexEntry, Pair, RemoteFile
from cntr_sync.names import as_listed
from cntr_sync.plan import plan
from cntr_sync.plan_inputs import Policy
from cntr_sync.quick_listing import Mark
from cntr_sync.remote_paths import FileSystemTraits, TakenNames, copy_side, printable
from cntr_sync.remote_poll import QuickPoll, read_news
from cntr_sync.result import ActionFailure, ConflictCopy, NoProgress, PassResult, Progress
from cntr_sync.scan import Snapshot
from cntr_sync.transfer import Tick, remove_partials
from cntr_sync.tree_names import IGNORE_FILE

log = get_logger("cntr_sync.engine")


class _Planned(NamedTuple):
    """A full pass's plan, with what carrying it out needs besides."""

    container_id: str
    plan: Plan
    partials: tuple[str, ...]  # the scan's leftover partial files
    policy: Policy
    taken: TakenNames


class Engine:
    """Runs reconcile passes for one pair. Not thread-safe: one pass at a time."""

    def __init__(
        self,
        client: ContainersClient,
        index: Index,
        pair: Pair,
        *,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        progress: Progress | None = None,
        tick: Tick = no_tick,
        fs_traits: FileSystemTraits | None = None,
        transfer_executor: Executor | None = None,
    ) -> None:
        self.client = client
        self.index = index
        self.pair = pair
        self.concurrency = max(1, concurrency)
        # Shared with other pairs' passes (the daemon's); None: each pass has its own.
        self._transfer_executor = transfer_executor
        self._clock = clock
        self._monotonic = monotonic
        self.progress = progress  # as given: what a session keeps the engine by
        self._progress: Progress = progress or NoProgress()
        self._tick = tick
        self._cancel = threading.Event()
        self._containers = ContainerResolver(client, index, pair)
        self.local = LocalSide(pair, index, clock=clock, tick=tick, fs_traits=fs_traits)
        self._deadline: float | None = None
        # The container whose files the index mirrors exactly, as of the last clean
        # full pass; None: the next pass lists.
        self._trusted: str | None = None
        # Files in the tree as of the last pass (a full scan's count, kept up to date).
        self._tree_files = 0
        # The last file whose content a pass checked (``Policy.recheck_after``).
        self._rechecked: str | None = None
        # Where the last listing ended (``quick_listing.Mark``) and when the last full
        # one was (monotonic): a poll within full_listing_interval lists from there.
        self._mark: Mark | None = None
        self._next_mark: Mark | None = None  # the mark this pass leaves, if it ends clean
        self._listed_at: float | None = None
        # Hears each journal row as it is written (the daemon's event stream).
        self.journal_listener: Callable[[JournalEntry], None] | None = None

    # -- the pass -----------------------------------------------------------------

    def run_pass(
        self,
        *,
        dry_run: bool = False,
        force: bool = False,
        defer_unsettled: bool = False,
        keep_grown_uploads: bool = False,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
        paths: Collection[str] | None = None,
        poll: bool = False,
    ) -> PassResult:
        """One reconcile pass. Raises SafetyBrakeError, LocalError or fatal ApiErrors.

        ``poll`` (the daemon's remote poll): look at what is new in the container.
        Within ``full_listing_interval`` of the last full listing, with the index
        trusted, only the newest files are listed (``quick_listing``) and only the
        new ones planned, with ``paths`` if given (None here: no local change is
        known; the caller never polls when the whole tree may have changed);
        otherwise, or at any doubt, a full pass runs. A push pair's new files
        (the model's) take a full pass.

        ``paths`` (relpaths the file events named; a directory stands for all below
        it): when the index can be trusted, only they are scanned and nothing is
        listed (``result.listed`` is False); otherwise a full pass runs.

        ``defer_unsettled`` leaves files modified within the pair's quiet period
        to a later pass (the daemon's choice; a one-shot sync sends what it sees).
        ``keep_grown_uploads`` keeps an upload of a file appended to meanwhile (the
        file as it was when opened) rather than sending it again (overdue passes).
        ``deadline`` (seconds from now): no new action starts after it; the pass
        ends cut short (``cancelled``) and the next one carries on.
        A container that expires in the middle of the pass is replaced and the
        pass run once more, so one call ends with a filled container. Setting
        ``cancel`` stops it from starting further actions (in-flight ones finish).
        """
        self._cancel = cancel or threading.Event()
        started = self._monotonic()
        self._deadline = None if deadline is None else self._monotonic() + deadline
        requests_before = self.client.stats.by_operation()
        result = PassResult(dry_run=dry_run)
        trusted, self._trusted = self._trusted, None
        mark, self._mark = self._mark, None
        news: list[RemoteFile] = []
        quiet = False  # a quick poll found nothing to do
        if not dry_run and poll:
            # The quick poll decides what the pass covers: nothing, the new files
            # (and ``paths``), or, at any doubt, everything.
            quick = self._quick_poll(trusted, mark, paths)
            paths, news = (None, []) if quick is None else (quick.paths, quick.news)
            self._next_mark = None if quick is None else quick.head
            quiet = quick is not None and not paths
            if quiet:
                result.container_id, result.listed = trusted, False
        incremental = (
            not dry_run and paths is not None and self._incremental_allowed(trusted, paths)
        )
        try:
            try:
                done = quiet
                if incremental and paths is not None:
                    done = self._run_incremental(
                        result,
                        paths,
                        defer_unsettled=defer_unsettled,
                        keep_grown=keep_grown_uploads,
                        news=news,
                    )
                    if not done:  # the container changed under the index: list it
                        result = PassResult(dry_run=dry_run)
                if not done:
                    self._run(
                        result,
                        dry_run=dry_run,
                        force=force,
                        defer_unsettled=defer_unsettled,
                        keep_grown=keep_grown_uploads,
                    )
            except ContainerExpiredError:
                if (
                    dry_run
                    or result.container_id is None
                    or not self._containers.confirmed_gone(result.container_id)
                ):
                    raise
                log.warning("container expired during the pass; starting over")
                gone = Container(id=result.container_id, name=self.index.container_name or "")
                self._containers.replace(result, gone)
                retry = PassResult(dry_run=dry_run, container_created=result.container_created)
                retry.container_recreated = True
                retry.backups = list(result.backups)  # what the first attempt kept stays kept
                self._run(
                    retry,
                    dry_run=dry_run,
                    force=force,
                    defer_unsettled=defer_unsettled,
                    keep_grown=keep_grown_uploads,
                )
                result = retry
            if not dry_run and not result.failures and not result.cancelled:
                self._trusted = result.container_id
                # The mark this pass's listing left, else the last one's.
                self._mark = self._next_mark or mark
            if not dry_run and result.listed:
                self.local.upkeep()
        finally:
            self._next_mark = None
            self._settle_index()
            after = self.client.stats.by_operation()
            result.requests_by_operation = {
                op: n - requests_before.get(op, 0)
                for op, n in after.items()
                if n - requests_before.get(op, 0)
            }
            result.requests = sum(result.requests_by_operation.values())
            result.seconds = self._monotonic() - started
        return result

    def _run(
        self,
        result: PassResult,
        *,
        dry_run: bool,
        force: bool,
        defer_unsettled: bool,
        keep_grown: bool,
    ) -> None:
        planned = self._plan_full(
            result,
            dry_run=dry_run,
            force=force,
            defer_unsettled=defer_unsettled,
            keep_grown=keep_grown,
        )
        # The plan holds all that carrying it out needs (its actions share the scan's
        # and the listing's strings): the scan and the listing, local to
        # ``_plan_full``, are gone before the actions run, and their memory serves
        # the pass's own (a cold push of 100,000 files: a LocalFile, a dict slot and
        # a stat's ints each, ~10 MiB).
        if planned is not None:
            self._carry_out(
                planned.plan,
                result,
                planned.container_id,
                planned.partials,
                policy=planned.policy,
                taken=planned.taken,
                keep_grown=keep_grown,
            )

    def _plan_full(
        self,
        result: PassResult,
        *,
        dry_run: bool,
        force: bool,
        defer_unsettled: bool,
        keep_grown: bool,
    ) -> _Planned | None:
        """Scan, list and plan; the brakes. None when nothing is to be carried out
        (a dry run, or no container)."""
        self.local.check_root(force=force)
        container = self._containers.resolve(result, dry_run=dry_run)
        # The listing pages while the tree is scanned: one waits on the network, the
        # other on the disk, so a pass costs about the longer of the two, not the sum.
        # Leaving the block waits for the listing, whatever the scan raised.
        odd_files: list[str] = []  # the listing's warnings, added once it is complete
        with ThreadPoolExecutor(1, thread_name_prefix="cntr-sync-list") as lister:
            # A container created a moment ago is empty: no need to list it.
            listing = (
                lister.submit(self._list, container.id, odd_files)
                if container is not None and not result.container_created
                else None
            )
            snapshot = self.local.scan(dry_run=dry_run, accept_growth=keep_grown)
            if not dry_run:
                self.local.prune_hash_cache(snapshot)
            local, unsettled = self.local.settled(snapshot, defer_unsettled=defer_unsettled)
            result.local_files = len(snapshot.files)
            self._tree_files = len(snapshot.files)
            _note_scan(result, snapshot, unsettled)

        remote = Listing()
        if container is not None and listing is not None:
            try:
                remote = listing.result()
            except (ContainerExpiredError, NotFoundError):
                if not self._containers.confirmed_gone(container.id):
                    raise
                if dry_run:
                    # A real pass would start a new, empty container.
                    container = None
                    result.container_recreated = True
                else:
                    container = self._containers.replace(result, container)
                    # Same rule as above: a container created just now is empty.
                    if not result.container_created:
                        remote = self._list(container.id, odd_files)
        result.warnings.extend(odd_files)
        if container is not None and not dry_run:
            self._next_mark = Mark.of(remote.created_times())
            self._listed_at = self._monotonic()

        policy = self._policy(dry_run=dry_run)
        known = container is not None
        copies = self.local.conflict_copies(snapshot, dry_run=dry_run)
        result.open_conflicts = [
            ConflictCopy(original, copy, copy_side(copy))
            for copy, original in sorted(copies.items())
        ]
        pass_plan = plan(
            local,
            self.index.entry_table(local, remote) if known else EntryTable(),
            remote.by_id(),
            intents=self.index.intents() if known else {},
            pending_deletes=self.index.pending_deletes() if known else [],
            policy=policy,
            uncertain=lambda relpath: relpath in unsettled or snapshot.is_uncertain(relpath),
            failures=self.index.pull_failures() if known else {},
            ignored=self.local.ignored_path,
            conflict_copies=copies,
        )
        result.plan = pass_plan
        result.unknown_kept = pass_plan.unknown_kept
        result.conflicts = pass_plan.conflicts
        result.warnings.extend(f"{path}: not pulled: {why}" for path, why in pass_plan.refused)
        result.failures.extend(
            ActionFailure("download", relpath, f"{error}; waiting to retry")
            for relpath, error in pass_plan.waiting
        )
        brake = check_brakes(pass_plan, local_count=len(snapshot.files), policy=policy, force=force)
        if brake is not None:
            raise SafetyBrakeError(brake.reason, would_delete=brake.would_delete)
        if dry_run or container is None:
            return None
        if pass_plan.rechecks:
            self._rechecked = pass_plan.rechecks[-1].relpath
        return _Planned(
            container.id,
            pass_plan,
            snapshot.partials,
            policy,
            self.local.taken_names(policy, local, pass_plan),
        )

    def _carry_out(
        self,
        pass_plan: Plan,
        result: PassResult,
        container_id: str,
        partials: tuple[str, ...],
        *,
        policy: Policy,
        taken: TakenNames,
        keep_grown: bool,
    ) -> None:
        """Apply a plan the brakes let through: leftovers (``partials``, the scan's
        leftover partial files), bookkeeping, then the actions."""
        if partials:
            remove_partials(self.pair.local, list(partials), self.local.partial_tag)
        started = self._clock()
        pass_journal = Journal(self.index, new_pass_id(started), self._clock, self.journal_listener)
        result.pass_id = pass_journal.pass_id
        self._record_bookkeeping(pass_plan, result, pass_journal)
        backups = PassBackups(self.local.backup_dir, started)
        try:
            Applier(
                self.client,
                self.index,
                self.pair,
                container_id,
                result,
                concurrency=self.concurrency,
                clock=self._clock,
                monotonic=self._monotonic,
                progress=self._progress,
                tick=self._tick,
                cancel=self._cancel,
                policy=policy,
                partial_tag=self.local.partial_tag,
                taken=taken,
                backups=backups,
                journal=pass_journal,
                keep_grown_uploads=keep_grown,
                deadline=self._deadline,
                executor=self._transfer_executor,
            ).run(pass_plan)
        finally:
            # Kept files are reported even when a fatal error (quota, an expired
            # container) ends the pass: they are in the backup folder either way.
            result.backups.extend(backups.kept)
            for version in backups.kept:
                pass_journal.record(
                    "backup", version.relpath, size=version.size, reason=version.folder
                )

    def _incremental_allowed(self, trusted: str | None, paths: Collection[str]) -> bool:
        """Whether a pass over ``paths`` alone, without a listing, is as right as a full one."""
        # Pull and both too: what the model writes is seen at the next listing (the
        # remote poll), as any remote change is; local changes need no listing.
        if trusted is None or trusted != self.index.container_id or self.local.rules is None:
            return False
        if not paths or any(not p or p.rpartition("/")[2] == IGNORE_FILE for p in paths):
            return False  # the root itself, or ignore rules changed: scan everything
        root = os.path.realpath(self.pair.local)
        for relpath in paths:
            parent = relpath.rpartition("/")[0]
            # Through a symlinked directory: where the full walk syncs it is its call.
            real = f"{root}/{parent}"
            if parent and os.path.realpath(real) != real:
                return False
        return not self.index.has_unfinished_work()

    def _run_incremental(
        self,
        result: PassResult,
        paths: Collection[str],
        *,
        defer_unsettled: bool,
        keep_grown: bool,
        news: Sequence[RemoteFile] = (),
    ) -> bool:
        """Scan ``paths``, plan them against their index entries, apply; no listing
        but a poll's ``news`` (the files new in the container, whose relpaths are
        among ``paths``).

        The index stands in for the listing: what this tool uploaded is there
        under the recorded ids. A remote change is seen at the next full pass.
        In ``both``, a remote file is deleted only once it has been seen unchanged
        (one retrieve each): the model may have rewritten it since the listing, and
        that version must come home as a conflict copy, not be lost. False, with
        nothing done, when one has changed: the caller runs a full pass.
        """
        self.local.check_root(force=False)
        container_id = self.index.container_id
        assert container_id is not None and self.local.rules is not None
        result.container_id = container_id
        result.listed = False
        snapshot = self.local.scan(dry_run=False, accept_growth=keep_grown, only=paths)
        self.index.hashes.flush()
        local, unsettled = self.local.settled(snapshot, defer_unsettled=defer_unsettled)
        entries = self.index.entries_under(paths)
        _note_scan(result, snapshot, unsettled)
        # No listing, so nothing to check the content of: that rides on full listings.
        policy = dataclasses.replace(self._policy(), recheck_count=0)
        # The remote side of these paths as the index records it: the pull side sees
        # no remote change (that is the listing's to find), so it brings nothing
        # home, and the push side carries the local changes as a full pass would.
        pass_plan = plan(
            local,
            EntryTable(entries.values()),
            Listing([*(as_listed(entry) for entry in entries.values()), *news]).by_id(),
            policy=policy,
            uncertain=lambda relpath: relpath in unsettled or snapshot.is_uncertain(relpath),
            failures=self.index.pull_failures(),
            ignored=self.local.ignored_path,
            conflict_copies=conflict_copies.made(self.index),
        )
        # The brakes weigh deletions against the whole tree, not the paths in hand:
        # counted exactly when something would be lost, else carried from the last
        # full scan (a count of 100,000 index rows costs ~18 ms a pass).
        if pass_plan.destructive:
            total = self.index.entry_count()
        else:
            total = max(0, self._tree_files + len(snapshot.files) - len(entries))
        self._tree_files = total
        result.local_files = total
        pass_plan = dataclasses.replace(pass_plan, tracked=total)
        result.plan = pass_plan
        brake = check_brakes(pass_plan, local_count=total, policy=policy)
        if brake is not None:
            raise SafetyBrakeError(brake.reason, would_delete=brake.would_delete)
        if self.pair.direction == "both" and not self._unchanged_remotely(
            container_id, pass_plan, entries
        ):
            return False
        self._carry_out(
            pass_plan,
            result,
            container_id,
            snapshot.partials,
            policy=policy,
            taken=self.local.taken_names(policy, local, pass_plan),
            keep_grown=keep_grown,
        )
        return True

    def _unchanged_remotely(
        self, container_id: str, pass_plan: Plan, entries: Mapping[str, IndexEntry]
    ) -> bool:
        """Whether every remote file ``pass_plan`` would delete is as the index records
        it: there, with the recorded ``bytes`` (what a listing would compare)."""
        to_delete = {upload.replaces for upload in pass_plan.uploads if upload.replaces}
        to_delete.update(delete.remote_id for delete in pass_plan.deletes)
        recorded = {entry.remote_id: as_listed(entry).size for entry in entries.values()}
        for remote_id in sorted(to_delete):
            try:
                seen = self.client.retrieve_file(container_id, remote_id)
            except NotFoundError:
                log.info("a file the index records is gone; listing", remote_id=remote_id)
                return False
            expected = recorded.get(remote_id)
            if seen.bytes is not None and expected is not None and seen.bytes != expected:
                log.info("a file changed in the container; listing", remote_id=remote_id)
                return False
        return True

    def _quick_poll(
        self, trusted: str | None, mark: Mark | None, paths: Collection[str] | None
    ) -> QuickPoll | None:
        """A poll's quick listing where it may stand in for a full one (``remote_poll``);
        None: a full pass must run (the index not trusted, a full listing due, a doubt)."""
        container_id, last = self.index.container_id, self._listed_at
        if (
            mark is None
            or trusted is None
            or trusted != container_id
            or last is None
            or self._monotonic() - last >= self.pair.full_listing_interval
            or self.local.rules is None
            or self.index.has_unfinished_work()
        ):
            return None
        push = self.pair.direction == "push"
        return read_news(
            self.client,
            self.index,
            trusted,
            mark,
            paths=paths,
            push=push,
            policy=self._policy,
            tick=self._tick,
        )

    def _settle_index(self) -> None:
        """Buffered hashes written, and the index back to its rollback journal if the
        pass wrote (``Index.settle``): the next pass that finds nothing to do writes
        nothing. Failing costs a re-hash or the next open's -shm: it fails no pass."""
        try:
            self.index.hashes.flush()
            self.index.settle()
        except LocalError as exc:
            log.warning("the index was not settled after the pass", error=exc.message)

    @property
    def backup_dir(self) -> Path:
        """Where this pair keeps the local files passes replaced or deleted."""
        return self.local.backup_dir

    def has_local_changes(self) -> bool:
        """Whether the tree differs from what the index recorded (``LocalSide``)."""
        return self.local.has_local_changes()

    def _policy(self, *, dry_run: bool = False) -> Policy:
        """This pass's policy: the pair's settings, what the index learnt of the
        server's names, the clock, and (pull and both) how the root compares names,
        which a dry run finds out without writing in the root."""
        traits = self.local.traits(dry_run=dry_run)
        return Policy.for_pair(
            self.pair,
            now=self._clock(),
            server_keeps_names=self.index.server_keeps_names,
            server_adds_prefix=self.index.server_adds_prefix,
            traits=traits,
            recheck_after=self._rechecked,
        )

    def _list(self, container_id: str, warnings: list[str]) -> Listing:
        """The complete listing; any failure propagates, so nothing is planned from half.
        A file whose fields are garbage is listed with them unknown, and named in
        ``warnings``."""
        listing = Listing()
        for item in self.client.iter_listed(container_id):
            self._tick()
            listing.add(item.id, item.path, item.bytes, item.source, item.created_at)
            warnings.extend(
                f"{printable(item.path or item.id)}: {problem}; taken as unknown"
                for problem in item.problems
            )
        return listing

    def _record_bookkeeping(self, pass_plan: Plan, result: PassResult, journal: Journal) -> None:
        if pass_plan.adopts:
            # One transaction, not two a file: rebuilding a lost index of 100,000 files
            # was 200,000 of them (~8 s). A crash loses the batch; the next listing
            # adopts again.
            self.index.begin_batch()
            try:
                for adopt in pass_plan.adopts:
                    entry = adopt.entry
                    self.index.adopt(entry)
                    journal.record("adopt", entry.relpath, size=entry.size, reason=adopt.reason)
            finally:
                self.index.end_batch()
        result.adopted = len(pass_plan.adopts)
        for entry in pass_plan.repoints:
            self.index.adopt(entry)
        for refresh in pass_plan.refreshes:
            self.index.refresh_stat(refresh.relpath, refresh.size, refresh.mtime_ns)
        for relpath in pass_plan.forgets:
            self.index.forget(relpath)
        for relpath in pass_plan.cleared_intents:
            self.index.clear_intent(relpath)
        for remote_id in pass_plan.obsolete_deletes:
            self.index.record_delete(remote_id)


def _note_scan(result: PassResult, snapshot: Snapshot, unsettled: set[str]) -> None:
    """What the scan tells the user: its warnings, and the files left for later."""
    result.warnings.extend(f"{w.relpath}: {w.reason}" for w in snapshot.warnings)
    result.deferred.extend(snapshot.unstable)
    result.deferred.extend(sorted(unsettled))


__all__ = ["Engine"]
