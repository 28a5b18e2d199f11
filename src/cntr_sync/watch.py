"""File system events as hints: a debounced dirty set, and supervised observers.

Owns: the watchdog handler (O(1) work per event, never raises), the
``ChangeTracker`` that coalesces events into "something changed, and when",
and ``Watcher``, which starts a native (inotify) or polling observer for one
root, restarts it when it dies and falls back to polling when the kernel's
inotify limits are reached.

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
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from cntr_sync.errors import LocalError
from cntr_sync.models import WatchMode
from cntr_sync.tree_names import PARTIAL_PREFIX

__all__ = ["MAX_TRACKED_PATHS", "ChangeTracker", "WatchKind", "WatchMode", "Watcher"]

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
    worker waits on it and takes the pending set with ``take``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._paths: set[str] = set()
        self._full = False
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.events = 0

    def mark(self, path: str | None = None) -> None:
        """Note a change at ``path`` (None: somewhere, rescan everything)."""
        with self._cond:
            now = self._clock()
            if self.first_at is None:
                self.first_at = now
            self.last_at = now
            self.events += 1
            if path is None or len(self._paths) >= MAX_TRACKED_PATHS:
                self._full = True
            else:
                self._paths.add(path)
            self._cond.notify_all()

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


class Watcher:
    """The observer of one root, by mode: native, polling, or none.

    ``check()`` is the supervisor: called periodically, it restarts a dead
    observer (and asks for a full rescan, since events were lost).
    """

    def __init__(
        self,
        root: Path,
        tracker: ChangeTracker,
        mode: WatchMode = "auto",
        *,
        poll_interval: float = 1.0,
        warn: Callable[[str], None] = lambda _message: None,
    ) -> None:
        self.root = root
        self.tracker = tracker
        self.mode = mode
        self.poll_interval = poll_interval
        self._warn = warn
        self._observer: BaseObserver | None = None
        self.kind: WatchKind = "off"
        self.restarts = 0
        self._limit_warned = False
        self._root_identity: tuple[int, int] | None = None
        _overflow.trackers.add(tracker)

    def start(self) -> None:
        """Start watching. Raises LocalError when a native-only watch cannot start."""
        self._root_identity = _identity(self.root)
        if self.mode == "off":
            self.kind = "off"
            return
        if self.mode in ("auto", "native"):
            try:
                with _NATIVE_START:
                    before = _inotify_fds()
                    observer = self._start(self._native_observer())
                    missing = _unwatched_directories(self.root, _inotify_fds() - before)
                if missing and self.mode == "auto":
                    # watchdog skips subdirectories it could not watch (ENOSPC)
                    # without a word: most of the tree would go unseen.
                    _stop_quietly(observer)
                    raise OSError(errno.ENOSPC, f"{missing} directories could not be watched")
                self._observer = observer
                self.kind = "native"
                return
            except OSError as exc:
                if self.mode == "native" or exc.errno not in _LIMIT_SYSCTL:
                    raise LocalError(
                        f"cannot watch {self.root}: {exc.strerror or exc}", path=str(self.root)
                    ) from exc
                self._warn_limit(exc)
        self._observer = self._start(PollingObserver(timeout=self.poll_interval))
        self.kind = "poll"

    def _native_observer(self) -> BaseObserver:
        """The platform's native observer (inotify on Linux); a seam for tests."""
        return Observer()

    def _start(self, observer: BaseObserver) -> BaseObserver:
        observer.daemon = True
        observer.schedule(
            _Handler(self.tracker), str(self.root), recursive=True, event_filter=_WATCHED_EVENTS
        )
        try:
            observer.start()
        except BaseException:
            _stop_quietly(observer)
            raise
        return observer

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
        observer = self._observer
        if observer is None:
            return self.kind == "off"
        return observer.is_alive() and all(e.is_alive() for e in observer.emitters)

    @property
    def root_replaced(self) -> bool:
        """The root is not the directory the observer was started on (moved away and
        made again, or a mount appeared over it): the observer watches the old one."""
        now = _identity(self.root)
        return now is not None and now != self._root_identity

    def check(self) -> bool:
        """Restart a dead observer, or one watching a root that was replaced; True
        when it had to (a full rescan is then pending)."""
        if self.kind == "off":
            self._root_identity = _identity(self.root)
            return False
        if self.alive and not self.root_replaced:
            return False
        self.restarts += 1
        old, self._observer = self._observer, None
        if old is not None:
            _stop_quietly(old)
        self.tracker.mark_full()
        try:
            self.start()
        except LocalError as exc:
            self._warn(f"{exc.message}; relying on periodic rescans")
            self.kind = "off"
        return True

    def stop(self, timeout: float = 5.0) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            _stop_quietly(observer, timeout)
        _overflow.trackers.discard(self.tracker)

    @property
    def observer(self) -> BaseObserver | None:
        """The running observer, if any (tests stop it to exercise ``check``)."""
        return self._observer


# Native observers start one at a time, so the inotify descriptor a start
# opened can be told apart from another pair's.
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


def _watch_count(fd: int) -> int | None:
    try:
        text = Path(f"/proc/self/fdinfo/{fd}").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return sum(1 for line in text.splitlines() if line.startswith("inotify wd:"))


def _unwatched_directories(root: Path, new_fds: set[int]) -> int:
    """How many directories under ``root`` a freshly started native observer misses.

    Counts the kernel's watches on the observer's inotify descriptor (Linux's
    /proc/self/fdinfo) against the directories of the tree; 0 when it cannot tell.
    """
    counts = [count for fd in new_fds if (count := _watch_count(fd)) is not None]
    if len(counts) != 1:
        return 0
    directories = 1
    for dirpath, dirnames, _files in os.walk(root, followlinks=False):
        # watchdog does not watch through symlinks; neither does this count.
        directories += sum(1 for d in dirnames if not (Path(dirpath) / d).is_symlink())
    return max(0, directories - counts[0])


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
