"""Recording what a pass's actions did: one handler per kind of outcome.

Owns what each finished action means for the index (an entry recorded, forgotten
or repointed; an intent cleared; a pending delete; a download's failure and its
backoff), the journal, the conflict copies made and the pass's result, and which
follow-ups it brings (the old id after a replace, a changed file's retry, a
conflict's resolution, the next candidate of a search). ``apply.Applier`` runs
the actions and hands each outcome here, on its own thread.

Must not: run an action itself, or touch the tree or the API but through the
actions it yields.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

from cntr_sync import conflict_copies
from cntr_sync.actions import (
    Compare,
    Delete,
    DeleteLocal,
    Download,
    LocalAction,
    Recheck,
    RemoteAction,
    Upload,
    Verify,
    mirror_entry,
)
from cntr_sync.errors import (
    AuthenticationError,
    CntrSyncError,
    ContainerExpiredError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    RefusedTooLongError,
    StoppedError,
)
from cntr_sync.index import Index
from cntr_sync.journal import Journal, JournalAction
from cntr_sync.models import IndexEntry, LocalFile, Pair, PendingDelete, PullFailure, RemoteFile
from cntr_sync.names import server_naming
from cntr_sync.plan_inputs import Policy
from cntr_sync.pull import pulled_entry, resolve_unrelated
from cntr_sync.remote_paths import TakenNames, printable
from cntr_sync.result import ActionFailure, ConflictCopy, PassResult, Progress, TransferEvent
from cntr_sync.transfer import (
    ChangedSinceScan,
    DownloadProblem,
    LocalChanged,
    UnsafeTarget,
    rehash_if_still,
)

# How often one file may change under its upload before this pass leaves it to the next.
MAX_CHANGED_RETRIES = 3

# A download that failed (no content, wrong size) waits this long, doubling per
# attempt, up to an hour: retried on later passes, never in a tight loop.
PULL_RETRY_BASE_S = 60.0
PULL_RETRY_MAX_S = 3600.0

# Errors that end the whole pass: nothing else can succeed after them.
FATAL = (
    AuthenticationError,
    PermissionDeniedError,
    ContainerExpiredError,
    QuotaExceededError,
    RefusedTooLongError,
)

Action = LocalAction | RemoteAction


class NotStarted(Exception):
    """An action handed to the pool was not started: the pass was stopping by then."""


@dataclass(frozen=True)
class Uploaded:
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
class Compared:
    action: Compare
    remote_hash: str


@dataclass(frozen=True)
class Rechecked:
    action: Recheck
    remote_hash: str


@dataclass(frozen=True)
class Verified:
    action: Verify
    hashes: tuple[tuple[RemoteFile, str | None], ...]  # None: could not be read


class OutcomeRecorder:
    """The outcome handlers of ``apply.Applier``: one per kind of outcome, on the
    calling thread; each records in the index, the journal and the result, and yields
    the follow-up actions (an old id after a replace, a retry of a changed file)."""

    # Set by ``Applier``; read and written here as outcomes arrive.
    index: Index
    pair: Pair
    result: PassResult
    _clock: Callable[[], float]
    _progress: Progress
    _policy: Policy
    _taken: TakenNames
    _pass_journal: Journal
    _retries: dict[str, int]
    _blocked: set[str]
    _remote_queue: list[Action]
    _keep_grown: bool
    _lock: threading.Lock
    _verified_ids: set[str]
    _intended: set[str]
    _server_names: tuple[bool | None, bool | None] | None

    @property
    def _root(self) -> Path:
        return self.pair.local

    def _finish(self, action: Action, future: Future[object]) -> Iterator[Action]:
        """Record one finished action; yield follow-up actions."""
        try:
            outcome = future.result()
        except FATAL:
            raise
        except (NotStarted, StoppedError):
            # Left to the next pass, like the actions not handed over (a stopped one
            # waited on the server and was told to stop: the server did not do it).
            self.result.cancelled = True
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
            if isinstance(outcome, Uploaded):
                if outcome.changed_meanwhile and self._keep_grown and outcome.only_grew:
                    yield from self._on_uploaded(outcome, as_sent=True)
                elif outcome.changed_meanwhile:
                    yield from self._on_changed_during_upload(outcome)
                else:
                    yield from self._on_uploaded(outcome)
            elif isinstance(outcome, LocalFile):
                assert isinstance(action, Download)
                self._on_downloaded(action, outcome)
            elif isinstance(outcome, Compared):
                yield from self._on_compared(outcome)
            elif isinstance(outcome, Rechecked):
                yield from self._on_rechecked(outcome)
            elif isinstance(outcome, Verified):
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
        if isinstance(action, Recheck):
            self._check_failed(action, str(exc))
            return
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
        if isinstance(action, Recheck):
            self._check_failed(action, message)
            return
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

    def _check_failed(self, action: Recheck, message: str) -> None:
        # A check is not a change: the file is checked again on a later rotation.
        self.result.warnings.append(
            f"{printable(action.relpath)}: its content could not be checked: {message}"
        )

    def _on_rechecked(self, rechecked: Rechecked) -> Iterator[Action]:
        """A content check: the same content is nothing to do; other content is the
        model's rewrite in place, which comes home over the unchanged local file."""
        action = rechecked.action
        if rechecked.remote_hash != action.entry.hash:
            yield Download(action.remote, action.relpath, "changed", expect=action.local)

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
        self._pass_journal.record(action, failure.target, failed=failure.message)

    def _on_deleted(self, action: Delete) -> None:
        self.index.record_delete(action.remote_id)
        # The old id of a replaced file is part of its replace, not a deletion.
        if action.reason not in ("replaced", "conflict"):
            self.result.deleted += 1
            self._progress.advance(TransferEvent("deleted", action.relpath or action.path))
            self._pass_journal.record("delete", action.relpath or action.path, reason=action.reason)

    def _on_deleted_locally(self, action: DeleteLocal) -> None:
        self.index.forget(action.relpath)
        self.result.local_deleted += 1
        self.result.local_files -= 1
        self._progress.advance(TransferEvent("deleted locally", action.relpath))
        self._pass_journal.record(
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
        self._pass_journal.record(kind, action.relpath, size=written.size, reason=action.reason)
        copy = ConflictCopy.made_by(action)
        if copy is not None:
            self.result.conflict_copies.append(copy)
            conflict_copies.record(self.index, [(copy.copy, copy.path)], self._clock())

    def _on_compared(self, compared: Compared) -> Iterator[Action]:
        action = compared.action
        remote, local = action.remote, action.local
        if compared.remote_hash == local.hash:
            # The same content on both sides: the local file mirrors the remote one.
            self.index.record_download(pulled_entry(action.relpath, remote, local, self._clock()))
            self.result.adopted += 1
            self._pass_journal.record(
                "adopt", action.relpath, size=local.size, reason="same-content"
            )
            return
        self.result.conflicts += 1
        # The conflict copy's name is taken in ``self._taken`` as it is chosen.
        resolution = resolve_unrelated(remote, action.relpath, local, self._policy, self._taken)
        for entry in resolution.repoints:
            self.index.adopt(entry)
        yield from resolution.downloads
        self._remote_queue.extend(resolution.uploads)
        self._remote_queue.extend(resolution.deletes)

    def _on_verified(self, verified: Verified) -> Iterator[Action]:
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
                self._pass_journal.record(
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

    def _on_changed_during_upload(self, done: Uploaded) -> Iterator[Action]:
        # What arrived may be a mix of old and new bytes: drop it, upload again.
        action = done.action
        self._learn_whether_names_are_kept(action, done.remote)
        self.index.add_pending_delete(PendingDelete(done.remote.id, action.relpath))
        self.index.clear_intent(action.relpath)
        self._intended.discard(action.relpath)
        yield Delete(done.remote.id, done.remote.path, "stale-upload", action.relpath)
        yield from self._retry_changed(action)

    def _on_uploaded(self, done: Uploaded, *, as_sent: bool = False) -> Iterator[Delete]:
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
            self._pass_journal.record(
                "replace", action.relpath, size=action.size, reason=action.reason
            )
            yield Delete(action.replaces, "", "replaced", action.relpath)
        else:
            self.result.uploaded += 1
            self._progress.advance(TransferEvent("uploaded", action.relpath, action.size))
            self._pass_journal.record(
                "upload", action.relpath, size=action.size, reason=action.reason
            )

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


def _os_message(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".strip(": ")
    return str(exc)
