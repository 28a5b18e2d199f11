"""ControlClient: a running daemon's control surface from Python (docs/control.md).

For an app beside a sidecar or service: after writing files, ``flush()`` returns
once a full pass has put them in the container (and, per direction, brought the
model's files home); ``pause()`` and ``resume()`` around a bulk change;
``events()`` yields what the daemon does as it happens; ``pairs()``,
``add_pair()`` and ``remove_pair()`` manage the pairs directory::

    from cntr_sync import ControlClient

    with ControlClient("/run/cntr-sync/control.sock") as daemon:
        outcome = daemon.flush("work")["work"]
        assert outcome.in_sync, outcome.lines

It speaks HTTP over the Unix socket (httpx's ``uds`` transport), or to
``http_listen`` with a bearer token. Errors are the library's: nothing answers
(no daemon): ``TransportError`` (the CLI's exit 4); a pair no daemon runs:
``UnknownPairError``; a refused request (a paused pair, bad settings):
``ConfigError``; a wrong token: ``AuthenticationError``.

Must not: import the daemon's modules (an app needs httpx and this file only),
or show a token in an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from cntr_sync.errors import (
    AuthenticationError,
    ConfigError,
    ProtocolError,
    TransportError,
    UnknownPairError,
)

if TYPE_CHECKING:
    from cntr_sync.config import Settings

__all__ = ["SOCKET_NAME", "ControlClient", "PairFlush", "socket_path"]

SOCKET_NAME = "control.sock"

# Connecting to a local socket takes microseconds; a daemon that does not accept
# within this is not serving.
CONNECT_TIMEOUT = 5.0
# Every call but a waiting flush and the event stream answers at once.
QUICK_TIMEOUT = 30.0


def socket_path(settings: Settings, environ: Mapping[str, str] | None = None) -> Path:
    """``control_socket``, else ``control.sock`` in ``$RUNTIME_DIRECTORY`` (systemd's
    ``RuntimeDirectory=``; the first when it names several), else in the state directory."""
    if settings.control_socket is not None:
        return settings.control_socket
    environ = os.environ if environ is None else environ
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime) / SOCKET_NAME
    return settings.state_dir / SOCKET_NAME


@dataclass(frozen=True)
class PairFlush:
    """One pair's flush: ``sync``'s exit code, its ``--json`` document and its lines."""

    pair: str
    exit_code: int
    summary: dict[str, Any]
    lines: tuple[str, ...]

    @property
    def in_sync(self) -> bool:
        return self.exit_code == 0


class ControlClient:
    """The control routes of one daemon, on its socket or on ``http_listen``."""

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``socket``: the control socket's path; or ``url`` (``http://host:port``)
        with ``token``, the daemon's ``control_token_file`` content."""
        if (socket is None) == (url is None) and transport is None:
            raise ConfigError("ControlClient: give the control socket's path or a url")
        self.where = str(socket) if socket is not None else str(url)
        self._socket = os.fspath(socket) if socket is not None and transport is None else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if transport is None and socket is not None:
            transport = httpx.HTTPTransport(uds=os.fspath(socket))
        self._http = httpx.Client(
            base_url=url or "http://cntr-sync",
            transport=transport,
            headers=headers,
            timeout=httpx.Timeout(QUICK_TIMEOUT, connect=CONNECT_TIMEOUT),
        )

    # -- the routes ----------------------------------------------------------------------

    def flush(self, *pairs: str, wait: bool = True) -> dict[str, PairFlush]:
        """A full pass of ``pairs`` (all when none) now; with ``wait``, once it ended,
        each pair's outcome (else an empty dict: the passes are queued)."""
        document = self._call("POST", "/flush", {"pairs": list(pairs), "wait": wait}, wait=wait)
        if not wait:
            return {}
        return {
            name: PairFlush(name, int(o["exit_code"]), o["summary"], tuple(o["lines"]))
            for name, o in document["pairs"].items()
        }

    def pause(self, *pairs: str) -> list[str]:
        """Pause ``pairs`` (all when none); returns the names paused."""
        return list(self._call("POST", "/pause", {"pairs": list(pairs)})["paused"])

    def resume(self, *pairs: str) -> list[str]:
        """Resume ``pairs`` (all when none); each runs a full pass next."""
        return list(self._call("POST", "/resume", {"pairs": list(pairs)})["resumed"])

    def pairs(self) -> dict[str, Any]:
        """``{"pairs": {name: {settings, source, state, paused}}, "refused": {file: reason}}``."""
        return self._call("GET", "/pairs")

    def add_pair(
        self, name: str, local: str | os.PathLike[str], container: str, **settings: Any
    ) -> dict[str, Any]:
        """Write the pair's file in the daemon's pairs directory; returns its settings."""
        table = {"name": name, "local": str(Path(local).absolute()), "container": container}
        return dict(self._call("POST", "/pairs", {**table, **settings})["pair"])

    def remove_pair(self, name: str) -> None:
        self._call("DELETE", f"/pairs/{name}")

    def events(self, *pairs: str) -> Iterator[dict[str, Any]]:
        """The daemon's events as they happen (``pairs``: only theirs), until the
        daemon stops or the caller stops iterating."""
        params = httpx.QueryParams([("pair", name) for name in pairs])
        self._probe()
        try:
            with self._http.stream("GET", "/events", params=params, timeout=_no_read_limit()) as r:
                self._check(r)
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        yield json.loads(line.removeprefix("data: "))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    # -- plumbing ------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, wait: bool = False
    ) -> dict[str, Any]:
        timeout = _no_read_limit() if wait else httpx.USE_CLIENT_DEFAULT
        self._probe()
        try:
            answer = self._http.request(method, path, json=body, timeout=timeout)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        self._check(answer)
        try:
            document = answer.json()
        except ValueError:
            raise ProtocolError(f"{self.where}: the answer is not JSON") from None
        if not isinstance(document, dict):
            raise ProtocolError(f"{self.where}: the answer is not a JSON object")
        return document

    def _probe(self) -> None:
        """Fail at once when there is no socket: no daemon runs (or ran) there."""
        if self._socket is not None and not Path(self._socket).is_socket():
            raise TransportError(f"no daemon is running: no control socket at {self.where}")

    def _check(self, answer: httpx.Response) -> None:
        if answer.is_success:
            return
        answer.read()
        try:
            message = str(answer.json().get("error", ""))
        except ValueError:
            message = answer.text.strip()[:200]
        status = answer.status_code
        if status == 401:
            raise AuthenticationError(f"{self.where}: {message}", status=status)
        if status == 404:
            raise UnknownPairError(message or f"{self.where}: not found")
        raise ConfigError(message or f"{self.where}: HTTP {status}")

    def _unreachable(self, exc: httpx.TransportError) -> TransportError:
        return TransportError(
            f"no daemon is running: nothing answers at {self.where} ({type(exc).__name__})"
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _no_read_limit() -> httpx.Timeout:
    # A flush waits as long as its pass runs; an event stream as long as the daemon.
    return httpx.Timeout(None, connect=CONNECT_TIMEOUT)
