"""Logging setup: structlog, JSON when stderr is not a terminal, secrets never logged.

Owns the process-wide logging configuration and nothing else. Every log
event goes through ``_scrub``, which removes anything that looks like a
credential, as a last line of defence behind the error tree's redaction.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from cntr_sync.errors import redact


def _scrub(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
    return event


def configure(
    *, verbose: int = 0, json_logs: bool | None = None, stream: TextIO | None = None
) -> None:
    """Set up structlog and the stdlib root logger once per process.

    ``verbose``: 0 warnings and summaries (info), 1 info, 2+ debug.
    """
    stream = stream or sys.stderr
    level = logging.DEBUG if verbose >= 2 else logging.INFO
    if json_logs is None:
        json_logs = not stream.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # httpx logs every request at INFO, with URLs: far too chatty for a sync loop.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
