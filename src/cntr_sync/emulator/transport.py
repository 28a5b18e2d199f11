"""The emulator as an httpx transport, for in-process tests.

Owns the translation between ``httpx.Request``/``httpx.Response`` and the
emulator's ``EmuRequest``/``EmuResponse``: request bodies are iterated chunk by
chunk, file responses stream from the spooled file, and a dropped connection
raises ``httpx.RemoteProtocolError`` like a real server hanging up.

``httpx.MockTransport(emulator.handle)`` works (sync and async clients), but
MockTransport reads the whole request body into memory before calling the
handler; ``emulator.transport()`` (an ``EmulatorTransport``) does not, so use it
for large uploads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import parse_qsl

import httpx

from .wire import EmuRequest, EmuResponse, FileBody

Dispatch = Callable[[EmuRequest], EmuResponse]


def handle_httpx(dispatch: Dispatch, request: httpx.Request) -> httpx.Response:
    """Answer one httpx request through ``dispatch``."""
    path, _, query_string = request.url.raw_path.decode("ascii").partition("?")
    headers: dict[str, str] = {}
    for name, value in request.headers.multi_items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    emu_request = EmuRequest(
        method=request.method,
        path=path,
        query=tuple(parse_qsl(query_string, keep_blank_values=True)),
        headers=headers,
        body=_request_chunks(request),
    )
    response = dispatch(emu_request)
    if response.drop:
        raise httpx.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )
    response_headers = [*response.headers, ("content-length", str(response.length))]
    if response.file is not None:
        return httpx.Response(
            response.status, headers=response_headers, stream=FileStream(response.file)
        )
    return httpx.Response(response.status, headers=response_headers, content=response.content)


class EmulatorTransport(httpx.BaseTransport):
    """A sync httpx transport that streams request bodies into the emulator unbuffered."""

    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return handle_httpx(self._dispatch, request)


def _request_chunks(request: httpx.Request) -> Iterator[bytes]:
    stream = request.stream
    if not isinstance(stream, httpx.SyncByteStream):
        raise TypeError("an unread async request body cannot be streamed into the emulator")
    yield from stream


class FileStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body read from a spooled file in chunks; closed with the response."""

    def __init__(self, body: FileBody) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        yield from self._body.chunks()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._body.chunks():
            yield chunk

    def close(self) -> None:
        self._body.close()

    async def aclose(self) -> None:
        self._body.close()
