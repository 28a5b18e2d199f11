"""What one pass did and does: ``PassResult``, ``SyncResult``, ``TransferEvent``.

Owns the counts, failures, warnings and deferrals of a pass, the conflict
copies it made, what makes a pass "in sync", the list of planned actions a dry
run shows, and the events a pass reports as each transfer finishes
(``Progress``). The engine fills a mutable
``PassResult``; the library and the CLI's ``--json`` give out the frozen
``SyncResult`` made from it. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

from cntr_sync.actions import Download, Plan
from cntr_sync.backups import KeptVersion

TransferKind = Literal["uploaded", "replaced", "deleted", "downloaded", "deleted locally"]


@dataclass(frozen=True)
class TransferEvent:
    """One finished transfer: what happened to which path, and how many bytes moved."""

    action: TransferKind
    path: str
    bytes: int = 0


class Progress(Protocol):
    """Where a pass reports transfers as they happen (a progress bar, ``-v`` lines, a callback)."""

    def start(self, files: int, total_bytes: int) -> None: ...

    def advance(self, event: TransferEvent) -> None: ...


class NoProgress:
    """The ``Progress`` of a pass nobody watches."""

    def start(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, event: TransferEvent) -> None:
        pass


@dataclass(frozen=True)
class ActionFailure:
    """One action that failed after retries; the next pass tries again."""

    action: str
    target: str
    message: str


ConflictSide = Literal["container", "local"]


@dataclass(frozen=True)
class ConflictCopy:
    """A conflict a pass resolved by keeping one version under another name.

    ``path``: the file both sides changed; ``copy``: the name the other version
    was saved under, beside it; ``holds``: whose version the copy is (the
    container's, with ``keep-both``; the local one, moved aside by ``remote-wins``).
    """

    path: str
    copy: str
    holds: ConflictSide

    @classmethod
    def made_by(cls, download: Download) -> ConflictCopy | None:
        """The copy a finished ``download`` made, if it made one: a ``conflict-copy``
        (the container's version under a new name) or a ``remote-wins`` download (the
        local version moved aside first)."""
        if download.move_aside_to is not None:
            return cls(download.relpath, download.move_aside_to, "local")
        if download.copy_of is not None:
            return cls(download.copy_of, download.relpath, "container")
        return None


@dataclass
class PassResult:
    container_id: str | None = None
    container_created: bool = False
    container_recreated: bool = False
    uploaded: int = 0
    replaced: int = 0
    deleted: int = 0
    adopted: int = 0
    downloaded: int = 0
    local_deleted: int = 0
    conflicts: int = 0
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0
    unknown_kept: int = 0
    local_files: int = 0
    failures: list[ActionFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    requests: int = 0
    requests_by_operation: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False
    cancelled: bool = False
    plan: Plan | None = None
    # False for an incremental pass: it scanned the changed paths and trusted the
    # index for the container (no listing), so the remote side was not looked at.
    listed: bool = True
    # Local files this pass replaced or deleted because of the container, as kept.
    backups: list[KeptVersion] = field(default_factory=list)
    # Conflicts whose other version this pass saved under a new name.
    conflict_copies: list[ConflictCopy] = field(default_factory=list)
    # The pass's id in the journal (a pass that carried nothing out has none).
    pass_id: str | None = None
    # Conflict copies this tool made that are still in the tree (a full pass's count:
    # one the user deleted or renamed is gone from it), oldest passes' too.
    open_conflicts: list[ConflictCopy] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        """Whether both sides agree once this pass is over: nothing left undone.

        False when an action failed, a file was deferred (it changed during the
        pass) or the pass was cut short; and for a dry run, which carries nothing
        out, also when it planned any action (``has_planned_actions``). A real pass
        that carried out all it planned is in sync.
        """
        if self.left_work_undone:
            return False
        return not (self.dry_run and self.has_planned_actions)

    @property
    def left_work_undone(self) -> bool:
        """Whether an action failed, a file was deferred (it changed during the pass)
        or the pass was cut short: what the next pass must finish. A real pass is in
        sync exactly when this is False; a dry run's planned actions do not count."""
        return bool(self.failures or self.deferred or self.cancelled)

    @property
    def has_planned_actions(self) -> bool:
        """Whether the plan moves or adopts any file: an upload, a replace, a delete,
        an adoption, a download, a comparison (or a search for a lost upload), a
        local deletion. Index bookkeeping alone (a touched file's new stat, a
        forgotten entry) is not an action; nor is creating an empty container."""
        plan = self.plan
        return plan is not None and bool(plan.transfers or plan.adopts)

    @property
    def changed_anything(self) -> bool:
        """Whether this pass moved any file, on either side."""
        return bool(
            self.uploaded
            + self.replaced
            + self.deleted
            + self.adopted
            + self.downloaded
            + self.local_deleted
        )


PlannedKind = Literal["upload", "replace", "delete", "adopt", "download", "compare", "delete-local"]


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One action a pass planned: its kind, the local path (or remote path), size, reason.

    Slotted: a pass that uploads 100,000 files makes 100,000 of them for its result
    (56 B each, not ~100 B with a ``__dict__``), and its strings are the plan's own.
    """

    action: PlannedKind
    path: str
    bytes: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        """JSON-able data: ``asdict(self)``, made directly (no deep copy of its values)."""
        return {
            "action": self.action,
            "path": self.path,
            "bytes": self.bytes,
            "reason": self.reason,
        }


def planned_actions(plan: Plan) -> tuple[PlannedAction, ...]:
    """Every action of ``plan``, in the order a pass runs them (local side first)."""
    return tuple(iter_planned(plan))


def iter_planned(plan: Plan) -> Iterator[PlannedAction]:
    """``planned_actions`` one at a time, for a caller that only counts them."""
    for download in plan.downloads:
        reason: str = download.reason
        if download.move_aside_to:
            reason = f"{reason}; the local version is kept as {download.move_aside_to}"
        yield PlannedAction("download", download.relpath, download.remote.size, reason)
    for compare in plan.compares:
        yield PlannedAction(
            "compare", compare.relpath, compare.remote.size, "same name, no history"
        )
    for removal in plan.local_deletes:
        yield PlannedAction(
            "delete-local", removal.relpath, removal.expect.size, "deleted remotely"
        )
    for upload in plan.uploads:
        kind: PlannedKind = "replace" if upload.replaces else "upload"
        yield PlannedAction(kind, upload.relpath, upload.size, upload.reason)
    for delete in plan.deletes:
        yield PlannedAction("delete", delete.relpath or delete.path, None, delete.reason)
    for adopt in plan.adopts:
        yield PlannedAction("adopt", adopt.entry.relpath, adopt.entry.size, adopt.reason)


@dataclass(frozen=True)
class SyncResult:
    """What one sync pass did (or, for a dry run, would do); returned by ``cntr_sync.sync``.

    ``in_sync`` is True when nothing was planned and nothing was left undone:
    after a real pass, when no action failed, no file was deferred and the pass
    was not cut short; after a dry run, also only when it planned no action
    (see ``PassResult.in_sync``). ``local_files`` counts the local files after
    the pass (downloads and local deletions included). ``planned`` lists every
    action the pass planned, with paths; ``conflict_copies`` every conflict
    whose other version was saved under a new name.
    """

    container_id: str | None
    in_sync: bool
    dry_run: bool
    container_created: bool
    container_recreated: bool
    local_files: int
    uploaded: int
    replaced: int
    deleted: int
    adopted: int
    downloaded: int
    local_deleted: int
    conflicts: int
    conflict_copies: tuple[ConflictCopy, ...]
    bytes_uploaded: int
    bytes_downloaded: int
    unknown_kept: int
    requests: int
    requests_by_operation: dict[str, int]
    seconds: float
    planned: tuple[PlannedAction, ...]
    failures: tuple[ActionFailure, ...]
    warnings: tuple[str, ...]
    deferred: tuple[str, ...]
    # The local files this pass replaced or deleted, as kept (``cntr_sync.restore``).
    backups: tuple[KeptVersion, ...] = ()
    # The pass's id in the journal (``cntr-sync log``), if it carried anything out.
    pass_id: str | None = None

    @classmethod
    def from_pass(cls, result: PassResult, *, planned: bool = True) -> SyncResult:
        """What ``result`` says. ``planned=False`` leaves ``planned`` empty, for a caller
        that shows only the counts (the CLI's summary line): a pass that uploaded
        100,000 files would otherwise make 100,000 ``PlannedAction`` for nothing."""
        return cls(
            container_id=result.container_id,
            in_sync=result.in_sync,
            dry_run=result.dry_run,
            container_created=result.container_created,
            container_recreated=result.container_recreated,
            local_files=result.local_files,
            uploaded=result.uploaded,
            replaced=result.replaced,
            deleted=result.deleted,
            adopted=result.adopted,
            downloaded=result.downloaded,
            local_deleted=result.local_deleted,
            conflicts=result.conflicts,
            conflict_copies=tuple(result.conflict_copies),
            bytes_uploaded=result.bytes_uploaded,
            bytes_downloaded=result.bytes_downloaded,
            unknown_kept=result.unknown_kept,
            requests=result.requests,
            requests_by_operation=dict(result.requests_by_operation),
            seconds=result.seconds,
            planned=planned_actions(result.plan) if planned and result.plan is not None else (),
            failures=tuple(result.failures),
            warnings=tuple(result.warnings),
            deferred=tuple(result.deferred),
            backups=tuple(result.backups),
            pass_id=result.pass_id,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-able data: ``asdict`` with lists for tuples, made field by field.

        ``asdict`` would copy ``planned`` into a tuple of dicts only for it to be
        replaced by a list of them: at 100,000 planned actions, ~23 MB more at the
        command's peak.
        """
        return self.json_fields([action.to_json() for action in self.planned])

    def json_fields(self, planned: object) -> dict[str, Any]:
        """``to_json`` with ``planned`` as the caller gives it (the CLI's summary puts
        counts there and writes the actions out itself)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["conflict_copies"] = [asdict(copy) for copy in self.conflict_copies]
        data["requests_by_operation"] = dict(self.requests_by_operation)
        data["planned"] = planned
        data["failures"] = [asdict(failure) for failure in self.failures]
        data["warnings"] = list(self.warnings)
        data["deferred"] = list(self.deferred)
        data["backups"] = [version.to_json() for version in self.backups]
        return data


__all__ = [
    "ActionFailure",
    "ConflictCopy",
    "NoProgress",
    "PassResult",
    "PlannedAction",
    "Progress",
    "SyncResult",
    "TransferEvent",
    "iter_planned",
    "planned_actions",
]
