"""A lost index and names that fold together (reliability round two, findings 1 and 7).

Local names that compare equal once a server has had its way with them (the same
word in NFC and in NFD; ``"`` and ``%22``, which httpx sends alike) or that only
differ in case, each with the same size and time, are pushed, the state
directory is lost, and the pair syncs again. Name, size and time cannot tell
those files apart: adoption must prove content equal, never swap two files'
contents, and a two-way pass must recover them as ours (pushed), by name where
that is unambiguous, not download every file as the model's.

Every gateway style that changes names is tried, with the listing in the
server's order, reversed, and shuffled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import unicodedata
from pathlib import Path

import httpx
import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, GatewayStyle
from cntr_sync.engine import Engine
from cntr_sync.index import Index
from cntr_sync.models import Pair
from cntr_sync.result import PassResult
from helpers import NoSleep, local_tree

BASE_URL = "http://emulator.test/v1"
CAFE = "caf\u00e9.txt"
# Each group: names that fold together, with contents of one size.
FOLDING = {
    unicodedata.normalize("NFC", CAFE): b"nfc!",
    unicodedata.normalize("NFD", CAFE): b"nfd?",
    'q"x.txt': b"quote",
    "q%22x.txt": b"per22",
    "A.txt": b"upper",
    "a.txt": b"lower",
    "plain.txt": b"nothing odd",
    "dir/nested.txt": b"in a directory",
}
STYLES = {
    "hashed": GatewayStyle(),
    "plain": GatewayStyle(path_style="plain"),
    "nfc": GatewayStyle(normalize_filenames="NFC"),
    "nfd": GatewayStyle(normalize_filenames="NFD"),
    "form-escapes": GatewayStyle(keep_form_escapes=True),
    "percent-decoded": GatewayStyle(percent_decode_filenames=True),
    "base-names": GatewayStyle(base_name_only=True),
    "no-names": GatewayStyle(drop_filenames=True),
}


class Reordered(httpx.BaseTransport):
    """The emulator, with the files of every listing page in another order."""

    def __init__(self, inner: httpx.BaseTransport, order: str) -> None:
        self._inner = inner
        self._order = order
        self._random = random.Random(7)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.method != "GET" or not request.url.path.endswith("/files"):
            return response
        page = json.loads(response.read())
        if self._order == "reversed":
            page["data"].reverse()
        elif self._order == "shuffled":
            self._random.shuffle(page["data"])
        return httpx.Response(response.status_code, headers=response.headers, json=page)


def write_tree(root: Path) -> None:
    for relpath, content in FOLDING.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))


def sync(emu: Emulator, root: Path, state: Path, direction: str, order: str) -> PassResult:
    transport = Reordered(emu.transport(), order)
    with (
        ContainersClient("sk-test", base_url=BASE_URL, transport=transport, sleep=NoSleep()) as c,
        Index.open(state, base_url=BASE_URL, root=root, container_spec="box") as index,
    ):
        pair = Pair(name="t", local=root, container="box", direction=direction)  # type: ignore[arg-type]
        result = Engine(c, index, pair, concurrency=1).run_pass()
    assert not result.failures, result.failures
    return result


def mirrored(emu: Emulator, root: Path, state: Path, container_id: str) -> dict[str, bytes]:
    """Each indexed relpath's remote content, as the container holds it."""
    with Index.open(state, base_url=BASE_URL, root=root, container_spec="box", lock=False) as ix:
        entries = ix.entries()
    out = {}
    for relpath, entry in entries.items():
        blob = emu.blob_path(container_id, entry.remote_id)
        assert blob is not None, f"{relpath}: its remote file is gone"
        out[relpath] = blob.read_bytes()
    return out


@pytest.mark.parametrize("order", ["as-listed", "reversed", "shuffled"])
@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize("direction", ["push", "both"])
def test_a_lost_index_never_swaps_files_whose_names_fold_together(
    tmp_path: Path, direction: str, style: str, order: str
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    write_tree(root)
    state = tmp_path / "state"
    with Emulator(data_dir=tmp_path / "emu", seed=1) as emu:
        emu.set_gateway(STYLES[style])
        first = sync(emu, root, state, direction, order)
        assert first.container_id is not None
        container_id = first.container_id
        shutil.rmtree(state)  # the index is lost
        recovery = sync(emu, root, state, direction, order)
        settled = sync(emu, root, state, direction, order)
        assert local_tree(root) == FOLDING, "a local file changed"
        assert mirrored(emu, root, state, container_id) == FOLDING, "a file mirrors another"
        # Nothing was pulled as the model's: every file is ours, pushed.
        assert recovery.downloaded == settled.downloaded == 0
        assert settled.uploaded == settled.replaced == settled.deleted == 0
        assert remote_count(emu, container_id) == len(FOLDING), "a duplicate was left"


def remote_count(emu: Emulator, container_id: str) -> int:
    with ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client:
        return sum(1 for _file in client.iter_files(container_id))


def test_a_two_way_pass_after_a_lost_index_recovers_files_as_pushed_not_pulled(
    tmp_path: Path,
) -> None:
    """Finding 7: one ``both`` pass after a lost index marked every file as pulled (so a
    later push never deleted them) and downloaded every file to compare it."""
    root = tmp_path / "tree"
    root.mkdir()
    for n in range(20):
        (root / f"f{n}.txt").write_bytes(f"file {n}".encode())
    state = tmp_path / "state"
    with Emulator(data_dir=tmp_path / "emu") as emu:
        first = sync(emu, root, state, "push", "as-listed")
        shutil.rmtree(state)
        recovery = sync(emu, root, state, "both", "as-listed")
        assert recovery.downloaded == 0 and recovery.adopted == 20
        assert recovery.requests_by_operation.get("download_file", 0) == 0
        (root / "f1.txt").unlink()
        (root / "f2.txt").unlink()
        pushed = sync(emu, root, state, "push", "as-listed")
        assert pushed.deleted == 2, "files recovered by a two-way pass are ours to delete"
        assert first.container_id is not None
        assert remote_count(emu, first.container_id) == 18


# Counts COMMITs: guards issue 23's lost-index figure (100,000 adoptions were 200,000
# transactions, most of the pass's time): the adoptions are recorded in one batch.
@pytest.mark.perf_guard
def test_a_lost_index_records_its_adoptions_in_one_batch(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for number in range(120):
        path = root / f"d{number % 4}" / f"f{number:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"file {number}\n".encode())
    with Emulator(data_dir=tmp_path / "emulator") as emu:
        assert sync(emu, root, tmp_path / "state", "push", "server").uploaded == 120
        statements: list[str] = []
        with (
            ContainersClient(
                "sk-test", base_url=BASE_URL, transport=emu.transport(), sleep=NoSleep()
            ) as client,
            Index.open(tmp_path / "lost", base_url=BASE_URL, root=root, container_spec="box") as ix,
        ):
            ix._conn.set_trace_callback(statements.append)
            result = Engine(client, ix, Pair(name="p", local=root, container="box")).run_pass()
            ix._conn.set_trace_callback(None)
            adopted = ix.entry_count()
    assert (result.adopted, result.uploaded, adopted) == (120, 0, 120)
    commits = sum(1 for statement in statements if statement.strip().upper() == "COMMIT")
    assert commits < 10, commits  # was two per adoption
