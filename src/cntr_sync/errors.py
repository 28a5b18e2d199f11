"""The one error tree of cntr-sync.

Every failure the product reports is one of these classes. Each carries a
one-line, user-facing ``message`` (what the CLI prints) and, where it applies,
the path, container or file id it concerns. No error ever carries an API key:
messages are built from status codes, server messages and ids, and
``redact`` scrubs anything that looks like a credential from server text
(every query value of a URL included: ``redact_url``).

    CntrSyncError                      base; .message is one line
    ├── ConfigError                    bad settings file, key or value (exit 2)
    │   └── UnknownPairError           the daemon runs no pair of that name
    ├── LocalError                     the local tree: unreadable file, missing root
    ├── LockedError                    another run holds this pair's lock (exit 3)
    ├── SafetyBrakeError               a brake refused the pass (exit 3)
    ├── StoppedError                   told to stop (the daemon's flush bound passed)
    │                                  during a wait: not a failure, a pass cut short
    ├── IncompleteSyncError            the library's pass left work undone; .result
    └── ApiError                       the Containers API; .status, .operation
        ├── AuthenticationError        401: key missing, wrong or revoked (exit 2)
        ├── PermissionDeniedError      403
        ├── NotFoundError              404: container or file is gone
        ├── ContainerExpiredError      400 "...expired..." or status != running
        ├── BadRequestError            any other 4xx the server refused
        ├── RateLimitedError           429, still after every retry
        │   ├── QuotaExceededError     the account has no quota or billing
        │   │                          (insufficient_quota): no wait helps (exit 2)
        │   └── RefusedTooLongError    every answer a 429 or 503 for
        │                              ``refusals.REFUSAL_LIMIT``: the pass stops
        ├── ServerError                5xx, still after every retry
        ├── TransportError             connection or timeout, still after every retry
        ├── OutcomeUnknownError        an upload failed where the server may have
        │                              stored it: resolve by listing, never re-upload
        └── ProtocolError              the answer is not the API: bad JSON, wrong
                                       shape, a page that repeats its cursor

httpx exceptions are mapped into this tree in one place, ``rest`` (under
``api``). ``OSError`` is mapped where a file is touched, always into
``LocalError`` or ``ConfigError`` naming the path: ``scan`` (the tree),
``index`` and ``locks`` (the state directory), ``transfer`` and ``engine`` (a
file being uploaded), ``containers`` (the id file), ``config`` and
``config_sources`` (settings and key files), ``watch`` (observers) and
``health`` (the listen address). Everything above them sees these classes alone.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cntr_sync.result import SyncResult

REDACTED = "[redacted]"

_SECRET_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"),
    # A value ends at "&" too: the next parameter of a query is not part of it.
    re.compile(r"(?i)(api[-_]?key|x-bf-vk|authorization)([\"':=\s]+)[^\s\"',;&]{6,}"),
)


# A URL in running text (a scheme, then up to a space, a quote or an angle bracket),
# or the target of a request line a server echoes ("Invalid URL (GET /v1/x?sig=...)").
# Only those: a file name such as "page.php?id=3" is not a query to hide.
_URL = re.compile(
    r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+"
    r"|\b(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) /[^\s\"'<>]+"
)
# A URL's password: from the ":" after the user name up to the last "@" before the path.
_URL_PASSWORD = re.compile(r"^([^:/?#]+://[^:/?#@]*):[^/?#]*@")
# A URL's query: from "?" to the fragment or the end, less the punctuation that ends a
# sentence or a parenthesis around the URL.
_URL_QUERY = re.compile(r"\?([^#]*?)(?=[).,:;]*(?:#|\Z))")


def redact(text: str) -> str:
    """Remove anything that looks like a credential from ``text``: key-like strings,
    and the password and every query value of each URL in it (``redact_url``)."""
    if "?" in text or "@" in text:  # neither a query nor a password without them
        text = _URL.sub(lambda match: redact_url(match.group()), text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_redact_match, text)
    return text


def redact_url(url: str) -> str:
    """``url`` with its password and every query value replaced by "[redacted]".

    The names of the query parameters stay (``?api-key=[redacted]&sig=[redacted]``):
    which parameters a gateway is given is worth seeing, their values are not. Any
    value, not only those whose name looks secret: a gateway's signature or token
    can have any name (``sig``, ``code``, ``st``).
    """
    url = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", url)
    return _URL_QUERY.sub(_redacted_query, url, count=1)


def _redacted_query(match: re.Match[str]) -> str:
    parameters = match.group(1).split("&")
    return "?" + "&".join(_redacted_parameter(parameter) for parameter in parameters)


def _redacted_parameter(parameter: str) -> str:
    name, equals, value = parameter.partition("=")
    return f"{name}={REDACTED}" if equals and value else parameter


def _redact_match(match: re.Match[str]) -> str:
    if match.re is _SECRET_PATTERNS[2]:
        return f"{match.group(1)}{match.group(2)}{REDACTED}"
    if match.re is _SECRET_PATTERNS[1]:
        return f"{match.group(1)} {REDACTED}"
    return REDACTED


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace so a message stays on one line, and bound its length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class CntrSyncError(Exception):
    """Base of every error cntr-sync reports; ``message`` is one user-facing line
    (of at most ``limit`` characters)."""

    def __init__(self, message: str, *, limit: int = 300) -> None:
        self.message = one_line(redact(message), limit)
        super().__init__(self.message)


class ConfigError(CntrSyncError):
    """A settings file, key or value is wrong; the message names which."""


class UnknownPairError(ConfigError):
    """No running pair has this name (the daemon's control surface)."""


class LocalError(CntrSyncError):
    """Something in the local tree cannot be read or trusted."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class LockedError(CntrSyncError):
    """Another cntr-sync process is syncing the same pair right now."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message)


class SafetyBrakeError(CntrSyncError):
    """A safety brake refused the pass: nothing was changed. ``--force`` overrides.

    ``would_delete``: every file the refused pass would have deleted (the
    relpath, or the server path of a file that is not ours), when deletions
    were what the brake weighed; the message names the first of them.
    """

    def __init__(self, message: str, *, would_delete: tuple[str, ...] = ()) -> None:
        self.would_delete = would_delete
        # Room for the names the message gives (``brakes.BRAKE_NAMED`` of them).
        super().__init__(message, limit=4000)


class StoppedError(CntrSyncError):
    """A request was told to stop while it waited (a retry wait or the pacer's):
    the daemon is stopping a pair past its flush bound. Not a failure: nothing is
    known to have gone wrong, the pass ends cut short and the next one carries on."""


def raise_if_stopped(stop: threading.Event | None) -> None:
    """``StoppedError`` once ``stop`` is set: no request starts, no wait goes on."""
    if stop is not None and stop.is_set():
        raise StoppedError("stopping: the request was not sent")


class IncompleteSyncError(CntrSyncError):
    """A pass of the Python API left work undone: an action failed, a file was
    deferred (it changed during the pass), or the pass was cut short.

    ``result``: the pass's ``SyncResult`` (its ``failures`` and ``deferred`` say
    what); the next pass tries again. A dry run raises it for those reasons only,
    never because it planned actions.
    """

    def __init__(self, message: str, *, result: SyncResult) -> None:
        self.result = result
        super().__init__(message)


class ApiError(CntrSyncError):
    """The Containers API refused or failed a call."""

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        status: int | None = None,
        container_id: str | None = None,
        file_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.operation = operation
        self.status = status
        self.container_id = container_id
        self.file_id = file_id
        self.request_id = request_id
        super().__init__(message)


class AuthenticationError(ApiError):
    """401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(ApiError):
    """403: the key may not do this."""


class NotFoundError(ApiError):
    """404: the container or file does not exist (any more)."""


class ContainerExpiredError(ApiError):
    """The container expired; its files are gone and it cannot be revived."""


class BadRequestError(ApiError):
    """Any other 4xx: the server refused the request as malformed."""


class RateLimitedError(ApiError):
    """429 after every retry."""


class QuotaExceededError(RateLimitedError):
    """The account's quota or billing refuses every request (OpenAI's 429
    ``insufficient_quota``): waiting will not help, so the pass stops at once."""


class RefusedTooLongError(RateLimitedError):
    """Every answer for a long while was a 429 or 503: the pass stops rather than
    retrying for hours; the next pass tries again (one request, then this again)."""


class ServerError(ApiError):
    """5xx after every retry."""


class TransportError(ApiError):
    """Connection refused, reset or timed out after every retry."""


class OutcomeUnknownError(ApiError):
    """A create (file upload or container) failed where the server may have done it.

    Never answer this with a blind second create: a listing shows whether it
    exists (the planner adopts or removes a file; the engine looks a
    container up by name).
    """

    def __init__(
        self,
        message: str,
        *,
        filename: str,
        operation: str = "create_file",
        container_id: str | None = None,
        status: int | None = None,
    ) -> None:
        self.filename = filename
        super().__init__(message, operation=operation, status=status, container_id=container_id)


class ProtocolError(ApiError):
    """The answer does not follow the API: bad JSON, wrong shape, a cursor loop."""
