"""index: schema, persistence, the pair lock, transactions, the hash cache."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cntr_sync import index_file as index_module
from cntr_sync.errors import LocalError, LockedError
from cntr_sync.ignore import IgnoreRules
from cntr_sync.index_file import SCHEMA_VERSION
from cntr_sync.models import IndexEntry, PendingDelete, UploadIntent
from cntr_sync.scan import scan
from helpers import INDEX_BASE_URL as BASE_URL
from helpers import INDEX_SPEC as SPEC
from helpers import open_index


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "cntr-sync"


def entry(relpath: str, remote_id: str, *, size: int = 3, digest: str = "h1") -> IndexEntry:
    return IndexEntry(relpath, remote_id, f"/mnt/data/{relpath}", size, 1_000, digest, 1.5)


def intent(relpath: str, digest: str = "h1") -> UploadIntent:
    return UploadIntent(relpath, relpath.replace("/", "_"), 3, digest, 2.5)


def lock_is_free(lock_path: Path) -> bool:
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


# -- files and schema ----------------------------------------------------------------


def test_open_creates_schema_in_a_private_state_dir(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        stem = hashlib.sha256(f"{BASE_URL}\0{root.resolve()}\0{SPEC}".encode()).hexdigest()[:24]
        assert index.path == state_dir / f"{stem}.sqlite"
        assert index.lock_path == state_dir / f"{stem}.lock"
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        # Taking the lock writes nothing (the holder is named from /proc/locks).
        assert index.lock_path.read_bytes() == b""
        db = sqlite3.connect(index.path)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            assert {"meta", "entries", "intents", "pending_deletes", "hashes"} <= tables
            assert "entries_by_remote_id" in tables
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
            # The rollback journal until a write: opening and reading write nothing.
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
            meta = db.execute("SELECT base_url, root, container_spec FROM meta").fetchall()
            assert meta == [(BASE_URL, str(root.resolve()), SPEC)]
        finally:
            db.close()
        assert index.container_id is None
        assert index.container_name is None
        assert index.server_keeps_names is None
        assert index.entries() == {}
        assert index.entry_count() == 0


def test_each_pair_has_its_own_file(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as one, open_index(state_dir, root, spec="other") as two:
        assert one.path != two.path
    with open_index(state_dir, root, base_url="http://localhost:4000/v1") as three:
        assert three.path != one.path


def test_credentials_in_the_base_url_are_neither_stored_nor_part_of_the_name(
    state_dir: Path, root: Path
) -> None:
    with open_index(state_dir, root, base_url="https://user:s3cret@gw.example/v1") as index:
        path = index.path
    assert b"s3cret" not in path.read_bytes()
    with open_index(state_dir, root, base_url="https://user:rotated@gw.example/v1") as index:
        assert index.path == path


def test_reopen_keeps_everything(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "my-box")
        index.set_server_keeps_names(False)
        index.record_upload(entry("a.txt", "cfile_a"))
        index.add_intent(intent("b.txt"))
        index.add_pending_delete(PendingDelete("cfile_old", "c.txt"))
        index.hashes.store("a.txt", 11, 3, 1_000, 5, "h1")  # buffered until close

    with open_index(state_dir, root) as index:
        assert (index.container_id, index.container_name) == ("cntr_1", "my-box")
        assert index.server_keeps_names is False
        assert index.entries() == {"a.txt": entry("a.txt", "cfile_a")}
        assert index.intents() == {"b.txt": intent("b.txt")}
        assert index.pending_deletes() == [PendingDelete("cfile_old", "c.txt")]
        assert index.hashes.lookup("a.txt", 11, 3, 1_000, 5) == "h1"


def test_a_version_1_file_is_migrated_with_its_rows(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        path = index.path
    path.unlink()
    # Exactly what version 1 wrote: its schema and rows.
    db = sqlite3.connect(path)
    try:
        for statement in index_module._MIGRATIONS[0]:
            db.execute(statement)
        db.execute(
            "INSERT INTO meta VALUES (1, ?, ?, ?, 'cntr_1', 'my-box', 1, 0)",
            (BASE_URL, str(root.resolve()), SPEC),
        )
        db.execute(
            "INSERT INTO entries VALUES"
            " ('cntr_1', 'a.txt', 'cfile_a', '/mnt/data/a.txt', 3, 1000, 'h1', 1.5)"
        )
        db.execute("INSERT INTO doomed VALUES ('cfile_old', 'cntr_1', 'c.txt')")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    finally:
        db.close()
    with open_index(state_dir, root) as index:
        assert index.server_keeps_names is True
        assert index.pending_deletes() == [PendingDelete("cfile_old", "c.txt")]
        migrated = index.entries()["a.txt"]
        assert migrated == entry("a.txt", "cfile_a")
        assert (migrated.origin, migrated.remote_size, migrated.synced_at) == ("push", None, 1.5)
        assert index.pull_failures() == {}


def test_newer_schema_is_refused_and_the_lock_released(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        path, lock_path = index.path, index.lock_path
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()

    with pytest.raises(LocalError) as caught:
        open_index(state_dir, root)

    assert "newer cntr-sync" in caught.value.message
    assert str(path) in caught.value.message
    assert caught.value.path == str(path)
    assert lock_is_free(lock_path)


def test_garbage_file_is_refused_naming_it(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        path, lock_path = index.path, index.lock_path
    for sidecar in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        sidecar.unlink(missing_ok=True)
    path.write_bytes(b"this is not a database, just some text\n" * 100)

    with pytest.raises(LocalError) as caught:
        open_index(state_dir, root)

    assert str(path) in caught.value.message
    assert "delete it" in caught.value.message
    assert lock_is_free(lock_path)


# -- the lock ------------------------------------------------------------------------


def test_second_open_in_the_same_process_is_locked_out(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        with pytest.raises(LockedError) as caught:
            open_index(state_dir, root)
        assert caught.value.pid == os.getpid()
        assert caught.value.message == (
            f"another cntr-sync (pid {os.getpid()}) is syncing {root} -> {SPEC};"
            f" lock {index.lock_path}"
        )
    with open_index(state_dir, root):
        pass  # released on close


@pytest.mark.e2e
@pytest.mark.timeout(30)
def test_lock_held_by_another_process_and_freed_when_it_is_killed(
    state_dir: Path, root: Path
) -> None:
    holder_code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from cntr_sync.index import Index
        index = Index.open(Path({str(state_dir)!r}), base_url={BASE_URL!r},
                           root=Path({str(root)!r}), container_spec={SPEC!r})
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as caught:
            open_index(state_dir, root)
        assert caught.value.pid == holder.pid
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        holder.communicate(timeout=10)
    with open_index(state_dir, root) as index:
        assert index.container_id is None


# -- containers, entries, intents, doomed --------------------------------------------


def test_switching_container_wipes_its_rows_but_keeps_hashes(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.record_upload(entry("a.txt", "cfile_a"))
        index.add_intent(intent("b.txt"))
        index.add_pending_delete(PendingDelete("cfile_x", "x.txt"))
        index.hashes.store("a.txt", 1, 3, 1_000, 5, "h1")
        index.hashes.flush()

        index.set_container("cntr_1", "box renamed")  # same container: nothing lost
        assert index.container_name == "box renamed"
        assert index.entry_count() == 1

        index.set_container("cntr_2", "box")

        assert index.container_id == "cntr_2"
        assert index.entries() == {}
        assert index.intents() == {}
        assert index.pending_deletes() == []
        assert index.hashes.lookup("a.txt", 1, 3, 1_000, 5) == "h1"
        db = sqlite3.connect(index.path)
        try:
            for table in ("entries", "intents", "pending_deletes"):
                assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
        finally:
            db.close()


def test_record_upload_stores_entry_clears_intent_and_queues_delete(
    state_dir: Path, root: Path
) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.add_intent(intent("a.txt", "h2"))
        index.record_upload(
            entry("a.txt", "cfile_new", digest="h2"), pending_delete=PendingDelete("z", "a")
        )
        assert index.entries() == {"a.txt": entry("a.txt", "cfile_new", digest="h2")}
        assert index.intents() == {}
        assert index.pending_deletes() == [PendingDelete("z", "a")]


def test_record_upload_is_all_or_nothing(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.add_intent(intent("a.txt"))
        broken = PendingDelete(None, "a.txt")  # type: ignore[arg-type]  # NOT NULL fails last
        with pytest.raises(LocalError, match=str(index.path)):
            index.record_upload(entry("a.txt", "cfile_a"), pending_delete=broken)
        assert index.entries() == {}
        assert index.intents() == {"a.txt": intent("a.txt")}
        assert index.pending_deletes() == []


def test_replacing_an_entry_dooms_the_old_remote_file(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.record_upload(entry("a.txt", "cfile_v1"))
        index.record_upload(entry("a.txt", "cfile_v1"))  # same id: nothing to doom
        assert index.pending_deletes() == []
        index.record_upload(entry("a.txt", "cfile_v2", digest="h2"))
        assert index.pending_deletes() == [PendingDelete("cfile_v1", "a.txt")]
        index.record_delete("cfile_v1")
        assert index.pending_deletes() == []
        assert index.entries()["a.txt"].remote_id == "cfile_v2"


def test_record_delete_removes_entry_and_pending_delete(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.record_upload(entry("a.txt", "cfile_a"))
        index.record_upload(entry("b.txt", "cfile_b"))
        index.add_pending_delete(PendingDelete("cfile_a", "a.txt"))
        index.record_delete("cfile_a")
        index.record_delete("cfile_unknown")
        assert set(index.entries()) == {"b.txt"}
        assert index.pending_deletes() == []


def test_adopt_refresh_and_forget(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.add_intent(intent("a.txt"))
        index.adopt(entry("a.txt", "cfile_a"))
        assert index.intents() == {}
        index.refresh_stat("a.txt", 3, 2_000)
        refreshed = index.entries()["a.txt"]
        assert (refreshed.mtime_ns, refreshed.hash, refreshed.remote_id) == (2_000, "h1", "cfile_a")
        index.forget("a.txt")
        assert index.entries() == {}
        index.forget("never-there")


def test_intents_replace_per_relpath(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.add_intent(intent("a.txt", "h1"))
        index.add_intent(intent("a.txt", "h2"))
        index.add_intent(intent("b.txt"))
        assert index.intents() == {"a.txt": intent("a.txt", "h2"), "b.txt": intent("b.txt")}
        index.clear_intent("a.txt")
        assert set(index.intents()) == {"b.txt"}


def test_writes_that_need_a_container_refuse_without_one(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        with pytest.raises(RuntimeError, match="set_container"):
            index.add_intent(intent("a.txt"))
        assert index.intents() == {}


# -- the hash cache ------------------------------------------------------------------


def test_hash_cache_lookup_store_and_prune(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        index.hashes.store("a.txt", 1, 3, 1_000, 5, "ha")
        index.hashes.store("b.txt", 2, 3, 1_000, 5, "hb")
        index.hashes.store("c.txt", 3, 3, 1_000, 5, "hc")
        assert index.hashes.lookup("a.txt", 1, 3, 1_000, 5) == "ha"
        assert index.hashes.lookup("a.txt", 9, 3, 1_000, 5) is None  # another inode
        assert index.hashes.lookup("a.txt", 1, 4, 1_000, 5) is None
        assert index.hashes.lookup("a.txt", 1, 3, 1_001, 5) is None
        assert index.hashes.lookup("a.txt", 1, 3, 1_000, 6) is None  # another change time
        index.hashes.flush()
        assert index.hashes.lookup("b.txt", 2, 3, 1_000, 5) == "hb"

        assert index.hashes.prune(iter(["a.txt", "c.txt", "not-cached"])) == 1
        assert index.hashes.lookup("b.txt", 2, 3, 1_000, 5) is None
        assert index.hashes.lookup("c.txt", 3, 3, 1_000, 5) == "hc"
        assert index.hashes.prune([]) == 2


def test_index_is_a_hash_cache_for_scan(state_dir: Path, root: Path) -> None:
    old = 1_600_000_000 * 10**9
    for name in ("a.txt", "b.txt"):
        (root / name).write_text(name)
        os.utime(root / name, ns=(old, old))
    hashed: list[str] = []

    def hasher(path: Path) -> str:
        hashed.append(path.name)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    rules = IgnoreRules.load(root)
    with open_index(state_dir, root) as index:
        first = scan(root, rules=rules, hash_cache=index.hashes, hasher=hasher)
    with open_index(state_dir, root) as index:
        second = scan(root, rules=rules, hash_cache=index.hashes, hasher=hasher)
    assert sorted(hashed) == ["a.txt", "b.txt"]
    assert second.files == first.files


# -- scale ---------------------------------------------------------------------------


def test_hundred_thousand_entries_roundtrip(state_dir: Path, root: Path) -> None:
    count = 100_000
    entries = [entry(f"dir{i % 100}/file {i}.txt", f"cfile_{i}", size=i) for i in range(count)]
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.adopt_many(entries)
        for item in entries:
            index.hashes.store(item.relpath, item.size, item.size, item.mtime_ns, 5, item.hash)

    with open_index(state_dir, root) as index:
        loaded = index.entries()
        assert index.entry_count() == count
        assert loaded == {item.relpath: item for item in entries}
        assert index.pending_deletes() == []
        keep = (item.relpath for item in entries[: count // 2])
        assert index.hashes.prune(keep) == count - count // 2
        assert index.hashes.lookup(entries[0].relpath, 0, 0, 1_000, 5) == "h1"
        assert index.hashes.lookup(entries[-1].relpath, count - 1, count - 1, 1_000, 5) is None


@pytest.mark.e2e
def test_a_lock_is_taken_on_a_full_disk_and_writes_nothing(tmp_path: Path) -> None:
    # A full disk, for real: a file size limit of 0 fails any write (EFBIG). Taking
    # the lock writes nothing (the holder is named from /proc/locks), so it works,
    # and the holder is still named to a second taker.
    script = """
import os, resource, signal, sys
from pathlib import Path
from cntr_sync.errors import LockedError
from cntr_sync.locks import FileLock
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = Path(sys.argv[1])
path.write_text("")
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
lock = FileLock.acquire(path, "test")
print("held:", lock.held)
try:
    FileLock.acquire(path, "test")
except LockedError as exc:
    print("named:", exc.pid == os.getpid())
lock.release()
print("again:", FileLock.acquire(path, "test").held)
"""
    lock_path = tmp_path / "pair.lock"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(lock_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["held: True", "named: True", "again: True"]
    assert lock_path.read_bytes() == b""


def _state_files(state_dir: Path) -> dict[str, tuple[int, int, int]]:
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns, stat.S_IMODE(p.stat().st_mode))
        for p in state_dir.iterdir()
    }


def test_a_reader_writes_nothing_not_even_to_an_old_schema(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        path = index.path
    for leftover in state_dir.glob(f"{path.name}*"):
        leftover.unlink()
    # A file exactly as version 2 left it.
    db = sqlite3.connect(path)
    for statements in index_module._MIGRATIONS[:2]:
        for statement in statements:
            db.execute(statement)
    db.execute(
        "INSERT INTO meta VALUES (1, ?, ?, ?, 'cntr_1', 'box', 1, 0)",
        (BASE_URL, str(root.resolve()), SPEC),
    )
    db.execute(
        "INSERT INTO entries VALUES"
        " ('cntr_1', 'a.txt', 'cfile_a', '/mnt/data/a.txt', 3, 1000, 'h1', 1.5)"
    )
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    before = _state_files(state_dir)
    with open_index(state_dir, root, lock=False) as reader:
        assert set(reader.entries()) == {"a.txt"}
        assert reader.pull_failures() == {}  # migrated, in memory
        reader.hashes.store("a.txt", 1, 3, 1_000, 5, "h")
    assert _state_files(state_dir) == before
    again = sqlite3.connect(path)
    try:
        assert again.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        again.close()


def test_a_reader_of_a_pair_never_synced_creates_nothing(tmp_path: Path, root: Path) -> None:
    missing = tmp_path / "never"
    with open_index(missing, root, lock=False) as reader:
        assert reader.entries() == {} and reader.container_id is None
    assert not missing.exists()


def test_state_files_are_private(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.record_upload(entry("a.txt", "cfile_a"))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state_dir.iterdir()}
    assert modes and all(mode == 0o600 for mode in modes.values()), modes


def test_entries_under_a_path_are_the_path_and_everything_below_it(
    state_dir: Path, root: Path
) -> None:
    names = ["a", "a/x", "a/y/z", "a.txt", "a-b/d", "a0", "ab/c", "b/a/x", "é/a"]
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        for number, name in enumerate(names):
            index.record_upload(entry(name, f"cfile_{number}"))
        assert sorted(index.entries_under(["a"])) == ["a", "a/x", "a/y/z"]
        assert sorted(index.entries_under(["a/y", "ab", "é"])) == ["a/y/z", "ab/c", "é/a"]
        assert index.entries_under(["nothing", "b/a/x/deeper"]) == {}


def test_a_batch_commits_once_and_an_intent_inside_it_is_on_disk_at_once(
    state_dir: Path, root: Path
) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.begin_batch()
        index.record_upload(entry("a.txt", "cfile_a"))
        index.add_intents([intent("b.txt")])  # commits what came before, then the intent
        index.record_upload(entry("c.txt", "cfile_c"))
        with sqlite3.connect(index.path) as other:  # what a crash now would leave
            on_disk = {row[0] for row in other.execute("SELECT relpath FROM entries")}
            intents = {row[0] for row in other.execute("SELECT relpath FROM intents")}
        assert (on_disk, intents) == ({"a.txt"}, {"b.txt"})
        index.end_batch()
        with sqlite3.connect(index.path) as other:
            on_disk = {row[0] for row in other.execute("SELECT relpath FROM entries")}
        assert on_disk == {"a.txt", "c.txt"}


def test_unfinished_work_is_counted_for_the_current_container_only(
    state_dir: Path, root: Path
) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_old", "box")
        index.add_intent(intent("a.txt"))
        index.add_pending_delete(PendingDelete("cfile_old", "b.txt"))
        assert index.has_unfinished_work()
        # The old container's leftovers are not this one's open work (the plan,
        # which reads intents and pending deletes per container, ignores them too).
        index.set_container("cntr_new", "box")
        assert not index.has_unfinished_work()
        index.add_intent(intent("c.txt"))
        assert index.has_unfinished_work()


def journal_mode(path: Path) -> str:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        mode: str = db.execute("PRAGMA journal_mode").fetchone()[0]
        return mode
    finally:
        db.close()


def test_writes_run_in_wal_and_settle_returns_to_the_rollback_journal(
    state_dir: Path, root: Path
) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        assert journal_mode(index.path) == "wal"
        assert Path(f"{index.path}-wal").exists()
        index.settle()
        assert journal_mode(index.path) == "delete"
        assert not Path(f"{index.path}-wal").exists()
        assert not Path(f"{index.path}-shm").exists()
        assert index.container_id == "cntr_1"  # reads go on, and write nothing
        assert not Path(f"{index.path}-shm").exists()
        index.record_upload(entry("a.txt", "cfile_a"))
        assert journal_mode(index.path) == "wal"
    # Closing settles too.
    assert journal_mode(index.path) == "delete"
    with open_index(state_dir, root) as index:
        assert set(index.entries()) == {"a.txt"}


def test_a_file_left_in_wal_by_a_crash_is_settled(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        path = index.path
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.close()
    with open_index(state_dir, root) as index:
        index.settle()
        assert journal_mode(path) == "delete"


def test_a_reader_holding_the_file_leaves_it_in_wal_until_later(
    state_dir: Path, root: Path
) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        reader = sqlite3.connect(f"file:{index.path}?mode=ro", uri=True, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM entries").fetchone()
            index.settle()  # does not wait for the reader, and does not fail
            assert journal_mode(index.path) == "wal"
            reader.execute("COMMIT")
        finally:
            reader.close()
        index.settle()
        assert journal_mode(index.path) == "delete"
