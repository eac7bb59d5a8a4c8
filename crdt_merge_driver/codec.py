"""Memory files as bytes: parse them into records, render records back.

Git hands the driver temp files with no extension, so the format comes from
the content: a file whose first non-blank byte is ``[`` is a JSON array of
records, anything else is JSONL (one record a line, as the memory server
writes it), and an empty file is an empty memory.

A JSONL record is kept as the exact bytes of its line. Lines are compared as
bytes and only parsed where they differ, and a record nobody changed is
written back as it was read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import orjson

from crdt_merge_driver.errors import InputError
from crdt_merge_driver.record import Key, identify

JSONL = "jsonl"
ARRAY = "array"

_CONFLICT_MARKERS = (b"<<<<<<<", b"=======", b">>>>>>>", b"|||||||")
# Lines are split a slice at a time so that a large file is not held twice.
_SLICE = 1 << 22


class Style(NamedTuple):
    """How a file is laid out. ``None`` means "no opinion" (an empty file)."""

    format: str | None = None
    newline: bytes | None = None
    final_newline: bool | None = None
    indent: bytes | None = None  # arrays: one level's indent; b"" is one line


class Document:
    """The records of one file, keyed by identity, in file order.

    ``records`` holds each identity's first line; ``duplicates`` the later
    lines of the same identity, as ``merge=union`` or a hand merge leaves them.
    """

    __slots__ = ("_by_raw", "duplicates", "records", "style")

    def __init__(
        self, style: Style, records: dict[Key, bytes], duplicates: dict[Key, list[bytes]]
    ) -> None:
        self.style = style
        self.records = records
        self.duplicates = duplicates
        self._by_raw: dict[bytes, Key] | None = None

    def by_raw(self) -> dict[bytes, Key]:
        """Identity of each record's bytes, built once, to parse a side against this base."""
        if self._by_raw is None:
            self._by_raw = {raw: key for key, raw in self.records.items()}
        return self._by_raw


EMPTY = Document(Style(), {}, {})


def parse(data: bytes, *, base: Document | None = None) -> Document:
    """Parse a memory file; raises `InputError` naming the bad line.

    With ``base``, a line identical to one of the base's is known without
    parsing it again, and shares the base's bytes object.
    """
    start = _first_content(data)
    if start == len(data):
        return EMPTY
    if data[start] == 0x5B:  # "["
        return _parse_array(data)
    return _parse_jsonl(data, base or EMPTY)


def _first_content(data: bytes) -> int:
    if not data[:1].isspace():
        return 0
    return len(data) - len(data.lstrip())


def _parse_jsonl(data: bytes, base: Document) -> Document:
    first_break = data.find(b"\n")
    crlf = first_break > 0 and data[first_break - 1] == 0x0D
    if crlf:
        data = data.replace(b"\r\n", b"\n")
    style = Style(JSONL, b"\r\n" if crlf else b"\n", data.endswith(b"\n"), None)

    records: dict[Key, bytes] = {}
    duplicates: dict[Key, list[bytes]] = {}
    known = base.by_raw() if base.records else {}
    base_records = base.records
    loads = orjson.loads
    keep = records.setdefault
    for number, line in enumerate(_lines(data), 1):
        key = known.get(line)
        if key is not None:
            line = base_records[key]  # noqa: PLW2901  # share the base's bytes
        else:
            try:
                value = loads(line)
            except orjson.JSONDecodeError:
                if line.isspace() or not line:
                    continue
                raise _bad_line(line, number) from None
            try:
                key = identify(value)
            except InputError as error:
                raise InputError(error.reason, line=number) from None
        kept = keep(key, line)
        if kept is not line:
            duplicates.setdefault(key, []).append(line)
    return Document(style, records, duplicates)


def _lines(data: bytes) -> Iterator[bytes]:
    start, size = 0, len(data)
    while start < size:
        end = data.find(b"\n", start + _SLICE)
        if end < 0:
            end = size
        yield from data[start:end].split(b"\n")
        start = end + 1


def _bad_line(line: bytes, number: int) -> InputError:
    if line.startswith(_CONFLICT_MARKERS):
        return InputError("conflict marker (a text merge was left unresolved)", line=number)
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as error:
        return InputError(f"not UTF-8 (byte {line[error.start]:#04x})", line=number)
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return InputError(f"not JSON ({error.msg})", line=number)
    raise AssertionError("a line that failed to parse parsed")  # pragma: no cover


def _parse_array(data: bytes) -> Document:
    try:
        values = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise _bad_document(data, error) from None
    if type(values) is not list:
        raise InputError("expected a JSON array of records", line=1)
    crlf = b"\r\n" in data[: data.find(b"\n") + 1]
    style = Style(ARRAY, b"\r\n" if crlf else b"\n", data.endswith(b"\n"), _indent_of(data))

    records: dict[Key, bytes] = {}
    duplicates: dict[Key, list[bytes]] = {}
    for index, value in enumerate(values):
        try:
            key = identify(value)
        except InputError as error:
            line = _element_line(data, index)
            raise InputError(f"record {index + 1}: {error.reason}", line=line) from None
        raw = orjson.dumps(value)
        kept = records.setdefault(key, raw)
        if kept is not raw:
            duplicates.setdefault(key, []).append(raw)
    return Document(style, records, duplicates)


def _indent_of(data: bytes) -> bytes | None:
    """One level of indent: what precedes the first element on its own line."""
    opening = data.find(b"[")
    first_break = data.find(b"\n", opening)
    if first_break < 0:
        return b"" if data.strip() != b"[]" else None
    line = data[first_break + 1 : data.find(b"\n", first_break + 1)].rstrip(b"\r")
    body = line.lstrip(b" \t")
    if not body or body.startswith(b"]"):
        return None
    return line[: len(line) - len(body)]


def _bad_document(data: bytes, error: orjson.JSONDecodeError) -> InputError:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data.count(b"\n", 0, bad.start) + 1
        return InputError(f"not UTF-8 (byte {data[bad.start]:#04x})", line=line)
    for number, line_bytes in enumerate(data.split(b"\n"), 1):
        if line_bytes.startswith(_CONFLICT_MARKERS):
            return InputError("conflict marker (a text merge was left unresolved)", line=number)
    return InputError(f"not JSON ({error.msg})", line=error.lineno)


def _element_line(data: bytes, index: int) -> int:
    """The line where the array's element ``index`` starts (only for error messages)."""
    text = data.decode("utf-8")
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    for _ in range(index + 1):
        while text[position] in " \t\r\n,":
            position += 1
        start = position
        _, position = decoder.raw_decode(text, position)
    return text.count("\n", 0, start) + 1


def render(records: Iterable[bytes], style: Style) -> bytes:
    """The bytes of a file holding ``records`` (canonical or as read) in ``style``."""
    newline = style.newline or b"\n"
    if style.format == ARRAY:
        return _render_array(records, style, newline)
    body = newline.join(records)
    if body and style.final_newline:
        body += newline
    return body


def _render_array(records: Iterable[bytes], style: Style, newline: bytes) -> bytes:
    values = [orjson.loads(raw) for raw in records]
    indent = b"  " if style.indent is None else style.indent
    if not indent:
        body = orjson.dumps(values)
    else:
        body = orjson.dumps(values, option=orjson.OPT_INDENT_2)
        if indent != b"  ":
            body = b"\n".join(_reindent(line, indent) for line in body.split(b"\n"))
    if style.final_newline is not False:
        body += b"\n"
    return body.replace(b"\n", newline) if newline != b"\n" else body


def _reindent(line: bytes, unit: bytes) -> bytes:
    # orjson indents by two spaces a level, and a JSON string cannot hold a raw
    # newline, so leading spaces are always indentation.
    body = line.lstrip(b" ")
    return unit * ((len(line) - len(body)) // 2) + body


def choose_style(base: Style, ours: Style, theirs: Style) -> Style:
    """The layout of a merge: what both sides agree on, else the ancestor's.

    Field by field, and symmetric in ours and theirs, so that swapping the
    sides (as a rebase does) cannot change the bytes.
    """
    return Style(*(o if o == t else b for b, o, t in zip(base, ours, theirs, strict=True)))


def agreed_style(styles: Iterable[Style]) -> Style:
    """The layout all ``styles`` share, field by field; ``None`` where they differ."""
    fields: list[set[object]] = [set(), set(), set(), set()]
    for style in styles:
        for seen, value in zip(fields, style, strict=True):
            if value is not None:
                seen.add(value)
    return Style(*(next(iter(seen)) if len(seen) == 1 else None for seen in fields))
