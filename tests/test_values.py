"""Values as the memory server keeps them, and stamps as untrusted input.

The server (Node's ``JSON.parse``/``JSON.stringify``) writes and reads back
what orjson refuses or cannot keep: lone UTF-16 surrogate escapes, integers
beyond 64 bits, records nested deeper than orjson writes. Such records merge
with their values kept; where nothing can read a value, the merge refuses
with exit 1, never a traceback. A ``_crdt`` stamp from another machine is
only ever a hint: one out of range or malformed orders nothing.

Also here: an ancestor that holds every line twice (merge=union damage)
merges as its clean self does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given

from crdt_merge_driver.core.clock import _LAST_MICROS, HybridClock, Stamp, stamp_of
from crdt_merge_driver.core.live import machine_version
from crdt_merge_driver.core.merge import merge_bytes
from crdt_merge_driver.core.value import MAX_DEPTH, dumps, loads
from crdt_merge_driver.errors import ExitCode
from tests.strategies import History, histories


def _twice(data: bytes) -> bytes:
    return b"\n".join(line for line in data.split(b"\n") for line in (line, line))


# --- an ancestor with every line twice ------------------------------------------------


@given(histories())
def test_an_ancestor_with_every_line_twice_merges_as_its_clean_self(history: History) -> None:
    base, (ours, theirs) = history.base.data, history.sides
    if b"\r" in base:  # a CRLF ancestor doubled by hand would mix its own line breaks
        return
    clean, _ = merge_bytes(base, ours.data, theirs.data)
    damaged, _ = merge_bytes(_twice(base), ours.data, theirs.data)
    assert damaged == clean


# --- what orjson refuses or cannot keep -------------------------------------------------

# What the memory server writes for an entity whose name or observation lost
# the second half of an emoji: JSON.stringify escapes the lone surrogate.
CUT = b'{"type":"entity","name":"emoji \\ud83d","entityType":"note","observations":["cut \\ud83d"]}'
ADA = b'{"type":"entity","name":"Ada","entityType":"person","observations":[]}'


def _entity(name: str, *observations: str, **fields: object) -> bytes:
    record = {"type": "entity", "name": name, "entityType": "person",
              "observations": list(observations), **fields}  # fmt: skip
    return dumps(record)


def test_a_lone_surrogate_in_an_untouched_record_comes_back_byte_for_byte() -> None:
    base = CUT + b"\n" + ADA
    ours = CUT + b"\n" + _entity("Ada", "likes tea")
    theirs = CUT + b"\n" + ADA + b"\n" + _entity("Babbage")
    merged, _ = merge_bytes(base, ours, theirs)
    assert merged.split(b"\n")[0] == CUT
    assert merged == merge_bytes(base, theirs, ours)[0]
    assert b'"likes tea"' in merged and b'"Babbage"' in merged


def test_a_record_with_a_lone_surrogate_both_sides_changed_merges_its_observations() -> None:
    base = CUT
    ours = CUT.replace(b'["cut \\ud83d"]', b'["cut \\ud83d","ours"]')
    theirs = CUT.replace(b'["cut \\ud83d"]', b'["cut \\ud83d","theirs"]')
    merged, _ = merge_bytes(base, ours, theirs)
    assert merged == merge_bytes(base, theirs, ours)[0]
    value = loads(merged)
    assert value["name"] == "emoji \ud83d"
    assert value["observations"] == ["cut \ud83d", "ours", "theirs"]
    assert b"\\ud83d" in merged  # written back as JSON.stringify writes it


def test_an_integer_beyond_64_bits_is_kept_exactly() -> None:
    big = 2**80 + 1
    base = _entity("Ada", size=big)
    ours = _entity("Ada", "likes tea", size=big)
    theirs = _entity("Ada", "writes code", size=big)
    merged, _ = merge_bytes(base, ours, theirs)
    assert loads(merged)["size"] == big
    assert str(big).encode() in merged


def test_values_round_trip_where_orjson_cannot() -> None:
    for value in ({"a": "\ud83d"}, {"n": 2**70}, {"n": -(2**70), "s": ["\udc00x"]}):
        text = dumps(value)
        assert loads(text) == value
        assert dumps(loads(text)) == text
    assert dumps({"b": 1, "a": 2**65}, sort_keys=True) == b'{"a":36893488147419103232,"b":1}'
    assert dumps({"a": "\ud83d"}, indent=True) == b'{\n  "a": "\\ud83d"\n}'


def test_json_parse_refusals_stay_refusals() -> None:
    for text in (b"[NaN]", b"[Infinity]", b"[1e400]", b'["\\ud83d"', b"\xff"):
        with pytest.raises(orjson.JSONDecodeError):
            loads(text)


def _nested(depth: int) -> bytes:
    return b'{"type":"entity","name":"deep","entityType":"x","observations":[],"v":' + (
        b"[" * depth + b"]" * depth
    ) + b"}"


def test_a_record_nested_deeper_than_orjson_writes_merges() -> None:
    deep = _nested(400)
    merged, _ = merge_bytes(ADA, ADA + b"\n" + deep, _entity("Ada", "likes tea"))
    assert deep in merged.split(b"\n")
    changed = _nested(400).replace(b'"observations":[]', b'"observations":["a"]')
    both = _nested(400).replace(b'"observations":[]', b'"observations":["b"]')
    merged, _ = merge_bytes(deep, changed, both)
    assert loads(merged)["observations"] == ["a", "b"]


def test_a_record_nested_too_deep_is_refused_in_one_line_by_the_driver(tmp_path: Path) -> None:
    too_deep = _nested(3 * MAX_DEPTH)
    for name, data in (("base", ADA), ("ours", ADA + b"\n" + too_deep), ("theirs", ADA)):
        (tmp_path / f".merge_file_{name}").write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-m", "crdt_merge_driver", "merge",
         ".merge_file_base", ".merge_file_ours", ".merge_file_theirs", "memory.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == ExitCode.CONFLICT
    assert "Traceback" not in result.stderr
    [said] = result.stderr.splitlines()
    assert "memory.jsonl" in said and "line 2" in said and "deeper" in said, said


# --- stamps are untrusted ---------------------------------------------------------------


@pytest.mark.parametrize(
    "stamp",
    [
        {"time": 1e12, "counter": 0, "host": "far"},  # a number of seconds past year 9999
        {"time": "+275760-09-13T00:00:00.000Z", "counter": 0, "host": "far"},
        {"time": "2026-01-01T00:00:00Z", "counter": 2**60, "host": "far"},
        {"time": "2026-01-01T00:00:00Z", "counter": -1, "host": "far"},
        {"time": "not a time", "counter": 0, "host": "far"},
    ],
)
def test_a_stamp_out_of_range_orders_nothing_and_a_later_backup_still_stamps(
    stamp: dict[str, object],
) -> None:
    record = loads(_entity("Ada", _crdt=stamp))
    assert stamp_of(record) is None
    clock = HybridClock("here", wall=lambda: 1_800_000_000.0)
    previous = _entity("Ada", _crdt=stamp)
    live = _entity("Ada").replace(b'"person"', b'"engineer"')
    version = loads(machine_version(previous, live, clock))
    assert version["entityType"] == "engineer"
    assert version["_crdt"]["host"] == "here"
    assert version["_crdt"]["time"].startswith("2027-01-15")  # the wall clock, not the stamp's


def test_the_clock_never_moves_past_the_last_writable_time() -> None:
    clock = HybridClock("here", wall=lambda: 0.0)
    clock.observe([Stamp(_LAST_MICROS, 5, "other")])
    assert clock.now().to_json()["time"] == "9999-12-31T23:59:59.999999Z"
