"""Reconcile passes against the in-process emulator, with real files in tmp_path."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cntr_sync import local_side
from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, FaultConfig, GatewayStyle
from cntr_sync.engine import Engine
from cntr_sync.errors import (
    ConfigError,
    LockedError,
    NotFoundError,
    SafetyBrakeError,
    ServerError,
)
from cntr_sync.index import Index
from cntr_sync.models import DeleteLimit, Pair
from cntr_sync.names import remote_names
from cntr_sync.result import PassResult
from cntr_sync.scan import Snapshot
from helpers import NoSleep
from spec_validation import ValidatingTransport

BASE_URL = "http://emulator.test/v1"


@dataclass
class Harness:
    """One pair (root -> container) synced through a fresh engine for every pass."""

    emu: Emulator
    root: Path
    state: Path
    pair: Pair
    transport: httpx.BaseTransport | None = None
    allow_null_bytes: bool = False  # only for tests that add assistant files with bytes: null
    validate: bool = True  # off only for servers that break the contract on purpose

    def sync(
        self,
        *,
        force: bool = False,
        dry_run: bool = False,
        defer_unsettled: bool = False,
        **pair: object,
    ) -> PassResult:
        spec = self.pair.model_copy(update=pair)
        # Every exchange of the engine is checked against the OpenAPI contract too.
        inner = self.transport or self.emu.transport()
        validating = ValidatingTransport(inner, allow_null_bytes=self.allow_null_bytes)
        try:
            with (
                ContainersClient(
                    "sk-test",
                    base_url=BASE_URL,
                    transport=validating if self.validate else inner,
                    sleep=NoSleep(),
                ) as client,
                Index.open(
                    self.state, base_url=BASE_URL, root=self.root, container_spec="box"
                ) as index,
            ):
                engine = Engine(client, index, spec, concurrency=4)
                return engine.run_pass(
                    force=force, dry_run=dry_run, defer_unsettled=defer_unsettled
                )
        finally:
            validating.assert_clean()

    def remote(self, container_id: str) -> list[dict[str, object]]:
        with ContainersClient("k", base_url=BASE_URL, transport=self.emu.transport()) as client:
            return [f.model_dump() for f in client.iter_files(container_id)]

    def remote_user_names(self, container_id: str) -> Counter[str]:
        return Counter(
            remote_names(str(f["path"]))[0]
            for f in self.remote(container_id)
            if f["source"] == "user"
        )

    def assert_exact_mirror(self, container_id: str) -> None:
        local = {
            p.relative_to(self.root).as_posix(): p.read_bytes()
            for p in self.root.rglob("*")
            if p.is_file()
        }
        names = self.remote_user_names(container_id)
        assert names == Counter(local.keys()), "remote names differ from the local tree"
        for item in self.remote(container_id):
            if item["source"] != "user":
                continue
            blob = self.emu.blob_path(container_id, str(item["id"]))
            assert blob is not None
            assert blob.read_bytes() == local[remote_names(str(item["path"]))[0]]


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    # The real clock: adoption compares upload times with local mtimes.
    with Emulator(data_dir=tmp_path / "emulator") as emulator:
        yield emulator


@pytest.fixture
def harness(emu: Emulator, tmp_path: Path) -> Harness:
    root = tmp_path / "tree"
    root.mkdir()
    return Harness(emu, root, tmp_path / "state", Pair(name="t", local=root, container="box"))


def write(root: Path, relpath: str, content: bytes | str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def make_tree(root: Path, count: int) -> None:
    for n in range(count):
        write(root, f"d{n % 7}/file {n}.txt", f"content {n}\n" * (n % 5))


# -- exact mirror with the fewest requests ---------------------------------------------


def test_nested_tree_then_edits_cost_only_the_minimal_requests(
    harness: Harness, emu: Emulator
) -> None:
    write(harness.root, "README.md", "hello")
    write(harness.root, "ünïcode dir/naïve café.txt", "é")
    write(harness.root, "with space/a b.txt", "space")
    write(harness.root, "empty.txt", b"")
    write(harness.root, "deep/er/and/deeper/x.bin", os.urandom(3 * 1024 * 1024 + 7))
    first = harness.sync()
    assert first.in_sync and first.uploaded == 5 and first.container_created
    cid = first.container_id
    assert cid is not None
    harness.assert_exact_mirror(cid)

    emu.reset_counts()
    write(harness.root, "README.md", "hello, world")  # modify
    write(harness.root, "new.txt", "new")  # add
    (harness.root / "empty.txt").unlink()  # delete
    (harness.root / "with space/a b.txt").rename(harness.root / "renamed.txt")  # rename
    second = harness.sync()
    assert (second.uploaded, second.replaced, second.deleted) == (2, 1, 2)
    counts = emu.counts()
    # One listing; 3 uploads (modified, new, renamed); 3 deletes (old version, deleted, renamed).
    assert counts["list_files"] == 1
    assert counts["create_file"] == 3
    assert counts["delete_file"] == 3
    assert sum(counts.values()) == 7
    harness.assert_exact_mirror(cid)


def test_no_change_pass_costs_only_the_listing_pages(harness: Harness, emu: Emulator) -> None:
    make_tree(harness.root, 250)
    assert harness.sync().uploaded == 250
    emu.reset_counts()
    again = harness.sync()
    assert (again.uploaded, again.replaced, again.deleted) == (0, 0, 0)
    assert sum(emu.counts().values()) <= math.ceil(250 / 100) + 2
    assert emu.counts()["create_file"] == emu.counts()["delete_file"] == 0


def test_touched_files_are_rehashed_but_not_uploaded(harness: Harness, emu: Emulator) -> None:
    path = write(harness.root, "a.txt", "same")
    harness.sync()
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    emu.reset_counts()
    result = harness.sync()
    assert result.uploaded == result.replaced == 0
    assert emu.counts()["create_file"] == 0


def test_dry_run_changes_nothing(harness: Harness, emu: Emulator) -> None:
    make_tree(harness.root, 5)
    result = harness.sync(dry_run=True)
    assert result.plan is not None and len(result.plan.uploads) == 5
    assert emu.counts()["create_container"] == emu.counts()["create_file"] == 0
    assert harness.sync().uploaded == 5


# -- faults ------------------------------------------------------------------------


def test_faults_and_ambiguous_uploads_converge_without_duplicates(
    harness: Harness, emu: Emulator
) -> None:
    make_tree(harness.root, 120)
    emu.set_faults(FaultConfig(seed=7, error_rate=0.2, ambiguous_upload_rate=0.2, retry_value=0.0))
    results = []
    for _ in range(12):
        results.append(harness.sync())
        if results[-1].in_sync:
            break
    assert results[-1].in_sync, [len(r.failures) for r in results]
    assert any(r.failures for r in results), "the faults should have bitten at least once"
    emu.set_faults(FaultConfig())
    cid = results[-1].container_id
    assert cid is not None
    harness.assert_exact_mirror(cid)
    adopted = sum(r.adopted for r in results)
    assert adopted >= 1, "ambiguous uploads are adopted, not uploaded twice"
    final = harness.sync()
    assert final.uploaded == final.deleted == 0


def test_a_failed_listing_deletes_nothing(harness: Harness, emu: Emulator) -> None:
    make_tree(harness.root, 150)
    cid = harness.sync().container_id
    for path in list(harness.root.rglob("*.txt"))[:10]:
        path.unlink()
    emu.reset_counts()
    emu.fail_next("list_files", 500, count=5)  # every attempt: 1 + 4 retries
    with pytest.raises(ServerError):
        harness.sync()
    assert emu.counts()["delete_file"] == 0
    assert cid is not None
    assert len(harness.remote(cid)) == 150


def test_a_listing_that_fails_on_page_two_deletes_nothing(harness: Harness, emu: Emulator) -> None:
    make_tree(harness.root, 150)
    harness.sync()
    for path in list(harness.root.rglob("*.txt"))[:10]:
        path.unlink()
    calls = {"n": 0}
    inner = emu.transport()

    class SecondPageFails(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/files") and request.method == "GET":
                calls["n"] += 1
                if calls["n"] >= 2:
                    error = {"message": "down", "type": "server_error", "param": None, "code": None}
                    return httpx.Response(500, json={"error": error})
            return inner.handle_request(request)

    harness.transport = SecondPageFails()
    emu.reset_counts()
    with pytest.raises(ServerError):
        harness.sync()
    assert emu.counts()["delete_file"] == 0


# -- brakes --------------------------------------------------------------------------


def test_missing_root_is_refused_and_nothing_deleted(harness: Harness, emu: Emulator) -> None:
    make_tree(harness.root, 10)
    harness.sync()
    harness.root.rename(harness.root.with_name("moved"))
    emu.reset_counts()
    with pytest.raises(SafetyBrakeError, match="missing"):
        harness.sync()
    assert sum(emu.counts().values()) == 0


def test_emptied_root_is_refused_unless_forced(harness: Harness, emu: Emulator) -> None:
    make_tree(harness.root, 4)
    cid = harness.sync().container_id
    for path in harness.root.rglob("*.txt"):
        path.unlink()
    with pytest.raises(SafetyBrakeError, match="empty"):
        harness.sync()
    assert cid is not None and len(harness.remote(cid)) == 4
    assert harness.sync(force=True).deleted == 4
    assert harness.remote(cid) == []


def test_mass_deletion_is_refused_at_max_delete(harness: Harness, emu: Emulator) -> None:
    make_tree(harness.root, 20)
    cid = harness.sync().container_id
    for path in sorted(harness.root.rglob("*.txt"))[:12]:
        path.unlink()
    emu.reset_counts()
    with pytest.raises(SafetyBrakeError, match="12 of 20"):
        harness.sync()
    assert emu.counts()["delete_file"] == 0
    with pytest.raises(SafetyBrakeError, match=r"12 files \(> max_delete 11\)"):
        harness.sync(max_delete=DeleteLimit(count=11))
    assert harness.sync(max_delete=DeleteLimit(percent=70)).deleted == 12
    assert cid is not None and len(harness.remote(cid)) == 8


# -- expiry and lost state --------------------------------------------------------------


def test_expiry_between_passes_creates_and_fills_a_new_container(
    harness: Harness, emu: Emulator, tmp_path: Path
) -> None:
    id_file = tmp_path / "container-id"
    harness.pair = harness.pair.model_copy(update={"container_id_file": id_file})
    make_tree(harness.root, 12)
    first = harness.sync()
    assert id_file.read_text().strip() == first.container_id
    emu.advance_clock(25 * 60)  # past the default 20-minute expiry
    second = harness.sync()
    assert second.container_recreated and second.container_id != first.container_id
    assert second.uploaded == 12
    assert id_file.read_text().strip() == second.container_id
    assert second.container_id is not None
    harness.assert_exact_mirror(second.container_id)


def test_expiry_in_the_middle_of_a_pass_starts_over_in_a_new_container(
    harness: Harness, emu: Emulator
) -> None:
    make_tree(harness.root, 6)
    first = harness.sync()
    assert first.container_id is not None
    write(harness.root, "late.txt", "x")
    inner = emu.transport()

    class ExpireOnUpload(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST" and first.container_id in request.url.path:
                emu.expire_container(str(first.container_id))
            return inner.handle_request(request)

    harness.transport = ExpireOnUpload()
    second = harness.sync()
    assert second.container_recreated and second.in_sync
    assert second.container_id not in (None, first.container_id)
    assert second.uploaded == 7
    assert second.container_id is not None
    harness.assert_exact_mirror(second.container_id)


@pytest.mark.parametrize("path_style", ["hashed", "plain"])
def test_lost_index_adopts_instead_of_uploading_again(
    harness: Harness, emu: Emulator, tmp_path: Path, path_style: str
) -> None:
    emu.set_gateway(GatewayStyle(path_style=path_style))  # type: ignore[arg-type]
    make_tree(harness.root, 30)
    cid = harness.sync().container_id
    write(harness.root, "changed later.txt", "v1")
    harness.sync()
    harness.state = tmp_path / "fresh-state"  # the index is gone
    (harness.root / "changed later.txt").write_text("version two")
    emu.reset_counts()
    result = harness.sync()
    assert result.container_id == cid
    assert result.adopted == 30
    assert (result.uploaded, result.replaced, result.deleted) == (1, 0, 1)
    assert emu.counts()["create_file"] == 1
    assert cid is not None
    harness.assert_exact_mirror(cid)


def test_lost_index_when_the_gateway_drops_names(
    harness: Harness, emu: Emulator, tmp_path: Path
) -> None:
    # Bifrost stores every upload as "file": nothing can be matched by name, so
    # after a lost index the uploads are matched by size, then by content.
    emu.set_gateway(GatewayStyle(drop_filenames=True))
    make_tree(harness.root, 5)
    cid = harness.sync().container_id
    assert cid is not None
    harness.state = tmp_path / "fresh-state"
    emu.reset_counts()
    result = harness.sync()
    assert (result.adopted, result.uploaded, result.unknown_kept) == (5, 0, 0)
    assert len(harness.remote(cid)) == 5
    assert emu.counts()["file_content"] == 4  # the empty file needs no download
    assert harness.sync().uploaded == 0


# -- strangers, hostile names, files that change -----------------------------------------


def test_assistant_files_are_left_alone_unless_delete_unknown(
    harness: Harness, emu: Emulator
) -> None:
    harness.allow_null_bytes = True  # real servers list some assistant files so
    write(harness.root, "a.txt", "a")
    cid = harness.sync().container_id
    assert cid is not None
    emu.add_assistant_file(cid, "/mnt/data/report.csv", b"1,2", bytes_null=True)
    emu.add_assistant_file(cid, "/mnt/data/a.txt", b"model's own a.txt")
    kept = harness.sync()
    assert kept.unknown_kept == 2 and kept.deleted == 0
    assert harness.sync(delete_unknown=True).deleted == 2
    harness.assert_exact_mirror(cid)


def test_hostile_local_names_are_synced_or_skipped_with_a_warning(harness: Harness) -> None:
    write(harness.root, "Case.txt", "upper")
    write(harness.root, "case.txt", "lower")
    write(harness.root, "line\nbreak.txt", "nl")
    write(harness.root, "tab\there.txt", "tab")
    raw_root = os.fsencode(harness.root)
    with open(os.path.join(raw_root, b"bad\xff\xfename.txt"), "wb") as handle:
        handle.write(b"latin-1")
    deep = "/".join(["d" * 200] * 6) + "/long.txt"
    write(harness.root, deep, "long")
    result = harness.sync()
    assert result.uploaded == 2 and result.in_sync
    warned = "\n".join(result.warnings)
    for marker in ("break.txt", "here.txt", "name.txt", "long"):
        assert marker in warned, marker
    assert result.container_id is not None
    names = harness.remote_user_names(result.container_id)
    assert names == Counter({"Case.txt": 1, "case.txt": 1})


def test_a_file_changing_during_its_upload_is_uploaded_again(
    harness: Harness, emu: Emulator
) -> None:
    path = write(harness.root, "growing.log", "line 1\n")
    inner = emu.transport()
    grown = {"done": False}

    class GrowDuringUpload(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if (
                request.method == "POST"
                and request.url.path.endswith("/files")
                and not grown["done"]
            ):
                grown["done"] = True
                with path.open("a") as handle:
                    handle.write("line 2\n")
                os.utime(path, ns=(1, path.stat().st_mtime_ns + 5_000_000_000))
            return inner.handle_request(request)

    harness.transport = GrowDuringUpload()
    result = harness.sync()
    assert result.in_sync and result.uploaded == 1
    assert emu.counts()["create_file"] == 2
    assert result.container_id is not None
    harness.assert_exact_mirror(result.container_id)


def test_a_pass_shows_progress_while_it_scans_lists_and_uploads(
    harness: Harness, emu: Emulator
) -> None:
    # The daemon's liveness reads these ticks: a big upload must not look like a hang.
    write(harness.root, "big.bin", os.urandom(4 * 1024 * 1024))
    for n in range(3):
        write(harness.root, f"small {n}.txt", str(n))
    assert harness.sync().uploaded == 4
    write(harness.root, "big.bin", os.urandom(4 * 1024 * 1024 + 1))
    ticks: list[str] = []

    def tick() -> None:
        ticks.append(threading.current_thread().name)

    with (
        ContainersClient("sk-test", base_url=BASE_URL, transport=emu.transport()) as client,
        Index.open(
            harness.state, base_url=BASE_URL, root=harness.root, container_spec="box"
        ) as index,
    ):
        result = Engine(client, index, harness.pair, tick=tick).run_pass()
    assert result.replaced == 1
    # Every scanned entry and listed file, every hashed MiB (5), and the upload as it
    # streams from a worker thread (its reads), not only once it is done.
    assert len(ticks) >= 4 + 4 + 5
    assert any(name.startswith("cntr-sync") for name in ticks)


def test_the_settle_window_defers_files_modified_a_moment_ago(
    harness: Harness, emu: Emulator
) -> None:
    old = write(harness.root, "old.txt", "settled")
    os.utime(old, ns=(1, time.time_ns() - 60_000_000_000))
    write(harness.root, "fresh.txt", "still being written")
    result = harness.sync(defer_unsettled=True, quiet_period=30.0)
    assert result.uploaded == 1 and result.deferred == ["fresh.txt"]
    assert not result.in_sync
    assert result.container_id is not None
    assert harness.remote_user_names(result.container_id) == Counter({"old.txt": 1})
    # Without the window (a one-shot sync, or an overdue pass) it goes.
    assert harness.sync().uploaded == 1


@pytest.mark.parametrize("follow_symlinks", [False, True])
def test_a_file_swapped_for_a_link_after_the_scan_never_sends_the_link_target(
    harness: Harness,
    emu: Emulator,
    tmp_path: Path,
    follow_symlinks: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN PRIVATE KEY----- secret")
    write(harness.root, "other.txt", "x")
    assert harness.sync().uploaded == 1  # the container exists, so the next pass lists
    target = write(harness.root, "a.md", "notes")
    real_scan = local_side.scan_tree

    def scan_then_swap(*args: Any, **kwargs: Any) -> Snapshot:
        snapshot = real_scan(*args, **kwargs)
        target.unlink(missing_ok=True)
        target.symlink_to(secret)
        return snapshot

    monkeypatch.setattr(local_side, "scan_tree", scan_then_swap)
    result = harness.sync(follow_symlinks=follow_symlinks)
    assert result.uploaded == 0 and not result.in_sync
    assert result.deferred == ["a.md"]
    assert result.container_id is not None
    for item in harness.remote(result.container_id):
        blob = emu.blob_path(result.container_id, str(item["id"]))
        assert blob is not None and b"PRIVATE KEY" not in blob.read_bytes()


def test_a_container_create_whose_answer_was_lost_is_not_made_twice(
    harness: Harness, emu: Emulator
) -> None:
    write(harness.root, "a.txt", "a")
    emu.fail_next("create_container", "ambiguous")  # made, but answered 500
    result = harness.sync()
    assert result.in_sync and result.uploaded == 1
    running = [c for c in emu.requests_log() if c.operation == "create_container"]
    assert len(running) == 1
    with ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client:
        assert [c.id for c in client.iter_containers(name="box")] == [result.container_id]


def test_a_404_from_a_gateway_does_not_abandon_a_running_container(
    harness: Harness, emu: Emulator
) -> None:
    write(harness.root, "a.txt", "a")
    first = harness.sync()
    emu.fail_next("list_files", 404)
    with pytest.raises(NotFoundError):
        harness.sync()
    again = harness.sync()
    assert again.container_id == first.container_id and not again.container_recreated


def test_two_pairs_naming_one_container_differently_cannot_sync_at_once(
    harness: Harness, emu: Emulator, tmp_path: Path
) -> None:
    write(harness.root, "a.txt", "a")
    cid = harness.sync().container_id
    assert cid is not None
    other_root = tmp_path / "other"
    other_root.mkdir()
    with (
        ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client,
        Index.open(
            harness.state, base_url=BASE_URL, root=harness.root, container_spec="box"
        ) as held,
        Index.open(harness.state, base_url=BASE_URL, root=other_root, container_spec=cid) as index,
    ):
        held.claim_container(BASE_URL, cid)
        # The same container by its id, from another root: a different pair lock,
        # but the container claim refuses it before anything is planned.
        engine = Engine(client, index, Pair(name="other", local=other_root, container=cid))
        with pytest.raises(LockedError, match="into container"):
            engine.run_pass()
    assert emu.counts()["delete_file"] == 0


def test_the_state_dir_and_id_file_inside_the_root_are_never_synced(
    emu: Emulator, tmp_path: Path
) -> None:
    # Syncing $HOME with the default state dir (~/.local/state/cntr-sync) inside it.
    home = tmp_path / "home"
    state = home / ".local" / "state" / "cntr-sync"
    write(home, "notes.txt", "mine")
    harness = Harness(
        emu,
        home,
        state,
        Pair(name="t", local=home, container="box", container_id_file=home / "box.id"),
    )
    first = harness.sync()
    assert first.in_sync and first.uploaded == 1, first
    second = harness.sync()
    assert second.in_sync and second.uploaded == 0 and not second.deferred
    assert second.container_id is not None
    assert harness.remote_user_names(second.container_id) == Counter({"notes.txt": 1})
    assert (home / "box.id").read_text().strip() == second.container_id


@pytest.mark.parametrize("has_more", ["omitted", "string"])
def test_pages_without_a_boolean_has_more_still_list_everything(
    harness: Harness, emu: Emulator, has_more: str
) -> None:
    emu.set_gateway(GatewayStyle(has_more=has_more))  # type: ignore[arg-type]
    harness.validate = False  # the spec says boolean; this server does not
    make_tree(harness.root, 250)
    assert harness.sync().uploaded == 250
    again = harness.sync()
    # Trusting only has_more=True would stop after page one and upload 150 again.
    assert (again.uploaded, again.deleted) == (0, 0)
    assert again.requests_by_operation["list_files"] == 3


class _ChangeDuringUpload(httpx.BaseTransport):
    """Changes the file while its upload is on the wire (before the body is read)."""

    def __init__(self, inner: httpx.BaseTransport, path: Path, change: str, times: int) -> None:
        self.inner, self.path, self.change, self.times = inner, path, change, times

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/files") and self.times:
            self.times -= 1
            if self.change == "grow":
                with self.path.open("ab") as handle:
                    handle.write(b"appended while uploading\n" * 100)
            else:
                self.path.write_bytes(self.path.read_bytes()[:10])
        return self.inner.handle_request(request)


@pytest.mark.parametrize("change", ["grow", "shrink"])
def test_a_file_changing_size_during_its_upload_is_redone_not_a_crash(
    harness: Harness, emu: Emulator, change: str
) -> None:
    write(harness.root, "other.txt", "x")
    harness.sync()
    target = write(harness.root, "log.txt", b"line\n" * 1000)
    harness.transport = _ChangeDuringUpload(emu.transport(), target, change, times=1)
    harness.validate = False  # a body cut short is not a request the spec describes
    result = harness.sync()
    assert result.failures == [], result.failures
    assert result.in_sync, result.deferred
    assert result.container_id is not None
    harness.assert_exact_mirror(result.container_id)


def test_a_file_that_keeps_growing_is_sent_as_it_was_when_opened_on_overdue_passes(
    harness: Harness, emu: Emulator
) -> None:
    write(harness.root, "other.txt", "x")
    harness.sync()
    target = write(harness.root, "app.log", b"start\n" * 1000)
    harness.transport = _ChangeDuringUpload(emu.transport(), target, "grow", times=100)
    one_shot = harness.sync()
    assert one_shot.deferred == ["app.log"] and not one_shot.failures
    as_opened = target.read_bytes()  # what the overdue pass will find and open
    with (
        ContainersClient("sk", base_url=BASE_URL, transport=harness.transport) as client,
        Index.open(
            harness.state, base_url=BASE_URL, root=harness.root, container_spec="box"
        ) as index,
    ):
        overdue = Engine(client, index, harness.pair).run_pass(keep_grown_uploads=True)
        entry = index.entries()["app.log"]
    assert overdue.in_sync and overdue.uploaded == 1
    assert entry.size == len(as_opened)  # as opened; the growth is for the next pass
    assert target.stat().st_size > len(as_opened)
    assert overdue.container_id is not None
    blob = next(
        emu.blob_path(overdue.container_id, str(item["id"]))
        for item in harness.remote(overdue.container_id)
        if str(item["path"]).endswith("app.log")
    )
    assert blob is not None and blob.read_bytes() == as_opened


def test_an_id_that_does_not_exist_is_an_error_not_a_new_container_name(
    harness: Harness, emu: Emulator
) -> None:
    write(harness.root, "a.txt", "a")
    typo = "cntr_6b0c7d828d66de4b8adce9daa6c872b6"
    with pytest.raises(ConfigError, match="no container with id 'cntr_6b0c"):
        harness.sync(container=typo)
    assert emu.counts()["create_container"] == 0


def test_the_hash_cache_forgets_files_that_are_gone(harness: Harness, emu: Emulator) -> None:
    make_tree(harness.root, 60)
    for path in harness.root.rglob("*.txt"):
        os.utime(path, ns=(1, time.time_ns() - 60_000_000_000))  # old enough to cache
    harness.sync()
    for path in sorted(harness.root.rglob("*.txt"))[10:]:
        path.unlink()
    harness.sync(force=True)
    with Index.open(
        harness.state, base_url=BASE_URL, root=harness.root, container_spec="box", lock=False
    ) as index:
        assert index.hashes.count() == 10


# -- lost index, odd names: recovery is exact (issue: reliability 1, 2, 4) ----------------


def lose_the_index(harness: Harness, tmp_path: Path, name: str = "fresh-state") -> None:
    harness.state = tmp_path / name


@pytest.mark.parametrize(
    "gateway",
    [
        GatewayStyle(base_name_only=True),
        GatewayStyle(base_name_only=True, path_style="plain"),
        GatewayStyle(drop_filenames=True, path_style="plain"),
        GatewayStyle(path_style="plain"),
    ],
    ids=["base-name-hashed", "base-name-plain", "no-names", "plain"],
)
def test_a_lost_index_is_recovered_exactly_under_every_path_style(
    harness: Harness, emu: Emulator, tmp_path: Path, gateway: GatewayStyle
) -> None:
    emu.set_gateway(gateway)
    for n in range(80):
        write(harness.root, f"dir{n % 4}/sub/file-{n:02}.txt", f"content {n}\n" * (n % 7 + 1))
    cid = harness.sync().container_id
    assert cid is not None
    lose_the_index(harness, tmp_path)
    result = harness.sync()
    assert (result.uploaded, result.adopted) == (0, 80), result
    assert len(harness.remote(cid)) == 80
    again = harness.sync()
    assert (again.uploaded, again.adopted, again.deleted) == (0, 0, 0)


def test_a_hex_prefixed_sibling_is_never_adopted_as_the_wrong_file(
    harness: Harness, emu: Emulator, tmp_path: Path
) -> None:
    emu.set_gateway(GatewayStyle(path_style="plain"))
    write(harness.root, "README.md", "the readme")
    write(harness.root, "a3f1b2c3d4e5f60718293a4b5c6d7e8f-README.md", "the sibling")
    cid = harness.sync().container_id
    assert cid is not None
    lose_the_index(harness, tmp_path)
    result = harness.sync()
    assert (result.uploaded, result.deleted, result.adopted) == (0, 0, 2), result
    with Index.open(
        harness.state, base_url=BASE_URL, root=harness.root, container_spec="box"
    ) as index:
        entries = index.entries()
    for relpath, entry in entries.items():
        blob = emu.blob_path(cid, entry.remote_id)
        assert blob is not None and blob.read_bytes() == (harness.root / relpath).read_bytes()


@pytest.mark.parametrize(
    "gateway",
    [GatewayStyle(keep_form_escapes=True), GatewayStyle(normalize_filenames="NFD")],
    ids=["quotes-kept-as-%22", "names-in-NFD"],
)
def test_an_odd_name_neither_breaks_matching_nor_makes_the_pair_distrust_names(
    harness: Harness, emu: Emulator, tmp_path: Path, gateway: GatewayStyle
) -> None:
    emu.set_gateway(gateway)
    write(harness.root, 'say "hi".txt', "quoted")
    write(harness.root, "café.txt", "accent")
    write(harness.root, "plain.txt", "plain")
    cid = harness.sync().container_id
    assert cid is not None
    with Index.open(
        harness.state, base_url=BASE_URL, root=harness.root, container_spec="box"
    ) as index:
        assert index.server_keeps_names is True
    # An ambiguous upload of another odd name is adopted by name, not duplicated.
    write(harness.root, 'more "quotes" é.txt', "more")
    emu.fail_next("create_file", "ambiguous")
    assert not harness.sync().in_sync
    again = harness.sync()
    assert (again.uploaded, again.adopted) == (0, 1)
    lose_the_index(harness, tmp_path)
    recovered = harness.sync()
    assert (recovered.uploaded, recovered.adopted) == (0, 4)
    assert len(harness.remote(cid)) == 4


def test_a_pass_past_its_deadline_starts_nothing_more_and_the_next_goes_on(
    harness: Harness, emu: Emulator
) -> None:
    make_tree(harness.root, 20)
    with (
        ContainersClient("sk", base_url=BASE_URL, transport=emu.transport()) as client,
        Index.open(
            harness.state, base_url=BASE_URL, root=harness.root, container_spec="box"
        ) as index,
    ):
        cut = Engine(client, index, harness.pair).run_pass(deadline=0.0)
    assert cut.cancelled and not cut.in_sync and cut.uploaded == 0
    assert harness.sync().uploaded == 20


def test_an_upload_the_server_takes_too_long_to_read_is_given_up(
    harness: Harness, emu: Emulator
) -> None:
    write(harness.root, "slow.bin", os.urandom(300_000))
    # The server waits 0.6 s before it reads the body; the deadline is 0.3 s.
    emu.set_faults(FaultConfig(latency_ms=600, only_operations=frozenset({"create_file"})))
    with (
        ContainersClient(
            "sk",
            base_url=BASE_URL,
            transport=emu.transport(),
            request_deadline=0.3,
            sleep=NoSleep(),
        ) as client,
        Index.open(
            harness.state, base_url=BASE_URL, root=harness.root, container_spec="box"
        ) as index,
    ):
        result = Engine(client, index, harness.pair).run_pass()
    assert [f.target for f in result.failures] == ["slow.bin"]
    assert "request_deadline" in result.failures[0].message
    assert emu.counts()["create_file"] == 1  # begun, then abandoned: not stored
    emu.set_faults(FaultConfig())
    again = harness.sync()
    assert again.uploaded == 1 and again.in_sync
    assert again.container_id is not None
    harness.assert_exact_mirror(again.container_id)


@pytest.mark.parametrize(
    "gateway",
    [GatewayStyle(drop_filenames=True), GatewayStyle(base_name_only=True), GatewayStyle()],
    ids=["no-names", "base-names", "openai"],
)
def test_a_lost_answer_on_a_renaming_server_leaves_no_duplicate(
    harness: Harness, emu: Emulator, gateway: GatewayStyle
) -> None:
    emu.set_gateway(gateway)
    write(harness.root, "dir/a.txt", "alpha")
    cid = harness.sync().container_id
    assert cid is not None
    write(harness.root, "dir/b.txt", "bravo!")
    emu.fail_next("create_file", "ambiguous")  # stored, but answered 500
    assert not harness.sync().in_sync
    again = harness.sync()
    assert (again.adopted, again.uploaded) == (1, 0)
    assert len(harness.remote(cid)) == 2
    if gateway == GatewayStyle():
        harness.assert_exact_mirror(cid)


def test_files_with_the_same_content_each_find_their_own_copy(
    harness: Harness, emu: Emulator, tmp_path: Path
) -> None:
    emu.set_gateway(GatewayStyle(drop_filenames=True))
    for n in range(6):
        write(harness.root, f"d{n}/f.txt", "same content")
    cid = harness.sync().container_id
    assert cid is not None
    lose_the_index(harness, tmp_path)
    result = harness.sync()
    assert (result.adopted, result.uploaded) == (6, 0)
    assert len(harness.remote(cid)) == 6
