"""What a memory record is: which lines are "the same record", and its canonical bytes.

Identity decides what merges with what: get it wrong and two different
memories collapse into one, or one memory is kept twice. So each rule of
`identify` is checked on its own and through a join (where two files that
hold the same record must give one); `describe`, which names a record in
every log line the driver prints, is checked for each kind of key; and
`encode` must give equal bytes for equal records whatever their field order.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from crdt_merge_driver.core.merge import join_bytes, merge_bytes
from crdt_merge_driver.core.record import describe, encode, identify, sort_key
from crdt_merge_driver.core.value import dumps, loads
from crdt_merge_driver.errors import InputError
from tests.gitrepo import entity, relation

Record = dict[str, Any]

# --- identity -------------------------------------------------------------------------


def test_an_entity_is_its_name_whatever_else_changed() -> None:
    before = {"type": "entity", "name": "Ada", "entityType": "person", "observations": []}
    after = {"type": "entity", "name": "Ada", "entityType": "robot", "observations": ["beeps"]}
    assert identify(before) == identify(after) == "Ada"


def test_an_entity_without_observations_is_still_an_entity() -> None:
    assert identify({"type": "entity", "name": "Ada", "entityType": "person"}) == "Ada"


def test_a_relation_is_its_two_ends_and_its_type() -> None:
    knows = orjson.loads(relation("Ada", "Bob", "knows", _crdt={"host": "x"}))
    assert identify(knows) == ("Ada", "knows", "Bob")
    assert identify(orjson.loads(relation("Bob", "Ada", "knows"))) != identify(knows)
    assert identify(orjson.loads(relation("Ada", "Bob", "admires"))) != identify(knows)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            {"id": "m1", "content": "deploys on Fridays"},
            {"id": "m1", "content": "never on Fridays", "tags": ["ops"]},
            id="id",
        ),
        pytest.param(
            {"id": 7, "name": "one", "type": "note"},
            {"id": 7, "name": "two", "type": "todo"},
            id="id-over-name",
        ),
        pytest.param(
            {"type": "note", "name": "standup", "text": "at 9"},
            {"type": "note", "name": "standup", "text": "at 10"},
            id="name-and-type",
        ),
        pytest.param(
            {"content": "dark mode", "_crdt_metadata": {"unique_id": "u1", "host": "laptop"}},
            {"content": "light mode", "_crdt_metadata": {"unique_id": "u1", "host": "server"}},
            id="unique-id",
        ),
        pytest.param(
            {"content": "dark mode", "tags": ["a", "b"], "meta": {"x": 1, "y": 2}},
            {"meta": {"y": 2, "x": 1}, "tags": ["a", "b"], "content": "dark mode"},
            id="content-in-any-field-order",
        ),
    ],
)
def test_other_records_that_are_the_same_record(first: Record, second: Record) -> None:
    assert identify(first) == identify(second)
    assert type(identify(first)) is bytes


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"id": "m1"}, {"id": "m2"}, id="ids"),
        pytest.param({"id": 1}, {"id": "1"}, id="number-and-text-ids"),
        pytest.param(
            {"type": "note", "name": "standup"}, {"type": "todo", "name": "standup"}, id="types"
        ),
        pytest.param({"name": "standup"}, {"type": "note", "name": "standup"}, id="no-type"),
        pytest.param(
            {"_crdt_metadata": {"unique_id": "u1"}},
            {"_crdt_metadata": {"unique_id": "u2"}},
            id="unique-ids",
        ),
        pytest.param(
            {"content": "dark mode", "_crdt_metadata": {"host": "laptop"}},
            {"content": "dark mode", "_crdt_metadata": {"host": "server"}},
            id="content-without-unique-id",
        ),
        pytest.param(
            # An entity's identity is its name; a record of another type with that name is not it.
            {"type": "entity", "name": "Ada", "entityType": "person"},
            {"type": "person", "name": "Ada"},
            id="entity-and-other-with-one-name",
        ),
    ],
)
def test_other_records_that_are_different_records(first: Record, second: Record) -> None:
    assert identify(first) != identify(second)


def test_a_join_keeps_one_of_each_identity_and_every_different_one() -> None:
    def line(**fields: object) -> bytes:
        return orjson.dumps(fields)

    laptop = b"\n".join([
        line(id="m1", content="deploys on Fridays"),
        line(type="note", name="standup", text="at 9"),
        line(content="dark mode", _crdt_metadata={"unique_id": "u1"}),
        line(content="tabs"),
    ])  # fmt: skip
    server = b"\n".join([
        line(id="m1", content="deploys on Fridays"),
        line(type="todo", name="standup", text="at 9"),
        line(content="dark mode", _crdt_metadata={"unique_id": "u2"}),
        line(content="tabs"),
    ])  # fmt: skip
    joined, _ = join_bytes([laptop, server])
    records = [orjson.loads(raw) for raw in joined.split(b"\n")]
    assert len(records) == 6
    assert sorted(str(record.get("type")) for record in records if "name" in record) == [
        "note",
        "todo",
    ]
    assert records.count({"content": "tabs"}) == 1
    assert records.count({"id": "m1", "content": "deploys on Fridays"}) == 1


def test_entities_then_relations_then_the_rest_in_the_output() -> None:
    note = orjson.dumps({"id": "m1", "content": "x"})
    joined, _ = join_bytes(
        [b"\n".join([note, relation("Ada", "Bob"), entity("Zed")]), entity("Ada")]
    )
    assert joined.split(b"\n") == [entity("Ada"), entity("Zed"), relation("Ada", "Bob"), note]
    keys = [identify(orjson.loads(raw)) for raw in joined.split(b"\n")]
    assert sorted(keys, key=sort_key) == keys


# --- shapes that are not records ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("Ada", "expected a JSON object, found a string", id="string"),
        pytest.param(None, "expected a JSON object, found null", id="null"),
        pytest.param(True, "expected a JSON object, found a boolean", id="boolean"),
        pytest.param(42, "expected a JSON object, found a number", id="integer"),
        pytest.param(4.5, "expected a JSON object, found a number", id="float"),
        pytest.param(["entity", "Ada"], "expected a JSON object, found an array", id="array"),
        pytest.param(
            {"type": "entity", "entityType": "person"},
            'an entity needs a string "name"',
            id="entity-without-name",
        ),
        pytest.param(
            {"type": "entity", "name": 7}, 'an entity needs a string "name"', id="numeric-name"
        ),
        pytest.param(
            {"type": "entity", "name": "Ada", "observations": "likes tea"},
            "entity 'Ada': \"observations\" must be a list",
            id="observations-not-a-list",
        ),
        pytest.param(
            {"type": "entity", "name": "Ada", "observations": None},
            "entity 'Ada': \"observations\" must be a list",
            id="observations-null",
        ),
        pytest.param(
            {"type": "relation", "from": "Ada", "relationType": "knows"},
            'a relation needs string "from", "to" and "relationType"',
            id="relation-without-to",
        ),
        pytest.param(
            {"type": "relation", "from": "Ada", "to": 3, "relationType": "knows"},
            'a relation needs string "from", "to" and "relationType"',
            id="relation-to-a-number",
        ),
        pytest.param(
            {"type": "relation", "from": "Ada", "to": "Bob", "relationType": ["knows"]},
            'a relation needs string "from", "to" and "relationType"',
            id="relation-type-a-list",
        ),
    ],
)
def test_a_wrong_shape_is_refused_with_its_reason(value: object, reason: str) -> None:
    with pytest.raises(InputError) as refused:
        identify(value)
    assert refused.value.reason == reason


def test_a_wrong_shape_in_a_file_names_the_side_and_line() -> None:
    base = b"\n".join([entity("Ada"), entity("Bob")])
    ours = b"\n".join([entity("Ada"), entity("Bob"), entity("Cy")])
    bad = b'{"type":"relation","from":"Ada","to":null,"relationType":"knows"}'
    theirs = b"\n".join([entity("Ada"), bad, entity("Bob")])
    with pytest.raises(InputError) as refused:
        merge_bytes(base, ours, theirs)
    assert str(refused.value) == (
        'theirs, line 2: a relation needs string "from", "to" and "relationType"'
    )


# --- names in log lines -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [
        pytest.param({"type": "entity", "name": "Ada"}, 'entity "Ada"', id="entity"),
        pytest.param({"type": "entity", "name": 'Zoë "Z"'}, 'entity "Zoë \\"Z\\""', id="quoted"),
        pytest.param(
            {"type": "relation", "from": "Ada", "to": "Bob", "relationType": "knows"},
            "relation 'Ada' -knows-> 'Bob'",
            id="relation",
        ),
        pytest.param({"id": "m1", "content": "x"}, 'record id "m1"', id="id"),
        pytest.param(
            {"type": "note", "name": "standup"}, 'record name ["note","standup"]', id="name"
        ),
        pytest.param({"_crdt_metadata": {"unique_id": "u1"}}, 'record uid "u1"', id="unique-id"),
        pytest.param(
            {"content": "dark mode"}, 'record content {"content":"dark mode"}', id="content"
        ),
    ],
)
def test_describe_names_each_kind_of_record(value: Record, name: str) -> None:
    assert describe(identify(value)) == name


def test_describe_shortens_a_long_record_to_80_characters() -> None:
    text = describe(identify({"content": "x" * 500}))
    assert text == 'record content {"content":"' + "x" * (80 - len('{"content":"'))
    assert len(text) == len("record content ") + 80


def test_a_concurrent_edit_of_an_other_record_is_logged_by_its_name() -> None:
    base = orjson.dumps({"id": "m1", "content": "deploys on Fridays"})
    ours = orjson.dumps({"id": "m1", "content": "never on Fridays"})
    theirs = orjson.dumps({"id": "m1", "content": "only on Fridays"})
    merged, report = merge_bytes(base, ours, theirs)
    assert orjson.loads(merged) == {"id": "m1", "content": "only on Fridays"}  # by content
    (decision,) = report.decisions
    assert decision.explain() == (
        'record id "m1": edited on both sides, kept content "only on Fridays" over '
        '"never on Fridays" (no stamps to compare: by content)'
    )


@pytest.mark.parametrize(
    ("stamp_ours", "stamp_theirs", "rule"),
    [
        (None, "2026-01-01T00:00:00Z", "the only stamp"),  # by content "zzz" would have won
        ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", "the later stamp"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "the same stamp: by content"),
    ],
)
def test_the_logged_reason_is_what_decided(
    stamp_ours: str | None, stamp_theirs: str, rule: str
) -> None:
    def ada(entity_type: str, time: str | None) -> bytes:
        stamp = {} if time is None else {"_crdt": {"time": time, "counter": 0, "host": "h"}}
        return orjson.dumps({"type": "entity", "name": "Ada", "entityType": entity_type,
                             "observations": [], **stamp})  # fmt: skip

    base = ada("person", None)
    for ours, theirs in ((ada("zzz", stamp_ours), ada("bbb", stamp_theirs)),
                         (ada("bbb", stamp_theirs), ada("zzz", stamp_ours))):  # fmt: skip
        (decision,) = merge_bytes(base, ours, theirs)[1].decisions
        assert decision.explain().endswith(f"({rule})"), decision.explain()


def test_a_counter_both_sides_changed_takes_the_greater_number_not_the_greater_text() -> None:
    # mcp-knowledge-graph bumps "version" on every update: "9" > "10" as text.
    def ada(version: int, entity_type: str) -> bytes:
        return orjson.dumps({"type": "entity", "name": "Ada", "entityType": entity_type,
                             "observations": [], "version": version})  # fmt: skip

    base, ours, theirs = ada(8, "person"), ada(10, "engineer"), ada(9, "person")
    for a, b in ((ours, theirs), (theirs, ours)):
        assert orjson.loads(merge_bytes(base, a, b)[0])["version"] == 10
    big = dumps({"type": "entity", "name": "Ada", "entityType": "x", "observations": [],
                 "version": 2**70})  # fmt: skip
    for a, b in ((big, ada(9, "y")), (ada(9, "y"), big)):
        assert loads(merge_bytes(base, a, b)[0])["version"] == 2**70  # exact, by value


# --- canonical bytes ------------------------------------------------------------------------


def test_a_line_the_server_wrote_is_already_canonical() -> None:
    for line in (entity("Ada", "person", ("likes tea", "ünïcödé ✓")), relation("Ada", "Bob")):
        assert encode(orjson.loads(line)) == line


def test_encode_orders_server_fields_then_others_then_metadata() -> None:
    value = {
        "_crdt": {"time": "t", "host": "h", "counter": 0},
        "zeta": 1,
        "observations": [],
        "alpha": {"b": 1, "a": 2},
        "name": "Ada",
        "_crdt_metadata": {"unique_id": "u"},
        "entityType": "person",
        "id": "e1",
        "type": "entity",
    }
    assert encode(value) == (
        b'{"type":"entity","id":"e1","name":"Ada","entityType":"person","observations":[],'
        b'"alpha":{"a":2,"b":1},"zeta":1,'
        b'"_crdt":{"counter":0,"host":"h","time":"t"},"_crdt_metadata":{"unique_id":"u"}}'
    )
    assert encode(dict(reversed(value.items()))) == encode(value)
