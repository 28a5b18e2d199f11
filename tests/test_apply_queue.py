"""The applier hands actions to its pool ahead of the threads; a stop still starts nothing new."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator
from cntr_sync.engine import Engine
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


def test_actions_handed_ahead_do_not_start_once_the_pass_is_stopping(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    for number in range(30):
        (root / f"f{number:02d}.txt").write_text(f"file {number}\n")
    pair = Pair(name="t", local=root, container="box")
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
            cut = Engine(client, index, pair, concurrency=2).run_pass(cancel=cancel)
            # Only uploads a thread had started before the stop went out; each was recorded.
            assert cut.cancelled and not cut.in_sync
            assert 1 <= transport.uploads <= 2
            assert cut.uploaded == transport.uploads and cut.failures == []
            rest = Engine(client, index, pair, concurrency=2).run_pass()
            assert rest.uploaded == 30 - cut.uploaded and rest.in_sync
            names = Counter(
                f.path.rpartition("-")[2] for f in client.iter_files(rest.container_id or "")
            )
        assert sorted(names) == sorted(f"f{number:02d}.txt" for number in range(30))
        assert set(names.values()) == {1}
