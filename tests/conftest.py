"""Shared fixtures: an in-process emulator and a ContainersClient wired to it; and
the check that a test starting a process carries the ``e2e`` mark.

Every exchange of the ``api`` fixture passes through ``ValidatingTransport``
and is checked against ``tests/data/openai-containers.openapi.yaml`` at
teardown, so neither the client nor the emulator can drift from the spec.
"""

from __future__ import annotations

import logging
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, ManualClock
from helpers import NoSleep
from spec_validation import ValidatingTransport

# -- the e2e marker, kept true ------------------------------------------------------------
# `make test-fast` leaves out the tests marked e2e, those that start a process. One
# that starts a process without the mark would slow the fast loop unseen, so it
# fails and says so. Python's audit events tell us (a public API, no patching).
_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.spawn", "os.system"})
_started: list[str] = []  # what the current test started (its setup included)


def _note_process(event: str, args: tuple[Any, ...]) -> None:
    if event in _PROCESS_EVENTS:
        # list.append is atomic: a server or pass thread of the test may start it.
        _started.append(event)


# The openai SDK's request headers ask for the processor, which runs `uname -p` once
# per process: asked here first, so that whichever test comes first is not blamed.
platform.processor()
sys.addaudithook(_note_process)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _started.clear()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    if _started and item.get_closest_marker("e2e") is None:
        pytest.fail(
            f"started a process ({', '.join(sorted(set(_started)))}) without the e2e mark:"
            " mark it (pytestmark or @pytest.mark.e2e) so the fast loop leaves it out",
            pytrace=False,
        )
    return result


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(data_dir=tmp_path / "emulator", clock=ManualClock()) as emulator:
        yield emulator


@pytest.fixture
def validating(emu: Emulator) -> Iterator[ValidatingTransport]:
    transport = ValidatingTransport(emu.transport())
    yield transport
    transport.assert_clean()


@pytest.fixture
def no_sleep() -> NoSleep:
    return NoSleep()


@pytest.fixture
def api(validating: ValidatingTransport, no_sleep: NoSleep) -> Iterator[ContainersClient]:
    with ContainersClient(
        "sk-test-key",
        base_url="http://emulator.test/v1",
        transport=validating,
        sleep=no_sleep,
    ) as client:
        yield client


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty directory to mirror (a test module may define its own ``root``)."""
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """The root logger's handlers and level, and cntr_sync's level, put back as they
    were: for a test that configures logging the way the command line does."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ours = logging.getLogger("cntr_sync").level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("cntr_sync").setLevel(ours)
