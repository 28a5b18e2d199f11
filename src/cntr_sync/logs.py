"""Logging: the library logs through stdlib ``logging``; only the CLI and the daemon render.

``get_logger(name)`` gives modules a key-value logger (``log.info("creating
container", name=name)``) that hands each event to ``logging.getLogger(name)``,
under ``cntr_sync``, with no global configuration: code that embeds cntr-sync
keeps its own logging, and sees nothing unless it adds a handler (``cntr_sync``
carries a ``NullHandler``). Each record's message is the event with its fields
(``creating container name=box``), and the fields ride along as
``record.cntr_sync`` for renderers that want them. That logger is a few lines of
our own rather than a ``structlog.stdlib`` bound logger: ``import structlog``
loads its console renderer, tracebacks and rich (70-100 ms), which importing
``cntr_sync`` and every command would pay.

Levels are the stdlib's and ``NOTICE`` (25, between info and warning, as
rclone's): what a command says at its default level without it being a
problem (``new container "box" created``).

``configure`` is for the CLI and the daemon only: one handler on the root
logger whose formatter is structlog's ``ProcessorFormatter``, so structlog's
processors render every record, ours and other libraries' (httpx, watchdog):
the fields, level, an ISO timestamp, the logger's name for records not under
``cntr_sync``, the exception, a scrub of anything that looks like a credential
(a last line of defence behind the error tree's redaction), then ``JSONRenderer``
or ``ConsoleRenderer`` by ``log_format`` ("auto": JSON when the stream is not a
terminal). structlog is imported with the first line drawn, so a command that
logs nothing does not pay for it. A one-shot command (``cli_prefix``) writes its
notices, warnings and errors as its own lines (``cntr-sync: warning: ...``,
like the rest of its output); only the ``-v`` and ``-vv`` lines are structlog's.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

from cntr_sync.errors import redact

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

LOGGER_NAME = "cntr_sync"
#: Where ``retries`` logs each wait (``configure(retries=False)`` keeps it to debug logs).
RETRIES_LOGGER = "cntr_sync.retries"
#: Said at a command's default level, not a problem (see the module docstring).
#: Its name is registered by ``configure`` only: an embedding program's levels are its own.
NOTICE = 25
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
        scrubbed = _scrubbed({"event": event, **fields})
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

    def notice(self, event: str, **fields: Any) -> None:
        self._emit(NOTICE, event, fields, fields.pop("exc_info", None))

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


def _scrubbed(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: redact(value) if isinstance(value, str) else value for key, value in fields.items()
    }


# -- structlog processors: (logger, method name, event dict) -> event dict ------------------


def _record_fields(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """A ``KeyValueLogger`` record's own fields in place of its one-line message."""
    fields = getattr(event["_record"], RECORD_FIELD, None)
    if fields is not None:
        event.update(fields)
    return event


def _foreign_logger_name(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """The logger's name, for records from outside ``cntr_sync`` (httpx, watchdog...)."""
    name = event["_record"].name
    if name != LOGGER_NAME and not name.startswith(LOGGER_NAME + "."):
        event["logger"] = name
    return event


def _scrub_credentials(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Every string of the event, exception text included, without credentials."""
    return _scrubbed(event)


def _processor_formatter(*, json_lines: bool, colors: bool) -> logging.Formatter:
    """structlog's ``ProcessorFormatter`` with the chain the module docstring lists."""
    from structlog.dev import ConsoleRenderer  # noqa: PLC0415 - see the module docstring
    from structlog.processors import JSONRenderer, TimeStamper, format_exc_info  # noqa: PLC0415
    from structlog.stdlib import ProcessorFormatter, add_log_level  # noqa: PLC0415

    renderer = (
        JSONRenderer(default=str, ensure_ascii=False)
        if json_lines
        else ConsoleRenderer(colors=colors)
    )
    return ProcessorFormatter(
        # Every record comes from stdlib logging: to structlog, all are "foreign".
        foreign_pre_chain=[
            _record_fields,
            add_log_level,
            TimeStamper(fmt="iso", utc=True),
            _foreign_logger_name,
        ],
        processors=[
            ProcessorFormatter.remove_processors_meta,
            format_exc_info,
            _scrub_credentials,
            renderer,
        ],
    )


class _FirstLineFormatter(logging.Formatter):
    """Builds the structlog formatter with the first record it formats (see the module
    docstring), then hands every record to it."""

    def __init__(self, *, json_lines: bool, colors: bool) -> None:
        super().__init__()
        self._json_lines = json_lines
        self._colors = colors
        self._formatter: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        # The handler's lock is held while it formats: built once.
        if self._formatter is None:
            self._formatter = _processor_formatter(json_lines=self._json_lines, colors=self._colors)
        return self._formatter.format(record)


class _CommandLineFormatter(logging.Formatter):
    """A one-shot command's notices, warnings and errors as its own lines
    (``cntr-sync: warning: rescan failed pair=docs``); lower levels go to ``detail``."""

    def __init__(self, prefix: str, detail: logging.Formatter) -> None:
        super().__init__()
        self._prefix = prefix
        self._detail = detail

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno < NOTICE:
            return self._detail.format(record)
        level = "" if record.levelno == NOTICE else f"{record.levelname.lower()}: "
        line = f"{self._prefix}: {level}{redact(record.getMessage())}"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


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
    cli_prefix: str | None = None,
    retries: bool = True,
) -> None:
    """Route every log record of this process to ``stream`` (the CLI's and daemon's setup).

    ``verbose``: 0 notices, 1 info, 2+ debug; ``quiet``: errors only. ``cli_prefix``
    (console lines only): notices and above as the command's own lines, so prefixed.
    ``retries``: each retry's wait at info level too (else only at debug, -vv).
    """
    logging.addLevelName(NOTICE, "NOTICE")
    target: TextIO = stream or cast(TextIO, _CurrentStderr())
    json_lines = log_format == "json" or (log_format == "auto" and not target.isatty())
    formatter: logging.Formatter = _FirstLineFormatter(
        json_lines=json_lines, colors=target.isatty()
    )
    if cli_prefix is not None and not json_lines:
        formatter = _CommandLineFormatter(cli_prefix, formatter)
    handler = logging.StreamHandler(target)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    level = logging.ERROR if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    if not quiet and verbose == 0:
        level = NOTICE
    logging.getLogger(LOGGER_NAME).setLevel(level)
    waits = logging.getLogger(RETRIES_LOGGER)
    waits.setLevel(logging.NOTSET if retries or level <= logging.DEBUG else logging.WARNING)
    # httpx logs every request at INFO, with URLs: far too chatty for a sync loop.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
