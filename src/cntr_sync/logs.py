"""Logging: the library logs through stdlib ``logging``; only the CLI and the daemon render.

``get_logger(name)`` gives modules a key-value logger (``log.info("creating
container", name=name)``) that hands each event to ``logging.getLogger(name)``,
under ``cntr_sync``, with no global configuration: code that embeds cntr-sync
keeps its own logging, and sees nothing unless it adds a handler (``cntr_sync``
carries a ``NullHandler``). Each record's message is the event with its fields
(``creating container name=box``), and the fields ride along as
``record.cntr_sync`` for renderers that want them. That logger is a few lines of
our own rather than structlog's: ``import structlog`` loads its console renderer,
tracebacks and rich (about 70 ms), which every command would pay at start-up.
structlog's ``ConsoleRenderer`` still draws console lines, loaded with the first
line drawn.

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
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

from cntr_sync.errors import redact

if TYPE_CHECKING:
    from structlog.dev import ConsoleRenderer

LOGGER_NAME = "cntr_sync"
LogFormat = Literal["auto", "console", "json"]
# The key fields ride under on a LogRecord (its own attributes must not be overwritten).
RECORD_FIELD = "cntr_sync"


class KeyValueLogger:
    """Key-value events to one stdlib logger: ``log.warning("rescan failed", pair=name)``.

    Fields that are strings are scrubbed of credentials. Nothing is built for a
    level the logger does not pass.
    """

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _emit(self, level: int, event: str, fields: dict[str, Any], exc_info: Any) -> None:
        if not self._logger.isEnabledFor(level):
            return
        scrubbed = {
            key: redact(value) if isinstance(value, str) else value
            for key, value in {"event": event, **fields}.items()
        }
        message = str(scrubbed["event"])
        extras = " ".join(f"{k}={v}" for k, v in scrubbed.items() if k != "event")
        self._logger.log(
            level,
            f"{message} {extras}" if extras else message,
            exc_info=exc_info,
            extra={RECORD_FIELD: scrubbed},
        )

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields, fields.pop("exc_info", None))

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields, fields.pop("exc_info", None))

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields, fields.pop("exc_info", None))

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields, fields.pop("exc_info", None))

    def exception(self, event: str, **fields: Any) -> None:
        """An error with the exception being handled."""
        self._emit(logging.ERROR, event, fields, fields.pop("exc_info", True))


def get_logger(name: str) -> KeyValueLogger:
    """A key-value logger for module ``name`` (under ``cntr_sync``); no global setup."""
    return KeyValueLogger(logging.getLogger(name))


class _Formatter(logging.Formatter):
    """Renders a record as one JSON line or one console line."""

    def __init__(self, *, json_lines: bool, colors: bool) -> None:
        super().__init__()
        self._json = json_lines
        self._colors = colors
        self._console: ConsoleRenderer | None = None

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
        if self._console is None:
            from structlog.dev import ConsoleRenderer  # noqa: PLC0415 - only when a line is drawn

            self._console = ConsoleRenderer(colors=self._colors)
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
