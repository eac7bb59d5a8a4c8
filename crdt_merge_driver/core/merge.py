"""The CRDT merge of memory files: 3-way with git's ancestor, and the N-way join.

Records are matched by identity (see `record`) and merged one by one:

* added on either side: kept; changed on one side only: that change wins;
* deleted on one side and untouched on the other: deleted; deleted on one
  side and changed on the other: kept, with the change (nothing is lost);
* a side that only re-laid the record, or only re-stamped its writer's save
  time (``_savedAt``), left it unchanged;
* changed on both sides: the observations merge as a set against the
  ancestor (additions from both kept, a removal on either side stays
  removed), and every other field merges on its own: the side that changed
  it, else the later stamp, else the greater value. A stamped side beats an
  unstamped one; the stamp goes with the fields it dates. This is a total
  order on content, so the choice never depends on which side is "ours".

Lines that are byte-identical to the ancestor's are not parsed again. Output
order: records that survive from the ancestor keep its order, new records
follow sorted by identity; entities first, then relations, then the rest.

Records of one file that share an identity (what ``merge=union`` leaves) are
folded into one by the same rules, against the ancestor's version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial

import orjson

from crdt_merge_driver.core import envelope
from crdt_merge_driver.core.clock import Stamp, stamp_of
from crdt_merge_driver.core.codec import diff, parse
from crdt_merge_driver.core.document import (
    EMPTY,
    JSONL,
    Buffer,
    Document,
    Piece,
    Side,
    Style,
    choose_style,
    joined_style,
    render,
)
from crdt_merge_driver.core.envelope import is_object_file
from crdt_merge_driver.core.record import Key, Record, decode, describe, encode, identify, sort_key
from crdt_merge_driver.core.value import dumps
from crdt_merge_driver.errors import InputError

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

    __slots__ = ("dropped", "kept", "key", "rule")

    def __init__(self, key: Key, kept: Record, dropped: Record, *, rule: str) -> None:
        self.key = key
        self.kept = kept
        self.dropped = dropped
        self.rule = rule  # what decided, in words

    def explain(self) -> str:
        changes = []
        for name in sorted(self.kept.keys() | self.dropped.keys()):
            kept, dropped = self.kept.get(name), self.dropped.get(name)
            if name not in _METADATA and kept != dropped:
                changes.append(f"{name} {_show(kept)} over {_show(dropped)}")
        kept = "; ".join(changes)
        return f"{describe(self.key)}: edited on both sides, kept {kept} ({self.rule})"


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
    shapes = [_read(partial(is_object_file, data), label)
              for data, label in zip((base, ours, theirs), labels, strict=True)]  # fmt: skip
    if any(shapes):
        return _merge_object_files((base, ours, theirs), shapes, labels)
    ancestor = _read(partial(parse, base), labels[0])
    a_side = _read(partial(diff, ancestor, ours), labels[1])
    b_side = _read(partial(diff, ancestor, theirs), labels[2])
    # Only the ancestor's lines are parsed lazily, inside the merge itself.
    return _read(partial(merge, ancestor, a_side, b_side), labels[0])


def _merge_object_files(
    files: tuple[Buffer, Buffer, Buffer], shapes: list[bool], labels: tuple[str, str, str]
) -> Merged:
    """Three versions of a memory kept as one JSON object (see `envelope`)."""
    for data, shape, label in zip(files, shapes, labels, strict=True):
        if not shape and bytes(data).strip():
            raise InputError(
                "records one a line or in an array, where another version is one JSON object"
                " holding the memory: a change of format is not merged",
                line=1,
            ).located(label)
    versions = [_read(partial(envelope.read, data), label)
                for data, label in zip(files, labels, strict=True)]  # fmt: skip
    merger = _Merger(EMPTY, Side(Style(), 0), Side(Style(), 0), checked=False)
    output, count = envelope.merge_objects(versions, merger.record, labels)
    merger.report.kept = count
    return Merged([output], EMPTY, Style(JSONL), merger.report)


def _read(step: Callable[[], _T], label: str) -> _T:
    try:
        return step()
    except InputError as error:
        raise error.located(label) from None


def join_bytes(inputs: Sequence[Buffer], *, style: Style | None = None) -> tuple[bytes, Report]:
    """Join memory files that share no ancestor; raises `InputError` naming the input."""
    for number, data in enumerate(inputs, 1):
        if _read(partial(is_object_file, data), f"input {number}"):
            raise InputError(
                "one JSON object holding the memory: join reads records one a line or in an"
                " array; merge such files with git, or convert them first",
                line=1,
            ).located(f"input {number}")
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
    # A header (records of another kind before the first entity or relation,
    # such as mcp-knowledge-graph's {"type":"_aim",...} line, which its
    # loader wants first) stays first; so does a new file's, on either side.
    header = _header_length(base.kinds)
    merger.walk(0, header, pieces)
    pieces.extend(added[3])
    for kind in (0, 1, 2):
        for start, stop in _runs(base.kinds, kind, header):
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
    chosen = style if style is not None else joined_style(side.style for side in sides)
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


def _header_length(kinds: bytearray) -> int:
    """How many records of another kind lead the file, before its first entity or relation."""
    found = [at for at in (kinds.find(0), kinds.find(1)) if at >= 0]
    # None at all (a new memory: mcp-knowledge-graph's header alone): all of it leads.
    return min(found) if found else len(kinds)


def _leading_others(side: Side) -> set[Key]:
    """The records of another kind that lead a new file, before its first entity or relation."""
    leading: set[Key] = set()
    for key in side.changed:
        if type(key) is not bytes:
            break
        leading.add(key)
    return leading


def _runs(kinds: bytearray, kind: int, position: int = 0) -> Iterator[tuple[int, int]]:
    """The maximal runs of records of ``kind`` from ``position`` on, as ``[start, stop)``."""
    size = len(kinds)
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
    def __init__(self, base: Document, ours: Side, theirs: Side, *, checked: bool = True) -> None:
        self.report = Report()
        # How a record's bytes become its value: checked against its identity,
        # unless the records are matched by an object's keys instead.
        self.value = _decode if checked else _unchecked
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

    def added(self) -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
        """Records the ancestor does not have, merged, by kind, sorted by identity.

        The fourth list is a new file's header: where the ancestor holds no
        record, the records of another kind that lead either side.
        """
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
        header: dict[Key, bytes] = {}
        if not len(self.base):
            for key in _leading_others(self.ours) | _leading_others(self.theirs):
                header[key] = records.pop(key)
        return (
            _sorted_of_kind(records, 0),
            _sorted_of_kind(records, 1),
            _sorted_of_kind(records, 2),
            _sorted_of_kind(header, 2),
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
            return self._combine(key, None, self.value(key, a), self.value(key, b))
        if a is None:
            return None if b is None or self._same(key, b, o) else b
        if b is None:
            return None if self._same(key, a, o) else a
        if a == o:
            return b
        if b == o:
            return a
        return self._both_changed(key, o, a, b)

    def _both_changed(self, key: Key, o: bytes, a: bytes, b: bytes) -> bytes:
        """The merge of a record whose bytes differ from the ancestor's on both sides."""
        # A side that only laid the record out otherwise (key order, spacing,
        # escapes) left it as it was, as it does against a deletion: the other
        # side's change wins whole, in its own bytes, as it would merged with
        # the ancestor itself. Otherwise the result would depend on whether
        # that side met the change or a deletion first (merge-rules.md, "Layout").
        was, ours, theirs = (self.value(key, raw) for raw in (o, a, b))
        held = encode(was)
        same_a, same_b = encode(ours) == held, encode(theirs) == held
        if same_a and same_b:
            # Both only re-laid it, differently: one of the two layouts, the
            # greater bytes. A layout of neither side (the canonical encoding)
            # could be the ancestor's own bytes, which a later merge would
            # take for "unchanged"; then three re-layouts did not associate.
            return max(a, b)
        if same_a:
            return b
        if same_b:
            return a
        # A side that only re-stamped its writer's save time left the record
        # as it was, by the same reasoning: the other side's change wins whole.
        resaved_a, resaved_b = _resaved(was, ours), _resaved(was, theirs)
        if resaved_a != resaved_b:
            return a if resaved_b else b
        merged = self._combined(key, was, ours, theirs)
        if not (resaved_a and resaved_b) and (encode(merged) == held or _resaved(was, merged)):
            # Both changes fold away in the set merge (observations reordered,
            # or one held twice): the ancestor's value, or its re-save, which
            # a later merge would take for "unchanged" and let a deletion win,
            # where it lost to either change alone. One side's bytes, the
            # greater, as for layouts: still a change.
            return max(a, b)
        return encode(merged, like=was)

    def _same(self, key: Key, now: bytes, was: bytes) -> bool:
        """Whether a record was left as it was, for a deletion on the other side to win."""
        before, after = self.value(key, was), self.value(key, now)
        return encode(after) == encode(before) or _resaved(before, after)

    def _combine(self, key: Key, o: Record | None, a: Record, b: Record) -> bytes:
        """Both sides hold the record and differ: merge it field by field."""
        return encode(self._combined(key, o, a, b), like=o)

    def _combined(self, key: Key, o: Record | None, a: Record, b: Record) -> Record:
        entity = type(key) is str
        merged = self._fields(key, o, a, b, entity=entity)
        if entity and ("observations" in a or "observations" in b):
            merged["observations"] = _merge_sets(
                o.get("observations", []) if o is not None else [],
                a.get("observations", []),
                b.get("observations", []),
            )
        return merged

    def _fields(self, key: Key, o: Record | None, a: Record, b: Record, *, entity: bool) -> Record:
        """Every field but the observations, each merged against the ancestor on its own.

        A field one side left as the ancestor had it takes the other side's
        version; a field both changed differently takes the version of the
        side with the later stamp, else the greater canonical bytes of the
        field. So a writer that re-stamps a time field on every save
        (``_savedAt``, ``updatedAt``) never makes one side's edit of another
        field lose. The stamp itself (``_crdt``, ``_crdt_metadata``) goes with
        the fields it dates: the side whose fields the result holds, else
        (fields from both, or the same fields) the later stamp.
        """
        # A stamp the side kept from the ancestor dates none of its changes.
        stamp_o = stamp_of(o) if o is not None else None
        stamp_a, stamp_b = stamp_of(a), stamp_of(b)
        if stamp_o is not None:
            stamp_a = None if stamp_a == stamp_o else stamp_a
            stamp_b = None if stamp_b == stamp_o else stamp_b
        rank_a = (stamp_a is not None, stamp_a or _UNSTAMPED, _metadata_bytes(a))
        rank_b = (stamp_b is not None, stamp_b or _UNSTAMPED, _metadata_bytes(b))
        merged: Record = {}
        won: Record = {}
        lost: Record = {}
        like_a = like_b = like_o = True  # the result's fields so far are that version's
        for name in {**(o or {}), **a, **b}:
            if name in _METADATA or (entity and name == "observations"):
                continue
            field_a, field_b = _field_bytes(a, name), _field_bytes(b, name)
            field_o = _field_bytes(o, name) if o is not None else None
            if field_a == field_b:
                chosen = a
                like_o = like_o and field_a == field_o
            else:
                order_a, order_b = _order(rank_a, field_a), _order(rank_b, field_b)
                chosen = _choose_field(a, b, field_o, order_a, order_b)
                like_a, like_b, like_o = like_a and chosen is a, like_b and chosen is b, False
                if field_a != field_o != field_b and not name.startswith("_"):
                    # Contested (a writer's "_" bookkeeping is not worth a line).
                    other = b if chosen is a else a
                    won[name], lost[name] = chosen.get(name), other.get(name)
            if name in chosen:
                merged[name] = chosen[name]
        if like_a != like_b:
            stamped = a if like_a else b
        else:
            stamped = _stamp_side(a, b, o if like_o else None, rank_a, rank_b)
        for name in _METADATA:
            if name in stamped:
                merged[name] = stamped[name]
        if won:
            self.report.decisions.append(Decision(key, won, lost, rule=_rule(stamp_a, stamp_b)))
        return merged


def _rule(stamp_a: Stamp | None, stamp_b: Stamp | None) -> str:
    """What decides between two versions, by the stamps they carry."""
    if stamp_a is not None and stamp_b is not None:
        return "the later stamp" if stamp_a != stamp_b else "the same stamp: by content"
    if stamp_a is not None or stamp_b is not None:
        return "the only stamp"
    return "no stamps to compare: by content"


def _stamp_side(
    a: Record, b: Record, o: Record | None, rank_a: tuple[Any, ...], rank_b: tuple[Any, ...]
) -> Record:
    """The side whose stamp goes on a result that holds the same fields as both sides.

    ``o`` is the ancestor if the result's fields are also the ancestor's: then
    no field changed and the stamp is merged as a 3-way register of its own.
    ``rank_*`` is ``(stamped, stamp, metadata bytes)``.
    """
    if o is not None:
        meta_o = _metadata_bytes(o)
        if rank_a[2] == meta_o:
            return b
        if rank_b[2] == meta_o:
            return a
    return a if rank_a > rank_b else b


def _choose_field(
    a: Record, b: Record, field_o: bytes | None, order_a: tuple[Any, ...], order_b: tuple[Any, ...]
) -> Record:
    """The version of a field the sides hold differently: one side's change, else the greater.

    ``order_*`` is ``(stamped, stamp, field rank, metadata bytes)`` (see `_order`); the
    rank ends with the field's bytes.
    """
    if order_a[2][-1] == field_o:
        return b
    if order_b[2][-1] == field_o:
        return a
    return a if order_a > order_b else b


def _order(rank: tuple[bool, Stamp, bytes], field: bytes) -> tuple[Any, ...]:
    # Ordered by the field before the metadata bytes, so that records that carry no
    # stamp are decided field by field on the field alone; among versions of equal
    # field bytes this is the order of ``rank`` itself, as it must be for the merge to
    # associate.
    stamped, stamp, metadata = rank
    return (stamped, stamp, _field_rank(field), metadata)


def _field_rank(field: bytes) -> tuple[Any, ...]:
    """How two versions of a field order where nothing else decides: numbers by value.

    A writer's counter (mcp-knowledge-graph's ``version``) must not go from
    10 back to 9 because "9" sorts after "10" as text. Any other value, and
    the bytes of numbers of equal value, order by canonical bytes; a number
    is above every other value, as its digits sort above a string's quote.
    """
    if field[:1] in _NUMBER_STARTS:
        number = float(field) if any(c in field for c in b".eE") else int(field)
        return (1, number, field)
    return (0, field)


_NUMBER_STARTS = frozenset(bytes([c]) for c in b"-0123456789")


_METADATA = ("_crdt", "_crdt_metadata")

# Fields a writer rewrites on every record at every save (mcp-think-tank's
# `_savedAt`), whatever changed: a record that differs from the ancestor in
# these alone was only saved again, not edited. Counted as an edit, a save for
# any change would undo the other side's deletion of every other record.
# (memory-graph's `updatedAt` is not one: it moves only with an edit.)
_SAVE_STAMPS = ("_savedAt",)


def _resaved(was: Record, now: Record) -> bool:
    """Whether ``now`` differs from ``was`` in its save stamps alone."""
    if not any(name in was or name in now for name in _SAVE_STAMPS):
        return False
    return encode(_unsaved(was)) == encode(_unsaved(now))


def _unsaved(record: Record) -> Record:
    return {name: value for name, value in record.items() if name not in _SAVE_STAMPS}


_ABSENT = b""  # the canonical bytes of a field a record does not have


def _field_bytes(record: Record, name: str) -> bytes:
    if name not in record:
        return _ABSENT
    return dumps(record[name], sort_keys=True)


def _metadata_bytes(record: Record) -> bytes:
    return b"".join(_field_bytes(record, name) + b"\n" for name in _METADATA)


def _decode(key: Key, raw: bytes) -> Record:
    """A record's value, checked: ancestor lines read by their prefix only are parsed here."""
    try:
        value = decode(raw)
    except orjson.JSONDecodeError as error:
        raise InputError(f"not JSON ({error.msg})") from None
    if identify(value) != key:
        raise InputError("a record whose identity is not what its layout suggests")
    return value


def _unchecked(key: Key, raw: bytes) -> Record:
    """A record's value, for records matched by where they are held (an object's keys)."""
    value = decode(raw)
    if type(value) is not dict:
        raise InputError(f"{describe(key)}: expected a JSON object")
    return value


def _merge_sets(o: list[Any], a: list[Any], b: list[Any]) -> list[Any]:
    """Observations as a set against the ancestor, in a side-independent order.

    An observation is known by its value: a string, or an object by its
    ``text`` or ``content`` string where it has one (mcp-think-tank and
    study-flamingo write ``{"text"|"content", "timestamp", ...}``), else by
    its canonical JSON. Additions on either side are kept, a removal on
    either side stays removed. One observation the versions hold in
    different forms (a new timestamp, say) is merged as a register: one
    side's change, else the greater canonical bytes. Survivors keep the
    ancestor's order; additions follow, sorted. A side whose list is the
    ancestor's takes the other side's list as it is.
    """
    list_o, list_a, list_b = (dumps(x, sort_keys=True) for x in (o, a, b))
    if list_a in (list_b, list_o):
        return b
    if list_b == list_o:
        return a
    merged = _merged_set(o, a, b)
    if dumps(merged, sort_keys=True) == list_o:
        # Both changed only what the set merge folds away (the order, an
        # observation twice): not the ancestor's list, which a later merge
        # would take for "unchanged" and replace by a third side's order in
        # one grouping only. The greater of the two sides' lists.
        return a if list_a > list_b else b
    return merged


def _merged_set(o: list[Any], a: list[Any], b: list[Any]) -> list[Any]:
    in_o, in_a, in_b = _elements(o), _elements(a), _elements(b)
    merged: list[Any] = []
    for key, (canonical_o, _) in in_o.items():
        held_a, held_b = in_a.get(key), in_b.get(key)
        if held_a is None or held_b is None:
            continue  # removed on a side
        if held_a[0] == canonical_o:
            merged.append(held_b[1])
        elif held_b[0] == canonical_o or held_a[0] > held_b[0]:
            merged.append(held_a[1])
        else:
            merged.append(held_b[1])
    added: dict[tuple[int, Any], tuple[bytes, Any]] = {}
    for elements in (in_a, in_b):
        for key, held in elements.items():
            if key not in in_o and (key not in added or held[0] > added[key][0]):
                added[key] = held
    merged.extend(added[key][1] for key in sorted(added))
    return merged


def _elements(elements: list[Any]) -> dict[tuple[int, Any], tuple[bytes, Any]]:
    """Each observation by identity: its canonical bytes and its value, in list order.

    An identity held twice keeps the greater canonical bytes, so the result
    does not depend on the order of the list.
    """
    found: dict[tuple[int, Any], tuple[bytes, Any]] = {}
    for element in elements:
        if type(element) is str:
            # A string is its own identity and canonical form.
            key: tuple[int, Any] = (0, element)
            held = (element.encode("utf-8", "surrogatepass"), element)
        else:
            canonical = dumps(element, sort_keys=True)
            key = _element_identity(element, canonical)
            held = (canonical, element)
        previous = found.get(key)
        if previous is None or held[0] > previous[0]:
            found[key] = held
    return found


def _element_identity(element: object, canonical: bytes) -> tuple[int, Any]:
    if type(element) is dict:
        for tier, name in ((1, "text"), (2, "content")):
            label = element.get(name)
            if type(label) is str:
                return (tier, label)
    return (3, canonical)
