"""The applier hands actions to its pool ahead of the threads; a stop still starts nothing new.

The pool is the pass's own or one shared between passes (the daemon's): either way
the pass returns only once its actions have finished, and leaves a shared pool running.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.apply import TRANSFER_THREAD_PREFIX, transfer_pool
from cntr_sync.emulator import Emulator
from cntr_sync.engine import Engine
from cntr_sync.errors import AuthenticationError
from cntr_sync.index import Index
from cntr_sync.models import Pair
from helpers import NoSleep

BASE_URL = "http://emulator.test/v1"


class CancelOnFirstUpload(httpx.BaseTransport):
    """Sets ``cancel`` when the first upload arrives; counts the uploads that arrive."""

    def __init__(self, inner: httpx.BaseTransport, cancel: threading.Event) -> None:
        self.inner = inner
        self.cancel = cancel
        self.uploads = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/files"):
            with self._lock:
                self.uploads += 1
            self.cancel.set()
        return self.inner.handle_request(request)


@pytest.fixture(params=["own pool", "shared pool"])
def shared_pool(request: pytest.FixtureRequest) -> Iterator[ThreadPoolExecutor | None]:
    """None (each pass makes its own pool) or a pool of 2 threads shared by the passes."""
    if request.param == "own pool":
        yield None
        return
    with transfer_pool(2) as pool:
        yield pool


def make_files(root: Path, count: int) -> Pair:
    root.mkdir()
    for number in range(count):
        (root / f"f{number:02d}.txt").write_text(f"file {number}\n")
    return Pair(name="t", local=root, container="box")


def test_actions_handed_ahead_do_not_start_once_the_pass_is_stopping(
    tmp_path: Path, shared_pool: ThreadPoolExecutor | None
) -> None:
    root = tmp_path / "tree"
    pair = make_files(root, 30)
    with Emulator(data_dir=tmp_path / "emu") as emu:
        cancel = threading.Event()
        transport = CancelOnFirstUpload(emu.transport(), cancel)
        with (
            ContainersClient(
                "sk-test", base_url=BASE_URL, transport=transport, sleep=NoSleep()
            ) as client,
            Index.open(
                tmp_path / "state", base_url=BASE_URL, root=root, container_spec="box"
            ) as index,
        ):
            cut = Engine(
                client, index, pair, concurrency=2, transfer_executor=shared_pool
            ).run_pass(cancel=cancel)
            # Only uploads a thread had started before the stop went out; each was recorded.
            assert cut.cancelled and not cut.in_sync
            assert 1 <= transport.uploads <= 2
            assert cut.uploaded == transport.uploads and cut.failures == []
            rest = Engine(
                client, index, pair, concurrency=2, transfer_executor=shared_pool
            ).run_pass()
            assert rest.uploaded == 30 - cut.uploaded and rest.in_sync
            names = Counter(
                f.path.rpartition("-")[2] for f in client.iter_files(rest.container_id or "")
            )
        assert sorted(names) == sorted(f"f{number:02d}.txt" for number in range(30))
        assert set(names.values()) == {1}


class SlowUploads(httpx.BaseTransport):
    """Holds each upload a moment and counts those in flight; with ``refuse_after``,
    answers 401 (fatal: the pass ends) to every upload after that many."""

    def __init__(self, inner: httpx.BaseTransport, *, refuse_after: int | None = None) -> None:
        self.inner = inner
        self.refuse_after = refuse_after
        self.in_flight = 0
        self.started = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not (request.method == "POST" and request.url.path.endswith("/files")):
            return self.inner.handle_request(request)
        with self._lock:
            self.started += 1
            self.in_flight += 1
            self.threads.add(threading.current_thread().name)
            refuse = self.refuse_after is not None and self.started > self.refuse_after
        try:
            threading.Event().wait(0.05)  # the others pile up meanwhile
            if refuse:
                return httpx.Response(401, json={"error": {"message": "bad key"}})
            return self.inner.handle_request(request)
        finally:
            with self._lock:
                self.in_flight -= 1


def run_on_shared_pool(tmp_path: Path, pool: ThreadPoolExecutor, transport: SlowUploads) -> Pair:
    pair = make_files(tmp_path / "tree", 12)
    with (
        ContainersClient(
            "sk-test", base_url=BASE_URL, transport=transport, sleep=NoSleep()
        ) as client,
        Index.open(
            tmp_path / "state", base_url=BASE_URL, root=pair.local, container_spec="box"
        ) as index,
    ):
        result = Engine(client, index, pair, concurrency=4, transfer_executor=pool).run_pass()
        assert result.uploaded == 12 and result.in_sync
    return pair


def test_a_pass_on_a_shared_pool_returns_after_its_transfers_and_leaves_the_pool_running(
    tmp_path: Path,
) -> None:
    with Emulator(data_dir=tmp_path / "emu") as emu, transfer_pool(4) as pool:
        transport = SlowUploads(emu.transport())
        run_on_shared_pool(tmp_path, pool, transport)
        assert transport.in_flight == 0
        # Its transfers ran on the shared pool's threads, and the pool still takes work.
        assert transport.threads
        assert all(name.startswith(TRANSFER_THREAD_PREFIX) for name in transport.threads)
        assert pool.submit(lambda: "still running").result(timeout=10) == "still running"


def test_a_fatal_error_on_a_shared_pool_waits_for_the_transfers_in_flight(
    tmp_path: Path,
) -> None:
    pair = make_files(tmp_path / "tree", 30)
    with Emulator(data_dir=tmp_path / "emu") as emu, transfer_pool(4) as pool:
        transport = SlowUploads(emu.transport(), refuse_after=1)
        with (
            ContainersClient(
                "sk-test", base_url=BASE_URL, transport=transport, sleep=NoSleep()
            ) as client,
            Index.open(
                tmp_path / "state", base_url=BASE_URL, root=pair.local, container_spec="box"
            ) as index,
        ):
            with pytest.raises(AuthenticationError):
                Engine(client, index, pair, concurrency=4, transfer_executor=pool).run_pass()
            # Nothing of that pass runs on after it: the ones no thread took were
            # cancelled, and those on a thread had ended when it raised.
            assert transport.in_flight == 0
            started = transport.started
            assert 1 < started < 30
            assert pool.submit(lambda: "still running").result(timeout=10) == "still running"
            assert transport.started == started


class CountingPool(ThreadPoolExecutor):
    """Counts the work handed to it."""

    submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_a_pass_waiting_for_a_busy_shared_pool_still_shows_progress(tmp_path: Path) -> None:
    """In line behind other passes' transfers, a pass is not hung (as in the pacer's waits)."""
    pair = make_files(tmp_path / "tree", 3)
    ticks = Counter[str]()
    busy = threading.Event()
    with Emulator(data_dir=tmp_path / "emu") as emu, CountingPool(1) as pool:
        transport = SlowUploads(emu.transport())
        occupied = pool.submit(busy.wait, 30)  # another pass's transfer holds the thread
        with (
            ContainersClient(
                "sk-test", base_url=BASE_URL, transport=transport, sleep=NoSleep()
            ) as client,
            Index.open(
                tmp_path / "state", base_url=BASE_URL, root=pair.local, container_spec="box"
            ) as index,
        ):
            engine = Engine(
                client,
                index,
                pair,
                concurrency=1,
                transfer_executor=pool,
                tick=lambda: ticks.update(["tick"]),
            )
            with ThreadPoolExecutor(1) as runner:
                passing = runner.submit(engine.run_pass)
                try:
                    # Its uploads are handed over and wait; meanwhile it ticks, once a nap.
                    deadline = time.monotonic() + 20
                    while pool.submitted < 2 and time.monotonic() < deadline:
                        time.sleep(0.01)
                    before = ticks["tick"]
                    while ticks["tick"] < before + 2 and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert ticks["tick"] >= before + 2
                    assert transport.started == 0
                finally:
                    busy.set()
                result = passing.result(timeout=30)
        assert occupied.result(timeout=5) is True
        assert result.uploaded == 3 and result.in_sync
