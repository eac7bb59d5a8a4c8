"""The live memory file: what the memory server writes, and this machine's version of it.

The server rewrites its file after every tool call and keeps only what it
knows: entity and relation lines with their own fields, no ``_crdt`` stamp,
no other record. So the live file cannot carry metadata; the repository does.
Two pure functions bridge them:

* `machine_version` turns the live file into the version this machine
  commits: records the server did not touch keep the repository's bytes
  (stamps included), records it changed take the repository's extra fields
  and, if their scalar fields changed, a new stamp; records the server
  cannot hold are kept, since their absence from the live file is not a
  deletion.
* `server_form` turns a merged file back into exactly what the server
  writes, so that restoring it is a no-op to the server.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, KeysView
from typing import Any, NamedTuple

import orjson

from crdt_merge_driver.core.clock import HybridClock, Stamp, stamp_of
from crdt_merge_driver.core.codec import diff
from crdt_merge_driver.core.document import EMPTY, Buffer
from crdt_merge_driver.core.merge import union
from crdt_merge_driver.core.record import Key, Record, decode, encode, identify
from crdt_merge_driver.core.value import dumps, has_long_digits, loads
from crdt_merge_driver.errors import InputError

_ENTITY_FIELDS = ("type", "name", "entityType", "observations")
_RELATION_FIELDS = ("type", "from", "to", "relationType")
_FIELD_SETS = {"entity": frozenset(_ENTITY_FIELDS), "relation": frozenset(_RELATION_FIELDS)}
# The fields a record's stamp covers on an entity: everything but its
# identity and its observations (which merge as a set, without stamps).
_UNSTAMPED = frozenset(("type", "name", "observations", "_crdt"))


def records_of(data: Buffer) -> dict[Key, Record]:
    """The records of a memory file by identity, in file order, repeats folded.

    Raises `InputError` on a file that is not a memory file. The records are
    shared with later calls on the same bytes: read them, do not change them.
    """
    if isinstance(data, bytes):
        return dict(_parsed(data))
    return _parse(data)


def _parse(data: Buffer) -> dict[Key, Record]:
    plain = _plain_reading(data) if type(data) is bytes else None
    return _read(data) if plain is None else plain.records


def _read(data: Buffer) -> dict[Key, Record]:
    """The general way: every layout, repeats folded, a bad line named."""
    short = not has_long_digits(data)  # one search of the file, not one a record
    records = union([diff(EMPTY, data)])
    return {key: decode(raw, short_numbers=short) for key, raw in records.items()}


def _plain_reading(data: bytes) -> _Reading | None:
    """The records of a file in the server's own shape, at one `orjson.loads` a line; else None.

    The shape: JSONL with ``\n`` line ends (a final one or not), each line one
    record that orjson reads exactly, no identity twice. That is every file
    the server writes, and this reads it in a third of the general way's
    time (which indexes every line, then parses it again). Any other file,
    or a bad one, goes the general way, which also names the bad line.
    """
    if not data or data.startswith(b"[") or b"\r" in data or has_long_digits(data):
        return None
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    try:
        # A blank line, a lone surrogate or a second value on a line fails here.
        values = list(map(orjson.loads, lines))
        keys = list(map(identify, values))
    except (orjson.JSONDecodeError, InputError):
        return None
    records = dict(zip(keys, values, strict=True))
    if len(records) != len(values):
        return None  # a repeat is folded the general way
    return _Reading(records, dict(zip(keys, lines, strict=True)))


# One backup reads the same versions (the live file, the last-sync point,
# the remote's tip, often one blob; the push guard the same again) in
# several steps; parsing each once took a 10k-entity backup from 7 full
# parses to 2. Keyed by the bytes' value, so another read of the same blob
# hits. Small: at a million entities one parse holds about a gigabyte.
_READINGS: dict[bytes, _Reading] = {}  # oldest first
_KEEP = 3


class _Reading(NamedTuple):
    records: dict[Key, Record]
    # Each record's own line, where the file holds one record a line and no
    # identity twice (`_plain_reading`, or this machine's own version); else None.
    lines: dict[Key, bytes] | None


def _parsed(data: bytes) -> dict[Key, Record]:
    reading = _READINGS.pop(data, None)
    if reading is None:
        reading = _plain_reading(data) or _Reading(_read(data), None)
    _remember(data, reading)
    return reading.records


def _lines_of(data: Buffer) -> dict[Key, bytes]:
    """Each record's own line in ``data``, as far as a reading of it kept them."""
    reading = _READINGS.get(data) if type(data) is bytes else None
    if reading is None or reading.lines is None:
        return {}
    return reading.lines


def _remember(data: bytes, reading: _Reading) -> None:
    _READINGS[data] = reading
    while len(_READINGS) > _KEEP:
        del _READINGS[next(iter(_READINGS))]


def plain_keys(data: bytes) -> KeysView[Key] | None:
    """The identities in ``data``, if this process has read or written it as one record a line.

    For the push guard, which refuses a file that does not parse or holds a
    record twice: a file read so passes both, and the backup that read or
    wrote the same bytes has its identities already. None: the guard reads
    the file itself (its own reader needs no full parse), and names what is
    wrong with it.
    """
    reading = _READINGS.get(data)
    return reading.records.keys() if reading is not None and reading.lines is not None else None


def server_form(data: Buffer) -> bytes:
    """The file the memory server would write for the graph in ``data``.

    Entity lines, then relation lines, each with exactly the server's fields
    in the server's order, joined by newlines with none at the end.
    """
    entities, relations = [], []
    for value in records_of(data).values():
        kind = value.get("type")
        if kind == "entity":
            entities.append(_only(value, _ENTITY_FIELDS))
        elif kind == "relation":
            relations.append(_only(value, _RELATION_FIELDS))
    return b"\n".join(dumps(value) for value in (*entities, *relations))


def same_graph(first: Buffer, second: Buffer) -> bool:
    """Whether the server would hold the same memory reading either file.

    The same records with the same server fields, whatever their line order,
    key order, spacing or final newline; stamps and records the server cannot
    hold do not count (the live file never has them).
    """
    return _graph(first) == _graph(second)


def graph_of(data: Buffer) -> dict[Key, Record]:
    """What the server holds reading ``data``: its records by identity, with the server's fields.

    Shared with later calls on the same bytes: read it, do not change it.
    """
    return _graph(data)


def _graph(data: Buffer) -> dict[Key, Record]:
    return _graph_of_bytes(data) if isinstance(data, bytes) else _server_graph(_parse(data))


@functools.lru_cache(maxsize=3)
def _graph_of_bytes(data: bytes) -> dict[Key, Record]:
    return _server_graph(_parsed(data))


def _server_graph(records: dict[Key, Record]) -> dict[Key, Record]:
    return {key: _server_fields(value) for key, value in records.items()
            if value.get("type") in SERVER_TYPES}  # fmt: skip


def _only(value: Record, fields: tuple[str, ...]) -> Record:
    return {name: value[name] for name in fields if name in value}


def machine_version(
    previous: Buffer, live: Buffer, clock: HybridClock, *, adopt: bool = False
) -> bytes:
    """What this machine commits: ``live`` read against ``previous`` (its last sync).

    With ``adopt`` (a first backup, read against the repository's file
    rather than a last sync), a record the repository has keeps the
    repository's scalar fields and stamp: a machine that never synced cannot
    tell its version is newer, so it may only add observations and records.
    """
    before = records_of(previous)
    observe(clock, previous)
    # As the server holds them (shared with `same_graph`, which a backup asks first).
    held, holds = _graph(previous), _graph(live)
    kept: dict[Key, Record] = {}
    for key, value in records_of(live).items():
        old = before.get(key)
        if old is None:
            kept[key] = _stamped(value, clock) if value.get("type") == "entity" else value
        elif adopt:
            kept[key] = _adopted(old, value)
        elif key in holds and held.get(key) == holds[key]:
            kept[key] = old  # untouched: the repository's bytes, stamp and all
        else:
            kept[key] = _carried(old, value, clock)
    kept.update((key, value) for key, value in before.items() if key not in kept
                and value.get("type") not in SERVER_TYPES)  # fmt: skip
    ordered = dict(_server_order(kept))
    # A record the repository had, kept as it was: its bytes as they were. A new or
    # changed one: the merge's canonical encoding (in the repository's field order),
    # so that this machine's version and a merge never tell one record apart by layout.
    was = _lines_of(previous)
    lines = {
        key: (was.get(key) or dumps(value)) if value is before.get(key)
        else encode(value, like=before.get(key))
        for key, value in ordered.items()
    }  # fmt: skip
    version = b"\n".join(lines.values())
    # Known already, as the push guard would read it: one record a line, none twice.
    _remember(version, _Reading(ordered, lines))
    return version


SERVER_TYPES = ("entity", "relation")  # the records the official server reads and writes


def first_foreign_line(data: bytes) -> int:
    """The number of the first line holding a record the server does not write.

    For an error message, off the usual path: each line is parsed again. A
    file whose records are not one a line (a JSON array) gives line 1.
    """
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            value = loads(line)
        except ValueError:  # orjson.JSONDecodeError is one: not a line of its own
            continue
        if type(value) is dict and value.get("type") not in SERVER_TYPES:
            return number
    return 1


def _carried(old: Record, live: Record, clock: HybridClock) -> Record:
    """A record the repository had: its extra fields kept, the server's fields taken live."""
    if _server_fields(old) == _server_fields(live):
        return old
    merged = {**old, **_server_fields(live)}
    if old.get("type") == "entity" and _scalars(old) != _scalars(merged):
        return _stamped(merged, clock)
    return merged


def _adopted(old: Record, live: Record) -> Record:
    if old.get("type") != "entity" or "observations" not in live:
        return old
    return {**old, "observations": live["observations"]}


def _server_fields(value: Record) -> Record:
    """``value`` with only the fields the server keeps (in any order: for comparing)."""
    kind = value.get("type")
    if kind == "entity":
        fields = _ENTITY_FIELDS
    elif kind == "relation":
        fields = _RELATION_FIELDS
    else:
        return value
    # The live file's records have no other field: no copy (a set test in C).
    return value if value.keys() <= _FIELD_SETS[kind] else _only(value, fields)


def _scalars(value: Record) -> Record:
    return {name: field for name, field in value.items() if name not in _UNSTAMPED}


def _stamped(value: Record, clock: HybridClock) -> Record:
    return {**value, "_crdt": clock.now().to_json()}


def _server_order(records: dict[Key, Record]) -> list[tuple[Key, Record]]:
    rank = {"entity": 0, "relation": 1}
    return sorted(records.items(), key=lambda item: rank.get(item[1].get("type"), 2))  # type: ignore[arg-type]


def observe(clock: HybridClock, data: Buffer) -> None:
    """Move ``clock`` past every stamp in a memory file (a file's stamps are read once)."""
    latest = _latest_in(data) if isinstance(data, bytes) else _latest(_parse(data).values())
    if latest is not None:
        clock.observe([latest])


@functools.lru_cache(maxsize=3)
def _latest_in(data: bytes) -> Stamp | None:
    return _latest(_parsed(data).values())


def _latest(records: Any) -> Stamp | None:
    return max(stamps_in(records), key=lambda stamp: (stamp.micros, stamp.counter), default=None)


def stamps_in(records: Any) -> Iterator[Stamp]:
    """Every stamp the records carry (for a clock to move past)."""
    for value in records:
        stamp = stamp_of(value)
        if stamp is not None:
            yield stamp
