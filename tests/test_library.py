"""The Python API: sync, Mirror, their async flavours, client=, and the output contract."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import cntr_sync
from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, EmulatorServer, FaultConfig
from cntr_sync.library import settings_from_openai_client
from cntr_sync.result import TransferEvent

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-library-test-0001"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer("127.0.0.1", 0, control=True, data_dir=tmp_path / "emu") as running:
        yield running


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, server: EmulatorServer, tmp_path: Path) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    (root / "sub").mkdir(parents=True)
    (root / "data.csv").write_text("a,b\n1,2\n")
    (root / "sub" / "notes.md").write_text("# notes\n")
    return root


def test_sync_is_one_pass_with_a_typed_result(
    env: None, server: EmulatorServer, work: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    events: list[TransferEvent] = []
    result = cntr_sync.sync(work, "lib-box", on_progress=events.append)
    assert isinstance(result, cntr_sync.SyncResult)
    assert result.in_sync and result.uploaded == 2 and result.container_id
    assert sorted(e.path for e in events) == ["data.csv", "sub/notes.md"]
    assert {e.action for e in events} == {"uploaded"}
    assert result.requests == sum(server.emulator.counts().values())
    again = cntr_sync.sync(work, "lib-box", dry_run=True)
    assert again.planned == () and again.uploaded == 0
    (work / "data.csv").write_text("changed")
    planned = cntr_sync.sync(work, "lib-box", dry_run=True)
    assert [(a.action, a.path, a.bytes) for a in planned.planned] == [("replace", "data.csv", 7)]
    # The library never prints: not a progress bar, not a log line.
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_dry_run_is_in_sync_only_when_it_plans_nothing(env: None, work: Path) -> None:
    cold = cntr_sync.sync(work, "lib-box", dry_run=True)
    assert cold.planned and not cold.in_sync and cold.dry_run
    assert cntr_sync.sync(work, "lib-box").in_sync
    assert cntr_sync.sync(work, "lib-box", dry_run=True).in_sync
    (work / "sub" / "notes.md").unlink()
    removal = cntr_sync.sync(work, "lib-box", dry_run=True)
    assert [a.action for a in removal.planned] == ["delete"] and not removal.in_sync


def test_a_brake_carries_every_file_it_would_delete(env: None, work: Path) -> None:
    assert cntr_sync.sync(work, "lib-box").uploaded == 2
    for path in (work / "data.csv", work / "sub" / "notes.md"):
        path.unlink()
    with pytest.raises(cntr_sync.SafetyBrakeError) as braked:
        cntr_sync.sync(work, "lib-box")
    assert braked.value.would_delete == ("data.csv", "sub/notes.md")
    assert braked.value.message.endswith("; it would delete data.csv, sub/notes.md")


def test_errors_are_the_exported_tree(env: None, work: Path, tmp_path: Path) -> None:
    assert cntr_sync.sync(work, "lib-box").uploaded == 2
    for path in work.rglob("*"):
        if path.is_file():
            path.unlink()
    with pytest.raises(cntr_sync.SafetyBrakeError, match="sync root is empty"):
        cntr_sync.sync(work, "lib-box")
    with pytest.raises(cntr_sync.ConfigError, match="'push', 'pull' or 'both'"):
        cntr_sync.sync(work, "lib-box", direction="sideways")  # type: ignore[arg-type]
    assert issubclass(cntr_sync.SafetyBrakeError, cntr_sync.CntrSyncError)


def test_mirror_brings_home_what_the_model_wrote(
    env: None, server: EmulatorServer, work: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with cntr_sync.Mirror(work, "agent-run") as mirror:
        container_id = mirror.container_id
        assert sorted(f.path.rsplit("-", 1)[-1] for f in _files(server, container_id)) == [
            "data.csv",
            "sub/notes.md",
        ]
        server.emulator.add_assistant_file(container_id, "/mnt/data/out/plot.png", b"PNG")
        mid = mirror.sync()
        assert mid.downloaded == 1
        server.emulator.add_assistant_file(container_id, "/mnt/data/summary.md", b"# done")
    assert (work / "summary.md").read_bytes() == b"# done"
    assert (work / "out" / "plot.png").read_bytes() == b"PNG"
    assert mirror.last_result is not None and mirror.last_result.downloaded == 1
    assert capfd.readouterr().out == ""


def test_mirror_does_not_hide_the_blocks_own_error(env: None, work: Path) -> None:
    with pytest.raises(ZeroDivisionError), cntr_sync.Mirror(work, "agent-run") as mirror:
        for path in work.rglob("*"):
            if path.is_file():
                path.unlink()  # the final pass will hit the empty-root brake...
        assert mirror.container_id
        _ = 1 / 0  # ...but this is the error the caller sees


def test_mirror_raises_a_failing_final_pass(env: None, work: Path) -> None:
    with (
        pytest.raises(cntr_sync.SafetyBrakeError),
        cntr_sync.Mirror(work, "agent-run", direction="push"),
    ):
        for path in work.rglob("*"):
            if path.is_file():
                path.unlink()


def test_client_from_an_openai_sdk_client(
    monkeypatch: pytest.MonkeyPatch, server: EmulatorServer, work: Path, tmp_path: Path
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    sdk = openai.OpenAI(
        api_key=KEY,
        base_url=server.base_url,
        organization="org-lib",
        default_headers={"X-Team": "data"},
        default_query={"provider": "openai"},
    )
    result = cntr_sync.sync(work, "sdk-box", client=sdk, state_dir=tmp_path / "state")
    assert result.uploaded == 2
    request = server.emulator.requests_log()[-1]
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["openai-organization"] == "org-lib"
    assert request.headers["x-team"] == "data"
    assert dict(request.query)["provider"] == "openai"
    # And the SDK sees what cntr-sync put there.
    listed = sdk.containers.files.list(result.container_id or "")
    assert len(listed.data) == 2
    async_sdk = openai.AsyncOpenAI(api_key=KEY, base_url=server.base_url)
    again = cntr_sync.sync(work, "sdk-box", client=async_sdk, state_dir=tmp_path / "state")
    assert again.in_sync and again.uploaded == 0


def test_settings_from_an_sdk_client_are_what_it_was_given() -> None:
    sdk = openai.OpenAI(
        api_key=KEY,
        base_url="http://gw.test/v1/",
        organization="org-lib",
        project="proj-lib",
        default_headers={"X-Team": "data", "User-Agent": "agent/2", "Accept": "text/plain"},
        default_query={"provider": "openai", "tag": 7},
    )
    assert settings_from_openai_client(sdk) == {
        "api_key": KEY,
        "base_url": "http://gw.test/v1",
        "organization": "org-lib",
        "project": "proj-lib",
        "extra_headers": {"X-Team": "data", "User-Agent": "agent/2", "Accept": "text/plain"},
        "extra_query": {"provider": "openai", "tag": "7"},
    }


@pytest.mark.parametrize("sdk_class", [openai.OpenAI, openai.AsyncOpenAI])
def test_an_sdk_client_without_extras_adds_none_of_its_own_headers(sdk_class: type) -> None:
    settings = settings_from_openai_client(sdk_class(api_key=KEY, base_url="http://gw.test/v1"))
    assert settings["extra_headers"] == {}
    assert settings["extra_query"] == {}
    assert settings["organization"] is None and settings["project"] is None
    assert "auth_style" not in settings


def test_an_azure_sdk_client_keeps_its_api_version_and_authenticates_with_api_key() -> None:
    sdk = openai.AzureOpenAI(
        api_key=KEY,
        api_version="2025-04-01-preview",
        azure_endpoint="https://res.openai.azure.com",
        default_headers={"X-Team": "data"},
    )
    settings = settings_from_openai_client(sdk)
    assert settings["auth_style"] == "api-key"
    assert settings["extra_query"] == {"api-version": "2025-04-01-preview"}
    assert settings["extra_headers"] == {"X-Team": "data"}


def test_client_can_be_our_own_client_with_any_transport(tmp_path: Path, work: Path) -> None:
    with (
        Emulator(data_dir=tmp_path / "emu") as emulator,
        ContainersClient(KEY, base_url="http://emu.test/v1", transport=emulator.transport()) as api,
    ):
        result = cntr_sync.sync(work, "in-process", client=api, state_dir=tmp_path / "state")
        assert result.uploaded == 2
        assert emulator.counts()["create_file"] == 2


def test_the_async_flavour_does_not_block_the_loop(
    env: None, server: EmulatorServer, work: Path
) -> None:
    async def main() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        server.emulator.set_faults(FaultConfig(latency_ms=150))
        result = await cntr_sync.async_sync(work, "async-box")
        async with cntr_sync.AsyncMirror(work, "async-box") as mirror:
            server.emulator.add_assistant_file(mirror.container_id, "/mnt/data/a.txt", b"a")
        task.cancel()
        return result.uploaded, ticks

    uploaded, ticks = asyncio.run(main())
    assert uploaded == 2
    assert ticks > 10  # the loop ran while passes waited on the (slow) server
    assert (work / "a.txt").read_bytes() == b"a"


def test_logging_contract(
    env: None, work: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    handlers = logging.getLogger("cntr_sync").handlers
    assert [type(h).__name__ for h in handlers] == ["NullHandler"]
    with caplog.at_level(logging.INFO, logger="cntr_sync"):
        cntr_sync.sync(work, "logged-box")
    created = [r for r in caplog.records if r.name == "cntr_sync.containers"]
    assert created and created[0].getMessage() == "creating container name=logged-box"
    assert created[0].cntr_sync == {"event": "creating container", "name": "logged-box"}
    assert capfd.readouterr().err == ""


def test_public_names_are_documented() -> None:
    for name in cntr_sync.__all__:
        value = getattr(cntr_sync, name)
        if name != "__version__":
            assert value.__doc__, f"{name} has no docstring"
    assert (Path(cntr_sync.__file__).parent / "py.typed").is_file()


@pytest.mark.e2e
def test_the_example_script_runs_against_the_emulator(server: EmulatorServer) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "mirror_agent.py")],
        env={"PATH": "/usr/bin:/bin", "OPENAI_BASE_URL": server.base_url, "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "summary.md holds '# Visitors\\n8 in all\\n'" in proc.stdout
    assert proc.stderr == ""


def _files(server: EmulatorServer, container_id: str) -> list[object]:
    with ContainersClient(KEY, base_url=server.base_url) as client:
        return list(client.iter_files(container_id))


def test_a_pass_names_what_it_kept_and_restore_puts_it_back(
    env: None, server: EmulatorServer, work: Path
) -> None:
    """Issue 22, item 1, from Python: ``SyncResult.backups``, ``kept_versions``,
    ``restore``; the restore is undoable and the next pass pushes it."""
    first = cntr_sync.sync(work, "lib-box", direction="both")
    assert first.container_id is not None
    with ContainersClient(KEY, base_url=server.base_url) as client:
        (data,) = [f for f in client.iter_files(first.container_id) if f.path.endswith("data.csv")]
    server.emulator.rewrite_file(first.container_id, data.id, b"the model's rows\n")
    pulled = cntr_sync.sync(work, "lib-box", direction="both")
    (kept,) = pulled.backups
    assert kept.relpath == "data.csv" and kept.path.read_text() == "a,b\n1,2\n"
    assert pulled.pass_id is not None
    assert pulled.to_json()["backups"] == [kept.to_json()]
    assert cntr_sync.kept_versions(work, "lib-box") == [kept]
    restored = cntr_sync.restore(work, "lib-box", "data.csv")
    assert restored == kept and (work / "data.csv").read_text() == "a,b\n1,2\n"
    assert [
        v.path.read_bytes() for v in cntr_sync.kept_versions(work, "lib-box", path="data.csv")
    ] == [
        b"a,b\n1,2\n",
        b"the model's rows\n",
    ]
    assert cntr_sync.sync(work, "lib-box", direction="both").replaced == 1
    with pytest.raises(cntr_sync.LocalError, match=r"no version of nope\.txt in "):
        cntr_sync.restore(work, "lib-box", "nope.txt")
    with pytest.raises(cntr_sync.ConfigError, match="not a file inside DIRECTORY"):
        cntr_sync.restore(work, "lib-box", "../outside.txt")
    # ``at`` as text: a time or a span ago, never a string compared blindly.
    with pytest.raises(cntr_sync.ConfigError, match="at: 'yesterday-ish' is not a time"):
        cntr_sync.restore(work, "lib-box", "data.csv", at="yesterday-ish")
    with pytest.raises(cntr_sync.LocalError, match="kept at or before 2000-01-01"):
        cntr_sync.restore(work, "lib-box", "data.csv", at="2000-01-01T00:00")
    assert cntr_sync.restore(work, "lib-box", "./data.csv", at="0s").relpath == "data.csv"
    assert cntr_sync.kept_versions(work, "lib-box", path="./data.csv")


def test_a_cancelled_async_sync_stops_its_pass_and_frees_the_pair(
    env: None, server: EmulatorServer, tmp_path: Path
) -> None:
    """Issue 25, finding 14: ``wait_for(async_sync(...))`` timing out stops the pass at
    its next action and releases the pair's lock before ``CancelledError`` is raised:
    ``asyncio.run`` does not wait for the whole pass, and a second call at once finds
    the pair free and finishes the job."""
    root = tmp_path / "many"
    root.mkdir()
    for number in range(300):
        (root / f"f{number:03}.txt").write_text(f"file {number}\n")
    # 300 uploads, 8 at a time, 100 ms each: a whole pass takes about 4 s.
    server.emulator.set_faults(FaultConfig(latency_ms=100))

    async def cut_short() -> None:
        await asyncio.wait_for(cntr_sync.async_sync(root, "slow-box"), 0.8)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(cut_short())
    assert time.monotonic() - started < 3.0  # asyncio.run did not wait for the whole pass
    uploaded_by_the_first = server.emulator.counts()["create_file"]
    assert 0 < uploaded_by_the_first < 300

    async def cut_short_then_again() -> cntr_sync.SyncResult:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(cntr_sync.async_sync(root, "slow-box"), 0.8)
        return await cntr_sync.async_sync(root, "slow-box")  # at once: no LockedError

    second = asyncio.run(cut_short_then_again())
    assert second.in_sync and second.local_files == 300
    uploads = server.emulator.counts()["create_file"]
    assert second.uploaded < 300 - uploaded_by_the_first  # the second cut pass did some
    assert len(_files(server, second.container_id or "")) == 300
    assert uploads == 300  # none sent twice


def test_a_cancelled_async_sync_does_not_sit_out_the_servers_retry_after(
    env: None, server: EmulatorServer, tmp_path: Path
) -> None:
    """The cancel that stops the pass also ends the client's retry wait: a server that
    says "Retry-After: 30" does not hold ``wait_for`` for half a minute."""
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    server.emulator.fail_next("create_file", 429, 10, headers={"Retry-After": "30"})

    async def cut_short() -> None:
        await asyncio.wait_for(cntr_sync.async_sync(root, "patient-box"), 0.8)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(cut_short())
    assert time.monotonic() - started < 10.0
    assert server.emulator.counts()["create_file"] == 1  # refused once, never retried


# -- issue 25, finding 6: a pass that leaves work undone raises --------------------------


def test_mirror_raises_when_its_final_pass_does_not_bring_the_models_file_home(
    env: None, server: EmulatorServer, work: Path
) -> None:
    with (
        pytest.raises(cntr_sync.IncompleteSyncError) as incomplete,
        # No content checks (verify_per_listing): the one failed download is the case.
        cntr_sync.Mirror(work, "agent-run", max_retries=0, verify_per_listing=0) as mirror,
    ):
        server.emulator.add_assistant_file(mirror.container_id, "/mnt/data/summary.md", b"# done")
        server.emulator.fail_next("file_content", 500)
    assert not (work / "summary.md").exists()
    result = incomplete.value.result
    assert isinstance(incomplete.value, cntr_sync.CntrSyncError)
    assert not result.in_sync and result is mirror.last_result
    (failure,) = result.failures
    assert failure.target == "summary.md"
    assert "1 action failed" in incomplete.value.message
    assert "summary.md" in incomplete.value.message
    # Nothing was lost: the next pass brings it home.
    assert cntr_sync.sync(work, "agent-run", direction="both").downloaded == 1
    assert (work / "summary.md").read_bytes() == b"# done"


def test_mirror_raises_when_its_entry_pass_or_a_sync_leaves_work_undone(
    env: None, server: EmulatorServer, work: Path
) -> None:
    server.emulator.fail_next("create_file", 400)
    body_ran = False
    with (
        pytest.raises(cntr_sync.IncompleteSyncError) as on_enter,
        cntr_sync.Mirror(work, "agent-run", max_retries=0),
    ):
        body_ran = True
    assert not body_ran
    assert on_enter.value.result.uploaded == 1 and len(on_enter.value.result.failures) == 1
    with cntr_sync.Mirror(work, "agent-run", max_retries=0) as mirror:
        (work / "late.txt").write_text("late")
        server.emulator.fail_next("create_file", 400)
        with pytest.raises(cntr_sync.IncompleteSyncError) as on_sync:
            mirror.sync()
        assert on_sync.value.result.failures[0].target == "late.txt"
        assert mirror.last_result is on_sync.value.result
    # The final pass sent late.txt: the block ended cleanly.
    assert mirror.last_result is not None and mirror.last_result.uploaded == 1


def test_mirror_lets_the_blocks_own_error_through_over_an_incomplete_final_pass(
    env: None, server: EmulatorServer, work: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="cntr_sync"),
        pytest.raises(ZeroDivisionError),
        # No content checks (verify_per_listing): the one failed download is the case.
        cntr_sync.Mirror(work, "agent-run", max_retries=0, verify_per_listing=0) as mirror,
    ):
        server.emulator.add_assistant_file(mirror.container_id, "/mnt/data/summary.md", b"#")
        server.emulator.fail_next("file_content", 500)
        _ = 1 / 0
    assert mirror.last_result is not None and not mirror.last_result.in_sync
    (warned,) = [r for r in caplog.records if r.name == "cntr_sync.library"]
    assert "1 action failed" in warned.getMessage()


def test_sync_raises_when_a_pass_leaves_work_undone_unless_told_not_to(
    env: None, server: EmulatorServer, work: Path
) -> None:
    server.emulator.fail_next("create_file", 400)
    with pytest.raises(cntr_sync.IncompleteSyncError) as incomplete:
        cntr_sync.sync(work, "lib-box", max_retries=0)
    assert incomplete.value.result.uploaded == 1
    (work / "more.txt").write_text("more")
    server.emulator.fail_next("create_file", 400)
    result = cntr_sync.sync(work, "lib-box", max_retries=0, raise_on_incomplete=False)
    assert not result.in_sync and len(result.failures) == 1
    # A dry run that plans actions is not in sync, and does not raise for that.
    planned = cntr_sync.sync(work, "lib-box", dry_run=True)
    assert planned.planned and not planned.in_sync
    assert cntr_sync.sync(work, "lib-box").in_sync


def test_the_async_flavours_raise_when_a_pass_leaves_work_undone(
    env: None, server: EmulatorServer, work: Path
) -> None:
    async def main() -> list[str]:
        raised: list[str] = []
        server.emulator.fail_next("create_file", 400)
        try:
            await cntr_sync.async_sync(work, "async-box", max_retries=0)
        except cntr_sync.IncompleteSyncError:
            raised.append("async_sync")
        quiet = await cntr_sync.async_sync(
            work, "async-box", max_retries=0, raise_on_incomplete=False
        )
        assert quiet.in_sync
        (work / "new.txt").write_text("new")
        server.emulator.fail_next("create_file", 400)
        try:
            async with cntr_sync.AsyncMirror(work, "async-box", max_retries=0):
                raised.append("body")
        except cntr_sync.IncompleteSyncError:
            raised.append("enter")
        try:
            # No content checks: the failed download of s.md is the case.
            async with cntr_sync.AsyncMirror(
                work, "async-box", max_retries=0, verify_per_listing=0
            ) as mirror:
                (work / "late.txt").write_text("late")
                server.emulator.fail_next("create_file", 400)
                try:
                    await mirror.sync()
                except cntr_sync.IncompleteSyncError:
                    raised.append("sync")
                server.emulator.add_assistant_file(mirror.container_id, "/mnt/data/s.md", b"#")
                server.emulator.fail_next("file_content", 500)
        except cntr_sync.IncompleteSyncError as error:
            raised.append(f"exit {error.result.failures[0].target}")
        return raised

    assert asyncio.run(main()) == ["async_sync", "enter", "sync", "exit s.md"]
