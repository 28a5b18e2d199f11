"""PURE: the brakes: whether a plan looks like a disaster rather than an edit.

``check_brakes`` refuses a pass that would delete from an empty root, or more
than ``max_delete`` (a count, or a share of the tracked and unknown files); a
refusal names the files it would delete. ``--force`` lets a plan through.

Must not: import anything that performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from cntr_sync.actions import Plan
from cntr_sync.plan_inputs import Policy
from cntr_sync.remote_paths import printable

# Below this many deletions the percentage brake does not apply: deleting one
# of two tracked files is an edit, not a disaster.
BRAKE_MIN_DELETES = 3


@dataclass(frozen=True)
class Brake:
    """Why a plan was refused, in one line, and every file it would have deleted."""

    reason: str
    would_delete: tuple[str, ...] = ()


# Files a brake's one-line reason names (``Brake.would_delete`` has them all).
BRAKE_NAMED = 20


def check_brakes(
    plan_: Plan, *, local_count: int, policy: Policy, force: bool = False
) -> Brake | None:
    """Refuse plans that look like a disaster rather than an edit, unless forced.

    Both removals of tracked files and deletions of unknown files (with
    ``delete_unknown``) count: an unmounted root must not empty the container
    either way. The reason names the first ``BRAKE_NAMED`` files (sorted) it
    would delete.
    """
    if force:
        return None
    destructive = plan_.destructive
    if local_count == 0 and destructive:
        return _brake(
            f"the sync root is empty but this pass would delete {destructive} remote files; "
            "refusing (use --force if this is intended)",
            plan_,
        )
    base = plan_.tracked + plan_.unknown_total
    limit = policy.max_delete
    if limit.count is not None:
        if destructive > limit.count:
            return _brake(
                f"this pass would delete {destructive} files (> max_delete {limit.count}); "
                "use --force if this is intended",
                plan_,
            )
        return None
    if base and destructive >= BRAKE_MIN_DELETES and limit.percent is not None:
        percent = 100.0 * destructive / base
        if percent > limit.percent:
            return _brake(
                f"this pass would delete {destructive} of {base} files "
                f"({percent:.0f}% > max_delete {limit}); use --force if this is intended",
                plan_,
            )
    return None


def _brake(reason: str, plan_: Plan) -> Brake:
    """``reason`` and the files ``plan_`` would delete (what ``Plan.destructive``
    counts; a move's old name among them), the first of them named."""
    remote = (d.relpath or d.path for d in plan_.deletes if d.reason in ("removed", "unknown"))
    local = (removal.relpath for removal in plan_.local_deletes)
    paths = tuple(sorted({*remote, *local}))
    named = ", ".join(printable(path) for path in paths[:BRAKE_NAMED])
    if len(paths) > BRAKE_NAMED:
        named += f" and {len(paths) - BRAKE_NAMED} more"
    return Brake(f"{reason}; it would delete {named}" if paths else reason, paths)
