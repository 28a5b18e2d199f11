"""A poll's quick listing: the container newest first, only as far as what is new.

Owns ``read_news``: it pages through ``ContainersClient.iter_files(order="desc")``
while ``quick_listing.HeadReader`` says to go on (one request when nothing is
new), checks the page where it stopped against the index (an indexed file that
should be there and is not is a deletion, which only a full listing handles),
and says what the engine's pass must cover: the new files and the relpaths
they land at. ``None`` means a full listing must run, with the reason logged.

Must not: plan, write anything, or decide when a poll may be quick (the engine
does: the index trusted, within ``full_listing_interval`` of the last full
listing). It reads the index only through ``Index.read`` (two questions about
the entries' remote ids), as ``journal`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple

from cntr_sync.api import ContainersClient
from cntr_sync.errors import ContainerExpiredError, NotFoundError
from cntr_sync.index import Index
from cntr_sync.logs import get_logger
from cntr_sync.models import RemoteFile
from cntr_sync.names import to_remote_file
from cntr_sync.plan_inputs import Policy
from cntr_sync.quick_listing import HeadReader, Mark
from cntr_sync.remote_paths import local_relpath
from cntr_sync.rest import PAGE_LIMIT

log = get_logger("cntr_sync.remote_poll")


class QuickPoll(NamedTuple):
    """What a poll's quick listing found: the new files, the relpaths a pass must
    cover (the changed paths given, and where the new files land), and the mark
    the listing leaves."""

    news: list[RemoteFile]
    paths: set[str]
    head: Mark


def read_news(
    client: ContainersClient,
    index: Index,
    container_id: str,
    mark: Mark,
    *,
    paths: Collection[str] | None,
    push: bool,
    policy: Callable[[], Policy],
    tick: Callable[[], None],
) -> QuickPoll | None:
    """The files created since ``mark``, or None when only a full listing will do
    (any doubt; in a push pair, any new file: the full pass decides about strangers)."""
    reader = HeadReader(mark, lambda remote_id: _knows(index, remote_id), PAGE_LIMIT)
    try:
        for item in client.iter_files(container_id, order="desc"):
            tick()
            if item.problems:  # a full listing warns about it and plans around it
                reader.doubt = f"a listed file has unusable fields ({item.id})"
                break
            file = to_remote_file(item.id, item.path, item.bytes, item.source, item.created_at)
            if not reader.add(file):
                break
        else:
            reader.end()
    except (ContainerExpiredError, NotFoundError):
        reader.doubt = "the container did not answer"  # the full pass finds out why
    span = reader.expected_range() if reader.doubt is None else None
    if span is not None:
        reader.doubt = reader.expected_gone(_created_between(index, *span))
    covered = set(paths or ())
    if reader.doubt is None and reader.news:
        if push:
            reader.doubt = "new files in the container of a push pair"
        else:
            targets = _landing_paths(index, reader.news, policy())
            if targets is None:
                reader.doubt = "a new file lands on a tracked path"
            covered |= targets or set()
    if reader.doubt is not None:
        log.info("listing the whole container", container_id=container_id, why=reader.doubt)
        return None
    return QuickPoll(reader.news, covered, reader.head)


def _knows(index: Index, remote_id: str) -> bool:
    """Whether an entry of the current container mirrors ``remote_id``."""
    return bool(
        index.read(
            "SELECT 1 FROM entries WHERE remote_id = ? AND container_id ="
            " (SELECT container_id FROM meta WHERE id = 1) LIMIT 1",
            (remote_id,),
        )
    )


def _created_between(index: Index, after: int, until: int) -> list[str]:
    """The remote ids of the current container's entries created after ``after`` and
    at most ``until``: what the page read must show, unless the files are gone."""
    rows = index.read(
        "SELECT remote_id FROM entries WHERE remote_created_at > ?"
        " AND remote_created_at <= ? AND container_id ="
        " (SELECT container_id FROM meta WHERE id = 1)",
        (after, until),
    )
    return [row[0] for row in rows]


def _landing_paths(index: Index, news: Sequence[RemoteFile], policy: Policy) -> set[str] | None:
    """Where new remote files would land (both readings of a path), or None when one
    lands on a tracked relpath (a rewrite or a second file: only a full listing tells)
    or the root compares names loosely (a name taken in another case or form is only
    seen by a full scan)."""
    if policy.traits.case_insensitive or policy.traits.normalization_insensitive:
        return None
    targets = set()
    for file in news:
        for source in {file.source, "user"}:
            mapped = local_relpath(file.path, source, policy.path_rules)
            if isinstance(mapped, str):
                targets.add(mapped)
    tracked = index.entries_under(targets) if targets else {}
    if any(target in tracked for target in targets):
        return None
    return targets


__all__ = ["QuickPoll", "read_news"]
