"""Memory files as bytes: layouts kept, odd but valid files read, bad ones located.

A merge must give back the file in the layout the repository has (an array
indented with tabs stays indented with tabs, a CRLF file stays CRLF), read
every file the memory server or the older scripts could have left (blank
lines, leading whitespace, escaped names), and refuse a broken file with the
version and line to look at. Checked through the pure merge API, in-process.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_merge_driver.core import codec
from crdt_merge_driver.core.merge import merge_bytes
from crdt_merge_driver.core.record import identify
from crdt_merge_driver.errors import InputError
from tests.gitrepo import entity, jsonl, relation

Record = dict[str, Any]

ADA = {"type": "entity", "name": "Ada", "entityType": "person", "observations": ["likes tea"]}
BOB = {"type": "entity", "name": "Bob", "entityType": "person", "observations": []}
CY = {"type": "entity", "name": "Cy", "entityType": "cat", "observations": ["naps"]}
KNOWS = {"type": "relation", "from": "Ada", "to": "Bob", "relationType": "knows"}


def dumps(records: list[Record], indent: int | str | None, newline: str = "\n") -> bytes:
    """An array file as Python's json.dump wrote it (the older backup scripts)."""
    text = json.dumps(records, indent=indent, ensure_ascii=False)
    if indent is None:
        text = json.dumps(records, separators=(",", ":"), ensure_ascii=False)
    return (text + "\n").replace("\n", newline).encode()


# --- arrays keep their layout -------------------------------------------------------------


@pytest.mark.parametrize(
    "indent",
    [
        pytest.param("\t", id="tabs"),
        pytest.param(4, id="four-spaces"),
        pytest.param(2, id="two-spaces"),
        pytest.param(None, id="one-line"),
    ],
)
@pytest.mark.parametrize("newline", [pytest.param("\n", id="lf"), pytest.param("\r\n", id="crlf")])
def test_an_array_merge_keeps_the_ancestors_indent_and_line_breaks(
    indent: int | str | None, newline: str
) -> None:
    base = dumps([ADA, BOB], indent, newline)
    ours = dumps([ADA, BOB, CY], indent, newline)
    theirs = dumps([{**ADA, "observations": ["likes tea", "café ☕"]}, BOB, KNOWS], indent, newline)
    merged, _ = merge_bytes(base, ours, theirs)
    expected: list[Record] = [{**ADA, "observations": ["likes tea", "café ☕"]}, BOB, CY, KNOWS]
    assert merged == dumps(expected, indent, newline)


def test_an_array_without_a_final_newline_gets_none() -> None:
    base = dumps([ADA], 2).rstrip(b"\n")
    merged, _ = merge_bytes(base, dumps([ADA, BOB], 2), dumps([ADA, CY], 2))
    assert merged == dumps([ADA, BOB, CY], 2).rstrip(b"\n")


@pytest.mark.parametrize(
    "base",
    [
        pytest.param(b"[]", id="empty-one-line"),
        pytest.param(b"[\n]\n", id="empty-over-two-lines"),
        pytest.param(b"[\n\n" + dumps([ADA], 2)[2:], id="blank-line-after-the-bracket"),
    ],
)
def test_an_array_that_shows_no_indent_is_written_as_json_dump_indent_2(base: bytes) -> None:
    merged, _ = merge_bytes(base, dumps([ADA, BOB], "\t"), dumps([ADA, CY], 4))
    assert json.loads(merged) == [ADA, BOB, CY]
    assert merged.rstrip(b"\n") == dumps([ADA, BOB, CY], 2).rstrip(b"\n")


def test_an_array_ancestor_with_leading_blank_lines_is_an_array() -> None:
    base = b"\n  \n" + dumps([ADA], 2)
    merged, _ = merge_bytes(base, dumps([ADA, BOB], 2), dumps([ADA, CY], 2))
    assert merged == dumps([ADA, BOB, CY], 2)


# --- JSONL files that are odd but valid -----------------------------------------------------


def test_blank_lines_anywhere_are_read_as_nothing_and_dropped() -> None:
    ada, bob, knows = entity("Ada", "person", ("likes tea",)), entity("Bob"), relation("Ada", "Bob")
    base = b"\n\n" + ada + b"\n\n" + bob + b"\n  \t\n" + knows + b"\n\n"
    ours = b"\n" + ada + b"\n\n" + bob + b"\n" + entity("Cy") + b"\n\n" + knows + b"\n"
    theirs = base.replace(b"likes tea", b"likes coffee")
    merged, _ = merge_bytes(base, ours, theirs)
    ada_now = entity("Ada", "person", ("likes coffee",))
    assert merged == jsonl(ada_now, bob, entity("Cy"), knows) + b"\n"


def test_a_file_of_whitespace_is_an_empty_memory() -> None:
    merged, _ = merge_bytes(b" \n\t\r\n", entity("Ada"), entity("Bob"))
    assert merged == jsonl(entity("Ada"), entity("Bob"))


def test_an_ancestor_with_both_line_breaks_is_written_with_its_first() -> None:
    # What merge=union leaves of an LF side and a CRLF side.
    ada, bob, knows = entity("Ada", "person", ("likes tea",)), entity("Bob"), relation("Ada", "Bob")
    base = ada + b"\r\n" + bob + b"\n" + knows + b"\n"
    ours = base.replace(b"likes tea", b"likes coffee")
    theirs = base + entity("Cy")
    merged, _ = merge_bytes(base, ours, theirs)
    lines = [entity("Ada", "person", ("likes coffee",)), bob, entity("Cy"), knows]
    assert merged == b"\r\n".join(lines) + b"\r\n"


def test_an_entity_whose_name_has_escapes_is_matched_by_its_name() -> None:
    def quoted(*observations: str) -> bytes:
        return entity('say "hi" \\o/', "greeting", observations)

    base = jsonl(quoted("waves"), entity("Bob"))
    ours = jsonl(quoted("waves", "smiles"), entity("Bob"))
    theirs = jsonl(quoted(), entity("Bob"))
    merged, _ = merge_bytes(base, ours, theirs)
    assert merged == jsonl(quoted("smiles"), entity("Bob"))


def test_a_broken_line_that_no_version_changed_is_carried_over_unread() -> None:
    # The server's entity layout is read by its prefix: a line all three share is not parsed.
    broken = b'{"type":"entity","name":"Ada","entityType":"x","observations":[]]}'
    base = jsonl(broken, entity("Bob"))
    merged, _ = merge_bytes(
        base, jsonl(broken, entity("Bob", "cat")), jsonl(broken, entity("Bob"), entity("Cy"))
    )
    assert merged == jsonl(broken, entity("Bob", "cat"), entity("Cy"))


# --- the server's entity layout read by its form, not parsed -------------------------------------

# Any text: quotes and backslashes (escaped, so read by a parse), control
# characters, non-ASCII and astral characters (read by form).
_SERVER_RECORDS = st.lists(
    st.one_of(
        st.builds(
            lambda name, kind, observations: {
                "type": "entity", "name": name, "entityType": kind, "observations": observations
            },
            st.text(max_size=12), st.text(max_size=5), st.lists(st.text(max_size=8), max_size=3),
        ),
        st.builds(
            lambda source, target, kind: {
                "type": "relation", "from": source, "to": target, "relationType": kind
            },
            st.text(max_size=8), st.text(max_size=8), st.text(max_size=8),
        ),
        st.just({"type": "other", "id": 1}),
    ),
    max_size=12,
)  # fmt: skip


@settings(max_examples=300)
@given(
    records=_SERVER_RECORDS,
    layout=st.tuples(
        st.sampled_from([b"\n", b"\r\n"]), st.sampled_from([b"", b"  "]), st.booleans()
    ),
    chunk=st.sampled_from([1, 64, codec._CHUNK]),
)
def test_the_server_layout_read_by_form_gives_what_a_parse_gives(
    records: list[Record], layout: tuple[bytes, bytes, bool], chunk: int
) -> None:
    newline, blank, final = layout
    lines = [orjson.dumps(record) for record in records]
    if lines:
        lines.insert(len(lines) // 2, blank)  # a blank line is no record
    data = newline.join(lines) + (newline if final else b"")
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(codec, "_CHUNK", chunk)  # lines longer than a chunk, or many chunks
        document = codec.parse(data)
    kept = [line for line in lines if line.strip()]
    keys = [identify(orjson.loads(line)) for line in kept]
    assert document.keys == keys
    assert [document.raw(i) for i in range(len(document))] == kept
    assert document.index == {key: keys.index(key) for key in keys}
    assert document.repeated == {key for key in keys if keys.count(key) > 1}
    assert bytes(document.kinds) == bytes(0 if type(key) is str else 1 if type(key) is tuple
                                          else 2 for key in keys)  # fmt: skip


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(b'{"type":"entity","name":"\xff","entityType":"x","observations":[]}',
                     "not UTF-8 (byte 0xff)", id="entity-name"),
        pytest.param(b'{"type":"entity","name":"Cy","entityType":"x","observations":[]}}',
                     "not JSON", id="entity-extra-brace"),
    ],
)  # fmt: skip
def test_a_bad_line_in_the_server_layout_is_still_refused_with_its_line(
    line: bytes, reason: str
) -> None:
    with pytest.raises(InputError, match=re.escape(f"line 2: {reason}")):
        codec.parse(jsonl(entity("Ada"), line, entity("Bob")))


# --- bad files: the version and the line ----------------------------------------------------


@pytest.mark.parametrize(
    ("ancestor", "message"),
    [
        pytest.param(
            b'[\n  {"type": "entity", "name": "Ada"},\n  \xff\n]\n',
            "ancestor, line 3: not UTF-8 (byte 0xff)",
            id="array-not-utf-8",
        ),
        pytest.param(
            b'[\n<<<<<<< ours\n  {"id": 1}\n=======\n  {"id": 2}\n>>>>>>> theirs\n]\n',
            "ancestor, line 2: conflict marker (a text merge was left unresolved)",
            id="array-with-conflict-markers",
        ),
        pytest.param(
            b'[\n  {"id": 1},\n  {"id": \n',
            "ancestor, line 4: not JSON (unexpected end of data)",
            id="array-cut-short",
        ),
    ],
)
def test_a_broken_array_is_refused_with_its_line(ancestor: bytes, message: str) -> None:
    with pytest.raises(InputError) as refused:
        merge_bytes(ancestor, dumps([ADA], 2), dumps([BOB], 2))
    assert str(refused.value) == message


def test_a_broken_array_side_names_that_side() -> None:
    with pytest.raises(InputError) as refused:
        merge_bytes(dumps([ADA], 2), dumps([ADA, BOB], 2), b'[\n  {"id": 1}\n  {"id": 2}\n]')
    assert str(refused.value).startswith("theirs, line 3: not JSON")


@pytest.mark.parametrize(
    ("ancestor_line", "message"),
    [
        pytest.param(
            b'{"type":"entity","name":"Zo\xeb","entityType":"person","observations":[]}',
            "ancestor, line 2: not UTF-8 (byte 0xeb)",
            id="name-not-utf-8",
        ),
        pytest.param(
            b'{"type":"entity","name":"Ada","entityType":"x","observations":[]]}',
            "ancestor, line 2: not JSON (unexpected character, expected ',' or '}')",
            id="not-json-inside",
        ),
    ],
)
def test_a_bad_ancestor_line_both_sides_changed_is_refused_with_its_line(
    ancestor_line: bytes, message: str
) -> None:
    ada = entity("Ada", "person", ("likes tea",))
    base = jsonl(entity("Bob"), ancestor_line)
    ours = jsonl(entity("Bob"), ada)
    theirs = jsonl(entity("Bob"), ada.replace(b"tea", b"milk"))
    with pytest.raises(InputError) as refused:
        merge_bytes(base, ours, theirs)
    assert str(refused.value) == message


def test_a_line_of_garbage_in_a_side_names_the_side_and_line() -> None:
    base = jsonl(entity("Ada"), entity("Bob"))
    ours = jsonl(entity("Ada"), entity("Bob"), entity("Cy"))
    theirs = b"\n\n" + jsonl(entity("Ada"), b"remember: Bob uses vim", entity("Bob"))
    with pytest.raises(InputError) as refused:
        merge_bytes(base, ours, theirs)
    assert (
        str(refused.value)
        == "theirs, line 4: not JSON (unexpected character, expected a JSON value)"
    )


def test_a_jsonl_side_of_an_array_ancestor_is_matched_record_by_record() -> None:
    # The server rewrote an old array file as JSONL on one side: only Cy is new.
    base = dumps([ADA, BOB], 2)
    ours = jsonl(*(orjson.dumps(record) for record in (BOB, ADA, CY)))
    merged, report = merge_bytes(base, ours, dumps([ADA, BOB, KNOWS], 2))
    assert merged == dumps([ADA, BOB, CY, KNOWS], 2)
    assert (report.added, report.changed, report.deleted) == (2, 0, 0)


def test_a_side_with_other_line_breaks_than_the_ancestor_is_read_line_by_line() -> None:
    # Found by hypothesis: after a block that differed only in its line breaks
    # was bisected, the walk stepped by the ancestor's CRLF over the side's LF.
    lines = [relation("Alice", "Alice", "knows"), relation("Alice", "Alice", "works_on"),
             relation("Alice", "Bob", "knows")]  # fmt: skip
    ancestor = b"\r\n".join(lines)
    side = b"\n".join(lines)
    merged, _ = merge_bytes(ancestor, side, side + b"\n")
    assert merged.replace(b"\r\n", b"\n").split(b"\n") == lines


@pytest.mark.parametrize("count", [2, 50, 51, 1000])
def test_a_side_that_deleted_the_last_line_is_read_once(count: int) -> None:
    # Found by review: when the lines a side kept ended exactly at its end (the
    # server writes no final newline), the walk went back to byte 0 and read
    # every record a second time, as if the file held each one twice.
    lines = [entity(f"person-{i:04}") for i in range(count)]
    base = jsonl(*lines)
    ours = jsonl(*lines[:-1])
    merged, report = merge_bytes(base, ours, base)
    assert merged == ours
    assert (report.deleted, report.folded) == (1, 0)


# --- an empty ancestor: the format the sides share, laid out as the server would --------------


def test_two_arrays_over_an_empty_ancestor_give_an_array_indented_by_two() -> None:
    merged, _ = merge_bytes(b"", dumps([ADA], None), dumps([BOB], 4))
    # Both added: new records in identity order; no ancestor layout to keep: two spaces, and no
    # final newline, as the server writes.
    assert merged == json.dumps([ADA, BOB], indent=2, ensure_ascii=False).encode()


def test_an_array_and_jsonl_over_an_empty_ancestor_give_jsonl() -> None:
    merged, _ = merge_bytes(b"", dumps([ADA], 2), jsonl(orjson.dumps(BOB)))
    assert merged == jsonl(orjson.dumps(ADA), orjson.dumps(BOB))


def test_entities_are_matched_by_name_even_when_they_carry_an_id() -> None:
    # Two machines created Ada, each with an id of its own: the server sees one entity, Ada.
    ours = dumps([{**ADA, "id": "laptop-1"}], 2)
    theirs = dumps([{**ADA, "id": "desktop-7", "observations": ["likes tea", "codes"]}], 2)
    merged, _ = merge_bytes(b"", ours, theirs)
    records = json.loads(merged)
    assert [record["name"] for record in records] == ["Ada"]
    assert sorted(records[0]["observations"]) == ["codes", "likes tea"]
