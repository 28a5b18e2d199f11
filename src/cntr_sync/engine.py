"""One reconcile pass: container -> scan -> list -> plan -> brakes -> execute -> record.

The one-shot command runs one pass; the daemon runs the same pass again and
again. Owns the order of steps and the rules that keep data safe: nothing is
deleted unless the listing was complete and the brakes agree; the index is
written after every finished action, on this (the calling) thread; an
expired container is replaced and refilled (``containers`` finds, creates
and replaces it; this module decides when).

Must not: talk HTTP except through ``ContainersClient``, touch SQLite except
through ``Index``, decide what to do (``plan`` decides), or find, create or
replace a container itself (``containers`` does).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import structlog

from cntr_sync.api import ContainersClient
from cntr_sync.config import ResolvedPair
from cntr_sync.containers import ContainerResolver
from cntr_sync.errors import (
    ApiError,
    AuthenticationError,
    CntrSyncError,
    ContainerExpiredError,
    LocalError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    SafetyBrakeError,
)
from cntr_sync.index import Index
from cntr_sync.models import (
    Container,
    DoomedFile,
    IndexEntry,
    LocalFile,
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
from cntr_sync.scan import (
    IgnoreRules,
    MemoryHashCache,
    Snapshot,
    hash_fd,
    open_regular,
    scan,
)

log = structlog.get_logger("cntr_sync.engine")

# How often one file may change under an upload before this pass gives up on it.
MAX_REDOS = 3
# Errors that end the whole pass: nothing else can succeed after them.
_FATAL = (AuthenticationError, PermissionDeniedError, ContainerExpiredError)


@dataclass(frozen=True)
class PairSpec:
    """What one pass needs to know about a (local root, container) pair."""

    root: Path
    container: str
    expires_after_minutes: int = 20
    memory_limit: str | None = None
    delete: bool = True
    delete_unknown: bool = False
    max_delete_percent: float = 50.0
    ignore: tuple[str, ...] = ()
    follow_symlinks: bool = False
    container_id_file: Path | None = None
    # Files modified less than this long ago may still be being written: the
    # daemon defers them to a later pass (the one-shot command uses 0).
    settle_seconds: float = 0.0

    @classmethod
    def from_settings(cls, pair: ResolvedPair, *, settle: bool = False) -> PairSpec:
        """The spec of a configured pair; ``settle`` defers files younger than its
        quiet period (the daemon's choice; a one-shot sync sends what it sees)."""
        return cls(
            root=pair.local,
            container=pair.container,
            expires_after_minutes=pair.expires_after_minutes,
            memory_limit=pair.memory_limit,
            delete=pair.delete,
            delete_unknown=pair.delete_unknown,
            max_delete_percent=pair.max_delete,
            ignore=pair.ignore,
            follow_symlinks=pair.follow_symlinks,
            container_id_file=pair.container_id_file,
            settle_seconds=pair.quiet_period if settle else 0.0,
        )


class Progress(Protocol):
    """Where a pass reports transfers as they happen (a progress bar, or nothing)."""

    def start(self, files: int, total_bytes: int) -> None: ...

    def advance(self, files: int, transferred_bytes: int) -> None: ...


class _NoProgress:
    def start(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, files: int, transferred_bytes: int) -> None:
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
class _UploadDone:
    action: Upload
    intent: UploadIntent
    remote: RemoteFile
    stat: os.stat_result | None
    changed_meanwhile: bool


class _ChangedBeforeUpload(Exception):
    """The file is not the one the scan saw (changed, replaced, gone): nothing sent."""


class Engine:
    """Runs reconcile passes for one pair. Not thread-safe: one pass at a time."""

    def __init__(
        self,
        client: ContainersClient,
        index: Index,
        pair: PairSpec,
        *,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
        progress: Progress | None = None,
    ) -> None:
        self.client = client
        self.index = index
        self.pair = pair
        self.concurrency = max(1, concurrency)
        self._clock = clock
        self._progress: Progress = progress or _NoProgress()
        self._cancel = threading.Event()
        self._containers = ContainerResolver(client, index, pair)

    # -- the pass -----------------------------------------------------------------

    def run_pass(
        self,
        *,
        dry_run: bool = False,
        force: bool = False,
        cancel: threading.Event | None = None,
    ) -> PassResult:
        """One reconcile pass. Raises SafetyBrakeError, LocalError or fatal ApiErrors.

        A container that expires in the middle of the pass is replaced and the
        pass run once more, so one call ends with a filled container. Setting
        ``cancel`` stops it from starting further actions (in-flight ones finish).
        """
        self._cancel = cancel or threading.Event()
        started = time.monotonic()
        requests_before = self.client.stats.by_operation()
        result = PassResult(dry_run=dry_run)
        try:
            try:
                self._run(result, dry_run=dry_run, force=force)
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
                self._run(retry, dry_run=dry_run, force=force)
                result = retry
        finally:
            after = self.client.stats.by_operation()
            result.requests_by_operation = {
                op: n - requests_before.get(op, 0)
                for op, n in after.items()
                if n - requests_before.get(op, 0)
            }
            result.requests = sum(result.requests_by_operation.values())
            result.seconds = time.monotonic() - started
        return result

    def _run(self, result: PassResult, *, dry_run: bool, force: bool) -> None:
        self._check_root(force=force)
        container = self._containers.resolve(result, dry_run=dry_run)
        snapshot = self._scan(dry_run=dry_run)
        local, young = self._settled(snapshot)
        result.local_files = len(snapshot.files)
        result.warnings.extend(f"{w.relpath}: {w.reason}" for w in snapshot.warnings)
        result.deferred.extend(snapshot.unstable)
        result.deferred.extend(sorted(young))

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
            max_delete_percent=self.pair.max_delete_percent,
            names_kept=self.index.names_kept,
            now=self._clock(),
        )
        entries = self.index.entries() if container is not None else {}
        the_plan = plan(
            local,
            entries,
            remote,
            intents=self.index.intents() if container is not None else {},
            doomed=self.index.doomed() if container is not None else [],
            policy=policy,
            uncertain=lambda relpath: relpath in young or snapshot.is_uncertain(relpath),
        )
        result.plan = the_plan
        result.unknown_kept = the_plan.unknown_kept
        brake = check_brakes(the_plan, local_count=len(snapshot.files), policy=policy, force=force)
        if brake is not None:
            raise SafetyBrakeError(brake.reason)
        if dry_run or container is None:
            return
        self._record_bookkeeping(the_plan, result)
        self._execute(container.id, the_plan, result)

    # -- steps ----------------------------------------------------------------------

    def _check_root(self, *, force: bool) -> None:
        root = self.pair.root
        if root.is_dir():
            return
        tracked = self.index.entry_count()
        if tracked and not force:
            raise SafetyBrakeError(
                f"sync root {root} is missing but {tracked} files are tracked; "
                "refusing to touch the container (is a disk unmounted?)"
            )
        raise LocalError(f"sync root {root} does not exist or is not a directory", path=str(root))

    def _settled(self, snapshot: Snapshot) -> tuple[dict[str, LocalFile], set[str]]:
        """The files old enough to sync, and the ones modified too recently."""
        if self.pair.settle_seconds <= 0:
            return snapshot.files, set()
        cutoff = time.time_ns() - int(self.pair.settle_seconds * 1e9)
        young = {r for r, f in snapshot.files.items() if f.mtime_ns > cutoff}
        if not young:
            return snapshot.files, young
        return {r: f for r, f in snapshot.files.items() if r not in young}, young

    def has_local_changes(self) -> bool:
        """Whether the tree differs from what the index recorded; no API calls.

        The daemon's periodic rescan uses this to catch missed events without
        touching (and so keeping alive) an idle container.
        """
        if not self.pair.root.is_dir():
            return bool(self.index.entry_count())
        snapshot = self._scan(dry_run=False)
        entries = self.index.entries()
        if snapshot.unstable or self.index.intents() or self.index.doomed():
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
        rules = IgnoreRules.load(self.pair.root, self.pair.ignore)
        # A dry run reads the hash cache but writes nothing.
        cache = _ReadThroughCache(self.index) if dry_run else self.index
        return scan(
            self.pair.root,
            rules=rules,
            hash_cache=cache,
            follow_symlinks=self.pair.follow_symlinks,
        )

    def _list(self, container_id: str) -> list[RemoteFile]:
        """The complete listing; any failure propagates, so nothing is planned from half."""
        return [
            to_remote_file(f.id, f.path, f.bytes, f.source, f.created_at)
            for f in self.client.iter_files(container_id)
        ]

    def _record_bookkeeping(self, the_plan: Plan, result: PassResult) -> None:
        for adopt in the_plan.adopts:
            self.index.adopt(adopt.entry)
        result.adopted = len(the_plan.adopts)
        for refresh in the_plan.refreshes:
            self.index.refresh_stat(refresh.relpath, refresh.size, refresh.mtime_ns)
        for relpath in the_plan.forgets:
            self.index.forget(relpath)
        for relpath in the_plan.cleared_intents:
            self.index.clear_intent(relpath)
        for remote_id in the_plan.dropped_doomed:
            self.index.record_delete(remote_id)

    # -- execution --------------------------------------------------------------------

    def _execute(self, container_id: str, the_plan: Plan, result: PassResult) -> None:
        self._progress.start(the_plan.transfers, the_plan.upload_bytes)
        redos: dict[str, int] = {}
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="cntr-sync") as pool:
            running: dict[Future[object], Upload | Delete] = {}
            queue: list[Upload | Delete] = [*the_plan.uploads, *the_plan.deletes]
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
                        queue.extend(self._finish(action, future, redos, result))
            except _FATAL:
                for future in running:
                    future.cancel()
                raise

    def _submit(
        self,
        pool: ThreadPoolExecutor,
        container_id: str,
        action: Upload | Delete,
    ) -> Future[object]:
        if isinstance(action, Upload):
            intent = UploadIntent(
                relpath=action.relpath,
                filename=upload_name(action.relpath),
                size=action.size,
                hash=action.hash,
                started_at=self._clock(),
            )
            # Written before the request: if the answer is lost, the next
            # listing can tell this upload from a stranger's.
            self.index.add_intent(intent)
            return pool.submit(self._upload, container_id, action, intent)
        return pool.submit(self.client.delete_file, container_id, action.remote_id)

    def _upload(
        self,
        container_id: str,
        action: Upload,
        intent: UploadIntent,
    ) -> _UploadDone:
        """Upload the very file the scan saw, from one open descriptor.

        The path is opened once (not following a symlink unless asked) and
        checked against the scan's inode, size and mtime, then streamed from
        that descriptor: a file swapped after the scan (for a link to
        ~/.ssh/id_rsa, say) is never what gets sent.
        """
        try:
            handle, before = self._open_as_scanned(action)
        except OSError as exc:
            raise _ChangedBeforeUpload(action.relpath) from exc
        with handle:
            created = self.client.create_file(container_id, handle, filename=intent.filename)
            after = os.fstat(handle.fileno())
        return _UploadDone(
            action=action,
            intent=intent,
            remote=to_remote_file(
                created.id, created.path, created.bytes, created.source, created.created_at
            ),
            stat=after,
            changed_meanwhile=(after.st_size, after.st_mtime_ns)
            != (before.st_size, before.st_mtime_ns),
        )

    def _open_as_scanned(self, action: Upload) -> tuple[BinaryIO, os.stat_result]:
        fd = open_regular(
            self.pair.root / action.relpath, follow_symlinks=self.pair.follow_symlinks
        )
        handle = os.fdopen(fd, "rb")
        seen = os.fstat(fd)
        if (seen.st_size, seen.st_mtime_ns) != (action.size, action.mtime_ns) or (
            action.inode and seen.st_ino != action.inode
        ):
            handle.close()
            raise OSError(errno.ESTALE, "changed since the scan", action.relpath)
        return handle, seen

    def _finish(
        self,
        action: Upload | Delete,
        future: Future[object],
        redos: dict[str, int],
        result: PassResult,
    ) -> Iterator[Upload | Delete]:
        """Record one finished action; yield follow-up actions (old ids, redos)."""
        try:
            outcome = future.result()
        except _FATAL:
            raise
        except OutcomeUnknownError as exc:
            # The intent stays: the next pass's listing adopts or removes the file.
            result.failures.append(ActionFailure("upload", exc.filename, exc.message))
            return
        except _ChangedBeforeUpload:
            # Nothing was sent: scan the file again (or leave it to the next pass).
            assert isinstance(action, Upload)
            self.index.clear_intent(action.relpath)
            redo = self._redo(action, redos)
            if redo is None:
                result.deferred.append(action.relpath)
            else:
                yield redo
            return
        except FileNotFoundError:
            # Deleted after the scan: the next pass plans its removal.
            if isinstance(action, Upload):
                self.index.clear_intent(action.relpath)
                result.deferred.append(action.relpath)
            return
        except (CntrSyncError, OSError) as exc:
            message = exc.message if isinstance(exc, CntrSyncError) else _os_message(exc)
            target = (
                action.relpath if isinstance(action, Upload) else (action.relpath or action.path)
            )
            kind = "upload" if isinstance(action, Upload) else "delete"
            result.failures.append(ActionFailure(kind, target or "", message))
            return

        if isinstance(action, Delete):
            self.index.record_delete(action.remote_id)
            # The old id of a replaced file is part of its replace, not a deletion.
            if action.reason != "replaced":
                result.deleted += 1
                self._progress.advance(1, 0)
            return

        assert isinstance(outcome, _UploadDone)
        self._learn_names_kept(outcome)
        if outcome.changed_meanwhile:
            # What arrived may be a mix of old and new bytes: drop it, upload again.
            self.index.add_doomed(DoomedFile(outcome.remote.id, action.relpath))
            self.index.clear_intent(action.relpath)
            yield Delete(outcome.remote.id, outcome.remote.path, "stale-upload", action.relpath)
            redo = self._redo(action, redos)
            if redo is None:
                result.deferred.append(action.relpath)
            else:
                yield redo
            return

        assert outcome.stat is not None
        entry = IndexEntry(
            relpath=action.relpath,
            remote_id=outcome.remote.id,
            remote_path=outcome.remote.path,
            size=outcome.stat.st_size,
            mtime_ns=outcome.stat.st_mtime_ns,
            hash=action.hash,
            uploaded_at=self._clock(),
        )
        doomed = DoomedFile(action.replaces, action.relpath) if action.replaces else None
        self.index.record_upload(entry, doomed=doomed)
        result.bytes_uploaded += action.size
        if action.replaces:
            result.replaced += 1
            yield Delete(action.replaces, "", "replaced", action.relpath)
        else:
            result.uploaded += 1
        self._progress.advance(1, action.size)

    def _redo(self, action: Upload, redos: dict[str, int]) -> Upload | None:
        """The file changed under its upload: hash it again, if it holds still."""
        count = redos.get(action.relpath, 0) + 1
        redos[action.relpath] = count
        if count > MAX_REDOS:
            return None
        path = self.pair.root / action.relpath
        if self.pair.follow_symlinks and not _resolves_inside(path, self.pair.root):
            return None  # a link now leads out of the root: the next scan decides
        try:
            fd = open_regular(path, follow_symlinks=self.pair.follow_symlinks)
        except OSError:
            return None
        try:
            before = os.fstat(fd)
            digest = hash_fd(fd)
            after = os.fstat(fd)
        except OSError:
            return None
        finally:
            os.close(fd)
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            return None
        return Upload(
            action.relpath,
            after.st_size,
            after.st_mtime_ns,
            digest,
            action.reason,
            action.replaces,
            inode=after.st_ino,
        )

    def _learn_names_kept(self, done: _UploadDone) -> None:
        """Whether the server keeps upload names; one that did not is enough to stop
        trusting names for good (a server keeping only some, say the last path
        segment, must not have its names matched)."""
        kept = done.intent.filename in remote_names(done.remote.path)
        if self.index.names_kept is None or (self.index.names_kept and not kept):
            self.index.set_names_kept(kept)


class _ReadThroughCache:
    """The index's hash cache for reading, with writes kept in memory (dry runs)."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self._memory = MemoryHashCache()

    def lookup(self, relpath: str, inode: int, size: int, mtime_ns: int) -> str | None:
        return self._memory.lookup(relpath, inode, size, mtime_ns) or self._index.lookup(
            relpath, inode, size, mtime_ns
        )

    def store(self, relpath: str, inode: int, size: int, mtime_ns: int, digest: str) -> None:
        self._memory.store(relpath, inode, size, mtime_ns, digest)


def _resolves_inside(path: Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def _os_message(exc: OSError) -> str:
    return f"{exc.filename or ''}: {exc.strerror or exc}".strip(": ")


__all__ = ["ActionFailure", "ApiError", "Engine", "PairSpec", "PassResult", "Progress"]
