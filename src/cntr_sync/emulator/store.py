"""The emulated server's data: containers, their files, ids, listing and expiry.

Owns the records, the spooled blobs on disk they point to, id minting, cursor
pagination and the expiry rule. Containers and each container's files are kept in
``OrderedRecords``: by id, and in listing order at once, so a page costs
O(log n + page) however many files a container holds. It is not thread-safe on its
own: the ``Emulator`` calls every method with its lock held, and does the slow parts
(streaming bodies in and out) outside it. Errors are raised as the API's ``ApiError``.
"""

from __future__ import annotations

import base64
import binascii
import random
import secrets
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, ItemsView, Iterable, Iterator, MutableMapping, ValuesView
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from .settings import GatewayStyle
from .wire import ApiError, EmuRequest, bad_request

MEMORY_LIMITS = ("1g", "4g", "16g", "64g")
DEFAULT_MINUTES = 20
EXPIRED_MESSAGE = "Container is expired."
_CURSOR_MAGIC = b"emu-cursor:"

SortKey = tuple[int, int]


class _Listed(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def key(self) -> SortKey: ...

    def to_json(self) -> dict[str, Any]: ...


ListedT = TypeVar("ListedT", bound=_Listed)


class OrderedRecords(MutableMapping[str, ListedT]):
    """Records by id that also keep listing order: ascending ``key`` (created_at, seq).

    Keys are unique (``seq`` is) and never change once a record is stored. A dict finds
    a record by id; two parallel lists, sorted by key, find a cursor's position by
    bisection. New records carry the highest key in practice, so adding one appends;
    removing one shifts the lists (a memmove, microseconds at 100,000 files). The
    standard library is enough here: ``sortedcontainers`` would make a removal
    O(log n) instead of a memmove, for a runtime dependency the product does not need.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, ListedT] = {}
        self._keys: list[SortKey] = []
        self._ordered: list[ListedT] = []

    def __getitem__(self, record_id: str) -> ListedT:
        return self._by_id[record_id]

    def __setitem__(self, record_id: str, record: ListedT) -> None:
        if record_id != record.id:
            raise ValueError(f"record {record.id!r} stored under id {record_id!r}")
        if record_id in self._by_id:
            del self[record_id]
        self._by_id[record_id] = record
        key = record.key
        if not self._keys or key > self._keys[-1]:
            self._keys.append(key)
            self._ordered.append(record)
            return
        position = bisect_left(self._keys, key)
        self._keys.insert(position, key)
        self._ordered.insert(position, record)

    def __delitem__(self, record_id: str) -> None:
        record = self._by_id.pop(record_id)
        position = bisect_left(self._keys, record.key)
        del self._keys[position]
        del self._ordered[position]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._by_id

    def values(self) -> ValuesView[ListedT]:
        return self._by_id.values()

    def items(self) -> ItemsView[str, ListedT]:
        return self._by_id.items()

    def clear(self) -> None:
        self._by_id.clear()
        self._keys.clear()
        self._ordered.clear()

    def in_order(self) -> list[ListedT]:
        """Every record, oldest first."""
        return list(self._ordered)

    def page(
        self,
        after: SortKey | None,
        descending: bool,
        count: int,
        accept: Callable[[ListedT], bool] | None = None,
    ) -> list[ListedT]:
        """Up to ``count`` accepted records that come after the key ``after`` (which
        need not be stored) in ascending or descending order, in that order."""
        found: list[ListedT] = []
        if count <= 0:
            return found
        if descending:
            end = len(self._keys) if after is None else bisect_left(self._keys, after)
            positions: Iterable[int] = range(end - 1, -1, -1)
        else:
            start = 0 if after is None else bisect_right(self._keys, after)
            positions = range(start, len(self._keys))
        for position in positions:
            record = self._ordered[position]
            if accept is None or accept(record):
                found.append(record)
                if len(found) == count:
                    break
        return found


@dataclass
class FileRecord:
    """One file in a container; ``blob`` is None when its content is missing."""

    id: str
    container_id: str
    created_at: int
    seq: int
    path: str
    source: str
    size: int
    blob: Path | None
    bytes_null: bool = False
    # What answers show instead of the real fields (a hostile server: any JSON value),
    # and fields they leave out; the file itself is unchanged.
    shown: dict[str, Any] = field(default_factory=dict)
    hidden: frozenset[str] = frozenset()

    @property
    def key(self) -> SortKey:
        return (self.created_at, self.seq)

    def to_json(self) -> dict[str, Any]:
        answer = {
            "id": self.id,
            "object": "container.file",
            "created_at": self.created_at,
            "bytes": None if self.bytes_null else self.size,
            "container_id": self.container_id,
            "path": self.path,
            "source": self.source,
            **self.shown,
        }
        return {name: value for name, value in answer.items() if name not in self.hidden}


@dataclass
class ContainerRecord:
    """One container; ``last_active_at`` is kept exact and reported as an integer."""

    id: str
    name: str
    created_at: int
    seq: int
    minutes: int
    memory_limit: str
    last_active_at: float
    status: Literal["running", "expired"] = "running"
    files: OrderedRecords[FileRecord] = field(default_factory=OrderedRecords)

    @property
    def key(self) -> SortKey:
        return (self.created_at, self.seq)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "container",
            "name": self.name,
            "created_at": self.created_at,
            "status": self.status,
            "expires_after": {"anchor": "last_active_at", "minutes": self.minutes},
            "last_active_at": int(self.last_active_at),
            "memory_limit": self.memory_limit,
        }


@dataclass(frozen=True)
class OpenAIFile:
    """A Files-API file registered through the control surface, for JSON ``file_id`` creates."""

    file_id: str
    filename: str
    blob: Path


@dataclass(frozen=True)
class ListParams:
    limit: int
    order: Literal["asc", "desc"]
    after: str | None


def parse_list_params(request: EmuRequest) -> ListParams:
    """Read and check ``limit`` (1..100, default 20), ``order`` and ``after``."""
    raw_limit = request.query_value("limit")
    limit = 20
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise bad_request(
                f"Invalid 'limit': {raw_limit!r} is not an integer.", "limit"
            ) from None
        if not 1 <= limit <= 100:
            raise bad_request(
                f"Invalid 'limit': integer must be between 1 and 100, got {limit}.", "limit"
            )
    order = request.query_value("order") or "desc"
    if order not in ("asc", "desc"):
        raise bad_request(f"Invalid 'order': expected 'asc' or 'desc', got {order!r}.", "order")
    after = request.query_value("after")
    return ListParams(limit=limit, order="asc" if order == "asc" else "desc", after=after or None)


class Store:
    """Containers and files in memory, file bodies as blobs in ``blob_dir``."""

    def __init__(self, blob_dir: Path, now: Callable[[], float], seed: int | None = None) -> None:
        # A seed makes ids and hashed paths repeat from run to run (property tests).
        self._random = random.Random(seed) if seed is not None else None
        self.blob_dir = blob_dir
        self.now = now
        self.gateway = GatewayStyle()
        self.containers: OrderedRecords[ContainerRecord] = OrderedRecords()
        self.openai_files: dict[str, OpenAIFile] = {}
        self._tombstones: dict[str, SortKey] = {}
        self._seq = 0

    # ids and paths

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _new_id(self, prefix: str, created_at: int, random_hex: int) -> str:
        if self.gateway.long_ids:
            return prefix[0] + "-" + self._token(36)
        # Real ids start with the creation time in hex; keep that shape.
        return f"{prefix}_{created_at & 0xFFFFFFFF:08x}{self._token(random_hex // 2)}"

    def file_path_for(self, filename: str) -> str:
        name = "file" if self.gateway.drop_filenames else filename
        if self.gateway.base_name_only:
            name = name.rpartition("/")[2]
        if self.gateway.normalize_filenames != "none":
            name = unicodedata.normalize(self.gateway.normalize_filenames, name)
        if self.gateway.path_style == "hashed":
            return f"/mnt/data/{self._token(16)}-{name}"
        return f"/mnt/data/{name}"

    def _token(self, nbytes: int) -> str:
        if self._random is None:
            return secrets.token_hex(nbytes)
        return self._random.randbytes(nbytes).hex()

    def new_blob_path(self) -> Path:
        return self.blob_dir / f"blob-{secrets.token_hex(12)}"

    # containers

    def create_container(self, name: str, minutes: int, memory_limit: str) -> ContainerRecord:
        now = self.now()
        created_at = int(now)
        record = ContainerRecord(
            id=self._new_id("cntr", created_at, 40),
            name=name,
            created_at=created_at,
            seq=self._next_seq(),
            minutes=minutes,
            memory_limit=memory_limit,
            last_active_at=now,
        )
        self.containers[record.id] = record
        return record

    def container(self, container_id: str) -> ContainerRecord:
        """The container, expired or not, with expiry brought up to date; 404 if unknown."""
        record = self.containers.get(container_id)
        if record is None:
            raise ApiError(404, "Container not found", code="container_not_found")
        self.check_expiry(record)
        return record

    def usable_container(self, container_id: str) -> ContainerRecord:
        """A running container, touched; 404 if unknown, 400 if expired."""
        record = self.container(container_id)
        if record.status != "running":
            raise bad_request(EXPIRED_MESSAGE)
        record.last_active_at = self.now()
        return record

    def touch(self, record: ContainerRecord) -> None:
        if record.status == "running":
            record.last_active_at = self.now()

    def check_expiry(self, record: ContainerRecord) -> None:
        if record.status == "running" and self.now() - record.last_active_at > record.minutes * 60:
            self.expire(record)

    def expire(self, record: ContainerRecord) -> None:
        """Expire now: the files are gone for good, the container stays listed."""
        record.status = "expired"
        self._drop_files(record.files.values())
        record.files.clear()

    def delete_container(self, container_id: str) -> None:
        record = self.container(container_id)
        self._drop_files(record.files.values())
        del self.containers[container_id]
        self._tombstones[container_id] = record.key

    # files

    def add_file(
        self,
        record: ContainerRecord,
        *,
        path: str,
        source: str,
        size: int,
        blob: Path | None,
        bytes_null: bool = False,
    ) -> FileRecord:
        created_at = int(self.now())
        file = FileRecord(
            id=self._new_id("cfile", created_at, 24),
            container_id=record.id,
            created_at=created_at,
            seq=self._next_seq(),
            path=path,
            source=source,
            size=size,
            blob=blob,
            bytes_null=bytes_null,
        )
        record.files[file.id] = file
        return file

    def file(self, record: ContainerRecord, file_id: str) -> FileRecord:
        file = record.files.get(file_id)
        if file is None:
            raise ApiError(404, f"File {file_id} not found on container {record.id}.")
        return file

    def delete_file(self, record: ContainerRecord, file_id: str) -> None:
        file = self.file(record, file_id)
        self._drop_files([file])
        del record.files[file_id]
        self._tombstones[file_id] = file.key

    def _drop_files(self, files: Iterable[FileRecord]) -> None:
        for file in files:
            if file.blob is not None:
                with suppress(FileNotFoundError):
                    file.blob.unlink()

    def clear(self) -> None:
        """Forget everything and remove every blob."""
        for record in self.containers.values():
            self._drop_files(record.files.values())
        for registered in self.openai_files.values():
            with suppress(FileNotFoundError):
                registered.blob.unlink()
        self.containers.clear()
        self.openai_files.clear()
        self._tombstones.clear()

    # listing

    def list_page(
        self,
        records: OrderedRecords[ListedT],
        params: ListParams,
        accept: Callable[[ListedT], bool] | None = None,
    ) -> dict[str, Any]:
        """One page of ``records`` (those ``accept`` takes, if given) in the API's list
        shape, in the gateway's cursor style. An ``after`` id may name any of
        ``records``, accepted or not, or one deleted since (its tombstone keeps its place).
        """
        cursor = None if params.after is None else self._cursor_key(params.after, records)
        limit = min(params.limit, self.gateway.max_page_size or params.limit)
        # One more than the page: whether it exists is has_more.
        newest_first = params.order == "desc" and not self.gateway.ignore_order
        found = records.page(cursor, newest_first, limit + 1, accept)
        page = found[:limit]
        has_more = len(found) > limit
        body: dict[str, Any] = {
            "object": "list",
            "data": [item.to_json() for item in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": has_more,
        }
        if self.gateway.has_more == "omitted":
            del body["has_more"]
        elif self.gateway.has_more == "string":
            body["has_more"] = "true" if has_more else "false"
        if self.gateway.cursor_style == "opaque":
            if not has_more:
                body.pop("has_more", None)
            if page:
                body["after"] = _encode_cursor(page[-1].key)
        return body

    def _cursor_key(self, after: str, known: OrderedRecords[ListedT]) -> SortKey:
        if self.gateway.cursor_style == "opaque":
            key = _decode_cursor(after)
            if key is None:
                raise bad_request("invalid cursor", "after")
            return key
        item = known.get(after)
        if item is not None:
            return item.key
        # Real ids carry their position, so paging on past a deleted item works.
        tombstone = self._tombstones.get(after)
        if tombstone is None:
            raise bad_request(f"Invalid 'after': no object with id {after!r}.", "after")
        return tombstone


def _encode_cursor(key: SortKey) -> str:
    raw = _CURSOR_MAGIC + f"{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(token: str) -> SortKey | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_CURSOR_MAGIC):
        return None
    created, _, seq = raw[len(_CURSOR_MAGIC) :].partition(b":")
    try:
        return (int(created), int(seq))
    except ValueError:
        return None
