"""logs: the key-value logger modules use, and the rendering ``configure`` installs.

The logger is stdlib ``logging`` underneath (``import structlog`` costs every
command 70-100 ms: ``test_startup`` checks that a sync without a log line never
loads it); the lines are rendered by structlog's processors, as JSON or console
lines, with credentials scrubbed.
"""

from __future__ import annotations

import io
import json
import logging

import pytest

from cntr_sync.logs import RECORD_FIELD, RETRIES_LOGGER, configure, get_logger

SECRET = "sk-abcdefghijklmnopqrstuvwx"


def test_key_value_logger_scrubs_secrets_and_carries_fields() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("cntr_sync.test_logs")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log = get_logger("cntr_sync.test_logs")
        log.debug("not built", pair="p")
        log.info("creating container", name="box", key=f"Bearer {SECRET}")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("pass crashed", pair="p")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert [r.levelno for r in records] == [logging.INFO, logging.ERROR]
    first = records[0]
    assert first.getMessage().startswith("creating container name=box key=")
    assert SECRET not in first.getMessage()
    fields = getattr(first, RECORD_FIELD)
    assert fields["event"] == "creating container" and fields["name"] == "box"
    assert SECRET not in fields["key"]
    assert records[1].exc_info is not None and records[1].exc_info[0] is ValueError


@pytest.mark.parametrize("log_format", ["console", "json"])
@pytest.mark.usefixtures("logging_restored")
def test_configured_lines_render_in_both_formats(log_format: str) -> None:
    stream = io.StringIO()
    configure(verbose=1, log_format=log_format, stream=stream)  # type: ignore[arg-type]
    get_logger("cntr_sync.test_logs").info("sync pass", pair="docs", uploaded=2)
    line = stream.getvalue().strip()
    if log_format == "json":
        event = json.loads(line)
        assert (event["event"], event["pair"], event["uploaded"]) == ("sync pass", "docs", 2)
        assert event["level"] == "info"
    else:
        assert "sync pass" in line and "pair=docs" in line and "uploaded=2" in line


@pytest.mark.usefixtures("logging_restored")
def test_a_json_line_names_foreign_loggers_and_scrubs_messages_and_tracebacks() -> None:
    stream = io.StringIO()
    configure(verbose=1, log_format="json", stream=stream)
    try:
        raise ValueError(f"refused Bearer {SECRET}")
    except ValueError:
        get_logger("cntr_sync.test_logs").exception("pass crashed", pair="docs")
    logging.getLogger("httpx").warning("GET %s failed", f"https://api/?key={SECRET}")
    text = stream.getvalue()
    assert SECRET not in text
    crashed, foreign = (json.loads(line) for line in text.splitlines())
    assert (crashed["event"], crashed["pair"], crashed["level"]) == (
        "pass crashed",
        "docs",
        "error",
    )
    assert "logger" not in crashed  # our own records are named by their event
    assert crashed["exception"].startswith("Traceback (most recent call last):")
    assert crashed["exception"].endswith("ValueError: refused Bearer [redacted]")
    assert crashed["timestamp"].startswith(("19", "20"))
    assert foreign["event"].startswith("GET https://api/?key=") and foreign["logger"] == "httpx"
    assert foreign["level"] == "warning"


@pytest.mark.usefixtures("logging_restored")
def test_the_levels_follow_verbose_and_quiet() -> None:
    def lines(**options: object) -> list[str]:
        stream = io.StringIO()
        configure(log_format="json", stream=stream, **options)  # type: ignore[arg-type]
        log = get_logger("cntr_sync.test_logs")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]

    assert lines() == ["w", "e"]
    assert lines(verbose=1) == ["i", "w", "e"]
    assert lines(verbose=2) == ["d", "i", "w", "e"]
    assert lines(verbose=2, quiet=True) == ["e"]


@pytest.mark.usefixtures("logging_restored")
def test_notices_show_by_default_and_a_command_draws_them_as_its_own_lines() -> None:
    stream = io.StringIO()
    configure(log_format="console", stream=stream, cli_prefix="cntr-sync")
    log = get_logger("cntr_sync.test_logs")
    log.info("not at the default level")
    log.notice('new container "box" created', container_id="cntr_1")
    log.warning("rescan failed", pair="docs", key=f"Bearer {SECRET}")
    logging.getLogger("httpx").warning("pool full")
    assert stream.getvalue().splitlines() == [
        'cntr-sync: new container "box" created container_id=cntr_1',
        "cntr-sync: warning: rescan failed pair=docs key=Bearer [redacted]",
        "cntr-sync: warning: pool full",
    ]
    verbose = io.StringIO()
    configure(verbose=1, log_format="console", stream=verbose, cli_prefix="cntr-sync")
    log.info("creating container", name="box")
    # -v's lines stay structlog's console lines (a time, a level), among the command's own.
    assert "[info     ] creating container" in verbose.getvalue()
    quiet = io.StringIO()
    configure(quiet=True, log_format="console", stream=quiet, cli_prefix="cntr-sync")
    log.notice("not when quiet")
    assert quiet.getvalue() == ""
    as_json = io.StringIO()
    configure(log_format="json", stream=as_json, cli_prefix="cntr-sync")
    log.notice("made", container_id="cntr_1")
    assert json.loads(as_json.getvalue())["level"] == "notice"


@pytest.mark.usefixtures("logging_restored")
def test_retry_waits_can_be_kept_to_debug_logs() -> None:
    def waits(**options: object) -> list[str]:
        stream = io.StringIO()
        configure(log_format="json", stream=stream, **options)  # type: ignore[arg-type]
        get_logger(RETRIES_LOGGER).info("retrying list files")
        get_logger("cntr_sync.test_logs").info("pass done")
        return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]

    assert waits(verbose=1) == ["retrying list files", "pass done"]
    # The daemon without -v: its pass lines, not one line per retried request.
    assert waits(verbose=1, retries=False) == ["pass done"]
    assert waits(verbose=2, retries=False) == ["retrying list files", "pass done"]
