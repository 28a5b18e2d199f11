"""Frozen value types shared by the client, the planner and the engine.

The wire types (``Container``, ``ContainerFile``) are deliberately tolerant:
real servers and gateways add fields, drop fields, send ``bytes: null`` and
hand out ids of any shape, so unknown fields are kept, most fields have a
default, and ids are opaque strings. Nothing here performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


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


class ContainerFile(_Wire):
    """A file in a container. ``path`` is the server's choice; ``bytes`` may be unknown."""

    id: str = Field(min_length=1)
    object: str = "container.file"
    created_at: int | None = None
    bytes: int | None = None
    container_id: str | None = None
    path: str = ""
    source: str = "unknown"

    @property
    def is_user_upload(self) -> bool:
        return self.source == "user"


# -- the engine's own values ------------------------------------------------------
# Plain slotted dataclasses: a 100k-file tree holds one of these per file, so they
# stay small, and the planner compares them without touching disk or network.


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A regular file under the sync root, as one scan saw it.

    ``relpath`` is POSIX-style, relative to the root, valid UTF-8, never empty,
    never absolute, never containing ``.`` or ``..`` segments.
    """

    relpath: str
    size: int
    mtime_ns: int
    inode: int
    hash: str


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
    """What this tool uploaded for one relpath, in one container."""

    relpath: str
    remote_id: str
    remote_path: str
    size: int
    mtime_ns: int
    hash: str
    uploaded_at: float


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
class DoomedFile:
    """A remote file of ours that must go (the old id of a replaced file)."""

    remote_id: str
    relpath: str
