"""The transport-neutral request and response the emulator's routing speaks.

Owns ``EmuRequest``/``EmuResponse`` (what both the in-process ``MockTransport``
handler and the stdlib HTTP server translate to and from), the streamed file body,
the OpenAI-shaped ``ApiError``, and the route table that turns a method and a path
into an operation. It knows nothing of sockets, httpx or state.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import unquote

CHUNK_SIZE = 256 * 1024
_PACED_CHUNK = 64 * 1024
"""Bytes per read or write when streaming bodies: large enough for throughput, small
enough that no upload or download is ever held in memory."""

JSON_BODY_LIMIT = 1024 * 1024
"""JSON request bodies above this are refused rather than buffered."""

API_PREFIXES = ("/openai/v1", "/openai", "/v1", "")
"""The prefixes gateways put before ``/containers``; ``GatewayStyle.api_prefixes`` says
which of them (or others) a server answers; ``EmulatorControl`` strips any of these."""
CONTROL_PREFIX = "/_emulator/"
CONTROL = "control"


class FileBody:
    """An open spooled file streamed as a response body; the receiver must ``close`` it.

    ``bytes_per_s`` (a fault) paces the body, so a test can stop a client mid-download.
    """

    def __init__(self, file: BinaryIO, length: int, bytes_per_s: float | None = None) -> None:
        self.file = file
        self.length = length
        self.bytes_per_s = bytes_per_s

    def chunks(self) -> Iterator[bytes]:
        """Yield the body in ``CHUNK_SIZE`` pieces (paced if asked), stopping at ``length``."""
        remaining = self.length
        size = CHUNK_SIZE if self.bytes_per_s is None else _PACED_CHUNK
        while remaining > 0:
            chunk = self.file.read(min(size, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            if self.bytes_per_s is not None:
                time.sleep(len(chunk) / self.bytes_per_s)
            yield chunk

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True)
class EmuRequest:
    """One request as routing sees it; ``headers`` keys are lower-case, ``path`` is raw."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    body: Iterable[bytes] = ()

    def query_value(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        for key, value in self.query:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class EmuResponse:
    """One answer: a status with bytes or a streamed file, or a dropped connection."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    content: bytes = b""
    file: FileBody | None = None
    drop: bool = False

    @property
    def length(self) -> int:
        return self.file.length if self.file is not None else len(self.content)

    def discard(self) -> None:
        """Release a streamed body that will not be sent."""
        if self.file is not None:
            self.file.close()


def json_response(
    status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()
) -> EmuResponse:
    """A JSON answer with the headers an OpenAI response carries."""
    content = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    base = (
        ("content-type", "application/json"),
        ("x-request-id", "req_" + secrets.token_hex(16)),
    )
    return EmuResponse(status=status, headers=base + tuple(headers), content=content)


def dropped() -> EmuResponse:
    """The connection is cut without any response."""
    return EmuResponse(status=0, drop=True)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    429: "requests",
}


class ApiError(Exception):
    """An error the API answers with the OpenAI body ``{"error": {...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type or _ERROR_TYPES.get(status, "server_error")
        self.headers = tuple(headers)

    def response(self) -> EmuResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }
        return json_response(self.status, body, self.headers)


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def server_error(status: int = 500, headers: Iterable[tuple[str, str]] = ()) -> ApiError:
    return ApiError(
        status,
        "The server had an error while processing your request. Sorry about that!",
        headers=headers,
    )


@dataclass(frozen=True)
class Route:
    """Where a request goes: an operation with its path ids, ``control``, or ``unknown``."""

    operation: str
    container_id: str = ""
    file_id: str = ""
    control_path: tuple[str, ...] = field(default=())
    method_allowed: bool = True


_ROUTES: dict[tuple[int, str], dict[str, str]] = {
    (1, ""): {"GET": "list_containers", "POST": "create_container"},
    (2, ""): {"GET": "retrieve_container", "DELETE": "delete_container"},
    (3, "files"): {"GET": "list_files", "POST": "create_file"},
    (4, "files"): {"GET": "retrieve_file", "DELETE": "delete_file"},
    (5, "content"): {"GET": "file_content"},
}


def match_route(method: str, raw_path: str, prefixes: Iterable[str] = ("/v1",)) -> Route:
    """Map a method and a raw (still percent-encoded) path to a ``Route``.

    The API answers under ``prefixes`` only (``GatewayStyle.api_prefixes``); the
    control surface under ``/_emulator/`` on the server's root.
    """
    if raw_path.startswith(CONTROL_PREFIX):
        rest = raw_path[len(CONTROL_PREFIX) :].strip("/")
        parts = tuple(unquote(part) for part in rest.split("/")) if rest else ()
        return Route(CONTROL, control_path=parts)
    # Longest first, so "/openai/v1" is not read as "/openai" followed by "/v1".
    for prefix in sorted(prefixes, key=len, reverse=True):
        if raw_path == prefix + "/containers" or raw_path.startswith(prefix + "/containers/"):
            return _match_containers(method, raw_path[len(prefix) + 1 :])
    return Route("unknown")


def _match_containers(method: str, rest: str) -> Route:
    parts = rest.split("/")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if any(part == "" for part in parts):
        return Route("unknown")
    marker = ""
    if len(parts) in (3, 4):
        marker = parts[2]
    elif len(parts) == 5:
        marker = parts[4] if parts[2] == "files" else ""
    table = _ROUTES.get((len(parts), marker))
    if table is None:
        return Route("unknown")
    operation = table.get(method.upper())
    if operation is None:
        return Route("unknown", method_allowed=False)
    container_id = unquote(parts[1]) if len(parts) > 1 else ""
    file_id = unquote(parts[3]) if len(parts) > 3 else ""
    return Route(operation, container_id=container_id, file_id=file_id)


def read_limited(body: Iterable[bytes], limit: int = JSON_BODY_LIMIT) -> bytes:
    """Read a small body whole; larger ones are refused before they fill memory."""
    pieces: list[bytes] = []
    size = 0
    for chunk in body:
        size += len(chunk)
        if size > limit:
            raise bad_request(f"Request body is larger than {limit} bytes.")
        pieces.append(chunk)
    return b"".join(pieces)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body, answering 400 like the API when it is not one."""
    try:
        payload = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly.)"
        ) from exc
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    return payload
