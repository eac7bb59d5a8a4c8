"""A memory file in memory: how it is laid out, its records, and writing it out.

`Document` is a file indexed record by record (the ancestor of a merge, or
any file read on its own); `Side` is one side of a merge as it differs from
its ancestor. `codec` reads bytes into them; `render` writes records back,
copying runs of ancestor lines as slices of the file where it can.
"""

from __future__ import annotations

import mmap
from array import array
from collections.abc import Iterable, Iterator

from crdt_merge_driver.core.record import Key
from crdt_merge_driver.core.value import dumps, loads

# On the merge driver's path, where importing typing would cost 3 ms of a
# 10k-entity merge's 80: names only the type checker needs are imported for it
# alone (mypy takes any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    _T = TypeVar("_T")

Buffer = bytes | mmap.mmap

JSONL = "jsonl"
ARRAY = "array"


class Style(tuple[str | None, bytes | None, bool | None, bytes | None]):
    """How a file is laid out. ``None`` means "no opinion" (an empty file).

    A named tuple (equal and hashable by value) written out, not a
    ``typing.NamedTuple``: see TYPE_CHECKING above.
    """

    __slots__ = ()

    def __new__(
        cls,
        format: str | None = None,
        newline: bytes | None = None,
        final_newline: bool | None = None,
        indent: bytes | None = None,  # arrays: one level's indent; b"" is one line
    ) -> Style:
        return super().__new__(cls, (format, newline, final_newline, indent))

    @property
    def format(self) -> str | None:
        return self[0]

    @property
    def newline(self) -> bytes | None:
        return self[1]

    @property
    def final_newline(self) -> bool | None:
        return self[2]

    @property
    def indent(self) -> bytes | None:
        return self[3]


class Document:
    """A file indexed record by record: the ancestor of a merge.

    Record ``i`` has identity ``keys[i]`` and kind ``kinds[i]`` (0 entity,
    1 relation, 2 other). ``index`` maps an identity to its first record;
    ``repeated`` holds identities that occur more than once.
    """

    __slots__ = (
        "clean",
        "data",
        "ends",
        "index",
        "keys",
        "kinds",
        "raws",
        "repeated",
        "spread",
        "starts",
        "style",
    )

    def __init__(self, style: Style) -> None:
        self.style = style
        self.keys: list[Key] = []
        self.kinds = bytearray()
        self.index: dict[Key, int] = {}
        self.repeated: set[Key] = set()
        self.spread: dict[Key, list[int]] | None = None  # positions of repeated keys, once asked
        self.data: Buffer = b""
        self.starts = array("q")
        self.ends = array("q")
        self.raws: list[bytes] | None = None
        self.clean = True  # every line break is style.newline

    def __len__(self) -> int:
        return len(self.keys)

    def raw(self, i: int) -> bytes:
        """The bytes of record ``i`` (a JSONL line without its line break)."""
        if self.raws is not None:
            return self.raws[i]
        return self.data[self.starts[i] : self.ends[i]]

    def positions(self, key: Key) -> list[int]:
        """Every record that has identity ``key`` (one, unless the file repeats it)."""
        first = self.index.get(key)
        if first is None:
            return []
        if key not in self.repeated:
            return [first]
        if self.spread is None:
            # One pass for every repeated identity: a file damaged by
            # merge=union repeats them all, and a scan per identity is quadratic.
            spread: dict[Key, list[int]] = {}
            repeated = self.repeated
            for i, each in enumerate(self.keys):
                if each in repeated:
                    spread.setdefault(each, []).append(i)
            self.spread = spread
        return self.spread[key]

    def block(self, start: int, stop: int, newline: bytes) -> memoryview | None:
        """Records ``start..stop-1`` as one slice of the file, if the file holds them so.

        True for JSONL whose line breaks are all ``newline``: the slice then
        carries its own line breaks, and nothing is copied.
        """
        if self.raws is not None or not self.clean or newline != self.style.newline:
            return None
        return memoryview(self.data)[self.starts[start] : self.ends[stop - 1]]

    def line_number(self, i: int) -> int:
        """The 1-based line of record ``i`` (for error messages only)."""
        if self.raws is not None:
            return i + 1
        return line_at(self.data, self.starts[i])


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


def line_at(data: Buffer, position: int) -> int:
    """The 1-based line number at byte ``position`` (for error messages only)."""
    line, at = 1, 0
    while (at := data.find(b"\n", at, position)) >= 0:
        line, at = line + 1, at + 1
    return line


# A piece of output: a run of ancestor records kept as they were, or one record's bytes.
Piece = tuple[int, int] | bytes


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
    values = [loads(raw) for raw in records]
    indent = b"  " if style.indent is None else style.indent
    if not indent:
        body = dumps(values)
    else:
        body = dumps(values, indent=True)
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
    """The layout of a join: the format all files share (else None), laid out as the server does.

    A join has no ancestor to take a layout from, and a small result shows
    nothing of its line breaks, so taking them from the inputs would make
    joining three files depend on the order they were joined in.
    """
    return Style(_shared([style.format for style in styles]))


def joined_style(styles: Iterable[Style]) -> Style:
    """The layout of a join: what every input that shows it agrees on, else the server's.

    Format, final newline and array indent are each taken where all the
    inputs that show one agree (an empty file shows none), so a join of
    files that all end in a newline ends in one. Each is a property of the
    whole set of inputs, and every non-empty output shows it again, so the
    layout does not depend on the order or the grouping of the joins. Not
    the line ending: a one-line output shows none, so joining in two steps
    could lose a CRLF that joining at once keeps (hypothesis found it).
    """
    styles = list(styles)
    return Style(
        _shared([style.format for style in styles]),
        None,
        _shared([style.final_newline for style in styles]),
        _shared([style.indent for style in styles]),
    )


def _shared(values: list[_T | None]) -> _T | None:
    seen = {value for value in values if value is not None}
    return seen.pop() if len(seen) == 1 else None
