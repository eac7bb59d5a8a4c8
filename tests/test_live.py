"""The live file's two bridges: this machine's version of it, and the server's form."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_merge_driver.core.clock import HybridClock, Stamp, stamp_of
from crdt_merge_driver.core.live import (
    _plain_reading,
    _read,
    machine_version,
    observe,
    records_of,
    server_form,
)
from crdt_merge_driver.core.record import encode
from crdt_merge_driver.errors import InputError
from tests.gitrepo import entity, jsonl, relation
from tests.strategies import memory_files
from tests.test_reader import _files

STAMP = {"time": "2026-01-01T00:00:00.000000Z", "counter": 0, "host": "old"}


def clock_at(seconds: float, host: str = "laptop") -> HybridClock:
    return HybridClock(host, wall=lambda: seconds)


def values(data: bytes) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in data.split(b"\n") if line]


def test_untouched_records_keep_the_repository_bytes_and_stamps() -> None:
    previous = jsonl(entity("Ada", "person", ("tea",), _crdt=STAMP), relation("Ada", "Bob"))
    live = jsonl(entity("Ada", "person", ("tea",)), relation("Ada", "Bob"))
    assert machine_version(previous, live, clock_at(1e9)) == previous


def test_a_new_observation_keeps_the_stamp_and_extra_fields() -> None:
    previous = jsonl(entity("Ada", "person", ("tea",), _crdt=STAMP, note="from a hand edit"))
    live = jsonl(entity("Ada", "person", ("tea", "code")))
    [ada] = values(machine_version(previous, live, clock_at(1e9)))
    assert ada["observations"] == ["tea", "code"]
    assert ada["_crdt"] == STAMP  # observations merge as a set: no new stamp
    assert ada["note"] == "from a hand edit"  # the server drops it; absence is not a deletion


def test_a_changed_entity_type_gets_a_new_stamp_from_this_host() -> None:
    previous = jsonl(entity("Ada", "person", (), _crdt=STAMP))
    live = jsonl(entity("Ada", "engineer", ()))
    [ada] = values(machine_version(previous, live, clock_at(1_800_000_000.0)))
    assert ada["entityType"] == "engineer"
    assert ada["_crdt"] == {"time": "2027-01-15T08:00:00.000000Z", "counter": 0, "host": "laptop"}


def test_new_entities_are_stamped_and_new_relations_are_not() -> None:
    live = jsonl(entity("Ada"), relation("Ada", "Ada"))
    ada, knows = values(machine_version(b"", live, clock_at(1e9)))
    assert ada["_crdt"]["host"] == "laptop"  # type: ignore[index]
    assert "_crdt" not in knows  # a relation has no scalar fields to order


def test_records_the_server_cannot_hold_are_kept_and_deletions_are_deletions() -> None:
    other = orjson.dumps({"type": "note", "id": 7, "text": "kept by the repo only"})
    previous = jsonl(entity("Ada"), entity("Bob"), relation("Ada", "Bob"), other)
    live = jsonl(entity("Ada"))  # this machine deleted Bob and the relation
    kept = values(machine_version(previous, live, clock_at(1e9)))
    assert [value.get("name", value.get("id")) for value in kept] == ["Ada", 7]


def test_the_clock_moves_past_stamps_the_repository_holds() -> None:
    later = {"time": "2030-01-01T00:00:00.000000Z", "counter": 4, "host": "other"}
    previous = jsonl(entity("Ada", "person", (), _crdt=later))
    live = jsonl(entity("Ada", "engineer", ()))
    [ada] = values(machine_version(previous, live, clock_at(1e9)))  # wall clock: 2001
    assert ada["_crdt"] == {**later, "counter": 5, "host": "laptop"}


def test_server_form_is_what_the_server_writes() -> None:
    merged = b"\n".join([
        relation("Ada", "Bob"),
        entity("Bob", "person", ("b",), _crdt=STAMP),
        orjson.dumps({"type": "note", "id": 1}),
        entity("Ada", "person", ("a",), extra=True),
    ])  # fmt: skip
    assert server_form(merged) == jsonl(
        entity("Bob", "person", ("b",)), entity("Ada", "person", ("a",)), relation("Ada", "Bob")
    )


def test_server_form_folds_repeats_and_reads_arrays() -> None:
    damaged = jsonl(entity("Ada", "person", ("a",)), entity("Ada", "person", ("b",)))
    assert server_form(damaged) == jsonl(entity("Ada", "person", ("a", "b")))
    array = b'[{"type": "entity", "name": "Ada", "entityType": "t", "observations": []}]\n'
    assert server_form(array) == jsonl(entity("Ada", "t"))


def test_a_file_that_is_not_memory_is_refused() -> None:
    with pytest.raises(InputError, match="line 2"):
        records_of(jsonl(entity("Ada"), b"<<<<<<< HEAD"))


def test_hybrid_clock_never_runs_backwards() -> None:
    wall = [100.0]
    clock = HybridClock("a", wall=lambda: wall[0])
    first = clock.now()
    wall[0] = 50.0  # the wall clock jumps back an hour
    second = clock.now()
    assert (second.micros, second.counter) > (first.micros, first.counter)
    clock.observe([Stamp(first.micros + 10, 3, "b")])
    assert clock.now() == Stamp(first.micros + 10, 4, "a")


def test_a_parse_is_shared_by_value_and_never_changed_by_its_readers() -> None:
    data = jsonl(entity("Ada", "person", ("a",)), relation("Ada", "Bob", "knows"))
    first = records_of(data)
    first.clear()  # a reader that changes its dict changes only its own
    again = records_of(bytes(bytearray(data)))  # another object with the same bytes
    assert again == records_of(bytearray(data)) and len(again) == 2


def test_observing_a_file_moves_the_clock_past_its_latest_stamp() -> None:
    stamps = {3: "2030-01-03T00:00:00Z", 1: "2030-01-01T00:00:00Z", 2: "2030-01-02T00:00:00Z"}
    data = jsonl(*(entity(f"e{n}", _crdt={"time": at, "counter": n, "host": "x"})
                   for n, at in stamps.items()))  # fmt: skip
    latest = stamp_of(orjson.loads(data.splitlines()[0]))
    assert latest is not None
    for source in (data, bytearray(data)):
        clock = clock_at(0)
        observe(clock, source)
        assert clock.now() == Stamp(latest.micros, 4, "laptop")


# Lines the plain reading must hand over to the general way, or read alike.
_ODD_LINES = st.sampled_from([
    b"", b" ", b'{"type":"entity","name":"\\ud83d","entityType":"t","observations":[]}',
    b'{"type":"entity","name":"n","entityType":"t","observations":[12345678901234567890123]}',
    b'{"type":"entity","name":"n","entityType":"t","observations":[]}',
    b'{"type":"relation","from":"n","to":"m","relationType":"r"}', b'{"id":1}', b"[]", b"1",
    b'{"type":"entity","name":"n","entityType":"t","observations":[]} {"id":2}',
    b'{"type":"entity","name":"n","name":"m","entityType":"t","observations":[]}',
])  # fmt: skip


@st.composite
def _odd_files(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_ODD_LINES, max_size=5))
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]))


@given(st.one_of(memory_files(), _files(), _odd_files()))
def test_the_plain_reading_is_the_general_one_or_leaves_it_the_file(data: bytes) -> None:
    plain = _plain_reading(data)
    try:
        general = _read(data)
    except InputError:
        assert plain is None
        return
    assert plain is None or list(plain.records.items()) == list(general.items())


def test_a_new_or_changed_record_is_encoded_as_the_merge_encodes_it() -> None:
    # The stamp's own fields in the order a stamp is made (time first): a layout the
    # merge never writes, kept for the record the server did not touch.
    previous = jsonl(entity("Ada", "person", ("tea",), _crdt=STAMP), entity("Bob", "person"))
    live = jsonl(entity("Ada", "person", ("tea", "code")), entity("Bob", "person"),
                 entity("Grace", "person"))  # fmt: skip
    ada, bob, grace = machine_version(previous, live, clock_at(1e9)).split(b"\n")
    assert bob == previous.split(b"\n")[1]
    for line in (ada, grace):
        assert line == encode(orjson.loads(line)), line  # nested keys sorted, "_" fields last
    assert b'"_crdt":{"counter":' in grace


def test_a_record_kept_as_it_was_keeps_its_bytes_in_the_next_version_too() -> None:
    # watch runs backup after backup in one process: the version just made is the
    # next one's previous, read from what the first one remembered (found by review).
    previous = jsonl(entity("Ada", "person", ("tea",)), entity("Bob", "person"))
    first = machine_version(previous, jsonl(entity("Ada", "person", ("tea",)),
                                            entity("Bob", "person"), entity("Grace", "x")),
                            clock_at(1e9))  # fmt: skip
    second = machine_version(first, jsonl(entity("Ada", "person", ("tea", "code")),
                                          entity("Bob", "person"), entity("Grace", "x")),
                             clock_at(2e9))  # fmt: skip
    grace = first.split(b"\n")[2]
    assert grace in second.split(b"\n"), (first, second)
    assert second.split(b"\n")[0] != first.split(b"\n")[0]  # Ada changed
