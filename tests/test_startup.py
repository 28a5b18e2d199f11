"""Start-up stays cheap: what a command imports, checked structurally in a fresh interpreter.

No timings here (``bench/startup.py`` prints them): each test runs a child Python
that imports the command line, runs a command in-process, and prints the modules it
ended up with; the heavy ones must not be among them. Also: the lazy names of the
``cntr_sync`` package still resolve, the console script exits the usual way, and
only the command named is built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import typer.core
import typer.main

import cntr_sync
from cntr_sync import cli
from cntr_sync.emulator import EmulatorServer

# Most tests run a child Python (the two logger tests stay beside them).
pytestmark = pytest.mark.e2e

# Never needed before a command runs; only `run` and `emulator` (or nothing) need them.
ALWAYS_HEAVY = (
    "cntr_sync.daemon",
    "cntr_sync.worker",
    "cntr_sync.health",
    "cntr_sync.metrics",
    "cntr_sync.watch",
    "cntr_sync.sdnotify",
    "cntr_sync.emulator",
    "prometheus_client",
    "watchdog",
    "python_multipart",
)
# Not needed to parse arguments or print the version.
BEFORE_A_COMMAND = (
    *ALWAYS_HEAVY,
    "cntr_sync.config",
    "cntr_sync.session",
    "cntr_sync.engine",
    "cntr_sync.library",
    "cntr_sync.api",
    "pydantic",
    "pydantic_settings",
    "httpx",
    "rich",
    "structlog",
    "sqlite3",
)

CHILD = """
import contextlib, io, json, sys
sys.argv = ["cntr-sync", *json.loads(sys.argv[1])]
import cntr_sync.cli
imported = sorted(sys.modules)
code = None
if len(sys.argv) > 1:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            cntr_sync.cli.main()
        except SystemExit as exit:
            code = exit.code
    print(json.dumps({"after_import": imported, "after_run": sorted(sys.modules),
                      "code": code, "stdout": out.getvalue()}))
else:
    print(json.dumps({"after_import": imported}))
"""


def child(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(list(args))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def loaded(modules: object, names: tuple[str, ...]) -> list[str]:
    assert isinstance(modules, list)
    return [name for name in names if name in modules]


def test_importing_the_command_line_loads_nothing_heavy() -> None:
    result = child()
    assert loaded(result["after_import"], BEFORE_A_COMMAND) == []
    # The test can fail: these are what the command line does import.
    assert loaded(result["after_import"], ("typer", "cntr_sync.errors")) == [
        "typer",
        "cntr_sync.errors",
    ]


def test_version_loads_nothing_heavy() -> None:
    result = child("--version")
    assert result["code"] == 0
    assert result["stdout"] == f"cntr-sync {cntr_sync.__version__}\n"
    assert loaded(result["after_run"], BEFORE_A_COMMAND) == []


def test_help_of_sync_loads_nothing_heavy_and_still_lists_the_flags() -> None:
    result = child("sync", "--help")
    assert result["code"] == 0
    text = str(result["stdout"])
    for flag in ("--dry-run", "--container", "--state-dir", "--base-url", "Exit codes:"):
        assert flag in text
    # typer (0.29) coerces option values through pydantic TypeAdapters: its own import.
    not_pydantic = tuple(name for name in BEFORE_A_COMMAND if name != "pydantic")
    assert loaded(result["after_run"], not_pydantic) == []


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer("127.0.0.1", 0, data_dir=tmp_path / "emulator") as running:
        yield running


def test_a_sync_loads_neither_the_daemon_nor_the_emulator_nor_rich(
    server: EmulatorServer, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CNTR_SYNC_", "OPENAI_", "XDG_"))
    }
    env.update(
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY="test-key",
        CNTR_SYNC_STATE_DIR=str(tmp_path / "state"),
    )
    result = child("sync", str(tree), "--container", "startup", "--json", env=env)
    assert result["code"] == 0, result["stdout"]
    assert json.loads(str(result["stdout"]))["uploaded"] == 1
    after = result["after_run"]
    # A pass needs settings and the engine, and (off a terminal, no log line) no rich.
    assert loaded(after, ("cntr_sync.session", "httpx")) == ["cntr_sync.session", "httpx"]
    assert loaded(after, (*ALWAYS_HEAVY, "rich", "structlog")) == []
    # Without a config file there is no TOML parser. (tenacity is loaded: it runs
    # every request's attempts, the first included.)
    assert loaded(after, ("tomllib",)) == []


def test_the_package_names_still_resolve_lazily() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cntr_sync; heavy = 'cntr_sync.library' in sys.modules; "
            "from cntr_sync import sync, Mirror, Settings, SyncResult; "
            "print(heavy, sync.__module__, Mirror.__module__, Settings.__module__, "
            "SyncResult.__module__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "False",
        "cntr_sync.library",
        "cntr_sync.library",
        "cntr_sync.config",
        "cntr_sync.result",
    ]
    assert set(cntr_sync.__all__) <= set(dir(cntr_sync))
    for name in cntr_sync.__all__:
        assert getattr(cntr_sync, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = cntr_sync.no_such_name


# -- the console script exits the usual way (``cli.console``) -------------------------

CONSOLE = """
import atexit, sys, threading, time
sys.argv = ["cntr-sync", *sys.argv[1:]]
atexit.register(lambda: print("atexit ran", flush=True))
class Canary:
    def __del__(self) -> None:  # runs when the interpreter tears __main__ down
        print("torn down", flush=True)
canary = Canary()
from cntr_sync.cli import console
if "--with-thread" in sys.argv:
    sys.argv.remove("--with-thread")
    def late() -> None:
        time.sleep(2.0)  # far longer than --version takes, even on a loaded machine
        print("thread finished", flush=True)
    threading.Thread(target=late).start()
console()
"""


def console_child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CONSOLE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_exit_keeps_the_output_the_status_the_exit_handlers_and_the_teardown() -> None:
    proc = console_child("--version")
    assert proc.returncode == 0, proc.stderr
    # No shortcut past the interpreter's own exit: the canary in __main__ is freed.
    assert proc.stdout == f"cntr-sync {cntr_sync.__version__}\natexit ran\ntorn down\n"


def test_the_exit_keeps_a_usage_error_and_its_status() -> None:
    proc = console_child("sync", "--no-such-flag")
    assert proc.returncode == 2
    assert "No such option: --no-such-flag" in proc.stderr
    assert proc.stdout == "atexit ran\ntorn down\n"


def test_a_usage_error_never_echoes_a_key_pasted_as_an_argument() -> None:
    key = "sk-proj-" + "Q" * 40
    proc = console_child("sync", "some/dir", key)
    assert proc.returncode == 2
    assert "unexpected extra argument" in proc.stderr
    assert key not in proc.stderr and "[redacted]" in proc.stderr


def test_with_a_thread_still_running_the_exit_waits_for_it() -> None:
    proc = console_child("--with-thread", "--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"cntr-sync {cntr_sync.__version__}"
    # The usual exit joins the thread before it runs the exit handlers.
    assert lines[1:] == ["thread finished", "atexit ran", "torn down"]


def test_only_the_named_command_is_built_and_the_rest_fall_back_to_the_whole_app() -> None:
    def names(app: typer.Typer) -> list[str]:
        group = typer.main.get_command(app)
        assert isinstance(group, typer.core.TyperGroup)
        return list(group.commands)

    everything = names(cli.build_app())
    assert everything == [
        "sync",
        "ls",
        "containers",
        "status",
        "log",
        "backups",
        "restore",
        "run",
        "flush",
        "pause",
        "resume",
        "healthcheck",
        "emulator",
        "completion",
        # typer lists the commands with subcommands (groups) after the others
        "pair",
        "config",
    ]
    named = cli._command_named
    assert names(cli.build_app(named(["sync", "tree", "--container", "c"]))) == ["sync"]
    assert names(cli.build_app(named(["-v", "status", "--json"]))) == ["status"]
    assert names(cli.build_app(named(["config", "check", "f.toml"]))) == ["config"]
    # No command named: --help and --version need the whole app; so does a typo,
    # for typer's "No such command ... Did you mean" line.
    for argv in (["--help"], ["--version"], [], ["synk", "tree"]):
        assert names(cli.build_app(named(argv))) == everything
    # main() builds none for --version alone.
    assert names(cli.build_app(None, commands=False)) == []
