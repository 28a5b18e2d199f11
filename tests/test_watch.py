"""watch: the change tracker's debounce bookkeeping, the event handler, and the
supervised observers (native, polling, off, and the inotify-limit fallback)."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from watchdog.events import (
    DirMovedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)
from watchdog.observers.api import BaseObserver, EventEmitter
from watchdog.observers.inotify import InotifyObserver

from cntr_sync.errors import LocalError
from cntr_sync.watch import (
    MAX_TRACKED_PATHS,
    ChangeTracker,
    ObserverHub,
    Watcher,
    WatchMode,
    _Handler,
)

WAIT = 10.0  # generous bound for an observer to report a change on a loaded machine


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(0.02)


def saw_path(tracker: ChangeTracker, path: Path) -> Callable[[], bool]:
    """A predicate that takes the pending set and remembers whether ``path`` was in it."""
    seen: list[bool] = []

    def check() -> bool:
        paths, full = tracker.take()
        if str(path) in paths or full:
            seen.append(True)
        return bool(seen)

    return check


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    """Watchers a test starts; all stopped at teardown."""
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.stop(timeout=5.0)


# -- ChangeTracker --------------------------------------------------------------------


def test_tracker_debounce_timestamps_with_a_fake_clock() -> None:
    clock = FakeClock()
    tracker = ChangeTracker(clock)
    assert (tracker.first_at, tracker.last_at, tracker.pending) == (None, None, 0)

    tracker.mark("/r/a")
    clock.now += 0.5
    tracker.mark("/r/b")
    clock.now += 0.25
    tracker.mark("/r/a")  # duplicates collapse, but still push last_at
    assert (tracker.first_at, tracker.last_at) == (1000.0, 1000.75)
    assert tracker.pending == 2
    assert tracker.events == 3

    assert tracker.take() == (frozenset({"/r/a", "/r/b"}), False)
    assert (tracker.first_at, tracker.last_at, tracker.pending) == (None, None, 0)
    assert tracker.take() == (frozenset(), False)

    clock.now += 10
    tracker.mark_full()
    assert (tracker.first_at, tracker.last_at) == (1010.75, 1010.75)
    assert tracker.pending == 1
    tracker.mark("/r/c")
    assert tracker.pending == 2
    assert tracker.take() == (frozenset({"/r/c"}), True)
    assert tracker.pending == 0


def test_re_marking_after_a_deferred_pass_keeps_the_first_change_time() -> None:
    clock = FakeClock()
    tracker = ChangeTracker(clock)
    tracker.mark("a")
    first = tracker.first_at
    clock.now += 5
    tracker.take()  # a pass starts, then defers the file
    tracker.mark_full(since=first)
    assert tracker.first_at == first  # max_delay still counts from the first change
    assert tracker.last_at == clock.now
    tracker.take()
    tracker.mark_full(since=None)
    assert tracker.first_at == clock.now


def test_tracker_overflow_turns_into_a_full_rescan() -> None:
    tracker = ChangeTracker(FakeClock())
    for number in range(MAX_TRACKED_PATHS):
        tracker.mark(f"/r/{number}")
    assert tracker.pending == MAX_TRACKED_PATHS
    tracker.mark("/r/one-too-many")
    assert tracker.pending == MAX_TRACKED_PATHS + 1
    paths, full = tracker.take()
    assert full
    assert len(paths) == MAX_TRACKED_PATHS
    assert "/r/one-too-many" not in paths


def waited_for(tracker: ChangeTracker, poke: Callable[[], None]) -> float:
    """Seconds a ``wait(30)`` lasted while ``poke`` ran every 0.1 s."""
    waited: list[float] = []

    def waiter() -> None:
        started = time.monotonic()
        tracker.wait(30.0)
        waited.append(time.monotonic() - started)

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5.0
    # Poked again and again: a poke before the waiter blocks would be lost.
    while thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
        poke()
        thread.join(0.1)
    assert not thread.is_alive(), "wait() did not wake up"
    return waited[0]


def test_tracker_wait_wakes_on_mark_and_on_wake() -> None:
    tracker = ChangeTracker()
    assert waited_for(tracker, lambda: tracker.mark("/r/x")) < 5.0
    assert waited_for(tracker, tracker.wake) < 5.0
    assert tracker.take() == (frozenset({"/r/x"}), False)


def test_the_listener_hears_a_clean_tracker_turn_dirty_and_a_wake_only() -> None:
    """The scheduler's wake-up: the first change of a quiet pair and a stop call it;
    the rest of a burst only pushes the quiet period back, which the turn sees."""
    tracker = ChangeTracker(FakeClock())
    calls: list[int] = []
    tracker.listener = lambda: calls.append(tracker.pending)
    tracker.mark("/r/a")
    tracker.mark("/r/b")
    tracker.mark_full()
    assert calls == [1]
    tracker.wake()
    assert calls == [1, 3]
    tracker.take()
    tracker.mark("/r/c")
    assert calls == [1, 3, 1]


def test_tracker_wait_times_out() -> None:
    tracker = ChangeTracker()
    started = time.monotonic()
    tracker.wait(0.05)
    tracker.wait(-1.0)  # a deadline in the past returns at once
    assert time.monotonic() - started < 2.0


# -- the event handler ----------------------------------------------------------------------


def test_handler_marks_source_and_destination_and_skips_reads() -> None:
    tracker = ChangeTracker(FakeClock())
    handler = _Handler(tracker)
    handler.dispatch(FileCreatedEvent("/r/new"))
    handler.dispatch(FileModifiedEvent(b"/r/bytes"))
    handler.dispatch(FileMovedEvent("/r/old", "/r/moved"))
    handler.dispatch(DirMovedEvent("/r/dir", "/r/dir2"))
    handler.dispatch(FileOpenedEvent("/r/read-only"))
    handler.dispatch(FileClosedNoWriteEvent("/r/read-only"))
    # Our own partial downloads are not changes of the tree.
    handler.dispatch(FileCreatedEvent("/r/sub/.cntrsync-partial-abc-123"))
    handler.dispatch(FileModifiedEvent("/r/sub/.cntrsync-partial-abc-123"))
    assert tracker.take() == (
        frozenset({"/r/new", "/r/bytes", "/r/old", "/r/moved", "/r/dir", "/r/dir2"}),
        False,
    )


@pytest.mark.parametrize(
    "event",
    [
        object(),  # no attributes at all
        SimpleNamespace(event_type="modified", src_path=None, dest_path=""),
        SimpleNamespace(event_type="moved", src_path="/r/a", dest_path=12),
        SimpleNamespace(event_type=None, src_path=3.5, dest_path=None),
    ],
)
def test_handler_never_raises_and_asks_for_a_full_rescan(event: Any) -> None:
    tracker = ChangeTracker(FakeClock())
    _Handler(tracker).dispatch(event)
    _paths, full = tracker.take()
    assert full


def test_inotify_overflow_log_marks_every_watched_pair_full(
    tmp_path: Path, watchers: list[Watcher]
) -> None:
    tracker = ChangeTracker(FakeClock())
    watcher = Watcher(tmp_path, tracker, "off")
    watchers.append(watcher)
    logging.getLogger("watchdog.observers.inotify_c").warning(
        "Inotify queue overflowed; filesystem events were lost"
    )
    assert tracker.take() == (frozenset(), True)


# -- Watcher -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["native", "poll", "auto"])
def test_watcher_sees_a_created_file(
    tmp_path: Path, watchers: list[Watcher], mode: WatchMode
) -> None:
    tracker = ChangeTracker()
    watcher = Watcher(tmp_path, tracker, mode, poll_interval=0.1)
    watchers.append(watcher)
    watcher.start()
    assert watcher.kind == ("poll" if mode == "poll" else "native")
    assert watcher.alive
    created = tmp_path / "sub" / "new.txt"
    created.parent.mkdir()
    created.write_text("hello")
    wait_until(saw_path(tracker, created), WAIT, f"a {mode} event for {created}")


@pytest.mark.parametrize("mode", ["native", "poll"])
def test_roots_share_one_observer_of_their_hub(
    tmp_path: Path, watchers: list[Watcher], mode: WatchMode
) -> None:
    """A daemon's pairs share one observer (for native: one inotify instance), with
    watchdog's emitter thread per root; each root's events reach its own tracker."""
    hub = ObserverHub()
    trackers = [ChangeTracker() for _ in range(3)]
    roots = [tmp_path / f"root{n}" for n in range(3)]
    for root, tracker in zip(roots, trackers, strict=True):
        root.mkdir()
        watcher = Watcher(root, tracker, mode, poll_interval=0.1, hub=hub)
        watchers.append(watcher)
        watcher.start()
    [observer] = hub.observers
    assert all(watcher.observer is observer for watcher in watchers)
    assert len(observer.emitters) == 3
    created = roots[1] / "new.txt"
    created.write_text("hello")
    wait_until(saw_path(trackers[1], created), WAIT, "the event in root1")
    assert trackers[0].take() == (frozenset(), False)
    assert trackers[2].take() == (frozenset(), False)

    watchers[0].stop()
    assert observer.is_alive() and len(observer.emitters) == 2  # the others watch on
    for watcher in watchers[1:]:
        watcher.stop()
    assert hub.observers == []
    assert not observer.is_alive()  # stopped with its last root


def test_a_dead_shared_observer_is_replaced_for_every_root_by_one_check(
    tmp_path: Path, watchers: list[Watcher]
) -> None:
    hub = ObserverHub()
    trackers = [ChangeTracker() for _ in range(2)]
    for number, tracker in enumerate(trackers):
        root = tmp_path / f"root{number}"
        root.mkdir()
        watchers.append(Watcher(root, tracker, "native", hub=hub))
        watchers[-1].start()
    [first] = hub.observers
    first.stop()
    first.join(5.0)

    assert sorted(w.root.name for w in hub.check()) == ["root0", "root1"]
    [second] = hub.observers
    assert second is not first and len(second.emitters) == 2
    assert all(w.alive and w.restarts == 1 for w in watchers)
    assert all(t.take() == (frozenset(), True) for t in trackers)  # events were lost
    assert hub.check() == []
    created = tmp_path / "root0" / "after.txt"
    created.write_text("seen")
    wait_until(saw_path(trackers[0], created), WAIT, "an event from the new observer")


def test_mode_off_starts_nothing(tmp_path: Path, watchers: list[Watcher]) -> None:
    tracker = ChangeTracker()
    watcher = Watcher(tmp_path, tracker, "off")
    watchers.append(watcher)
    watcher.start()
    assert (watcher.kind, watcher.observer) == ("off", None)
    assert watcher.alive
    assert watcher.check() is False
    # A native watcher on the same tree is the control: once it has seen the
    # change, an observer of the "off" watcher would have seen it too.
    control = ChangeTracker()
    control_watcher = Watcher(tmp_path, control, "native")
    watchers.append(control_watcher)
    control_watcher.start()
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("x")
    wait_until(saw_path(control, unseen), WAIT, "the control watcher to see the change")
    assert tracker.pending == 0
    assert watcher.restarts == 0


@pytest.mark.parametrize("mode", ["native", "poll"])
def test_check_restarts_a_stopped_observer(
    tmp_path: Path, watchers: list[Watcher], mode: WatchMode
) -> None:
    tracker = ChangeTracker()
    watcher = Watcher(tmp_path, tracker, mode, poll_interval=0.1)
    watchers.append(watcher)
    watcher.start()
    assert watcher.check() is False  # healthy: nothing to do

    first = watcher.observer
    assert first is not None
    first.stop()
    first.join(5.0)
    assert not watcher.alive

    assert watcher.check() is True
    assert watcher.restarts == 1
    assert tracker.take() == (frozenset(), True)  # events were lost: rescan everything
    second = watcher.observer
    assert second is not None and second is not first
    assert watcher.alive and watcher.kind == mode
    assert watcher.check() is False

    created = tmp_path / "after-restart.txt"
    created.write_text("still watched")
    wait_until(saw_path(tracker, created), WAIT, "an event from the restarted observer")


def test_stop_releases_the_observer(tmp_path: Path) -> None:
    watcher = Watcher(tmp_path, ChangeTracker(), "native")
    watcher.start()
    observer = watcher.observer
    assert observer is not None
    watcher.stop()
    assert watcher.observer is None
    assert not observer.is_alive()
    watcher.stop()  # twice is harmless


# -- the inotify-limit fallback ----------------------------------------------------------------


class _FailingEmitter(EventEmitter):
    """Fails to start the way the inotify emitter does when a kernel limit is hit."""

    error_number = errno.ENOSPC

    def on_thread_start(self) -> None:
        raise OSError(self.error_number, os.strerror(self.error_number))

    def queue_events(self, timeout: float) -> None:
        time.sleep(timeout)


def failing_observer(error_number: int) -> BaseObserver:
    emitter_class = type("Emitter", (_FailingEmitter,), {"error_number": error_number})
    return BaseObserver(emitter_class=emitter_class)


class LimitedWatcher(Watcher):
    """A Watcher whose native observer fails with ``error_number`` (through the
    ``_native_observer`` factory) while ``failing`` is set."""

    def __init__(self, *args: Any, error_number: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error_number = error_number
        self.failing = True
        self.native_attempts = 0

    def _native_observer(self) -> BaseObserver:
        self.native_attempts += 1
        if self.failing:
            return failing_observer(self.error_number)
        return super()._native_observer()


@pytest.mark.parametrize(
    ("error_number", "sysctl"),
    [
        (errno.ENOSPC, "fs.inotify.max_user_watches"),
        (errno.EMFILE, "fs.inotify.max_user_instances"),
    ],
)
def test_inotify_limit_falls_back_to_polling_and_names_the_sysctl(
    tmp_path: Path, watchers: list[Watcher], error_number: int, sysctl: str
) -> None:
    warnings: list[str] = []
    tracker = ChangeTracker()
    watcher = LimitedWatcher(
        tmp_path,
        tracker,
        "auto",
        poll_interval=0.1,
        warn=warnings.append,
        error_number=error_number,
    )
    watchers.append(watcher)
    watcher.start()
    assert watcher.kind == "poll"
    assert watcher.alive
    assert len(warnings) == 1
    assert f"sysctl -w {sysctl}=" in warnings[0]
    assert str(tmp_path) in warnings[0]

    created = tmp_path / "polled.txt"
    created.write_text("seen by polling")
    wait_until(saw_path(tracker, created), WAIT, "an event from the polling fallback")

    # A restart that hits the limit again falls back again, without repeating the warning.
    observer = watcher.observer
    assert observer is not None
    observer.stop()
    observer.join(5.0)
    assert watcher.check() is True
    assert watcher.kind == "poll"
    assert watcher.native_attempts == 2
    assert len(warnings) == 1


def test_native_only_mode_refuses_to_fall_back(tmp_path: Path) -> None:
    watcher = LimitedWatcher(tmp_path, ChangeTracker(), "native", error_number=errno.ENOSPC)
    with pytest.raises(LocalError, match="cannot watch"):
        watcher.start()
    assert watcher.observer is None


def test_other_errors_are_not_taken_for_a_limit(tmp_path: Path) -> None:
    warnings: list[str] = []
    watcher = LimitedWatcher(
        tmp_path, ChangeTracker(), "auto", warn=warnings.append, error_number=errno.EACCES
    )
    with pytest.raises(LocalError, match="cannot watch"):
        watcher.start()
    assert warnings == []


def test_failed_restart_relies_on_rescans(tmp_path: Path, watchers: list[Watcher]) -> None:
    warnings: list[str] = []
    tracker = ChangeTracker()
    watcher = LimitedWatcher(
        tmp_path, tracker, "native", warn=warnings.append, error_number=errno.EACCES
    )
    watchers.append(watcher)
    watcher.failing = False
    watcher.start()
    assert watcher.kind == "native"

    watcher.failing = True
    observer = watcher.observer
    assert observer is not None
    observer.stop()
    observer.join(5.0)
    assert watcher.check() is True
    assert (watcher.kind, watcher.observer) == ("off", None)
    assert tracker.take() == (frozenset(), True)
    assert len(warnings) == 1
    assert "relying on periodic rescans" in warnings[0]
    assert watcher.check() is False  # "off" is not restarted again and again


@pytest.mark.parametrize("mode", ["native", "poll"])
def test_a_root_moved_away_and_made_again_is_watched_again(
    tmp_path: Path, watchers: list[Watcher], mode: WatchMode
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    tracker = ChangeTracker()
    watcher = Watcher(root, tracker, mode, poll_interval=0.1)
    watchers.append(watcher)
    watcher.start()
    root.rename(tmp_path / "moved-away")
    root.mkdir()
    assert watcher.root_replaced
    assert watcher.check() is True
    assert tracker.take()[1]  # a full rescan: events were lost
    assert not watcher.root_replaced and watcher.check() is False
    created = root / "after.txt"
    created.write_text("seen")
    wait_until(saw_path(tracker, created), WAIT, "an event in the new root")


class _TopOnlyObserver(InotifyObserver):
    """Watches the root alone, as watchdog ends up when the kernel refuses watches
    for subdirectories (it skips their ENOSPC without a word)."""

    def schedule(self, event_handler: Any, path: str, *, recursive: bool = False, **kw: Any) -> Any:
        return super().schedule(event_handler, path, recursive=False, **kw)


class _TopOnlyWatcher(Watcher):
    def _native_observer(self) -> BaseObserver:
        return _TopOnlyObserver()


def test_a_native_watch_missing_subdirectories_falls_back_to_polling(
    tmp_path: Path, watchers: list[Watcher]
) -> None:
    for sub in ("a", "a/b", "c"):
        (tmp_path / sub).mkdir()
    warnings: list[str] = []
    watcher = _TopOnlyWatcher(tmp_path, ChangeTracker(), "auto", warn=warnings.append)
    watchers.append(watcher)
    watcher.start()
    assert watcher.kind == "poll"
    assert len(warnings) == 1 and "fs.inotify.max_user_watches" in warnings[0]
    assert "3 directories could not be watched" in warnings[0]
    # A complete native watch stays native.
    healthy = Watcher(tmp_path, ChangeTracker(), "auto")
    watchers.append(healthy)
    healthy.start()
    assert healthy.kind == "native"


def test_the_kernel_is_not_asked_for_opens_or_reads(
    tmp_path: Path, watchers: list[Watcher]
) -> None:
    """A scan opens every directory and file: reported, those opens filled the inotify
    queue of a 100k-file tree, and each overflow made a full rescan that filled it again."""
    from watchdog.observers.inotify import InotifyEmitter  # noqa: PLC0415 - Linux only
    from watchdog.observers.inotify_c import InotifyConstants  # noqa: PLC0415

    watcher = Watcher(tmp_path, ChangeTracker(), "native")
    watchers.append(watcher)
    watcher.start()
    assert watcher.observer is not None
    [emitter] = watcher.observer.emitters
    assert isinstance(emitter, InotifyEmitter)
    mask = emitter.get_event_mask_from_filter()
    assert not mask & InotifyConstants.IN_OPEN
    assert not mask & InotifyConstants.IN_CLOSE_NOWRITE
    # What a change is made of is still asked for.
    for wanted in ("IN_CREATE", "IN_MODIFY", "IN_CLOSE_WRITE", "IN_DELETE", "IN_MOVE"):
        assert mask & getattr(InotifyConstants, wanted), wanted
