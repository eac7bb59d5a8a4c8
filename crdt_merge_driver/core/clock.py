"""The hybrid logical clock and the ``_crdt`` stamp it writes on records.

A stamp says when and where a record's scalar fields (``entityType`` and any
field other than its identity and its observations) were last written::

    "_crdt": {"time": "2026-11-26T04:12:00.123456Z", "counter": 0, "host": "laptop-1"}

Stamps order as ``(time, counter, host)``. The clock never runs backwards: a
machine takes the later of its wall clock and every stamp it has seen, so an
edit made after seeing another machine's edit is stamped later even when the
wall clock is hours behind. The older backup scripts' ``_crdt_metadata``
(``timestamp``, ``host``) orders the same way, with counter 0.

Stamps only break ties between concurrent scalar edits; the merge is correct
without them, and the memory server drops them from its live file.

Stamps come from other machines, so they are untrusted: one whose time is
malformed or outside the years 1..9999 UTC (a number: 1970..9999), or
whose counter is not an integer in ``0 .. 2**53 - 1``, is no stamp at all
(a host that is not a string reads as no host). It orders nothing (the
record counts as unstamped) and the clock does not move past it, so no
later stamp is ever a time that cannot be written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

# On the merge driver's path, where importing typing would cost 3 ms of a
# 10k-entity merge's 80: names only the type checker needs are imported for it
# alone (mypy takes any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_YEAR_10000 = 253_402_300_800  # seconds since the epoch
# The times a stamp can be written as: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z.
_FIRST_MICROS = -62_135_596_800 * 1_000_000
_LAST_MICROS = _YEAR_10000 * 1_000_000 - 1
_COUNTERS = 1 << 53  # integers JavaScript holds exactly


class Stamp(tuple[int, int, str]):
    """``(micros, counter, host)``, ordered as a tuple; micros since the epoch, UTC.

    A named tuple written out, not a ``typing.NamedTuple``: see TYPE_CHECKING above.
    """

    __slots__ = ()

    def __new__(cls, micros: int, counter: int, host: str) -> Stamp:
        return super().__new__(cls, (micros, counter, host))

    @property
    def micros(self) -> int:
        return self[0]

    @property
    def counter(self) -> int:
        return self[1]

    @property
    def host(self) -> str:
        return self[2]

    def to_json(self) -> dict[str, Any]:
        moment = _EPOCH + timedelta(microseconds=self.micros)
        time_text = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {"time": time_text, "counter": self.counter, "host": self.host}


def stamp_of(record: dict[str, Any]) -> Stamp | None:
    """The stamp a record carries in ``_crdt`` or, failing that, ``_crdt_metadata``."""
    meta = record.get("_crdt")
    if type(meta) is dict:
        micros = _micros(meta.get("time"))
        counter = meta.get("counter", 0)
        if micros is not None and type(counter) is int and 0 <= counter < _COUNTERS:
            return Stamp(micros, counter, _host(meta))
    meta = record.get("_crdt_metadata")
    if type(meta) is dict:
        micros = _micros(meta.get("timestamp"))
        if micros is not None:
            return Stamp(micros, 0, _host(meta))
    return None


def _host(meta: dict[str, Any]) -> str:
    host = meta.get("host", "")
    return host if type(host) is str else ""


def _micros(moment: object) -> int | None:
    if isinstance(moment, int | float) and not isinstance(moment, bool):
        # Seconds since the epoch, up to the year 9999: a larger number is not
        # a time a stamp can be written back as (milliseconds, say).
        return int(moment * 1_000_000) if 0 <= moment < _YEAR_10000 else None
    if not isinstance(moment, str):
        return None
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        delta = parsed - _EPOCH
    except OverflowError:  # an offset that takes the time past year 9999
        return None
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    # 9999-12-31T23:59:59-01:00 is past the last time a stamp can be written as.
    return micros if _FIRST_MICROS <= micros <= _LAST_MICROS else None


class HybridClock:
    """A clock for one host whose stamps only ever increase."""

    def __init__(self, host: str, *, wall: Callable[[], float] = time.time) -> None:
        self.host = host
        self._wall = wall
        self._last = Stamp(0, 0, host)

    def observe(self, stamps: Iterable[Stamp]) -> None:
        """Move past every stamp seen elsewhere (the receive rule of a hybrid clock)."""
        for stamp in stamps:
            if (stamp.micros, stamp.counter) > (self._last.micros, self._last.counter):
                self._last = Stamp(stamp.micros, stamp.counter, self.host)

    def now(self) -> Stamp:
        """A stamp later than every stamp issued or observed before."""
        wall = int(self._wall() * 1_000_000)
        if wall > self._last.micros:
            self._last = Stamp(wall, 0, self.host)
        else:
            self._last = Stamp(self._last.micros, self._last.counter + 1, self.host)
        return self._last
