"""Memory files as bytes: the ancestor indexed, each side read against it.

Git hands the driver temp files with no extension, so the format comes from
the content: a file whose first non-blank byte is ``[`` is a JSON array of
records, anything else is JSONL (one record a line, as the memory server
writes it), and an empty file is an empty memory.

Speed comes from how little is parsed. The ancestor is indexed once (line
spans and identities; a line in the server's own entity layout yields its
name without a full parse). Each side is then walked in step with the
ancestor: a line byte-identical to the ancestor line it lines up with is
only flagged ``same``; only the lines a side changed or added are parsed.
A line that every version shares is carried over byte for byte without being
parsed at all, so it is not validated again either (see docs/merge-rules.md).
"""

from __future__ import annotations

import mmap
from array import array
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import NamedTuple, TypeAlias, TypeVar

import orjson

from crdt_merge_driver.errors import InputError
from crdt_merge_driver.record import Key, identify

Buffer: TypeAlias = bytes | mmap.mmap
_T = TypeVar("_T")

JSONL = "jsonl"
ARRAY = "array"

_CONFLICT_MARKERS = (b"<<<<<<<", b"=======", b">>>>>>>", b"|||||||")
# The memory server writes every entity line with this prefix (JSON.stringify of
# {type, name, entityType, observations}) and ending in "]}".
_ENTITY_PREFIX = b'{"type":"entity","name":"'
_NAME_START = len(_ENTITY_PREFIX)
_SHORTEST_ENTITY = len(b'{"type":"entity","name":"","entityType":"","observations":[]}')


_LINE_ENDS = b"\r\n"
_MAX_STRIDE = 1024
_ONES = b"\x01" * _MAX_STRIDE


class Style(NamedTuple):
    """How a file is laid out. ``None`` means "no opinion" (an empty file)."""

    format: str | None = None
    newline: bytes | None = None
    final_newline: bool | None = None
    indent: bytes | None = None  # arrays: one level's indent; b"" is one line


class Document:
    """A file indexed record by record: the ancestor of a merge.

    Record ``i`` has identity ``keys[i]`` and kind ``kinds[i]`` (0 entity,
    1 relation, 2 other). ``index`` maps an identity to its first record;
    ``repeated`` holds identities that occur more than once.
    """

    __slots__ = (
        "_clean",
        "_data",
        "_ends",
        "_raws",
        "_starts",
        "index",
        "keys",
        "kinds",
        "repeated",
        "style",
    )

    def __init__(self, style: Style) -> None:
        self.style = style
        self.keys: list[Key] = []
        self.kinds = bytearray()
        self.index: dict[Key, int] = {}
        self.repeated: set[Key] = set()
        self._data: Buffer = b""
        self._starts = array("q")
        self._ends = array("q")
        self._raws: list[bytes] | None = None
        self._clean = True  # every line break is style.newline

    def __len__(self) -> int:
        return len(self.keys)

    def raw(self, i: int) -> bytes:
        """The bytes of record ``i`` (a JSONL line without its line break)."""
        if self._raws is not None:
            return self._raws[i]
        return self._data[self._starts[i] : self._ends[i]]

    def positions(self, key: Key) -> list[int]:
        """Every record that has identity ``key`` (one, unless the file repeats it)."""
        first = self.index.get(key)
        if first is None:
            return []
        if key not in self.repeated:
            return [first]
        return [i for i in range(first, len(self.keys)) if self.keys[i] == key]

    def block(self, start: int, stop: int, newline: bytes) -> memoryview | None:
        """Records ``start..stop-1`` as one slice of the file, if the file holds them so.

        True for JSONL whose line breaks are all ``newline``: the slice then
        carries its own line breaks, and nothing is copied.
        """
        if self._raws is not None or not self._clean or newline != self.style.newline:
            return None
        return memoryview(self._data)[self._starts[start] : self._ends[stop - 1]]

    def line_number(self, i: int) -> int:
        """The 1-based line of record ``i`` (for error messages only)."""
        if self._raws is not None:
            return i + 1
        return _line_at(self._data, self._starts[i])

    def _add(self, key: Key, kind: int) -> None:
        number = len(self.keys)
        self.keys.append(key)
        self.kinds.append(kind)
        if self.index.setdefault(key, number) != number:
            self.repeated.add(key)


class Side:
    """One side of a merge, as it differs from the ancestor.

    ``same[i]`` is 1 where the side holds ancestor record ``i`` byte for
    byte. ``changed`` holds every other record of the side (edited, added,
    moved) by identity; ``extra`` the further versions of an identity the
    side holds more than once (what ``merge=union`` leaves behind).
    """

    __slots__ = ("changed", "extra", "same", "style")

    def __init__(self, style: Style, size: int) -> None:
        self.style = style
        self.same = bytearray(size)
        self.changed: dict[Key, bytes] = {}
        self.extra: dict[Key, list[bytes]] = {}

    def keep(self, key: Key, raw: bytes) -> None:
        held = self.changed.setdefault(key, raw)
        if held is not raw:
            self.extra.setdefault(key, []).append(raw)

    def versions(self, key: Key, base: Document) -> list[bytes]:
        """Every version of ``key`` this side holds (several only in a damaged file)."""
        found = [base.raw(i) for i in base.positions(key) if self.same[i]]
        if key in self.changed:
            found.append(self.changed[key])
        found.extend(self.extra.get(key, ()))
        return found


EMPTY = Document(Style())


def parse(data: Buffer) -> Document:
    """Index a whole memory file; raises `InputError` naming the bad line."""
    start = _first_content(data)
    if start == len(data):
        return EMPTY
    if data[start] == 0x5B:  # "["
        return _index_array(data)
    return _index_jsonl(data)


def diff(base: Document, data: Buffer) -> Side:
    """Read one side against its ancestor; raises `InputError` naming the bad line."""
    start = _first_content(data)
    if start == len(data):
        return Side(Style(), len(base))
    if data[start] == 0x5B:  # "["
        return _against(base, _index_array(data))
    if base.style.format != JSONL:
        return _against(base, _index_jsonl(data, strict=True))
    return _walk(base, data)


def _first_content(data: Buffer) -> int:
    size = len(data)
    position = 0
    while position < size and data[position] in b" \t\r\n":
        position += 1
    return position


def _newline_of(data: Buffer) -> bytes | None:
    """The line break of the first line; None for one line with no break, which shows none."""
    first_break = data.find(b"\n")
    if first_break < 0:
        return None
    return b"\r\n" if first_break > 0 and data[first_break - 1] == 0x0D else b"\n"


def _index_jsonl(data: Buffer, *, strict: bool = False) -> Document:
    """Index JSONL; ``strict`` parses every line instead of reading server entities by prefix."""
    newline = _newline_of(data)
    crlf = newline == b"\r\n"
    size = len(data)
    document = Document(Style(JSONL, newline, data[size - 1] == 0x0A, None))
    document._data = data
    clean = True
    # The hot loop of the driver: one pass over every ancestor line, so names
    # are bound locally and the server's entity layout is read without parsing.
    find, prefix = data.find, _ENTITY_PREFIX
    add_start, add_end = document._starts.append, document._ends.append
    add_key, add_kind = document.keys.append, document.kinds.append
    first_of, repeated = document.index.setdefault, document.repeated
    position = count = 0
    while position < size:
        stop = find(b"\n", position)
        if stop < 0:
            stop = size
        # A carriage return ends a line in any file: one merge=union made of an
        # LF side and a CRLF side has both, and JSON never ends in one.
        end = stop - 1 if stop > position and data[stop - 1] == 0x0D else stop
        if (end != stop) is not crlf and stop < size:
            clean = False
        key: Key | None = None
        name_start = position + _NAME_START
        if (
            not strict
            and end - position >= _SHORTEST_ENTITY
            and data[end - 1] == 0x7D  # "}"
            and data[end - 2] == 0x5D  # "]"
            and find(prefix, position, name_start) == position
        ):
            name_end = find(b'"', name_start, end)
            if name_end > 0 and find(b"\\", name_start, name_end) < 0:
                try:
                    key = data[name_start:name_end].decode("utf-8")
                except UnicodeDecodeError:
                    key = None
        if key is not None:
            kind = 0
        else:
            parsed = _parse_line(data[position:end], partial(_line_at, data, position))
            if parsed is None:
                position = stop + 1
                continue
            key, kind = parsed
        add_start(position)
        add_end(end)
        add_key(key)
        add_kind(kind)
        if first_of(key, count) != count:
            repeated.add(key)
        count += 1
        position = stop + 1
    document._clean = clean
    return document


def _line_at(data: Buffer, position: int) -> int:
    """The 1-based line number at byte ``position`` (for error messages only)."""
    line, at = 1, 0
    while (at := data.find(b"\n", at, position)) >= 0:
        line, at = line + 1, at + 1
    return line


def _parse_line(line: bytes, number: Callable[[], int]) -> tuple[Key, int] | None:
    """Identity and kind of one JSONL line; None for a blank line.

    ``number`` gives the line's number, counted only if it is needed for an error.
    """
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        if not line.strip():
            return None
        raise _bad_line(line, number()) from None
    try:
        key = identify(value)
    except InputError as error:
        raise InputError(error.reason, line=number()) from None
    return key, _kind(key)


def _kind(key: Key) -> int:
    return 0 if type(key) is str else 1 if type(key) is tuple else 2


def _walk(base: Document, data: Buffer) -> Side:
    """A JSONL side read in step with a JSONL ancestor.

    Lines usually sit where the ancestor had them (the server edits records
    in place and appends new ones), so the side is compared with the
    ancestor lines it lines up with, in blocks that double while they match;
    a block that differs is bisected to its first differing line. That line
    is parsed: if it is a later ancestor record, the ancestor lines in
    between are missing here (deleted or moved) and the walk resumes after it.
    """
    newline = _newline_of(data)
    size = len(data)
    side = Side(Style(JSONL, newline, data[size - 1] == 0x0A, None), len(base))
    same, keep, index = side.same, side.keep, base.index
    base_data, base_starts, base_ends = base._data, base._starts, base._ends
    count = len(base)
    find = data.find
    expected = position = 0
    stride = 1

    def matches(first: int, last: int) -> bool:
        # Ancestor lines first..last as one block: they carry their own line
        # breaks, so equal bytes (and a line end after them) mean equal lines.
        start = base_starts[first]
        block_end = position + base_ends[last] - start
        return data[position:block_end] == base_data[start : base_ends[last]] and (
            block_end == size or data[block_end] in _LINE_ENDS
        )

    while position < size:
        if expected < count:
            last = min(expected + stride, count) - 1
            if matches(expected, last):
                same[expected : last + 1] = _ONES[: last + 1 - expected]
                stop = find(b"\n", position + base_ends[last] - base_starts[expected])
                position = size if stop < 0 else stop + 1
                expected = last + 1
                stride = min(stride * 2, _MAX_STRIDE)
                continue
            # The first differing line is in the block: find it by bisection,
            # keep what precedes it, then read it on its own (below).
            low, high = expected, last
            while low < high:
                middle = (low + high) // 2
                if matches(expected, middle):
                    low = middle + 1
                else:
                    high = middle
            if low > expected:
                same[expected:low] = _ONES[: low - expected]
                position += base_starts[low] - base_starts[expected]
                expected = low
            stride = 1
        stop = find(b"\n", position)
        if stop < 0:
            stop = size
        end = stop - 1 if stop > position and data[stop - 1] == 0x0D else stop
        line = data[position:end]
        parsed = _parse_line(line, partial(_line_at, data, position))
        position = stop + 1
        if parsed is None:
            continue
        key = parsed[0]
        found = index.get(key)
        if found is not None and found >= expected and not same[found]:
            expected = found + 1
            if line == base.raw(found):
                same[found] = 1
                continue
        keep(key, line)
    _settle(side, base)
    return side


def _settle(side: Side, base: Document) -> None:
    """A record kept as changed whose ancestor line the side also holds is a repeat."""
    for key in [key for key in side.changed if key in base.index]:
        if any(side.same[i] for i in base.positions(key)):
            side.extra.setdefault(key, []).insert(0, side.changed.pop(key))


def _against(base: Document, document: Document) -> Side:
    """A side indexed on its own (another format than the ancestor) compared by identity."""
    side = Side(document.style, len(base))
    for i, key in enumerate(document.keys):
        raw = document.raw(i)
        found = base.index.get(key)
        if (
            found is not None
            and not side.same[found]
            and key not in side.changed
            and (raw == base.raw(found))
        ):
            side.same[found] = 1
        else:
            side.keep(key, raw)
    _settle(side, base)
    return side


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


def _index_array(data: Buffer) -> Document:
    raw_data = bytes(data)
    try:
        values = orjson.loads(raw_data)
    except orjson.JSONDecodeError as error:
        raise _bad_document(raw_data, error) from None
    if type(values) is not list:
        raise InputError("expected a JSON array of records", line=1)
    newline = _newline_of(raw_data)
    style = Style(ARRAY, newline, raw_data.endswith(b"\n"), _indent_of(raw_data))
    document = Document(style)
    document._raws = raws = []
    for position, value in enumerate(values):
        try:
            key = identify(value)
        except InputError as error:
            line = _element_line(raw_data, position)
            raise InputError(f"record {position + 1}: {error.reason}", line=line) from None
        raws.append(orjson.dumps(value))
        document._add(key, _kind(key))
    return document


def _indent_of(data: bytes) -> bytes | None:
    """One level of indent: what precedes the first element on its own line."""
    body = data.rstrip()  # a final newline is not a line break inside the array
    opening = body.find(b"[")
    first_break = body.find(b"\n", opening)
    if first_break < 0:
        return b"" if body.lstrip() != b"[]" else None
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


def _element_line(data: bytes, position: int) -> int:
    """The line where element ``position`` of an array starts (for error messages only)."""
    import json  # noqa: PLC0415  # only on this error path

    text = data.decode("utf-8")
    decoder = json.JSONDecoder()
    offset = text.index("[") + 1
    start = offset
    for _ in range(position + 1):
        while text[offset] in " \t\r\n,":
            offset += 1
        start = offset
        _, offset = decoder.raw_decode(text, offset)
    return text.count("\n", 0, start) + 1


# A piece of output: a run of ancestor records kept as they were, or one record's bytes.
Piece: TypeAlias = "tuple[int, int] | bytes"


def render(pieces: Iterable[Piece], base: Document, style: Style) -> Iterator[bytes | memoryview]:
    """The output file, chunk by chunk: ``pieces`` laid out in ``style``."""
    newline = style.newline or b"\n"
    if style.format == ARRAY:
        yield _render_array(_records(pieces, base), style, newline)
        return
    first = True
    for piece in pieces:
        if not first:
            yield newline
        first = False
        if type(piece) is bytes:
            yield piece
            continue
        start, stop = piece  # a run of ancestor records
        block = base.block(start, stop, newline)
        if block is not None:
            yield block
        else:
            yield newline.join(base.raw(i) for i in range(start, stop))
    if not first and style.final_newline:
        yield newline


def _records(pieces: Iterable[Piece], base: Document) -> Iterator[bytes]:
    for piece in pieces:
        if type(piece) is bytes:
            yield piece
        else:
            start, stop = piece
            yield from (base.raw(i) for i in range(start, stop))


def _render_array(records: Iterable[bytes], style: Style, newline: bytes) -> bytes:
    values = [orjson.loads(raw) for raw in records]
    indent = b"  " if style.indent is None else style.indent
    if not indent:
        body = orjson.dumps(values)
    else:
        body = orjson.dumps(values, option=orjson.OPT_INDENT_2)
        if indent != b"  ":
            body = b"\n".join(_reindent(line, indent) for line in body.split(b"\n"))
    if style.final_newline:
        body += b"\n"
    return body.replace(b"\n", newline) if newline != b"\n" else body


def _reindent(line: bytes, unit: bytes) -> bytes:
    # orjson indents by two spaces a level, and a JSON string cannot hold a raw
    # newline, so leading spaces are always indentation.
    body = line.lstrip(b" ")
    return unit * ((len(line) - len(body)) // 2) + body


def choose_style(base: Style, ours: Style, theirs: Style) -> Style:
    """The layout of a merge: the ancestor's; where it shows none, the server's.

    So a CRLF repository stays CRLF. The sides are not asked: a small merge
    result shows nothing of its layout (one line has no line break, an empty
    file has no final newline), so letting a side's layout count would make
    the merge of three versions depend on the order they were merged in. The
    format alone is never lost that way, so for an empty ancestor it is what
    the sides agree on.
    """
    if base.format is not None:
        return base
    return agreed_style([ours, theirs])


def agreed_style(styles: Iterable[Style]) -> Style:
    """The layout of a join: the format the files share (else JSONL), laid out as the server does.

    A join has no ancestor to take a layout from, and a small result shows
    nothing of its line breaks, so taking them from the inputs would make
    joining three files depend on the order they were joined in.
    """
    return Style(_shared([style.format for style in styles]))


def _shared(values: list[_T | None]) -> _T | None:
    seen = {value for value in values if value is not None}
    return seen.pop() if len(seen) == 1 else None
