"""The control surface over HTTP: ``/_emulator/...`` routes onto the Emulator's methods.

Owns the JSON shapes of the control endpoints and their mapping to the
``Emulator`` control methods. Served only when the emulator was built with
``control=True``; never counted or logged as API traffic. The matching Python
client is ``EmulatorControl`` in ``client``.

    GET  /_emulator/health                          -> {"ok": true}
    POST /_emulator/reset                           -> {"ok": true}
    GET  /_emulator/counts                          -> {operation: count}
    POST /_emulator/counts/reset                    -> {"ok": true}
    GET  /_emulator/requests                        -> [{operation, method, path, query, headers}]
    GET|PUT /_emulator/faults         FaultConfig   -> FaultConfig
    POST /_emulator/faults/clear                    -> FaultConfig (none; scripted ones gone too)
    POST /_emulator/fail_next  {operation, status, count?, headers?, code?} -> {"ok": true}
    GET|PUT /_emulator/gateway        GatewayStyle  -> GatewayStyle
    POST /_emulator/clock/advance     {seconds}     -> {"now": float}
    POST /_emulator/containers        {name, minutes?} -> container
    POST /_emulator/containers/{id}/expire          -> {"ok": true}
    POST /_emulator/containers/{id}/assistant_files
         {path, content_b64?: str|null, bytes_null?, content_missing?, announced_bytes?}
                                                    -> container file
    POST /_emulator/containers/{id}/files/{file_id}/rewrite
         {content_b64, bytes_null?}                 -> container file (same id, new bytes)
    POST /_emulator/containers/{id}/files/{file_id}/shown
         {shown: {field: any JSON}, hidden?: [field]} -> container file as answers show it
    POST /_emulator/openai_files      {file_id, filename, content_b64} -> {"ok": true}
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .settings import FaultConfig, GatewayStyle
from .wire import ApiError, EmuRequest, EmuResponse, bad_request, json_response, read_limited

if TYPE_CHECKING:
    from .core import Emulator

CONTROL_BODY_LIMIT = 256 * 1024 * 1024
OK = {"ok": True}


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AssistantFileBody(_Body):
    path: str
    content_b64: str | None = ""
    bytes_null: bool = False
    content_missing: bool = False
    announced_bytes: int | None = Field(default=None, ge=0)


class RewriteBody(_Body):
    content_b64: str
    bytes_null: bool = False


class ShownBody(_Body):
    shown: dict[str, Any] = Field(default_factory=dict)
    hidden: list[str] = Field(default_factory=list)


class OpenAIFileBody(_Body):
    file_id: str
    filename: str
    content_b64: str = ""


class FailNextBody(_Body):
    operation: str
    status: int | Literal["drop", "ambiguous", "ambiguous_drop"]
    count: int = Field(default=1, ge=1)
    headers: dict[str, str] | None = None
    code: str | None = None


class AdvanceClockBody(_Body):
    seconds: float


class CreateContainerBody(_Body):
    name: str
    minutes: int = Field(default=20, ge=1)


def dispatch_control(
    emulator: Emulator, parts: tuple[str, ...], request: EmuRequest
) -> EmuResponse:
    """Answer one ``/_emulator/...`` request."""
    method = request.method.upper()
    try:
        return _route(emulator, parts, method, request)
    except ApiError as exc:
        return exc.response()
    except (ValidationError, ValueError, binascii.Error) as exc:
        return bad_request(f"Invalid control request: {exc}").response()


def _route(
    emulator: Emulator, parts: tuple[str, ...], method: str, request: EmuRequest
) -> EmuResponse:
    match parts, method:
        case ("health",), "GET":
            return json_response(200, OK)
        case ("reset",), "POST":
            emulator.reset()
            return json_response(200, OK)
        case ("counts",), "GET":
            return json_response(200, emulator.counts())
        case ("counts", "reset"), "POST":
            emulator.reset_counts()
            return json_response(200, OK)
        case ("requests",), "GET":
            return json_response(200, [record.to_json() for record in emulator.requests_log()])
        case ("faults",), "GET":
            return json_response(200, emulator.faults.model_dump(mode="json"))
        case ("faults",), "PUT" | "POST":
            emulator.set_faults(FaultConfig.model_validate_json(_body(request)))
            return json_response(200, emulator.faults.model_dump(mode="json"))
        case ("faults", "clear"), "POST":
            emulator.clear_faults()
            return json_response(200, emulator.faults.model_dump(mode="json"))
        case ("fail_next",), "POST":
            fail = FailNextBody.model_validate_json(_body(request))
            emulator.fail_next(fail.operation, fail.status, fail.count, fail.headers, fail.code)
            return json_response(200, OK)
        case ("gateway",), "GET":
            return json_response(200, emulator.gateway.model_dump(mode="json"))
        case ("gateway",), "PUT" | "POST":
            emulator.set_gateway(GatewayStyle.model_validate_json(_body(request)))
            return json_response(200, emulator.gateway.model_dump(mode="json"))
        case ("clock", "advance"), "POST":
            advance = AdvanceClockBody.model_validate_json(_body(request))
            return json_response(200, {"now": emulator.advance_clock(advance.seconds)})
        case ("containers",), "POST":
            create = CreateContainerBody.model_validate_json(_body(request))
            return json_response(200, emulator.create_container(create.name, create.minutes))
        case ("containers", container_id, "expire"), "POST":
            emulator.expire_container(container_id)
            return json_response(200, OK)
        case ("containers", container_id, "assistant_files"), "POST":
            return json_response(200, _add_assistant_file(emulator, container_id, request))
        case ("containers", container_id, "files", file_id, "rewrite"), "POST":
            rewrite = RewriteBody.model_validate_json(_body(request))
            content = base64.b64decode(rewrite.content_b64, validate=True)
            return json_response(
                200,
                emulator.rewrite_file(
                    container_id, file_id, content, bytes_null=rewrite.bytes_null
                ),
            )
        case ("containers", container_id, "files", file_id, "shown"), "POST":
            shown = ShownBody.model_validate_json(_body(request))
            return json_response(
                200, emulator.show_fields(container_id, file_id, shown.shown, shown.hidden)
            )
        case ("openai_files",), "POST":
            registered = OpenAIFileBody.model_validate_json(_body(request))
            content = base64.b64decode(registered.content_b64, validate=True)
            emulator.add_openai_file(registered.file_id, registered.filename, content)
            return json_response(200, OK)
    return ApiError(
        404, f"Unknown control endpoint ({method} /_emulator/{'/'.join(parts)})"
    ).response()


def _add_assistant_file(
    emulator: Emulator, container_id: str, request: EmuRequest
) -> dict[str, Any]:
    spec = AssistantFileBody.model_validate_json(_body(request))
    content = None
    if spec.content_b64 is not None:
        content = base64.b64decode(spec.content_b64, validate=True)
    return emulator.add_assistant_file(
        container_id,
        spec.path,
        content,
        bytes_null=spec.bytes_null,
        content_missing=spec.content_missing,
        announced_bytes=spec.announced_bytes,
    )


def _body(request: EmuRequest) -> bytes:
    return read_limited(request.body, CONTROL_BODY_LIMIT) or b"{}"
