"""Streaming multipart/form-data uploads straight into a spool file.

Owns reading an upload body chunk by chunk through python-multipart's streaming
parser, writing the ``file`` part to a spool file as it arrives (never the whole
upload in memory), and decoding the part's filename from ``Content-Disposition``:
quoted, HTML5 form-escaped, percent-encoded or RFC 2231 ``filename*``. It knows
nothing of containers, ids or HTTP.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_to_bytes

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from .wire import bad_request

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FIELD_LIMIT = 64 * 1024
"""Non-file form fields (e.g. ``file_id``) are kept in memory up to this size."""

_FORM_ESCAPE = re.compile(r"%(?:22|[01][0-9A-Fa-f])")
# Spool names: unique in this process by the counter, across processes by the pid
# and a random tag (O_EXCL refuses a clash anyway).
_SPOOL_TAG = f"{os.getpid()}-{os.urandom(4).hex()}"
_SPOOL_NUMBERS = itertools.count()
_SPOOL_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class SpooledUpload:
    """The outcome of reading a multipart body.

    ``spool_path`` holds the ``file`` part's bytes when there was one (the caller owns
    the file from then on); ``fields`` holds the small plain fields.
    """

    filename: str | None
    spool_path: Path | None
    size: int
    fields: Mapping[str, str] = field(default_factory=dict)


def multipart_boundary(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type, or None for other types."""
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        return None
    return params.get(b"boundary") or b""


def spool_multipart(
    body: Iterable[bytes],
    boundary: bytes,
    spool_dir: Path,
    *,
    percent_decode: bool = False,
    keep_escapes: bool = False,
) -> SpooledUpload:
    """Parse ``body`` and spool its first ``file`` part into a new file in ``spool_dir``.

    Raises the API's 400 when the body is not well-formed multipart. On any failure the
    spool file is removed.
    """
    if not boundary:
        raise bad_request("Missing multipart boundary in Content-Type.")
    reader = _PartReader(spool_dir, percent_decode, keep_escapes)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        for chunk in body:
            if chunk:
                parser.write(chunk)
        parser.finalize()
        reader.close()
        if not reader.ended:
            raise bad_request("The multipart body ended before its closing boundary.")
    except FormParserError as exc:
        reader.discard()
        raise bad_request(f"Could not parse the multipart body: {exc}") from exc
    except BaseException:
        reader.discard()
        raise
    return SpooledUpload(
        filename=reader.filename,
        spool_path=reader.spool_path,
        size=reader.size,
        fields=dict(reader.fields),
    )


class _PartReader:
    """Parser callbacks: route each part to the spool file, a small field, or nowhere."""

    def __init__(self, spool_dir: Path, percent_decode: bool, keep_escapes: bool) -> None:
        self._keep_escapes = keep_escapes
        self._spool_dir = spool_dir
        self._percent_decode = percent_decode
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._part_headers: dict[bytes, bytes] = {}
        self._sink: int | None = None  # the spool file's descriptor, written unbuffered
        self._field_name: str | None = None
        self._field_value = bytearray()
        self._field_overflow = False
        self.filename: str | None = None
        self.spool_path: Path | None = None
        self.size = 0
        self.fields: dict[str, str] = {}
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._part_headers = {}
        self._field_name = None
        self._field_value = bytearray()
        self._field_overflow = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part_headers[bytes(self._header_name).strip().lower()] = bytes(self._header_value)
        self._header_name = bytearray()
        self._header_value = bytearray()

    def _on_headers_finished(self) -> None:
        name, filename = parse_content_disposition(
            self._part_headers.get(b"content-disposition", b""),
            self._percent_decode,
            self._keep_escapes,
        )
        if name == "file" and filename and self.spool_path is None:
            self._sink, self.spool_path = _new_spool(self._spool_dir)  # closed in _on_part_end
            self.filename = filename
        elif name is not None and name not in self.fields:
            self._field_name = name

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None:
            # Straight to the file: the parser hands over what the socket read (up to
            # 256 KiB), so a write buffer would only copy it once more.
            view = memoryview(data)[start:end]
            while view:
                view = view[os.write(self._sink, view) :]
            self.size += end - start
        elif self._field_name is not None and not self._field_overflow:
            self._field_value += data[start:end]
            self._field_overflow = len(self._field_value) > FIELD_LIMIT

    def _on_part_end(self) -> None:
        if self._sink is not None:
            os.close(self._sink)
            self._sink = None
        elif self._field_name is not None and not self._field_overflow:
            self.fields[self._field_name] = self._field_value.decode("utf-8", "replace")
        self._field_name = None

    def _on_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._sink is not None:
            os.close(self._sink)
            self._sink = None

    def discard(self) -> None:
        self.close()
        if self.spool_path is not None:
            with suppress(FileNotFoundError):
                self.spool_path.unlink()
            self.spool_path = None


def _new_spool(spool_dir: Path) -> tuple[int, Path]:
    """A new, empty spool file in ``spool_dir``, open for writing (``upload-*``)."""
    while True:
        path = spool_dir / f"upload-{_SPOOL_TAG}-{next(_SPOOL_NUMBERS)}"
        try:
            return os.open(path, _SPOOL_FLAGS, 0o600), path
        except FileExistsError:
            continue


def parse_content_disposition(
    raw: bytes, percent_decode: bool = False, keep_escapes: bool = False
) -> tuple[str | None, str | None]:
    """Return ``(name, filename)`` from a part's Content-Disposition header value.

    ``filename*`` (RFC 2231/5987, e.g. ``utf-8''%E4%BD%A0.txt``) wins over ``filename``.
    A plain ``filename`` has its quoted-string escapes and the HTML5 form escapes
    httpx and browsers apply (``%22`` and control characters) undone, or is fully
    percent-decoded when ``percent_decode`` is set.
    """
    params = _parameters(_header_text(raw))
    name = params.get("name")
    filename: str | None = None
    extended = params.get("filename*")
    if extended is not None:
        filename = _decode_extended(extended)
    if filename is None and "filename" in params:
        plain = params["filename"]
        if percent_decode:
            filename = unquote(plain)
        elif keep_escapes:
            filename = plain
        else:
            filename = _undo_form_escapes(plain)
    return name, filename


def _header_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _parameters(value: str) -> dict[str, str]:
    """Split ``form-data; name="a"; filename="b"`` into lower-cased keys and values."""
    params: dict[str, str] = {}
    position = value.find(";")
    length = len(value)
    while 0 <= position < length:
        position += 1
        equals = value.find("=", position)
        separator = value.find(";", position)
        if equals < 0 or (0 <= separator < equals):
            position = separator
            continue
        key = value[position:equals].strip().lower()
        position = equals + 1
        while position < length and value[position] in " \t":
            position += 1
        if position < length and value[position] == '"':
            text, position = _quoted_string(value, position + 1)
            separator = value.find(";", position)
        else:
            separator = value.find(";", position)
            end = separator if separator >= 0 else length
            text = value[position:end].strip()
        params.setdefault(key, text)
        position = separator
    return params


def _quoted_string(value: str, position: int) -> tuple[str, int]:
    """Read a quoted-string body starting after the opening quote; return text, end."""
    out: list[str] = []
    length = len(value)
    while position < length:
        char = value[position]
        if char == "\\" and position + 1 < length:
            out.append(value[position + 1])
            position += 2
            continue
        if char == '"':
            return "".join(out), position + 1
        out.append(char)
        position += 1
    return "".join(out), position


def _decode_extended(value: str) -> str | None:
    """Decode an RFC 2231 ``charset'language'percent-encoded`` value, None when invalid."""
    charset, sep1, rest = value.partition("'")
    _language, sep2, encoded = rest.partition("'")
    if not (sep1 and sep2):
        return None
    try:
        return unquote_to_bytes(encoded).decode(charset.strip() or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return None


def _undo_form_escapes(value: str) -> str:
    return _FORM_ESCAPE.sub(lambda match: chr(int(match.group(0)[1:], 16)), value)
