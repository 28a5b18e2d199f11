"""scan: walking a real temporary tree, ignore rules, hostile names, the hash cache.

The scans here run as the engine runs them: against the SQLite hash cache of an
``index.Index`` (a new one in a temporary directory, unless a test passes its own)
and with the real hashing; only the tests that must change a file while it is
hashed, or fail its read, inject a ``hasher``.
"""

from __future__ import annotations

import os
import pickle
import re
import select
import shutil
import signal
import socket
import stat
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from pathspec import GitIgnoreSpec

from cntr_sync.errors import ConfigError, LocalError
from cntr_sync.hashcache import HashCache, SqliteHashCache, decode, encode
from cntr_sync.hashing import hash_file
from cntr_sync.ignore import DEFAULT_PATTERNS, IgnoreRules, Layer
from cntr_sync.index import Index
from cntr_sync.remote_paths import printable
from cntr_sync.scan import Snapshot, _name_problem, scan
from cntr_sync.tree_names import MAX_RELPATH_BYTES
from helpers import INDEX_BASE_URL, INDEX_SPEC, MemoryDatabase, open_index

IS_ROOT = os.geteuid() == 0
OLD_NS = time.time_ns() - 3600 * 10**9
# "nobody"/"nogroup" on most systems; used by number, so no passwd entry is needed.
UNPRIVILEGED_ID = 65534
UNPRIVILEGED_TIMEOUT = 60.0

T = TypeVar("T")


def write(path: Path, data: bytes | str = b"x", *, old: bool = True) -> Path:
    """Create ``path`` (and parents); ``old`` backdates it past the racy-cache window."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if old:
        os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


def run_scan(
    root: Path,
    *,
    patterns: tuple[str, ...] = (),
    cache: HashCache | None = None,
    follow: bool = False,
    hasher: Callable[[Path], str] | None = None,
    accept_growth: bool = False,
) -> Snapshot:
    """A whole-tree scan of ``root`` as the engine runs one: against ``cache``, else the
    SQLite hash cache of a new index in a temporary directory (flushed, as a pass
    does); ``hasher`` only where a test must change a file mid-hash or fail its read."""
    if cache is not None:
        return scan(
            root,
            rules=IgnoreRules.load(root, patterns),
            hash_cache=cache,
            follow_symlinks=follow,
            hasher=hasher,
            accept_growth=accept_growth,
        )
    with (
        tempfile.TemporaryDirectory(prefix="cntr-sync-state-") as state,
        Index.open(
            Path(state), base_url=INDEX_BASE_URL, root=root, container_spec=INDEX_SPEC
        ) as index,
    ):
        snapshot = run_scan(
            root,
            patterns=patterns,
            cache=index.hashes,
            follow=follow,
            hasher=hasher,
            accept_growth=accept_growth,
        )
        index.hashes.flush()
    return snapshot


@pytest.fixture
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    """An index outside the scanned tree, for a cache that lasts from scan to scan."""
    root = tmp_path_factory.mktemp("root-of-record")
    with open_index(tmp_path_factory.mktemp("state"), root) as opened:
        yield opened


def stored_digests(index: Index) -> dict[str, str]:
    """The digests the index's hash cache holds, by relpath (flushed first)."""
    index.hashes.flush()
    digests: dict[str, str] = {}
    for directory, blob in index.read("SELECT dir, entries FROM hashes", ()):
        for name, row in (decode(blob) or {}).items():
            digests[f"{directory}/{name}" if directory else name] = row[4]
    for directory, name, digest_ in index.read("SELECT dir, name, hash FROM hash_deltas", ()):
        relpath = f"{directory}/{name}" if directory else name
        if digest_ is None:
            digests.pop(relpath, None)
        else:
            digests[relpath] = digest_
    return digests


def reasons(snapshot: Snapshot) -> dict[str, str]:
    return {warning.relpath: warning.reason for warning in snapshot.warnings}


def _traversable_tmp() -> str:
    """The temp directory if every ancestor is world-searchable, else /tmp."""
    candidate = Path(tempfile.gettempdir()).resolve()
    for directory in (candidate, *candidate.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            return "/tmp"
    return str(candidate)


@pytest.fixture
def unprivileged_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory ``run_unprivileged`` scenarios may write in.

    Not root: pytest's tmp_path. Root: pytest's tmp_path (under a 0700
    /tmp/pytest-of-root) is out of the unprivileged uid's reach, so a fresh
    directory under a world-searchable temp dir, owned by that uid, removed after.
    """
    if not IS_ROOT:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="cntr-sync-unprivileged-", dir=_traversable_tmp()))
    try:
        os.chown(path, UNPRIVILEGED_ID, UNPRIVILEGED_ID)
    except OSError as error:
        shutil.rmtree(path)
        pytest.skip(f"cannot give a directory to uid {UNPRIVILEGED_ID}: {error}")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def run_unprivileged(scenario: Callable[[], T]) -> T:
    """``scenario()``, run as an ordinary user; its result, or its exception re-raised.

    Not root: called right here. Root reads and lists everything whatever its
    mode, so as root it runs in a forked child that first drops to uid/gid 65534.
    Forked, not exec'd: the interpreter and venv may live where that uid cannot
    read (e.g. under a 0700 /root), and a fork needs neither. The child pickles its
    outcome back through a pipe and always leaves with ``os._exit``.
    """
    if not IS_ROOT:
        return scenario()
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # 3.12+ warns when forking with threads alive (e.g. another module's daemon
        # readers); the child only runs the scenario and is killed after a timeout.
        warnings.filterwarnings("ignore", message=".*fork", category=DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_fd)
            outcome: tuple[str, object]
            try:
                os.setgroups([])
                os.setgid(UNPRIVILEGED_ID)
                os.setuid(UNPRIVILEGED_ID)
            except OSError as error:
                outcome = ("cannot-drop", str(error))
            else:
                try:
                    outcome = ("returned", scenario())
                except BaseException as error:
                    outcome = ("raised", error)
            try:
                payload = pickle.dumps(outcome)
            except Exception as error:
                failure = RuntimeError(f"child outcome {outcome!r} cannot be pickled: {error}")
                payload = pickle.dumps(("raised", failure))
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
            status = 0
        finally:
            os._exit(status)

    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + UNPRIVILEGED_TIMEOUT
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([pipe], [], [], remaining)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"unprivileged child timed out after {UNPRIVILEGED_TIMEOUT}s")
            chunk = pipe.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0, "unprivileged child failed"
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "cannot-drop":
        pytest.skip(f"cannot drop root privileges to uid {UNPRIVILEGED_ID}: {value}")
    if kind == "raised":
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[no-any-return]


def digest(data: bytes) -> str:
    return xxhash.xxh3_128(data).hexdigest()


# -- the tree ------------------------------------------------------------------------


def test_nested_tree_with_unicode_spaces_and_empty_files(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "hello")
    write(tmp_path / "dir with space" / "ü ñ 文件.txt", "unicode")
    write(tmp_path / "deep" / "x" / "y" / "z" / "empty", b"")
    (tmp_path / "empty dir").mkdir()

    snapshot = run_scan(tmp_path)

    assert set(snapshot.files) == {"a.txt", "dir with space/ü ñ 文件.txt", "deep/x/y/z/empty"}
    assert snapshot.warnings == ()
    assert snapshot.unstable == ()
    empty = snapshot.files["deep/x/y/z/empty"]
    assert empty.size == 0
    assert empty.hash == digest(b"")
    unicode_file = snapshot.files["dir with space/ü ñ 文件.txt"]
    on_disk = (tmp_path / "dir with space" / "ü ñ 文件.txt").stat()
    assert unicode_file.hash == digest(b"unicode")
    assert (unicode_file.size, unicode_file.mtime_ns, unicode_file.inode) == (
        on_disk.st_size,
        on_disk.st_mtime_ns,
        on_disk.st_ino,
    )
    assert unicode_file.relpath == "dir with space/ü ñ 文件.txt"


def test_relpaths_keep_the_file_systems_normalisation(tmp_path: Path) -> None:
    nfd = "cafe\u0301.txt"  # decomposed é: must not be turned into NFC
    write(tmp_path / nfd)
    assert list(run_scan(tmp_path).files) == [nfd]


def test_hash_file_streams_across_chunk_boundaries(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 7)
    path = write(tmp_path / "big.bin", data)
    assert hash_file(path) == digest(data)


def test_hash_file_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        hash_file(fifo)


def test_case_only_differences_are_two_files(tmp_path: Path) -> None:
    write(tmp_path / "A.txt", "upper")
    write(tmp_path / "a.txt", "lower")
    if len(os.listdir(tmp_path)) != 2:
        pytest.skip("case-insensitive file system")
    snapshot = run_scan(tmp_path)
    assert snapshot.files["A.txt"].hash == digest(b"upper")
    assert snapshot.files["a.txt"].hash == digest(b"lower")


# -- ignore rules --------------------------------------------------------------------


def test_default_ignores(tmp_path: Path) -> None:
    # A hostile name inside an ignored directory would warn if the walk went in.
    write(tmp_path / ".git" / "objects" / "bad\nname")
    write(tmp_path / "sub" / ".hg" / "store")
    write(tmp_path / ".cntrsync" / "state.sqlite")
    write(tmp_path / "vendor" / ".git", "gitdir: ../.git/modules/vendor")
    junk = [
        "notes.txt.swp",
        ".notes.txt.swo",
        "x.swx",
        "notes.txt~",
        ".#notes.txt",
        "#notes.txt#",
        "4913",
        ".~lock.report.odt#",
        "a.tmp",
        "film.crdownload",
        "film.part",
        ".DS_Store",
        "Thumbs.db",
    ]
    for name in junk:
        write(tmp_path / "sub" / name)
    write(tmp_path / ".cntrignore", "")
    write(tmp_path / ".gitignore", "*.o")
    write(tmp_path / "sub" / "real.txt")

    snapshot = run_scan(tmp_path)

    assert set(snapshot.files) == {".cntrignore", ".gitignore", "sub/real.txt"}
    assert snapshot.warnings == ()
    assert snapshot.ignored_count == 4 + len(junk)


def test_cntrignore_patterns(tmp_path: Path) -> None:
    write(
        tmp_path / ".cntrignore",
        "# a comment\n\n*.log\n!keep.log\nbuild/\n/top-only.txt\ndocs/**/*.pdf\r\n",
    )
    for relpath in [
        "a.log",
        "sub/b.log",
        "keep.log",
        "sub/keep.log",
        "build/out.o",
        "src/build/out.o",
        "other/build",
        "top-only.txt",
        "sub/top-only.txt",
        "docs/x/y/manual.pdf",
        "docs/readme.md",
    ]:
        write(tmp_path / relpath)

    snapshot = run_scan(tmp_path)

    assert set(snapshot.files) == {
        ".cntrignore",
        "keep.log",
        "sub/keep.log",
        "other/build",
        "sub/top-only.txt",
        "docs/readme.md",
    }


def test_negation_reincludes_a_default_but_never_our_state_dir(tmp_path: Path) -> None:
    write(tmp_path / ".cntrignore", "!*.tmp\n!.cntrsync/\n")
    write(tmp_path / "wanted.tmp")
    write(tmp_path / ".cntrsync" / "index.sqlite")
    assert set(run_scan(tmp_path).files) == {".cntrignore", "wanted.tmp"}


def test_config_patterns_apply_after_the_file(tmp_path: Path) -> None:
    write(tmp_path / ".cntrignore", "!data.csv\n")
    write(tmp_path / "data.csv")
    write(tmp_path / "important.csv")
    write(tmp_path / "cache" / "blob")
    snapshot = run_scan(tmp_path, patterns=("*.csv", "!important.csv", "cache/"))
    assert set(snapshot.files) == {".cntrignore", "important.csv"}


def test_nested_cntrignore_files_apply_below_their_directory(tmp_path: Path) -> None:
    write(tmp_path / ".cntrignore", "*.log\n")
    write(tmp_path / "app" / ".cntrignore", "!keep.log\nbuild/\n/local-only.txt\n")
    write(tmp_path / "app" / "deeper" / ".cntrignore", "*.csv\n")
    for relpath in (
        "top.log",
        "app/keep.log",
        "app/other.log",
        "app/build/out.o",
        "app/local-only.txt",
        "app/sub/local-only.txt",
        "app/deeper/data.csv",
        "data.csv",
        "other/build/x.o",
    ):
        write(tmp_path / relpath)
    files = set(run_scan(tmp_path).files)
    assert files == {
        ".cntrignore",
        "app/.cntrignore",
        "app/deeper/.cntrignore",
        "app/keep.log",
        "app/sub/local-only.txt",  # "/local-only.txt" is anchored to app/
        "data.csv",
        "other/build/x.o",
    }
    # The configured patterns come first, whatever the files say.
    files = set(run_scan(tmp_path, patterns=("keep.log", "!app/deeper/data.csv")).files)
    assert "app/keep.log" not in files and "app/deeper/data.csv" in files


def test_a_malformed_nested_cntrignore_names_its_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "sub" / ".cntrignore", "ok.txt\n!\n")
    with pytest.raises(LocalError, match=rf"{re.escape(str(bad))}:2: invalid ignore pattern"):
        run_scan(tmp_path)


def test_a_file_appended_to_while_hashed_is_taken_as_it_was_when_growth_is_accepted(
    tmp_path: Path,
) -> None:
    log = write(tmp_path / "app.log", b"first\n" * 100)

    def appending(path: Path) -> str:
        digest = hash_file(path)
        with path.open("ab") as handle:
            handle.write(b"more\n")
        return digest

    unstable = run_scan(tmp_path, hasher=appending)
    assert unstable.unstable == ("app.log",) and "app.log" not in unstable.files
    log.write_bytes(b"first\n" * 100)
    taken = run_scan(tmp_path, hasher=appending, accept_growth=True)
    assert taken.unstable == ()
    assert taken.files["app.log"].size == 600
    assert taken.files["app.log"].hash == hash_file(log, limit=600)
    assert log.stat().st_size == 605


def test_a_same_size_edit_with_the_old_mtime_put_back_is_seen(tmp_path: Path, index: Index) -> None:
    # touch -r, some editors and archivers: same size, same mtime, new content.
    path = write(tmp_path / "config.ini", b"debug = 0\n")
    first = run_scan(tmp_path, cache=index.hashes).files["config.ini"]
    assert stored_digests(index) == {"config.ini": first.hash}
    before = path.stat()
    time.sleep(0.01)  # a later change time
    path.write_bytes(b"debug = 1\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = run_scan(tmp_path, cache=index.hashes).files["config.ini"]
    assert (again.size, again.mtime_ns) == (first.size, first.mtime_ns)
    assert again.hash != first.hash


def test_ignored_answers_for_dirs_and_files(tmp_path: Path) -> None:
    rules = IgnoreRules.load(tmp_path, ["build/"])
    assert rules.ignored(".git", is_dir=True)
    assert rules.ignored("a/b/.cntrsync", is_dir=True)
    assert rules.ignored("build", is_dir=True)
    assert not rules.ignored("build", is_dir=False)
    assert rules.ignored("x/y.swp", is_dir=False)
    assert not rules.ignored(".cntrignore", is_dir=False)


def test_malformed_cntrignore_names_file_and_line(tmp_path: Path) -> None:
    ignore_file = write(tmp_path / ".cntrignore", "*.log\n!\n")
    with pytest.raises(LocalError) as caught:
        IgnoreRules.load(tmp_path)
    assert f"{ignore_file}:2:" in caught.value.message
    assert caught.value.path == str(ignore_file)


def test_cntrignore_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    write(tmp_path / ".cntrignore", b"ok\n\xff\xfe\n")
    with pytest.raises(LocalError, match=r"\.cntrignore:2: not valid UTF-8"):
        IgnoreRules.load(tmp_path)


def test_bad_config_pattern_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid ignore pattern"):
        IgnoreRules.load(tmp_path, ["ok", "trailing\\"])


# -- symlinks ------------------------------------------------------------------------


def test_symlinks_are_not_followed_by_default(tmp_path: Path) -> None:
    write(tmp_path / "real" / "f.txt")
    (tmp_path / "file-link").symlink_to("real/f.txt")
    (tmp_path / "dir-link").symlink_to("real")

    snapshot = run_scan(tmp_path)

    assert set(snapshot.files) == {"real/f.txt"}
    assert reasons(snapshot) == {
        "file-link": "symlink not followed",
        "dir-link": "symlink not followed",
    }


def test_followed_symlink_to_a_file_is_a_file(tmp_path: Path) -> None:
    write(tmp_path / "real" / "f.txt", "content")
    (tmp_path / "alias.txt").symlink_to("real/f.txt")

    snapshot = run_scan(tmp_path, follow=True)

    assert snapshot.files["alias.txt"].hash == digest(b"content")
    assert snapshot.files["real/f.txt"].hash == digest(b"content")
    assert snapshot.warnings == ()


def test_followed_dir_links_walk_each_directory_once_at_its_real_place(tmp_path: Path) -> None:
    write(tmp_path / "z_real" / "f.txt")
    # Sorts before the real directory, so the outcome cannot be scandir luck.
    (tmp_path / "a_link").symlink_to("z_real")
    (tmp_path / "z_real" / "up").symlink_to("..")

    snapshot = run_scan(tmp_path, follow=True)

    assert set(snapshot.files) == {"z_real/f.txt"}
    assert reasons(snapshot) == {
        "a_link": "symlink to a directory already synced as z_real",
        "z_real/up": "symlink to a directory already synced as .",
    }


def test_followed_dir_link_can_alias_a_directory_the_walk_skipped(tmp_path: Path) -> None:
    write(tmp_path / "bad\nname" / "f.txt", "inside")
    (tmp_path / "good").symlink_to("bad\nname")

    snapshot = run_scan(tmp_path, follow=True)

    assert snapshot.files["good/f.txt"].hash == digest(b"inside")
    assert reasons(snapshot) == {"bad\\x0aname": "name contains a control character"}


def test_followed_links_outside_root_looping_dangling_or_ignored_are_skipped(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    write(tmp_path / "outside" / "secret.txt")
    write(root / ".git" / "config")
    (root / "out-dir").symlink_to(tmp_path / "outside")
    (root / "out-file").symlink_to(tmp_path / "outside" / "secret.txt")
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    (root / "dangling").symlink_to("nowhere")
    (root / "git-config").symlink_to(".git/config")

    snapshot = run_scan(root, follow=True)

    assert snapshot.files == {}
    assert reasons(snapshot) == {
        "out-dir": "symlink points outside the sync root",
        "out-file": "symlink points outside the sync root",
        "loop-a": "symlink not followed: symlink loop",
        "loop-b": "symlink not followed: symlink loop",
        "dangling": "symlink target does not exist",
        "git-config": "symlink points to an ignored path",
    }


def test_root_may_itself_be_a_symlink(tmp_path: Path) -> None:
    write(tmp_path / "real" / "f.txt")
    (tmp_path / "link").symlink_to("real")
    assert set(run_scan(tmp_path / "link").files) == {"f.txt"}


# -- special and unreadable entries --------------------------------------------------


@pytest.mark.timeout(10)
def test_fifo_and_socket_are_skipped_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "pipe-link").symlink_to("pipe")
    write(tmp_path / "f.txt")
    expected = {"pipe": "FIFO skipped", "pipe-link": "FIFO skipped"}
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock"))
        expected["sock"] = "socket skipped"
    except OSError:
        pass  # the path is too long for AF_UNIX here; the FIFO still covers the rule
    try:
        snapshot = run_scan(tmp_path, follow=True)
    finally:
        sock.close()
    assert set(snapshot.files) == {"f.txt"}
    assert reasons(snapshot) == expected


def test_unreadable_file_and_dir_are_warnings_and_uncertain(unprivileged_dir: Path) -> None:
    """As root, runs as uid 65534 in a child (see ``run_unprivileged``)."""

    def scenario() -> Snapshot:
        locked_file = write(unprivileged_dir / "secret.txt")
        locked_dir = unprivileged_dir / "private"
        write(locked_dir / "inner.txt")
        locked_file.chmod(0)
        locked_dir.chmod(0)
        try:
            return run_scan(unprivileged_dir)
        finally:
            locked_dir.chmod(stat.S_IRWXU)
            locked_file.chmod(stat.S_IRUSR | stat.S_IWUSR)

    snapshot = run_unprivileged(scenario)
    assert snapshot.files == {}
    assert snapshot.unreadable == ("secret.txt",)
    assert snapshot.unreadable_dirs == ("private",)
    assert snapshot.is_uncertain("private/inner.txt")
    assert set(reasons(snapshot)) == {"secret.txt", "private"}


def test_read_error_while_hashing_is_a_warning(tmp_path: Path) -> None:
    """Root-safe: the hasher raises the error an unreadable file would."""
    write(tmp_path / "ok.txt")
    write(tmp_path / "denied.txt")

    def hasher(path: Path) -> str:
        if path.name == "denied.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return hash_file(path)

    snapshot = run_scan(tmp_path, hasher=hasher)

    assert set(snapshot.files) == {"ok.txt"}
    assert snapshot.unreadable == ("denied.txt",)
    assert reasons(snapshot) == {"denied.txt": "cannot be read: Permission denied"}
    assert snapshot.is_uncertain("denied.txt")
    assert not snapshot.is_uncertain("gone.txt")


def test_entries_vanishing_mid_scan_are_dropped_silently(tmp_path: Path) -> None:
    # Files of a directory are hashed before its subdirectories are listed, so
    # the hasher can remove things the walk has already seen.
    write(tmp_path / "a.txt")
    write(tmp_path / "vanishing.txt")
    write(tmp_path / "subdir" / "inner.txt")

    def hasher(path: Path) -> str:
        if path.name == "vanishing.txt":
            path.unlink()
            (tmp_path / "subdir" / "inner.txt").unlink()
            (tmp_path / "subdir").rmdir()
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return hash_file(path)

    snapshot = run_scan(tmp_path, hasher=hasher)

    assert set(snapshot.files) == {"a.txt"}
    assert snapshot.warnings == ()
    assert snapshot.unreadable_dirs == ()


def test_directory_that_cannot_be_listed_is_uncertain(tmp_path: Path) -> None:
    write(tmp_path / "trigger.txt")
    write(tmp_path / "subdir" / "inner.txt")

    def hasher(path: Path) -> str:
        if path.name == "trigger.txt":
            (tmp_path / "subdir" / "inner.txt").unlink()
            (tmp_path / "subdir").rmdir()
            (tmp_path / "subdir").write_bytes(b"now a file")
        return hash_file(path)

    snapshot = run_scan(tmp_path, hasher=hasher)

    assert snapshot.unreadable_dirs == ("subdir",)
    assert snapshot.is_uncertain("subdir/inner.txt")
    assert reasons(snapshot)["subdir"].startswith("directory cannot be read")


# -- hostile names -------------------------------------------------------------------


def test_invalid_utf8_names_are_skipped_with_a_printable_warning(tmp_path: Path) -> None:
    raw_root = bytes(tmp_path)
    with open(os.path.join(raw_root, b"bad\xff.txt"), "wb") as stream:
        stream.write(b"x")
    os.mkdir(os.path.join(raw_root, b"dir\xfe"))
    with open(os.path.join(raw_root, b"dir\xfe", b"inner.txt"), "wb") as stream:
        stream.write(b"x")
    write(tmp_path / "good.txt")

    snapshot = run_scan(tmp_path)

    assert set(snapshot.files) == {"good.txt"}
    assert reasons(snapshot) == {
        "bad\\xff.txt": "name is not valid UTF-8",
        "dir\\xfe": "name is not valid UTF-8",
    }


def test_control_characters_in_names_are_skipped(tmp_path: Path) -> None:
    for name in ["new\nline.txt", "tab\there.txt", "cr\r.txt", "del\x7f.txt"]:
        write(tmp_path / name)
    write(tmp_path / "fine.txt")

    snapshot = run_scan(tmp_path)

    assert set(snapshot.files) == {"fine.txt"}
    assert reasons(snapshot) == {
        "new\\x0aline.txt": "name contains a control character",
        "tab\\x09here.txt": "name contains a control character",
        "cr\\x0d.txt": "name contains a control character",
        "del\\x7f.txt": "name contains a control character",
    }


def test_hostile_names_can_be_silenced_by_ignoring_them(tmp_path: Path) -> None:
    write(tmp_path / "new\nline.log")
    snapshot = run_scan(tmp_path, patterns=("*.log",))
    assert snapshot.warnings == ()


@settings(max_examples=200, deadline=None)
@given(
    name=st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), min_size=1, max_size=8),
    depth=st.integers(min_value=0, max_value=MAX_RELPATH_BYTES),
)
def test_the_walks_quick_name_check_never_passes_a_name_with_a_problem(
    name: str, depth: int
) -> None:
    # The walk's fast path takes a printable ASCII relpath within the limit as plain
    # without asking _name_problem: it must agree.
    relpath = "d" * depth + "/" + name if depth else name
    quick = name.isprintable() and relpath.isascii() and len(relpath) <= MAX_RELPATH_BYTES
    if quick:
        assert _name_problem(name, relpath) is None


def test_relpaths_longer_than_the_limit_are_skipped(tmp_path: Path) -> None:
    level = "d" * 250
    depth4 = tmp_path / level / level / level / level  # relpath of 1003 bytes
    write(depth4 / ("x" * 20))  # exactly 1024 bytes: kept
    write(depth4 / ("y" * 21))  # 1025 bytes: skipped
    write(depth4 / level / "inner.txt")  # its directory is already too long
    prefix = "/".join([level] * 4)

    snapshot = run_scan(tmp_path)

    assert set(snapshot.files) == {f"{prefix}/{'x' * 20}"}
    too_long = f"path is longer than {MAX_RELPATH_BYTES} UTF-8 bytes"
    assert reasons(snapshot) == {f"{prefix}/{'y' * 21}": too_long, f"{prefix}/{level}": too_long}


_NAME_BYTES = st.binary(min_size=1, max_size=12).filter(
    lambda name: b"/" not in name and b"\0" not in name and name not in (b".", b"..")
)


@settings(max_examples=40, deadline=None)
@given(names=st.lists(_NAME_BYTES, min_size=1, max_size=6, unique=True))
def test_any_names_never_crash_and_every_file_is_accounted_for(names: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in names:
            with open(os.path.join(bytes(root), name), "wb") as stream:
                stream.write(name)
        snapshot = run_scan(root)
        rules = IgnoreRules.load(root)
        warned = {warning.relpath for warning in snapshot.warnings}
        for name in names:
            relpath = os.fsdecode(name)
            if relpath in snapshot.files:
                assert snapshot.files[relpath].hash == digest(name)
            else:
                assert rules.ignored(relpath, is_dir=False) or printable(relpath) in warned
        assert len(snapshot.files) + len(snapshot.warnings) + snapshot.ignored_count == len(names)


# -- the hash cache ------------------------------------------------------------------


def test_unchanged_tree_is_not_hashed_again(tmp_path: Path, index: Index) -> None:
    for relpath in ["a.txt", "b/c.txt", "b/d/e.txt"]:
        write(tmp_path / relpath, relpath)
    first = run_scan(tmp_path, cache=index.hashes)
    assert first.hashed_count == 3
    stored = stored_digests(index)
    assert stored == {relpath: digest(relpath.encode()) for relpath in first.files}
    blobs = index.read("SELECT dir, entries FROM hashes ORDER BY dir", ())

    second = run_scan(tmp_path, cache=index.hashes)

    assert second.hashed_count == 0  # every digest came from the cache: nothing read
    assert stored_digests(index) == stored  # and nothing stored
    assert index.read("SELECT dir, entries FROM hashes ORDER BY dir", ()) == blobs
    assert second.files == first.files


def test_touched_file_is_hashed_again(tmp_path: Path, index: Index) -> None:
    write(tmp_path / "a.txt")
    touched = write(tmp_path / "b.txt")
    run_scan(tmp_path, cache=index.hashes)
    index.hashes.flush()
    # A digest no file has: a scan that keeps it took it from the cache.
    with index.write() as db:
        db.execute("UPDATE hashes SET entries = ?", (encode(_cached_as(index, "cached")),))
    os.utime(touched, ns=(OLD_NS + 10**9, OLD_NS + 10**9))

    snapshot = run_scan(tmp_path, cache=index.hashes)

    assert snapshot.hashed_count == 1
    assert snapshot.files["a.txt"].hash == "cached"
    assert snapshot.files["b.txt"].hash == digest(b"x")  # read again
    assert snapshot.files["b.txt"].mtime_ns == OLD_NS + 10**9


def _cached_as(index: Index, text: str) -> dict[str, tuple[int, int, int, int, str]]:
    """The root directory's cached rows, each digest replaced by ``text``."""
    [(blob,)] = index.read("SELECT entries FROM hashes WHERE dir = ''", ())
    return {name: (*row[:4], text) for name, row in (decode(blob) or {}).items()}


def test_freshly_written_files_are_not_cached(tmp_path: Path, index: Index) -> None:
    """A file younger than the timestamp granularity could change unseen: no cache row."""
    write(tmp_path / "fresh.txt", old=False)
    snapshot = run_scan(tmp_path, cache=index.hashes)
    assert "fresh.txt" in snapshot.files
    assert stored_digests(index) == {}


def test_file_changing_while_hashed_is_unstable(tmp_path: Path, index: Index) -> None:
    write(tmp_path / "steady.txt")
    growing = write(tmp_path / "growing.log.txt", "start")

    def hasher(path: Path) -> str:
        result = hash_file(path)
        if path.name == growing.name:
            with growing.open("ab") as stream:
                stream.write(b" more")
        return result

    snapshot = run_scan(tmp_path, cache=index.hashes, hasher=hasher)

    assert set(snapshot.files) == {"steady.txt"}
    assert snapshot.unstable == ("growing.log.txt",)
    assert snapshot.is_uncertain("growing.log.txt")
    assert set(stored_digests(index)) == {"steady.txt"}


# -- the root ------------------------------------------------------------------------


def test_missing_root_raises_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(LocalError) as caught:
        run_scan(missing)
    assert caught.value.message == f"sync root {missing} does not exist"
    assert caught.value.path == str(missing)


def test_root_that_is_a_file_raises(tmp_path: Path) -> None:
    not_dir = write(tmp_path / "file")
    with pytest.raises(LocalError, match="is not a directory"):
        run_scan(not_dir)


def test_unlistable_root_raises(unprivileged_dir: Path) -> None:
    """As root, runs as uid 65534 in a child (see ``run_unprivileged``)."""

    def scenario() -> Snapshot:
        root = unprivileged_dir / "root"
        root.mkdir()
        rules = IgnoreRules.load(root)
        root.chmod(0)
        try:
            return scan(root, rules=rules, hash_cache=SqliteHashCache(MemoryDatabase()))
        finally:
            root.chmod(stat.S_IRWXU)

    with pytest.raises(LocalError, match="cannot be listed"):
        run_unprivileged(scenario)


def test_is_uncertain_looks_at_every_ancestor() -> None:
    snapshot = Snapshot(files={}, unreadable_dirs=("a/b",))
    assert snapshot.is_uncertain("a/b/c/d.txt")
    assert not snapshot.is_uncertain("a/bc/d.txt")
    assert not snapshot.is_uncertain("a/b")


# -- the compiled matcher against pathspec ----------------------------------------------
#
# IgnoreRules asks pathspec only when a cheap necessary condition holds (ignore.Layer,
# ignore.Prefilter). These tests hold it to pathspec's own answers, pattern by pattern and
# layer by layer, over generated patterns and paths, and the walk to the same answers.

_PATTERN_TOKENS = (
    "a", "b", "ab", "x.tmp", ".git", "*", "**", "?", "[ab]", "[!a]", "[a-c]", "[/]",
    ".tmp", "~", "\\#", "#", ".", "\\!", "\\ ", " ", "\\*", "a\\", ".#", "4913",
    # Bracket expressions that match "/" (a range around it, a negation) or "]".
    "[+-0]", "[^a]", "[]a]", ".[oa]",
)  # fmt: skip
_PATH_NAMES = (
    "a", "b", "ab", "ba", "x.tmp", ".git", ".github", "a~", "#a#", ".#x", "c", "4913",
    "Thumbs.db", "[ab]", "*", "a b", "a\nb", "x.tmp\n", ".", "!a", "#", ".cntrsync",
    "x.o", "a.a", "]", "a+",
)  # fmt: skip


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    segments = draw(
        st.lists(
            st.lists(st.sampled_from(_PATTERN_TOKENS), min_size=1, max_size=3).map("".join),
            min_size=1,
            max_size=3,
        )
    )
    negate = "!" if draw(st.booleans()) else ""
    anchor = "/" if draw(st.booleans()) else ""
    trailing = "/" if draw(st.booleans()) else ""
    return f"{negate}{anchor}{'/'.join(segments)}{trailing}"


def _valid(lines: list[str]) -> bool:
    try:
        GitIgnoreSpec.from_lines(lines)
    except ValueError:
        return False
    return True


_PATTERN_LISTS = st.lists(_patterns(), max_size=6).filter(_valid)
_RELPATHS = st.lists(st.sampled_from(_PATH_NAMES), min_size=1, max_size=4).map("/".join)


def reference_ignored(
    base: list[str],
    configured: list[str],
    nested: dict[str, list[str]],
    relpath: str,
    is_dir: bool,
) -> bool:
    """IgnoreRules.ignored as it was before the matcher: pathspec asked for every path."""
    if is_dir and relpath.rpartition("/")[2] == ".cntrsync":
        return True
    candidate = f"{relpath}/" if is_dir else relpath
    decided = GitIgnoreSpec.from_lines(configured).check_file(candidate).include
    if decided is not None:
        return decided
    parts = relpath.split("/")
    for depth in range(len(parts) - 1, 0, -1):
        directory = "/".join(parts[:depth])
        if directory in nested:
            spec = GitIgnoreSpec.from_lines(nested[directory])
            decided = spec.check_file(candidate[len(directory) + 1 :]).include
            if decided is not None:
                return decided
    return GitIgnoreSpec.from_lines(base).match_file(candidate)


@settings(max_examples=400, deadline=None)
@given(
    lines=_PATTERN_LISTS,
    candidates=st.lists(
        st.one_of(_RELPATHS, _RELPATHS.map(lambda p: f"{p}/"), _RELPATHS.map(lambda p: f"/{p}")),
        min_size=1,
        max_size=20,
    ),
)
def test_a_layer_answers_as_pathspec_does(lines: list[str], candidates: list[str]) -> None:
    spec = GitIgnoreSpec.from_lines(lines)
    layer = Layer(spec)
    for candidate in [*candidates, "./a", "a/./b", ""]:
        assert layer.decide(candidate) == spec.check_file(candidate).include, (lines, candidate)


@settings(max_examples=300, deadline=None)
@given(
    base=_PATTERN_LISTS,
    with_defaults=st.booleans(),
    configured=_PATTERN_LISTS,
    nested=st.dictionaries(_RELPATHS, _PATTERN_LISTS, max_size=3),
    relpaths=st.lists(_RELPATHS, min_size=1, max_size=15),
)
def test_ignore_rules_answer_as_pathspec_does(
    base: list[str],
    with_defaults: bool,
    configured: list[str],
    nested: dict[str, list[str]],
    relpaths: list[str],
) -> None:
    base_lines = [*DEFAULT_PATTERNS, *base] if with_defaults else base
    rules = IgnoreRules(GitIgnoreSpec.from_lines(base_lines), GitIgnoreSpec.from_lines(configured))
    for directory, lines in nested.items():
        rules._nested[directory] = Layer(GitIgnoreSpec.from_lines(lines))
    for relpath in relpaths:
        for is_dir in (False, True):
            expected = reference_ignored(base_lines, configured, nested, relpath, is_dir)
            assert rules.ignored(relpath, is_dir) == expected, (relpath, is_dir)
            # The walk's question: each directory above was entered, so it was not ignored.
            parts = relpath.split("/")
            if not any(
                reference_ignored(base_lines, configured, nested, "/".join(parts[:d]), True)
                for d in range(1, len(parts))
            ):
                assert _walk_answer(rules, relpath, is_dir) == expected, (relpath, is_dir)


def _walk_answer(rules: IgnoreRules, relpath: str, is_dir: bool) -> bool:
    """What the walk decides for ``relpath``: prefilters and "names ruled out" flags
    down from the root."""
    parts = relpath.split("/")
    names_ruled_out = True
    for depth in range(1, len(parts) + 1):
        path, name = "/".join(parts[:depth]), parts[depth - 1]
        last = depth == len(parts)
        entry_is_dir = is_dir or not last
        prefilter = rules.prefilter("/".join(parts[: depth - 1])) if names_ruled_out else None
        if prefilter is not None and prefilter.rules_out(path, name, True):
            # The fast path asks as of a directory, for any entry: that must hold
            # for a file too.
            assert prefilter.rules_out(path, name, False), path
        if prefilter is not None and prefilter.rules_out(path, name, entry_is_dir):
            ignored, names_ruled_out = False, True
        else:
            ignored, names_ruled_out = rules.entry_ignored(
                path, name, entry_is_dir, names_ruled_out
            )
        if last:
            return ignored
        assert not ignored  # the caller checked the directories above
    raise AssertionError("unreachable")


_TREE_NAMES = ("a", "b", "ab", "x.tmp", ".github", "a~", "#a#", "c", "[ab]", "a b", "!a")


@settings(max_examples=60, deadline=None)
@given(
    files=st.lists(
        st.lists(st.sampled_from(_TREE_NAMES), min_size=1, max_size=4).map("/".join),
        min_size=1,
        max_size=12,
    ),
    root_lines=_PATTERN_LISTS,
    configured=_PATTERN_LISTS,
    nested=st.dictionaries(
        st.lists(st.sampled_from(_TREE_NAMES), min_size=1, max_size=2).map("/".join),
        _PATTERN_LISTS,
        max_size=2,
    ),
)
def test_the_walk_keeps_what_pathspec_keeps(
    files: list[str],
    root_lines: list[str],
    configured: list[str],
    nested: dict[str, list[str]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # A name cannot be both a file and a directory: keep the first use of each.
        made: list[str] = []
        for relpath in files:
            try:
                write(root / relpath, relpath)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                continue
            made.append(relpath)
        (root / ".cntrignore").write_text("\n".join(root_lines))
        read_nested = {}
        for directory, lines in nested.items():
            if (root / directory).is_dir():
                write(root / directory / ".cntrignore", "\n".join(lines))
                made.append(f"{directory}/.cntrignore")
                read_nested[directory] = lines
        snapshot = run_scan(root, patterns=tuple(configured))

        base = [*DEFAULT_PATTERNS, *root_lines]

        def kept(relpath: str) -> bool:
            parts = relpath.split("/")
            return not any(
                reference_ignored(base, configured, read_nested, "/".join(parts[:d]), True)
                for d in range(1, len(parts))
            ) and not reference_ignored(base, configured, read_nested, relpath, False)

        expected = {relpath for relpath in [*made, ".cntrignore"] if kept(relpath)}
        assert set(snapshot.files) == expected


# -- the SQLite hash cache during a scan ----------------------------------------------


# Guards a warm scan's cost (README Performance, scan scale: 100k files against the
# index): the cache is read in one SELECT a table, not one per directory or file.
@pytest.mark.perf_guard
def test_a_scan_reads_the_sqlite_cache_in_one_query_a_table(tmp_path: Path) -> None:
    for index in range(30):
        write(tmp_path / f"d{index % 3}" / f"f{index}.txt", f"content {index}")
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    first = scan(tmp_path, rules=IgnoreRules.load(tmp_path), hash_cache=cache)
    cache.flush()
    assert first.hashed_count == 30
    assert cache.count() == 30
    assert db.conn.execute("SELECT count(*) FROM hashes").fetchone()[0] == 3  # a directory a row
    assert db.deltas() == {}

    db.reads.clear()
    write(tmp_path / "d0" / "f0.txt", "changed")
    second = scan(tmp_path, rules=IgnoreRules.load(tmp_path), hash_cache=cache)

    assert db.reads == [
        "SELECT dir, entries FROM hashes",
        "SELECT dir, name, inode, size, mtime_ns, ctime_ns, hash FROM hash_deltas",
    ]
    assert second.hashed_count == 1  # only what changed
    assert second.files["d0/f0.txt"].hash == digest(b"changed")
    assert {k: v.hash for k, v in second.files.items() if k != "d0/f0.txt"} == {
        k: v.hash for k, v in first.files.items() if k != "d0/f0.txt"
    }
    # Outside a scan the cache answers from what the scan folded (d0's blob, not yet
    # written), then from the table: the file's delta row (none), d0's newest change
    # time, and d0's blob and deltas once for every file of d0.
    db.reads.clear()
    changed = second.files["d0/f0.txt"]
    key = (changed.inode, changed.size, changed.mtime_ns, changed.ctime_ns)
    assert cache.lookup("d0/f0.txt", *key) == digest(b"changed")
    assert db.reads == []
    cache.flush()
    assert db.cached()["d0/f0.txt"][4] == digest(b"changed")
    assert cache.lookup("d0/f0.txt", *key) == digest(b"changed")
    other = second.files["d0/f3.txt"]
    assert cache.lookup("d0/f3.txt", other.inode, other.size, other.mtime_ns, other.ctime_ns)
    assert len(db.reads) == 4
