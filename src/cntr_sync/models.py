"""Frozen value types shared by the settings, the client, the planner and the engine.

``Pair`` is the one description of a mirrored pair (a local directory and a
container, with every setting a pass or the daemon needs): the settings layer
builds it, the engine, the daemon's worker, the CLI and the library use it.
Each setting of a pair is declared once, with its type, checks and default, in
``PairSyncSettings`` (inherited from the top level) or ``PairDaemonSettings``
(per pair only); the settings models and ``Pair`` are built from those two.

The wire types (``Container``, ``ContainerFile``) are deliberately tolerant:
real servers and gateways add fields, drop fields, send ``bytes: null`` and
hand out ids of any shape, so unknown fields are kept, most fields have a
default, and ids are opaque strings. Nothing here reads or writes files or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

DEFAULT_BASE_URL = "https://api.openai.com/v1"

AuthStyle = Literal["bearer", "api-key", "x-api-key", "x-bf-vk", "basic"]
AUTH_STYLES: tuple[AuthStyle, ...] = ("bearer", "api-key", "x-api-key", "x-bf-vk", "basic")
Direction = Literal["push", "pull", "both"]
ConflictPolicy = Literal["keep-both", "local-wins", "remote-wins", "newer"]
RemoteDeletePolicy = Literal["restore", "propagate"]
OutsidePrefix = Literal["subdir", "skip"]
Origin = Literal["push", "pull"]
WatchMode = Literal["auto", "native", "poll", "off"]
MemoryLimit = Literal["1g", "4g", "16g", "64g"]


@dataclass(frozen=True, slots=True)
class DeleteLimit:
    """How much one pass may delete: a percentage of tracked files, or a count of files.

    Written as ``"50%"`` (a percentage) or ``10`` (a count), as rclone users expect.
    """

    percent: float | None = None
    count: int | None = None

    @classmethod
    def parse(cls, value: object) -> DeleteLimit:
        """``"10%"`` -> 10 percent; ``10`` or ``"10"`` -> 10 files; ValueError otherwise."""
        if isinstance(value, DeleteLimit):
            return value
        if isinstance(value, bool):
            raise ValueError("write a percentage such as '50%' or a count of files such as 10")
        if isinstance(value, int):
            count = value
        elif isinstance(value, str) and value.strip().endswith("%"):
            percent = float(value.strip()[:-1])
            if not 0 <= percent <= 100:
                raise ValueError("a percentage must be between 0% and 100%")
            return cls(percent=percent)
        elif isinstance(value, str) and value.strip().isdigit():
            count = int(value.strip())
        else:
            raise ValueError("write a percentage such as '50%' or a count of files such as 10")
        if count < 0:
            raise ValueError("a count of files must be 0 or more")
        return cls(count=count)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


# -- the checked types of settings ------------------------------------------------------


def _path_not_empty(value: object) -> object:
    # Path("") silently becomes ".", which would point a sync at the working directory.
    if isinstance(value, str) and not value.strip():
        raise PydanticCustomError("path_empty", "must not be empty")
    return value


def _expand_user(value: object) -> object:
    if not isinstance(value, str | Path):
        return value
    try:
        return Path(value).expanduser()
    except RuntimeError:  # "~someone" with no such user, or no home directory
        raise PydanticCustomError("path_home", "'~' names no known home directory") from None


def _remote_prefix(value: object) -> object:
    if isinstance(value, str) and not value.startswith("/"):
        raise PydanticCustomError("prefix", "a remote prefix must start with '/'")
    return value


def _subdirectory(value: object) -> object:
    # Imported when a setting is checked: the client alone imports this module for
    # the wire types, and remote_paths would add about 14 M instructions to that.
    from cntr_sync.remote_paths import relpath_problem  # noqa: PLC0415

    if isinstance(value, str):
        if relpath_problem(value.strip("/")) is not None:
            raise PydanticCustomError(
                "subdirectory", "must be a relative directory inside the root"
            )
        return value.strip("/")
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise PydanticCustomError("http_url", "must be an http:// or https:// URL")
    return value


def _some_prefix(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise PydanticCustomError("prefixes", "name at least one remote prefix")
    return value


def _delete_limit(value: object) -> DeleteLimit:
    try:
        return DeleteLimit.parse(value)
    except ValueError as exc:
        raise PydanticCustomError("max_delete", str(exc)) from None


ConfigPath = Annotated[Path, BeforeValidator(_expand_user), BeforeValidator(_path_not_empty)]
Seconds = Annotated[float, Field(gt=0)]
ExpiryMinutes = Annotated[int, Field(ge=1, le=10080)]
NonEmpty = Annotated[str, Field(min_length=1)]
MaxDelete = Annotated[
    DeleteLimit, BeforeValidator(_delete_limit), PlainSerializer(str, return_type=str)
]
RemotePrefixes = Annotated[
    tuple[Annotated[str, BeforeValidator(_remote_prefix)], ...], AfterValidator(_some_prefix)
]
Subdirectory = Annotated[str, BeforeValidator(_subdirectory)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]

# -- a pair's settings, declared once ---------------------------------------------------
#
# Each setting of a pair is one field of one of the two models below, with its type,
# its checks and the product's default. The other descriptions of a pair are built
# from them by inheritance: ``config.Settings`` (the top-level values) takes
# PairSyncSettings; ``config.PairSettings`` (one [[pairs]] table) and ``Pair`` (the
# resolved value) take both. A new setting is one field here, plus its flag in
# ``cli_flags`` (kept free of pydantic for the CLI's start-up; a test checks that
# every setting has a flag or a reason not to).

# defer_build: the validators are built on first use, so a process that imports this
# module for the wire types only (the client alone) does not build the settings' too.
_SETTINGS_CONFIG = ConfigDict(
    extra="forbid", frozen=True, hide_input_in_errors=True, defer_build=True
)


class PairSyncSettings(BaseModel):
    """What a pass does with a pair: set at the top level, and inherited by every
    ``[[pairs]]`` table that does not set them itself."""

    model_config = _SETTINGS_CONFIG

    direction: Direction = "push"
    # Pull and both: which version wins when both sides changed, and what a remote
    # deletion of a synced file does locally.
    conflict: ConflictPolicy = "keep-both"
    remote_delete: RemoteDeletePolicy = "restore"
    # Pull and both: remote paths under these prefixes map to the root; others go
    # under outside_subdir ("subdir") or are left alone ("skip").
    remote_prefixes: RemotePrefixes = ("/mnt/data/",)
    outside_prefix: OutsidePrefix = "subdir"
    outside_subdir: Subdirectory = "_container"
    delete: bool = True
    delete_unknown: bool = False
    # Delete our remote copies of paths the ignore rules exclude (rclone's flag);
    # otherwise an excluded path is left alone on both sides.
    delete_excluded: bool = False
    # After a lost index: the largest remote file downloaded to check by content
    # whether it already holds a local file (a server that drops names or dirs).
    adopt_verify_max_bytes: Annotated[int, Field(ge=0)] = 256 * 1024 * 1024
    max_delete: MaxDelete = DeleteLimit(percent=50.0)
    follow_symlinks: bool = False
    # False: a pass whose container cannot be found stops (exit 2) instead of creating
    # one, so a mistyped name never becomes a new container that gets every file.
    create: bool = True
    expires_after_minutes: ExpiryMinutes = 20
    memory_limit: MemoryLimit | None = None
    container_id_file: ConfigPath | None = None
    # Where local files a pass replaced or deleted because of the container are kept
    # (None: STATE_DIR/<pair>.backups), and for how long / up to how many bytes.
    backup_dir: ConfigPath | None = None
    backup_keep_days: Annotated[float, Field(ge=0)] = 30.0
    backup_max_bytes: Annotated[int, Field(ge=0)] = 1 << 30
    # How long the journal of every action keeps its rows.
    journal_keep_days: Annotated[float, Field(ge=0)] = 30.0
    # Pull and both: tracked files whose content each full listing checks, in rotation
    # (a same-size rewrite in place shows in no listing); 0: none.
    verify_per_listing: Annotated[int, Field(ge=0, le=10_000)] = 5


class PairDaemonSettings(BaseModel):
    """When the daemon runs a pair's passes: set per ``[[pairs]]`` table only."""

    model_config = _SETTINGS_CONFIG

    quiet_period: Seconds = 1.0  # seconds without changes before the daemon starts a pass
    max_delay: Seconds = 10.0  # ...or this long after the first pending change
    rescan_interval: Seconds = 600.0
    remote_poll_interval: Seconds = 60.0
    # A poll lists only the newest files; every this often (and after any doubt) it
    # lists the whole container, which alone shows deletions and in-place rewrites.
    full_listing_interval: Seconds = 600.0
    watch: WatchMode = "auto"
    keepalive: bool = False
    # Called after a pass that changed something, with the pass summary as JSON on
    # stdin / as the POST body (hooks.py); off the pass's thread, one at a time.
    exec_hook: tuple[NonEmpty, ...] = ()  # argv, run without a shell
    webhook_url: HttpUrl | None = None
    hook_timeout: Seconds = 30.0

    @field_validator("max_delay")
    @classmethod
    def _max_delay_covers_quiet_period(cls, value: float, info: ValidationInfo) -> float:
        quiet_period = info.data.get("quiet_period")
        if quiet_period is not None and value < quiet_period:
            raise PydanticCustomError(
                "max_delay_too_short",
                "must be at least quiet_period ({quiet_period})",
                {"quiet_period": quiet_period},
            )
        return value


class Pair(PairDaemonSettings, PairSyncSettings):
    """One local directory mirrored into one container, every inherited value filled in.

    Frozen and hashable. ``config.Settings.pair`` builds it from the settings; a
    test builds one directly and changes it with ``model_copy(update=...)``.
    (pydantic lists the fields of the last base first: sync, then daemon.)
    """

    name: str
    local: Path
    container: str  # a name or an id, as the user gave it
    # The top-level patterns, then the pair's own.
    ignore: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The pair as JSON-able data (paths as strings, tuples as lists), its identity first."""
        out: dict[str, Any] = {"name": self.name, "local": str(self.local)}
        out["container"] = self.container
        for name in type(self).model_fields:
            if name in out:
                continue
            value = getattr(self, name)
            if isinstance(value, Path | DeleteLimit):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


#: Every pair setting's default but the pair's identity (name, local, container).
PAIR_DEFAULTS: dict[str, Any] = {
    name: field.get_default(call_default_factory=True)
    for model in (PairSyncSettings, PairDaemonSettings)
    for name, field in model.model_fields.items()
} | {"ignore": ()}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class ExpiresAfter(_Wire):
    anchor: str = "last_active_at"
    minutes: int | None = None


class Container(_Wire):
    """A container as the API describes it. ``status`` other than running is unusable."""

    id: str = Field(min_length=1)
    object: str = "container"
    name: str = ""
    created_at: int | None = None
    status: str = "running"
    expires_after: ExpiresAfter | None = None
    last_active_at: int | None = None
    memory_limit: str | None = None

    @property
    def is_running(self) -> bool:
        return self.status == "running"


# The largest values a listing's numbers may have and still mean something: a size
# SQLite's INTEGER holds, a time before 2106 (a file time in nanoseconds fits 64 bits).
MAX_FILE_BYTES = 2**63 - 1
MAX_TIMESTAMP = 2**32 - 1


def _whole_number(value: object, most: int) -> int | None:
    """``value`` as a whole number from 0 to ``most``, or None (``bool`` is no number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= most else None


class ContainerFile(_Wire):
    """A file in a container. ``path`` is the server's choice; ``bytes`` may be unknown.

    Every field but ``id`` is hostile input: a number out of range or of the wrong
    type, a path or source that is not a string, becomes unknown (None, "" or
    "unknown") and is noted in ``problems`` for a warning, so one odd file never
    fails a whole listing. An id that is not a non-empty string does fail it.
    """

    id: str = Field(min_length=1)
    object: str = "container.file"
    created_at: int | None = None
    bytes: int | None = None
    container_id: str | None = None
    path: str = ""
    source: str = "unknown"
    _problems: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _tolerate(
        cls, data: Any, handler: ModelWrapValidatorHandler[ContainerFile]
    ) -> ContainerFile:
        problems: list[str] = []
        if isinstance(data, Mapping):
            data = dict(data)
            for name, most in (("bytes", MAX_FILE_BYTES), ("created_at", MAX_TIMESTAMP)):
                value = data.get(name)
                number = None if value is None else _whole_number(value, most)
                if value is not None and number is None:
                    problems.append(f"{name} is not a number from 0 to {most}")
                data[name] = number
            for name in ("path", "source"):
                if name in data and not isinstance(data[name], str):
                    problems.append(f"{name} is not a string")
                    del data[name]
            for name in ("object", "container_id"):
                if name in data and not isinstance(data[name], str):
                    del data[name]  # nothing reads them: no warning
        model = handler(data)
        model._problems = tuple(problems)
        return model

    @property
    def problems(self) -> tuple[str, ...]:
        """What in this file's answer was garbage and is taken as unknown."""
        return self._problems

    @property
    def is_user_upload(self) -> bool:
        return self.source == "user"


# -- the engine's own values ------------------------------------------------------
# Plain slotted dataclasses: a 100k-file tree holds one of these per file, so they
# stay small, and the planner compares them without touching disk or network.


@dataclass(slots=True, unsafe_hash=True)
class LocalFile:
    """A regular file under the sync root, as one scan saw it.

    ``relpath`` is POSIX-style, relative to the root, valid UTF-8, never empty,
    never absolute, never containing ``.`` or ``..`` segments.

    A value like the others here, but not ``frozen``: a scan makes one per file, and
    a frozen dataclass's ``__init__`` (``object.__setattr__`` per field) costs four
    times as much, most of what a warm scan spends beyond its stat calls. Treat it
    as frozen: nothing assigns to its fields (it stays hashable, by value).
    """

    relpath: str
    size: int
    mtime_ns: int
    inode: int
    hash: str
    ctime_ns: int = 0
    """When the inode last changed: an edit moves it even when the mtime is put back."""


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A file in the container listing, reduced to what planning needs.

    ``name`` is the filename the server kept, derived from ``path`` (the
    ``/mnt/data/`` prefix and any 32-hex upload prefix removed).
    """

    id: str
    path: str
    name: str
    size: int | None
    source: str
    created_at: int | None


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One relpath in sync with one remote file: the common ancestor of both sides.

    ``size``, ``mtime_ns`` and ``hash`` describe the local file as it was when
    the two sides last agreed (``hash`` is their common content); ``remote_size``
    and ``remote_created_at`` the remote file as it was listed then, so a remote
    rewrite in place (same id, other ``bytes``) shows. ``origin`` says which side
    the content came from: ``push`` (this tool uploaded it) or ``pull`` (the
    model or another client wrote it and this tool downloaded it).
    """

    relpath: str
    remote_id: str
    remote_path: str
    size: int
    mtime_ns: int
    hash: str
    synced_at: float
    origin: Origin = "push"
    remote_size: int | None = None
    remote_created_at: int | None = None


@dataclass(frozen=True, slots=True)
class UploadIntent:
    """An upload that was started but whose outcome is not recorded yet.

    Written before the request and removed when the result is indexed, so
    the next listing can tell an ambiguous upload of ours from a stranger's.
    """

    relpath: str
    filename: str
    size: int
    hash: str
    started_at: float


@dataclass(frozen=True, slots=True)
class PendingDelete:
    """A remote file of ours that must still go (the old id of a replaced file).

    Recorded in the index before the delete is attempted, so a crash or a
    failed delete cannot leave it behind as an orphan.
    """

    remote_id: str
    relpath: str


@dataclass(frozen=True, slots=True)
class PullFailure:
    """A remote file whose download failed; not tried again before ``retry_at``."""

    remote_id: str
    relpath: str
    attempts: int
    retry_at: float
    error: str
