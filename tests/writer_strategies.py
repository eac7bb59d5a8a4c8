"""Histories of memory files in other writers' formats, for the laws of `test_writer_laws`.

Each history is one of `tests.strategies.histories` (the memory server's
edits on the `Graph` model), with every version written again as another
writer writes that graph (``docs/formats.md``, "The writers supported";
``../shared/DOMAIN.md``, "Other writers"):

* ``think-tank`` (mcp-think-tank): records tagged ``_type``, observations as
  objects ``{"text", "timestamp"}`` stamped when they were added (so two
  machines adding one observation hold it with two timestamps), ``_savedAt``
  re-stamped on *every* record at every save, each version saved at its own
  time; lines joined by ``\\n`` plus a final newline. A version whose graph
  is the ancestor's was not saved: it is the ancestor's bytes.
* ``memory-graph`` (Rust): untagged records with ``createdBy``,
  ``updatedBy``, ``createdAt``, ``updatedAt`` (integer milliseconds), the
  ``updated*`` fields bumped on the records a version changed; relations
  with ``createdBy`` and ``createdAt``; each line ends in ``\\n``.
* ``knowledge-graph`` (mcp-knowledge-graph): the server's own bytes under the
  first line ``{"type":"_aim","source":"mcp-knowledge-graph"}``, in every
  version.
* ``iflow`` (iflow-mcp-memory): one compact JSON object, sections keyed by
  name: ``{"entities":{NAME:{"name","entity_type","observations"}},
  "relations":{"FROM,TO,TYPE":{"relation_from","relation_to",
  "relation_type"}}}``, ``\\u`` escapes or UTF-8 (one choice per history).
* ``export``: the server's records in one pretty-printed (or one-line)
  ``{"entities":[...],"relations":[...]}`` object, as an export writes it.

Beside each version in the writer's format, the history holds the same
version in the memory server's format (`official`), so a law can compare the
merge of the written versions with the merge of the official ones. The
hybrid clock's ``_crdt`` stamps are kept in the records (both forms) or
dropped from both, one choice per history: the other writers never write
them, but a stamped record must merge the same in any format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from hypothesis import strategies as st

from tests.strategies import (
    HOSTS,
    OBSERVATIONS,
    SERVER,
    Graph,
    History,
    Record,
    histories,
    render_jsonl,
)

WRITERS = ("think-tank", "memory-graph", "knowledge-graph", "iflow", "export")
# The writers whose files are JSONL (one record a line); the others are one object.
JSONL_WRITERS = ("think-tank", "memory-graph", "knowledge-graph")

AIM_HEADER = b'{"type":"_aim","source":"mcp-knowledge-graph"}'

# Save times: the ancestor's first, then later ones that the versions share now and then.
THINK_TANK_BASE_TIME = "2026-05-01T10:00:00.000Z"
THINK_TANK_TIMES = ("2026-05-02T08:00:00.000Z", "2026-05-02T08:00:00.001Z",
                    "2026-05-03T12:00:00.000Z")  # fmt: skip
# When the ancestor's observations were added: before the ancestor's save.
THINK_TANK_OBSERVATION_TIMES = ("2026-04-30T09:00:00.000Z", "2026-05-01T09:59:59.999Z")
MEMORY_GRAPH_BASE_TIME = 1767225600000
MEMORY_GRAPH_TIMES = (1767312000000, 1767312000001, 1767398400000)


@dataclass(frozen=True)
class WriterHistory:
    """An ancestor and the versions derived from it, in one writer's format and the server's."""

    writer: str
    official: tuple[bytes, ...]  # the ancestor first, in the memory server's format
    written: tuple[bytes, ...]  # the same versions, as the writer writes them
    stamps: bool  # whether the records carry the hybrid clock's ``_crdt``

    @property
    def sides(self) -> int:
        return len(self.written) - 1


_BOOL = st.booleans()
_THINK_TANK_TIME = st.sampled_from(THINK_TANK_TIMES)
_OBSERVATION_TIME = st.sampled_from(THINK_TANK_OBSERVATION_TIMES)
_MEMORY_GRAPH_TIME = st.sampled_from(MEMORY_GRAPH_TIMES)
_HOST = st.sampled_from(HOSTS)
_INDENT = st.sampled_from((2, 4, None))


def _records(graph: Graph, *, stamps: bool) -> list[Record]:
    """The graph's records in the server's form, with or without their ``_crdt``."""
    records = graph.records()
    if not stamps:
        for record in records:
            record.pop("_crdt", None)
    return records


def _entities(graph: Graph, *, stamps: bool) -> dict[str, Record]:
    return {r["name"]: r for r in _records(graph, stamps=stamps) if r["type"] == "entity"}


def _relations(graph: Graph, *, stamps: bool) -> dict[tuple[str, str, str], Record]:
    return {
        (r["from"], r["to"], r["relationType"]): r
        for r in _records(graph, stamps=stamps)
        if r["type"] == "relation"
    }


def _lines(records: Sequence[Record], *, final_newline: bool) -> bytes:
    """``JSON.stringify`` (or serde_json) of each record, one a line."""
    body = b"\n".join(orjson.dumps(record) for record in records)
    return body + b"\n" if body and final_newline else body


def _stamp(record: Record, official: Record) -> Record:
    if "_crdt" in official:
        record["_crdt"] = official["_crdt"]
    return record


# --- mcp-think-tank ----------------------------------------------------------------


def _think_tank_file(
    graph: Graph, saved_at: str, stamps: bool, added_at: Callable[[str, str], str]
) -> bytes:
    records: list[Record] = []
    for name, official in _entities(graph, stamps=stamps).items():
        observations = [{"text": text, "timestamp": added_at(name, text)}
                        for text in official["observations"]]  # fmt: skip
        record = {"name": name, "entityType": official["entityType"],
                  "observations": observations}  # fmt: skip
        records.append(_stamp(record, official) | {"_type": "entity", "_savedAt": saved_at})
    for (source, target, relation_type), official in _relations(graph, stamps=stamps).items():
        record = {"from": source, "to": target, "relationType": relation_type}
        records.append(_stamp(record, official) | {"_type": "relation", "_savedAt": saved_at})
    return _lines(records, final_newline=True)


@st.composite
def _think_tank(draw: st.DrawFn, graphs: Sequence[Graph], stamps: bool) -> tuple[bytes, ...]:
    base = graphs[0]
    # When each of the ancestor's observations was added.
    first_added = {
        (name, text): draw(_OBSERVATION_TIME)
        for name, entity in base.entities.items()
        for text in entity.observations
    }
    base_file = _think_tank_file(
        base, THINK_TANK_BASE_TIME, stamps, lambda name, text: first_added[name, text]
    )
    files = [base_file]
    for graph in graphs[1:]:
        if _records(graph, stamps=stamps) == _records(base, stamps=stamps):
            files.append(base_file)  # nothing done: never saved
            continue
        saved_at = draw(_THINK_TANK_TIME)

        # An observation the ancestor held keeps its timestamp; one added since is
        # stamped with this save.
        def added_at(name: str, text: str, at: str = saved_at) -> str:
            return first_added.get((name, text), at)

        files.append(_think_tank_file(graph, saved_at, stamps, added_at))
    return tuple(files)


# --- memory-graph (Rust) -------------------------------------------------------------


def _memory_graph_entity(official: Record, host: str, time: int) -> Record:
    record = {
        "name": official["name"],
        "entityType": official["entityType"],
        "observations": official["observations"],
        "createdBy": host,
        "updatedBy": host,
        "createdAt": time,
        "updatedAt": time,
    }
    return _stamp(record, official)


def _memory_graph_relation(official: Record, host: str, time: int) -> Record:
    record = {
        "from": official["from"],
        "to": official["to"],
        "relationType": official["relationType"],
        "createdBy": host,
        "createdAt": time,
    }
    return _stamp(record, official)


@st.composite
def _memory_graph(draw: st.DrawFn, graphs: Sequence[Graph], stamps: bool) -> tuple[bytes, ...]:
    base_host = draw(_HOST)
    base_entities = _entities(graphs[0], stamps=stamps)
    base_relations = _relations(graphs[0], stamps=stamps)
    written_entities = {name: _memory_graph_entity(r, base_host, MEMORY_GRAPH_BASE_TIME)
                        for name, r in base_entities.items()}  # fmt: skip
    written_relations = {key: _memory_graph_relation(r, base_host, MEMORY_GRAPH_BASE_TIME)
                         for key, r in base_relations.items()}  # fmt: skip
    files = [_lines([*written_entities.values(), *written_relations.values()],
                    final_newline=True)]  # fmt: skip
    for graph in graphs[1:]:
        host, time = draw(_HOST), draw(_MEMORY_GRAPH_TIME)
        records: list[Record] = []
        for name, official in _entities(graph, stamps=stamps).items():
            if base_entities.get(name) == official:
                records.append(written_entities[name])  # untouched: as it was
            elif name in base_entities:  # changed: updatedBy and updatedAt bumped
                before = written_entities[name]
                record = _memory_graph_entity(official, host, time)
                record["createdBy"], record["createdAt"] = before["createdBy"], before["createdAt"]
                records.append(record)
            else:
                records.append(_memory_graph_entity(official, host, time))
        for key, official in _relations(graph, stamps=stamps).items():
            if base_relations.get(key) == official:
                records.append(written_relations[key])
            else:
                records.append(_memory_graph_relation(official, host, time))
        files.append(_lines(records, final_newline=True))
    return tuple(files)


# --- mcp-knowledge-graph --------------------------------------------------------------


def _knowledge_graph(data: bytes) -> bytes:
    """The server's file under the ``_aim`` line, with the file's own line break."""
    if not data:
        return AIM_HEADER
    return AIM_HEADER + (b"\r\n" if b"\r\n" in data else b"\n") + data


# --- single objects ----------------------------------------------------------------------


def _iflow(graph: Graph, stamps: bool, ascii_only: bool) -> bytes:
    entities = {}
    for name, official in _entities(graph, stamps=stamps).items():
        record = {"name": name, "entity_type": official["entityType"],
                  "observations": official["observations"]}  # fmt: skip
        entities[name] = _stamp(record, official)
    relations = {}
    for (source, target, relation_type), official in _relations(graph, stamps=stamps).items():
        record = {"relation_from": source, "relation_to": target, "relation_type": relation_type}
        relations[f"{source},{target},{relation_type}"] = _stamp(record, official)
    value = {"entities": entities, "relations": relations}
    return json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_only).encode()


def _export(graph: Graph, stamps: bool, indent: int | None) -> bytes:
    records = _records(graph, stamps=stamps)
    value = {
        "entities": [record for record in records if record["type"] == "entity"],
        "relations": [record for record in records if record["type"] == "relation"],
    }
    return json.dumps(value, indent=indent, ensure_ascii=False).encode() + b"\n"


_OBSERVATION = st.sampled_from(OBSERVATIONS)


@st.composite
def _added_everywhere(draw: st.DrawFn, sides: Sequence[Graph]) -> tuple[Graph, ...]:
    """``sides`` after every machine added one observation to one entity they all hold.

    The server's ``add_observations``, on every side: what makes one observation
    appear in two forms (two machines' timestamps) in mcp-think-tank's files,
    which the histories alone reach in about 2% of their examples.
    """
    sides = tuple(side.copy() for side in sides)
    shared = [name for name in sides[0].entities if all(name in side.entities for side in sides)]
    if shared:
        name, text = shared[draw(st.integers(0, len(shared) - 1))], draw(_OBSERVATION)
        for side in sides:
            side.add_observations(name, [text])
    return sides


# --- histories ---------------------------------------------------------------------------


@st.composite
def writer_histories(
    draw: st.DrawFn, writer: str, count: int = 2, stamps: bool | None = None
) -> WriterHistory:
    """An ancestor and ``count`` versions edited from it, written by ``writer``.

    ``stamps``: whether the records keep their ``_crdt`` (``None``: drawn).
    mcp-knowledge-graph's files are the server's own, stamps and all.
    """
    history: History = draw(histories(count))
    graphs = (history.base.graph, *(side.graph for side in history.sides))
    if writer == "knowledge-graph":
        # The server's own bytes (stamps, line breaks and all) under the header.
        official = (history.base.data, *(side.data for side in history.sides))
        written = tuple(_knowledge_graph(data) for data in official)
        return WriterHistory(writer, official, written, stamps=True)
    if stamps is None:
        stamps = draw(_BOOL)
    if draw(_BOOL):
        graphs = (graphs[0], *draw(_added_everywhere(graphs[1:])))
    official = tuple(render_jsonl(_records(graph, stamps=stamps), SERVER) for graph in graphs)
    if writer == "think-tank":
        written = draw(_think_tank(graphs, stamps))
    elif writer == "memory-graph":
        written = draw(_memory_graph(graphs, stamps))
    elif writer == "iflow":
        ascii_only = draw(_BOOL)
        written = tuple(_iflow(graph, stamps, ascii_only) for graph in graphs)
    elif writer == "export":
        indent = draw(_INDENT)
        written = tuple(_export(graph, stamps, indent) for graph in graphs)
    else:
        raise ValueError(f"no such writer: {writer}")
    return WriterHistory(writer, official, written, stamps)
