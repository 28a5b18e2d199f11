"""Frozen value types shared by the client, the planner and the engine.

The wire types (``Container``, ``ContainerFile``) are deliberately tolerant:
real servers and gateways add fields, drop fields, send ``bytes: null`` and
hand out ids of any shape, so unknown fields are kept, most fields have a
default, and ids are opaque strings. Nothing here performs I/O.
"""

from __future__ import annotations

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
