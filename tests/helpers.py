"""Small test helpers shared by several test modules (import as ``helpers``)."""

from __future__ import annotations

import contextlib
import io
import random
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from cntr_sync.api import ContainersClient
from cntr_sync.errors import NotFoundError
from cntr_sync.hashcache import decode, encode
from cntr_sync.index import Index
from cntr_sync.names import remote_names

#: A container file and a container as the API answers them (wire JSON).
FILE: dict[str, Any] = {
    "id": "cfile_1",
    "object": "container.file",
    "created_at": 1,
    "bytes": 3,
    "container_id": "cntr_1",
    "path": "/mnt/data/a.txt",
    "source": "user",
}
CONTAINER: dict[str, Any] = {
    "id": "cntr_1",
    "object": "container",
    "name": "docs",
    "created_at": 1,
    "status": "running",
}


class Script:
    """An ``httpx.MockTransport`` handler answering from a list of responses (or
    exceptions; the last one repeats), recording each request with its body read."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class MemoryDatabase:
    """The ``hashcache.Database`` an index provides, in memory; ``reads`` records
    the SQL of every query."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        # The tables as index.py's migrations leave them: a blob per directory, a
        # delta row per file changed since.
        self.conn.execute(
            "CREATE TABLE hashes (dir TEXT PRIMARY KEY, files INTEGER NOT NULL,"
            " newest INTEGER NOT NULL, entries BLOB NOT NULL)"
        )
        self.conn.execute(
            "CREATE TABLE hash_deltas (dir TEXT NOT NULL, name TEXT NOT NULL, inode INTEGER,"
            " size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, hash TEXT,"
            " PRIMARY KEY (dir, name)) WITHOUT ROWID"
        )
        self.reads: list[str] = []

    def blobs(self) -> dict[str, dict[str, tuple[Any, ...]]]:
        """Every directory's blob, decoded, by directory."""
        return {
            directory: decode(blob) or {}
            for directory, blob in self.conn.execute("SELECT dir, entries FROM hashes")
        }

    def deltas(self) -> dict[str, tuple[Any, ...]]:
        """Every delta row by relpath: (inode, size, mtime_ns, ctime_ns, digest), all
        None for a file that is gone."""
        return {
            f"{directory}/{name}" if directory else name: tuple(row)
            for directory, name, *row in self.conn.execute(
                "SELECT dir, name, inode, size, mtime_ns, ctime_ns, hash FROM hash_deltas"
            )
        }

    def cached(self) -> dict[str, tuple[Any, ...]]:
        """Every cached row by relpath, (inode, size, mtime_ns, ctime_ns, digest), as the
        blobs hold them with the deltas laid over (a gone file left out)."""
        rows: dict[str, tuple[Any, ...]] = {}
        for directory, entries in self.blobs().items():
            for name, row in entries.items():
                rows[f"{directory}/{name}" if directory else name] = row
        for relpath, row in self.deltas().items():
            if row[4] is None:
                rows.pop(relpath, None)
            else:
                rows[relpath] = row
        return rows

    def rewrite(self, change: Callable[[str, list[Any]], None]) -> None:
        """Change the stored rows in place, blobs and deltas: ``change(relpath, row as a
        list)``."""
        for directory, entries in self.blobs().items():
            for name, row in entries.items():
                fields = list(row)
                change(f"{directory}/{name}" if directory else name, fields)
                entries[name] = tuple(fields)
            self.conn.execute(
                "UPDATE hashes SET entries = ? WHERE dir = ?",
                (encode(entries), directory),
            )
        for relpath, row in self.deltas().items():
            fields = list(row)
            change(relpath, fields)
            directory, _, name = relpath.rpartition("/")
            self.conn.execute(
                "UPDATE hash_deltas SET inode = ?, size = ?, mtime_ns = ?, ctime_ns = ?, hash = ?"
                " WHERE dir = ? AND name = ?",
                (*fields, directory, name),
            )

    def read(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        self.reads.append(sql)
        return self.conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN")
        yield self.conn
        self.conn.execute("COMMIT")


class NoSleep:
    """A sleep that records instead of waiting, so retries cost no time."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def local_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by POSIX relpath, with its bytes."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def assert_exact_mirror(client: ContainersClient, container_id: str, root: Path) -> None:
    """The container holds each local file exactly once, with the same bytes, and nothing else."""
    local = local_tree(root)
    remote = list(client.iter_files(container_id))
    names = Counter(remote_names(item.path)[0] for item in remote)
    duplicates = sorted(name for name, count in names.items() if count > 1)
    assert not duplicates, f"duplicated in the container: {duplicates}"
    missing = sorted(local.keys() - names.keys())
    extra = sorted(names.keys() - local.keys())
    assert not missing and not extra, f"missing remotely: {missing}; extra remotely: {extra}"
    stale = []
    for item in remote:
        sink = io.BytesIO()
        client.download_file(container_id, item.id, sink)
        relpath = remote_names(item.path)[0]
        if sink.getvalue() != local[relpath]:
            stale.append(relpath)
    assert not stale, f"remote content differs from local: {sorted(stale)}"


def remote_name_counts(client: ContainersClient, container_id: str) -> Counter[str]:
    """How many remote files carry each mirrored name (one listing, no downloads)."""
    return Counter(remote_names(item.path)[0] for item in client.iter_files(container_id))


def remote_bytes(client: ContainersClient, container_id: str, relpath: str) -> bytes | None:
    """The content of the first remote file named ``relpath``, or None when there is none."""
    for item in client.iter_files(container_id):
        if remote_names(item.path)[0] == relpath:
            sink = io.BytesIO()
            try:
                client.download_file(container_id, item.id, sink)
            except NotFoundError:
                # Replaced by a running daemon between our listing and download:
                # the caller's wait asks again.
                return None
            return sink.getvalue()
    return None


def write_random_tree(
    root: Path, count: int, seed: int, *, names: Sequence[str], top_dirs: int
) -> None:
    """``count`` files of 1-4 KiB of seeded random bytes: ``names`` first, the rest
    ``file-NNN.dat`` in up to three levels below ``top_dirs`` top-level directories."""
    rng = random.Random(seed)
    relpaths = list(names)
    for number in range(count - len(relpaths)):
        parts = [f"d{number % top_dirs}", "sub", "deeper"][: number % 4]
        relpaths.append("/".join([*parts, f"file-{number:03d}.dat"]))
    for relpath in relpaths:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(1024, 4096)))


# -- an index of its own (test_index, test_index_memory) -------------------------------

INDEX_BASE_URL = "https://api.openai.com/v1"
INDEX_SPEC = "name:my-box"


def open_index(
    state_dir: Path,
    root: Path,
    spec: str = INDEX_SPEC,
    base_url: str = INDEX_BASE_URL,
    *,
    lock: bool = True,
) -> Index:
    return Index.open(state_dir, base_url=base_url, root=root, container_spec=spec, lock=lock)
