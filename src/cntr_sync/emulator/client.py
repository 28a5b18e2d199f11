"""``EmulatorControl``: drive a running emulator's control surface from another process.

Owns the Python client of the ``/_emulator/`` endpoints (see ``control``), for
tests that start the emulator as a subprocess or a server thread. It speaks plain
httpx and raises ``httpx.HTTPStatusError`` when the emulator refuses a request.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote

import httpx

from .faults import ScriptedStatus
from .settings import FaultConfig, GatewayStyle
from .wire import API_PREFIXES


class EmulatorControl:
    """Client of an emulator started with ``control=True``.

    ``base_url`` may be the API base (``http://127.0.0.1:8000/v1``) or the server
    root; any API prefix is stripped. ``transport`` allows in-process use, e.g.
    ``httpx.MockTransport(emulator.handle)``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        for prefix in API_PREFIXES:
            if prefix and root.endswith(prefix):
                root = root[: -len(prefix)]
                break
        self._http = httpx.Client(
            base_url=root + "/_emulator", timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        response = self._http.request(method, path, json=payload)
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        return bool(self._call("GET", "/health").get("ok"))

    def reset(self) -> None:
        self._call("POST", "/reset")

    def counts(self) -> dict[str, int]:
        return cast(dict[str, int], self._call("GET", "/counts"))

    def reset_counts(self) -> None:
        self._call("POST", "/counts/reset")

    def requests_log(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._call("GET", "/requests"))

    def faults(self) -> FaultConfig:
        return FaultConfig.model_validate(self._call("GET", "/faults"))

    def set_faults(self, config: FaultConfig) -> None:
        self._call("PUT", "/faults", config.model_dump(mode="json"))

    def clear_faults(self) -> None:
        """No faults from now on: the configuration back to none, scripted faults dropped."""
        self._call("POST", "/faults/clear")

    def fail_next(
        self,
        operation: str,
        status: ScriptedStatus,
        count: int = 1,
        headers: Mapping[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        payload = {
            "operation": operation,
            "status": status,
            "count": count,
            "headers": dict(headers) if headers is not None else None,
            "code": code,
        }
        self._call("POST", "/fail_next", payload)

    def gateway(self) -> GatewayStyle:
        return GatewayStyle.model_validate(self._call("GET", "/gateway"))

    def set_gateway(self, style: GatewayStyle) -> None:
        self._call("PUT", "/gateway", style.model_dump(mode="json"))

    def advance_clock(self, seconds: float) -> float:
        return float(self._call("POST", "/clock/advance", {"seconds": seconds})["now"])

    def create_container(self, name: str, minutes: int = 20) -> dict[str, Any]:
        return cast(
            dict[str, Any], self._call("POST", "/containers", {"name": name, "minutes": minutes})
        )

    def expire_container(self, container_id: str) -> None:
        self._call("POST", f"/containers/{_segment(container_id)}/expire")

    def add_assistant_file(
        self,
        container_id: str,
        path: str,
        content: bytes | None = b"",
        *,
        bytes_null: bool = False,
        content_missing: bool = False,
        announced_bytes: int | None = None,
    ) -> dict[str, Any]:
        payload = {
            "path": path,
            "content_b64": None if content is None else base64.b64encode(content).decode(),
            "bytes_null": bytes_null,
            "content_missing": content_missing,
            "announced_bytes": announced_bytes,
        }
        return cast(
            dict[str, Any],
            self._call("POST", f"/containers/{_segment(container_id)}/assistant_files", payload),
        )

    def rewrite_file(
        self, container_id: str, file_id: str, content: bytes, *, bytes_null: bool = False
    ) -> dict[str, Any]:
        payload = {"content_b64": base64.b64encode(content).decode(), "bytes_null": bytes_null}
        path = f"/containers/{_segment(container_id)}/files/{_segment(file_id)}/rewrite"
        return cast(dict[str, Any], self._call("POST", path, payload))

    def show_fields(
        self,
        container_id: str,
        file_id: str,
        shown: Mapping[str, Any],
        hidden: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Answers about the file show ``shown`` instead of its fields, without ``hidden``."""
        payload = {"shown": dict(shown), "hidden": list(hidden)}
        path = f"/containers/{_segment(container_id)}/files/{_segment(file_id)}/shown"
        return cast(dict[str, Any], self._call("POST", path, payload))

    def add_openai_file(self, file_id: str, filename: str, content: bytes) -> None:
        payload = {
            "file_id": file_id,
            "filename": filename,
            "content_b64": base64.b64encode(content).decode(),
        }
        self._call("POST", "/openai_files", payload)


def _segment(value: str) -> str:
    return quote(value, safe="")
