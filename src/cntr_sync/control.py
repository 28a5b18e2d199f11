"""The daemon's control routes: flush, pause, resume, pairs, events (docs/control.md).

    POST   /flush        {"pairs": [...], "wait": true}  a full pass now; waits for it
    POST   /pause        {"pairs": [...]}                 no passes until resumed
    POST   /resume       {"pairs": [...]}                 passes again, a full one first
    GET    /pairs                                         the pairs, their source and state
    POST   /pairs        {"name", "local", "container", setting: value, ...}
    DELETE /pairs/NAME                                    a pair of the pairs directory
    GET    /events[?pair=NAME]                            Server-Sent Events (events.py)

An empty or missing ``pairs`` means every pair. Answers are JSON; an error is
``{"error": "one line"}`` with 400 (bad request), 404 (no such pair), 409 (the
pair is paused, or belongs to the config file). A flush's answer per pair is
``sync --json``'s document (cli_output.summary) and the lines ``sync`` prints,
with ``sync``'s exit code.

Owns the routes (where the socket is: ``control_client.socket_path``). The servers and
the token check are ``health``'s; what each route does is the daemon's
(``ControlledDaemon``). Must not: run passes or touch workers itself, or wait
without bound (a flush's wait ends when its pass does, or when the pair or the
daemon stops).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

from cntr_sync.control_client import SOCKET_NAME, socket_path
from cntr_sync.errors import CntrSyncError, ConfigError, UnknownPairError
from cntr_sync.events import EventBus, sse_frame
from cntr_sync.health import ControlAnswer

if TYPE_CHECKING:
    from cntr_sync.flush_request import FlushRequest
    from cntr_sync.result import PassResult

__all__ = ["SOCKET_NAME", "ControlRoutes", "ControlledDaemon", "flush_outcome", "socket_path"]

# A stream with nothing to say sends a comment this often: a reader that went
# away is noticed, and proxies keep the connection.
KEEPALIVE_SECONDS = 15.0
# How often a flush's wait checks that its pair and the daemon still run.
_FLUSH_CHECK = 0.5


class PairConflictError(ConfigError):
    """The pair cannot be changed this way (it is in the config file, or paused)."""


class ControlledDaemon(Protocol):
    """What the routes ask of the daemon (``daemon.Daemon``)."""

    events: EventBus

    def flush(self, names: list[str]) -> dict[str, FlushRequest]: ...

    def flush_abandoned(self, name: str, request: FlushRequest) -> bool: ...

    def pause(self, names: list[str]) -> list[str]: ...

    def resume(self, names: list[str]) -> list[str]: ...

    def pairs_info(self) -> dict[str, Any]: ...

    def add_pair(self, table: dict[str, Any]) -> dict[str, Any]: ...

    def remove_pair(self, name: str) -> None: ...


def flush_outcome(result: PassResult | None, error: CntrSyncError | None) -> dict[str, Any]:
    """One pair's flush answer: ``exit_code``, ``summary`` (``sync --json``'s
    document) and ``lines`` (what ``sync`` prints on stderr), from the pass."""
    from cntr_sync.cli_common import EXIT_OK, EXIT_PARTIAL, exit_code_for  # noqa: PLC0415
    from cntr_sync.cli_output import (  # noqa: PLC0415
        PREFIX,
        conflict_line,
        error_document,
        human_summary,
        summary,
    )
    from cntr_sync.remote_paths import printable  # noqa: PLC0415
    from cntr_sync.result import SyncResult  # noqa: PLC0415

    if result is None:
        failure = error or CntrSyncError("the pass ended without a result")
        code = exit_code_for(failure)
        document = error_document("sync", code, {"message": failure.message})
        return {
            "exit_code": code,
            "summary": document,
            "lines": [f"{PREFIX}: error: {failure.message}"],
        }
    code = EXIT_OK if result.in_sync else EXIT_PARTIAL
    synced = SyncResult.from_pass(result, planned=False)
    lines = [f"{PREFIX}: {f.action} {printable(f.target)}: {f.message}" for f in synced.failures]
    lines += [f"{PREFIX}: warning: {warning}" for warning in synced.warnings]
    lines.append(human_summary(synced))
    lines += [conflict_line(copy) for copy in synced.conflict_copies]
    return {"exit_code": code, "summary": summary(synced, code), "lines": lines}


class ControlRoutes:
    """The routes, answered by asking ``daemon``; ``health``'s servers call ``answer``."""

    def __init__(self, daemon: ControlledDaemon) -> None:
        self._daemon = daemon

    def handles(self, path: str) -> bool:
        return path in ("/flush", "/pause", "/resume", "/pairs", "/events") or path.startswith(
            "/pairs/"
        )

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> ControlAnswer:
        try:
            return self._route(method, path, query, body)
        except UnknownPairError as exc:
            return HTTPStatus.NOT_FOUND, {"error": exc.message}
        except PairConflictError as exc:
            return HTTPStatus.CONFLICT, {"error": exc.message}
        except CntrSyncError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": exc.message}

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> ControlAnswer:
        daemon = self._daemon
        if path == "/events" and method == "GET":
            return self._events(set(query.get("pair", [])))
        if path == "/pairs" and method == "GET":
            return HTTPStatus.OK, daemon.pairs_info()
        if path == "/pairs" and method == "POST":
            return HTTPStatus.CREATED, {"pair": daemon.add_pair(_document(body))}
        if path.startswith("/pairs/") and method == "DELETE":
            name = path.removeprefix("/pairs/")
            daemon.remove_pair(name)
            return HTTPStatus.OK, {"removed": name}
        if method != "POST" or path not in ("/flush", "/pause", "/resume"):
            return HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} {path} is not a route"}
        request = _document(body)
        names = _names(request)
        if path == "/pause":
            return HTTPStatus.OK, {"paused": daemon.pause(names)}
        if path == "/resume":
            return HTTPStatus.OK, {"resumed": daemon.resume(names)}
        requests = daemon.flush(names)
        if request.get("wait", True) is False:
            return HTTPStatus.ACCEPTED, {"pairs": sorted(requests), "queued": True}
        outcomes = {name: self._wait(name, requests[name]) for name in sorted(requests)}
        code = max((o["exit_code"] for o in outcomes.values()), default=0)
        return HTTPStatus.OK, {"exit_code": code, "pairs": outcomes}

    def _wait(self, name: str, request: FlushRequest) -> dict[str, Any]:
        while not request.wait(_FLUSH_CHECK):
            if self._daemon.flush_abandoned(name, request):
                stopped = CntrSyncError(f"pair {name!r} stopped before its pass ended")
                return flush_outcome(None, stopped)
        return flush_outcome(request.result, request.error)

    def _events(self, pairs: set[str]) -> Iterator[bytes]:
        subscription = self._daemon.events.subscribe()
        try:
            yield b": cntr-sync events\n\n"  # the stream is open: headers go out now
            while not subscription.closed:
                event = subscription.get(KEEPALIVE_SECONDS)
                if event is None:
                    if not subscription.closed:
                        yield b": keepalive\n\n"
                    continue
                if pairs and event["type"] != "lost" and event.get("pair") not in pairs:
                    continue
                yield sse_frame(event)
        finally:
            subscription.close()


def _document(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ConfigError("the request body is not JSON") from None
    if not isinstance(document, dict):
        raise ConfigError("the request body must be a JSON object")
    return document


def _names(request: dict[str, Any]) -> list[str]:
    names = request.get("pairs") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError("'pairs' must be a list of pair names")
    return names
