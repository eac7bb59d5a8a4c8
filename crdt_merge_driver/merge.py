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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

import orjson

from crdt_merge_driver.clock import Stamp, stamp_of
from crdt_merge_driver.codec import (
    Document,
    Style,
    agreed_style,
    choose_style,
    parse,
    render,
)
from crdt_merge_driver.errors import InputError
from crdt_merge_driver.record import Key, Record, decode, describe, encode, sort_key

_UNSTAMPED = Stamp(0, 0, "")


class Decision(NamedTuple):
    """A concurrent edit of one record's register, and which version was kept."""

    key: Key
    kept: Record
    dropped: Record
    by_stamp: bool

    def explain(self) -> str:
        changes = []
        for name in sorted(self.kept.keys() | self.dropped.keys()):
            kept, dropped = self.kept.get(name), self.dropped.get(name)
            if name != "_crdt" and kept != dropped:
                changes.append(f"{name} {_show(kept)} over {_show(dropped)}")
        rule = "later _crdt stamp" if self.by_stamp else "greater content, no common stamp"
        what = "; ".join(changes) or "metadata only"
        return f"{describe(self.key)}: edited on both sides, kept {what} ({rule})"


def _show(value: object) -> str:
    return "(absent)" if value is None else orjson.dumps(value).decode()


@dataclass
class Report:
    """What a merge did, for the one log line per merged file."""

    kept: int = 0
    added: int = 0
    changed: int = 0
    deleted: int = 0
    folded: int = 0
    decisions: list[Decision] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.kept} records", f"+{self.added} added", f"~{self.changed} changed"]
        parts.append(f"-{self.deleted} deleted")
        if self.decisions:
            parts.append(f"{len(self.decisions)} concurrent edits resolved")
        if self.folded:
            parts.append(f"{self.folded} duplicate lines folded")
        return ", ".join(parts)


class Merged(NamedTuple):
    records: list[bytes]
    style: Style
    report: Report


def merge_bytes(
    base: bytes,
    ours: bytes,
    theirs: bytes,
    *,
    labels: tuple[str, str, str] = ("ancestor", "ours", "theirs"),
) -> tuple[bytes, Report]:
    """Merge three versions of a memory file; raises `InputError` naming the bad side."""
    if ours == theirs:
        return ours, Report()
    documents = []
    ancestor: Document | None = None
    for data, label in zip((base, ours, theirs), labels, strict=True):
        try:
            document = parse(data, base=ancestor)
        except InputError as error:
            raise error.located(label) from None
        ancestor = ancestor or document
        documents.append(document)
    merged = merge(*documents)
    return render(merged.records, merged.style), merged.report


def join_bytes(inputs: Sequence[bytes], *, style: Style | None = None) -> tuple[bytes, Report]:
    """Join memory files that share no ancestor; raises `InputError` naming the input."""
    documents = []
    for number, data in enumerate(inputs, 1):
        try:
            documents.append(parse(data))
        except InputError as error:
            raise error.located(f"input {number}") from None
    merged = join(documents, style=style)
    return render(merged.records, merged.style), merged.report


def merge(base: Document, ours: Document, theirs: Document) -> Merged:
    """The 3-way merge of two documents against their common ancestor."""
    merger = _Merger()
    report = merger.report
    base_records = merger.fold(base, {}, set())
    ours_records = merger.fold(ours, base.records, base.duplicates.keys())
    theirs_records = merger.fold(theirs, base.records, base.duplicates.keys())

    groups: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
    for key, o in base_records.items():
        a = ours_records.get(key)
        b = theirs_records.get(key)
        if a == b:
            result = a
        elif a == o:
            result = b
        elif b == o:
            result = a
        else:
            result = merger.record(key, o, a, b)
        if result is None:
            report.deleted += 1
            continue
        if result != o:
            report.changed += 1
        groups[0 if type(key) is str else 1 if type(key) is tuple else 2].append(result)

    added: dict[Key, bytes] = {}
    for key, a in ours_records.items():
        if key not in base_records:
            b = theirs_records.get(key)
            added[key] = a if b is None or b == a else merger.record(key, None, a, b)  # type: ignore[assignment]
    for key, b in theirs_records.items():
        if key not in base_records and key not in ours_records:
            added[key] = b
    report.added = len(added)
    _place(added, groups)
    records = list(chain(*groups))
    report.kept = len(records)
    return Merged(records, choose_style(base.style, ours.style, theirs.style), report)


def join(documents: Sequence[Document], *, style: Style | None = None) -> Merged:
    """The union of documents that share no ancestor (one per host, say).

    The same record in several documents is merged as if added on both
    sides of a 3-way merge. Commutative, associative and idempotent.
    """
    merger = _Merger()
    joined: dict[Key, bytes] = {}
    for document in documents:
        for key, raw in _every_record(document):
            held = joined.get(key)
            joined[key] = raw if held is None else merger.record(key, None, held, raw)  # type: ignore[assignment]
    groups: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
    _place(joined, groups)
    records = list(chain(*groups))
    merger.report.kept = merger.report.added = len(records)
    chosen = style if style is not None else agreed_style(d.style for d in documents)
    return Merged(records, chosen, merger.report)


def _every_record(document: Document) -> Iterable[tuple[Key, bytes]]:
    yield from document.records.items()
    for key, extra in document.duplicates.items():
        for raw in extra:
            yield key, raw


def _place(records: dict[Key, bytes], groups: tuple[list[bytes], ...]) -> None:
    for key in sorted(records, key=sort_key):
        groups[sort_key(key)[0]].append(records[key])


class _Merger:
    def __init__(self) -> None:
        self.report = Report()

    def fold(
        self, document: Document, base: dict[Key, bytes], unsure: Iterable[Key]
    ) -> dict[Key, bytes]:
        """One version per identity: later lines of an identity merged into the first.

        Against the ancestor's version when it had exactly one (so a stale
        copy that union brought back folds away); as a join where it had
        none or several of its own (``unsure``).
        """
        if not document.duplicates:
            return document.records
        unsure = set(unsure)
        records = dict(document.records)
        for key, extra in document.duplicates.items():
            ancestor = None if key in unsure else base.get(key)
            held: bytes | None = records[key]
            for raw in extra:
                held = self.record(key, ancestor, held, raw)
                self.report.folded += 1
            assert held is not None  # both sides present: never a deletion
            records[key] = held
        return records

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
            return None if b is None or _same(b, o) else b
        if b is None:
            return None if _same(a, o) else a
        if a == o:
            return b
        if b == o:
            return a
        return self._combine(key, o, a, b)

    def _combine(self, key: Key, o_raw: bytes | None, a_raw: bytes, b_raw: bytes) -> bytes:
        """Both sides hold the record and differ: merge it field by field."""
        entity = type(key) is str
        o = decode(o_raw) if o_raw is not None else None
        a, b = decode(a_raw), decode(b_raw)
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
        self.report.decisions.append(Decision(key, kept, dropped, by_stamp))
        return kept


def _register(record: Record, *, entity: bool) -> Record:
    if not entity:
        return record
    return {name: value for name, value in record.items() if name != "observations"}


def _same(x: bytes, y: bytes) -> bool:
    return encode(decode(x)) == encode(decode(y))


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
        element if type(element) is str else orjson.dumps(element, option=orjson.OPT_SORT_KEYS)
        for element in elements
    ]


def _element_order(key: object) -> tuple[int, Any]:
    return (0, key) if type(key) is str else (1, key)
