"""The ``_crdt`` stamp: how it is read from a record, written back, and issued.

Stamps decide which version of a concurrently edited ``entityType`` is kept,
so reading one wrongly silently picks the wrong value. `stamp_of` must read
the current ``_crdt`` form and the older backup scripts' ``_crdt_metadata``
(ISO 8601 in every spelling those scripts used, or epoch seconds), and must
ignore what is not a stamp rather than fail the merge. The clock must never
issue a stamp earlier than one it issued or saw.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_merge_driver.core.clock import HybridClock, Stamp, stamp_of
from crdt_merge_driver.core.live import machine_version, records_of

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(text: str) -> int:
    """Microseconds since the epoch of an ISO 8601 time with a timezone, exactly."""
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(microseconds=1)


# The example of the clock module's docstring.
NOV_26 = micros("2026-11-26T04:12:00.123456+00:00")


# --- reading stamps -------------------------------------------------------------------


def test_reads_the_crdt_stamp() -> None:
    record = {
        "type": "entity",
        "name": "Ada",
        "_crdt": {"time": "2026-11-26T04:12:00.123456Z", "counter": 3, "host": "laptop-1"},
    }
    assert stamp_of(record) == Stamp(NOV_26, 3, "laptop-1")


def test_a_crdt_stamp_without_counter_or_host_counts_zero_and_no_host() -> None:
    assert stamp_of({"_crdt": {"time": "2026-11-26T04:12:00.123456Z"}}) == Stamp(NOV_26, 0, "")


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        pytest.param("2026-11-26T04:12:00.123456Z", NOV_26, id="Z"),
        pytest.param("2026-11-26T06:12:00.123456+02:00", NOV_26, id="offset-east"),
        pytest.param("2026-11-25T23:12:00.123456-05:00", NOV_26, id="offset-west"),
        pytest.param("2026-11-26T04:12:00.123456", NOV_26, id="naive-is-utc"),
        pytest.param("2026-11-26T04:12:00", NOV_26 - 123456, id="whole-seconds"),
        pytest.param("2026-11-26", micros("2026-11-26T00:00:00+00:00"), id="date-only"),
    ],
)
def test_reads_the_older_metadata_timestamp_as_utc(timestamp: str, expected: int) -> None:
    record = {"content": "x", "_crdt_metadata": {"timestamp": timestamp, "host": "old-box"}}
    assert stamp_of(record) == Stamp(expected, 0, "old-box")


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(0, 0, id="epoch"),
        pytest.param(1_700_000_000, 1_700_000_000_000_000, id="int-seconds"),
        pytest.param(1_700_000_000.25, 1_700_000_000_250_000, id="float-seconds"),
    ],
)
def test_reads_epoch_seconds_in_either_form(moment: float, expected: int) -> None:
    assert stamp_of({"_crdt": {"time": moment, "counter": 1, "host": "h"}}) == Stamp(
        expected, 1, "h"
    )
    assert stamp_of({"_crdt_metadata": {"timestamp": moment, "host": "h"}}) == Stamp(
        expected, 0, "h"
    )


def test_the_crdt_stamp_wins_over_the_older_metadata() -> None:
    record = {
        "_crdt": {"time": "2026-11-26T04:12:00.123456Z", "counter": 0, "host": "new"},
        "_crdt_metadata": {"timestamp": "2030-01-01T00:00:00Z", "host": "old"},
    }
    assert stamp_of(record) == Stamp(NOV_26, 0, "new")


@pytest.mark.parametrize(
    "crdt",
    [
        pytest.param({"time": "yesterday", "counter": 0, "host": "x"}, id="bad-time-text"),
        pytest.param({"time": "2026-13-45T99:00:00Z", "host": "x"}, id="impossible-date"),
        pytest.param({"time": True, "host": "x"}, id="boolean-time"),
        pytest.param({"time": None, "host": "x"}, id="null-time"),
        pytest.param({"time": ["2026-11-26"], "host": "x"}, id="list-time"),
        pytest.param({"host": "x"}, id="no-time"),
        pytest.param({"time": "2026-11-26T04:12:00Z", "counter": "1"}, id="text-counter"),
        pytest.param({"time": "2026-11-26T04:12:00Z", "counter": True}, id="boolean-counter"),
        pytest.param({"time": "2026-11-26T04:12:00Z", "counter": 1.5}, id="float-counter"),
    ],
)
def test_a_broken_crdt_stamp_falls_back_to_the_older_metadata(crdt: dict[str, Any]) -> None:
    fallback = {"timestamp": "2026-11-26T04:12:00.123456Z", "host": "old"}
    assert stamp_of({"_crdt": crdt}) is None
    assert stamp_of({"_crdt": crdt, "_crdt_metadata": fallback}) == Stamp(NOV_26, 0, "old")


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({}, id="no-stamp"),
        pytest.param({"_crdt": "2026-11-26T04:12:00Z"}, id="crdt-is-text"),
        pytest.param({"_crdt": ["2026-11-26T04:12:00Z", 0, "h"]}, id="crdt-is-a-list"),
        pytest.param({"_crdt": None}, id="crdt-is-null"),
        pytest.param({"_crdt_metadata": "2026-11-26T04:12:00Z"}, id="metadata-is-text"),
        pytest.param({"_crdt_metadata": {"timestamp": "soon", "host": "h"}}, id="bad-timestamp"),
        pytest.param({"_crdt_metadata": {"timestamp": False}}, id="boolean-timestamp"),
        pytest.param({"_crdt_metadata": {"host": "h", "unique_id": "m1"}}, id="no-timestamp"),
    ],
)
def test_garbage_is_no_stamp(record: dict[str, Any]) -> None:
    assert stamp_of(record) is None


@pytest.mark.parametrize("host", [None, 7, ["laptop"], {"name": "laptop"}])
def test_a_host_that_is_not_text_reads_as_no_host(host: object) -> None:
    moment = "2026-11-26T04:12:00.123456Z"
    assert stamp_of({"_crdt": {"time": moment, "host": host}}) == Stamp(NOV_26, 0, "")
    assert stamp_of({"_crdt_metadata": {"timestamp": moment, "host": host}}) == Stamp(NOV_26, 0, "")


def test_stamps_order_by_time_then_counter_then_host() -> None:
    def at(moment: str, counter: int, host: str) -> Stamp:
        stamp = stamp_of({"_crdt": {"time": moment, "counter": counter, "host": host}})
        assert stamp is not None
        return stamp

    ordered = [
        at("2026-11-26T04:12:00+01:00", 9, "z"),  # 03:12 UTC: the earliest, despite its text
        at("2026-11-26T04:12:00Z", 0, "z"),
        at("2026-11-26T04:12:00Z", 1, "a"),
        at("2026-11-26T04:12:00Z", 1, "b"),
        at("2026-11-26T04:12:00.000001Z", 0, "a"),
    ]
    assert sorted(ordered[i] for i in (3, 0, 4, 2, 1)) == ordered


# --- writing stamps -------------------------------------------------------------------


def test_to_json_writes_the_documented_form() -> None:
    assert Stamp(NOV_26, 2, "laptop-1").to_json() == {
        "time": "2026-11-26T04:12:00.123456Z",
        "counter": 2,
        "host": "laptop-1",
    }


# Years 1000..9999: `datetime` ends at 9999, and strftime("%Y") pads to four
# digits only from 1000. Earlier stamps never reach to_json: the clock stamps
# with the later of the wall clock and what it saw.
_MICROS = st.integers(
    min_value=micros("1000-01-01T00:00:00+00:00"),
    max_value=micros("9999-12-31T23:59:59.999999+00:00"),
)


@given(moment=_MICROS, counter=st.integers(0, 2**31), host=st.text(max_size=12))
def test_to_json_round_trips_through_stamp_of(moment: int, counter: int, host: str) -> None:
    stamp = Stamp(moment, counter, host)
    assert stamp_of({"_crdt": stamp.to_json()}) == stamp


# --- the clock ------------------------------------------------------------------------


class Wall:
    """A wall clock the test sets by hand (seconds since the epoch)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self) -> float:
        return self.seconds


def test_now_follows_the_wall_clock_while_it_moves_forward() -> None:
    wall = Wall(1_700_000_000.0)
    clock = HybridClock("laptop", wall=wall)
    assert clock.now() == Stamp(1_700_000_000_000_000, 0, "laptop")
    wall.seconds += 2.5
    assert clock.now() == Stamp(1_700_000_002_500_000, 0, "laptop")


def test_now_never_runs_backwards_when_the_wall_clock_does() -> None:
    wall = Wall(1_700_000_000.0)
    clock = HybridClock("laptop", wall=wall)
    first = clock.now()
    wall.seconds -= 3600  # NTP steps the clock back an hour
    second = clock.now()
    third = clock.now()
    assert first < second < third
    assert (second.micros, second.counter) == (first.micros, 1)
    assert (third.micros, third.counter) == (first.micros, 2)


def test_observe_moves_past_a_stamp_from_a_machine_whose_clock_is_ahead() -> None:
    wall = Wall(1_700_000_000.0)
    clock = HybridClock("laptop", wall=wall)
    ahead = Stamp(1_700_003_600_000_000, 4, "desktop")  # an hour ahead
    clock.observe([Stamp(5, 0, "old"), ahead, Stamp(1_700_000_000_000_000, 9, "ci")])
    edit = clock.now()
    assert edit.host == "laptop"
    assert (edit.micros, edit.counter) > (ahead.micros, ahead.counter)
    assert edit == Stamp(ahead.micros, 5, "laptop")


def test_observing_older_stamps_changes_nothing() -> None:
    wall = Wall(1_700_000_000.0)
    clock = HybridClock("laptop", wall=wall)
    first = clock.now()
    clock.observe([Stamp(first.micros - 1, 99, "desktop"), Stamp(0, 0, "ci")])
    wall.seconds += 1
    assert clock.now() == Stamp(first.micros + 1_000_000, 0, "laptop")


def test_the_default_wall_clock_is_the_real_time() -> None:
    before = datetime.now(UTC).timestamp()
    stamp = HybridClock("here").now()
    after = datetime.now(UTC).timestamp()
    assert before * 1_000_000 - 1 <= stamp.micros <= after * 1_000_000 + 1
    assert stamp.host == "here"


_EVENTS = st.lists(
    st.one_of(
        st.floats(min_value=0, max_value=4e9, allow_nan=False).map(lambda s: ("wall", s)),
        st.builds(Stamp, st.integers(0, 4 * 10**15), st.integers(0, 5), st.just("other")).map(
            lambda stamp: ("seen", stamp)
        ),
    ),
    max_size=30,
)


@given(events=_EVENTS)
def test_every_stamp_is_later_than_all_issued_and_seen_before(
    events: list[tuple[str, Any]],
) -> None:
    wall = Wall(0.0)
    clock = HybridClock("laptop", wall=wall)
    latest = (0, -1)
    for kind, value in events:
        if kind == "wall":
            wall.seconds = value
            stamp = clock.now()
            assert (stamp.micros, stamp.counter) > latest
            assert stamp.host == "laptop"
            latest = (stamp.micros, stamp.counter)
        else:
            clock.observe([value])
            latest = max(latest, (value.micros, value.counter))


def test_a_stamp_in_milliseconds_does_not_crash_the_next_edit() -> None:
    previous = entity_line(entityType="person", _crdt_metadata={"timestamp": 1_700_000_000_000})
    live = entity_line(entityType="robot")
    committed = machine_version(previous, live, HybridClock("laptop"))
    (value,) = records_of(committed).values()
    assert value["entityType"] == "robot"
    stamp = stamp_of(value)
    assert stamp is not None
    assert stamp_of({"_crdt": stamp.to_json()}) == stamp


def entity_line(**fields: object) -> bytes:
    return orjson.dumps({"type": "entity", "name": "Ada", "observations": [], **fields})
