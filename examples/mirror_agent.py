"""An agent run with cntr-sync's Mirror: files go in, what the model writes comes back.

Against the real API this is the whole pattern (with ``pip install openai``)::

    client = openai.OpenAI()
    with cntr_sync.Mirror("work", "analysis", client=client) as mirror:
        client.responses.create(
            model="gpt-4.1",
            tools=[{"type": "code_interpreter", "container": mirror.container_id}],
            input="Summarise data.csv into summary.md",
        )
    # work/summary.md is on disk now

This script runs the same thing against the local emulator, with the emulator's
control surface playing the model (run ``cntr-sync emulator --control`` and set
OPENAI_BASE_URL to the URL it prints, or let this script start one)::

    python examples/mirror_agent.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import cntr_sync
from cntr_sync.emulator import EmulatorControl, EmulatorServer


def run(base_url: str, work: Path, state: Path) -> Path:
    (work / "data.csv").write_text("city,visitors\nOslo,3\nLima,5\n", encoding="utf-8")
    with cntr_sync.Mirror(work, "analysis", state_dir=state, base_url=base_url) as mirror:
        print(f"container {mirror.container_id}: data.csv is in it")
        # Here an agent would call the Responses API with the code interpreter tool
        # and container=mirror.container_id; the emulator plays the model instead.
        EmulatorControl(base_url).add_assistant_file(
            mirror.container_id, "/mnt/data/summary.md", b"# Visitors\n8 in all\n"
        )
    summary = work / "summary.md"
    print(f"after the block: {summary} holds {summary.read_text(encoding='utf-8')!r}")
    return summary


def main() -> int:
    os.environ.setdefault("OPENAI_API_KEY", "sk-emulator-any-key-works")
    with tempfile.TemporaryDirectory() as scratch:
        work, state = Path(scratch) / "work", Path(scratch) / "state"
        work.mkdir()
        base_url = os.environ.get("OPENAI_BASE_URL")
        if base_url:
            run(base_url, work, state)
            return 0
        with EmulatorServer("127.0.0.1", 0, control=True) as server:
            run(server.base_url, work, state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
