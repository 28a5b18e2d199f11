"""Push under everything at once: a state machine of edits, remote events, faults, crashes.

Steps, in any order, with passes in between:
- local: create, edit, same-size edit (mtime restored), truncate, delete, rename a
  file, rename a directory, atomic save (write beside, rename over), case change;
- remote: the model writes files, a colleague uploads a same-named file, the model
  deletes a mirrored file, the container expires, the state directory is lost;
- faults: 5xx, 429, dropped connections and ambiguous uploads (stored, then answered
  500 or dropped), scripted on any operation;
- crashes: the engine's process dies after its Nth request, before the request left
  or after the server acted on it (the answer lost), with the index as the disk has it.

The server is one of several (hashed or plain paths, names cut to the base name or
dropped to ``file``, ``has_more`` as strings or left out, opaque cursors, pages of 2
or 3 items), chosen per example.

Invariants: a push never changes a local file; after a clean pass (no faults) the
container holds each local file exactly once (the index's file, with the local
bytes), nothing of ours beside it (no duplicates, no old versions), every file
someone else made is still there unless its container expired, and a second pass
moves nothing.

CI runs it derandomized with a bounded example count; ``bench/machine_long.py``
runs it long and reports the examples.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import httpx
import pytest
import xxhash
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, GatewayStyle, ManualClock
from cntr_sync.engine import Engine
from cntr_sync.errors import CntrSyncError
from cntr_sync.index import Index
from cntr_sync.models import Pair
from cntr_sync.names import remote_names
from cntr_sync.result import PassResult
from helpers import NoSleep, local_tree

# A long Hypothesis state machine.
pytestmark = pytest.mark.machine

BASE_URL = "http://emulator.test/v1"
CONTAINER = "box"
#: Names that have broken mirrors before: a hex-prefixed sibling, a quote, NFD, case twins.
NAMES = st.sampled_from(
    [
        "a.txt",
        "A.txt",
        "dir/c.txt",
        "dir/sub/d.txt",
        "README.md",
        "0123456789abcdef0123456789abcdef-README.md",
        'say "hi".txt',
        unicodedata.normalize("NFD", "café.txt"),
        "other/c.txt",
    ]
)
#: Local contents start with "L" and hold 1-17 bytes: never what the model writes, and
#: never the size of a colleague's upload (20+ bytes), which a lost index would adopt by
#: name and size (README: "the mirror owns the names of the files it mirrors").
CONTENT = st.binary(min_size=0, max_size=16).map(lambda body: b"L" + body)
COLLEAGUE_CONTENT = st.binary(max_size=8).map(lambda body: b"C" * 20 + body)
#: A colleague also uploads under names the tree never has: those files must survive.
COLLEAGUE_NAMES = st.one_of(NAMES, st.sampled_from(["colleague.txt", "dir/notes.md"]))
SERVERS: dict[str, GatewayStyle] = {
    "hashed": GatewayStyle(),
    "plain": GatewayStyle(path_style="plain"),
    "base-name": GatewayStyle(base_name_only=True),
    "no-names": GatewayStyle(drop_filenames=True),
    "string-has-more, pages of 2": GatewayStyle(has_more="string", max_page_size=2),
    "opaque cursors, pages of 3": GatewayStyle(cursor_style="opaque", max_page_size=3),
    "no has_more": GatewayStyle(has_more="omitted", keep_form_escapes=True),
}
OPERATIONS = st.sampled_from(["create_file", "delete_file", "list_files", "file_content", "*"])
FAULTS = st.sampled_from([500, 503, 429, "drop", "ambiguous", "ambiguous_drop"])
EXAMPLES = int(os.environ.get("CNTR_SYNC_MACHINE_EXAMPLES", "150"))


class Crash(BaseException):
    """The process died: nothing in the engine may catch this."""


class CrashingTransport(httpx.BaseTransport):
    """Passes requests to the emulator until armed; then dies at the Nth request."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.countdown: int | None = None
        self.after_server_acts = False

    def arm(self, requests: int, *, after_server_acts: bool) -> None:
        self.countdown = requests
        self.after_server_acts = after_server_acts

    def disarm(self) -> None:
        self.countdown = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.countdown is not None:
            self.countdown -= 1
            if self.countdown <= 0:
                self.countdown = None
                if self.after_server_acts:
                    self.inner.handle_request(request).close()
                raise Crash
        return self.inner.handle_request(request)


class Push(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="cntr-push-machine-"))
        self.root = self.tmp / "tree"
        self.root.mkdir()
        self.state = self.tmp / "state"
        self.clock = ManualClock()
        self.emu = Emulator(data_dir=self.tmp / "emu", clock=self.clock, seed=0)
        self.transport = CrashingTransport(self.emu.transport())
        self.client = ContainersClient(
            "sk-test", base_url=BASE_URL, transport=self.transport, sleep=NoSleep()
        )
        # Helpers' own requests (the model, a colleague, the checks) never crash.
        self.outside = ContainersClient(
            "sk-test", base_url=BASE_URL, transport=self.emu.transport(), sleep=NoSleep()
        )
        #: What the user's tree must hold: a push never changes it.
        self.expected: dict[str, bytes] = {}
        #: Files others made in the current container, by id, and their names.
        self.foreign: dict[str, tuple[str, str]] = {}
        #: Every name the tree has had: the mirror owns these (README), and may delete a
        #: colleague's upload under one of them as a superseded copy.
        self.owned: set[str] = set()
        self.container_id: str | None = None
        self.expired = False
        #: Our uploads in the container when the index was lost: nobody can tell them
        #: from a colleague's any more, so a push may keep them (README, lost index).
        self.orphans: set[str] = set()

    def teardown(self) -> None:
        self.client.close()
        self.outside.close()
        self.emu.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- passes ---------------------------------------------------------------------------

    def open_index(self, *, lock: bool = True) -> Index:
        return Index.open(
            self.state, base_url=BASE_URL, root=self.root, container_spec=CONTAINER, lock=lock
        )

    def run_pass(self) -> PassResult | None:
        """One pass; None when the process "died" in it or it failed as a whole.

        A pass may fail as a whole (a listing that failed after retries) but only
        with an error of the tree, never anything else.
        """
        self.clock.advance(7)  # past the settle window of the last edits
        pair = Pair(name="m", local=self.root, container=CONTAINER, direction="push")
        try:
            with self.open_index() as index:
                # One request at a time: ids and faults follow request order, so replays are exact.
                engine = Engine(self.client, index, pair, concurrency=1, clock=self.clock)
                result = engine.run_pass(force=True)
        except (Crash, CntrSyncError):
            return None
        finally:
            self.transport.disarm()
        if result.container_id != self.container_id:
            # A new container (created, or the old one expired): nothing of others' is in it.
            self.foreign = {}
            self.orphans = set()
            self.container_id = result.container_id
            self.expired = False
        return result

    def clean_pass(self) -> PassResult:
        self.emu.clear_faults()
        result = self.run_pass()
        assert result is not None
        assert not result.failures, result.failures
        return result

    @initialize(server=st.sampled_from(sorted(SERVERS)), content=CONTENT)
    def start(self, server: str, content: bytes) -> None:
        self.emu.set_gateway(SERVERS[server])
        self.write("a.txt", content)
        self.clean_pass()

    @rule()
    def one_pass(self) -> None:
        self.run_pass()

    @rule(requests=st.integers(min_value=1, max_value=10), after_server_acts=st.booleans())
    def crash_in_a_pass(self, requests: int, after_server_acts: bool) -> None:
        self.transport.arm(requests, after_server_acts=after_server_acts)
        self.run_pass()

    @rule(operation=OPERATIONS, status=FAULTS, count=st.integers(min_value=1, max_value=6))
    def faults_then_a_pass(self, operation: str, status: Any, count: int) -> None:
        self.emu.fail_next(operation, status, count)
        self.run_pass()
        self.emu.clear_faults()  # what did not fire in this pass is dropped

    @rule()
    def quiet_pass(self) -> None:
        self.clean_pass()
        second = self.clean_pass()
        moved = (second.uploaded, second.replaced, second.deleted, second.adopted)
        assert moved == (0, 0, 0, 0), f"a second pass still moved files: {moved}"
        self.assert_mirror()

    # -- local changes --------------------------------------------------------------------

    def write(self, name: str, content: bytes) -> None:
        path = self.root / name
        if path.parent.exists() and not path.parent.is_dir():
            return  # a file stands where the directory would go
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            return
        path.write_bytes(content)
        self.stamp(path)
        self.expected[name] = content

    def stamp(self, path: Path) -> None:
        """Local and server clocks agree, as on a real machine (the emulator's is manual)."""
        now_ns = int(self.clock() * 1e9)
        os.utime(path, ns=(now_ns, now_ns))

    @rule(name=NAMES, content=CONTENT)
    def local_write(self, name: str, content: bytes) -> None:
        self.write(name, content)

    @rule(name=NAMES, data=st.data())
    def same_size_edit_with_mtime_restored(self, name: str, data: st.DataObject) -> None:
        path = self.root / name
        if name not in self.expected or len(self.expected[name]) < 2:
            return
        old = self.expected[name]
        new = b"L" + data.draw(st.binary(min_size=len(old) - 1, max_size=len(old) - 1))
        stat = path.stat()
        path.write_bytes(new)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        self.expected[name] = new

    @rule(name=NAMES)
    def truncate(self, name: str) -> None:
        if name in self.expected:
            (self.root / name).write_bytes(b"")
            self.stamp(self.root / name)
            self.expected[name] = b""

    @rule(name=NAMES)
    def local_delete(self, name: str) -> None:
        if self.expected.pop(name, None) is not None:
            (self.root / name).unlink()
            self.prune_empty_dirs()

    @rule(source=NAMES, destination_name=NAMES)
    def rename_file(self, source: str, destination_name: str) -> None:
        """Also a case change when the two differ only in case (a.txt -> A.txt)."""
        target = destination_name
        if source not in self.expected or source == target or target in self.expected:
            return
        destination = self.root / target
        if destination.parent.exists() and not destination.parent.is_dir():
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.is_dir():
            return
        (self.root / source).rename(destination)
        self.expected[target] = self.expected.pop(source)
        self.prune_empty_dirs()

    @rule(new_name=st.sampled_from(["moved", "dir2", "other/moved"]))
    def rename_directory(self, new_name: str) -> None:
        target = new_name
        source = self.root / "dir"
        destination = self.root / target
        if not source.is_dir() or destination.exists():
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not destination.parent.is_dir():
            return
        source.rename(destination)
        for relpath in [r for r in self.expected if r.startswith("dir/")]:
            self.expected[target + relpath[len("dir") :]] = self.expected.pop(relpath)

    @rule(name=NAMES, content=CONTENT)
    def atomic_save(self, name: str, content: bytes) -> None:
        """An editor's save: write a temporary file beside it, rename it over."""
        if name not in self.expected:
            return
        path = self.root / name
        temporary = path.with_name(f".{path.name}.swp")
        temporary.write_bytes(content)
        self.stamp(temporary)
        temporary.replace(path)
        self.expected[name] = content

    def prune_empty_dirs(self) -> None:
        for directory in sorted(self.root.rglob("*"), key=lambda p: -len(p.parts)):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()

    # -- remote events --------------------------------------------------------------------

    @rule(name=NAMES, content=st.binary(max_size=8))
    def model_writes(self, name: str, content: bytes) -> None:
        if self.container_id is None or self.expired:
            return
        made = self.emu.add_assistant_file(self.container_id, f"/mnt/data/{name}", b"M" + content)
        self.foreign[str(made["id"])] = (name, "assistant")

    @rule(name=COLLEAGUE_NAMES, content=COLLEAGUE_CONTENT)
    def colleague_uploads(self, name: str, content: bytes) -> None:
        if self.container_id is None or self.expired:
            return
        made = self.outside.create_file(self.container_id, content, filename=name)
        self.foreign[made.id] = (name, "user")

    @rule(name=NAMES)
    def model_deletes_a_mirrored_file(self, name: str) -> None:
        if self.container_id is None or self.expired or not self.state.exists():
            return
        with self.open_index(lock=False) as index:
            entry = index.entries().get(name)
        if entry is not None:
            self.outside.delete_file(self.container_id, entry.remote_id, missing_ok=True)

    @rule()
    def container_expires(self) -> None:
        if self.container_id is not None and not self.expired:
            self.emu.expire_container(self.container_id)
            self.expired = True

    @rule()
    def state_directory_lost(self) -> None:
        if self.container_id is not None and not self.expired:
            listing = self.outside.iter_files(self.container_id)
            self.orphans |= {f.id for f in listing if f.source == "user"} - set(self.foreign)
        shutil.rmtree(self.state, ignore_errors=True)

    # -- what must always hold ------------------------------------------------------------

    @invariant()
    def a_push_never_changes_a_local_file(self) -> None:
        self.owned |= set(self.expected)
        tree = {
            relpath: content
            for relpath, content in local_tree(self.root).items()
            if not relpath.endswith(".swp")
        }
        assert tree == self.expected

    def assert_mirror(self) -> None:
        assert self.container_id is not None
        remote = {f.id: f for f in self.outside.iter_files(self.container_id)}
        with self.open_index(lock=False) as index:
            entries = index.entries()
        assert set(entries) == set(self.expected), "the index does not list the local tree"
        for relpath, entry in entries.items():
            content = self.expected[relpath]
            assert entry.hash == xxhash.xxh3_128(content).hexdigest(), relpath
            assert entry.remote_id in remote, f"{relpath}: its remote file is gone"
            blob = self.emu.blob_path(self.container_id, entry.remote_id)
            assert blob is not None and blob.read_bytes() == content, f"{relpath}: stale remote"
        ours = {entry.remote_id for entry in entries.values()}
        assert len(ours) == len(entries), "two local files share one remote file"
        leftovers = set(remote) - ours - set(self.foreign)
        unexplained = leftovers - self.orphans
        assert not unexplained, f"duplicates or old versions left: {sorted(unexplained)}"
        # An orphan may stay, but not as a copy of a mirrored file that it should have been.
        mirrored = {
            (remote_names(remote[entry.remote_id].path)[0], self.expected[relpath])
            for relpath, entry in entries.items()
        }
        for orphan in leftovers:
            blob = self.emu.blob_path(self.container_id, orphan)
            assert blob is not None
            copy = (remote_names(remote[orphan].path)[0], blob.read_bytes())
            assert copy not in mirrored, f"{copy[0]}: uploaded again beside its old upload"
        lost = {
            name
            for file_id, (name, source) in self.foreign.items()
            if file_id not in remote and (source == "assistant" or name not in self.owned)
        }
        assert not lost, f"files someone else made were deleted: {sorted(lost)}"


Push.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_push_converges_under_faults_crashes_and_remote_events = Push.TestCase
