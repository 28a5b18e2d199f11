"""The emulator: a faithful, in-memory OpenAI Containers API with spooled file bodies.

Owns the ``Emulator`` — all state behind one ``threading.Lock`` — and the nine
operations, authentication, request counts and log, fault application, and the
Python control methods tests call directly. It is transport-agnostic: ``dispatch``
takes an ``EmuRequest`` and returns an ``EmuResponse``; ``transport`` adapts that to
httpx and ``server`` to sockets. Bodies stream to and from files in ``data_dir``
outside the lock, so no upload or download is ever held in memory and a slow
transfer never blocks other requests.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from .control import dispatch_control
from .faults import FaultInjector, ScriptedStatus
from .multipart import multipart_boundary, spool_multipart
from .settings import API_OPERATIONS, UNKNOWN_OPERATION, FaultConfig, GatewayStyle
from .store import DEFAULT_MINUTES, MEMORY_LIMITS, OpenAIFile, Store, parse_list_params
from .transport import EmulatorTransport, handle_httpx
from .wire import (
    CONTROL,
    ApiError,
    EmuRequest,
    EmuResponse,
    FileBody,
    Route,
    bad_request,
    dropped,
    json_response,
    match_route,
    parse_json_object,
    read_limited,
    server_error,
)

Handler = Callable[[Route, EmuRequest], EmuResponse]


@dataclass(frozen=True)
class RequestRecord:
    """One request as it reached routing: what tests assert about headers and queries."""

    operation: str
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "method": self.method,
            "path": self.path,
            "query": [list(pair) for pair in self.query],
            "headers": dict(self.headers),
        }


class Emulator:
    """The Containers API in one process.

    In-process clients use ``httpx.MockTransport(emulator.handle)`` or, to stream large
    uploads without MockTransport's buffering, ``emulator.transport()``. ``data_dir``
    None means a private temporary directory, removed by ``close()``.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        clock: Callable[[], float] | None = None,
        control: bool = False,
        api_keys: set[str] | None = None,
        *,
        gateway: GatewayStyle | None = None,
        faults: FaultConfig | None = None,
        log_size: int = 1000,
        seed: int | None = None,
    ) -> None:
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="cntr-emulator-")
            data_dir = Path(self._tempdir.name)
        self.data_dir = data_dir
        self._blob_dir = self.data_dir / "blobs"
        self._blob_dir.mkdir(parents=True, exist_ok=True)
        self.control_enabled = control
        self._api_keys = frozenset(api_keys or ())
        self._clock = clock or time.time
        self._clock_offset = 0.0
        self._lock = threading.Lock()
        self._store = Store(self._blob_dir, self.now, seed)
        # The rate limit refills on the emulated clock, so a test can advance it.
        self._faults = FaultInjector(monotonic=self.now)
        self._initial_gateway = gateway or GatewayStyle()
        self._initial_faults = faults or FaultConfig()
        self._store.gateway = self._initial_gateway
        self._faults.configure(self._initial_faults)
        self._counts: Counter[str] = Counter()
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._handlers: dict[str, Handler] = {
            "list_containers": self._list_containers,
            "create_container": self._create_container,
            "retrieve_container": self._retrieve_container,
            "delete_container": self._delete_container,
            "create_file": self._create_file,
            "list_files": self._list_files,
            "retrieve_file": self._retrieve_file,
            "delete_file": self._delete_file,
            "file_content": self._file_content,
        }

    # lifecycle

    def close(self) -> None:
        """Remove every spooled blob, and the data directory when it is a private one."""
        with self._lock:
            self._store.clear()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def now(self) -> float:
        """The emulated wall clock: the injected clock plus ``advance_clock`` offsets."""
        return self._clock() + self._clock_offset

    # transports

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request; for ``httpx.MockTransport(emulator.handle)``."""
        return handle_httpx(self.dispatch, request)

    def transport(self) -> httpx.BaseTransport:
        """A sync transport that, unlike ``MockTransport``, never buffers request bodies."""
        return EmulatorTransport(self.dispatch)

    def dispatch(self, request: EmuRequest) -> EmuResponse:
        """Route one request: control, count and log, authenticate, inject faults, run."""
        route = match_route(request.method, request.path, self._store.gateway.api_prefixes)
        if route.operation == CONTROL and self.control_enabled:
            return dispatch_control(self, route.control_path, request)
        operation = route.operation if route.operation in self._handlers else UNKNOWN_OPERATION
        with self._lock:
            self._counts[operation] += 1
            self._log.append(
                RequestRecord(
                    operation, request.method, request.path, request.query, dict(request.headers)
                )
            )
        if operation == UNKNOWN_OPERATION:
            return _unknown_route(request, route).response()
        try:
            self._authenticate(request.headers)
        except ApiError as exc:
            return exc.response()
        with self._lock:
            decision = self._faults.decide(operation)
        if decision.latency_s > 0:
            time.sleep(decision.latency_s)
        if decision.drop:
            return dropped()
        if decision.error is not None:
            return decision.error.response()
        try:
            self._refuse_broken_target(route, request)
            response = self._handlers[operation](route, request)
        except ApiError as exc:
            return exc.response()
        if decision.ambiguous is not None and response.status < 400:
            # The operation happened; the client must not be able to tell.
            response.discard()
            return dropped() if decision.ambiguous == "drop" else server_error().response()
        return response

    def _refuse_broken_target(self, route: Route, request: EmuRequest) -> None:
        """A 500 for a request that names a broken container by id or by list filter
        (a create is checked by its handler, which has the name from the body)."""
        with self._lock:
            broken = self._faults.config.broken_container_names
            if not broken:
                return
            if route.container_id:
                record = self._store.containers.get(route.container_id)
                if record is not None and record.name in broken:
                    raise server_error()
            elif route.operation == "list_containers" and request.query_value("name") in broken:
                raise server_error()

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        if not self._api_keys:
            return
        offered = offered_keys(headers)
        if not offered:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if not self._api_keys.intersection(offered):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    # containers

    def _list_containers(self, route: Route, request: EmuRequest) -> EmuResponse:
        params = parse_list_params(request)
        name = request.query_value("name")
        with self._lock:
            for record in self._store.containers.values():
                self._store.check_expiry(record)
            containers = self._store.containers
            if name is None:
                page = self._store.list_page(containers, params)
            else:
                page = self._store.list_page(containers, params, lambda c: c.name == name)
        return json_response(200, page)

    def _create_container(self, route: Route, request: EmuRequest) -> EmuResponse:
        payload = parse_json_object(read_limited(request.body))
        name = payload.get("name")
        if name is None:
            raise bad_request("Missing required parameter: 'name'.", "name")
        if not isinstance(name, str):
            raise bad_request("Invalid type for 'name': expected a string.", "name")
        minutes = _expiry_minutes(payload.get("expires_after"))
        memory_limit = payload.get("memory_limit") or "1g"
        if memory_limit not in MEMORY_LIMITS:
            raise bad_request(
                f"Invalid 'memory_limit': expected one of {', '.join(MEMORY_LIMITS)}.",
                "memory_limit",
            )
        file_ids = payload.get("file_ids") or []
        if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
            raise bad_request("Invalid 'file_ids': expected an array of strings.", "file_ids")
        with self._lock:
            if name in self._faults.config.broken_container_names:
                raise server_error()
            sources = [self._registered_file(file_id) for file_id in file_ids]
        copies = [(source.filename, self._copy_blob(source.blob)) for source in sources]
        with self._lock:
            record = self._store.create_container(name, minutes, str(memory_limit))
            for filename, (blob, size) in copies:
                self._store.add_file(
                    record,
                    path=self._store.file_path_for(filename),
                    source="user",
                    size=size,
                    blob=blob,
                )
            body = record.to_json()
        return json_response(200, body)

    def _retrieve_container(self, route: Route, request: EmuRequest) -> EmuResponse:
        with self._lock:
            record = self._store.container(route.container_id)
            self._store.touch(record)
            body = record.to_json()
        return json_response(200, body)

    def _delete_container(self, route: Route, request: EmuRequest) -> EmuResponse:
        with self._lock:
            self._store.delete_container(route.container_id)
        return json_response(
            200, {"id": route.container_id, "object": "container.deleted", "deleted": True}
        )

    # files

    def _create_file(self, route: Route, request: EmuRequest) -> EmuResponse:
        with self._lock:
            self._store.usable_container(route.container_id)
            gateway = self._store.gateway
        content_type = request.headers.get("content-type", "")
        boundary = multipart_boundary(content_type)
        if boundary is None:
            if "json" not in content_type.lower():
                raise bad_request(
                    "Expected a multipart/form-data body with a 'file' field, or a JSON body "
                    "with 'file_id'.",
                    "file",
                )
            payload = parse_json_object(read_limited(request.body))
            file_id = payload.get("file_id")
            if not isinstance(file_id, str) or not file_id:
                raise bad_request("Missing required parameter: 'file_id'.", "file_id")
            return self._create_from_file_id(route.container_id, file_id, gateway)
        upload = spool_multipart(
            request.body,
            boundary,
            self._blob_dir,
            percent_decode=gateway.percent_decode_filenames,
            keep_escapes=gateway.keep_form_escapes,
        )
        if upload.spool_path is None or upload.filename is None:
            file_id = upload.fields.get("file_id")
            if file_id:
                return self._create_from_file_id(route.container_id, file_id, gateway)
            raise bad_request("Missing required parameter: 'file'.", "file")
        return self._store_upload(
            route.container_id, upload.filename, upload.spool_path, upload.size
        )

    def _create_from_file_id(
        self, container_id: str, file_id: str, gateway: GatewayStyle
    ) -> EmuResponse:
        if not gateway.json_file_id:
            raise bad_request("Missing required 'file' field", "file")
        with self._lock:
            source = self._registered_file(file_id)
        blob, size = self._copy_blob(source.blob)
        return self._store_upload(container_id, source.filename, blob, size)

    def _store_upload(self, container_id: str, filename: str, blob: Path, size: int) -> EmuResponse:
        """Adopt a spooled blob as a new user file, unless the container went away meanwhile."""
        try:
            with self._lock:
                record = self._store.usable_container(container_id)
                file = self._store.add_file(
                    record,
                    path=self._store.file_path_for(filename),
                    source="user",
                    size=size,
                    blob=blob,
                )
                body = file.to_json()
        except BaseException:
            with suppress(FileNotFoundError):
                blob.unlink()
            raise
        return json_response(200, body)

    def _list_files(self, route: Route, request: EmuRequest) -> EmuResponse:
        params = parse_list_params(request)
        with self._lock:
            record = self._store.usable_container(route.container_id)
            page = self._store.list_page(record.files, params)
        return json_response(200, page)

    def _retrieve_file(self, route: Route, request: EmuRequest) -> EmuResponse:
        with self._lock:
            record = self._store.usable_container(route.container_id)
            body = self._store.file(record, route.file_id).to_json()
        return json_response(200, body)

    def _delete_file(self, route: Route, request: EmuRequest) -> EmuResponse:
        with self._lock:
            record = self._store.usable_container(route.container_id)
            self._store.delete_file(record, route.file_id)
        return json_response(
            200, {"id": route.file_id, "object": "container.file.deleted", "deleted": True}
        )

    def _file_content(self, route: Route, request: EmuRequest) -> EmuResponse:
        with self._lock:
            record = self._store.usable_container(route.container_id)
            file = self._store.file(record, route.file_id)
            if file.blob is None:
                raise ApiError(404, f"File {file.id} not found on container {record.id}.")
            # Opened under the lock: a concurrent delete unlinks the name, not this handle.
            handle = file.blob.open("rb")
        length = os.fstat(handle.fileno()).st_size
        return EmuResponse(
            status=200,
            headers=(("content-type", "application/octet-stream"),),
            file=FileBody(handle, length, self.faults.download_bytes_per_s),
        )

    # blobs

    def _registered_file(self, file_id: str) -> OpenAIFile:
        registered = self._store.openai_files.get(file_id)
        if registered is None:
            raise ApiError(404, f"No such File object: {file_id}", param="file_id")
        return registered

    def _copy_blob(self, source: Path) -> tuple[Path, int]:
        target = self._store.new_blob_path()
        shutil.copyfile(source, target)
        return target, target.stat().st_size

    def _write_blob(self, content: bytes) -> Path:
        target = self._store.new_blob_path()
        target.write_bytes(content)
        return target

    def blob_path(self, container_id: str, file_id: str) -> Path | None:
        """Where a file's bytes are spooled on disk (for tests and benchmarks), or None."""
        with self._lock:
            record = self._store.containers.get(container_id)
            file = record.files.get(file_id) if record is not None else None
            return file.blob if file is not None else None

    # control surface (also served over HTTP under /_emulator/ when control=True)

    def add_assistant_file(
        self,
        container_id: str,
        path: str,
        content: bytes | None = b"",
        *,
        bytes_null: bool = False,
        content_missing: bool = False,
        announced_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Add a file "the model wrote" (source ``assistant``); ``path`` is used verbatim,
        however hostile. ``announced_bytes`` makes the listing lie about its size."""
        blob = None if content_missing else self._write_blob(content or b"")
        try:
            with self._lock:
                record = self._store.usable_container(container_id)
                file = self._store.add_file(
                    record,
                    path=path,
                    source="assistant",
                    size=len(content or b"") if announced_bytes is None else announced_bytes,
                    blob=blob,
                    bytes_null=bytes_null,
                )
                return file.to_json()
        except BaseException:
            if blob is not None:
                with suppress(FileNotFoundError):
                    blob.unlink()
            raise

    def show_fields(
        self,
        container_id: str,
        file_id: str,
        shown: Mapping[str, Any],
        hidden: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Make answers about a file show ``shown`` instead of its real fields (any JSON
        value: ``{"created_at": 1e23}``, ``{"bytes": "x"}``) and leave ``hidden`` fields
        out, as a hostile server or gateway may; ``shown={}``, ``hidden=()`` undoes it."""
        with self._lock:
            record = self._store.usable_container(container_id)
            file = self._store.file(record, file_id)
            file.shown = dict(shown)
            file.hidden = frozenset(hidden)
            return file.to_json()

    def rewrite_file(
        self, container_id: str, file_id: str, content: bytes, *, bytes_null: bool = False
    ) -> dict[str, Any]:
        """Give an existing file new content under the same id, as the model rewriting
        it in place does (``bytes`` changes; ``created_at`` and ``path`` stay)."""
        blob = self._write_blob(content)
        with self._lock:
            record = self._store.usable_container(container_id)
            file = self._store.file(record, file_id)
            old, file.blob = file.blob, blob
            file.size, file.bytes_null = len(content), bytes_null
            snapshot = file.to_json()
        if old is not None:
            with suppress(FileNotFoundError):
                old.unlink()
        return snapshot

    def add_openai_file(self, file_id: str, filename: str, content: bytes) -> None:
        """Register a Files-API file that JSON ``{"file_id": ...}`` creates can copy in."""
        blob = self._write_blob(content)
        with self._lock:
            previous = self._store.openai_files.get(file_id)
            self._store.openai_files[file_id] = OpenAIFile(file_id, filename, blob)
        if previous is not None:
            with suppress(FileNotFoundError):
                previous.blob.unlink()

    def create_container(self, name: str, minutes: int = DEFAULT_MINUTES) -> dict[str, Any]:
        """Create a container without a request (setup helper; not counted)."""
        with self._lock:
            return self._store.create_container(name, minutes, "1g").to_json()

    def expire_container(self, container_id: str) -> None:
        """Expire a container now, as if it had been idle past ``expires_after``."""
        with self._lock:
            record = self._store.container(container_id)
            if record.status == "running":
                self._store.expire(record)

    def advance_clock(self, seconds: float) -> float:
        """Move the emulated clock forward; returns the new ``now()``."""
        with self._lock:
            self._clock_offset += seconds
        return self.now()

    @property
    def faults(self) -> FaultConfig:
        return self._faults.config

    def set_faults(self, config: FaultConfig) -> None:
        """Replace the fault configuration as a whole (scripted faults are kept)."""
        with self._lock:
            self._faults.configure(config)

    def fail_next(
        self,
        operation: str,
        status: ScriptedStatus,
        count: int = 1,
        headers: Mapping[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        """Script the next ``count`` requests of ``operation`` (or ``"*"``) to fail.

        ``status`` is an HTTP status (answered with an OpenAI error body and ``headers``;
        ``code`` sets the body's code, e.g. ``insufficient_quota`` with 429),
        ``"drop"``, ``"ambiguous"`` (carried out, answered 500) or ``"ambiguous_drop"``.
        """
        with self._lock:
            self._faults.fail_next(operation, status, count, headers, code)

    def clear_faults(self) -> None:
        """No faults from now on: the configuration back to none, scripted faults dropped."""
        with self._lock:
            self._faults.clear()

    @property
    def gateway(self) -> GatewayStyle:
        return self._store.gateway

    def set_gateway(self, style: GatewayStyle) -> None:
        with self._lock:
            self._store.gateway = style

    def counts(self) -> dict[str, int]:
        """Requests per operation since the last reset, zeros included."""
        with self._lock:
            names = (*API_OPERATIONS, UNKNOWN_OPERATION)
            return {name: self._counts[name] for name in names}

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def requests_log(self) -> list[RequestRecord]:
        """The most recent requests, oldest first."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Wipe all state back to how the constructor left it."""
        with self._lock:
            self._store.clear()
            self._store.gateway = self._initial_gateway
            self._faults.clear()
            self._faults.configure(self._initial_faults)
            self._counts.clear()
            self._log.clear()
            self._clock_offset = 0.0


def offered_keys(headers: Mapping[str, str]) -> list[str]:
    """Every API key a request offers, in any of the styles gateways accept."""
    keys: list[str] = []
    authorization = headers.get("authorization", "").strip()
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer" and credential:
        keys.append(credential)
    elif scheme.lower() == "basic" and credential:
        with suppress(binascii.Error, UnicodeDecodeError):
            _user, _, password = base64.b64decode(credential).decode("utf-8").partition(":")
            keys.append(password)
    for header in ("api-key", "x-api-key", "x-bf-vk"):
        value = headers.get(header, "").strip()
        if value:
            keys.append(value)
    return keys


def _expiry_minutes(expires_after: object) -> int:
    if expires_after is None:
        return DEFAULT_MINUTES
    if not isinstance(expires_after, dict):
        raise bad_request("Invalid 'expires_after': expected an object.", "expires_after")
    if expires_after.get("anchor") != "last_active_at":
        raise bad_request(
            "Invalid 'expires_after.anchor': expected 'last_active_at'.", "expires_after.anchor"
        )
    minutes = expires_after.get("minutes")
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
        raise bad_request(
            "Invalid 'expires_after.minutes': expected a positive integer.",
            "expires_after.minutes",
        )
    return minutes


def _unknown_route(request: EmuRequest, route: Route) -> ApiError:
    if not route.method_allowed:
        return ApiError(405, f"Method not allowed ({request.method} {request.path})")
    return ApiError(404, f"Invalid URL ({request.method} {request.path})")
