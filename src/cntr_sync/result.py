"""What one pass did: ``PassResult``, filled in by the engine as actions finish.

Owns the counts, failures, warnings and deferrals of a pass, and what makes a
pass "in sync". The CLI prints it, the daemon reports it, the library returns
it. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cntr_sync.actions import Plan


@dataclass(frozen=True)
class ActionFailure:
    """One action that failed after retries; the next pass tries again."""

    action: str
    target: str
    message: str


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

    @property
    def in_sync(self) -> bool:
        return not self.failures and not self.deferred and not self.cancelled

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


__all__ = ["ActionFailure", "PassResult"]
