"""Carrying out a plan: the actions of one pass, in a bounded pool, recorded one by one.

Owns the order and the bookkeeping of execution. Local actions (downloads,
compares, local deletes) run first and finish before any remote action
starts, so an upload never replaces a remote version a conflict copy is still
saving (and does not start at all when that copy failed). Then uploads and
remote deletes run, with their follow-ups (an old id after a replace, a file
that changed under its upload). Each outcome is recorded in the index on the
calling thread as it arrives, by one handler per kind of outcome.

Must not: decide what to do (the planners do; a ``Compare`` that finds
different content asks ``pull.resolve_unrelated``), talk HTTP except through
``ContainersClient``, touch files except through ``transfer``, or touch
SQLite except through ``Index``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

from cntr_sync import conflict_copies
from cntr_sync.actions import (
    Compare,
    Delete,
    DeleteLocal,
    Download,
    LocalAction,
    Plan,
    RemoteAction,
    Upload,
    Verify,
    mirror_entry,
)
from cntr_sync.api import ContainersClient
from cntr_sync.backups import PassBackups
from cntr_sync.errors import (
    AuthenticationError,
    CntrSyncError,
    ContainerExpiredError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    ProtocolError,
)
from cntr_sync.index import Index
from cntr_sync.journal import Journal, JournalAction
from cntr_sync.models import (
    IndexEntry,
    LocalFile,
    Pair,
    PendingDelete,
    PullFailure,
    RemoteFile,
    UploadIntent,
)
from cntr_sync.names import server_naming, to_remote_file, upload_name
from cntr_sync.plan_inputs import Policy
from cntr_sync.pull import pulled_entry, resolve_unrelated
from cntr_sync.remote_paths import TakenNames, printable
from cntr_sync.rest import ByteSink
from cntr_sync.result import ActionFailure, ConflictCopy, PassResult, Progress, TransferEvent
from cntr_sync.transfer import (
    ChangedSinceScan,
    DownloadProblem,
    LocalChanged,
    Tick,
    UnsafeTarget,
    delete_local,
    hash_download,
    open_as_scanned,
    rehash_if_still,
    write_download,
)

# How often one file may change under its upload before this pass leaves it to the next.
MAX_CHANGED_RETRIES = 3
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
# A download that failed (no content, wrong size) waits this long, doubling per
# attempt, up to an hour: retried on later passes, never in a tight loop.
PULL_RETRY_BASE_S = 60.0
PULL_RETRY_MAX_S = 3600.0
# Errors that end the whole pass: nothing else can succeed after them.
FATAL = (AuthenticationError, PermissionDeniedError, ContainerExpiredError)

Action = LocalAction | RemoteAction


class NotStarted(Exception):
    """An action handed to the pool was not started: the pass was stopping by then."""


@dataclass(frozen=True)
class _Uploaded:
    action: Upload
    remote: RemoteFile
    before: os.stat_result  # the file when the upload opened it (what was sent)
    stat: os.stat_result  # the file when the upload ended
    changed_meanwhile: bool

    @property
    def only_grew(self) -> bool:
        """Appended to meanwhile: what was sent is the file as the scan saw it."""
        return self.stat.st_ino == self.before.st_ino and self.stat.st_size > self.action.size


@dataclass(frozen=True)
class _Compared:
    action: Compare
    remote_hash: str


@dataclass(frozen=True)
class _Verified:
    action: Verify
    hashes: tuple[tuple[RemoteFile, str | None], ...]  # None: could not be read


class Applier:
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
        backups: PassBackups | None = None,
        journal: Journal | None = None,
        keep_grown_uploads: bool = False,
        deadline: float | None = None,
    ) -> None:
        """``keep_grown_uploads``: a file appended to while it was sent keeps the upload
        (the file as it was when opened) instead of being sent again; the daemon's
        overdue passes use it, so a file that never stops growing is still mirrored."""
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
        self._keep = backups.keep if backups is not None else None
        self._journal_of_pass = journal
        self._retries: dict[str, int] = {}
        # Relpaths not to upload this pass: a conflict copy of theirs failed.
        self._blocked: set[str] = set()
        self._remote_queue: list[Action] = []
        self._keep_grown = keep_grown_uploads
        # Monotonic time after which no new action starts (the daemon's pass deadline).
        self._deadline = deadline
        # Content hashes of remote files downloaded to verify a match, once a pass.
        self._lock = threading.Lock()
        self._remote_hashes: dict[str, str] = {}
        self._hash_locks: dict[str, threading.Lock] = {}
        self._verified_ids: set[str] = set()
        # Relpaths whose upload intent is on disk (written ahead, a window at a time).
        self._intended: set[str] = set()
        # What the index says of the server's names (keeps them, adds a prefix), once read.
        self._server_names: tuple[bool | None, bool | None] | None = None

    @property
    def _root(self) -> Path:
        return self.pair.local

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
        """Hand ``queue``'s actions to the pool, some ahead of its threads; record each
        outcome as it arrives, in the order they finish, and queue its follow-ups."""
        finished: SimpleQueue[Future[object]] = SimpleQueue()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="cntr-sync") as pool:
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
                    done = [finished.get()]
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

    def _submit(self, pool: ThreadPoolExecutor, action: Action) -> Future[object]:
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
        return self._start(
            pool, delete_local, self._root, action.relpath, action.expect, self._keep
        )

    def _start(
        self, pool: ThreadPoolExecutor, work: Callable[..., object], *args: Any
    ) -> Future[object]:
        """``work(*args)`` in the pool; ``NotStarted`` instead if the pass is stopping
        by the time a thread takes it (it may wait behind the running ones)."""

        def unless_stopping() -> object:
            if self._stopping():
                raise NotStarted
            return work(*args)

        return pool.submit(unless_stopping)

    def _upload(self, action: Upload) -> _Uploaded:
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
        return _Uploaded(action, remote, before, after, changed_meanwhile=changed)

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

    def _compare(self, action: Compare) -> _Compared:
        digest = hash_download(
            self._fetch(action.remote.id), expected_size=action.remote.size, tick=self._tick
        )
        return _Compared(action, digest)

    def _verify(self, action: Verify) -> _Verified:
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
        return _Verified(action, tuple(hashes))

    # -- outcomes: one handler each, all on the calling thread --------------------------

    def _finish(self, action: Action, future: Future[object]) -> Iterator[Action]:
        """Record one finished action; yield follow-up actions."""
        try:
            outcome = future.result()
        except FATAL:
            raise
        except NotStarted:
            self.result.cancelled = True  # left to the next pass, like the actions not handed over
        except OutcomeUnknownError as exc:
            self._on_outcome_unknown(exc)
        except ChangedSinceScan:
            assert isinstance(action, Upload)
            yield from self._on_changed_before_upload(action)
        except (LocalChanged, UnsafeTarget, DownloadProblem) as exc:
            self._on_local_problem(action, exc)
        except (CntrSyncError, OSError) as exc:
            self._on_failed(action, exc)
        else:
            if isinstance(outcome, _Uploaded):
                if outcome.changed_meanwhile and self._keep_grown and outcome.only_grew:
                    yield from self._on_uploaded(outcome, as_sent=True)
                elif outcome.changed_meanwhile:
                    yield from self._on_changed_during_upload(outcome)
                else:
                    yield from self._on_uploaded(outcome)
            elif isinstance(outcome, LocalFile):
                assert isinstance(action, Download)
                self._on_downloaded(action, outcome)
            elif isinstance(outcome, _Compared):
                yield from self._on_compared(outcome)
            elif isinstance(outcome, _Verified):
                yield from self._on_verified(outcome)
            elif isinstance(action, DeleteLocal):
                self._on_deleted_locally(action)
            else:
                assert isinstance(action, Delete)
                self._on_deleted(action)

    def _on_outcome_unknown(self, exc: OutcomeUnknownError) -> None:
        # The intent stays: the next pass's listing adopts or removes the file.
        self._fail(ActionFailure("upload", exc.filename, exc.message))

    def _on_changed_before_upload(self, action: Upload) -> Iterator[Upload]:
        # Nothing was sent: hash the file again (or leave it to the next pass).
        self.index.clear_intent(action.relpath)
        self._intended.discard(action.relpath)
        yield from self._retry_changed(action)

    def _on_local_problem(self, action: Action, exc: Exception) -> None:
        relpath = getattr(action, "relpath", "")
        if isinstance(action, Download) and action.copy_of is not None:
            self._blocked.add(action.copy_of)
        if isinstance(exc, LocalChanged):
            # Changed here meanwhile: the next pass sees both sides and decides.
            self.result.deferred.append(relpath)
        elif isinstance(exc, UnsafeTarget):
            self.result.warnings.append(f"{printable(relpath)}: not written: {exc}")
        else:
            assert isinstance(action, Download | Compare)
            self._pull_failed(action.remote, relpath, str(exc))

    def _on_failed(self, action: Action, exc: Exception) -> None:
        message = exc.message if isinstance(exc, CntrSyncError) else _os_message(exc)
        if isinstance(action, Download | Compare):
            if isinstance(action, Download) and action.copy_of is not None:
                self._blocked.add(action.copy_of)
            if isinstance(exc, NotFoundError | ProtocolError):
                # The content itself is the problem: retried on later passes with a
                # backoff, never in a tight loop. (A network failure is retried at once.)
                reason = "the content answered 404" if isinstance(exc, NotFoundError) else message
                self._pull_failed(action.remote, action.relpath, reason)
                return
            self._fail(ActionFailure("download", action.relpath, message))
        elif isinstance(action, DeleteLocal):
            self._fail(ActionFailure("delete local", action.relpath, message))
        elif isinstance(action, Upload | Verify):
            self._fail(ActionFailure("upload", action.relpath, message))
        else:
            target = action.relpath or action.path
            self._fail(ActionFailure("delete", target or "", message))

    def _pull_failed(self, remote: RemoteFile, relpath: str, reason: str) -> None:
        """A download the server cannot serve right now: retried on later passes, backing off."""
        previous = self.index.pull_failures().get(remote.id)
        attempts = previous.attempts + 1 if previous is not None else 1
        delay = min(PULL_RETRY_MAX_S, PULL_RETRY_BASE_S * 2 ** (attempts - 1))
        self.index.record_pull_failure(
            PullFailure(remote.id, relpath, attempts, self._clock() + delay, reason)
        )
        self._fail(
            ActionFailure(
                "download",
                relpath,
                f"{reason} (file {remote.id}); retried in {delay:.0f} s",
            )
        )

    def _fail(self, failure: ActionFailure) -> None:
        self.result.failures.append(failure)
        action = _FAILED_ACTIONS.get(failure.action, "upload")
        self._journal(action, failure.target, failed=failure.message)

    def _journal(
        self,
        action: JournalAction,
        path: str,
        *,
        size: int | None = None,
        reason: str = "",
        failed: str | None = None,
    ) -> None:
        if self._journal_of_pass is not None:
            self._journal_of_pass.record(action, path, size=size, reason=reason, failed=failed)

    def _on_deleted(self, action: Delete) -> None:
        self.index.record_delete(action.remote_id)
        # The old id of a replaced file is part of its replace, not a deletion.
        if action.reason not in ("replaced", "conflict"):
            self.result.deleted += 1
            self._progress.advance(TransferEvent("deleted", action.relpath or action.path))
            self._journal("delete", action.relpath or action.path, reason=action.reason)

    def _on_deleted_locally(self, action: DeleteLocal) -> None:
        self.index.forget(action.relpath)
        self.result.local_deleted += 1
        self.result.local_files -= 1
        self._progress.advance(TransferEvent("deleted locally", action.relpath))
        self._journal(
            "delete-local", action.relpath, size=action.expect.size, reason="deleted remotely"
        )

    def _on_downloaded(self, action: Download, written: LocalFile) -> None:
        remote = action.remote
        if action.record:
            self.index.record_download(pulled_entry(action.relpath, remote, written, self._clock()))
        else:
            self.index.clear_pull_failure(remote.id)
        if action.repoint is not None:
            self.index.adopt(action.repoint)
        self.index.hashes.store(
            action.relpath,
            written.inode,
            written.size,
            written.mtime_ns,
            written.ctime_ns,
            written.hash,
        )
        self.result.downloaded += 1
        self.result.bytes_downloaded += written.size
        if action.expect is None or action.move_aside_to is not None:
            self.result.local_files += 1  # a new file here, not one written over
        self._progress.advance(TransferEvent("downloaded", action.relpath, written.size))
        kind: JournalAction = "conflict-copy" if action.reason == "conflict-copy" else "download"
        self._journal(kind, action.relpath, size=written.size, reason=action.reason)
        copy = ConflictCopy.made_by(action)
        if copy is not None:
            self.result.conflict_copies.append(copy)
            conflict_copies.record(self.index, [(copy.copy, copy.path)], self._clock())

    def _on_compared(self, compared: _Compared) -> Iterator[Action]:
        action = compared.action
        remote, local = action.remote, action.local
        if compared.remote_hash == local.hash:
            # The same content on both sides: the local file mirrors the remote one.
            self.index.record_download(pulled_entry(action.relpath, remote, local, self._clock()))
            self.result.adopted += 1
            self._journal("adopt", action.relpath, size=local.size, reason="same-content")
            return
        self.result.conflicts += 1
        # The conflict copy's name is taken in ``self._taken`` as it is chosen.
        resolution = resolve_unrelated(remote, action.relpath, local, self._policy, self._taken)
        for entry in resolution.repoints:
            self.index.adopt(entry)
        yield from resolution.downloads
        self._remote_queue.extend(resolution.uploads)
        self._remote_queue.extend(resolution.deletes)

    def _on_verified(self, verified: _Verified) -> Iterator[Action]:
        action = verified.action
        for candidate, digest in verified.hashes:
            if digest == action.local.hash and candidate.id not in self._verified_ids:
                with self._lock:
                    self._verified_ids.add(candidate.id)
                self.index.adopt(
                    mirror_entry(
                        action.relpath,
                        action.local,
                        candidate,
                        origin="push",
                        synced_at=self._clock(),
                    )
                )
                self.result.adopted += 1
                self._journal(
                    "adopt", action.relpath, size=action.local.size, reason="same-content"
                )
                return
        looked_at = {candidate.id for candidate, _digest in verified.hashes}
        rest = tuple(c for c in action.candidates if c.id not in looked_at)
        if rest:
            # The match it found went to a file with the same content: look on.
            yield replace(action, candidates=rest)
            return
        # Not in the container after all: upload it (after the local actions, as planned).
        self._remote_queue.append(action.upload)

    def _on_changed_during_upload(self, done: _Uploaded) -> Iterator[Action]:
        # What arrived may be a mix of old and new bytes: drop it, upload again.
        action = done.action
        self._learn_whether_names_are_kept(action, done.remote)
        self.index.add_pending_delete(PendingDelete(done.remote.id, action.relpath))
        self.index.clear_intent(action.relpath)
        self._intended.discard(action.relpath)
        yield Delete(done.remote.id, done.remote.path, "stale-upload", action.relpath)
        yield from self._retry_changed(action)

    def _on_uploaded(self, done: _Uploaded, *, as_sent: bool = False) -> Iterator[Delete]:
        """Record a finished upload. ``as_sent``: the file grew meanwhile; the entry
        describes the file as it was sent, so the next pass sees the growth."""
        action = done.action
        self._learn_whether_names_are_kept(action, done.remote)
        size, mtime_ns = (
            (action.size, action.mtime_ns)
            if as_sent
            else (done.stat.st_size, done.stat.st_mtime_ns)
        )
        entry = IndexEntry(
            relpath=action.relpath,
            remote_id=done.remote.id,
            remote_path=done.remote.path,
            size=size,
            mtime_ns=mtime_ns,
            hash=action.hash,
            synced_at=self._clock(),
            origin="push",
            remote_size=done.remote.size,
            remote_created_at=done.remote.created_at,
        )
        old = PendingDelete(action.replaces, action.relpath) if action.replaces else None
        self.index.record_upload(entry, pending_delete=old)
        self._intended.discard(action.relpath)
        self.result.bytes_uploaded += action.size
        if action.replaces:
            self.result.replaced += 1
            self._progress.advance(TransferEvent("replaced", action.relpath, action.size))
            self._journal("replace", action.relpath, size=action.size, reason=action.reason)
            yield Delete(action.replaces, "", "replaced", action.relpath)
        else:
            self.result.uploaded += 1
            self._progress.advance(TransferEvent("uploaded", action.relpath, action.size))
            self._journal("upload", action.relpath, size=action.size, reason=action.reason)

    def _retry_changed(self, action: Upload) -> Iterator[Upload]:
        """The file changed under its upload: hash it again and retry, if it holds still."""
        count = self._retries.get(action.relpath, 0) + 1
        self._retries[action.relpath] = count
        rehashed = None
        if count <= MAX_CHANGED_RETRIES:
            rehashed = rehash_if_still(
                self._root, action.relpath, follow_symlinks=self.pair.follow_symlinks
            )
        if rehashed is None:
            self.result.deferred.append(action.relpath)
            return
        yield replace(
            action,
            size=rehashed.size,
            mtime_ns=rehashed.mtime_ns,
            hash=rehashed.hash,
            inode=rehashed.inode,
        )

    def _learn_whether_names_are_kept(self, action: Upload, remote: RemoteFile) -> None:
        """What this upload's answer tells about the server's names (``names.server_naming``).

        A plain name that came back renamed is enough to stop trusting names
        for good (a server keeping only some, say the last path segment, must
        not have its names matched); an odd one proves nothing either way.
        What the index knows is read once a pass: only this pass writes it, and
        reading it after every recorded upload cost two SELECTs an upload.
        """
        shown = server_naming(action.relpath, remote.path)
        if shown.keeps_names is None and shown.adds_prefix is None:
            return
        if self._server_names is None:
            self._server_names = (self.index.server_keeps_names, self.index.server_adds_prefix)
        keeps, adds_prefix = self._server_names
        if shown.keeps_names is not None and (keeps is None or (keeps and not shown.keeps_names)):
            self.index.set_server_keeps_names(shown.keeps_names)
            keeps = shown.keeps_names
        if shown.adds_prefix is not None and adds_prefix is None:
            self.index.set_server_adds_prefix(shown.adds_prefix)
            adds_prefix = shown.adds_prefix
        self._server_names = (keeps, adds_prefix)


# The journal's action for a failure of each kind.
_FAILED_ACTIONS: dict[str, JournalAction] = {
    "upload": "upload",
    "download": "download",
    "delete": "delete",
    "delete local": "delete-local",
}


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


def _os_message(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".strip(": ")
    return str(exc)
