"""control: the daemon's control surface, in-process, against the emulator over real HTTP.

The daemon runs on a background thread (``daemon.running``) with its control
socket in a short private directory (a Unix socket path holds 107 bytes);
``ControlClient`` talks to it as an app would. Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import test_daemon
from cntr_sync.api import ContainersClient
from cntr_sync.config import Settings
from cntr_sync.control_client import ControlClient, socket_path
from cntr_sync.daemon import Daemon, running
from cntr_sync.emulator import EmulatorServer, FaultConfig
from cntr_sync.errors import ConfigError, TransportError, UnknownPairError
from cntr_sync.pairs_dir import pairs_dir_path
from helpers import remote_bytes, remote_name_counts
from test_daemon import SYNC_TIMEOUT, make_tree, pair, wait_until, write_config

# test_daemon's fixtures: an emulator on 127.0.0.1, a client of it, the daemon's environment.
server, client, env = test_daemon.server, test_daemon.client, test_daemon.env


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def start(
    tmp_path: Path,
    env: dict[str, str],
    socket_dir: Path,
    pairs: list[dict[str, Any]],
    **settings: Any,
) -> Daemon:
    config = write_config(
        tmp_path / "daemon.toml",
        pairs,
        control_socket=socket_dir / "control.sock",
        **settings,
    )
    return Daemon(config, environ=env)


def synced(daemon: Daemon, name: str) -> bool:
    worker = daemon.workers.get(name)
    return worker is not None and worker.status.first_sync_done


# -- 1. the surface: the socket's mode, the token -------------------------------------------------


def test_the_socket_is_0600_and_answers_status_and_control(
    tmp_path: Path, env: dict[str, str], socket_dir: Path
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    daemon = start(tmp_path, env, socket_dir, [pair("docs", root)])
    with running(daemon):
        sock = socket_dir / "control.sock"
        wait_until(sock.exists, SYNC_TIMEOUT, message="the control socket")
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        with ControlClient(sock) as control:
            wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
            assert set(control.pairs()["pairs"]) == {"docs"}
            with pytest.raises(UnknownPairError, match="nosuch"):
                control.pause("nosuch")
        # Without a token file, the control routes are not on http_listen at all.
        answer = httpx.post(daemon.health.url + "/pause", json={}, timeout=5.0)
        assert answer.status_code == 405
        assert not daemon.paused
    assert not sock.exists()  # removed on stop


def test_a_missing_or_wrong_token_gets_401_and_nothing_is_done(
    tmp_path: Path, env: dict[str, str], socket_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-value\n")
    daemon = start(tmp_path, env, socket_dir, [pair("docs", root)], control_token_file=token_file)
    with running(daemon):
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        url = daemon.health.url
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            answer = httpx.post(url + "/pause", json={}, headers=headers, timeout=5.0)
            assert answer.status_code == 401
            assert "s3cret" not in answer.text
        assert not daemon.paused
        assert not daemon.workers["docs"].paused
        # Health routes stay open.
        assert httpx.get(url + "/livez", timeout=5.0).status_code == 200
        # The right token opens the routes.
        with ControlClient(url=url, token="s3cret-token-value") as control:
            assert control.pause("docs") == ["docs"]
        assert daemon.workers["docs"].paused
    assert "s3cret" not in caplog.text


def test_no_daemon_is_a_transport_error(socket_dir: Path) -> None:
    with (
        ControlClient(socket_dir / "control.sock") as control,
        pytest.raises(TransportError, match="no daemon is running"),
    ):
        control.flush()


# -- 2. flush ---------------------------------------------------------------------------------


def test_flush_returns_once_the_file_is_in_the_container(
    tmp_path: Path, env: dict[str, str], socket_dir: Path, client: ContainersClient
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    # No watching, rescans ten minutes away: only the flush can send the new file.
    daemon = start(tmp_path, env, socket_dir, [pair("docs", root, watch="off")])
    with running(daemon), ControlClient(socket_dir / "control.sock") as control:
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        (root / "new.txt").write_text("flushed")
        outcome = control.flush("docs")["docs"]
        assert outcome.in_sync
        assert outcome.summary["uploaded"] == 1
        assert outcome.summary["exit_code"] == 0
        assert outcome.lines[-1].startswith("in sync:")
        container_id = daemon.workers["docs"].status.container_id
        assert container_id is not None
        assert remote_bytes(client, container_id, "new.txt") == b"flushed"


def test_flush_brings_home_what_the_model_wrote(
    tmp_path: Path,
    env: dict[str, str],
    socket_dir: Path,
    server: EmulatorServer,
    client: ContainersClient,
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    # The remote poll is ten minutes away: only the flush lists the container.
    daemon = start(tmp_path, env, socket_dir, [pair("docs", root, direction="both")])
    with running(daemon), ControlClient(socket_dir / "control.sock") as control:
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        container_id = daemon.workers["docs"].status.container_id
        assert container_id is not None
        server.emulator.add_assistant_file(container_id, "/mnt/data/report.md", b"from the model")
        outcome = control.flush()["docs"]
        assert outcome.in_sync
        assert outcome.summary["downloaded"] == 1
        assert (root / "report.md").read_bytes() == b"from the model"


def test_concurrent_flushes_share_passes(
    tmp_path: Path, env: dict[str, str], socket_dir: Path, server: EmulatorServer
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    daemon = start(tmp_path, env, socket_dir, [pair("docs", root, watch="off")])
    with running(daemon):
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        worker = daemon.workers["docs"]
        before = worker.status.passes
        # Each pass lists the container for a second: every ask lands before or
        # during the first pass, however the threads are scheduled.
        server.emulator.set_faults(
            FaultConfig(latency_ms=1000, only_operations=frozenset({"list_files"}))
        )
        codes: list[int] = []
        ready = threading.Barrier(100, timeout=SYNC_TIMEOUT)

        def flush() -> None:
            with ControlClient(socket_dir / "control.sock") as control:
                ready.wait()
                codes.append(control.flush("docs")["docs"].exit_code)

        threads = [threading.Thread(target=flush) for _ in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SYNC_TIMEOUT * 2)
        assert codes == [0] * 100
        # The asks that came before a pass took them share it; those that came
        # during it share the next.
        assert 1 <= worker.status.passes - before <= 2


def test_flush_of_a_paused_pair_is_refused(
    tmp_path: Path, env: dict[str, str], socket_dir: Path
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    daemon = start(tmp_path, env, socket_dir, [pair("docs", root)])
    with running(daemon), ControlClient(socket_dir / "control.sock") as control:
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        control.pause()
        with pytest.raises(ConfigError, match="paused"):
            control.flush("docs")


# -- 3. pause and resume ----------------------------------------------------------------------


def test_a_pause_transfers_nothing_survives_a_reload_and_resume_syncs_it_all(
    tmp_path: Path, env: dict[str, str], socket_dir: Path, client: ContainersClient
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    other = make_tree(tmp_path / "other", {"b.txt": "beta"})
    daemon = start(tmp_path, env, socket_dir, [pair("docs", root)])
    with running(daemon), ControlClient(socket_dir / "control.sock") as control:
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        container_id = daemon.workers["docs"].status.container_id
        assert container_id is not None
        assert control.pause("docs") == ["docs"]
        status = httpx.get(daemon.health.url + "/status", timeout=5.0).json()
        assert status["pairs"]["docs"]["paused"] is True
        metrics = httpx.get(daemon.health.url + "/metrics", timeout=5.0).text
        assert 'cntr_sync_pair_paused{pair="docs"} 1.0' in metrics

        (root / "while-paused.txt").write_text("held back")
        # A reload that restarts the pair (its settings changed) keeps it paused.
        write_config(
            tmp_path / "daemon.toml",
            [pair("docs", root, rescan_interval=500.0), pair("other", other)],
            control_socket=socket_dir / "control.sock",
        )
        daemon._reload.set()
        wait_until(lambda: synced(daemon, "other"), SYNC_TIMEOUT, message="the reload")
        wait_until(
            lambda: daemon.workers["docs"].pair.rescan_interval == 500.0,
            SYNC_TIMEOUT,
            message="docs restarted",
        )
        worker = daemon.workers["docs"]
        assert worker.paused
        wait_until(lambda: worker.status.watch != "off", SYNC_TIMEOUT, message="the watcher")
        (root / "after-reload.txt").write_text("held back too")
        wait_until(lambda: worker.tracker.pending, SYNC_TIMEOUT, message="the change noted")
        assert worker.status.passes == 0  # the new worker ran nothing, not even a first pass
        names = remote_name_counts(client, container_id)
        assert "while-paused.txt" not in names
        assert "after-reload.txt" not in names

        assert control.resume("docs") == ["docs"]
        wait_until(
            lambda: remote_bytes(client, container_id, "while-paused.txt") == b"held back",
            SYNC_TIMEOUT,
            message="the held-back file",
        )
        assert remote_bytes(client, container_id, "after-reload.txt") == b"held back too"
        assert not daemon.workers["docs"].status.paused


def test_sighup_handler_sets_the_reload_flag_only(
    tmp_path: Path, env: dict[str, str], socket_dir: Path
) -> None:
    # The pause is kept by the daemon, not by the signal: a SIGHUP only asks for reload().
    daemon = start(tmp_path, env, socket_dir, [pair("docs", make_tree(tmp_path / "d", {}))])
    daemon._on_reload_signal(signal.SIGHUP, None)
    assert daemon._reload.is_set()


# -- 6. pairs at run time -------------------------------------------------------------------------


def test_pair_files_added_broken_and_removed_while_running(
    tmp_path: Path, env: dict[str, str], socket_dir: Path, client: ContainersClient
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    extra = make_tree(tmp_path / "extra", {"x.txt": "ex"})
    pairs_dir = tmp_path / "pairs.d"
    pairs_dir.mkdir()
    daemon = start(tmp_path, env, socket_dir, [pair("docs", root)], pairs_dir=pairs_dir)
    with running(daemon), ControlClient(socket_dir / "control.sock") as control:
        wait_until(lambda: synced(daemon, "docs"), SYNC_TIMEOUT, message="the first sync")
        # Dropped in by hand (a ConfigMap, a platform): picked up within 2 s.
        (pairs_dir / "extra.toml").write_text(
            f'local = "{extra}"\ncontainer = "extra"\nquiet_period = 0.3\nmax_delay = 3.0\n'
        )
        wait_until(lambda: "extra" in daemon.workers, 2.5, message="the extra pair")
        wait_until(lambda: synced(daemon, "extra"), SYNC_TIMEOUT, message="its first sync")
        # A broken file: refused with one line, the others carry on.
        (pairs_dir / "broken.toml").write_text('local = "/x"\ncontainr = "typo"\n')
        wait_until(lambda: "broken.toml" in daemon.refused_pairs, 2.5, message="the refusal")
        assert "unknown key 'containr'" in daemon.refused_pairs["broken.toml"]
        assert "did you mean 'container'" in daemon.refused_pairs["broken.toml"]
        status = httpx.get(daemon.health.url + "/status", timeout=5.0).json()
        assert "broken.toml" in status["refused_pairs"]
        assert set(status["pairs"]) == {"docs", "extra"}
        assert status["pairs"]["extra"]["source"] == "pairs_dir"
        # Through the daemon: add, list, remove.
        third = make_tree(tmp_path / "third", {"t.txt": "three"})
        added = control.add_pair("third", third, "third-box", quiet_period=0.3, max_delay=3.0)
        assert added["container"] == "third-box"
        assert (pairs_dir / "third.toml").is_file()
        assert "third" in daemon.workers
        listed = control.pairs()
        assert listed["pairs"]["third"]["source"] == "pairs_dir"
        assert "broken.toml" in listed["refused"]
        with pytest.raises(ConfigError, match="config file"):
            control.remove_pair("docs")
        with pytest.raises(ConfigError, match="max_delay"):
            control.add_pair("bad", third, "box", quiet_period=5.0, max_delay=1.0)
        control.remove_pair("third")
        assert "third" not in daemon.workers
        assert not (pairs_dir / "third.toml").exists()
        # Removed by hand.
        (pairs_dir / "extra.toml").unlink()
        wait_until(lambda: "extra" not in daemon.workers, 2.5, message="extra stopped")
        assert "docs" in daemon.workers


def test_a_configmap_style_swap_of_a_symlinked_directory_is_seen(
    tmp_path: Path, env: dict[str, str], socket_dir: Path
) -> None:
    root = make_tree(tmp_path / "docs", {"a.txt": "alpha"})
    pairs_dir = tmp_path / "pairs.d"
    pairs_dir.mkdir()
    # The kubelet's layout: NAME -> ..data/NAME, ..data -> ..<timestamp>/.
    first = pairs_dir / "..2026_1"
    first.mkdir()
    (first / "docs.toml").write_text(f'local = "{root}"\ncontainer = "one"\n')
    (pairs_dir / "..data").symlink_to(first.name)
    (pairs_dir / "docs.toml").symlink_to("..data/docs.toml")
    daemon = start(tmp_path, env, socket_dir, [], pairs_dir=pairs_dir)
    with running(daemon):
        wait_until(lambda: "docs" in daemon.workers, SYNC_TIMEOUT, message="the pair")
        assert daemon.workers["docs"].pair.container == "one"
        second = pairs_dir / "..2026_2"
        second.mkdir()
        (second / "docs.toml").write_text(f'local = "{root}"\ncontainer = "two"\n')
        swap = pairs_dir / "..data_tmp"
        swap.symlink_to(second.name)
        os.replace(swap, pairs_dir / "..data")
        wait_until(
            lambda: "docs" in daemon.workers and daemon.workers["docs"].pair.container == "two",
            2.5,
            message="the swapped settings",
        )


# -- where things are ----------------------------------------------------------------------


def test_the_socket_is_control_socket_else_in_the_runtime_directory_else_the_state_dir(
    tmp_path: Path,
) -> None:
    config = tmp_path / "conf" / "daemon.toml"
    config.parent.mkdir()
    config.write_text('state_dir = "state"\n')
    settings = Settings.load(config, env={})
    assert socket_path(settings, {}) == tmp_path / "conf" / "state" / "control.sock"
    runtime = {"RUNTIME_DIRECTORY": "/run/cntr-sync-docs:/run/other"}
    assert socket_path(settings, runtime) == Path("/run/cntr-sync-docs/control.sock")
    # Relative paths in the file mean "next to it", as state_dir's do.
    config.write_text('control_socket = "run/c.sock"\npairs_dir = "pairs.d"\n')
    settings = Settings.load(config, env={})
    assert socket_path(settings, runtime) == tmp_path / "conf" / "run" / "c.sock"
    assert pairs_dir_path(settings) == tmp_path / "conf" / "pairs.d"
