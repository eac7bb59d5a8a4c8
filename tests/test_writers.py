"""Other writers of memory files load the merge of their own files (issue 11).

As tests/test_memory_server.py does with the official server, each writer
that a package registry has is run for real: it writes the three versions
(the ancestor, then ours and theirs each made by its own tools from a copy of
the ancestor), the driver merges them, and the same writer, started on the
merged file, must load it and hold both sides' changes: every entity,
observation and relation either side added, every one either side deleted
gone, its own fields (``createdAt``, ``version``) taken from the side that
changed them, no record twice. Then it saves over the merged file, which
must lose nothing either.

* ``@itseasy21/mcp-knowledge-graph`` (npm, pinned in package.json's
  devDependencies, installed by ``npm ci``): the official JSONL plus
  ``createdAt`` and ``version`` on every record; ``update_entities`` and
  ``update_relations`` bump both. It keeps fields it does not know, answers a
  failed tool with a JSON-RPC error (`ServerError`), and has no
  structuredContent; the client in tests/memory_server.py drives it as is.
* ``iflow-mcp-memory`` (PyPI) is not tested here: every release (0.1.0 to
  0.1.2) requires Python >= 3.12, while the project supports and CI runs
  3.11; and it pulls in about 130 packages (pydantic-ai with the openai,
  anthropic and google SDKs, fastmcp, ipykernel, ipywidgets, logfire) for a
  storage layer of one ``model_dump_json`` call, and installs top-level
  modules named ``main``, ``memory_mcp`` and ``memory_tools``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crdt_merge_driver.core.merge import merge_bytes
from tests import gitrepo
from tests.memory_server import REPO_ROOT, MemoryServer, server_command

KNOWLEDGE_GRAPH = (
    REPO_ROOT / "node_modules" / "@itseasy21" / "mcp-knowledge-graph" / "dist" / "index.js"
)
MEMORY = "memory.jsonl"

Record = dict[str, Any]
Versions = dict[str, bytes]  # "base", "ours", "theirs" -> the file as the writer saved it


def knowledge_graph(path: Path) -> MemoryServer:
    """The real @itseasy21/mcp-knowledge-graph over ``path``; use as a context manager."""
    return MemoryServer(path, command=server_command(KNOWLEDGE_GRAPH))


def three_versions(
    folder: Path,
    base: Callable[[MemoryServer], None],
    ours: Callable[[MemoryServer], None],
    theirs: Callable[[MemoryServer], None],
) -> Versions:
    """Each version written by its own server: ours and theirs start from a copy of base."""
    folder.mkdir(parents=True, exist_ok=True)
    with knowledge_graph(folder / "base.jsonl") as server:
        base(server)
    for side, edit in (("ours", ours), ("theirs", theirs)):
        shutil.copyfile(folder / "base.jsonl", folder / f"{side}.jsonl")
        with knowledge_graph(folder / f"{side}.jsonl") as server:
            edit(server)
    return {side: (folder / f"{side}.jsonl").read_bytes() for side in ("base", "ours", "theirs")}


def loaded(server: MemoryServer) -> tuple[dict[str, Record], dict[tuple[str, str, str], Record]]:
    """What the writer's read tool answers: entities by name, relations by identity.

    Fails on a record held twice. Observations are sorted: the merge keeps the
    ancestor's order and sorts additions (docs/merge-rules.md); the set is what counts.
    """
    graph = server.read_graph()
    entities = {entity["name"]: {**entity, "observations": sorted(entity["observations"])}
                for entity in graph["entities"]}  # fmt: skip
    relations = {(r["from"], r["relationType"], r["to"]): dict(r) for r in graph["relations"]}
    assert len(entities) == len(graph["entities"]), f"an entity twice: {graph['entities']}"
    assert len(relations) == len(graph["relations"]), f"a relation twice: {graph['relations']}"
    return entities, relations


def records(data: bytes) -> tuple[dict[str, Record], dict[tuple[str, str, str], Record]]:
    """A version's records as the writer saved them, keyed as `loaded` keys them."""
    entities: dict[str, Record] = {}
    relations: dict[tuple[str, str, str], Record] = {}
    for line in data.split(b"\n"):
        value = json.loads(line)
        if value["type"] == "entity":
            entities[value["name"]] = {**value, "observations": sorted(value["observations"])}
        else:
            relations[value["from"], value["relationType"], value["to"]] = value
    return entities, relations


def summary(entities: dict[str, Record]) -> dict[str, tuple[str, list[str], int]]:
    return {name: (entity["entityType"], entity["observations"], entity["version"])
            for name, entity in entities.items()}  # fmt: skip


# --- one story: each side edits different records with every tool -------------------


def _base(server: MemoryServer) -> None:
    server.create_entities([
        {"name": "Ada", "entityType": "person", "observations": ["likes tea", "writes code"]},
        {"name": "Bob", "entityType": "person", "observations": ["plays chess"]},
        {"name": "Cy", "entityType": "cat", "observations": ["naps"]},
        {"name": "Dee", "entityType": "dog", "observations": ["barks"]},
    ])  # fmt: skip
    server.create_relations([
        {"from": "Ada", "to": "Bob", "relationType": "knows"},
        {"from": "Bob", "to": "Cy", "relationType": "owns"},
        {"from": "Cy", "to": "Dee", "relationType": "chases"},
    ])  # fmt: skip


def _ours(server: MemoryServer) -> None:
    server.add_observations([{"entityName": "Ada", "contents": ["speaks French"]}])
    server.delete_observations([{"entityName": "Bob", "observations": ["plays chess"]}])
    server.create_entities([{"name": "Eve", "entityType": "person", "observations": ["new"]}])
    server.create_relations([{"from": "Ada", "to": "Eve", "relationType": "knows"}])
    server.delete_relations([{"from": "Bob", "to": "Cy", "relationType": "owns"}])
    server.call("update_entities", entities=[{"name": "Cy", "entityType": "tiger"}])


def _theirs(server: MemoryServer) -> None:
    server.add_observations([{"entityName": "Bob", "contents": ["plays go"]}])
    server.delete_entities(["Dee"])  # and its relation Cy chases Dee
    server.create_entities([{"name": "Fay", "entityType": "person", "observations": []}])
    server.create_relations([{"from": "Fay", "to": "Ada", "relationType": "knows"}])
    server.call("update_entities", entities=[{"name": "Ada", "entityType": "engineer"}])
    server.call("update_relations",
                relations=[{"from": "Ada", "to": "Bob", "relationType": "knows"}])  # fmt: skip


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    return three_versions(tmp_path_factory.mktemp("knowledge-graph"), _base, _ours, _theirs)


def expected(versions: Versions) -> tuple[dict[str, Record], dict[tuple[str, str, str], Record]]:
    """The graph both sides' changes make, record by record from the side that made each."""
    base_entities, base_relations = records(versions["base"])
    our_entities, our_relations = records(versions["ours"])
    their_entities, their_relations = records(versions["theirs"])
    entities = {
        # theirs' update_entities (type, version, createdAt) and ours' new observation
        "Ada": {**their_entities["Ada"], "observations": our_entities["Ada"]["observations"]},
        # ours deleted an observation, theirs added one
        "Bob": {**base_entities["Bob"], "observations": ["plays go"]},
        "Cy": our_entities["Cy"],  # ours' update_entities
        "Eve": our_entities["Eve"],
        "Fay": their_entities["Fay"],
        # Dee: deleted by theirs
    }
    relations = {
        ("Ada", "knows", "Bob"): their_relations["Ada", "knows", "Bob"],  # theirs' update
        ("Ada", "knows", "Eve"): our_relations["Ada", "knows", "Eve"],
        ("Fay", "knows", "Ada"): their_relations["Fay", "knows", "Ada"],
        # Bob owns Cy: deleted by ours; Cy chases Dee: deleted with Dee by theirs
    }
    assert base_relations.keys() == {("Ada", "knows", "Bob"), ("Bob", "owns", "Cy"),
                                     ("Cy", "chases", "Dee")}  # fmt: skip
    return entities, relations


def test_the_writer_loads_the_merge_and_holds_both_sides(story: Versions, tmp_path: Path) -> None:
    merged, _ = merge_bytes(story["base"], story["ours"], story["theirs"])
    memory = gitrepo.write(tmp_path, MEMORY, merged)
    with knowledge_graph(memory) as server:
        entities, relations = loaded(server)
        assert summary(entities) == {
            "Ada": ("engineer", ["likes tea", "speaks French", "writes code"], 2),
            "Bob": ("person", ["plays go"], 1),
            "Cy": ("tiger", ["naps"], 2),
            "Eve": ("person", ["new"], 1),
            "Fay": ("person", [], 1),
        }
        assert (entities, relations) == expected(story)
        assert memory.read_bytes() == merged  # reading does not save

        # The writer goes on working on the merged file, and its save loses nothing.
        server.add_observations([{"entityName": "Fay", "contents": ["joined later"]}])
        server.call("update_entities", entities=[{"name": "Eve", "entityType": "engineer"}])
        after_entities, after_relations = loaded(server)
    saved_entities, saved_relations = records(memory.read_bytes())
    assert (saved_entities, saved_relations) == (after_entities, after_relations)
    assert after_relations == relations
    assert after_entities["Fay"]["observations"] == ["joined later"]
    assert after_entities["Eve"]["entityType"] == "engineer"
    assert after_entities["Eve"]["version"] == 2
    unchanged = {name: entities[name] for name in ("Ada", "Bob", "Cy")}
    assert {name: after_entities[name] for name in unchanged} == unchanged


def test_git_merge_with_the_driver_gives_the_writer_the_same_file(
    story: Versions, tmp_path: Path
) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    gitrepo.install(repo)
    gitrepo.commit(repo, "install the memory driver")
    gitrepo.commit_file(repo, MEMORY, story["base"], "base")
    gitrepo.git(repo, "checkout", "--quiet", "-b", "theirs")
    gitrepo.commit_file(repo, MEMORY, story["theirs"], "theirs")
    gitrepo.git(repo, "checkout", "--quiet", "main")
    gitrepo.commit_file(repo, MEMORY, story["ours"], "ours")

    result = gitrepo.git_result(repo, "merge", "--no-edit", "theirs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert gitrepo.conflicted(repo) == []
    merged = (repo / MEMORY).read_bytes()
    assert merged == merge_bytes(story["base"], story["ours"], story["theirs"])[0]
    with knowledge_graph(repo / MEMORY) as server:
        assert loaded(server) == expected(story)

    # The other way round (theirs takes ours in) gives the same bytes.
    gitrepo.git(repo, "checkout", "--quiet", "theirs")
    result = gitrepo.git_result(repo, "merge", "--no-edit", "main~1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (repo / MEMORY).read_bytes() == merged


# --- the same records changed on both sides ------------------------------------------


def test_both_sides_on_the_same_records(tmp_path: Path) -> None:
    def base(server: MemoryServer) -> None:
        server.create_entities([{"name": "Ada", "entityType": "person",
                                 "observations": ["likes tea"]}])  # fmt: skip

    def ours(server: MemoryServer) -> None:
        server.call("update_entities", entities=[{"name": "Ada", "entityType": "engineer"}])
        server.add_observations([{"entityName": "Ada", "contents": ["both"]}])
        server.create_entities([{"name": "Bob", "entityType": "person",
                                 "observations": ["from ours"]}])  # fmt: skip
        server.create_relations([{"from": "Ada", "to": "Bob", "relationType": "knows"}])

    def theirs(server: MemoryServer) -> None:
        # update_entities with observations replaces the list: "likes tea" is deleted.
        server.call("update_entities", entities=[{"name": "Ada", "observations": ["likes coffee"]}])
        server.add_observations([{"entityName": "Ada", "contents": ["both"]}])
        server.create_entities([{"name": "Bob", "entityType": "human",
                                 "observations": ["from theirs"]}])  # fmt: skip
        server.create_relations([{"from": "Ada", "to": "Bob", "relationType": "knows"}])

    versions = three_versions(tmp_path / "versions", base, ours, theirs)
    our_entities, our_relations = records(versions["ours"])
    their_entities, their_relations = records(versions["theirs"])
    merged, _ = merge_bytes(versions["base"], versions["ours"], versions["theirs"])
    with knowledge_graph(gitrepo.write(tmp_path, MEMORY, merged)) as server:
        entities, relations = loaded(server)

    # A field changed on both sides takes the version whose text sorts greater
    # (docs/merge-rules.md): for ISO times of one format, the later one.
    def later(field: str, one: Record, other: Record) -> Any:
        return max(one[field], other[field])

    assert entities["Ada"] == {
        "type": "entity", "name": "Ada",
        "entityType": "engineer",  # ours' update
        "observations": ["both", "likes coffee"],  # theirs' replacement, both's addition
        "createdAt": later("createdAt", our_entities["Ada"], their_entities["Ada"]),
        "version": 2,  # each side bumped it once
    }  # fmt: skip
    assert entities["Bob"] == {
        "type": "entity", "name": "Bob",
        "entityType": max("person", "human"),  # created on both sides, no ancestor
        "observations": ["from ours", "from theirs"],
        "createdAt": later("createdAt", our_entities["Bob"], their_entities["Bob"]),
        "version": 1,
    }  # fmt: skip
    key = ("Ada", "knows", "Bob")
    assert relations == {key: {
        **our_relations[key], "createdAt": later("createdAt", our_relations[key],
                                                 their_relations[key]),
    }}  # fmt: skip
