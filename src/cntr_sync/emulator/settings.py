"""The emulator's knobs: which gateway it imitates and which faults it injects.

Owns the value types ``GatewayStyle`` and ``FaultConfig`` (frozen pydantic models,
so the control surface can take them as JSON) and the closed list of operation
names every count, log entry and fault filter uses. It holds no state and does
no I/O.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Operation = Literal[
    "list_containers",
    "create_container",
    "retrieve_container",
    "delete_container",
    "create_file",
    "list_files",
    "retrieve_file",
    "delete_file",
    "file_content",
]
"""The nine API operations, named as ``counts()`` reports them."""

API_OPERATIONS: tuple[Operation, ...] = get_args(Operation)
UNKNOWN_OPERATION = "unknown"
"""Requests that matched no route, or a route with the wrong method."""

RetryHeader = Literal[
    "retry-after-ms",
    "retry-after",
    "retry-after-date",
    "llm_provider-retry-after",
    "llm_provider-retry-after-ms",
    "none",
]
AmbiguousMode = Literal["alternate", "random", "error", "drop"]
ApiPrefix = Annotated[str, StringConstraints(pattern=r"^(/[A-Za-z0-9._~-]+)*$")]
"""Where a server serves the API: path segments with a leading slash, or "" (the root)."""


class GatewayStyle(BaseModel):
    """How the emulated server differs from api.openai.com, as gateways in front of it do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_prefixes: tuple[ApiPrefix, ...] = Field(default=("/v1",), min_length=1)
    """Where the API is served. ``/v1`` only, as api.openai.com: a base URL without it
    fails here as it would there. Gateways serve it elsewhere: ``/openai/v1`` (Azure,
    Bifrost), ``""`` (the server's root); list every prefix a test needs."""
    path_style: Literal["plain", "hashed"] = "hashed"
    """``/mnt/data/<name>`` or, like the official example, ``/mnt/data/<32 hex>-<name>``."""
    cursor_style: Literal["id", "opaque"] = "id"
    """``opaque`` imitates Bifrost: lists carry an ``after`` token that must be sent back,
    a bare item id as ``after`` is refused, and ``has_more`` is left out when false."""
    drop_filenames: bool = False
    """Every upload is stored under the name ``file``, as Bifrost does."""
    long_ids: bool = False
    """Ids without the ``cntr_``/``cfile_`` prefixes and longer than 64 characters."""
    percent_decode_filenames: bool = False
    """Percent-decode the whole multipart filename (RFC 7578 §4.2). Off by default, where
    only the HTML5 form escapes ``%22``, ``%0D`` and ``%0A`` are undone, so a name
    holding a literal ``%41`` round-trips through httpx unchanged."""
    has_more: Literal["boolean", "omitted", "string"] = "boolean"
    """How list pages say there is more: a boolean, not at all, or ``"true"``/``"false"``
    strings (servers that do either make a client that trusts only ``True`` stop early)."""
    keep_form_escapes: bool = False
    """Keep ``%22`` (and ``%0D``, ``%0A``) in multipart filenames as sent, as many
    multipart parsers do: a name with a ``"`` comes back as ``say %22hi%22.txt``."""
    normalize_filenames: Literal["none", "NFC", "NFD"] = "none"
    """Store upload names in this Unicode normalisation (macOS tools send NFD)."""
    base_name_only: bool = False
    """Keep only the last path segment of an upload's name (``dir/x.txt`` -> ``x.txt``)."""
    max_page_size: int | None = Field(default=None, ge=1)
    """Answer at most this many items a page, whatever ``limit`` asks (the spec allows
    fewer): small trees then page too, and a client that stops early is caught."""
    json_file_id: bool = True
    """Accept ``{"file_id": ...}`` JSON creates; Bifrost and LiteLLM refuse them."""
    ignore_order: bool = False
    """List oldest first whatever ``order`` asks, as a gateway that drops the parameter."""


class FaultConfig(BaseModel):
    """Faults injected into API requests; all rates are fractions of requests, 0 by default.

    Random draws come from ``random.Random(seed)``, so a fixed seed and a fixed request
    sequence give the same faults every run. Scripted faults (``fail_next``) are
    consumed before any random one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int | None = None
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Answered 500, 502 or 503."""
    rate_429: float = Field(default=0.0, ge=0.0, le=1.0)
    """Answered 429 with the retry hint below."""
    retry_header: RetryHeader = "retry-after-ms"
    retry_value: float = Field(default=0.05, ge=0.0)
    """Seconds the retry hint asks for."""
    drop_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """The connection is dropped before any response."""
    ambiguous_upload_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Uploads that ARE stored but answered with a 500 or a dropped connection."""
    ambiguous_mode: AmbiguousMode = "alternate"
    """How an ambiguous upload is answered: alternate 500/drop, random, always 500, always drop."""
    latency_ms: float = Field(default=0.0, ge=0.0)
    """Added before every answer."""
    download_bytes_per_s: float | None = Field(default=None, gt=0.0)
    """File content is sent no faster than this (not subject to ``only_operations``)."""
    rate_limit_per_s: float | None = Field(default=None, gt=0.0)
    """Token bucket (burst = max(1, rate)); over it -> 429 with ``retry-after-ms``."""
    only_operations: frozenset[Operation] | None = None
    """When set, faults apply to these operations only."""
    broken_container_names: frozenset[str] = frozenset()
    """Containers with these names are broken: creating one, any request whose path
    names one by id, and listing containers filtered by one of these names answer 500.
    Not subject to ``only_operations``; the requests are counted as usual."""

    def applies_to(self, operation: str) -> bool:
        """Whether faults may hit a request for ``operation``."""
        return self.only_operations is None or operation in self.only_operations
