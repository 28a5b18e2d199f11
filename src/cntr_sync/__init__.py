"""cntr-sync: keep a local directory mirrored into an OpenAI container, both ways.

The library API, for Python code around the Responses API and code interpreter::

    import cntr_sync

    result = cntr_sync.sync("work", "analysis")               # one push pass
    with cntr_sync.Mirror("work", "analysis") as mirror:      # push, then bring home
        ...  # give mirror.container_id to the code interpreter tool

``sync`` and ``Mirror`` (and ``async_sync``, ``AsyncMirror``) run the same engine
as the ``cntr-sync`` command; ``ControlClient`` drives a running daemon (flush,
pause, resume, events, pairs) through its control socket. Errors are the
classes below, all subclasses of ``CntrSyncError``. The library never prints
and never configures logging: it logs under the ``cntr_sync`` logger, which has
a ``NullHandler``.

``import cntr_sync`` is cheap: the error classes and ``__version__`` load at once;
``sync``, ``Mirror``, ``Settings`` and the result types (which bring in pydantic,
httpx and the engine) load on first use, so the command line does not pay for
them in ``--version``.
"""

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

from cntr_sync._version import __version__
from cntr_sync.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    CntrSyncError,
    ConfigError,
    ContainerExpiredError,
    IncompleteSyncError,
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

if TYPE_CHECKING:
    from cntr_sync.backups import KeptVersion
    from cntr_sync.config import Settings
    from cntr_sync.control_client import ControlClient, PairFlush
    from cntr_sync.library import AsyncMirror, Mirror, async_sync, kept_versions, restore, sync
    from cntr_sync.result import (
        ActionFailure,
        ConflictCopy,
        PlannedAction,
        SyncResult,
        TransferEvent,
    )

logging.getLogger("cntr_sync").addHandler(logging.NullHandler())

# Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY = {
    "Settings": "cntr_sync.config",
    "ControlClient": "cntr_sync.control_client",
    "PairFlush": "cntr_sync.control_client",
    "AsyncMirror": "cntr_sync.library",
    "Mirror": "cntr_sync.library",
    "async_sync": "cntr_sync.library",
    "sync": "cntr_sync.library",
    "kept_versions": "cntr_sync.library",
    "restore": "cntr_sync.library",
    "KeptVersion": "cntr_sync.backups",
    "ActionFailure": "cntr_sync.result",
    "ConflictCopy": "cntr_sync.result",
    "PlannedAction": "cntr_sync.result",
    "SyncResult": "cntr_sync.result",
    "TransferEvent": "cntr_sync.result",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cntr_sync' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "ActionFailure",
    "ApiError",
    "AsyncMirror",
    "AuthenticationError",
    "BadRequestError",
    "CntrSyncError",
    "ConfigError",
    "ConflictCopy",
    "ContainerExpiredError",
    "ControlClient",
    "IncompleteSyncError",
    "KeptVersion",
    "LocalError",
    "LockedError",
    "Mirror",
    "NotFoundError",
    "OutcomeUnknownError",
    "PairFlush",
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
    "kept_versions",
    "restore",
    "sync",
]
