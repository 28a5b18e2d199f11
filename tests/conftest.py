"""Shared fixtures: an in-process emulator and a ContainersClient wired to it.

Every exchange of the ``api`` fixture passes through ``ValidatingTransport``
and is checked against ``tests/data/openai-containers.openapi.yaml`` at
teardown, so neither the client nor the emulator can drift from the spec.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, ManualClock
from helpers import NoSleep
from spec_validation import ValidatingTransport


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
