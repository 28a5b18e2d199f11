"""Fuzzing the three places where hostile input enters cntr-sync (Hypothesis).

What this file proves, for every input Hypothesis generates (derandomized, so
every run is the same; ``FUZZ_EXAMPLES=N`` runs N examples per test instead of
the small defaults):

1. The listing parser (``ContainersClient.iter_files`` over ``rest.paginate``),
   fed page bodies through ``httpx.MockTransport``: malformed JSON, random
   bytes, non-object JSON, JSON nested too deeply, ``data`` missing or not a
   list or holding non-objects, files with missing or mistyped fields,
   ``has_more`` in every shape, cursors that are missing or repeat, huge pages,
   odd statuses, content types and content encodings. Either the listing is
   complete (every item of every page served, in order, ending on a page that
   may end a listing, each a well-formed file) or it raises an ``ApiError``
   with a one-line message. It never asks for a page after the script ran out
   and the last page was served twice: a repeating server cannot make it loop.
2. The config loader (``Settings.load``), fed generated TOML files (random keys
   and values of every TOML type, nested tables, ``[[pairs]]`` with odd values,
   huge numbers, NULs, raw non-UTF-8 bytes) and ``CNTR_SYNC_*`` environments:
   either settings that can be used (pairs resolved, dumped, the API key never
   in a dump) or a ``ConfigError`` whose message is one line, names the file
   or the variable, and never contains the API key.
3. Remote paths (``remote_paths.local_relpath``), fed a corpus of traversal and
   encoding tricks plus generated text: either refused with a reason, or a
   relative POSIX path with no empty, ``.`` or ``..`` segment, no NUL or control
   character, nothing of cntr-sync's own (on a case-insensitive file system
   too), that stays under the root when joined. End to end, a pull pass
   against the in-process emulator writes nothing outside the root, does not
   raise, and warns once for each refused path.

Anything else escaping (KeyError, TypeError, UnicodeError, RecursionError, a
pydantic ValidationError...) fails the test that found it.
"""

from __future__ import annotations

import datetime
import gzip
import json
import math
import os
import posixpath
import tempfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import httpx
import pytest
from hypothesis import (
    HealthCheck,
    Phase,
    currently_in_test_context,
    event,
    example,
    given,
    settings,
)
from hypothesis import strategies as st

from cntr_sync.api import ContainersClient
from cntr_sync.config import PairSettings, Settings
from cntr_sync.emulator import Emulator
from cntr_sync.engine import Engine
from cntr_sync.errors import ApiError, CntrSyncError, ConfigError, ProtocolError, one_line
from cntr_sync.ignore import IgnoreRules
from cntr_sync.index import Index
from cntr_sync.models import MAX_FILE_BYTES, MAX_TIMESTAMP, ContainerFile, Pair, RemoteFile
from cntr_sync.names import to_remote_file
from cntr_sync.remote_paths import PathRules, Refused, local_relpath, printable
from cntr_sync.rest import PAGE_LIMIT
from cntr_sync.result import PassResult
from cntr_sync.tree_names import (
    IGNORE_FILE,
    MAX_RELPATH_BYTES,
    NAME_MAX_BYTES,
    PARTIAL_PREFIX,
    STATE_DIR_NAME,
)

# Hypothesis fuzzing: many generated inputs a test.
pytestmark = pytest.mark.machine

# Not CNTR_SYNC_*: the config loader refuses unknown CNTR_SYNC_* variables, and
# other tests load settings from the real environment.
EXAMPLES_ENV = "FUZZ_EXAMPLES"
_LONG_RUN = int(os.environ.get(EXAMPLES_ENV, "0") or "0")


def fuzz(default_examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings of this file: the same examples on every run, bounded."""
    return settings(
        derandomize=True,
        database=None,
        max_examples=_LONG_RUN or default_examples,
        deadline=None,
        # No "explain" phase: on 5,000-character values it can outlast pytest's timeout.
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def label(outcome: str) -> None:
    """Count ``outcome`` in ``--hypothesis-show-statistics`` (a no-op outside Hypothesis)."""
    if currently_in_test_context():
        event(outcome)


def assert_one_line(error: CntrSyncError) -> None:
    """The user-facing promise of every error: one non-empty line."""
    text = str(error)
    assert text, type(error)
    assert text == error.message
    assert "\n" not in text and "\r" not in text, repr(text)


# ================================================================================
# 1. The listing parser
# ================================================================================

KEY = "sk-fuzz-key-0123456789abcdef"
CONTAINER_ID = "cntr_fuzz"


@dataclass(frozen=True, repr=False)
class Answer:
    """One scripted HTTP answer to a list request."""

    status: int
    body: bytes  # as sent, after any content-encoding
    plain: bytes  # what a JSON parser sees once the encoding is undone ("" when undecodable)
    headers: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        # Bodies run to megabytes; a failing example is shown by its start and size.
        excerpt = self.plain[:120] + (b"..." if len(self.plain) > 120 else b"")
        return f"Answer({self.status}, {len(self.body)} bytes, {self.headers!r}, plain={excerpt!r})"


class ClientLoopsError(AssertionError):
    """The client asked for another page after the last one was served twice."""


@dataclass
class PageServer:
    """Serves ``answers`` in order, then the last one again, at most once more.

    A client that asks past that has accepted the same page twice and would
    ask forever on a server that keeps repeating itself.
    """

    answers: list[Answer]
    served: list[Answer] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"
        assert request.url.path == f"/v1/containers/{CONTAINER_ID}/files"
        if len(self.served) > len(self.answers):
            raise ClientLoopsError(
                f"request {len(self.served) + 1} for a script of {len(self.answers)} pages"
            )
        answer = self.answers[min(len(self.served), len(self.answers) - 1)]
        self.served.append(answer)
        self.queries.append(dict(request.url.params))
        return httpx.Response(answer.status, headers=list(answer.headers), content=answer.body)


def _never_sleep(seconds: float) -> None:
    raise AssertionError(f"a listing with max_retries=0 slept {seconds} s")


def list_files(answers: list[Answer]) -> tuple[list[ContainerFile] | CntrSyncError, PageServer]:
    """Every file ``iter_files`` yields over the script, or the error it raised."""
    server = PageServer(answers)
    with ContainersClient(
        KEY,
        base_url="http://gateway.test/v1",
        transport=httpx.MockTransport(server),
        max_retries=0,
        sleep=_never_sleep,
    ) as client:
        try:
            return list(client.iter_files(CONTAINER_ID)), server
        except CntrSyncError as exc:
            return exc, server


def is_last_page(page: Mapping[str, Any]) -> bool:
    """Whether a listing may end on ``page``: has_more false, or no "more" on a short page.

    The strings "true"/"false" may be read as the booleans or as no flag at all:
    either way a full page without ``false`` is never the last.
    """
    has_more = page.get("has_more")
    if has_more is False or (isinstance(has_more, str) and has_more.strip().lower() == "false"):
        return True
    return has_more is not True and len(page["data"]) < PAGE_LIMIT


def check_listing(outcome: list[ContainerFile] | CntrSyncError, server: PageServer) -> None:
    """The listing promise: complete and well-formed, or one clear API error; never a loop."""
    assert 1 <= len(server.served) <= len(server.answers) + 1
    afters = [query["after"] for query in server.queries[1:] if "after" in query]
    assert len(afters) == len(server.queries) - 1, "a next page was asked for without a cursor"
    assert len(set(afters)) == len(afters), f"a cursor was sent twice: {afters}"
    if isinstance(outcome, CntrSyncError):
        label(f"listing: {type(outcome).__name__}")
        assert isinstance(outcome, ApiError), type(outcome)
        assert_one_line(outcome)
        assert KEY not in str(outcome)
        return
    # Complete: only answers that are API pages, every item of every one, in order.
    expected: list[dict[str, Any]] = []
    for answer in server.served:
        assert answer.status < 400, answer.status
        page = json.loads(answer.plain)
        assert isinstance(page, dict) and isinstance(page["data"], list)
        assert all(isinstance(item, dict) for item in page["data"])
        expected.extend(page["data"])
    assert is_last_page(json.loads(server.served[-1].plain)), (
        "listing ended on a page claiming more"
    )
    label(f"listing: complete ({'with files' if expected else 'empty'})")
    assert len(outcome) == len(expected)
    for got, item in zip(outcome, expected, strict=True):
        assert isinstance(got, ContainerFile)
        assert isinstance(got.id, str) and got.id and got.id == item["id"]
        sent_path = item.get("path", "")
        assert got.path == (sent_path if isinstance(sent_path, str) else "")
        # A whole number in range stays itself; anything else is unknown (None) and
        # named in ``problems``, never a failed listing.
        for value, sent, most in (
            (got.bytes, item.get("bytes"), MAX_FILE_BYTES),
            (got.created_at, item.get("created_at"), MAX_TIMESTAMP),
        ):
            assert value is None or (type(value) is int and 0 <= value <= most)
            if type(sent) is int and 0 <= sent <= most:
                assert value == sent
            elif sent is not None and value is None:
                assert got.problems, item
        assert isinstance(got.source, str)
        remote = to_remote_file(got.id, got.path, got.bytes, got.source, got.created_at)
        assert isinstance(remote, RemoteFile) and isinstance(remote.name, str)


# -- strategies: JSON in every shape ---------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities too: Python's json writes and reads them
    st.text(max_size=12),
)


def json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)


json_values = st.recursive(json_scalars, json_containers, max_leaves=8)
ids = st.sampled_from(["cfile_1", "cfile_2", "cfile_3", "", ".", "..", "a/b"]) | st.text(max_size=8)
paths = st.sampled_from(["/mnt/data/a.txt", "/mnt/data/../x", "", "/", "\x00"]) | st.text(
    max_size=16
)
sizes = st.none() | st.integers(min_value=0, max_value=2**40) | st.integers()
stamps = st.none() | st.integers(min_value=0, max_value=2**34)
sources = st.sampled_from(["user", "assistant", "", "unknown"])


has_more_values: st.SearchStrategy[Any] = st.sampled_from(
    [True, False, "true", "false", 1, 0, None, [], {}]
)
cursors = st.sampled_from(["cur_1", "cur_2", "cur_3", ""]) | st.integers() | st.text(max_size=6)
tolerated_ints = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=2**62),
    st.integers(),
    st.booleans(),
    st.sampled_from(["12", " 7 ", "1_000", 2.0]),
)
plausible_files = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=8)},
    optional={
        "object": st.text(max_size=12),
        "path": st.text(max_size=24),
        "bytes": tolerated_ints,
        "created_at": tolerated_ints,
        "source": st.text(max_size=10),
        "container_id": st.none() | st.text(max_size=8),
        "extra": json_values,
    },
)
# Answers a tolerant client takes: status 200, decodable, fields of types the model reads.
fine_pages = st.fixed_dictionaries(
    {"data": st.lists(plausible_files, max_size=6)},
    optional={"object": st.just("list"), "has_more": has_more_values, "after": cursors},
)


def maybe_mistyped(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the right type, sometimes any JSON value at all."""
    return st.one_of(good, good, good, json_values)


file_items = st.tuples(
    st.fixed_dictionaries(
        {},
        optional={
            "id": maybe_mistyped(ids),
            "object": maybe_mistyped(st.just("container.file")),
            "path": maybe_mistyped(paths),
            "bytes": maybe_mistyped(sizes),
            "created_at": maybe_mistyped(stamps),
            "source": maybe_mistyped(sources),
            "container_id": maybe_mistyped(st.just(CONTAINER_ID)),
        },
    ),
    st.dictionaries(
        st.sampled_from(["model_config", "model_fields", "__class__", "__dict__", "copy", "x"]),
        json_values,
        max_size=2,
    ),
).map(lambda parts: {**parts[1], **parts[0]})
data_items = st.one_of(file_items, file_items, file_items, json_values)

list_pages = st.fixed_dictionaries(
    {},
    optional={
        "object": st.just("list"),
        "data": st.one_of(
            st.lists(data_items, max_size=6), st.lists(data_items, max_size=6), json_values
        ),
        "has_more": has_more_values,
        "first_id": cursors,
        "last_id": cursors,
        "after": cursors,
    },
)


def deep_json(depth: int, *, in_data: bool) -> bytes:
    """``[[[...]]]`` ``depth`` deep, alone or as the ``data`` of a page."""
    nested = b"[" * depth + b"]" * depth
    return b'{"data": ' + nested + b', "has_more": false}' if in_data else nested


@st.composite
def huge_pages(draw: st.DrawFn) -> dict[str, Any]:
    """A page of PAGE_LIMIT +- 1 or 5,000 well-formed files (built, not drawn one by one)."""
    count = draw(st.sampled_from([PAGE_LIMIT - 1, PAGE_LIMIT, PAGE_LIMIT + 1, 5000]))
    tag = draw(st.integers(min_value=0, max_value=3))
    data: list[Any] = [
        {"id": f"h{tag}_{n}", "path": f"/mnt/data/f{n}.txt", "bytes": n, "source": "user"}
        for n in range(count)
    ]
    if draw(st.booleans()):
        data[draw(st.integers(min_value=0, max_value=count - 1))] = draw(data_items)
    page: dict[str, Any] = {"object": "list", "data": data}
    page.update(draw(st.fixed_dictionaries({}, optional={"has_more": has_more_values})))
    return page


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/html; charset=nonexistent-codec",
    "application/octet-stream",
    "text/plain",
    "",
]


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    """One answer: a list page (possibly hostile), or bytes that are no page at all."""
    kind = draw(
        st.sampled_from(
            ["fine"] * 5 + ["page"] * 3 + ["huge", "json", "bytes", "truncated", "deep"]
        )
    )
    pages = {"fine": fine_pages, "page": list_pages, "truncated": list_pages, "json": json_values}
    if kind in ("fine", "page", "huge", "json", "truncated"):
        value: Any = draw(huge_pages() if kind == "huge" else pages[kind])
        text = json.dumps(value, ensure_ascii=draw(st.booleans()))
        plain = text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "utf-32"])))
        if kind == "truncated":
            plain = plain[: draw(st.integers(min_value=0, max_value=max(0, len(plain) - 1)))]
    elif kind == "deep":
        depth = draw(st.sampled_from([10, 900, 1000, 5000, 100_000]))
        plain = deep_json(depth, in_data=draw(st.booleans()))
    else:
        plain = draw(st.binary(max_size=64))
    statuses = [200] * 12 + [201, 204, 302, 400, 401, 404, 409, 422, 429, 500]
    status = 200 if kind == "fine" else draw(st.sampled_from(statuses))
    headers: list[tuple[str, str]] = []
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers.append(("content-type", content_type))
    encodings = ["", "", "", "gzip", "deflate", "x-unknown"]
    encoding = draw(st.sampled_from(encodings if kind == "fine" else [*encodings, "gzip-broken"]))
    body = plain
    if encoding == "gzip":
        body = gzip.compress(plain)
    elif encoding == "deflate":
        body = zlib.compress(plain)
    elif encoding == "gzip-broken":
        encoding, plain = "gzip", b""  # undecodable: no JSON parser ever sees it
    if encoding:
        headers.append(("content-encoding", encoding))
    return Answer(status, body, plain, tuple(headers))


@fuzz(150)
@given(st.lists(answers(), min_size=1, max_size=5))
@example([Answer(200, deep_json(100_000, in_data=False), deep_json(100_000, in_data=False))])
@example([Answer(200, deep_json(100_000, in_data=True), deep_json(100_000, in_data=True))])
@example([Answer(404, deep_json(100_000, in_data=False), deep_json(100_000, in_data=False))])
@example(
    [
        Answer(
            200,
            b'{"data": [{"id": "\\ud800"}], "has_more": false}',
            b'{"data": [{"id": "\\ud800"}], "has_more": false}',
        )
    ]
)
def test_any_listing_is_complete_or_a_clear_api_error(script: list[Answer]) -> None:
    outcome, server = list_files(script)
    check_listing(outcome, server)


def page_answer(page: Mapping[str, Any]) -> Answer:
    plain = json.dumps(page).encode()
    return Answer(200, plain, plain, (("content-type", "application/json"),))


@fuzz(60)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2, PAGE_LIMIT - 1, PAGE_LIMIT, PAGE_LIMIT + 1, 5000]),
            st.sampled_from(["has_more", "no flag", "string flag", "null flag"]),
            st.sampled_from(["after", "last id"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_loop_of_cursors_or_heads_always_stops_the_listing(
    layout: list[tuple[int, str, str, bool]],
) -> None:
    """A page that starts again, or repeats a cursor, is never taken: a ProtocolError."""
    pages: list[dict[str, Any]] = []
    for number, (count, flag, cursor, same_head) in enumerate(layout):
        head = "h0" if same_head else f"h{number}"
        data = [{"id": head}] + [{"id": f"p{number}_{n}"} for n in range(count - 1)]
        page: dict[str, Any] = {"data": data}
        if flag == "has_more":
            page["has_more"] = True
        elif flag == "string flag":
            page["has_more"] = "true"
        elif flag == "null flag":
            page["has_more"] = None
        if cursor == "after":
            page["after"] = "same-cursor"
        pages.append(page)
    outcome, server = list_files([page_answer(page) for page in pages])
    check_listing(outcome, server)
    if isinstance(outcome, CntrSyncError):
        assert isinstance(outcome, ProtocolError), outcome
    else:
        heads = [json.loads(answer.plain)["data"][0]["id"] for answer in server.served]
        assert len(set(heads)) == len(heads), f"a page that starts again was taken: {heads}"


@st.composite
def well_formed_listings(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Pages a correct client must read completely, however the server signals "more"."""
    counts = draw(
        st.lists(
            st.sampled_from([1, 3, PAGE_LIMIT - 1, PAGE_LIMIT, PAGE_LIMIT + 1, 5000]),
            min_size=1,
            max_size=4,
        )
    )
    pages: list[dict[str, Any]] = []
    for number, count in enumerate(counts):
        last = number == len(counts) - 1
        data = [
            {
                "id": f"cfile_{number}_{n}",
                "object": "container.file",
                "path": f"/mnt/data/{number}/{n}.bin",
                "bytes": n if n % 7 else None,
                "created_at": 1_700_000_000 + n,
                "source": "user" if n % 2 else "assistant",
                "container_id": CONTAINER_ID,
                "unknown_field": {"kept": True},
            }
            for n in range(count)
        ]
        page: dict[str, Any] = {"object": "list", "data": data}
        full = count >= PAGE_LIMIT
        # The ways a server says "this is (not) the last page" that the client honours
        # (a string flag only where reading it as a boolean or as no flag agree).
        ends: list[object] = [False, *(["missing", None, "false"] if not full else [])]
        goes_on: list[object] = [True, *(["missing", None, "true"] if full else [])]
        choice = draw(st.sampled_from(ends if last else goes_on))
        if choice != "missing":
            page["has_more"] = choice
        if draw(st.booleans()):
            page["after"] = f"opaque-{number}"
        if draw(st.booleans()):
            page["first_id"], page["last_id"] = data[0]["id"], data[-1]["id"]
        pages.append(page)
    return pages


@fuzz(40)
@given(well_formed_listings())
def test_a_well_formed_listing_is_read_completely_in_order(pages: list[dict[str, Any]]) -> None:
    outcome, server = list_files([page_answer(page) for page in pages])
    assert not isinstance(outcome, CntrSyncError), outcome
    assert len(server.served) == len(pages)
    check_listing(outcome, server)
    assert [f.id for f in outcome] == [item["id"] for page in pages for item in page["data"]]


# ================================================================================
# 2. The config loader
# ================================================================================

SECRET = "zq9-fuzz-secret-0123456789"
SETTINGS_FIELDS = sorted(Settings.model_fields)
PAIR_FIELDS = sorted(PairSettings.model_fields)

ODD_STRINGS = [
    "",
    " ",
    "~",
    "~/x",
    "~nosuchuser-cntr-fuzz/x",
    "\x00",
    "a\x00b",
    "/",
    ".",
    "..",
    "../../etc",
    "/etc/passwd",
    "rel/dir",
    "50%",
    "nan%",
    "inf%",
    "-1%",
    "101%",
    "%",
    "\u00b2",
    "\u0661\u0660",
    "{x}",
    "{quiet_period}",
    "http://",
    "https://[::1",
    "http://h:0",
    "http://u:p@h",
    "http://h:99999",
    "ftp://x",
    "[::1]:9464",
    "::1:80",
    "h:99999",
    "h: 1",
    "bearer",
    "basic",
    "1g",
    "both",
    "pull",
    "skip",
    "remote-wins",
    "\u202e",
    "e\u0301",
    "\ufeff",
    "C:\\x",
]
toml_keys = st.sampled_from(SETTINGS_FIELDS + PAIR_FIELDS) | st.text(max_size=8)
toml_scalars = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.integers(min_value=4000, max_value=6000).map(lambda n: "x" * n),
    st.text(max_size=12),
    st.integers(),
    st.sampled_from([0, -1, 1, 20, 2**63, -(2**63) - 1, 10**40]),
    st.floats(),
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
)


def toml_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(toml_keys, inner, max_size=3)


toml_values = st.recursive(toml_scalars, toml_containers, max_leaves=6)


_TOML_ESCAPES = {code: f"\\u{code:04x}" for code in [*range(0x20), 0x7F]} | {
    ord('"'): '\\"',
    ord("\\"): "\\\\",
}


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (control characters as \\uXXXX escapes)."""
    return '"' + text.translate(_TOML_ESCAPES) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    inner = ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items())
    return "{ " + inner + " }" if inner else "{}"


def toml_document(top: Mapping[str, Any], pairs: list[dict[str, Any]]) -> str:
    lines = [f"{toml_string(key)} = {toml_value(value)}" for key, value in top.items()]
    for pair in pairs:
        lines.append("[[pairs]]")
        lines.extend(f"{toml_string(key)} = {toml_value(value)}" for key, value in pair.items())
    return "\n".join(lines) + "\n"


def literal_choices(annotation: Any) -> list[Any]:
    """Every value a ``Literal`` anywhere in ``annotation`` allows (``X | None`` included)."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [choice for arg in get_args(annotation) for choice in literal_choices(arg)]


def toml_default(model: type[Settings] | type[PairSettings], name: str) -> Any:
    """The default of a setting when TOML can write it, else None."""
    value = model.model_fields[name].default
    return value if isinstance(value, str | int | float | list) else None


def valid_choices(name: str) -> list[Any]:
    """Values that some field called ``name`` (top level or in a pair) takes."""
    choices: list[Any] = []
    for model in (Settings, PairSettings):
        if name in model.model_fields:
            annotation = model.model_fields[name].annotation
            choices += literal_choices(annotation)
            if (default := toml_default(model, name)) is not None:
                choices.append(default)
    return choices


# Values each setting takes, odd ones included...
VALID: dict[str, list[Any]] = {
    "api_key": [SECRET],
    "container": ["box", "cntr_1", " x "],
    "local": ["tree", "/", "~/x", "tree/../tree"],
    "state_dir": ["state", "~/state"],
    "max_delete": ["50%", "10", 10, "0%", " 7 "],
    "remote_prefixes": [["/mnt/data/"], ["/", "/mnt/"], ["/mnt/data"]],
    "ignore": [["*.log"], ["!.git"], []],
    "extra_headers": [{"X-A": "v"}, {}],
    "extra_query": [{"api-version": "1"}],
    "outside_subdir": ["_container", "a/b", "/x/"],
    "base_url": ["http://127.0.0.1:8080/v1", "https://[::1]/v1"],
    "http_listen": ["127.0.0.1:0", "[::1]:9464"],
    "timeout": [0.001, 1e308, math.inf],
    "max_retries": [0, 20],
    "expires_after_minutes": [1, 10080],
}
# ...and values that test each one's checks.
ODD: dict[str, list[Any]] = {
    "name": ["a b", "", "x/y", ".."],
    "container": [""],
    "local": ["", "~nosuchuser-cntr-fuzz", "\x00"],
    "max_delete": [-1, "%", "\u00b2", "nan%", "101%", True],
    "remote_prefixes": [["mnt"], [], [""]],
    "ignore": [["", "\x00"]],
    "extra_headers": [{"": 1}],
    "outside_subdir": ["../x", ".cntrsync", "", "a//b"],
    "max_retries": [-1, 21, 10**40],
    "timeout": [0, -1.0, math.nan],
    "quiet_period": [math.inf, 0],
    "max_delay": [0.5],
}
BOOLEAN_SETTINGS = ("delete", "delete_unknown", "follow_symlinks", "keepalive", "verify_tls")


def field_values(name: str, *, clean: bool) -> st.SearchStrategy[Any]:
    """Values the setting takes when ``clean``; else mostly odd ones or any TOML value."""
    valid = VALID.get(name, []) + valid_choices(name)
    if name in BOOLEAN_SETTINGS:
        valid += [True, False]
    good = st.sampled_from(valid) if valid else toml_scalars
    if clean:
        return good
    odd = st.sampled_from(ODD[name]) if name in ODD else toml_scalars
    return st.one_of(good, odd, odd, toml_scalars, toml_values)


@st.composite
def tables(draw: st.DrawFn, names: list[str], *, clean: bool) -> dict[str, Any]:
    """A table of a few of ``names``, each with a value for it."""
    chosen = draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
    return {name: draw(field_values(name, clean=clean)) for name in chosen}


@st.composite
def pair_tables(draw: st.DrawFn, number: int, *, clean: bool) -> dict[str, Any]:
    """One ``[[pairs]]`` table: name, local and container, and a few more settings."""
    others = [name for name in PAIR_FIELDS if name not in ("name", "local", "container")]
    table = {
        "name": f"pair-{number}" if clean else draw(field_values("name", clean=False)),
        "local": draw(field_values("local", clean=clean)),
        "container": draw(field_values("container", clean=clean)),
    }
    table.update(draw(tables(others, clean=clean)))
    return table


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    """A settings file: valid TOML of odd content, then perhaps broken at the byte level."""
    clean = draw(st.booleans())
    top = draw(tables([name for name in SETTINGS_FIELDS if name != "pairs"], clean=clean))
    pairs = [
        draw(pair_tables(number, clean=clean))
        for number in range(draw(st.integers(min_value=0, max_value=3)))
    ]
    if not clean and draw(st.booleans()):
        top.update(draw(st.dictionaries(toml_keys, toml_values, max_size=2)))
        if not pairs:
            top["pairs"] = draw(toml_values)
    raw = toml_document(top, pairs).encode()
    mutations = ["insert", "bom", "utf-16", "bytes", "deep"]
    mutation = "none" if clean else draw(st.sampled_from(["none"] * 4 + mutations))
    if mutation == "insert":
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        junk = draw(st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\r", b"\x1b"]))
        raw = raw[:at] + junk + raw[at:]
    elif mutation == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif mutation == "utf-16":
        raw = raw.decode().encode("utf-16")
    elif mutation == "bytes":
        raw = draw(st.binary(max_size=64))
    elif mutation == "deep":
        depth = draw(st.sampled_from([100, 5000]))
        raw = b"x = " + b"[" * depth + b"]" * depth + b"\n"
    return raw


ENV_NAMES = [f"CNTR_SYNC_{name.upper()}" for name in SETTINGS_FIELDS] + [
    "CNTR_SYNC_EXTRA_HEADERS__X_BF_VK",
    "CNTR_SYNC_EXTRA_QUERY__a",
    "CNTR_SYNC_EXTRA_HEADERS__A__B",
    "CNTR_SYNC_PAIRS__0__NAME",
    "CNTR_SYNC_TIMEOUT__X",
    "cntr_sync_timeout",
    "CNTR_SYNC_",
    "CNTR_SYNC_CONFIG",
    "CNTR_SYNC_TIMOUT",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CREDENTIALS_DIRECTORY",
    "XDG_STATE_HOME",
]
# What a real environment can hold: no NUL; undecodable bytes arrive as U+DC80..U+DCFF.
env_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00")
    | st.sampled_from([chr(code) for code in range(0xDC80, 0xDD00)]),
    max_size=12,
)
env_values = st.one_of(
    env_text,
    st.sampled_from([s for s in ODD_STRINGS if "\x00" not in s]),
    json_values.map(json.dumps),
    st.sampled_from([1, 900, 5000, 100_000]).map(lambda depth: "[" * depth + "]" * depth),
    st.sampled_from(['[{"name": "a", "local": "~nosuchuser-cntr-fuzz", "container": "c"}]']),
)
environments = st.dictionaries(
    st.sampled_from(ENV_NAMES) | env_text.map(lambda s: "CNTR_SYNC_" + s),
    env_values,
    max_size=4,
).map(lambda env: {**env, "CNTR_SYNC_API_KEY": SECRET} if "CNTR_SYNC_API_KEY" in env else env)


def names_its_source(message: str, config_file: Path | None, env: Mapping[str, str]) -> bool:
    """Whether ``message`` names the settings file or one of the variables given."""
    if config_file is not None and str(config_file) in message:
        return True
    upper = message.upper()
    # Messages are one line: a name with a line break in it is shown with a space.
    return any(
        one_line(name.upper().split("__")[0]) in upper
        for name in env
        if name.upper().startswith(("CNTR_SYNC_", "OPENAI_"))
    )


def check_load(config_file: Path | None, env: Mapping[str, str]) -> None:
    """``Settings.load`` gives usable settings or one clear ConfigError; nothing else."""
    try:
        loaded = Settings.load(config_file, env=env)
    except ConfigError as exc:
        label(
            "config: ConfigError naming " + ("the file" if ".toml" in exc.message else "a variable")
        )
        assert_one_line(exc)
        assert names_its_source(exc.message, config_file, env), exc.message
        assert SECRET not in exc.message
        return
    # Usable: every pair resolves and the dump is JSON with no secret in it.
    label(f"config: loaded, {len(loaded.pairs)} pairs")
    for pair in loaded.resolved_pairs():
        assert isinstance(pair, Pair)
        assert pair.local.is_absolute()
    dumped = json.dumps(loaded.redacted_dump())
    assert SECRET not in dumped and SECRET not in repr(loaded)


@fuzz(200)
@given(config_files(), environments, st.booleans())
@example(b"timeout = 5\n# \xff\n", {}, True)
@example(b'local = "~nosuchuser-cntr-fuzz/x"\n', {}, True)
@example(b'[[pairs]]\nname = "a"\ncontainer = "c"\nlocal = "~nosuchuser-cntr-fuzz"\n', {}, True)
@example(b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", {}, True)
@example(b"x = " + b"9" * 5000 + b"\n", {}, True)
@example(b"", {"CNTR_SYNC_IGNORE": "[" * 100_000 + "]" * 100_000}, True)
@example(b"", {"CNTR_SYNC_STATE_DIR": "~nosuchuser-cntr-fuzz"}, False)
@example(b'ca_bundle = "' + b"x" * 300 + b'"\n', {}, True)
def test_any_settings_file_and_environment_load_or_fail_with_one_clear_line(
    raw: bytes, env: dict[str, str], with_file: bool
) -> None:
    with tempfile.TemporaryDirectory(prefix="cntr-fuzz-config-") as directory:
        config_file = Path(directory) / "cntr-sync.toml"
        config_file.write_bytes(raw)
        (Path(directory) / "tree").mkdir()
        check_load(config_file if with_file else None, env)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("~nosuchuser-cntr-fuzz/cntr-sync.toml", "not found"),
        ("missing.toml", "not found"),
        ("x" * 300 + ".toml", "cannot read config file"),
    ],
)
def test_a_config_file_that_cannot_be_found_is_a_config_error(
    name: str, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(tmp_path / name if not name.startswith("~") else Path(name), env={})
    assert_one_line(caught.value)
    assert problem in caught.value.message


def test_a_settings_file_that_is_not_utf8_says_so_and_where(tmp_path: Path) -> None:
    config_file = tmp_path / "cntr-sync.toml"
    # Latin-1, as an older editor saves it.
    config_file.write_bytes(b'timeout = 5\ncontainer = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        Settings.load(config_file, env={})
    assert_one_line(caught.value)
    assert caught.value.message == f"{config_file}: not UTF-8 text at line 2"


# ================================================================================
# 3. Remote paths
# ================================================================================

FULLWIDTH_SOLIDUS = "\uff0f"
HOSTILE_PATHS = [
    "/mnt/data/../escaped.txt",
    "/mnt/data/../../etc/passwd",
    "/mnt/data/a/../../escaped.txt",
    "/mnt/data/%2e%2e/escaped.txt",
    "/mnt/data/%2e%2e%2fescaped.txt",
    "/mnt/data/..%2fescaped.txt",
    "/mnt/data/..\\..\\escaped.txt",
    "/mnt/data/a\\b.txt",
    "/mnt/data/a\x00b.txt",
    "/mnt/data/bell\x07.txt",
    "/mnt/data/esc\x1b[31m.txt",
    "/mnt/data/new\nline.txt",
    "/mnt/data/del\x7f.txt",
    "/mnt/data/nel\x85.txt",
    "/mnt/data/rtl\u202etxt.exe",
    "/mnt/data/" + "x" * 256,
    "/mnt/data/" + "é" * 128,
    "/mnt/data/" + "/".join(["d" * 200] * 6),
    "/mnt/data/caf\u00e9.txt",
    "/mnt/data/cafe\u0301.txt",
    f"/mnt/data/..{FULLWIDTH_SOLIDUS}escaped.txt",
    f"/mnt/data/{FULLWIDTH_SOLIDUS}etc{FULLWIDTH_SOLIDUS}passwd",
    "/mnt/data//etc/passwd",
    "/mnt/data/a//b.txt",
    "//mnt/data/x.txt",
    "/mnt/data/./x.txt",
    "/mnt/data/.",
    "/mnt/data/..",
    "/mnt/data/",
    "/mnt/data",
    "/mnt/data/dir/",
    "/mnt/data/trailing space ",
    "/mnt/data/trailing dot.",
    "/mnt/data/...",
    "/mnt/data/CON",
    "/mnt/data/nul.txt",
    "/mnt/data/COM1.txt",
    "/mnt/data/.cntrignore",
    "/mnt/data/sub/.cntrignore",
    "/mnt/data/.CNTRIGNORE",
    "/mnt/data/.cntrsync/index.sqlite",
    "/mnt/data/.CntrSync/index.sqlite",
    "/mnt/data/.cntrsync-partial-0123abcd",
    "/mnt/data/x/.CNTRSYNC-PARTIAL-0123abcd",
    "/mnt/data/a.png/mnt/data/b.png",
    "/mnt/data/0123456789abcdef0123456789abcdef-",
    "/mnt/data/0123456789abcdef0123456789abcdef-../x",
    "/mnt/data/" + "/".join(["d"] * 600) + "/x.txt",
    "/mnt/data/" + "/".join(["deep"] * 150) + "/x.txt",
    "/etc/passwd",
    "/tmp/../../x",
    "relative.txt",
    "../x",
    "",
    "/",
    "\\mnt\\data\\x.txt",
    "/mnt/data/\udcff.txt",
    "/mnt/data/\ud800.txt",
    "/mnt/data/.git/config",
    "/mnt/data/notes.txt~",
    "~",
    "/mnt/data/ok.txt",
]
RULE_SETS = [
    PathRules(),
    PathRules(outside="skip"),
    PathRules(prefixes=("/",)),
    PathRules(prefixes=("/mnt/", "/mnt/data/")),
    PathRules(prefixes=("/mnt/data",), outside_subdir="from/container"),
]
OWN_NAMES = (STATE_DIR_NAME, IGNORE_FILE)
ROOT = "/fuzz/root"

segments = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "%2e%2e",
            "..\\..",
            "\x00",
            "\x1f",
            "\u202e",
            FULLWIDTH_SOLIDUS,
            "CON",
            "a ",
            "a.",
            "x" * 256,
            ".cntrignore",
            ".CNTRSYNC",
            PARTIAL_PREFIX + "x",
            "0123456789abcdef0123456789abcdef-",
            "mnt",
            "data",
            "e\u0301",
            "ok.txt",
        ]
    ),
    st.text(max_size=10),
)
composed_paths = st.tuples(
    st.sampled_from(["/mnt/data/", "/mnt/data", "/mnt/data//", "/", "", "/tmp/", "mnt/data/"]),
    st.lists(segments, max_size=6),
).map(lambda parts: parts[0] + "/".join(parts[1]))
remote_paths = st.one_of(st.sampled_from(HOSTILE_PATHS), composed_paths, st.text(max_size=40))


def check_mapping(path: str, source: str, rules: PathRules) -> str | Refused:
    """The promise of ``local_relpath`` for one path, checked; returns the result."""
    mapped = local_relpath(path, source, rules)
    shown = printable(path)  # what a warning about it shows
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in shown), repr(shown)
    if isinstance(mapped, Refused):
        label("path: refused" + (" quietly" if mapped.quiet else ""))
        assert isinstance(mapped.reason, str) and mapped.reason
        assert "\n" not in mapped.reason
        return mapped
    assert isinstance(mapped, str) and mapped
    assert not mapped.startswith("/")
    encoded = mapped.encode("utf-8")  # valid UTF-8: no lone surrogate
    assert len(encoded) <= MAX_RELPATH_BYTES
    # Control characters as remote_paths defines them, C0 and DEL (C1, U+0080..U+009F,
    # and bidi overrides such as U+202E are still let through).
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in mapped), repr(mapped)
    parts = mapped.split("/")
    for part in parts:
        assert part not in ("", ".", ".."), repr(mapped)
        assert len(part.encode("utf-8")) <= NAME_MAX_BYTES
        # cntr-sync's own names, also as a case-insensitive file system sees them.
        folded = part.casefold()
        assert folded not in OWN_NAMES, repr(mapped)
        assert not folded.startswith(PARTIAL_PREFIX), repr(mapped)
    label("path: mapped")
    joined = posixpath.normpath(posixpath.join(ROOT, mapped))
    assert joined == f"{ROOT}/{mapped}", (joined, mapped)
    assert os.path.commonpath([ROOT, joined]) == ROOT
    return mapped


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_every_corpus_path_is_refused_or_lands_inside_the_root(path: str) -> None:
    for rules in RULE_SETS:
        for source in ("assistant", "user"):
            check_mapping(path, source, rules)


@fuzz(600)
@given(remote_paths, st.sampled_from(["assistant", "user", ""]), st.sampled_from(RULE_SETS))
def test_any_remote_path_is_refused_or_lands_inside_the_root(
    path: str, source: str, rules: PathRules
) -> None:
    check_mapping(path, source, rules)


@fuzz(300)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=30))
def test_any_text_is_printable_in_a_warning(text: str) -> None:
    shown = printable(text)
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in shown)
    assert not any(ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069" for ch in shown)
    shown.encode("utf-8")  # a warning can always be written out


# -- end to end: a pull pass against the emulator -----------------------------------------------

BASE_URL = "http://emulator.test/v1"


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def without_collisions(paths: list[str]) -> list[str]:
    """``paths`` the emulator can hold (its JSON is UTF-8: no lone surrogate), keeping
    only the first of those that land on one relpath or inside another's file."""
    kept: list[str] = []
    taken: list[str] = []
    for path in paths:
        mapped = local_relpath(path, "assistant", PathRules())
        if has_surrogate(path):
            continue
        if isinstance(mapped, str):
            if any(
                mapped == other or other.startswith(f"{mapped}/") or mapped.startswith(f"{other}/")
                for other in taken
            ):
                continue
            taken.append(mapped)
        kept.append(path)
    return kept


@dataclass
class PullRig:
    """A pull pair (``tmp/tree`` <- container "box"); a fresh engine for every pass."""

    emu: Emulator
    tmp: Path
    container_id: str = ""

    @property
    def root(self) -> Path:
        return self.tmp / "tree"

    def sync(self) -> PassResult:
        pair = Pair(name="fuzz", local=self.root, container="box", direction="pull")
        with (
            ContainersClient(
                "sk-test", base_url=BASE_URL, transport=self.emu.transport(), max_retries=0
            ) as client,
            Index.open(
                self.tmp / "state", base_url=BASE_URL, root=self.root, container_spec="box"
            ) as index,
        ):
            result = Engine(client, index, pair, concurrency=2).run_pass()
        assert result.container_id is not None
        self.container_id = result.container_id
        return result


@dataclass(frozen=True)
class Expectation:
    """What a pull of ``paths`` must leave: these files, and a warning for each refusal."""

    files: dict[str, bytes]
    refused: list[str]


def expect(paths: list[str], root: Path) -> Expectation:
    """Refused paths warn; the others land at their relpath unless the ignore rules
    (the defaults: ``*~``, ``.git``...) leave them alone, which they do quietly."""
    ignore = IgnoreRules.load(root)
    files: dict[str, bytes] = {}
    refused = []
    for number, path in enumerate(paths):
        mapped = check_mapping(path, "assistant", PathRules())
        if isinstance(mapped, Refused):
            if not mapped.quiet:
                refused.append(path)
        elif not ignore.ignored_path(mapped):
            files[mapped] = f"payload {number}".encode()
    return Expectation(files, refused)


def local_files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def pull_and_check(tmp: Path, paths: list[str]) -> None:
    """Pull ``paths`` (as written by the model) twice; check the promises of each pass."""
    (tmp / "tree").mkdir()
    expected = expect(paths, tmp / "tree")
    with Emulator(data_dir=tmp / "emulator") as emu:
        rig = PullRig(emu, tmp)
        rig.sync()
        for number, path in enumerate(paths):
            emu.add_assistant_file(rig.container_id, path, f"payload {number}".encode())
        for number in range(2):
            result = rig.sync()
            assert result.failures == [], result.failures
            # Everything it may write on the first pass, nothing again on the second.
            assert result.downloaded == (len(expected.files) if number == 0 else 0)
            for path in expected.refused:
                assert any(
                    w.startswith(f"{printable(path)}: not pulled: ") for w in result.warnings
                ), (
                    path,
                    result.warnings,
                )
            assert len(result.warnings) == len(expected.refused), result.warnings
            assert local_files(rig.root) == expected.files
    outside = [
        p.relative_to(tmp).as_posix()
        for p in tmp.rglob("*")
        if p.relative_to(tmp).parts[0] not in ("tree", "state", "emulator")
    ]
    assert outside == []
    assert not [p for p in (tmp / "tree").rglob("*") if p.is_symlink()]


def test_a_pull_of_the_hostile_corpus_writes_only_inside_the_root_and_warns_per_refusal(
    tmp_path: Path,
) -> None:
    paths = without_collisions(HOSTILE_PATHS)
    assert len(paths) > 50
    expected = expect(paths, tmp_path)
    assert len(expected.refused) >= 30 and len(expected.files) >= 15
    pull_and_check(tmp_path, paths)


@fuzz(15)
@given(st.lists(remote_paths, min_size=1, max_size=5, unique=True))
@example(["~"])
def test_a_pull_of_generated_paths_writes_only_inside_the_root(paths: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="cntr-fuzz-pull-") as directory:
        pull_and_check(Path(directory), without_collisions(paths))
