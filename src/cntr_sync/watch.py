"""File system events as hints: a debounced dirty set, and supervised observers.

Owns: the watchdog handler (O(1) work per event, never raises), the
``ChangeTracker`` that coalesces events into "something changed, and when"
(and tells a listener, the daemon's scheduler, when a clean pair turns
dirty), ``ObserverHub``, the observers roots share (one native observer for
all of a daemon's pairs: one inotify instance, one dispatch thread, and
watchdog's one emitter thread per root; one polling observer likewise), and
``Watcher``, which watches one root through a hub, restarts its watch when it
dies and falls back to polling when the kernel's inotify limits are reached.

Must not: decide what to sync. Events only mark paths dirty; the next scan
decides. Lost events are harmless because periodic rescans catch up.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, EventEmitter, ObservedWatch
from watchdog.observers.polling import PollingObserver

from cntr_sync.errors import LocalError
from cntr_sync.models import WatchMode
from cntr_sync.tree_names import PARTIAL_PREFIX

__all__ = ["MAX_TRACKED_PATHS", "ChangeTracker", "ObserverHub", "WatchKind", "WatchMode", "Watcher"]

WatchKind = Literal["native", "poll", "off"]

# A burst larger than this stops tracking single paths: the pass rescans anyway.
MAX_TRACKED_PATHS = 10_000
# Reads are not changes; watchdog reports them on Linux since 2.3.
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})
#: What the kernel is asked to report. Without a filter inotify also reports every
#: open and close-without-write: a scan opening 18,599 directories of a 100k-file
#: tree queued ~37,000 of them, over the default max_queued_events (16,384), and
#: each overflow made a full rescan, whose opens overflowed the queue again.
#: A directory's "modified" is left out too: the child's own event names it.
_WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
]
_LIMIT_SYSCTL = {
    errno.ENOSPC: "fs.inotify.max_user_watches",
    errno.EMFILE: "fs.inotify.max_user_instances",
}


class ChangeTracker:
    """Thread-safe record of pending changes for one pair, with debounce timing.

    ``mark`` is called from observer threads and must stay O(1); the pair's
    worker takes the pending set with ``take``. ``listener`` (the scheduler's
    wake-up) is called when a clean tracker turns dirty and on ``wake``: later
    marks only push the quiet period back, which the next turn sees anyway.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._paths: set[str] = set()
        self._full = False
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.events = 0
        self.listener: Callable[[], None] | None = None

    def mark(self, path: str | None = None) -> None:
        """Note a change at ``path`` (None: somewhere, rescan everything)."""
        with self._cond:
            now = self._clock()
            became_dirty = self.first_at is None
            if became_dirty:
                self.first_at = now
            self.last_at = now
            self.events += 1
            if path is None or len(self._paths) >= MAX_TRACKED_PATHS:
                self._full = True
            else:
                self._paths.add(path)
            self._cond.notify_all()
        if became_dirty:
            self._tell_listener()

    def _tell_listener(self) -> None:
        # Outside the lock: the listener takes the scheduler's.
        listener = self.listener
        if listener is not None:
            listener()

    def mark_full(self, *, since: float | None = None) -> None:
        """Ask for a full rescan. ``since``: when the still-unsynced change first
        happened, so that re-marking after a deferred pass keeps max_delay's clock."""
        self.mark(None)
        self._keep_since(since)

    def mark_again(self, paths: Iterable[str], *, since: float | None = None) -> None:
        """Put ``paths`` back (a pass deferred them); ``since`` as for ``mark_full``."""
        for path in paths:
            self.mark(path)
        self._keep_since(since)

    def _keep_since(self, since: float | None) -> None:
        if since is not None:
            with self._cond:
                if self.first_at is None or since < self.first_at:
                    self.first_at = since

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._paths) + (1 if self._full else 0)

    def take(self) -> tuple[frozenset[str], bool]:
        """The pending paths and whether a full rescan was asked for; clears both."""
        with self._cond:
            paths, full = frozenset(self._paths), self._full
            self._paths.clear()
            self._full = False
            self.first_at = self.last_at = None
            return paths, full

    def wait(self, timeout: float) -> None:
        """Sleep until the next change or ``timeout`` seconds, whichever comes first."""
        with self._cond:
            self._cond.wait(timeout=max(0.0, timeout))

    def wake(self) -> None:
        """Wake a waiting worker without marking anything (stop, reload)."""
        with self._cond:
            self._cond.notify_all()
        self._tell_listener()


class _Handler(FileSystemEventHandler):
    """Marks paths dirty. An exception here would kill the observer thread silently,
    so nothing escapes: on any surprise it asks for a full rescan instead."""

    def __init__(self, tracker: ChangeTracker) -> None:
        self._tracker = tracker

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type in _IGNORED_EVENTS:
                return
            if event.is_directory and event.event_type == "modified":
                # Says a child changed, which that child's own event names; marking the
                # directory would make an incremental pass walk all of it.
                return
            raws = [event.src_path, event.dest_path] if event.dest_path else [event.src_path]
            for raw in raws:
                path = os.fsdecode(raw)
                # Our own partial downloads and probes are not changes of the tree.
                if not path.rpartition("/")[2].startswith(PARTIAL_PREFIX):
                    self._tracker.mark(path)
        except Exception:  # noqa: BLE001 - see the class docstring
            self._tracker.mark_full()


class _OverflowListener(logging.Handler):
    """watchdog handles an inotify queue overflow itself and only logs it; this
    turns that log line into a full rescan of every watched pair."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.trackers: weakref.WeakSet[ChangeTracker] = weakref.WeakSet()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in record.getMessage().lower():
                for tracker in list(self.trackers):
                    tracker.mark_full()
        except Exception:  # noqa: BLE001 - a logging handler must not raise
            self.handleError(record)


# watchdog re-registers its callback when a watched directory path is reused
# (a directory renamed away and another renamed in) and warns that it
# "will be overwritten": expected under churn, and only noise in the logs.
warnings.filterwarnings(
    "ignore", message="Callback with id .* already exists", category=RuntimeWarning
)

_overflow = _OverflowListener()
for _name in ("watchdog.observers.inotify", "watchdog.observers.inotify_c"):
    logging.getLogger(_name).addHandler(_overflow)


@dataclass(frozen=True)
class _Watch:
    """One root scheduled on a hub's observer: what unscheduling it takes, and its
    emitter (watchdog's thread for that root), found once so that a health check
    costs two ``is_alive`` calls, not a walk over every pair's emitters."""

    observer: BaseObserver
    watch: ObservedWatch
    emitter: EventEmitter | None
    #: Kernel watches its scheduling added (native only; None where /proc cannot tell).
    added_watches: int | None


class ObserverHub:
    """The observers the roots of a process share, one per kind: a native one
    (inotify: one kernel instance and two reader threads for every root) and a
    polling one per interval, each started with its first root and stopped with
    its last. An observer that died is replaced for the next root scheduled; each
    ``Watcher`` on the dead one reschedules itself when ``check`` finds it dead.

    A ``Watcher`` given no hub gets one of its own (an observer of its own).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, BaseObserver] = {}
        self._roots: dict[BaseObserver, int] = {}
        # The inotify descriptors of each native observer, found when it opened them.
        self._fds: dict[BaseObserver, set[int]] = {}
        self._holders: dict[tuple[BaseObserver, ObservedWatch], int] = {}
        self._watchers: set[Watcher] = set()

    def schedule(
        self, key: str, make: Callable[[], BaseObserver], handler: _Handler, root: Path
    ) -> _Watch:
        """Watch ``root`` on the observer of ``key`` (made by ``make`` when there is
        none alive). Raises OSError as watchdog does (a kernel limit, say)."""
        with self._lock:
            observer = self._current.get(key)
            fresh = observer is None or not observer.is_alive()
            if fresh:
                observer = make()
                observer.daemon = True
            assert observer is not None
            native = key == "native"
            fds_before = _inotify_fds() if native and fresh else set()
            known = self._fds.get(observer, set())
            before = _watch_total(known)
            try:
                watch = observer.schedule(
                    handler, str(root), recursive=True, event_filter=_WATCHED_EVENTS
                )
                if fresh:
                    observer.start()
            except BaseException:
                if fresh:
                    _stop_quietly(observer)
                raise
            if fresh:
                self._current[key] = observer
                self._roots[observer] = 0
                if native:
                    known = self._fds[observer] = _inotify_fds() - fds_before
                    before = 0
            self._roots[observer] += 1
            self._holders[observer, watch] = self._holders.get((observer, watch), 0) + 1
            after = _watch_total(known) if native and known else None
            added = None if after is None or before is None else after - before
            return _Watch(observer, watch, _emitter_of(observer, watch), added)

    def unschedule(self, scheduled: _Watch) -> None:
        """Stop watching a root; the observer stops with its last root."""
        observer, watch = scheduled.observer, scheduled.watch
        with self._lock:
            holders = self._holders.pop((observer, watch), 0) - 1
            try:
                if holders > 0:  # another Watcher has the same root: only this handler goes
                    self._holders[observer, watch] = holders
                elif observer.is_alive():
                    observer.unschedule(watch)
            except (KeyError, ValueError, RuntimeError):
                logging.getLogger(__name__).debug("unschedule failed", exc_info=True)
            roots = self._roots.get(observer, 1) - 1
            if roots > 0:
                self._roots[observer] = roots
                return
            self._roots.pop(observer, None)
            self._fds.pop(observer, None)
            for key, current in list(self._current.items()):
                if current is observer:
                    del self._current[key]
        _stop_quietly(observer)

    def register(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.add(watcher)

    def forget(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    def check(self) -> list[Watcher]:
        """Supervise every watcher of the hub (``Watcher.check``); the ones that had
        to restart, each with a full rescan pending."""
        with self._lock:
            watchers = list(self._watchers)
        return [watcher for watcher in watchers if watcher.check()]

    @property
    def observers(self) -> list[BaseObserver]:
        """The observers running now (one per kind in use)."""
        with self._lock:
            return list(self._current.values())


class Watcher:
    """The watch of one root, by mode: native, polling, or none, on a hub's
    shared observer (``hub``; by default one of its own).

    ``check()`` is the supervisor: called periodically (the daemon calls the
    hub's, which checks every root), it reschedules a dead watch (and asks for a
    full rescan, since events were lost).
    """

    def __init__(
        self,
        root: Path,
        tracker: ChangeTracker,
        mode: WatchMode = "auto",
        *,
        poll_interval: float = 1.0,
        warn: Callable[[str], None] = lambda _message: None,
        hub: ObserverHub | None = None,
    ) -> None:
        self.root = root
        self.tracker = tracker
        self.mode = mode
        self.poll_interval = poll_interval
        self._warn = warn
        self._hub = hub or ObserverHub()
        self._handler = _Handler(tracker)
        self._scheduled: _Watch | None = None
        # start, check and stop may come from the pair's turn and the daemon's loop.
        self._lock = threading.RLock()
        self._stopped = False
        self.kind: WatchKind = "off"
        self.restarts = 0
        self._limit_warned = False
        self._root_identity: tuple[int, int] | None = None
        _overflow.trackers.add(tracker)

    def start(self) -> None:
        """Start watching. Raises LocalError when a native-only watch cannot start."""
        with self._lock:
            self._stopped = False
            self._start()
            self._hub.register(self)

    def _start(self) -> None:
        self._root_identity = _identity(self.root)
        if self.mode == "off":
            self.kind = "off"
            return
        if self.mode in ("auto", "native"):
            try:
                with _NATIVE_START:
                    scheduled = self._hub.schedule(
                        "native", self._native_observer, self._handler, self.root
                    )
                missing = _unwatched_directories(self.root, scheduled.added_watches)
                if missing and self.mode == "auto":
                    # watchdog skips subdirectories it could not watch (ENOSPC)
                    # without a word: most of the tree would go unseen.
                    self._hub.unschedule(scheduled)
                    raise OSError(errno.ENOSPC, f"{missing} directories could not be watched")
                self._scheduled = scheduled
                self.kind = "native"
                return
            except OSError as exc:
                if self.mode == "native" or exc.errno not in _LIMIT_SYSCTL:
                    raise LocalError(
                        f"cannot watch {self.root}: {exc.strerror or exc}", path=str(self.root)
                    ) from exc
                self._warn_limit(exc)
        interval = self.poll_interval
        self._scheduled = self._hub.schedule(
            f"poll {interval}", lambda: PollingObserver(timeout=interval), self._handler, self.root
        )
        self.kind = "poll"

    def _native_observer(self) -> BaseObserver:
        """The platform's native observer (inotify on Linux); a seam for tests."""
        return Observer()

    def _warn_limit(self, exc: OSError) -> None:
        if self._limit_warned:
            return
        self._limit_warned = True
        sysctl = _LIMIT_SYSCTL.get(exc.errno or 0, "fs.inotify.max_user_watches")
        self._warn(
            f"inotify limit reached watching {self.root} ({exc.strerror}); polling this "
            f"pair instead. Raise it with: sysctl -w {sysctl}=<larger>"
        )

    @property
    def alive(self) -> bool:
        scheduled = self._scheduled
        if scheduled is None:
            return self.kind == "off"
        emitter = scheduled.emitter
        return scheduled.observer.is_alive() and emitter is not None and emitter.is_alive()

    @property
    def root_replaced(self) -> bool:
        """The root is not the directory the observer was started on (moved away and
        made again, or a mount appeared over it): the observer watches the old one."""
        now = _identity(self.root)
        return now is not None and now != self._root_identity

    def check(self) -> bool:
        """Reschedule a dead watch, or one of a root that was replaced; True when it
        had to (a full rescan is then pending)."""
        with self._lock:
            if self._stopped:  # a sweep that took it before its stop
                return False
            if self.kind == "off":
                self._root_identity = _identity(self.root)
                return False
            if self.alive and not self.root_replaced:
                return False
            self.restarts += 1
            old, self._scheduled = self._scheduled, None
            if old is not None:
                self._hub.unschedule(old)
            self.tracker.mark_full()
            try:
                self._start()
            except LocalError as exc:
                self._warn(f"{exc.message}; relying on periodic rescans")
                self.kind = "off"
            return True

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            self._hub.forget(self)
            scheduled, self._scheduled = self._scheduled, None
            if scheduled is not None:
                self._hub.unschedule(scheduled)
            _overflow.trackers.discard(self.tracker)

    @property
    def observer(self) -> BaseObserver | None:
        """The observer this root is watched by, if any (tests stop it to exercise
        ``check``); under a shared hub, every root's."""
        scheduled = self._scheduled
        return None if scheduled is None else scheduled.observer


# Native watches are scheduled one at a time, so the inotify descriptor a new
# observer opened, and the watches a root added to it, can be told apart.
_NATIVE_START = threading.Lock()
_PROC_FD = Path("/proc/self/fd")


def _inotify_fds() -> set[int]:
    """This process's inotify descriptors (empty where /proc cannot tell)."""
    fds: set[int] = set()
    try:
        entries = list(_PROC_FD.iterdir())
    except OSError:
        return fds
    for entry in entries:
        try:
            if str(entry.readlink()) == "anon_inode:inotify":
                fds.add(int(entry.name))
        except (OSError, ValueError):
            continue
    return fds


def _watch_total(fds: set[int]) -> int | None:
    """The kernel's watches on ``fds`` (Linux's /proc/self/fdinfo); None when it
    cannot tell, or when an observer has not exactly one descriptor."""
    if len(fds) != 1:
        return None
    [fd] = fds
    try:
        text = Path(f"/proc/self/fdinfo/{fd}").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text.count("inotify wd:")


def _emitter_of(observer: BaseObserver, watch: ObservedWatch) -> EventEmitter | None:
    try:
        return next((e for e in list(observer.emitters) if e.watch == watch), None)
    except RuntimeError:  # the set changed while copied: the next check reschedules
        return None


def _unwatched_directories(root: Path, added_watches: int | None) -> int:
    """How many directories under ``root`` a fresh native watch misses: the
    directories of the tree less the kernel watches its scheduling added; 0 when
    that is not known."""
    if added_watches is None:
        return 0
    directories = 1
    for dirpath, dirnames, _files in os.walk(root, followlinks=False):
        # watchdog does not watch through symlinks; neither does this count.
        directories += sum(1 for d in dirnames if not (Path(dirpath) / d).is_symlink())
    return max(0, directories - added_watches)


def _identity(root: Path) -> tuple[int, int] | None:
    """(device, inode) of the root directory, or None while it is missing."""
    try:
        found = root.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _stop_quietly(observer: BaseObserver, timeout: float = 5.0) -> None:
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout)
    except Exception:  # stopping a broken observer must not fail the caller
        logging.getLogger(__name__).debug("observer stop failed", exc_info=True)
