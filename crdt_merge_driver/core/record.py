"""What a memory record is: its identity and its canonical bytes.

Identity decides which lines of two files are "the same record". Records are
known by their shape as well as their tag, since other writers of memory files
tag them otherwise (``"_type"``, mcp-think-tank) or not at all (a Rust
memory-graph):

* an entity (``"type": "entity"``, ``"_type": "entity"``, or untagged with a
  string ``name`` and a list ``observations``) is its ``name``, as the memory
  server sees it;
* a relation (``"type"``/``"_type"`` ``"relation"``, or untagged with string
  ``from``, ``to`` and ``relationType``) is ``(from, relationType, to)``;
* any other record is its ``id``, else its ``name`` with its ``type``, else
  ``_crdt_metadata.unique_id`` (the older backup scripts), else its whole
  canonical content.

The key's Python type tells its kind (``str`` entity, ``tuple`` relation,
``bytes`` other), which is also the order records are written in: entities
first, then relations, as the server writes them, then the rest.
"""

from __future__ import annotations

from crdt_merge_driver.core.value import dumps, loads
from crdt_merge_driver.errors import InputError

# On the merge driver's path, where importing typing would cost 3 ms of a
# 10k-entity merge's 80: names only the type checker needs are imported for it
# alone (mypy takes any TYPE_CHECKING as true).
TYPE_CHECKING = False
Key = str | tuple[str, str, str] | bytes
if TYPE_CHECKING:
    from typing import Any

    Record = dict[str, Any]
else:
    Record = dict

# The memory server writes its fields in this order; canonical bytes keep it so
# that a record the server wrote is already canonical. An older record's "id"
# leads too, and metadata ("_crdt", "_crdt_metadata") trails.
_LEADING = ("type", "id", "name", "from", "to", "relationType", "entityType", "observations")
_LEADING_FIELDS = frozenset(_LEADING)


def identify(value: object) -> Key:
    """The identity of one parsed record; raises `InputError` on a wrong shape."""
    if type(value) is not dict:
        raise InputError(f"expected a JSON object, found {_json_type(value)}")
    if "type" in value:
        kind = value["type"]
    elif "_type" in value:
        kind = value["_type"]
    else:
        kind = _shape(value)
    if kind == "entity":
        name = value.get("name")
        if type(name) is not str:
            raise InputError('an entity needs a string "name"')
        observations = value.get("observations", [])
        if type(observations) is not list:
            raise InputError(f'entity {name!r}: "observations" must be a list')
        return name
    if kind == "relation":
        ends = (value.get("from"), value.get("relationType"), value.get("to"))
        if not all(type(end) is str for end in ends):
            raise InputError('a relation needs string "from", "to" and "relationType"')
        return ends  # type: ignore[return-value]  # checked just above
    return _identify_other(value)


def _shape(value: Record) -> str | None:
    """What an untagged record is by its fields alone (None: neither kind)."""
    if type(value.get("name")) is str and type(value.get("observations")) is list:
        return "entity"
    if all(type(value.get(end)) is str for end in ("from", "to", "relationType")):
        return "relation"
    return None


def _identify_other(value: Record) -> bytes:
    if "id" in value:
        return b"id:" + _dumps_sorted(value["id"])
    if "name" in value:
        return b"name:" + _dumps_sorted([value.get("type"), value["name"]])
    meta = value.get("_crdt_metadata")
    if type(meta) is dict and "unique_id" in meta:
        return b"uid:" + _dumps_sorted(meta["unique_id"])
    return b"content:" + encode(value)


def encode(value: Record, *, like: Record | None = None) -> bytes:
    """Canonical compact bytes of a record.

    The server's fields come first in the server's order, every other field
    after them sorted by name (those starting with "_" last), and nested
    objects with sorted keys: equal records give equal bytes whatever order
    their fields were read in. With ``like`` (the ancestor's version of a
    merged record), the fields it has come first in its order instead, so a
    record merged from another writer's lines keeps that writer's field order.
    """
    leading = _LEADING if like is None else [name for name in like if name in value]
    items = [(name, value[name]) for name in leading if name in value]
    placed = _LEADING_FIELDS if like is None else frozenset(leading)
    rest = [name for name in value if name not in placed]
    rest.sort(key=lambda name: (name.startswith("_"), name))
    items += [(name, value[name]) for name in rest]
    return (
        b"{"
        + b",".join(dumps(name) + b":" + _dumps_sorted(field) for name, field in items)
        + b"}"
    )


def decode(raw: bytes, *, short_numbers: bool = False) -> Record:
    """The record behind bytes that `identify` already accepted (``short_numbers``: `loads`)."""
    value: Record = loads(raw, short_numbers=short_numbers)
    return value


def describe(key: Key) -> str:
    """A short human name for a record, for log lines."""
    if type(key) is str:
        return f"entity {dumps(key).decode()}"
    if type(key) is tuple:
        source, relation_type, target = key
        return f"relation {source!r} -{relation_type}-> {target!r}"
    assert type(key) is bytes
    text = key.decode("utf-8", "replace")
    tag, _, rest = text.partition(":")
    return f"record {tag} {rest[:80]}"


def sort_key(key: Key) -> tuple[int, Key]:
    """Order of records that the ancestor does not fix: kind, then identity."""
    if type(key) is str:
        return (0, key)
    if type(key) is tuple:
        return (1, key)
    return (2, key)


def _dumps_sorted(value: object) -> bytes:
    return dumps(value, sort_keys=True)


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
