"""One reconcile pass: container -> scan -> list -> plan -> brakes -> execute -> record.

The one-shot command runs one pass; the daemon runs the same pass again and
again. Owns the order of steps and the rules that keep data safe: nothing is
deleted unless the listing was complete and the brakes agree; the index is
written after every finished action, on this (the calling) thread; an
expired container is replaced and refilled (``containers`` finds, creates
and replaces it; this module decides when).

Must not: talk HTTP except through ``ContainersClient``, touch SQLite except
through ``Index``, decide what to do (``plan`` decides), find, create or
replace a container itself (``containers`` does), or open files for upload
other than through ``transfer``. Clocks are injected: ``clock`` (wall time,
seconds) for what is compared with file times and stored, ``monotonic`` for
durations.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from cntr_sync.api import ContainersClient
from cntr_sync.containers import ContainerResolver
from cntr_sync.errors import (
    AuthenticationError,
    CntrSyncError,
    ContainerExpiredError,
    LocalError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    SafetyBrakeError,
)
from cntr_sync.hashcache import HashCache, ReadThroughCache
from cntr_sync.index import Index
from cntr_sync.models import (
    Container,
    IndexEntry,
    LocalFile,
    Pair,
    PendingDelete,
    RemoteFile,
    UploadIntent,
)
from cntr_sync.plan import (
    Delete,
    Plan,
    Policy,
    Upload,
    check_brakes,
    plan,
    remote_names,
    to_remote_file,
    upload_name,
)
from cntr_sync.scan import IgnoreRules, Snapshot, scan
from cntr_sync.transfer import (
    ChangedSinceScan,
    Expected,
    Tick,
    open_as_scanned,
    rehash_if_still,
)

log = structlog.get_logger("cntr_sync.engine")

# How often one file may change under its upload before this pass leaves it to the next.
MAX_CHANGED_RETRIES = 3
# Errors that end the whole pass: nothing else can succeed after them.
_FATAL = (AuthenticationError, PermissionDeniedError, ContainerExpiredError)


class Progress(Protocol):
    """Where a pass reports transfers as they happen (a progress bar, or nothing)."""

    def start(self, files: int, total_bytes: int) -> None: ...

    def advance(self, files: int, transferred_bytes: int) -> None: ...


class _NoProgress:
    def start(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, files: int, transferred_bytes: int) -> None:
        pass


def _no_tick() -> None:
    pass


@dataclass(frozen=True)
class ActionFailure:
    """One action that failed after retries; the next pass tries again."""

    action: str
    target: str
    message: str


@dataclass
class PassResult:
    container_id: str | None = None
    container_created: bool = False
    container_recreated: bool = False
    uploaded: int = 0
    replaced: int = 0
    deleted: int = 0
    adopted: int = 0
    bytes_uploaded: int = 0
    unknown_kept: int = 0
    local_files: int = 0
    failures: list[ActionFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    requests: int = 0
    requests_by_operation: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False
    cancelled: bool = False
    plan: Plan | None = None

    @property
    def in_sync(self) -> bool:
        return not self.failures and not self.deferred and not self.cancelled


@dataclass(frozen=True)
class _Uploaded:
    """What a finished upload returns to the main thread."""

    action: Upload
    remote: RemoteFile
    stat: os.stat_result
    changed_meanwhile: bool


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
        tick: Tick = _no_tick,
    ) -> None:
        self.client = client
        self.index = index
        self.pair = pair
        self.concurrency = max(1, concurrency)
        self._clock = clock
        self._monotonic = monotonic
        self._progress: Progress = progress or _NoProgress()
        self._tick = tick
        self._cancel = threading.Event()
        self._containers = ContainerResolver(client, index, pair)

    # -- the pass -----------------------------------------------------------------

    def run_pass(
        self,
        *,
        dry_run: bool = False,
        force: bool = False,
        defer_unsettled: bool = False,
        cancel: threading.Event | None = None,
    ) -> PassResult:
        """One reconcile pass. Raises SafetyBrakeError, LocalError or fatal ApiErrors.

        ``defer_unsettled`` leaves files modified within the pair's quiet period
        to a later pass (the daemon's choice; a one-shot sync sends what it sees).
        A container that expires in the middle of the pass is replaced and the
        pass run once more, so one call ends with a filled container. Setting
        ``cancel`` stops it from starting further actions (in-flight ones finish).
        """
        self._cancel = cancel or threading.Event()
        started = self._monotonic()
        requests_before = self.client.stats.by_operation()
        result = PassResult(dry_run=dry_run)
        try:
            try:
                self._run(result, dry_run=dry_run, force=force, defer_unsettled=defer_unsettled)
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
                self._run(retry, dry_run=dry_run, force=force, defer_unsettled=defer_unsettled)
                result = retry
        finally:
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
        self, result: PassResult, *, dry_run: bool, force: bool, defer_unsettled: bool
    ) -> None:
        self._check_root(force=force)
        container = self._containers.resolve(result, dry_run=dry_run)
        snapshot = self._scan(dry_run=dry_run)
        local, unsettled = self._settled(snapshot, defer_unsettled=defer_unsettled)
        result.local_files = len(snapshot.files)
        result.warnings.extend(f"{w.relpath}: {w.reason}" for w in snapshot.warnings)
        result.deferred.extend(snapshot.unstable)
        result.deferred.extend(sorted(unsettled))

        remote: list[RemoteFile] = []
        # A container created a moment ago is empty: no need to list it.
        if container is not None and not result.container_created:
            try:
                remote = self._list(container.id)
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
                        remote = self._list(container.id)

        policy = Policy(
            delete=self.pair.delete,
            delete_unknown=self.pair.delete_unknown,
            max_delete_percent=self.pair.max_delete,
            server_keeps_names=self.index.server_keeps_names,
            now=self._clock(),
        )
        known = container is not None
        pass_plan = plan(
            local,
            self.index.entries() if known else {},
            remote,
            intents=self.index.intents() if known else {},
            pending_deletes=self.index.pending_deletes() if known else [],
            policy=policy,
            uncertain=lambda relpath: relpath in unsettled or snapshot.is_uncertain(relpath),
        )
        result.plan = pass_plan
        result.unknown_kept = pass_plan.unknown_kept
        brake = check_brakes(pass_plan, local_count=len(snapshot.files), policy=policy, force=force)
        if brake is not None:
            raise SafetyBrakeError(brake.reason)
        if dry_run or container is None:
            return
        self._record_bookkeeping(pass_plan, result)
        self._execute(container.id, pass_plan, result)

    # -- steps ----------------------------------------------------------------------

    def _check_root(self, *, force: bool) -> None:
        root = self.pair.local
        if root.is_dir():
            return
        tracked = self.index.entry_count()
        if tracked and not force:
            raise SafetyBrakeError(
                f"sync root {root} is missing but {tracked} files are tracked; "
                "refusing to touch the container (is a disk unmounted?)"
            )
        raise LocalError(f"sync root {root} does not exist or is not a directory", path=str(root))

    def _settled(
        self, snapshot: Snapshot, *, defer_unsettled: bool
    ) -> tuple[dict[str, LocalFile], set[str]]:
        """The files to sync now, and the unsettled ones (modified within the quiet period)."""
        if not defer_unsettled or self.pair.quiet_period <= 0:
            return snapshot.files, set()
        cutoff = int((self._clock() - self.pair.quiet_period) * 1e9)
        unsettled = {r for r, f in snapshot.files.items() if f.mtime_ns > cutoff}
        if not unsettled:
            return snapshot.files, unsettled
        return {r: f for r, f in snapshot.files.items() if r not in unsettled}, unsettled

    def has_local_changes(self) -> bool:
        """Whether the tree differs from what the index recorded; no API calls.

        The daemon's periodic rescan uses this to catch missed events without
        touching (and so keeping alive) an idle container.
        """
        if not self.pair.local.is_dir():
            return bool(self.index.entry_count())
        snapshot = self._scan(dry_run=False)
        entries = self.index.entries()
        if snapshot.unstable or self.index.intents() or self.index.pending_deletes():
            return True
        for relpath, local_file in snapshot.files.items():
            entry = entries.get(relpath)
            if entry is None or entry.hash != local_file.hash:
                return True
        return any(
            relpath not in snapshot.files and not snapshot.is_uncertain(relpath)
            for relpath in entries
        )

    def _scan(self, *, dry_run: bool) -> Snapshot:
        rules = IgnoreRules.load(self.pair.local, self.pair.ignore)
        # A dry run reads the hash cache but writes nothing.
        cache: HashCache = ReadThroughCache(self.index.hashes) if dry_run else self.index.hashes
        return scan(
            self.pair.local,
            rules=rules,
            hash_cache=cache,
            follow_symlinks=self.pair.follow_symlinks,
            now_ns=lambda: int(self._clock() * 1e9),
            tick=self._tick,
        )

    def _list(self, container_id: str) -> list[RemoteFile]:
        """The complete listing; any failure propagates, so nothing is planned from half."""
        listing = []
        for item in self.client.iter_files(container_id):
            self._tick()
            listing.append(
                to_remote_file(item.id, item.path, item.bytes, item.source, item.created_at)
            )
        return listing

    def _record_bookkeeping(self, pass_plan: Plan, result: PassResult) -> None:
        for adopt in pass_plan.adopts:
            self.index.adopt(adopt.entry)
        result.adopted = len(pass_plan.adopts)
        for refresh in pass_plan.refreshes:
            self.index.refresh_stat(refresh.relpath, refresh.size, refresh.mtime_ns)
        for relpath in pass_plan.forgets:
            self.index.forget(relpath)
        for relpath in pass_plan.cleared_intents:
            self.index.clear_intent(relpath)
        for remote_id in pass_plan.obsolete_deletes:
            self.index.record_delete(remote_id)

    # -- execution --------------------------------------------------------------------

    def _execute(self, container_id: str, pass_plan: Plan, result: PassResult) -> None:
        self._progress.start(pass_plan.transfers, pass_plan.upload_bytes)
        retries: dict[str, int] = {}
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="cntr-sync") as pool:
            running: dict[Future[object], Upload | Delete] = {}
            queue: list[Upload | Delete] = [*pass_plan.uploads, *pass_plan.deletes]
            queue.reverse()
            try:
                while queue or running:
                    while queue and len(running) < self.concurrency and not self._cancel.is_set():
                        action = queue.pop()
                        running[self._submit(pool, container_id, action)] = action
                    if not running:
                        result.cancelled = True
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        action = running.pop(future)
                        self._tick()
                        queue.extend(self._finish(action, future, retries, result))
            except _FATAL:
                for future in running:
                    future.cancel()
                raise

    def _submit(
        self, pool: ThreadPoolExecutor, container_id: str, action: Upload | Delete
    ) -> Future[object]:
        if isinstance(action, Upload):
            # Written before the request: if the answer is lost, the next
            # listing can tell this upload from a stranger's.
            self.index.add_intent(
                UploadIntent(
                    relpath=action.relpath,
                    filename=upload_name(action.relpath),
                    size=action.size,
                    hash=action.hash,
                    started_at=self._clock(),
                )
            )
            return pool.submit(self._upload, container_id, action)
        return pool.submit(self.client.delete_file, container_id, action.remote_id)

    def _upload(self, container_id: str, action: Upload) -> _Uploaded:
        """Upload the very file the scan saw, from one open descriptor (worker thread)."""
        handle, before = open_as_scanned(
            self.pair.local / action.relpath,
            Expected(action.size, action.mtime_ns, action.inode),
            follow_symlinks=self.pair.follow_symlinks,
            tick=self._tick,
        )
        with handle:
            created = self.client.create_file(
                container_id, handle, filename=upload_name(action.relpath)
            )
            after = os.fstat(handle.fileno())
        remote = to_remote_file(
            created.id, created.path, created.bytes, created.source, created.created_at
        )
        changed = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
        return _Uploaded(action, remote, after, changed_meanwhile=changed)

    # -- outcomes: one handler each, all on the calling thread --------------------------

    def _finish(
        self,
        action: Upload | Delete,
        future: Future[object],
        retries: dict[str, int],
        result: PassResult,
    ) -> Iterator[Upload | Delete]:
        """Record one finished action; yield follow-up actions (old ids, retries)."""
        try:
            outcome = future.result()
        except _FATAL:
            raise
        except OutcomeUnknownError as exc:
            self._on_outcome_unknown(exc, result)
        except ChangedSinceScan:
            assert isinstance(action, Upload)
            yield from self._on_changed_before_upload(action, retries, result)
        except (CntrSyncError, OSError) as exc:
            self._on_failed(action, exc, result)
        else:
            if isinstance(outcome, _Uploaded):
                if outcome.changed_meanwhile:
                    yield from self._on_changed_during_upload(outcome, retries, result)
                else:
                    yield from self._on_uploaded(outcome, result)
            else:
                assert isinstance(action, Delete)
                self._on_deleted(action, result)

    def _on_outcome_unknown(self, exc: OutcomeUnknownError, result: PassResult) -> None:
        # The intent stays: the next pass's listing adopts or removes the file.
        result.failures.append(ActionFailure("upload", exc.filename, exc.message))

    def _on_changed_before_upload(
        self, action: Upload, retries: dict[str, int], result: PassResult
    ) -> Iterator[Upload]:
        # Nothing was sent: hash the file again (or leave it to the next pass).
        self.index.clear_intent(action.relpath)
        yield from self._retry_changed(action, retries, result)

    def _on_failed(self, action: Upload | Delete, exc: Exception, result: PassResult) -> None:
        message = exc.message if isinstance(exc, CntrSyncError) else _os_message(exc)
        if isinstance(action, Upload):
            result.failures.append(ActionFailure("upload", action.relpath, message))
        else:
            target = action.relpath or action.path
            result.failures.append(ActionFailure("delete", target or "", message))

    def _on_deleted(self, action: Delete, result: PassResult) -> None:
        self.index.record_delete(action.remote_id)
        # The old id of a replaced file is part of its replace, not a deletion.
        if action.reason != "replaced":
            result.deleted += 1
            self._progress.advance(1, 0)

    def _on_changed_during_upload(
        self, done: _Uploaded, retries: dict[str, int], result: PassResult
    ) -> Iterator[Upload | Delete]:
        # What arrived may be a mix of old and new bytes: drop it, upload again.
        action = done.action
        self._learn_whether_names_are_kept(action, done.remote)
        self.index.add_pending_delete(PendingDelete(done.remote.id, action.relpath))
        self.index.clear_intent(action.relpath)
        yield Delete(done.remote.id, done.remote.path, "stale-upload", action.relpath)
        yield from self._retry_changed(action, retries, result)

    def _on_uploaded(self, done: _Uploaded, result: PassResult) -> Iterator[Delete]:
        action = done.action
        self._learn_whether_names_are_kept(action, done.remote)
        entry = IndexEntry(
            relpath=action.relpath,
            remote_id=done.remote.id,
            remote_path=done.remote.path,
            size=done.stat.st_size,
            mtime_ns=done.stat.st_mtime_ns,
            hash=action.hash,
            uploaded_at=self._clock(),
        )
        old = PendingDelete(action.replaces, action.relpath) if action.replaces else None
        self.index.record_upload(entry, pending_delete=old)
        result.bytes_uploaded += action.size
        if action.replaces:
            result.replaced += 1
            yield Delete(action.replaces, "", "replaced", action.relpath)
        else:
            result.uploaded += 1
        self._progress.advance(1, action.size)

    def _retry_changed(
        self, action: Upload, retries: dict[str, int], result: PassResult
    ) -> Iterator[Upload]:
        """The file changed under its upload: hash it again and retry, if it holds still."""
        count = retries.get(action.relpath, 0) + 1
        retries[action.relpath] = count
        rehashed = None
        if count <= MAX_CHANGED_RETRIES:
            rehashed = rehash_if_still(
                self.pair.local / action.relpath,
                self.pair.local,
                follow_symlinks=self.pair.follow_symlinks,
            )
        if rehashed is None:
            result.deferred.append(action.relpath)
            return
        yield Upload(
            action.relpath,
            rehashed.size,
            rehashed.mtime_ns,
            rehashed.hash,
            action.reason,
            action.replaces,
            inode=rehashed.inode,
        )

    def _learn_whether_names_are_kept(self, action: Upload, remote: RemoteFile) -> None:
        """Whether the server keeps upload names; one that did not is enough to stop
        trusting names for good (a server keeping only some, say the last path
        segment, must not have its names matched)."""
        kept = upload_name(action.relpath) in remote_names(remote.path)
        known = self.index.server_keeps_names
        if known is None or (known and not kept):
            self.index.set_server_keeps_names(kept)


def _os_message(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".strip(": ")
    return str(exc)


__all__ = ["ActionFailure", "Engine", "PassResult", "Progress"]
