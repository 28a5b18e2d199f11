"""cntr-sync: keep a local directory mirrored into an OpenAI container, both ways.

The library API, for Python code around the Responses API and code interpreter::

    import cntr_sync

    result = cntr_sync.sync("work", "analysis")               # one push pass
    with cntr_sync.Mirror("work", "analysis") as mirror:      # push, then bring home
        ...  # give mirror.container_id to the code interpreter tool

``sync`` and ``Mirror`` (and ``async_sync``, ``AsyncMirror``) run the same engine
as the ``cntr-sync`` command. Errors are the classes below, all subclasses of
``CntrSyncError``. The library never prints and never configures logging: it
logs under the ``cntr_sync`` logger, which has a ``NullHandler``.
"""

import logging

from cntr_sync._version import __version__
from cntr_sync.config import Settings
from cntr_sync.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    CntrSyncError,
    ConfigError,
    ContainerExpiredError,
    LocalError,
    LockedError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    SafetyBrakeError,
    ServerError,
    TransportError,
)
from cntr_sync.library import AsyncMirror, Mirror, async_sync, sync
from cntr_sync.result import ActionFailure, PlannedAction, SyncResult, TransferEvent

logging.getLogger("cntr_sync").addHandler(logging.NullHandler())

__all__ = [
    "ActionFailure",
    "ApiError",
    "AsyncMirror",
    "AuthenticationError",
    "BadRequestError",
    "CntrSyncError",
    "ConfigError",
    "ContainerExpiredError",
    "LocalError",
    "LockedError",
    "Mirror",
    "NotFoundError",
    "OutcomeUnknownError",
    "PermissionDeniedError",
    "PlannedAction",
    "ProtocolError",
    "RateLimitedError",
    "SafetyBrakeError",
    "ServerError",
    "Settings",
    "SyncResult",
    "TransferEvent",
    "TransportError",
    "__version__",
    "async_sync",
    "sync",
]
