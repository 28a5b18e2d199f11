"""PURE: the uploads a pass may own by name, for when the index does not name them.

After a lost index (or an upload whose answer was lost) the listing holds uploads
of ours that no entry names. This module owns how the planner finds them:
``unindexed_uploads_by_name`` (every unaccounted user upload by each canonical name
it may carry, as an ``UploadsByName``), ``shared_names`` (the relpaths whose names
cannot tell their uploads apart), and ``verify_unmatched_uploads`` (new uploads
whose content an unaccounted upload of another name may hold: compared by content
instead of uploaded again). ``plan`` decides what to do with what these find.

Must not: import anything that performs I/O, read the clock, or depend on
iteration order of its inputs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from typing import Literal

from cntr_sync.actions import AccountedIds, PlanBuilder, Upload, Verify
from cntr_sync.models import LocalFile, RemoteFile, UploadIntent
from cntr_sync.names import MOUNT_PREFIX, basename, canonical, remote_names, upload_name
from cntr_sync.plan_inputs import Policy, RemoteFiles


def shared_names(relpaths: Sequence[str]) -> set[str]:
    """The canonical upload names that more than one of ``relpaths`` (each once) has.

    Two different upload names compare equal only if one of them is not its own
    canonical form (an escape, a non-NFC character): only those names are counted,
    so a tree of plain names holds no set of every name (~6 MiB at 100,000 files,
    at the peak of a lost index's planning).
    """
    odd = Counter(
        name
        for relpath in relpaths
        if (name := canonical(upload_name(relpath))) != upload_name(relpath)
    )
    if not odd:
        return set()
    shared = {name for name, count in odd.items() if count > 1}
    # A plain name that an odd one folds into.
    shared.update(
        name
        for relpath in relpaths
        if (name := upload_name(relpath)) in odd and canonical(name) == name
    )
    return shared


def unaccounted(remote: RemoteFiles, accounted: AccountedIds) -> Iterator[RemoteFile]:
    """The listed files whose id is not in ``accounted`` (as it is when each is reached),
    looked up only for those: most of a listing is accounted for, and a columnar
    listing makes each file it is asked for."""
    return (remote[file_id] for file_id in accounted.unaccounted(remote))


def unindexed_uploads_by_name(
    remote: RemoteFiles,
    candidates: Iterable[RemoteFile],
    excluded: Container[str],
    policy: Policy,
    prefix: bool | None,
    local: Mapping[str, LocalFile],
) -> UploadsByName:
    """User uploads nobody accounts for yet (of ``candidates``), by every canonical
    name they may carry.

    Each name keeps its best candidates only: a file whose whole name is the
    relpath outranks one that matches only once a hash prefix is stripped
    (``a3f1...-README.md`` beside ``README.md`` on a server that adds none).
    """
    by_name = UploadsByName(remote, local)
    if policy.server_keeps_names is False:
        return by_name
    for item in candidates:
        if item.source != "user" or item.id in excluded:
            continue
        whole = item.path.removeprefix(MOUNT_PREFIX)
        for name in remote_names(item.path, prefix):
            by_name.add(canonical(name), 0 if name == whole else 1, item.id)
    return by_name


class UploadsByName:
    """Remote ids by canonical upload name, the best-ranked candidates of each name.

    After a lost index every listed upload is a candidate: at 100,000 files a dict
    of names to lists of ``RemoteFile`` values was ~45 MB at the pass's peak. Here
    a name holds its id (the listing's own string) or, for a name several uploads
    carry, a tuple of them (a tuple a name was ~6 MiB more at 100,000 files); the
    name itself is the local relpath's string where one is equal, and the
    ``RemoteFile`` values are made when a relpath asks for its name.
    """

    __slots__ = ("_local", "_ranks", "_remote", "_table_sizes")

    def __init__(self, remote: RemoteFiles, local: Mapping[str, LocalFile]) -> None:
        self._remote = remote
        self._local = local
        # By rank: ids by the whole name, then by the name a hash prefix hid.
        self._ranks: list[dict[str, str | tuple[str, ...]]] = [{}, {}]
        # The most names each rank's dict held: a dict's table does not shrink as
        # names are taken (``take``), so a rank is copied when a quarter is left.
        self._table_sizes = [0, 0]

    def add(self, name: str, rank: Literal[0, 1], file_id: str) -> None:
        ids = self._ranks[rank]
        held = ids.get(name)
        if held is not None:
            ids[name] = (*held, file_id) if isinstance(held, tuple) else (held, file_id)
            return
        file = self._local.get(name)
        # Keyed by the scan's own string where the name is a local relpath's.
        ids[file.relpath if file is not None and file.relpath == name else name] = file_id
        self._table_sizes[rank] = max(self._table_sizes[rank], len(ids))

    def get(self, name: str) -> list[RemoteFile]:
        """The best candidates named ``name``, newest first (ids break ties)."""
        held = next((ids[name] for ids in self._ranks if name in ids), ())
        found = [self._remote[file_id] for file_id in ((held,) if isinstance(held, str) else held)]
        # Newest first, so adoption keeps the latest upload.
        found.sort(key=lambda r: (r.created_at or 0, r.id), reverse=True)
        return found

    def take(self, name: str) -> list[RemoteFile]:
        """``get``, and the name let go: a relpath asks for its own name once, and the
        ids held go as the plan's adoptions come."""
        found = self.get(name)
        for rank, ids in enumerate(self._ranks):
            if ids.pop(name, None) is not None and len(ids) < self._table_sizes[rank] // 4:
                # After a lost index every relpath takes its name: the table of
                # 100,000 names (~3.7 MiB) goes as the plan's adoptions grow.
                self._ranks[rank] = dict(ids)
                self._table_sizes[rank] = len(ids)
        return found

    def __bool__(self) -> bool:
        return any(self._ranks)


# Candidates compared at most, per local file, to find a match by content. A
# remote file is downloaded at most once a pass, however many files it is offered to.
MAX_VERIFY_CANDIDATES = 64


def verify_unmatched_uploads(
    local: Mapping[str, LocalFile],
    remote: RemoteFiles,
    intents: Mapping[str, UploadIntent],
    policy: Policy,
    prefix: bool | None,
    *,
    dropped: bool,
    out: PlanBuilder,
    first_upload: int,
) -> None:
    """New uploads that an unaccounted upload may already hold under another name.

    After a lost index, a server that kept only the base name (``x.txt`` for
    ``dir/x.txt``) or no name at all (``file``) leaves nothing to match by
    name: candidates of the same size (and base name, where names are kept)
    are downloaded and compared by content instead of uploading a duplicate.
    Only the push side's uploads (from ``first_upload`` on) are looked at.
    """
    pool = [
        r for r in unaccounted(remote, out.accounted) if r.source == "user" and r.size is not None
    ]
    if not pool:
        return
    kept_uploads: list[Upload] = out.uploads[:first_upload]
    offered: set[str] = set()
    for upload in out.uploads[first_upload:]:
        intent = intents.get(upload.relpath)
        # A new file, or one whose upload's answer was lost (the intent is for
        # this very content): it may be in the container under another name.
        lost_answer = intent is not None and intent.hash == upload.hash
        if not (upload.reason == "new" and intent is None) and not lost_answer:
            kept_uploads.append(upload)
            continue
        base = canonical(basename(upload_name(upload.relpath)))
        candidates = [
            r
            for r in pool
            if r.id not in out.accounted
            and r.size == upload.size
            and r.size <= policy.adopt_verify_max_bytes
            and (dropped or base in {canonical(basename(n)) for n in remote_names(r.path, prefix)})
        ]
        if not candidates:
            kept_uploads.append(upload)
            continue
        candidates.sort(key=lambda r: (r.created_at or 0, r.id), reverse=True)
        chosen = tuple(candidates[:MAX_VERIFY_CANDIDATES])
        local_file = local[upload.relpath]
        if upload.size == 0 and upload.replaces is None:
            # Two empty files are the same content: no download needed.
            out.accounted.add(chosen[0].id)
            out.adopts.add(upload.relpath, local_file, chosen[0], "lost-index", policy.now)
            continue
        # Offered, not taken: files of the same size share candidates, and the
        # pass gives each remote file to the first local file it matches.
        offered.update(r.id for r in chosen)
        out.verifies.append(Verify(upload.relpath, local_file, chosen, upload))
    out.accounted.update(offered)
    out.uploads[:] = kept_uploads
