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

from collections.abc import Callable
from functools import partial
from itertools import accumulate, compress, count
from operator import add, not_

import orjson

from crdt_merge_driver.core.document import (
    ARRAY,
    EMPTY,
    JSONL,
    Buffer,
    Document,
    Side,
    Style,
    line_at,
)
from crdt_merge_driver.core.record import Key, identify
from crdt_merge_driver.core.value import dumps, loads
from crdt_merge_driver.errors import InputError

_CONFLICT_MARKERS = (b"<<<<<<<", b"=======", b">>>>>>>", b"|||||||")
# The memory server writes every entity line with this prefix (JSON.stringify of
# {type, name, entityType, observations}) and ending in "]}".
_ENTITY_PREFIX = b'{"type":"entity","name":"'
_NAME_START = len(_ENTITY_PREFIX)
_SHORTEST_ENTITY = len(b'{"type":"entity","name":"","entityType":"","observations":[]}')
# Lines are indexed this many bytes at a time: each chunk's copies of its
# lines are freed before the next, so a fresh process reuses their memory
# instead of faulting in new pages for a copy of the whole file.
_CHUNK = 256 << 10


_MAX_STRIDE = 1024
_ONES = b"\x01" * _MAX_STRIDE


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
    """Index JSONL; ``strict`` parses every line instead of reading the server's lines by form.

    The hot path of the driver: every ancestor line passes through here. So
    the work is done a chunk of lines at a time by bytes methods and
    comprehensions, not line by line, and a line in the server's own entity
    layout yields its identity without a parse.
    """
    newline = _newline_of(data)
    size = len(data)
    document = Document(Style(JSONL, newline, data[size - 1] == 0x0A, None))
    document.data = data
    position = 0
    while position < size:
        # Whole lines only, a bounded copy at a time (a large file is mapped).
        cut = data.rfind(b"\n", position, position + _CHUNK) + 1
        if cut <= position:  # one line longer than a chunk
            cut = data.find(b"\n", position + _CHUNK) + 1 or size
        _index_chunk(document, data[position:cut], position, strict=strict)
        position = cut
    _index_keys(document)
    return document


def _index_chunk(document: Document, text: bytes, offset: int, *, strict: bool) -> None:
    """Add the lines of ``text``, which starts at byte ``offset`` of the file."""
    lines = text.split(b"\n")
    breaks = len(lines) - 1
    if not lines[-1]:
        lines.pop()  # what follows the final line break is no line
    starts = list(map(add, accumulate(map(len, lines), initial=offset), count()))
    # A carriage return ends a line in any file: a merge=union of an LF side
    # and a CRLF side has both, and JSON never ends in one.
    if b"\r" in text:
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        crlf_breaks = text.count(b"\r\n")
    else:
        crlf_breaks = 0
    if document.style.newline == b"\r\n":
        document.clean &= crlf_breaks == breaks
    else:
        document.clean &= crlf_breaks == 0
    keys: list[Key | None] = [None] * len(lines) if strict else _entity_names(lines, text)
    kinds = bytearray(len(lines))
    blank: list[int] = []
    for at in [at for at, key in enumerate(keys) if key is None]:
        line = lines[at]
        parsed = _parse_line(line, partial(line_at, document.data, starts[at]))
        if parsed is None:
            blank.append(at)
        else:
            keys[at], kinds[at] = parsed
    ends = list(map(add, starts, map(len, lines)))
    if blank:
        for at in reversed(blank):
            del keys[at], kinds[at], starts[at], ends[at]
    document.starts.extend(starts[: len(keys)])
    document.ends.extend(ends)
    document.keys.extend(keys)  # type: ignore[arg-type]  # every None was replaced or deleted
    document.kinds.extend(kinds)


def _entity_names(lines: list[bytes], text: bytes) -> list[Key | None]:
    """The name of each line in the server's entity layout, read without a parse; else None.

    ``text`` is the chunk the lines were cut from. Only a line that is
    plainly one record with one name is read by form (see `_plain`); a name
    with a backslash (an escape) or that is not UTF-8 is left to the parser.
    """
    prefix, start, shortest, after = _ENTITY_PREFIX, _NAME_START, _SHORTEST_ENTITY, _AFTER_NAME
    # The quote that ends the name, where the layout's next key follows it at once.
    quotes = [
        quote
        if len(line) >= shortest
        and line.startswith(prefix)
        and line.endswith(b"]}")
        and line.startswith(after, quote := line.find(b'"', start))
        else 0
        for line in lines
    ]
    quotes = _plain(lines, quotes, text)
    names = [line[start:quote] for line, quote in zip(lines, quotes, strict=True) if quote > 0]
    if not names:
        return [None] * len(lines)
    joined = b"\n".join(names)  # no line holds a line break, so this splits back
    try:
        decoded = iter(joined.decode("utf-8").split("\n"))
    except UnicodeDecodeError:
        return [
            _entity_name(line, quote) if quote > 0 else None
            for line, quote in zip(lines, quotes, strict=True)
        ]
    return [next(decoded) if quote > 0 else None for quote in quotes]


# The keys that decide a record's identity: a line in the server's layout holds
# each once, in its prefix. JSON.parse reads a repeated one as the last.
_IDENTITY_KEYS = (b'"name"', b'"type"')
_AFTER_NAME = b'","entityType":"'


def _plain(lines: list[bytes], quotes: list[int], text: bytes) -> list[int]:
    """``quotes``, with 0 for each line that is not plainly one record with one name.

    Such a line is parsed instead: a line with a backslash (an escaped key
    can spell "name"), a carriage return (a line break to some readers, so
    two records to them), or a ``"name"`` or ``"type"`` beyond the prefix's
    (a repeated key, in any spacing: ``"name" :`` too; a second record; or
    only a string that reads "name", which the parse then reads right).
    Outside an escape a quote always ends a string, so each of these is a
    key or a whole string. Counted at once first, in C: the chunk's count
    less the other lines' is the plain lines' count, and each of them has
    one at least; line by line only when one is to drop.
    """
    if b"\\" in text or b"\r" in text:
        quotes = [
            quote if quote > 0 and b"\\" not in line and b"\r" not in line else 0
            for line, quote in zip(lines, quotes, strict=True)
        ]
    plain = len(quotes) - quotes.count(0)
    # No key forms across a line break: the lines' counts add up to the chunk's.
    others = b"\n".join(compress(lines, map(not_, quotes)))
    if all(text.count(key) - others.count(key) == plain for key in _IDENTITY_KEYS):
        return quotes
    return [
        quote if quote > 0 and all(line.count(key) == 1 for key in _IDENTITY_KEYS) else 0
        for line, quote in zip(lines, quotes, strict=True)
    ]


def _entity_name(line: bytes, quote: int) -> str | None:
    try:
        return line[_NAME_START:quote].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _index_keys(document: Document) -> None:
    """Fill ``index`` (each identity's first record) and ``repeated``, all records at once."""
    keys = document.keys
    # Built from the last record to the first, so the first occurrence is what stays.
    document.index = index = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))
    if len(index) != len(keys):
        document.repeated = {key for at, key in enumerate(keys) if index[key] != at}


def _parse_line(line: bytes, number: Callable[[], int]) -> tuple[Key, int] | None:
    """Identity and kind of one JSONL line; None for a blank line.

    ``number`` gives the line's number, counted only if it is needed for an error.
    """
    try:
        value = loads(line)
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
    same = side.same
    base_data, base_starts, base_ends = base.data, base.starts, base.ends
    count = len(base)
    find = data.find
    expected = position = 0
    stride = 1

    def matches(first: int, last: int) -> bool:
        # Ancestor lines first..last as one block: they carry their own line
        # breaks, so equal bytes (and a line end after them) mean equal lines.
        start = base_starts[first]
        block_end = position + base_ends[last] - start
        # A lone CR is not a line end: what follows it on the line is read.
        return data[position:block_end] == base_data[start : base_ends[last]] and (
            block_end == size
            or data[block_end] == 0x0A
            or data[block_end : block_end + 2] == b"\r\n"
            or (block_end + 1 == size and data[block_end] == 0x0D)
        )

    while position < size:
        if base.repeated and (held := _past_repeats(base, same, expected)) > expected:
            # Every line twice (merge=union damage): the side need not hold the
            # copies, and a block would span them: skipped, matched line by line.
            expected, stride = held, 1
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
            stride = 1
            if low > expected:
                same[expected:low] = _ONES[: low - expected]
                # Past the line break after the last line kept: the side's own
                # break, which may not be the ancestor's (LF against CRLF).
                matched_end = position + base_ends[low - 1] - base_starts[expected]
                stop = find(b"\n", matched_end)
                position = size if stop < 0 else stop + 1
                expected = low
                if base.repeated:
                    continue  # the differing line is read next, unless it is a copy (above)
            # Read at once: a second look at its block would only find it differs again.
        stop = size if (stop := find(b"\n", position)) < 0 else stop
        end = stop - 1 if stop > position and data[stop - 1] == 0x0D else stop
        line = data[position:end]
        parsed = _parse_line(line, partial(line_at, data, position))
        position = stop + 1
        if parsed is not None:
            expected = _place_line(side, base, parsed[0], line, expected)
    _settle(side, base)
    return side


def _past_repeats(base: Document, same: bytearray, i: int) -> int:
    """The first ancestor line from ``i`` on that is not a copy of an earlier one the side holds.

    What merge=union leaves (every line twice): without this, a side holding
    each record once lines up with none of the ancestor's lines after the
    first repeat, and every line of it is parsed.
    """
    keys, repeated, index = base.keys, base.repeated, base.index
    while i < len(keys) and keys[i] in repeated:
        first = index[keys[i]]
        if not (first < i and same[first] == 1 and base.raw(first) == base.raw(i)):
            break
        i += 1
    return i


def _place_line(side: Side, base: Document, key: Key, line: bytes, expected: int) -> int:
    """Record a side's line that did not line up; the ancestor line expected next after it.

    A line that is a later ancestor record means the ancestor lines before
    it are missing here (deleted, or moved): the walk resumes after it.
    """
    found = base.index.get(key)
    if found is not None and found >= expected and not side.same[found]:
        expected = found + 1
        if line == base.raw(found):
            side.same[found] = 1
            return expected
    side.keep(key, line)
    return expected


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
        loads(line)
    except orjson.JSONDecodeError as error:
        return InputError(f"not JSON ({error.msg})", line=number)
    raise AssertionError("a line that failed to parse parsed")  # pragma: no cover


def _index_array(data: Buffer) -> Document:
    raw_data = bytes(data)
    try:
        values = loads(raw_data)
    except orjson.JSONDecodeError as error:
        raise _bad_document(raw_data, error) from None
    if type(values) is not list:
        raise InputError("expected a JSON array of records", line=1)
    newline = _newline_of(raw_data)
    style = Style(ARRAY, newline, raw_data.endswith(b"\n"), _indent_of(raw_data))
    document = Document(style)
    document.raws = raws = []
    for position, value in enumerate(values):
        try:
            key = identify(value)
        except InputError as error:
            line = _element_line(raw_data, position)
            raise InputError(f"record {position + 1}: {error.reason}", line=line) from None
        raws.append(dumps(value))
        document.keys.append(key)
        document.kinds.append(_kind(key))
    _index_keys(document)
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
