"""README.md as a user reads it: its Python example runs as written, and its links lead somewhere.

The example is taken from README's "The Python API" section exactly as it is
printed and run in a fresh interpreter, in a temporary working directory,
against ``cntr-sync emulator`` started as its own process on 127.0.0.1 with a
free port: the setup a user follows (``OPENAI_BASE_URL`` at the emulator, any
key). The model's part is played through the emulator's control surface before
the block runs, so the block's claim ("work/summary.md is on disk now") is
checked too.

The links are checked the way GitHub renders them: a relative link must name a
file of the repository, and an anchor must be the slug of a heading in it
(``mkdocs build --strict`` checks the links between the pages of ``docs/``, but
not README's).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import EmulatorControl

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
KEY = "sk-readme-any-key-works"
START_TIMEOUT = 30.0
FENCE = re.compile(r"^```.*?^```$", flags=re.M | re.S)


def section(markdown: str, heading: str) -> str:
    """The text under ``## heading`` up to the next heading of level 2."""
    start = markdown.index(f"\n## {heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else len(markdown)]


def python_example() -> str:
    """The first Python block of README's "The Python API" section, as printed."""
    found = re.search(
        r"^```python\n(.*?)^```$", section(README.read_text("utf-8"), "The Python API"), re.M | re.S
    )
    assert found is not None, 'README\'s "The Python API" section has no ```python block'
    return found.group(1)


@pytest.fixture
def emulator_url(tmp_path: Path) -> Iterator[str]:
    """``cntr-sync emulator --control`` in its own process; its API base URL."""
    log_path = tmp_path / "emulator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "cntr_sync", "emulator", "--control"),
                *("--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path / "emulator")),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            # It prints "cntr-sync emulator listening on http://127.0.0.1:PORT/v1" once up.
            found = re.search(r"http://127\.0\.0\.1:\d+/v1", log_path.read_text("utf-8"))
            if found:
                break
            assert proc.poll() is None, f"the emulator exited: {log_path.read_text('utf-8')}"
            assert time.monotonic() < deadline, "the emulator did not start within 30 s"
            time.sleep(0.05)
        yield found.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.e2e
def test_the_python_example_runs_as_written_against_the_emulator(
    emulator_url: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    data = b"city,visitors\nOslo,3\nLima,5\n"
    (work / "data.csv").write_bytes(data)
    summary = b"# Visitors\n8 in all\n"
    # The model, having written work/summary.md into the container the block will use.
    with EmulatorControl(emulator_url) as control:
        container_id = control.create_container("analysis")["id"]
        control.add_assistant_file(container_id, "/mnt/data/summary.md", summary)

    proc = subprocess.run(
        [sys.executable, "-c", python_example()],
        cwd=tmp_path,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "OPENAI_BASE_URL": emulator_url,
            "OPENAI_API_KEY": KEY,
        },
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"work/ is in container {container_id}\n"
    assert proc.stderr == ""  # the library never prints
    # The final pass brought home what the model wrote...
    assert (work / "summary.md").read_bytes() == summary
    # ...and the container holds work/ as it is.
    with ContainersClient(KEY, base_url=emulator_url) as client:
        uploads = [f for f in client.iter_files(container_id) if f.source == "user"]
        assert [f.path.endswith("data.csv") for f in uploads] == [True]
        content = io.BytesIO()
        client.download_file(container_id, uploads[0].id, content)
    assert content.getvalue() == data


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation gone, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", FENCE.sub("", markdown), flags=re.M)
    return {github_slug(heading) for heading in headings}


def test_readme_links_name_files_and_headings_that_exist() -> None:
    readme = README.read_text("utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", readme))
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert len(local) >= 20, "README links into docs/ and to its own sections"
    for target in local:
        path, _, anchor = target.partition("#")
        page = (REPO / path) if path else README
        assert page.is_file(), f"README links to {target}: no such file"
        if anchor:
            assert anchor in anchors(page.read_text("utf-8")), f"README links to {target}"


def test_the_github_slug_is_the_one_github_makes() -> None:
    assert github_slug("The daemon: `cntr-sync run`") == "the-daemon-cntr-sync-run"
    assert github_slug("What gets mirrored, and what is left alone") == (
        "what-gets-mirrored-and-what-is-left-alone"
    )
    assert github_slug("Finding the container, and retries") == "finding-the-container-and-retries"
