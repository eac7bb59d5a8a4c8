"""The laws of the merge on other writers' files, checked by hypothesis.

Each history is one of the memory server's (`tests.strategies.histories`),
every version written again as another writer writes it
(`tests.writer_strategies`): mcp-think-tank (``_type``, object observations,
``_savedAt`` re-stamped at every save), memory-graph (untagged, ``createdAt``
and ``updatedAt`` bumped on change), mcp-knowledge-graph (the ``_aim`` header
line), iflow-mcp-memory (one object keyed by name) and exports (one object
of lists). The writer's format is only a way of writing the graph, so:

* the merge commutes, to the byte, and associates, as on the server's files;
* the graph of the merge (entities by name with their type and observation
  texts, relations) is the graph of the merge of the server's versions of
  the same files: nothing lost, deletions kept, exactly as there;
* the merge is written in the writer's own form, a header line first;
* a version merged with itself, or with the ancestor, or with the merge it
  is part of, adds nothing.

Three laws fail on inputs hypothesis found; each is a strict expected
failure on its smallest example (an "Open" comment above it), and the
property skips that one case until the fix turns the example red: a save's
re-stamp (mcp-think-tank) undoes the other side's deletion; a header alone
in the ancestor goes to the end; stamped records with a second changing
field do not always associate.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_merge_driver.core.merge import merge_bytes
from tests.writer_strategies import (
    AIM_HEADER,
    JSONL_WRITERS,
    WRITERS,
    WriterHistory,
    writer_histories,
)

Record = dict[str, Any]
Relation = tuple[str, str, str]


def merged(base: bytes, ours: bytes, theirs: bytes) -> bytes:
    return merge_bytes(base, ours, theirs)[0]


# --- reading a merge back as a graph ------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """What a file holds, whatever its writer: entities and relations."""

    entities: dict[str, tuple[str, frozenset[str]]]  # name: (type, observation texts)
    relations: frozenset[Relation]


def _kind(record: Record) -> str:
    """Entity, relation or other: by ``type``, else ``_type``, else the shape."""
    if "type" in record:
        return record["type"]
    if "_type" in record:
        return record["_type"]
    if isinstance(record.get("name"), str) and isinstance(record.get("observations"), list):
        return "entity"
    if all(isinstance(record.get(key), str) for key in ("from", "to", "relationType")):
        return "relation"
    return "other"


def _text(observation: Any) -> str:
    if isinstance(observation, str):
        return observation
    assert isinstance(observation, dict), observation
    return observation["text"]


def jsonl_records(data: bytes) -> list[Record]:
    records = []
    for line in data.replace(b"\r\n", b"\n").split(b"\n"):
        if line:
            value = orjson.loads(line)
            assert type(value) is dict, f"a line that is not an object: {line!r}"
            records.append(value)
    return records


def object_records(data: bytes) -> list[Record]:
    """The records of a single-object file, in the server's field names."""
    value = json.loads(data)
    assert set(value) == {"entities", "relations"}, value
    records: list[Record] = []
    for section, kind in (("entities", "entity"), ("relations", "relation")):
        held = value[section]
        if isinstance(held, dict):  # keyed by name (iflow)
            for key, record in held.items():
                if kind == "entity":
                    assert key == record["name"], (key, record)
                    records.append({"type": kind, "name": record["name"],
                                    "entityType": record["entity_type"],
                                    "observations": record["observations"]})  # fmt: skip
                else:
                    ends = (record["relation_from"], record["relation_to"],
                            record["relation_type"])  # fmt: skip
                    assert key == ",".join(ends), (key, record)
                    records.append({"type": kind, "from": ends[0], "to": ends[1],
                                    "relationType": ends[2]})  # fmt: skip
        else:
            for record in held:
                assert record["type"] == kind, (section, record)
                records.append(record)
    return records


def memory_of(records: list[Record]) -> Memory:
    """The graph of ``records``; fails if an identity or an observation appears twice."""
    entities: dict[str, tuple[str, frozenset[str]]] = {}
    relations: set[Relation] = set()
    for record in records:
        kind = _kind(record)
        if kind == "entity":
            name = record["name"]
            assert name not in entities, f"entity {name!r} twice"
            texts = [_text(observation) for observation in record["observations"]]
            assert len(set(texts)) == len(texts), f"{name!r}: an observation twice: {texts}"
            entities[name] = (record["entityType"], frozenset(texts))
        elif kind == "relation":
            key = (record["from"], record["to"], record["relationType"])
            assert key not in relations, f"relation {key!r} twice"
            relations.add(key)
    return Memory(entities, frozenset(relations))


def records_of(writer: str, data: bytes) -> list[Record]:
    return jsonl_records(data) if writer in JSONL_WRITERS else object_records(data)


def check_form(writer: str, data: bytes, base: bytes) -> None:
    """``data``, merged against ``base``, is written as ``writer`` writes its files."""
    if writer in JSONL_WRITERS:
        records = jsonl_records(data)
        if writer == "knowledge-graph":
            assert (
                data == AIM_HEADER
                or data.startswith(AIM_HEADER + b"\n")
                or data.startswith(AIM_HEADER + b"\r\n")
            ), f"the header is not first: {data!r}"
            assert records.count(json.loads(AIM_HEADER)) == 1, f"the header twice: {data!r}"
        for record in records:
            if writer == "think-tank":
                assert "type" not in record and "_savedAt" in record, record
                assert record["_type"] in ("entity", "relation"), record
                for observation in record.get("observations", []):
                    assert set(observation) == {"text", "timestamp"}, record
            elif writer == "memory-graph":
                assert "type" not in record and "_type" not in record, record
                assert "createdAt" in record and "createdBy" in record, record
        if writer in ("think-tank", "memory-graph") and data and base:
            # The ancestor's final newline; an empty ancestor shows none, and the
            # server's layout is taken (docs/merge-rules.md, "Output").
            assert data.endswith(b"\n"), f"the final newline is lost: {data!r}"
    else:
        value = json.loads(data)
        sections = (dict, dict) if writer == "iflow" else (list, list)
        assert (type(value["entities"]), type(value["relations"])) == sections, value


def canonical(records: list[Record]) -> Counter[bytes]:
    return Counter(orjson.dumps(record, option=orjson.OPT_SORT_KEYS) for record in records)


def _histories(
    writer: str, count: int = 2, stamps: bool | None = None
) -> st.SearchStrategy[WriterHistory]:
    return writer_histories(writer, count, stamps)


# --- the laws --------------------------------------------------------------------------

_WRITER = pytest.mark.parametrize("writer", WRITERS)


@_WRITER
@settings(max_examples=50)
@given(data=st.data())
def test_swapping_the_sides_gives_the_same_bytes(writer: str, data: st.DataObject) -> None:
    base, ours, theirs = data.draw(_histories(writer)).written
    assert merged(base, ours, theirs) == merged(base, theirs, ours)


@_WRITER
@settings(max_examples=80)
@given(data=st.data())
def test_the_merge_holds_the_graph_of_the_merge_of_the_servers_files(
    writer: str, data: st.DataObject
) -> None:
    history = data.draw(_histories(writer))
    result = merged(*history.written)
    check_form(writer, result, history.written[0])
    got = memory_of(records_of(writer, result))
    expected = memory_of(jsonl_records(merged(*history.official)))
    # Nothing lost: every entity as the merge of the server's files holds it, every relation.
    for name, held in expected.entities.items():
        assert got.entities.get(name) == held, f"entity {name!r}"
    assert expected.relations <= got.relations, "a relation lost"
    # Deletions kept: nothing more.
    assert got.entities.keys() <= expected.entities.keys(), "a deleted entity back"
    assert got.relations <= expected.relations, "a deleted relation back"


# Found by hypothesis (2026-12-03, issue 11): mcp-think-tank re-stamps `_savedAt` on every
# record at every save, so a side that saved for any edit holds every other record "changed"
# in that field alone; such a record counts as unchanged (merge-rules.md, "Save stamps"), or
# the other side's deletion of it would be undone. Minimal (T0 < T1 < T2):
#   O: Ada [] @T0, Bob [] @T0      A: Ada ["x"] @T1, Bob [] @T1 (only re-stamped)      B: Ada [] @T2
# On the server's files the same history deletes Bob.
def test_think_tank_a_deletion_is_not_undone_by_a_save_of_the_other_side() -> None:
    def entity(name: str, observations: list[str], saved_at: str) -> bytes:
        return orjson.dumps({
            "name": name, "entityType": "person",
            "observations": [{"text": text, "timestamp": saved_at} for text in observations],
            "_type": "entity", "_savedAt": saved_at,
        }) + b"\n"  # fmt: skip

    base = entity("Ada", [], "T0") + entity("Bob", [], "T0")
    ours = entity("Ada", ["x"], "T1") + entity("Bob", [], "T1")
    theirs = entity("Ada", [], "T2")
    result = memory_of(jsonl_records(merged(base, ours, theirs)))
    assert result == Memory({"Ada": ("person", frozenset({"x"}))}, frozenset())


def test_think_tank_a_merge_that_folds_back_to_a_resave_is_still_a_change() -> None:
    # Found by review (2026-12-04): A and B each held one observation twice and re-saved; their
    # merge was the ancestor's value with B's `_savedAt`, "only re-saved", so C's deletion won
    # over it, where it lost to B's change merged first.
    def x(observations: str, saved_at: str) -> bytes:
        return orjson.dumps({
            "name": "X", "entityType": "t",
            "observations": [{"text": text, "timestamp": "1"} for text in observations],
            "_type": "entity", "_savedAt": saved_at,
        }) + b"\n"  # fmt: skip

    base, a, b, c = x("ab", "s0"), x("aab", "s1"), x("abb", "s2"), b""
    left = merged(base, merged(base, a, b), c)
    assert left == merged(base, a, merged(base, b, c))
    assert left != b""  # a change on both sides, against a deletion: kept


@_WRITER
@settings(max_examples=50)
@given(data=st.data())
def test_merges_with_a_common_ancestor_associate(writer: str, data: st.DataObject) -> None:
    # Records with a field besides entityType that changes (`updatedBy`, `updatedAt`) and a
    # `_crdt` stamp do not always associate: the open bug of the test below. The writers
    # themselves never write `_crdt`, so their files go without.
    stamps = False if writer in ("think-tank", "memory-graph") else None
    base, a, b, c = data.draw(_histories(writer, 3, stamps)).written
    assert merged(base, merged(base, a, b), c) == merged(base, a, merged(base, b, c))


# Open (found by hypothesis, 2026-12-03, on files carrying the clock's `_crdt`): the field-by-
# field merge of a stamped record does not associate once a second field besides entityType
# changes. A field both sides changed goes to the side with a stamp of its own over an
# unstamped one; but where the result mixes fields from both sides, its one stamp dates only
# some of them, and in the next merge it promotes the others too. Minimal, in the server's own
# format with one unknown field `u` (S a stamp only C carries):
#   O: Ada p u=0    A: Ada p u=2    B: Ada p u=1    C: Ada q u=0 @S
#   merge(O, merge(O, A, B), C) = Ada q u=2 @S    (u=2 beats u=1 by value; C left u alone)
#   merge(O, A, merge(O, B, C)) = Ada q u=1 @S    (merge(O, B, C) = q u=1 @S, and its stamp,
#                                                  which dates C's q, makes B's u=1 beat u=2)
# Fixed on the way (2026-12-04): a stamp a side kept from the ancestor counted as that side's,
# though it dates none of its edits; `test_a_stamp_kept_from_the_ancestor_dates_no_edit`.
@pytest.mark.xfail(strict=True, reason="stamped records with two changing fields: merges do "
                                       "not always associate")  # fmt: skip
def test_stamped_records_with_a_second_changing_field_associate() -> None:
    stamp = {"time": "2026-03-01T12:00:00.000000Z", "counter": 0, "host": "laptop"}

    def ada(entity_type: str, u: int, *, stamped: bool = False) -> bytes:
        record = {"type": "entity", "name": "Ada", "entityType": entity_type,
                  "observations": [], "u": u}  # fmt: skip
        return orjson.dumps(record | ({"_crdt": stamp} if stamped else {}))

    base, a, b, c = ada("p", 0), ada("p", 2), ada("p", 1), ada("q", 0, stamped=True)
    assert merged(base, merged(base, a, b), c) == merged(base, a, merged(base, b, c))


def test_a_stamp_kept_from_the_ancestor_dates_no_edit() -> None:
    # Found by hypothesis with the test above (2026-12-03). O, A and B carry one stamp S; C
    # none. A's and B's edits of `x` are undated, so they order by value, and the merge of
    # B and C (q from C, x=2 from both) no longer lets A's x=1 win through S.
    stamp = {"time": "2026-03-01T12:00:00.000000Z", "counter": 0, "host": "laptop"}

    def ada(entity_type: str, x: int, *, stamped: bool = True) -> bytes:
        record = {"type": "entity", "name": "Ada", "entityType": entity_type,
                  "observations": ["a"], "x": x}  # fmt: skip
        return orjson.dumps(record | ({"_crdt": stamp} if stamped else {}))

    base, a, b, c = ada("p", 0), ada("p", 1), ada("p", 2), ada("q", 2, stamped=False)
    left = merged(base, merged(base, a, b), c)
    assert left == merged(base, a, merged(base, b, c))
    assert orjson.loads(left) == orjson.loads(ada("q", 2, stamped=False))


@_WRITER
@settings(max_examples=40)
@given(data=st.data())
def test_a_version_merged_with_itself_or_its_merge_adds_nothing(
    writer: str, data: st.DataObject
) -> None:
    base, ours, theirs = data.draw(_histories(writer)).written
    assert merged(base, ours, ours) == ours
    assert canonical(records_of(writer, merged(base, base, theirs))) == canonical(
        records_of(writer, theirs)
    )
    result = merged(base, ours, theirs)
    assert merged(base, result, result) == result
    assert merged(base, result, ours) == result
    assert merged(base, theirs, result) == result


@settings(max_examples=60)
@given(_histories("knowledge-graph"))
def test_the_knowledge_graph_header_stays_first(history: WriterHistory) -> None:
    base, ours, theirs = history.written
    for ancestor in (base, b""):  # b"": both sides created the file
        check_form("knowledge-graph", merged(ancestor, ours, theirs), ancestor)  # first, once
    # Under the header, the records are the ones the merge of the server's files holds.
    records = [record for record in jsonl_records(merged(base, ours, theirs))
               if record != json.loads(AIM_HEADER)]  # fmt: skip
    assert canonical(records) == canonical(jsonl_records(merged(*history.official)))


# Found by hypothesis (2026-12-03, issue 11), fixed: an ancestor that holds the header and no
# entity or relation (a new mcp-knowledge-graph memory, committed before anything was saved
# in it) has no header for the merge: `merge._header_length` counts the records before the
# first entity or relation, and gives 0 where there is none, so the header goes after the
# sides' new records and mcp-knowledge-graph refuses the file. Minimal:
#   O = A: {"type":"_aim",...}      B: {"type":"_aim",...}\n{"type":"entity","name":"Ada",...}
#   merge(O, A, B) = {"type":"entity","name":"Ada",...}\n{"type":"_aim",...}
def test_the_header_of_a_file_holding_nothing_else_stays_first() -> None:
    ada = b'{"type":"entity","name":"Ada","entityType":"person","observations":[]}'
    assert merged(AIM_HEADER, AIM_HEADER, AIM_HEADER + b"\n" + ada) == AIM_HEADER + b"\n" + ada
