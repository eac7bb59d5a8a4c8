"""Every hypothesis strategy of the test suite, in one module.

Memory files are generated the way the memory server writes them
(``JSON.stringify`` of ``{type,name,entityType,observations}`` and
``{type,from,to,relationType}``, entities first, lines joined by ``\\n``,
no newline at the end), and the two (or three) sides of a merge are derived
from one ancestor by the server's own edits, as git would see them. The
edits are made on a small model (`Graph`) that the laws compare the merge
with, so a test knows what each side added and deleted.

The alphabets are tiny on purpose: both sides touch the same entity, add the
same observation, create the same relation, all the time.

Besides: sides damaged the way ``merge=union`` damages them (records twice),
the older JSON array files (records with ``_crdt_metadata``, pretty-printed
in several indents or on one line) as histories and as inputs of the join.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, TypeAlias, TypeVar

import orjson
from hypothesis import strategies as st

NAMES = ("Alice", "Bob", "Carol", "Dave", "Zoë")
ENTITY_TYPES = ("person", "project", "tool")
OBSERVATIONS = (
    "likes tea",
    "uses vim",
    "on call",
    "lives in Oslo",
    'says "hi"',
    "ünïcödé ✓",
    "back\\slash",
)
RELATION_TYPES = ("knows", "works_on")
HOSTS = ("laptop", "server", "phone")
TIMES = (
    "2026-03-01T12:00:00.000000Z",
    "2026-03-01T12:00:00.000001Z",
    "2026-03-02T08:30:15.250000Z",
)

Stamp: TypeAlias = dict[str, Any]
Relation: TypeAlias = tuple[str, str, str]  # (from, to, relationType), as the server lists them
Record: TypeAlias = dict[str, Any]
_T = TypeVar("_T")


# --- the model -----------------------------------------------------------------


@dataclass
class Entity:
    entity_type: str
    observations: list[str]
    stamp: Stamp | None = None

    def record(self, name: str) -> Record:
        value: Record = {
            "type": "entity",
            "name": name,
            "entityType": self.entity_type,
            "observations": list(self.observations),
        }
        if self.stamp is not None:
            value["_crdt"] = dict(self.stamp)
        return value


@dataclass
class Graph:
    """A memory as the server holds it: entities and relations in file order."""

    entities: dict[str, Entity] = field(default_factory=dict)
    relations: dict[Relation, Stamp | None] = field(default_factory=dict)

    def copy(self) -> Graph:
        return Graph(
            {
                name: replace(e, observations=list(e.observations))
                for name, e in self.entities.items()
            },
            dict(self.relations),
        )

    def entity_records(self) -> dict[str, Record]:
        return {name: entity.record(name) for name, entity in self.entities.items()}

    def relation_records(self) -> dict[Relation, Record]:
        return {key: relation_record(key, stamp) for key, stamp in self.relations.items()}

    def records(self) -> list[Record]:
        return [*self.entity_records().values(), *self.relation_records().values()]

    # The server's tools, with the server's semantics.

    def create_entity(self, name: str, entity: Entity) -> None:
        if name not in self.entities:
            self.entities[name] = entity

    def add_observations(self, name: str, observations: Sequence[str]) -> None:
        entity = self.entities[name]
        entity.observations += [
            o for o in dict.fromkeys(observations) if o not in entity.observations
        ]

    def delete_observations(self, name: str, observations: Sequence[str]) -> None:
        entity = self.entities[name]
        entity.observations = [o for o in entity.observations if o not in observations]

    def delete_entity(self, name: str) -> None:
        del self.entities[name]
        for key in [key for key in self.relations if name in key[:2]]:
            del self.relations[key]

    def create_relation(self, key: Relation, stamp: Stamp | None) -> None:
        self.relations.setdefault(key, stamp)

    def delete_relation(self, key: Relation) -> None:
        self.relations.pop(key, None)

    def set_type(self, name: str, entity_type: str, stamp: Stamp | None) -> None:
        """Not a server tool: our own scalar edit, stamped by the hybrid clock."""
        entity = self.entities[name]
        entity.entity_type = entity_type
        entity.stamp = stamp


def relation_record(key: Relation, stamp: Stamp | None = None) -> Record:
    source, target, relation_type = key
    value: Record = {
        "type": "relation",
        "from": source,
        "to": target,
        "relationType": relation_type,
    }
    if stamp is not None:
        value["_crdt"] = dict(stamp)
    return value


class Layout(NamedTuple):
    newline: bytes = b"\n"
    final_newline: bool = False


SERVER = Layout()
CRLF = Layout(b"\r\n")
# Mostly the server's layout; sometimes a file that went through an editor or
# was committed with CRLF.
LAYOUTS = (SERVER, SERVER, SERVER, SERVER, Layout(final_newline=True), CRLF,
           Layout(b"\r\n", final_newline=True))  # fmt: skip


def render_jsonl(records: Sequence[Record], layout: Layout = SERVER) -> bytes:
    """Bytes as the server writes them: ``JSON.stringify`` per line, in insertion order."""
    body = layout.newline.join(orjson.dumps(record) for record in records)
    if body and layout.final_newline:
        body += layout.newline
    return body


@dataclass(frozen=True)
class Side:
    """One version of the file: the model and its bytes."""

    graph: Graph
    data: bytes


@dataclass(frozen=True)
class History:
    """An ancestor and the versions derived from it on different machines."""

    base: Side
    sides: tuple[Side, ...]


# --- records -------------------------------------------------------------------


# Every stamp there is, as `clock.Stamp.to_json` writes it: few distinct
# values, so ties on time and on counter happen.
STAMPS = tuple(
    {"time": time, "counter": counter, "host": host}
    for time in TIMES
    for counter in (0, 1)
    for host in HOSTS
)

# Strategies are built once, here: building them inside a composite, once per
# draw, costs more than the draw itself.
_STAMP = st.sampled_from(STAMPS).map(dict)
_MAYBE_STAMP = st.none() | _STAMP
_RELATION_STAMP = st.sampled_from((False, False, True)).flatmap(
    lambda stamped: _STAMP if stamped else st.none()
)
_OBSERVATIONS = st.lists(st.sampled_from(OBSERVATIONS), max_size=4, unique=True)
_NEW_OBSERVATIONS = st.lists(st.sampled_from(OBSERVATIONS), min_size=1, max_size=3, unique=True)
_NAME = st.sampled_from(NAMES)
_ENTITY_TYPE = st.sampled_from(ENTITY_TYPES)
_ENTITY = st.builds(
    Entity, entity_type=_ENTITY_TYPE, observations=_OBSERVATIONS, stamp=_MAYBE_STAMP
)
_RELATION_KEY = st.tuples(_NAME, _NAME, st.sampled_from(RELATION_TYPES))
_NAMES = st.lists(_NAME, max_size=len(NAMES), unique=True)
_RELATION_KEYS = st.lists(_RELATION_KEY, max_size=4, unique=True)
_LAYOUT = st.sampled_from(LAYOUTS)
_BOOL = st.booleans()


def stamps() -> st.SearchStrategy[Stamp]:
    return _STAMP


def entities() -> st.SearchStrategy[Entity]:
    return _ENTITY


def relation_keys() -> st.SearchStrategy[Relation]:
    return _RELATION_KEY


@functools.cache
def _index(size: int) -> st.SearchStrategy[int]:
    return st.integers(0, size - 1)


def _pick(draw: st.DrawFn, items: Sequence[_T]) -> _T:
    return items[draw(_index(len(items)))]


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    graph = Graph()
    for name in draw(_NAMES):
        graph.create_entity(name, draw(_ENTITY))
    for key in draw(_RELATION_KEYS):
        graph.create_relation(key, draw(_RELATION_STAMP))
    return graph


# --- the sides of a merge --------------------------------------------------------

_EDITS = st.sampled_from(
    (
        "create_entity",
        "add_observations",
        "add_observations",
        "delete_observations",
        "delete_entity",
        "create_relation",
        "delete_relation",
        "set_type",
    )
)
_EDIT_COUNT = st.integers(0, 5)


@st.composite
def edited(draw: st.DrawFn, ancestor: Graph) -> Graph:
    """A copy of ``ancestor`` after a few of the server's edits (and our scalar edit)."""
    graph = ancestor.copy()
    for _ in range(draw(_EDIT_COUNT)):
        edit = draw(_EDITS)
        names = list(graph.entities)
        if edit == "create_entity":
            graph.create_entity(draw(_NAME), draw(_ENTITY))
        elif edit == "create_relation":
            graph.create_relation(draw(_RELATION_KEY), draw(_RELATION_STAMP))
        elif edit == "delete_relation":
            if graph.relations:
                graph.delete_relation(_pick(draw, list(graph.relations)))
        elif names:
            name = _pick(draw, names)
            if edit == "add_observations":
                graph.add_observations(name, draw(_NEW_OBSERVATIONS))
            elif edit == "delete_observations":
                held = graph.entities[name].observations
                gone = [observation for observation in held if draw(_BOOL)]
                graph.delete_observations(name, gone or held[:1])
            elif edit == "delete_entity":
                graph.delete_entity(name)
            else:
                graph.set_type(name, draw(_ENTITY_TYPE), draw(_MAYBE_STAMP))
    return graph


@st.composite
def sides_of(draw: st.DrawFn, graph: Graph) -> Side:
    return Side(graph, render_jsonl(graph.records(), draw(_LAYOUT)))


@st.composite
def histories(draw: st.DrawFn, count: int = 2) -> History:
    """An ancestor and ``count`` versions edited from it independently."""
    ancestor = draw(graphs())
    base = draw(sides_of(ancestor))
    sides = tuple(draw(sides_of(draw(edited(ancestor)))) for _ in range(count))
    return History(base, sides)


def history_of(base: tuple[Graph, Layout], *sides: tuple[Graph, Layout]) -> History:
    """A `History` written by hand, for explicit examples."""
    base_side, *others = (
        Side(graph, render_jsonl(graph.records(), layout)) for graph, layout in (base, *sides)
    )
    return History(base_side, tuple(others))


def graph_of(*names: str, observations: Sequence[str] = ()) -> Graph:
    """Entities of type person named ``names``; the last one holds ``observations``."""
    graph = Graph()
    for name in names:
        graph.create_entity(name, Entity("person", []))
    graph.entities[names[-1]].observations = list(observations)
    return graph


@st.composite
def concurrent_scalar_edits(draw: st.DrawFn) -> History:
    """Both sides set the type of one ancestor entity (each maybe stamped), among other edits.

    `triples` reaches this case in under 1% of its examples; the register rules live here.
    """
    ancestor = draw(graphs().filter(lambda graph: bool(graph.entities)))
    name = _pick(draw, list(ancestor.entities))
    sides = []
    for _ in range(2):
        graph = draw(edited(ancestor))
        if name in graph.entities:  # unless this side deleted it
            graph.set_type(name, draw(_ENTITY_TYPE), draw(_MAYBE_STAMP))
        sides.append(draw(sides_of(graph)))
    return History(draw(sides_of(ancestor)), (sides[0], sides[1]))


def triples() -> st.SearchStrategy[History]:
    """Ancestor, ours and theirs, as git hands them to the driver."""
    return histories(2)


def quadruples() -> st.SearchStrategy[History]:
    """Ancestor and three machines' versions A, B, C, for associativity."""
    return histories(3)


_EXTRA_COUNT = st.integers(1, 4)


def _insert_copies(draw: st.DrawFn, data: bytes, pool: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``data`` with a few lines of ``pool`` inserted anywhere, each with its own line break.

    ``pool`` holds lines with the break of the file they come from, so a CRLF
    line inserted into an LF file keeps its CR: what ``merge=union`` of an LF
    side and a CRLF side leaves.
    """
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    lines = [(line, newline) for line in _lines(data)]
    for _ in range(draw(_EXTRA_COUNT)):
        lines.insert(draw(_index(len(lines) + 1)), _pick(draw, pool))
    body = b"".join(line + ending for line, ending in lines)
    if not data.endswith(b"\n"):
        body = body.removesuffix(lines[-1][1])
    return body


def _pool(*files: bytes) -> list[tuple[bytes, bytes]]:
    """Every line of ``files``, with its file's line break."""
    return [(line, b"\r\n" if b"\r\n" in data else b"\n")
            for data in files for line in _lines(data)]  # fmt: skip


@st.composite
def damaged_triples(draw: st.DrawFn) -> tuple[bytes, bytes, bytes]:
    """Ancestor, ours, theirs where a side holds extra copies of records, as union leaves them.

    The extra lines are other versions of the file's records (the ancestor's,
    either side's) inserted anywhere, as ``merge=union`` or a hand merge does
    when two edits touched the same line.
    """
    history = draw(histories(2))
    base, ours, theirs = history.base.data, history.sides[0].data, history.sides[1].data
    pool = _pool(base, ours, theirs)
    if pool:
        ours = _insert_copies(draw, ours, pool) if draw(_BOOL) else ours
        theirs = _insert_copies(draw, theirs, pool) if draw(_BOOL) else theirs
    return base, ours, theirs


def _lines(data: bytes) -> list[bytes]:
    return [line for line in data.replace(b"\r\n", b"\n").split(b"\n") if line]


# --- files for the join: JSONL and the older JSON arrays ------------------------

LEGACY_IDS = ("m1", "m2", "m3")
LEGACY_CONTENTS = ("prefers dark mode", "deploys on Fridays", "TODO: rotate keys")
LEGACY_TIMESTAMPS: tuple[str | float, ...] = (
    "2025-11-02T10:00:00Z",
    "2025-11-02T10:00:00.500000+00:00",
    "2025-11-02T11:00:00+01:00",  # the same moment as the first, another zone
    "2025-11-03T09:15:00",  # naive: read as UTC
    1762077600.0,  # an epoch number
)
_LEGACY_METADATA = st.fixed_dictionaries(
    {
        "host": st.sampled_from(HOSTS),
        "timestamp": st.sampled_from(LEGACY_TIMESTAMPS),
        "version": st.integers(1, 3),
        "unique_id": st.sampled_from(("u1", "u2", "u3")),
    }
)
_LEGACY_IDENTITY = st.sampled_from(("id", "id", "unique_id", "content", "name"))
_LEGACY_ID = st.sampled_from(LEGACY_IDS)
_LEGACY_CONTENT = st.sampled_from(LEGACY_CONTENTS)
_STAMPED = st.sampled_from((True, True, True, False))
_KEEP = st.sampled_from((True, True, True, False))


@st.composite
def legacy_records(draw: st.DrawFn) -> Record:
    """A record of the older backup scripts: ``id``, ``content``, ``_crdt_metadata``."""
    record: Record = {}
    identity = draw(_LEGACY_IDENTITY)
    if identity == "id":
        record["id"] = draw(_LEGACY_ID)
    elif identity == "name":
        record["type"] = "memory"
        record["name"] = draw(_LEGACY_ID)
    record["content"] = draw(_LEGACY_CONTENT)
    if draw(_STAMPED):
        record["_crdt_metadata"] = draw(_LEGACY_METADATA)
    return record


class ArrayLayout(NamedTuple):
    indent: int | str | None = 2  # None: the whole array on one line
    newline: bytes = b"\n"
    final_newline: bool = True


PRETTY = ArrayLayout()


def array_layouts() -> st.SearchStrategy[ArrayLayout]:
    return _ARRAY_LAYOUT


_ARRAY_LAYOUT = st.builds(
    ArrayLayout,
    indent=st.sampled_from((2, 4, "\t", None)),
    newline=st.sampled_from((b"\n", b"\n", b"\r\n")),
    final_newline=st.booleans(),
)
_LEGACY_RECORDS = st.lists(legacy_records(), max_size=5)


def render_array(records: Sequence[Record], layout: ArrayLayout = PRETTY) -> bytes:
    """A JSON array as Python's ``json.dump`` writes it (the older scripts did)."""
    text = json.dumps(list(records), indent=layout.indent, ensure_ascii=False)
    data = text.encode().replace(b"\n", layout.newline)
    return data + layout.newline if layout.final_newline else data


@st.composite
def array_files(draw: st.DrawFn) -> bytes:
    """An older JSON array file: legacy records, or the graph's records as an array."""
    records = draw(_LEGACY_RECORDS) if draw(_BOOL) else draw(graphs()).records()
    return render_array(records, draw(_ARRAY_LAYOUT))


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    """A memory server file, in the server's layout or a slightly different one."""
    return render_jsonl(draw(graphs()).records(), draw(_LAYOUT))


@st.composite
def union_damaged_files(draw: st.DrawFn) -> bytes:
    """A JSONL file in which some records appear more than once, changed or not."""
    data = draw(jsonl_files())
    pool = _pool(data, draw(jsonl_files()))
    return _insert_copies(draw, data, pool) if pool else data


@st.composite
def array_histories(
    draw: st.DrawFn, count: int = 2, layout: ArrayLayout | None = None
) -> tuple[bytes, ...]:
    """A history of the older JSON array files: the ancestor, then ``count`` versions.

    The records are the same graph edits as `histories`, and the older
    scripts' records are edited alongside (content rewritten with a new
    timestamp, deleted, added). All are written in ``layout`` if given,
    else each in one shared layout or in its own.
    """
    history = draw(histories(count))
    legacy = draw(_LEGACY_RECORDS)
    versions = [legacy]
    for _ in history.sides:
        edited_legacy = [
            dict(record, content=draw(_LEGACY_CONTENT), _crdt_metadata=draw(_LEGACY_METADATA))
            if draw(_BOOL)
            else record
            for record in legacy
            if draw(_KEEP)
        ]
        versions.append(edited_legacy + draw(_LEGACY_RECORDS))
    shared = layout or draw(_ARRAY_LAYOUT)
    graphs_ = (history.base.graph, *(side.graph for side in history.sides))
    return tuple(
        render_array(
            graph.records() + records,
            shared if layout or draw(_BOOL) else draw(_ARRAY_LAYOUT),
        )
        for graph, records in zip(graphs_, versions, strict=True)
    )


@st.composite
def array_triples(draw: st.DrawFn, layout: ArrayLayout | None = None) -> tuple[bytes, bytes, bytes]:
    """Ancestor, ours and theirs as older JSON array files (see `array_histories`)."""
    base, ours, theirs = draw(array_histories(2, layout))
    return base, ours, theirs


def memory_files() -> st.SearchStrategy[bytes]:
    """Any file the join accepts: JSONL, JSON arrays, empty, union-damaged JSONL."""
    return st.one_of(jsonl_files(), array_files(), st.just(b""), union_damaged_files())
