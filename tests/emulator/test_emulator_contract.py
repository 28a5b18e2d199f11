"""Every emulator answer, in every gateway style that keeps the official shapes, passes
the OpenAPI contract harness of ``tests/spec_validation.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from cntr_sync.emulator import Emulator, GatewayStyle


def _spec_validation() -> ModuleType:
    """The shared harness, importable however pytest was pointed at the tests."""
    loaded = sys.modules.get("spec_validation")
    if loaded is not None:
        return loaded
    source = Path(__file__).resolve().parents[1] / "spec_validation.py"
    if not source.is_file():
        pytest.skip("tests/spec_validation.py is not there")
    spec = importlib.util.spec_from_file_location("spec_validation", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["spec_validation"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "gateway",
    [GatewayStyle(), GatewayStyle(path_style="plain", drop_filenames=True, long_ids=True)],
)
def test_all_operations_match_the_contract(tmp_path: Path, gateway: GatewayStyle) -> None:
    harness = _spec_validation()
    with Emulator(data_dir=tmp_path, gateway=gateway) as emu:
        transport = harness.ValidatingTransport(emu.transport(), allow_null_bytes=True)
        with httpx.Client(transport=transport, base_url="http://emulator/v1") as client:
            container_id = client.post(
                "/containers",
                json={
                    "name": "contract",
                    "memory_limit": "4g",
                    "expires_after": {"anchor": "last_active_at", "minutes": 3},
                },
            ).json()["id"]
            client.get("/containers", params={"limit": 1, "order": "asc", "name": "contract"})
            client.get("/containers", params={"name": "nobody"})
            client.get(f"/containers/{container_id}")
            file_id = client.post(
                f"/containers/{container_id}/files", files={"file": ("x.txt", b"abc")}
            ).json()["id"]
            emu.add_assistant_file(container_id, "/mnt/data/out.csv", b"1", bytes_null=True)
            client.get(f"/containers/{container_id}/files", params={"limit": 1})
            client.get(f"/containers/{container_id}/files/{file_id}")
            client.get(f"/containers/{container_id}/files/{file_id}/content")
            client.get("/containers/cntr_missing")
            client.get("/containers", params={"limit": 0})
            emu.fail_next("list_containers", 429)
            client.get("/containers")
            client.delete(f"/containers/{container_id}/files/{file_id}")
            emu.expire_container(container_id)
            client.get(f"/containers/{container_id}/files")
            client.delete(f"/containers/{container_id}")
    transport.assert_clean()
    assert transport.validated >= 12
