"""A file cut shorter while its upload reads it: nothing stored, hashed again, sent again."""

from __future__ import annotations

from pathlib import Path

import httpx

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator
from cntr_sync.engine import Engine
from cntr_sync.index import Index
from cntr_sync.models import Pair
from helpers import NoSleep

BASE_URL = "http://emulator.test/v1"


class CutsShorterOnce(httpx.BaseTransport):
    """Rewrites ``path`` shorter when the first upload arrives, before its body is read."""

    def __init__(self, inner: httpx.BaseTransport, path: Path, content: bytes) -> None:
        self.inner = inner
        self.path = path
        self.content = content
        self.cut = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/files") and not self.cut:
            self.cut = True
            self.path.write_bytes(self.content)
        return self.inner.handle_request(request)


def test_a_file_cut_shorter_during_its_upload_is_sent_again(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    path = root / "log.txt"
    path.write_bytes(b"long line\n" * 1000)
    with Emulator(data_dir=tmp_path / "emu") as emu:
        transport = CutsShorterOnce(emu.transport(), path, b"short\n")
        with (
            ContainersClient(
                "sk-test", base_url=BASE_URL, transport=transport, sleep=NoSleep()
            ) as client,
            Index.open(
                tmp_path / "state", base_url=BASE_URL, root=root, container_spec="box"
            ) as index,
        ):
            result = Engine(client, index, Pair(name="t", local=root, container="box")).run_pass()
            assert transport.cut
            assert result.failures == [] and result.uploaded == 1
            files = list(client.iter_files(result.container_id or ""))
        assert len(files) == 1
        # Nothing of the cut-off attempt was stored: no stale copy had to be deleted.
        assert emu.counts()["delete_file"] == 0
        blob = emu.blob_path(files[0].container_id, files[0].id)
        assert blob is not None and blob.read_bytes() == b"short\n"
