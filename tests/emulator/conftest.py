"""Fixtures for the emulator's own tests: an in-process emulator with a hand-driven
clock behind ``httpx.MockTransport``, and a real server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cntr_sync.emulator import Emulator, EmulatorServer, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(tmp_path: Path, clock: ManualClock) -> Iterator[Emulator]:
    with Emulator(data_dir=tmp_path / "emu", clock=clock) as emu:
        yield emu


@pytest.fixture
def client(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(
        transport=httpx.MockTransport(emulator.handle), base_url="http://emulator.test/v1"
    ) as http:
        yield http


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer("127.0.0.1", 0, control=True, data_dir=tmp_path / "served") as running:
        yield running


@pytest.fixture
def http(server: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10.0) as real_client:
        yield real_client
