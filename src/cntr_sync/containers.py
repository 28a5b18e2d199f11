"""The container of one pair: find it, create it once, replace it, publish its id.

Owns the container lifecycle of a pass and the one lookup rule every command
uses (``find_container``: by id, else the newest running container with that
name; a spec not shaped like an id is looked up by name first, so finding a
container by its name costs no 404): resolving the pair's container (the
indexed id, else found, else a new one, never when the pair says ``create =
false``, and announced at the default level: ``new container "NAME"
created``); creating without making a duplicate when a create's answer is lost;
confirming a container is really gone before abandoning it (and the index of
it); replacing an expired one; claiming it in the index; and publishing its
id to the pair's id file, atomically.

Must not: touch files in the container or the sync root, decide what to sync
(``plan`` does), run a pass (``engine`` does), talk HTTP except through
``ContainersClient``, or touch SQLite except through ``Index``.
"""

from __future__ import annotations

import os
import re
from typing import Protocol

from cntr_sync.api import ContainersClient
from cntr_sync.errors import (
    BadRequestError,
    ConfigError,
    LocalError,
    NotFoundError,
    OutcomeUnknownError,
)
from cntr_sync.index import Index
from cntr_sync.logs import get_logger
from cntr_sync.models import Container, Pair
from cntr_sync.remote_paths import printable

log = get_logger("cntr_sync.containers")

# Creates of a container whose answer was lost, each after a listing showed none.
CREATE_ATTEMPTS = 3


class ContainerOutcome(Protocol):
    """Where the lifecycle records what it did (``engine.PassResult`` is one)."""

    container_id: str | None
    container_created: bool
    container_recreated: bool


class ContainerResolver:
    """The container lifecycle of one pair, for one pass at a time."""

    def __init__(self, client: ContainersClient, index: Index, pair: Pair) -> None:
        self.client = client
        self.index = index
        self.pair = pair

    def resolve(self, result: ContainerOutcome, *, dry_run: bool) -> Container | None:
        """The container of this pair: the indexed one, else found by id or name, else new.

        A dry run creates nothing and records nothing; it returns None when a
        real pass would create the container.
        """
        known = self.index.container_id
        if known is not None:
            container = Container(id=known, name=self.index.container_name or self.pair.container)
        else:
            found = find_container(self.client, self.pair.container)
            if found is None:
                if looks_like_an_id(self.pair.container):
                    # A typo'd or deleted id must not become a container named like it.
                    raise ConfigError(
                        f"no container with id {self.pair.container!r}; "
                        "a value shaped like an id is never used as a name"
                    )
                if dry_run:
                    self.refuse_to_create(self._name_for_new())
                    return None
                found = self._create(self._name_for_new())
                result.container_created = True
            container = found
            if not dry_run:
                self.index.set_container(container.id, container.name or self.pair.container)
        result.container_id = container.id
        if not dry_run:
            self.index.claim_container(self.client.base_url, container.id)
            self._publish_id(container.id)
        return container

    def confirmed_gone(self, container_id: str) -> bool:
        """Before abandoning a container (and the index of it), make sure it is gone.

        A gateway's 404 or an odd 400 must not cost the model its files.
        """
        try:
            return not self.client.retrieve_container(container_id).is_running
        except NotFoundError:
            return True

    def replace(self, result: ContainerOutcome, gone: Container) -> Container:
        """The container expired or vanished: its files are gone. Use or make another."""
        name = gone.name or self._name_for_new()
        log.warning("container expired or gone; replacing it", container_id=gone.id)
        replacement = newest_running(self.client, name, exclude=gone.id)
        if replacement is None:
            replacement = self._create(name)
            result.container_created = True
        result.container_recreated = True
        self.index.set_container(replacement.id, name)
        self.index.claim_container(self.client.base_url, replacement.id)
        result.container_id = replacement.id
        self._publish_id(replacement.id)
        return replacement

    def _name_for_new(self) -> str:
        return self.index.container_name or self.pair.container

    def _create(self, name: str) -> Container:
        self.refuse_to_create(name)
        log.info("creating container", name=name)
        made = self._create_once(name)
        log.notice(f'new container "{printable(name)}" created', container_id=made.id)
        return made

    def refuse_to_create(self, name: str) -> None:
        """ConfigError when the pair says ``create = false``: a dry run asks too."""
        if not self.pair.create:
            raise ConfigError(
                f"no container named {name!r}, and create = false (--no-create) "
                "lets no pass create one"
            )

    def _create_once(self, name: str) -> Container:
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                return self.client.create_container(
                    name,
                    expires_after_minutes=self.pair.expires_after_minutes,
                    memory_limit=self.pair.memory_limit,
                )
            except OutcomeUnknownError:
                # The server may have made it: use that one rather than a second;
                # only when the listing shows none is another create safe.
                made = newest_running(self.client, name)
                if made is not None:
                    return made
                if attempt == CREATE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _publish_id(self, container_id: str) -> None:
        target = self.pair.container_id_file
        if target is None:
            return
        try:
            if target.exists() and target.read_text(encoding="utf-8").strip() == container_id:
                return
            tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
            tmp.write_text(container_id + "\n", encoding="utf-8")
            tmp.replace(target)
        except OSError as exc:
            raise LocalError(
                f"cannot write container id file {target}: {exc.strerror}", path=str(target)
            ) from exc


_ID_SHAPE = re.compile(r"^cntr_[0-9A-Za-z]{16,}$")


def looks_like_an_id(spec: str) -> bool:
    """Whether ``spec`` has the shape of an OpenAI container id (``cntr_`` and 16+ characters)."""
    return bool(_ID_SHAPE.fullmatch(spec))


def find_container(client: ContainersClient, spec: str) -> Container | None:
    """The running container ``spec`` names: by id, else the newest running one by name.

    A container found by id that is no longer running stands for its name: the
    newest running container with that name is used instead (it replaced the
    expired one), else None.

    A spec shaped like an OpenAI id is retrieved first; any other is looked up by
    name first (one listing, and no 404 counted against the server for asking
    by id), then, when no container has that name, retrieved by id after all:
    a gateway's ids may have another shape.
    """
    by_name_first = not looks_like_an_id(spec)
    if by_name_first and (named := newest_running(client, spec)) is not None:
        return named
    try:
        found: Container | None = client.retrieve_container(spec)
    except (NotFoundError, BadRequestError):
        found = None
    if found is None:
        return None if by_name_first else newest_running(client, spec)
    if found.is_running:
        return found
    return newest_running(client, found.name) if found.name else None


def newest_running(
    client: ContainersClient, name: str, *, exclude: str | None = None
) -> Container | None:
    """The newest running container called ``name`` (other than ``exclude``), if any."""
    newest: Container | None = None
    for candidate in client.iter_containers(name=name):
        if not candidate.is_running or candidate.id == exclude:
            continue
        if newest is None or (candidate.created_at or 0) > (newest.created_at or 0):
            newest = candidate
    return newest


__all__ = [
    "CREATE_ATTEMPTS",
    "ContainerOutcome",
    "ContainerResolver",
    "find_container",
    "newest_running",
]
