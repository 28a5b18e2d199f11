"""Logging: the library logs through stdlib ``logging``; only the CLI and the daemon render.

``get_logger(name)`` gives modules a structlog logger (key-value events) that
hands each event to ``logging.getLogger(name)``, under ``cntr_sync``, without
touching structlog's global configuration: code that embeds cntr-sync keeps
its own logging, and sees nothing unless it adds a handler (``cntr_sync``
carries a ``NullHandler``). Each record's message is the event with its fields
(``creating container name=box``), and the fields ride along as
``record.cntr_sync`` for renderers that want them.

``configure`` is for the CLI and the daemon only: one handler that renders
every record as a JSON line or a console line, by ``log_format`` ("auto":
JSON when the stream is not a terminal). Every event is scrubbed of anything
that looks like a credential, as a last line of defence behind the error
tree's redaction.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO, cast

import structlog

from cntr_sync.errors import redact

LOGGER_NAME = "cntr_sync"
LogFormat = Literal["auto", "console", "json"]
# The key fields ride under on a LogRecord (its own attributes must not be overwritten).
RECORD_FIELD = "cntr_sync"


def _scrub(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
    return event


def _to_stdlib(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a stdlib logging call for one event."""
    fields = dict(event)
    exc_info = fields.pop("exc_info", None)
    message = str(fields.get("event", ""))
    extras = " ".join(f"{k}={v}" for k, v in fields.items() if k != "event")
    kwargs: dict[str, Any] = {
        "msg": f"{message} {extras}" if extras else message,
        "extra": {RECORD_FIELD: fields},
    }
    if exc_info:
        kwargs["exc_info"] = exc_info
    return kwargs


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A key-value logger for module ``name`` (under ``cntr_sync``); no global setup."""
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=[_scrub, _to_stdlib],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return logger


class _Formatter(logging.Formatter):
    """Renders a record as one JSON line or one console line."""

    def __init__(self, *, json_lines: bool, colors: bool) -> None:
        super().__init__()
        self._json = json_lines
        self._console = structlog.dev.ConsoleRenderer(colors=colors)

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] | None = getattr(record, RECORD_FIELD, None)
        event: dict[str, Any] = (
            dict(fields) if fields is not None else {"event": record.getMessage()}
        )
        event["level"] = record.levelname.lower()
        event["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat()
        if not record.name.startswith(LOGGER_NAME):
            event["logger"] = record.name
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        event = {k: redact(v) if isinstance(v, str) else v for k, v in event.items()}
        if self._json:
            return json.dumps(event, default=str, ensure_ascii=False)
        return str(self._console(None, "", event))


class _CurrentStderr(io.TextIOBase):
    """Whatever ``sys.stderr`` is at the time of each write: a progress bar that
    redirects it shows log lines above the bar instead of through it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(
    *,
    verbose: int = 0,
    quiet: bool = False,
    log_format: LogFormat = "auto",
    stream: TextIO | None = None,
) -> None:
    """Route every log record of this process to ``stream`` (the CLI's and daemon's setup).

    ``verbose``: 0 warnings, 1 info, 2+ debug; ``quiet``: errors only.
    """
    target: TextIO = stream or cast(TextIO, _CurrentStderr())
    json_lines = log_format == "json" or (log_format == "auto" and not target.isatty())
    handler = logging.StreamHandler(target)
    handler.setFormatter(_Formatter(json_lines=json_lines, colors=target.isatty()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    level = logging.ERROR if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    if not quiet and verbose == 0:
        level = logging.WARNING
    logging.getLogger(LOGGER_NAME).setLevel(level)
    # httpx logs every request at INFO, with URLs: far too chatty for a sync loop.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
