"""Memories kept as one JSON object: ``{"entities": ..., "relations": ...}``.

Some writers keep the whole memory in one object instead of one record a
line: iflow-mcp-memory writes ``{"entities":{NAME:{...}},"relations":{"FROM,TO,TYPE":{...}}}``
on one line, exports pretty-print ``{"entities":[...],"relations":[...]}``.
Such a file is merged inside the object, record by record with the rules of
`merge` (a section that is an object keyed by name is matched by its keys),
and written back in the ancestor's layout: indentation, separators, escapes,
line ending and final newline, so a record nobody changed comes back as it
was. Any other file that is one JSON object spread over several lines is
refused, saying what was found; a one-line object without those keys is a
JSONL record like any other.

The files are small (their writers load them whole), so they are parsed
whole, with Python's own reader: big integers stay exact, lone surrogate
escapes stay strings, a repeated key takes its last value, as ``JSON.parse``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import orjson

from crdt_merge_driver.core.document import Buffer
from crdt_merge_driver.core.record import Key, Record, identify, sort_key
from crdt_merge_driver.core.value import dumps, escape_lone_surrogates, loads
from crdt_merge_driver.errors import InputError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SECTIONS = ("entities", "relations")


class Layout(tuple[str | None, str, str, bool, str, bool]):
    """How an object file is written: ``json.dumps`` options, line ending, final newline."""

    __slots__ = ()

    def __new__(  # noqa: PLR0917  # a tuple's fields, positional as in a NamedTuple
        cls,
        indent: str | None = "  ",
        item: str = ",",
        key: str = ": ",
        ascii_only: bool = False,
        newline: str = "\n",
        final_newline: bool = True,
    ) -> Layout:
        return super().__new__(cls, (indent, item, key, ascii_only, newline, final_newline))

    def dump(self, value: Record) -> bytes:
        import json  # noqa: PLC0415  # only for object files, off the driver's usual path

        indent, item, key, ascii_only, newline, final_newline = self
        text = json.dumps(value, indent=indent, separators=(item, key), ensure_ascii=ascii_only)
        if final_newline:
            text += "\n"
        if newline != "\n":
            text = text.replace("\n", newline)
        # A lone surrogate cannot be UTF-8: written as JSON.stringify escapes it.
        return escape_lone_surrogates(text).encode("utf-8")


def is_object_file(data: Buffer) -> bool:
    """Whether ``data`` is a memory kept as one JSON object; raises `InputError` for another.

    Quick for the memory server's files: their first line is read by its
    prefix, and only a file whose first line is not a JSON record is parsed
    whole.
    """
    size, start = len(data), 0
    while start < size and data[start] in b" \t\r\n":
        start += 1
    if start == size or data[start] != 0x7B or data[start : start + 8] == b'{"type":':
        return False
    stop = data.find(b"\n", start)
    first = bytes(data[start : size if stop < 0 else stop]).rstrip(b"\r")
    try:
        value = orjson.loads(first)
    except orjson.JSONDecodeError:
        value = None
    if type(value) is dict:
        # A line of JSONL, unless it is the whole file and holds a memory.
        rest = b"" if stop < 0 else bytes(data[stop:])
        if rest.strip() or not any(name in value for name in SECTIONS):
            return False
    whole = _load(bytes(data))
    if whole is None:
        return False  # not one JSON value: the JSONL reader names the bad line
    _check(whole)
    return True


def _load(data: bytes) -> Any:
    # As JSON.parse reads it (value.loads): NaN, Infinity and 1e400 are not JSON.
    try:
        return loads(data)
    except ValueError:  # orjson.JSONDecodeError is one
        return None


def _check(value: object) -> None:
    import json  # noqa: PLC0415  # only for object files, off the driver's usual path

    if type(value) is not dict:
        return
    sections = [name for name in SECTIONS if name in value]
    if sections and all(type(value[name]) in (list, dict) for name in sections):
        return
    keys = ", ".join(json.dumps(name) for name in list(value)[:8]) or "none"
    if sections:
        found = "; ".join(f'"{name}" is {_kind(value[name])}' for name in sections)
    else:
        found = f"keys {keys}"
    raise InputError(
        f"one JSON object ({found}): not a memory file; a single-object memory holds"
        ' "entities" and "relations", each a list or an object keyed by name',
        line=1,
    )


def _kind(value: object) -> str:
    return {str: "a string", list: "a list", dict: "an object", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def read(data: Buffer) -> tuple[Record, Layout | None]:
    """An object file's value and layout (an empty file: an empty memory, no layout)."""
    raw = bytes(data)
    if not raw.strip():
        return {}, None
    value = _load(raw)
    if type(value) is not dict:
        raise InputError("not one JSON object, where the other versions are", line=1)
    _check(value)
    return value, layout_of(raw)


def layout_of(data: bytes) -> Layout:
    """The layout ``data`` was written in, as far as it shows."""
    body = data.strip()
    newline = "\r\n" if b"\r\n" in data else "\n"
    final_newline = data.rstrip(b" \t").endswith(b"\n")
    ascii_only = max(data, default=0) < 0x80 and b"\\u" in data
    import re  # noqa: PLC0415  # only for object files, off the driver's usual path

    first = re.match(rb'\A\{\s*"(?:[^"\\]|\\.)*"(\s*):(\s*)', body)
    if b"\n" not in body:
        key = ":" + (first.group(2).decode() if first else "")
        item = ", " if key != ":" else ","
        return Layout(None, item, key, ascii_only, newline, final_newline)
    line = body.split(b"\n", 1)[1]
    indent = line[: len(line) - len(line.lstrip(b" \t"))].decode()
    key = ":" + (first.group(2).decode().strip(" \r\n") or " " if first else " ")
    return Layout(indent or "  ", ",", key, ascii_only, newline, final_newline)


# A record's 3-way merge: (key, ancestor, ours, theirs) as bytes, None for absent.
RecordMerge = Callable[[Key, bytes | None, bytes | None, bytes | None], bytes | None]


def merge_objects(
    versions: Sequence[tuple[Record, Layout | None]], record: RecordMerge, labels: Sequence[str]
) -> tuple[bytes, int]:
    """The merge of three object files; the output and how many records it holds."""
    (o, o_layout), (a, a_layout), (b, b_layout) = versions
    if o_layout is not None:
        layout = o_layout
    elif a_layout == b_layout or b_layout is None:
        layout = a_layout or Layout()
    else:
        layout = b_layout if a_layout is None else Layout()
    merged: Record = {}
    count = 0
    for name in _top_keys(o, a, b):
        if name in SECTIONS:
            forms = [type(version.get(name, [])) for version in (o, a, b)]
            form = forms[0] if name in o else forms[1] if name in a else forms[2]
            for version, label in zip((o, a, b), labels, strict=True):
                if name in version and type(version[name]) is not form:
                    shown = _kind(version[name])
                    reason = f'"{name}" is {shown} here, not in the others: a change of layout'
                    raise InputError(reason + " is not merged").located(label)
            section = _merge_section(name, (o, a, b), record, labels, keyed=form is dict)
            count += len(section)
            merged[name] = section
            continue
        kept = _register(o.get(name, _GONE), a.get(name, _GONE), b.get(name, _GONE))
        if kept is not _GONE:
            merged[name] = kept
    return layout.dump(merged), count


_GONE: Any = object()  # a top-level field a version does not have


def _top_keys(o: Record, a: Record, b: Record) -> list[str]:
    """The ancestor's keys in its order, then the sides' other keys: the sections, then sorted."""
    names = list(o)
    new = {name for version in (a, b) for name in version if name not in o}
    names += [name for name in SECTIONS if name in new]
    names += sorted(new - set(SECTIONS))
    return names


def _register(o: Any, a: Any, b: Any) -> Any:
    """A top-level field other than the sections: one side's change, else the greater bytes."""
    o_raw, a_raw, b_raw = (_bytes_or_none(value) for value in (o, a, b))
    if a_raw in (b_raw, o_raw):
        return b
    if b_raw == o_raw:
        return a
    return a if (a_raw or b"") > (b_raw or b"") else b


def _bytes_or_none(value: Any) -> bytes | None:
    return None if value is _GONE else dumps(value, sort_keys=True)


def _merge_section(
    name: str, versions: Sequence[Record], record: RecordMerge, labels: Sequence[str], *,
    keyed: bool,
) -> Any:  # fmt: skip
    """One section merged record by record: survivors in the ancestor's order, then additions."""
    o, a, b = versions
    o_records, o_repeated = _index(name, o.get(name), labels[0], record, keyed=keyed)
    # A side's repeats fold against the ancestor's version, as `merge` folds a
    # line held twice: else a stale copy would bring back what a side removed.
    ancestor = {key: entry[0] for key, entry in o_records.items() if key not in o_repeated}
    a_records, _ = _index(name, a.get(name), labels[1], record, keyed=keyed, ancestor=ancestor)
    b_records, _ = _index(name, b.get(name), labels[2], record, keyed=keyed, ancestor=ancestor)
    indexed = [o_records, a_records, b_records]
    keys = list(o_records)
    new = {key for records in (a_records, b_records) for key in records if key not in o_records}
    keys += sorted(new, key=sort_key)
    result: list[tuple[Key, Any]] = []
    for key in keys:
        held = [records.get(key) for records in indexed]
        raws = [None if entry is None else entry[0] for entry in held]
        merged = record(key, raws[0], raws[1], raws[2])
        if merged is None:
            continue
        # The version's own value where the merge kept it whole: its field order stays.
        value = next((entry[1] for entry in held if entry is not None and entry[0] == merged),
                     None)  # fmt: skip
        result.append((key, loads(merged) if value is None else value))
    if keyed:
        return {_label_of(key): value for key, value in result}
    return [value for _, value in result]


def _index(
    name: str, section: Any, label: str, record: RecordMerge, *, keyed: bool,
    ancestor: dict[Key, bytes] | None = None,
) -> tuple[dict[Key, tuple[bytes, Any]], set[Key]]:  # fmt: skip
    """A section's records by identity (their bytes and value), and the identities held twice.

    A record held twice (a hand merge, say) is folded into one by ``record``
    against its version in ``ancestor`` (none there: no ancestor), as `merge`
    folds a line held twice.
    """
    import json  # noqa: PLC0415  # only for object files, off the driver's usual path

    found: dict[Key, tuple[bytes, Any]] = {}
    repeated: set[Key] = set()
    if section is None:
        return found, repeated
    items = section.items() if keyed else enumerate(section)
    for at, value in items:
        try:
            if keyed:
                if type(value) is not dict:
                    raise InputError(f"record {json.dumps(at)}: expected a JSON object")
                key = _keyed_identity(name, str(at), value)
            else:
                key = identify(value)
        except InputError as error:
            raise error.located(label) from None
        entry = (dumps(value), value)
        held = found.get(key)
        if held is not None:
            repeated.add(key)
        if held is not None and held[0] != entry[0]:
            folded = record(key, (ancestor or {}).get(key), held[0], entry[0])
            assert folded is not None  # both present: never a deletion
            entry = next((x for x in (held, entry) if x[0] == folded), (folded, None))
            if entry[1] is None:
                entry = (folded, loads(folded))
        found[key] = entry
    return found, repeated


def _keyed_identity(section: str, at: str, value: Record) -> Key:
    """A record of a section keyed by name: matched by its key alone, whatever its shape.

    In "entities" an entity, whose observations merge as a set: refused if
    they are not a list, as a tagged entity line is (a record that changed
    kind between versions would be two records under one key). In any other
    section a record merged field by field.
    """
    if section != "entities":
        return b"key:" + at.encode("utf-8", "surrogatepass")
    if "observations" in value and type(value["observations"]) is not list:
        raise InputError(f'entity {at!r}: "observations" must be a list')
    return at


def _label_of(key: Key) -> str:
    if type(key) is str:
        return key
    assert type(key) is bytes
    return key[4:].decode("utf-8", "surrogatepass")
