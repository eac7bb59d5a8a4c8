"""The CRDT merge of memory files: 3-way with git's ancestor, and the N-way join.

Records are matched by identity (see `record`) and merged one by one:

* added on either side: kept; changed on one side only: that change wins;
* deleted on one side and untouched on the other: deleted; deleted on one
  side and changed on the other: kept, with the change (nothing is lost);
* changed on both sides: the observations merge as a set against the
  ancestor (additions from both kept, a removal on either side stays
  removed), and the rest of the record, its *register* (``entityType``, any
  unknown field, the ``_crdt`` stamp), is taken whole from one side: the one
  that did not change it, else the later stamp, else the greater canonical
  bytes. A stamped register beats an unstamped one. This is a total order on
  content, so the choice never depends on which side is "ours".

Lines that are byte-identical to the ancestor's are not parsed again. Output
order: records that survive from the ancestor keep its order, new records
follow sorted by identity; entities first, then relations, then the rest.

Records of one file that share an identity (what ``merge=union`` leaves) are
folded into one by the same rules, against the ancestor's version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import chain

import orjson

from crdt_merge_driver.clock import Stamp, stamp_of
from crdt_merge_driver.codec import diff, parse
from crdt_merge_driver.document import (
    EMPTY,
    Buffer,
    Document,
    Piece,
    Side,
    Style,
    agreed_style,
    choose_style,
    render,
)
from crdt_merge_driver.errors import InputError
from crdt_merge_driver.record import Key, Record, decode, describe, encode, identify, sort_key
from crdt_merge_driver.value import dumps

# On the merge driver's path, where importing typing would cost 3 ms of a
# 10k-entity merge's 80: names only the type checker needs are imported for it
# alone (mypy takes any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _T = TypeVar("_T")

_UNSTAMPED = Stamp(0, 0, "")


class Decision:
    """A concurrent edit of one record's register, and which version was kept."""

    __slots__ = ("by_stamp", "dropped", "kept", "key")

    def __init__(self, key: Key, kept: Record, dropped: Record, *, by_stamp: bool) -> None:
        self.key = key
        self.kept = kept
        self.dropped = dropped
        self.by_stamp = by_stamp

    def explain(self) -> str:
        changes = []
        for name in sorted(self.kept.keys() | self.dropped.keys()):
            kept, dropped = self.kept.get(name), self.dropped.get(name)
            if name not in _METADATA and kept != dropped:
                changes.append(f"{name} {_show(kept)} over {_show(dropped)}")
        rule = "the later stamp" if self.by_stamp else "no stamps to compare: by content"
        return f"{describe(self.key)}: edited on both sides, kept {'; '.join(changes)} ({rule})"


def _show(value: object) -> str:
    return "(absent)" if value is None else dumps(value).decode()


class Report:
    """What a merge did, for the one log line per merged file."""

    def __init__(self) -> None:
        self.kept = 0
        self.added = 0
        self.changed = 0
        self.deleted = 0
        self.folded = 0
        self.decisions: list[Decision] = []

    def summary(self) -> str:
        parts = [f"{self.kept} records", f"+{self.added} added", f"~{self.changed} changed"]
        parts.append(f"-{self.deleted} deleted")
        if self.decisions:
            parts.append(f"{len(self.decisions)} concurrent edits resolved")
        if self.folded:
            parts.append(f"{self.folded} duplicate lines folded")
        return ", ".join(parts)


class Merged:
    """A merge's output, laid out but not yet written: pieces of records and ancestor runs."""

    __slots__ = ("base", "pieces", "report", "style")

    def __init__(self, pieces: list[Piece], base: Document, style: Style, report: Report) -> None:
        self.pieces = pieces
        self.base = base
        self.style = style
        self.report = report

    def chunks(self) -> Iterator[bytes | memoryview]:
        return render(self.pieces, self.base, self.style)

    def to_bytes(self) -> bytes:
        return b"".join(self.chunks())


_LABELS = ("ancestor", "ours", "theirs")


def merge_bytes(
    base: Buffer, ours: Buffer, theirs: Buffer, *, labels: tuple[str, str, str] = _LABELS
) -> tuple[bytes, Report]:
    """Merge three versions of a memory file; raises `InputError` naming the bad side."""
    if type(ours) is bytes and ours == theirs:
        return ours, Report()
    merged = merge_buffers(base, ours, theirs, labels=labels)
    return merged.to_bytes(), merged.report


def merge_buffers(
    base: Buffer, ours: Buffer, theirs: Buffer, *, labels: tuple[str, str, str] = _LABELS
) -> Merged:
    """Merge three versions of a memory file, leaving the output to be written chunk by chunk."""
    ancestor = _read(partial(parse, base), labels[0])
    a_side = _read(partial(diff, ancestor, ours), labels[1])
    b_side = _read(partial(diff, ancestor, theirs), labels[2])
    # Only the ancestor's lines are parsed lazily, inside the merge itself.
    return _read(partial(merge, ancestor, a_side, b_side), labels[0])


def _read(step: Callable[[], _T], label: str) -> _T:
    try:
        return step()
    except InputError as error:
        raise error.located(label) from None


def join_bytes(inputs: Sequence[Buffer], *, style: Style | None = None) -> tuple[bytes, Report]:
    """Join memory files that share no ancestor; raises `InputError` naming the input."""
    sides = [
        _read(partial(diff, EMPTY, data), f"input {number}")
        for number, data in enumerate(inputs, 1)
    ]
    merged = join(sides, style=style)
    return merged.to_bytes(), merged.report


def merge(base: Document, ours: Side, theirs: Side) -> Merged:
    """The 3-way merge of two sides against their common ancestor."""
    merger = _Merger(base, ours, theirs)
    pieces: list[Piece] = []
    added = merger.added()
    for kind in (0, 1, 2):
        for start, stop in _runs(base.kinds, kind):
            merger.walk(start, stop, pieces)
        pieces.extend(added[kind])
    merger.report.kept += sum(map(len, added))
    style = choose_style(base.style, ours.style, theirs.style)
    return Merged(pieces, base, style, merger.report)


def join(sides: Sequence[Side], *, style: Style | None = None) -> Merged:
    """The union of files that share no ancestor (one per host, say).

    The same record in several files is merged as if added on both sides of
    a 3-way merge. Commutative, associative and idempotent.
    """
    merger = _Merger(EMPTY, Side(Style(), 0), Side(Style(), 0))
    joined = _union(sides, merger)
    pieces: list[Piece] = []
    for kind in (0, 1, 2):
        pieces.extend(_sorted_of_kind(joined, kind))
    merger.report.kept = merger.report.added = len(pieces)
    chosen = style if style is not None else agreed_style(side.style for side in sides)
    return Merged(pieces, EMPTY, chosen, merger.report)


def union(sides: Sequence[Side]) -> dict[Key, bytes]:
    """Every record of ``sides`` by identity, first seen first; repeats merged as by `join`."""
    return _union(sides, _Merger(EMPTY, Side(Style(), 0), Side(Style(), 0)))


def _union(sides: Sequence[Side], merger: _Merger) -> dict[Key, bytes]:
    joined: dict[Key, bytes] = {}
    for side in sides:
        for key, raw in _every_record(side):
            held = joined.get(key)
            joined[key] = raw if held is None else merger.fold(key, None, [held, raw])
    return joined


def _every_record(side: Side) -> Iterator[tuple[Key, bytes]]:
    yield from side.changed.items()
    for key, extra in side.extra.items():
        for raw in extra:
            yield key, raw


def _sorted_of_kind(records: dict[Key, bytes], kind: int) -> list[bytes]:
    keys = [key for key in records if sort_key(key)[0] == kind]
    keys.sort()  # keys of one kind share one type, so they compare
    return [records[key] for key in keys]


def _runs(kinds: bytearray, kind: int) -> Iterator[tuple[int, int]]:
    """The maximal runs of records of ``kind``, as ``[start, stop)``."""
    size, position = len(kinds), 0
    # Where each other kind comes next, looked for again only once passed: a
    # kind that never comes is looked for once, not once per run.
    following = {other: -1 for other in (0, 1, 2) if other != kind}
    while (start := kinds.find(kind, position)) >= 0:
        for other, next_at in following.items():
            if next_at < start:
                found = kinds.find(other, start)
                following[other] = size if found < 0 else found
        position = min(following.values())
        yield start, position


class _Merger:
    def __init__(self, base: Document, ours: Side, theirs: Side) -> None:
        self.report = Report()
        self.base, self.ours, self.theirs = base, ours, theirs
        self.repeated = base.repeated | ours.extra.keys() | theirs.extra.keys()
        size = len(base)
        # 1 where both sides hold the ancestor's line as it was: copied, never parsed.
        both = int.from_bytes(ours.same, "little") & int.from_bytes(theirs.same, "little")
        self.untouched = bytearray(both.to_bytes(size, "little"))
        for key in self.repeated:
            positions = base.positions(key)
            for i in positions:
                self.untouched[i] = 0
            if self._plain_repeat(key, positions):
                # Copied as its first line, never parsed; the copies are dropped
                # (see `_line`). What merge=union leaves: every line twice.
                self.untouched[positions[0]] = 1
                self.report.folded += len(positions) - 1

    def _plain_repeat(self, key: Key, positions: list[int]) -> bool:
        """An ancestor record repeated byte for byte, which each side holds as it was."""
        if len(positions) < 2:
            return False
        base = self.base
        first = base.raw(positions[0])
        if any(base.raw(i) != first for i in positions[1:]):
            return False
        return all(
            key not in side.changed
            and key not in side.extra
            and any(side.same[i] for i in positions)
            for side in (self.ours, self.theirs)
        )

    def walk(self, start: int, stop: int, pieces: list[Piece]) -> None:
        """Merge ancestor records ``start..stop-1`` into ``pieces``."""
        untouched, report = self.untouched, self.report
        position = start
        while position < stop:
            changed = untouched.find(0, position, stop)
            if changed < 0:
                changed = stop
            if changed > position:
                pieces.append((position, changed))
                report.kept += changed - position
            if changed == stop:
                return
            result = self._line(changed)
            if result is not None:
                pieces.append(result)
                report.kept += 1
            position = changed + 1

    def _line(self, i: int) -> bytes | None:
        base = self.base
        key = base.keys[i]
        if key in self.repeated:
            if base.index[key] != i:
                return None  # folded into the identity's first line
            o, a, b = (
                self._version(None, key),
                self._version(self.ours, key),
                self._version(self.theirs, key),
            )
        else:
            o = base.raw(i)
            a = o if self.ours.same[i] else self.ours.changed.get(key)
            b = o if self.theirs.same[i] else self.theirs.changed.get(key)
        try:
            result = self.record(key, o, a, b)
        except InputError as error:
            raise InputError(error.reason, line=base.line_number(i)) from None
        if result is None:
            self.report.deleted += 1
        elif result != o:
            self.report.changed += 1
        return result

    def added(self) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """Records the ancestor does not have, merged, by kind, sorted by identity."""
        index = self.base.index
        new = {key for side in (self.ours, self.theirs) for key in side.changed if key not in index}
        new.update(
            key for side in (self.ours, self.theirs) for key in side.extra if key not in index
        )
        records: dict[Key, bytes] = {}
        for key in new:
            a, b = self._version(self.ours, key), self._version(self.theirs, key)
            result = self.record(key, None, a, b)
            assert result is not None  # present on at least one side
            records[key] = result
        self.report.added = len(records)
        return (
            _sorted_of_kind(records, 0),
            _sorted_of_kind(records, 1),
            _sorted_of_kind(records, 2),
        )

    def _version(self, side: Side | None, key: Key) -> bytes | None:
        """One side's version of ``key`` (``None``: the ancestor's), repeats folded."""
        base = self.base
        if side is None:
            versions = [base.raw(i) for i in base.positions(key)]
            return self.fold(key, None, versions) if versions else None
        versions = side.versions(key, base)
        if not versions:
            return None
        ancestor = (
            None if key in base.repeated or key not in base.index else base.raw(base.index[key])
        )
        return self.fold(key, ancestor, versions)

    def fold(self, key: Key, ancestor: bytes | None, versions: list[bytes]) -> bytes:
        """Several versions of one record in one file, merged into one."""
        held = versions[0]
        for raw in versions[1:]:
            merged = self.record(key, ancestor, held, raw)
            assert merged is not None  # both present: never a deletion
            held = merged
            self.report.folded += 1
        return held

    def record(self, key: Key, o: bytes | None, a: bytes | None, b: bytes | None) -> bytes | None:
        """One record's 3-way merge; ``None`` for absent (not there, or deleted)."""
        if a == b:
            return a
        if o is None:
            if a is None:
                return b
            if b is None:
                return a
            return self._combine(key, None, a, b)
        if a is None:
            return None if b is None or _same(key, b, o) else b
        if b is None:
            return None if _same(key, a, o) else a
        if a == o:
            return b
        if b == o:
            return a
        return self._combine(key, o, a, b)

    def _combine(self, key: Key, o_raw: bytes | None, a_raw: bytes, b_raw: bytes) -> bytes:
        """Both sides hold the record and differ: merge it field by field."""
        entity = type(key) is str
        o = _decode(key, o_raw) if o_raw is not None else None
        a, b = _decode(key, a_raw), _decode(key, b_raw)
        merged = dict(self._register(key, o, a, b, entity=entity))
        if entity and ("observations" in a or "observations" in b):
            merged["observations"] = _merge_sets(
                o.get("observations", []) if o is not None else [],
                a.get("observations", []),
                b.get("observations", []),
            )
        return encode(merged)

    def _register(
        self, key: Key, o: Record | None, a: Record, b: Record, *, entity: bool
    ) -> Record:
        reg_a, reg_b = _register(a, entity=entity), _register(b, entity=entity)
        raw_a, raw_b = encode(reg_a), encode(reg_b)
        raw_o = encode(_register(o, entity=entity)) if o is not None else None
        if raw_a in (raw_b, raw_o):
            return reg_b
        if raw_b == raw_o:
            return reg_a
        stamp_a, stamp_b = stamp_of(reg_a), stamp_of(reg_b)
        rank_a = (stamp_a is not None, stamp_a or _UNSTAMPED, raw_a)
        rank_b = (stamp_b is not None, stamp_b or _UNSTAMPED, raw_b)
        kept, dropped = (reg_a, reg_b) if rank_a > rank_b else (reg_b, reg_a)
        by_stamp = stamp_a is not None and stamp_b is not None and stamp_a != stamp_b
        if _without_metadata(kept) != _without_metadata(dropped):
            # Two stamps on the same content (one record created on two
            # machines, say) decide nothing a user would want to hear about.
            self.report.decisions.append(Decision(key, kept, dropped, by_stamp=by_stamp))
        return kept


def _without_metadata(record: Record) -> bytes:
    return encode({name: value for name, value in record.items() if name not in _METADATA})


_METADATA = frozenset(("_crdt", "_crdt_metadata"))


def _decode(key: Key, raw: bytes) -> Record:
    """A record's value, checked: ancestor lines read by their prefix only are parsed here."""
    try:
        value = decode(raw)
    except orjson.JSONDecodeError as error:
        raise InputError(f"not JSON ({error.msg})") from None
    if identify(value) != key:
        raise InputError("a record whose identity is not what its layout suggests")
    return value


def _register(record: Record, *, entity: bool) -> Record:
    if not entity:
        return record
    return {name: value for name, value in record.items() if name != "observations"}


def _same(key: Key, x: bytes, y: bytes) -> bool:
    return encode(_decode(key, x)) == encode(_decode(key, y))


def _merge_sets(o: list[Any], a: list[Any], b: list[Any]) -> list[Any]:
    """Observations as a set against the ancestor, in a side-independent order.

    Survivors keep the ancestor's order; additions follow, sorted.
    """
    keys_o, keys_a, keys_b = _element_keys(o), _element_keys(a), _element_keys(b)
    if keys_a in (keys_b, keys_o):
        return b
    if keys_b == keys_o:
        return a
    in_o, in_a, in_b = set(keys_o), set(keys_a), set(keys_b)
    merged: list[Any] = []
    seen: set[object] = set()
    for key, element in zip(keys_o, o, strict=True):
        if key in in_a and key in in_b and key not in seen:
            seen.add(key)
            merged.append(element)
    added: dict[object, Any] = {}
    for key, element in chain(zip(keys_a, a, strict=True), zip(keys_b, b, strict=True)):
        if key not in in_o:
            added.setdefault(key, element)
    merged.extend(added[key] for key in sorted(added, key=_element_order))
    return merged


def _element_keys(elements: list[Any]) -> list[object]:
    # Observations are strings; anything else compares by canonical JSON bytes
    # (so 1, 1.0 and true stay three different observations).
    return [
        element if type(element) is str else dumps(element, sort_keys=True)
        for element in elements
    ]


def _element_order(key: object) -> tuple[int, Any]:
    return (0, key) if type(key) is str else (1, key)
