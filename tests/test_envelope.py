"""Memories kept as one JSON object: ``{"entities": ..., "relations": ...}``.

The law that matters: such a file merges as the same memory kept one record
a line would (the object is only another layout), both ways round to the
byte, and comes back in its own layout. Then the layouts, the top-level
fields besides the two sections, and every refusal, each in one line.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings

from crdt_merge_driver.core.live import records_of
from crdt_merge_driver.core.merge import join_bytes, merge_bytes
from crdt_merge_driver.errors import InputError
from tests.strategies import History, damaged_triples, histories

ADA = {"type": "entity", "name": "Ada", "entityType": "person", "observations": ["likes tea"]}
BOB = {"type": "entity", "name": "Bob", "entityType": "person", "observations": []}
KNOWS = {"type": "relation", "from": "Ada", "to": "Bob", "relationType": "knows"}


def as_object(data: bytes, *, indent: int | None = 2, **top: Any) -> bytes:
    """A JSONL memory file rewritten as one object, as an export would write it."""
    records = list(records_of(data).values())
    value = {
        **top,
        "entities": [record for record in records if record.get("type") == "entity"],
        "relations": [record for record in records if record.get("type") == "relation"],
    }
    return json.dumps(value, indent=indent, ensure_ascii=False).encode() + b"\n"


def memory_of(data: bytes) -> dict[str, Any]:
    """Every record of an object file by identity, in canonical form, and the other fields."""
    value = json.loads(data)
    records = {}
    for section in ("entities", "relations"):
        held = value.get(section, [])
        for record in held.values() if isinstance(held, dict) else held:
            key = record.get("name") or (record["from"], record["relationType"], record["to"])
            records[str(key)] = json.dumps(record, sort_keys=True)
    others = {name: field for name, field in value.items() if name not in ("entities", "relations")}
    return {"records": records, "others": others}


def jsonl_memory(data: bytes) -> dict[str, Any]:
    records = {}
    for record in records_of(data).values():
        key = record.get("name") or (record["from"], record["relationType"], record["to"])
        records[str(key)] = json.dumps(record, sort_keys=True)
    return {"records": records, "others": {}}


@given(histories())
def test_an_object_file_merges_as_the_same_memory_one_record_a_line(history: History) -> None:
    base, (ours, theirs) = history.base.data, history.sides
    lines, _ = merge_bytes(base, ours.data, theirs.data)
    o, a, b = (as_object(data) for data in (base, ours.data, theirs.data))
    merged, _ = merge_bytes(o, a, b)
    assert merged == merge_bytes(o, b, a)[0]  # commutes, to the byte
    assert memory_of(merged) == jsonl_memory(lines)
    again, _ = merge_bytes(o, merged, a)  # a side merged in twice adds nothing
    assert memory_of(again) == memory_of(merged)
    assert merged.startswith(b'{\n  "entities": [') and merged.endswith(b"\n}\n")


def every_line_as_object(data: bytes) -> bytes:
    """A JSONL file as one object, keeping every line: a record held twice stays twice."""
    records = [json.loads(line) for line in data.splitlines() if line.strip()]
    value = {
        "entities": [record for record in records if record.get("type") == "entity"],
        "relations": [record for record in records if record.get("type") == "relation"],
    }
    return json.dumps(value, indent=2, ensure_ascii=False).encode() + b"\n"


@settings(max_examples=300)
@given(damaged_triples())
def test_records_held_twice_in_an_object_merge_as_held_twice_in_lines(
    files: tuple[bytes, bytes, bytes],
) -> None:
    # Found by review (2026-12-04): a side's two copies were folded with no ancestor, so a
    # stale copy brought back what the side had removed; lines fold against the ancestor.
    lines, _ = merge_bytes(*files)
    merged, _ = merge_bytes(*(every_line_as_object(data) for data in files))
    assert memory_of(merged) == jsonl_memory(lines)


def test_untouched_records_and_the_layout_come_back_as_they_were() -> None:
    o = json.dumps({"entities": [ADA, BOB], "relations": []}, indent=4).replace("\n", "\r\n")
    a = json.dumps({"entities": [ADA, {**BOB, "observations": ["new"]}], "relations": []},
                   indent=4).replace("\n", "\r\n")  # fmt: skip
    b = json.dumps({"entities": [ADA, BOB], "relations": [KNOWS]}, indent=4).replace("\n", "\r\n")
    merged, _ = merge_bytes(o.encode(), a.encode(), b.encode())
    expected = json.dumps(
        {"entities": [ADA, {**BOB, "observations": ["new"]}], "relations": [KNOWS]}, indent=4
    ).replace("\n", "\r\n")
    assert merged == expected.encode()  # CRLF, 4 spaces, no final newline: the ancestor's


def test_fields_besides_the_sections_take_one_sides_change_and_commute() -> None:
    o = as_object(b"", version=1, owner="me")
    a = as_object(b"", version=2, owner="me")
    b = as_object(b"", version=1, owner="me", note="new")
    merged, _ = merge_bytes(o, a, b)
    assert json.loads(merged) == {"version": 2, "owner": "me", "entities": [], "relations": [],
                                  "note": "new"}  # fmt: skip
    both = as_object(b"", version=3, owner="me")
    assert merge_bytes(o, a, both)[0] == merge_bytes(o, both, a)[0]
    assert json.loads(merge_bytes(o, a, both)[0])["version"] == 3  # the greater value, either way
    gone = as_object(b"", version=1)
    assert "owner" not in json.loads(merge_bytes(o, gone, o)[0])


def test_a_file_both_sides_added_takes_their_layout() -> None:
    a = as_object(b"", indent=None)
    b = json.dumps({"entities": [ADA], "relations": []}).encode() + b"\n"
    merged, _ = merge_bytes(b"", a, b)
    assert merged == merge_bytes(b"", b, a)[0]
    assert merged == json.dumps({"entities": [ADA], "relations": []}).encode() + b"\n"


def test_a_record_held_twice_in_a_section_is_folded_into_one() -> None:
    # Against the ancestor's version, as a line held twice is: the copy that is the
    # ancestor's changed nothing, the other is the change. With no ancestor: both kept.
    o = json.dumps({"entities": [ADA], "relations": []}).encode()
    twice = {"type": "entity", "name": "Ada", "entityType": "person", "observations": ["more"]}
    a = json.dumps({"entities": [ADA, twice], "relations": []}).encode()
    merged = json.loads(merge_bytes(o, a, o)[0])
    assert [entity["observations"] for entity in merged["entities"]] == [["more"]]
    new = json.dumps({"entities": [BOB], "relations": []}).encode()
    merged = json.loads(merge_bytes(new, a, new)[0])
    assert [entity["observations"] for entity in merged["entities"]] == [["likes tea", "more"]]


LISTS = json.dumps({"entities": [ADA], "relations": []}, indent=2).encode()
KEYED = json.dumps({"entities": {"Ada": ADA}, "relations": {}}, indent=2).encode()


@pytest.mark.parametrize(
    ("base", "ours", "reason"),
    [
        (LISTS, b'{\n  "memories": [],\n  "version": 1\n}',
         'one JSON object (keys "memories", "version"): not a memory file'),
        (LISTS, b'{\n  "entities": "Ada",\n  "relations": []\n}', '"entities" is a string'),
        (LISTS, b'{\n  "entities": {},\n  "relations": []\n}', '"entities" is an object here'),
        (KEYED, b'{\n  "entities": {},\n  "relations": {"Ada": 1}\n}',
         'record "Ada": expected a JSON object'),
        # Not another kind of record under the same key (found by review, 2026-12-04).
        (KEYED, b'{"entities": {"Ada": {"name": "Ada", "observations": "x"}}, "relations": {}}',
         "entity 'Ada': \"observations\" must be a list"),
        (LISTS, b'{"type":"entity","name":"Ada","entityType":"x","observations":[]}',
         "a change of format is not merged"),
    ],
)  # fmt: skip
def test_what_is_not_a_single_object_memory_is_refused_in_one_line(
    base: bytes, ours: bytes, reason: str
) -> None:
    with pytest.raises(InputError) as raised:
        merge_bytes(base, ours, base, labels=("base", "ours", "theirs"))
    said = str(raised.value)
    assert reason in said and said.startswith("ours") and "\n" not in said, said


def test_join_refuses_an_object_file_naming_it() -> None:
    jsonl = json.dumps(ADA).encode()
    with pytest.raises(InputError, match=r"^input 2, line 1: one JSON object holding the memory"):
        join_bytes([jsonl, as_object(jsonl)])


def test_a_lone_surrogate_beside_raw_text_is_written_back_as_its_escape() -> None:
    o = '{"entities":[{"name":"Zoë \\ud83d","observations":[]}]}'.encode()
    merged, _ = merge_bytes(o, o.replace(b"[]", b'["x"]'), o.replace(b"[]", b'["y"]'))
    assert merged == '{"entities":[{"name":"Zoë \\ud83d","observations":["x","y"]}]}'.encode()
    merged.decode("utf-8")  # strict UTF-8: no surrogate bytes
    assert merge_bytes(o, merged, o)[0] == merged  # and it merges again


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"1e400"])
def test_what_json_parse_refuses_is_refused_in_an_object_file(number: bytes) -> None:
    o = b'{\n  "entities": [{"name": "A", "observations": [], "v": ' + number + b"}]\n}"
    with pytest.raises(InputError, match=r"^ancestor, line 1: not JSON"):
        merge_bytes(o, o.replace(b"[]", b'["x"]'), o.replace(b"[]", b'["y"]'))
