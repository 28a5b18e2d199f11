"""Carrying out a plan: the actions of one pass, in a bounded pool, recorded one by one.

Owns the order and the bookkeeping of execution. Local actions (downloads,
compares, local deletes) run first and finish before any remote action
starts, so an upload never replaces a remote version a conflict copy is still
saving (and does not start at all when that copy failed). Then uploads and
remote deletes run, with their follow-ups (an old id after a replace, a file
that changed under its upload). Each outcome is recorded in the index on the
calling thread as it arrives, by one handler per kind of outcome (``outcomes``).

Must not: decide what to do (the planners do; a ``Compare`` that finds
different content asks ``pull.resolve_unrelated``), talk HTTP except through
``ContainersClient``, touch files except through ``transfer``, or touch
SQLite except through ``Index``.

The pool is the pass's own, or one the caller shares between passes (the
daemon's, ``transfer_executor``): this one never shuts a shared pool down, and
returns only once every action it handed over has finished, in either case.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from queue import Empty, SimpleQueue
from typing import Any

from cntr_sync.actions import (
    Compare,
    Delete,
    Download,
    Plan,
    Recheck,
    Upload,
    Verify,
)
from cntr_sync.api import ContainersClient
from cntr_sync.backups import PassBackups
from cntr_sync.errors import (
    CntrSyncError,
)
from cntr_sync.index import Index
from cntr_sync.journal import Journal
from cntr_sync.models import (
    LocalFile,
    Pair,
    RemoteFile,
    UploadIntent,
)
from cntr_sync.names import to_remote_file, upload_name
from cntr_sync.outcomes import (
    FATAL,
    Action,
    Compared,
    NotStarted,
    OutcomeRecorder,
    Rechecked,
    Uploaded,
    Verified,
)
from cntr_sync.pacing import MAX_NAP
from cntr_sync.plan_inputs import Policy
from cntr_sync.remote_paths import TakenNames
from cntr_sync.rest import ByteSink
from cntr_sync.result import PassResult, Progress
from cntr_sync.transfer import (
    ChangedSinceScan,
    DownloadProblem,
    Tick,
    delete_local,
    hash_download,
    open_as_scanned,
    write_download,
)

# Outcomes are recorded in one transaction per this many, or per this long (the
# profile of a 2,000-file push: 12 SQLite statements and 2 commits per upload on
# the dispatching thread, 1.9 s of its 10 s).
RECORD_BATCH = 64
RECORD_SECONDS = 0.5
# Upload intents written in one transaction, ahead of the uploads they announce.
INTENTS_AHEAD = 64
# Actions handed to the pool beyond one per thread, so that a thread that finishes
# one starts the next at once instead of waiting for this thread to record the
# outcome and hand it another (in a 2,000-file push with 8 threads, each waited
# 2.6 ms on average between uploads, 7 % of an upload's 39 ms).
SUBMIT_AHEAD = 8
# The threads that carry out actions (a pass's own pool's, or the daemon's shared one).
TRANSFER_THREAD_PREFIX = "cntr-sync-transfer"


def transfer_pool(concurrency: int) -> ThreadPoolExecutor:
    """A pool for the actions of passes: ``concurrency`` threads."""
    return ThreadPoolExecutor(concurrency, thread_name_prefix=TRANSFER_THREAD_PREFIX)


class Applier(OutcomeRecorder):
    """Runs one plan for one pass; construct it per pass."""

    def __init__(
        self,
        client: ContainersClient,
        index: Index,
        pair: Pair,
        container_id: str,
        result: PassResult,
        *,
        concurrency: int,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        progress: Progress,
        tick: Tick,
        cancel: threading.Event,
        policy: Policy,
        partial_tag: str,
        taken: TakenNames,
        backups: PassBackups,
        journal: Journal,
        keep_grown_uploads: bool = False,
        deadline: float | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``keep_grown_uploads``: a file appended to while it was sent keeps the upload
        (the file as it was when opened) instead of being sent again; the daemon's
        overdue passes use it, so a file that never stops growing is still mirrored.
        ``executor``: the pool to run actions on, shared with other passes (the
        caller shuts it down); by default a pool of ``concurrency`` threads of its own.
        Either way at most ``concurrency + SUBMIT_AHEAD`` of this pass's actions are
        handed over at a time."""
        self.client = client
        self.index = index
        self.pair = pair
        self.container_id = container_id
        self.result = result
        self.concurrency = concurrency
        self._clock = clock
        self._monotonic = monotonic
        self._progress = progress
        self._tick = tick
        self._cancel = cancel
        self._policy = policy
        self._partial_tag = partial_tag
        # Names in use under the root, for conflict copies decided at run time.
        self._taken = taken
        # Local files a download replaces or a remote deletion removes are kept there.
        self._keep = backups.keep
        self._pass_journal = journal
        self._retries: dict[str, int] = {}
        # Relpaths not to upload this pass: a conflict copy of theirs failed.
        self._blocked: set[str] = set()
        self._remote_queue: list[Action] = []
        self._keep_grown = keep_grown_uploads
        # Monotonic time after which no new action starts (the daemon's pass deadline).
        self._deadline = deadline
        self._executor = executor
        self._lock = threading.Lock()
        # This pass's actions on a thread now (the rest handed over wait for one).
        self._working = 0
        # Content hashes of remote files downloaded to verify a match, once a pass.
        self._remote_hashes: dict[str, str] = {}
        self._hash_locks: dict[str, threading.Lock] = {}
        self._verified_ids: set[str] = set()
        # Relpaths whose upload intent is on disk (written ahead, a window at a time).
        self._intended: set[str] = set()
        # What the index says of the server's names (keeps them, adds a prefix), once read.
        self._server_names: tuple[bool | None, bool | None] | None = None

    def run(self, plan: Plan) -> None:
        self._progress.start(plan.transfers, plan.upload_bytes + plan.download_bytes)
        self._remote_queue = [*plan.uploads, *plan.deletes]
        self._run_phase(list(plan.local_actions))
        if self.result.cancelled:
            return
        # The remote actions' one list becomes the queue (a cold push of 100,000
        # files: 0.8 MB a list of them, and there used to be three).
        remote, self._remote_queue = self._remote_queue, []
        if self._blocked:
            remote = [
                action
                for action in remote
                if not (isinstance(action, Upload) and action.relpath in self._blocked)
            ]
        self._run_phase(remote)

    def _run_phase(self, queue: list[Action]) -> None:
        """Run the actions of ``queue`` (its own: it is reversed and emptied) in the pool;
        outcomes are recorded in batched transactions.

        A batch is committed every ``RECORD_BATCH`` outcomes or ``RECORD_SECONDS``,
        and before any intent is written: a crash loses at most that much of the
        record, which the next listing rebuilds (the intents are on disk).
        """
        queue.reverse()  # taken from the end, in order
        self.index.begin_batch()
        try:
            self._run_queue(queue)
        except BaseException:
            with contextlib.suppress(CntrSyncError):  # the first error is the one to tell
                self.index.end_batch()
            raise
        self.index.end_batch()

    def _run_queue(self, queue: list[Action]) -> None:
        if self._executor is not None:
            self._dispatch(self._executor, queue)
            return
        with transfer_pool(self.concurrency) as pool:
            self._dispatch(pool, queue)

    def _dispatch(self, pool: Executor, queue: list[Action]) -> None:
        """Hand ``queue``'s actions to ``pool``, some ahead of its threads; record each
        outcome as it arrives, in the order they finish, and queue its follow-ups.

        Returns only once every action handed over has finished (a fatal error
        first cancels those no thread has taken): the pool may be shared and
        outlive the pass, whose index and files its threads use."""
        finished: SimpleQueue[Future[object]] = SimpleQueue()
        running: dict[Future[object], Action] = {}
        recorded, since = 0, self._monotonic()
        try:
            while queue or running:
                while (
                    queue
                    and len(running) < self.concurrency + SUBMIT_AHEAD
                    and not self._stopping()
                ):
                    action = queue.pop()
                    if isinstance(action, Upload) and action.relpath not in self._intended:
                        self._intend(action, queue)
                    future = self._submit(pool, action)
                    running[future] = action
                    future.add_done_callback(finished.put)
                if not running:
                    self.result.cancelled = True
                    break
                done = [self._next_finished(finished)]
                with contextlib.suppress(Empty):
                    while True:
                        done.append(finished.get_nowait())
                for future in done:
                    action = running.pop(future)
                    self._tick()
                    queue.extend(reversed(list(self._finish(action, future))))
                recorded += len(done)
                if recorded >= RECORD_BATCH or self._monotonic() - since >= RECORD_SECONDS:
                    self.index.end_batch()
                    self.index.begin_batch()
                    recorded, since = 0, self._monotonic()
        except FATAL:
            for future in running:
                future.cancel()
            raise
        finally:
            wait(running)

    def _next_finished(self, finished: SimpleQueue[Future[object]]) -> Future[object]:
        """The next of this pass's actions to finish.

        While every one handed over waits for a thread (a shared pool busy with
        other passes' transfers), the wait is progress, as a wait in the pacer is:
        a pass in line is not hung. Its actions on a thread tick for themselves."""
        while True:
            try:
                return finished.get(timeout=MAX_NAP)
            except Empty:
                if not self._working:
                    self._tick()

    def _intend(self, first: Upload, queue: list[Action]) -> None:
        """Write the intents of ``first`` and the next uploads in ``queue`` in one go.

        Written before any of them is sent: if the answer is lost, the next
        listing can tell these uploads from a stranger's. An intent of an upload
        never sent costs nothing (the listing shows no such file; it is dropped).
        """
        window = [first]
        for action in reversed(queue):
            if len(window) >= INTENTS_AHEAD:
                break
            if isinstance(action, Upload) and action.relpath not in self._intended:
                window.append(action)
        now = self._clock()
        self.index.add_intents(
            UploadIntent(
                relpath=action.relpath,
                filename=upload_name(action.relpath),
                size=action.size,
                hash=action.hash,
                started_at=now,
            )
            for action in window
        )
        self._intended.update(action.relpath for action in window)

    def _stopping(self) -> bool:
        if self._cancel.is_set():
            return True
        return self._deadline is not None and self._monotonic() > self._deadline

    # -- submitting (this thread) and working (pool threads) --------------------------------

    def _submit(self, pool: Executor, action: Action) -> Future[object]:
        if isinstance(action, Upload):
            # Its intent is on disk (``_intend``) before this request leaves.
            return self._start(pool, self._upload, action)
        if isinstance(action, Delete):
            return self._start(pool, self.client.delete_file, self.container_id, action.remote_id)
        if isinstance(action, Download):
            return self._start(pool, self._download, action)
        if isinstance(action, Compare):
            return self._start(pool, self._compare, action)
        if isinstance(action, Verify):
            return self._start(pool, self._verify, action)
        if isinstance(action, Recheck):
            return self._start(pool, self._recheck, action)
        return self._start(
            pool, delete_local, self._root, action.relpath, action.expect, self._keep
        )

    def _start(self, pool: Executor, work: Callable[..., object], *args: Any) -> Future[object]:
        """``work(*args)`` in the pool; ``NotStarted`` instead if the pass is stopping
        by the time a thread takes it (it may wait behind the running ones, or behind
        other passes' in a shared pool)."""

        def unless_stopping() -> object:
            if self._stopping():
                raise NotStarted
            with self._lock:
                self._working += 1
            try:
                return work(*args)
            finally:
                with self._lock:
                    self._working -= 1

        return pool.submit(unless_stopping)

    def _upload(self, action: Upload) -> Uploaded:
        """Upload the very file the scan saw, from one open descriptor."""
        handle, before = open_as_scanned(
            self._root / action.relpath,
            action,
            follow_symlinks=self.pair.follow_symlinks,
            tick=self._tick,
            allow_growth=self._keep_grown,
            deadline=_deadline_after(self.client.request_deadline),
        )
        with handle:
            try:
                created = self.client.create_file(
                    self.container_id, handle, filename=upload_name(action.relpath)
                )
            except CntrSyncError as exc:
                if handle.truncated:
                    # Cut shorter while it was sent: the body ended before its
                    # declared length, so nothing was stored. Read it again.
                    raise ChangedSinceScan(action.relpath) from exc
                raise
            after = handle.stat()
        remote = to_remote_file(
            created.id, created.path, created.bytes, created.source, created.created_at
        )
        changed = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
        return Uploaded(action, remote, before, after, changed_meanwhile=changed)

    def _fetch(self, remote_id: str) -> Callable[[ByteSink], int]:
        def fetch(sink: ByteSink) -> int:
            return self.client.download_file(self.container_id, remote_id, sink)

        return fetch

    def _download(self, action: Download) -> LocalFile:
        remote = action.remote
        return write_download(
            self._root,
            action.relpath,
            self._fetch(remote.id),
            expected_size=remote.size,
            expect=action.expect,
            move_aside_to=action.move_aside_to,
            mtime=_file_time(action),
            partial_tag=self._partial_tag,
            tick=self._tick,
            keep=self._keep,
        )

    def _compare(self, action: Compare) -> Compared:
        digest = hash_download(
            self._fetch(action.remote.id), expected_size=action.remote.size, tick=self._tick
        )
        return Compared(action, digest)

    def _recheck(self, action: Recheck) -> Rechecked:
        digest = hash_download(
            self._fetch(action.remote.id), expected_size=action.remote.size, tick=self._tick
        )
        return Rechecked(action, digest)

    def _verify(self, action: Verify) -> Verified:
        """Hash each candidate (each at most once a pass) until one matches the local file."""
        hashes: list[tuple[RemoteFile, str | None]] = []
        for candidate in action.candidates:
            with self._lock:
                if candidate.id in self._verified_ids:
                    continue  # already the copy of another file
                guard = self._hash_locks.setdefault(candidate.id, threading.Lock())
            with guard:  # one download per remote file, whoever asks first
                digest = self._remote_hashes.get(candidate.id)
                if digest is None:
                    try:
                        digest = hash_download(
                            self._fetch(candidate.id),
                            expected_size=candidate.size,
                            tick=self._tick,
                        )
                    except (CntrSyncError, DownloadProblem):
                        hashes.append((candidate, None))
                        continue
                    self._remote_hashes[candidate.id] = digest
            hashes.append((candidate, digest))
            if digest == action.local.hash:
                break
        return Verified(action, tuple(hashes))


def _file_time(action: Download) -> float | None:
    """The mtime a download gets: the remote file's time for a file new here (the model's
    output keeps when it was made); None (the time of the download) for one that
    replaces or restores a local file, so its time never goes back and a build tool
    sees it as changed."""
    created_at = action.remote.created_at
    if action.reason in ("new", "conflict-copy") and created_at is not None:
        return float(created_at)
    return None


def _deadline_after(seconds: float | None) -> float | None:
    # A transfer's own deadline, on the clock its reader checks (``TickingReader``): real
    # time, as the socket's.
    return None if seconds is None else time.monotonic() + seconds
