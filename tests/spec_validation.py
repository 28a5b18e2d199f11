"""Check every request and response of the client tests against the OpenAPI contract.

The contract is the containers excerpt of the official OpenAI spec, kept in the
repository at ``tests/data/openai-containers.openapi.yaml`` (a copy of the
official spec's containers part, so a fresh clone tests against it), or the
file named by ``$CNTR_SYNC_OPENAPI_SPEC``. A missing file fails the test that
needs it: a contract that silently stops being checked is no contract.

Usage::

    transport = ValidatingTransport(httpx.MockTransport(handler))
    with httpx.Client(transport=transport, base_url="http://emulator/v1") as client:
        ...  # exercise the API client
    transport.assert_clean()

``ValidatingTransport`` never raises a validation failure inside the request
(that would look like a transport error to the code under test): it records
each one in ``failures`` and ``assert_clean()`` reports them all at the end.

Deliberate leniency, and nothing more:

* The server base URL may carry any prefix: the path from ``/containers`` on is
  validated against the spec's server ``https://api.openai.com/v1``.
* Query parameters and headers the spec does not declare are ignored (gateways
  add ``provider=openai``, ``custom-llm-provider``, ``x-bf-vk`` ...), and so is
  the security requirement (gateways authenticate with ``api-key``, ``x-api-key``
  or Basic instead of a bearer token).
* An empty list may carry ``first_id: null`` / ``last_id: null`` (what servers
  send; the spec says string).
* With ``allow_null_bytes=True``, a container file whose ``source`` is
  ``"assistant"`` may carry ``bytes: null``.
* Error statuses the spec does not declare (it declares only 200 and 429) are
  checked against ``#/components/schemas/ErrorResponse`` instead of failing as
  undeclared.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.validation.request import (
    V31RequestBodyValidator,
    V31RequestParametersValidator,
)
from openapi_core.validation.response import V31ResponseValidator
from openapi_schema_validator import OAS31Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from werkzeug.datastructures import Headers, ImmutableMultiDict

__all__ = ["SPEC_ENV_VAR", "ValidatingTransport", "load_spec", "spec_path"]

SPEC_ENV_VAR = "CNTR_SYNC_OPENAPI_SPEC"
_DEFAULT_SPEC = Path(__file__).resolve().parent / "data" / "openai-containers.openapi.yaml"

# Requests are validated as if sent to the spec's own server, whatever the prefix.
_SPEC_HOST = "https://api.openai.com"
_SPEC_BASE_PATH = "/v1"

_LIST_OPERATIONS = frozenset({"ListContainers", "ListContainerFiles"})
_FILE_OPERATIONS = frozenset({"RetrieveContainerFile", "CreateContainerFile"})
_CONTAINERS_TAIL = re.compile(r"/containers(?:/.*)?$")
_SPEC_URI = "urn:cntr-sync:openai-containers-openapi"


def spec_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the contract is read from: ``$CNTR_SYNC_OPENAPI_SPEC`` or the copy in tests/data."""
    override = (os.environ if environ is None else environ).get(SPEC_ENV_VAR)
    return Path(override).expanduser() if override else _DEFAULT_SPEC


def load_spec(environ: Mapping[str, str] | None = None) -> OpenAPI:
    """The parsed contract (cached per path); ``pytest.fail`` when the file is absent."""
    path = spec_path(environ).resolve()
    if not path.is_file():
        pytest.fail(f"OpenAPI spec not found at {path}", pytrace=False)
    return _load_spec(path)


@functools.cache
def _load_spec(path: Path) -> OpenAPI:
    # spec_validator_cls=None: the official spec is not valid against the OAS 3.1
    # meta-schema (ContainerResource lists its `required` names twice, and the
    # meta-schema demands uniqueItems), which openapi-core would refuse at load.
    # The duplicates change nothing about what validates.
    #
    # extra_media_type_deserializers: for OAS 3.1, openapi-core turns a multipart
    # `type: string, format: binary` part into `bytes`, and its 3.1 schema
    # validator then reports "b'...' is not of type 'string'" (only its 3.0
    # validator accepts bytes for binary). Decoding octet-stream parts as latin-1
    # is lossless and lets the multipart body be checked like any other. No
    # response in this spec declares application/octet-stream content, so
    # nothing else is affected.
    config = Config(
        spec_validator_cls=None,
        extra_media_type_deserializers={"application/octet-stream": _latin1_loads},
    )
    return OpenAPI.from_file_path(str(path), config=config)


def _latin1_loads(value: bytes, **parameters: str) -> str:
    return value.decode("latin-1")


# --- openapi-core adapters ----------------------------------------------------------


@dataclass
class _SpecRequest:
    """openapi_core.protocols.Request, rebased onto the spec's server URL."""

    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters
    host_url: str = _SPEC_HOST


@dataclass
class _SpecResponse:
    """openapi_core.protocols.Response over bytes already read."""

    status_code: int
    data: bytes | None
    content_type: str
    headers: Headers = field(default_factory=Headers)


def _content_type(headers: httpx.Headers) -> str:
    # The protocol wants it lowercase; lowercase only the media type, since a
    # multipart boundary parameter is case-sensitive.
    value: str = headers.get("content-type", "")
    media_type, sep, params = value.partition(";")
    return media_type.strip().lower() + (sep + params if sep else "")


# --- the transport ---------------------------------------------------------------------


class ValidatingTransport(httpx.BaseTransport):
    """Forward to ``inner``; validate each request and response against the contract.

    ``failures`` holds one line per problem (operation, method, path, message);
    ``validated`` counts the exchanges seen. Bodies reach ``inner`` and the
    caller unchanged.
    """

    def __init__(
        self,
        inner: httpx.BaseTransport,
        *,
        allow_null_bytes: bool = False,
        spec: OpenAPI | None = None,
    ) -> None:
        self.inner = inner
        self.allow_null_bytes = allow_null_bytes
        self.spec = spec if spec is not None else load_spec()
        self.failures: list[str] = []
        self.validated = 0
        self._lock = threading.Lock()
        schema_path = self.spec.spec
        self._finder = APICallPathFinder(schema_path)
        # Parameters and body only: the security requirement is not checked (see
        # the module docstring), so the full V31RequestValidator is not used.
        self._params_validator = V31RequestParametersValidator(schema_path)
        self._body_validator = V31RequestBodyValidator(
            schema_path,
            extra_media_type_deserializers=self.spec.config.extra_media_type_deserializers,
        )
        self._response_validator = V31ResponseValidator(schema_path)
        registry = Registry().with_resource(
            _SPEC_URI, DRAFT202012.create_resource(schema_path.read_value())
        )
        self._error_validator = OAS31Validator(
            {"$ref": f"{_SPEC_URI}#/components/schemas/ErrorResponse"}, registry=registry
        )

    # httpx.BaseTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # read() keeps the bytes and swaps any one-shot stream for a replayable
        # ByteStream, so the inner transport still gets the whole body.
        body = request.read()
        label = f"{request.method} {request.url.raw_path.decode('ascii').partition('?')[0]}"
        spec_request = self._spec_request(request, body)
        operation = None
        if spec_request is None:
            self._fail(f"? {label}: request: path has no /containers part")
        else:
            try:
                operation = self._check_request(spec_request, label)
            except Exception as exc:  # never let the harness break the exchange
                self._fail(f"? {label}: request: validator crashed: {exc!r}")

        response = self.inner.handle_request(request)
        stream = response.stream
        if not isinstance(stream, httpx.SyncByteStream):
            raise TypeError("ValidatingTransport needs a sync inner transport")
        # Iterate the stream itself, not iter_raw(): a handler's
        # httpx.Response(json=...) is already marked consumed, but its
        # ByteStream still yields the raw bytes.
        try:
            raw = b"".join(stream)
        finally:
            response.close()
        forwarded = httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(raw),
            extensions=response.extensions,
            request=request,
        )
        if spec_request is not None and operation is not None:
            # A throwaway response decodes any Content-Encoding for validation;
            # the caller gets the raw bytes and decodes them itself.
            try:
                decoded = httpx.Response(
                    status_code=response.status_code, headers=response.headers, content=raw
                ).content
                self._check_response(spec_request, operation, label, forwarded, decoded)
            except Exception as exc:  # e.g. a body that fails to gunzip
                self._fail(f"{operation} {label}: response: validator crashed: {exc!r}")
        with self._lock:
            self.validated += 1
        return forwarded

    def close(self) -> None:
        self.inner.close()

    # results

    def assert_clean(self) -> None:
        """Raise AssertionError listing every failure recorded so far."""
        if self.failures:
            listing = "\n".join(f"  - {line}" for line in self.failures)
            raise AssertionError(
                f"{len(self.failures)} OpenAPI contract failure(s) in {self.validated} "
                f"exchange(s), spec {spec_path()}:\n{listing}"
            )

    # internals

    def _fail(self, line: str) -> None:
        with self._lock:
            self.failures.append(line)

    def _spec_request(self, request: httpx.Request, body: bytes) -> _SpecRequest | None:
        # raw_path keeps percent-encoding, so an id with a "/" stays one segment.
        raw_path = request.url.raw_path.decode("ascii").partition("?")[0]
        match = _CONTAINERS_TAIL.search(raw_path)
        if match is None:
            return None
        return _SpecRequest(
            path=_SPEC_BASE_PATH + match.group(0),
            method=request.method.lower(),
            body=body or None,
            content_type=_content_type(request.headers),
            parameters=RequestParameters(
                query=ImmutableMultiDict(request.url.params.multi_items()),
                header=Headers(request.headers.multi_items()),
            ),
        )

    def _check_request(self, spec_request: _SpecRequest, label: str) -> str | None:
        """Validate; return the operationId, or None when the spec has no such operation."""
        try:
            found = self._finder.find(spec_request.method, _SPEC_HOST + spec_request.path)
        except PathError as not_found:
            self._fail(f"? {label}: request: {not_found}")
            return None
        operation = str((found.operation / "operationId").read_str("?"))
        errors = [
            *self._params_validator.iter_errors(spec_request),
            *self._body_validator.iter_errors(spec_request),
        ]
        for exc in errors:
            self._fail(f"{operation} {label}: request: {_describe(exc)}")
        return operation

    def _check_response(
        self,
        spec_request: _SpecRequest,
        operation: str,
        label: str,
        response: httpx.Response,
        body: bytes,
    ) -> None:
        status = response.status_code
        where = f"{operation} {label}: response {status}"
        content_type = _content_type(response.headers)
        if status >= 400 and status != 429:
            # Undeclared in the spec, but every real server sends them: hold them
            # to the spec's own error shape.
            for message in self._error_body_errors(content_type, body):
                self._fail(f"{where}: {message}")
            return
        if status == 200 and content_type.startswith("application/json"):
            body = self._tolerate_known_nulls(operation, body)
        spec_response = _SpecResponse(
            status_code=status,
            data=body or None,
            content_type=content_type,
            headers=Headers(response.headers.multi_items()),
        )
        for exc in self._response_validator.iter_errors(spec_request, spec_response):
            self._fail(f"{where}: {_describe(exc)}")

    def _error_body_errors(self, content_type: str, body: bytes) -> Iterator[str]:
        if not content_type.startswith("application/json"):
            yield f"error body is not JSON (content-type {content_type or 'missing'!r})"
            return
        try:
            document = json.loads(body)
        except ValueError as exc:
            yield f"error body is not JSON: {exc}"
            return
        for error in self._error_validator.iter_errors(document):
            yield f"ErrorResponse {_schema_error(error)}"

    def _tolerate_known_nulls(self, operation: str, body: bytes) -> bytes:
        """Substitute values for exactly the nulls we accept, so nothing else is masked."""
        try:
            document = json.loads(body)
        except ValueError:
            return body  # openapi-core reports it
        if not isinstance(document, dict):
            return body
        changed = False
        if operation in _LIST_OPERATIONS:
            if document.get("data") == []:
                for key in ("first_id", "last_id"):
                    if key in document and document[key] is None:
                        document[key] = ""
                        changed = True
            if operation == "ListContainerFiles" and isinstance(document.get("data"), list):
                changed |= self._tolerate_null_bytes(document["data"])
        elif operation in _FILE_OPERATIONS:
            changed |= self._tolerate_null_bytes([document])
        return json.dumps(document).encode() if changed else body

    def _tolerate_null_bytes(self, files: Iterable[Any]) -> bool:
        if not self.allow_null_bytes:
            return False
        changed = False
        for item in files:
            if (
                isinstance(item, dict)
                and item.get("source") == "assistant"
                and "bytes" in item
                and item["bytes"] is None
            ):
                item["bytes"] = 0
                changed = True
        return changed


def _describe(exc: BaseException) -> str:
    """One line from an openapi-core error and its causes, down to the schema errors."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        schema_errors = getattr(current, "schema_errors", None)
        if schema_errors:
            # dict.fromkeys: the spec lists some required names twice.
            parts.append("; ".join(dict.fromkeys(_schema_error(e) for e in schema_errors)))
            break
        text = str(current).split(": Value ", 1)[0]
        if not text or text == type(current).__name__:
            text = repr(current)  # e.g. InvalidHeader(name='Retry-After')
        parts.append(
            text if text.startswith(type(current).__name__) else f"{type(current).__name__}: {text}"
        )
        current = current.__cause__
    return " <- ".join(parts)


def _schema_error(error: BaseException) -> str:
    """A jsonschema ValidationError as "at <json path>: <message>"."""
    json_path = getattr(error, "json_path", None)
    if json_path is None:
        return str(error)
    return f"at {json_path}: {getattr(error, 'message', error)}"
