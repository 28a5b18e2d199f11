"""A long run of the model-based tests: the push machine and the two-way machine.

CI runs each machine derandomized with a bounded example count (fast, the same
examples every time). This runs them with fresh random examples, as many as asked,
and prints how many examples ran, how long they took, and whether any
failed (the failing steps are printed by Hypothesis; exit 1).

    .venv/bin/python bench/machine_long.py --examples 2000
    .venv/bin/python bench/machine_long.py --machine push --examples 500 --steps 50
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import test_push_machine  # noqa: E402 - the tests directory goes on the path first
import test_twoway_machine  # noqa: E402

MACHINES: dict[str, type[RuleBasedStateMachine]] = {
    "push": test_push_machine.Push,
    "two-way": test_twoway_machine.TwoWay,
}


def counting(machine: type[RuleBasedStateMachine]) -> tuple[type[RuleBasedStateMachine], list[int]]:
    """A subclass that counts the examples (machines) it runs."""
    made: list[int] = []

    class Counted(machine):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            made.append(1)

    return Counted, made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", choices=[*MACHINES, "all"], default="all")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=30, help="steps per example, at most")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the engine's warnings (expiry, retries) are expected
    failed = False
    for name, machine in MACHINES.items():
        if args.machine not in ("all", name):
            continue
        counted, made = counting(machine)
        started = time.monotonic()
        try:
            run_state_machine_as_test(
                counted,
                settings=settings(
                    max_examples=args.examples,
                    stateful_step_count=args.steps,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                ),
            )
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, then exit 1
            outcome = f"FAILED: {type(exc).__name__}: {exc}"
            failed = True
        seconds = time.monotonic() - started
        print(
            f"{name}: {len(made)} examples run (up to {args.steps} steps each, shrinking "
            f"included), {seconds:.0f} s -> {outcome}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
