"""The facts about the real memory server that the driver relies on, checked through it.

If a new server release changes any of these, these tests say which one
before a merge corrupts a user's memory. They also prove the test client in
tests/memory_server.py (handshake, waiting for replies, timeouts, errors).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests import gitrepo, memory_server
from tests.memory_server import (
    MemoryServer,
    ServerError,
    ServerFactory,
    ServerUnavailable,
    ToolError,
)

ENTITY_KEYS = ["type", "name", "entityType", "observations"]
RELATION_KEYS = ["type", "from", "to", "relationType"]


def _key_orders(data: bytes) -> list[list[str]]:
    return [[key for key, _ in json.loads(line, object_pairs_hook=list)]
            for line in data.split(b"\n")]  # fmt: skip


def test_file_format_is_the_one_gitrepo_writes(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    memory = tmp_path / "memory.jsonl"
    server = memory_server_factory(memory)
    assert server.read_graph() == {"entities": [], "relations": []}  # a missing file is empty
    assert not memory.exists()

    server.create_entities([{"name": "Ada", "entityType": "person",
                             "observations": ['likes "tea"', "café ☕", "a\\b"]}])  # fmt: skip
    server.create_entities([{"name": "Bob", "entityType": "person", "observations": []}])
    server.create_relations([{"from": "Ada", "to": "Bob", "relationType": "knows"}])
    # An entity created after a relation is still written before it.
    server.create_entities([{"name": "Cy", "entityType": "cat", "observations": ["naps"]}])

    data = memory.read_bytes()
    assert not data.endswith(b"\n")
    assert _key_orders(data) == [ENTITY_KEYS, ENTITY_KEYS, ENTITY_KEYS, RELATION_KEYS]
    # Byte for byte what the test helpers (compact JSON, raw UTF-8) produce.
    assert data == gitrepo.jsonl(
        gitrepo.entity("Ada", "person", ('likes "tea"', "café ☕", "a\\b")),
        gitrepo.entity("Bob", "person"),
        gitrepo.entity("Cy", "cat", ("naps",)),
        gitrepo.relation("Ada", "Bob", "knows"),
    )


def test_text_content_and_structured_content_agree(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    memory = gitrepo.write(tmp_path, "memory.jsonl", gitrepo.jsonl(
        gitrepo.entity("Ada", "person", ("x",)), gitrepo.relation("Ada", "Ada", "is"),
    ))  # fmt: skip
    server = memory_server_factory(memory)
    result = server.call("read_graph")
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    assert server.read_graph() == {
        "entities": [{"name": "Ada", "entityType": "person", "observations": ["x"]}],
        "relations": [{"from": "Ada", "to": "Ada", "relationType": "is"}],
    }
    # List results are wrapped in an object in structuredContent only.
    created = server.call("create_entities", entities=[
        {"name": "Bob", "entityType": "person", "observations": []}])  # fmt: skip
    assert created["structuredContent"] == {"entities": json.loads(created["content"][0]["text"])}


def test_saves_by_temp_file_and_rename(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    memory = gitrepo.write(tmp_path, "memory.jsonl", gitrepo.entity("Ada"))
    before = memory.stat().st_ino
    server = memory_server_factory(memory)
    server.add_observations([{"entityName": "Ada", "contents": ["new"]}])
    assert memory.stat().st_ino != before  # replaced, not rewritten in place
    assert sorted(path.name for path in tmp_path.iterdir()) == ["memory.jsonl"]  # no temp left


def test_unknown_fields_and_lines_are_dropped_at_the_next_save(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    crdt = {"_crdt": {"clock": "0001", "tombstones": ["old"]}}
    memory = gitrepo.write(tmp_path, "memory.jsonl", gitrepo.jsonl(
        gitrepo.entity("Ada", "person", ("x",), **crdt),
        b'{"type":"meta","version":2}',
        b"",
        gitrepo.relation("Ada", "Ada", "is", **crdt),
    ))  # fmt: skip
    server = memory_server_factory(memory)
    # Extra fields load fine (the server just ignores them)...
    assert server.read_graph()["entities"] == [
        {"name": "Ada", "entityType": "person", "observations": ["x"]}
    ]
    assert b"_crdt" in memory.read_bytes()  # ...and reading does not save
    server.add_observations([{"entityName": "Ada", "contents": ["y"]}])
    assert memory.read_bytes() == gitrepo.jsonl(
        gitrepo.entity("Ada", "person", ("x", "y")), gitrepo.relation("Ada", "Ada", "is")
    )


def test_crlf_file_loads_and_is_saved_with_lf(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    crlf = gitrepo.entity("Ada") + b"\r\n" + gitrepo.entity("Bob") + b"\r\n"
    memory = gitrepo.write(tmp_path, "memory.jsonl", crlf)
    server = memory_server_factory(memory)
    assert [entity["name"] for entity in server.read_graph()["entities"]] == ["Ada", "Bob"]
    server.delete_entities(["Bob"])
    assert memory.read_bytes() == gitrepo.entity("Ada")


def test_a_line_that_is_not_json_breaks_every_tool(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    broken = gitrepo.jsonl(gitrepo.entity("Ada"), b"<<<<<<< ours", gitrepo.entity("Bob"))
    memory = gitrepo.write(tmp_path, "memory.jsonl", broken)
    server = memory_server_factory(memory)
    with pytest.raises(ToolError, match="not valid JSON"):
        server.read_graph()
    with pytest.raises(ToolError, match="not valid JSON"):
        server.search_nodes("Ada")
    with pytest.raises(ToolError, match="not valid JSON"):
        server.create_entities([{"name": "Cy", "entityType": "cat", "observations": []}])
    assert memory.read_bytes() == broken  # nothing was saved over it


def test_create_entities_skips_existing_names(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    memory = gitrepo.write(tmp_path, "memory.jsonl", gitrepo.entity("Ada", "person", ("x",)))
    server = memory_server_factory(memory)
    created = server.create_entities([
        {"name": "Ada", "entityType": "robot", "observations": ["other"]},
        {"name": "Bob", "entityType": "person", "observations": []},
    ])  # fmt: skip
    assert [entity["name"] for entity in created] == ["Bob"]
    assert memory.read_bytes() == gitrepo.jsonl(
        gitrepo.entity("Ada", "person", ("x",)), gitrepo.entity("Bob", "person")
    )


def test_other_tools_skip_duplicates_and_delete_what_they_name(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    memory = gitrepo.write(tmp_path, "memory.jsonl", gitrepo.jsonl(
        gitrepo.entity("Ada", "person", ("x", "y")), gitrepo.entity("Bob"),
        gitrepo.relation("Ada", "Bob", "knows"), gitrepo.relation("Bob", "Ada", "knows"),
    ))  # fmt: skip
    server = memory_server_factory(memory)
    assert server.create_relations([{"from": "Ada", "to": "Bob", "relationType": "knows"}]) == []
    assert server.add_observations([{"entityName": "Ada", "contents": ["x", "z"]}]) == [
        {"entityName": "Ada", "addedObservations": ["z"]}
    ]
    with pytest.raises(ToolError, match="Nobody not found"):
        server.add_observations([{"entityName": "Nobody", "contents": ["x"]}])
    server.delete_observations([{"entityName": "Ada", "observations": ["y"]}])
    server.delete_relations([{"from": "Bob", "to": "Ada", "relationType": "knows"}])
    assert memory.read_bytes() == gitrepo.jsonl(
        gitrepo.entity("Ada", "person", ("x", "z")), gitrepo.entity("Bob"),
        gitrepo.relation("Ada", "Bob", "knows"),
    )  # fmt: skip


def test_delete_entities_also_deletes_their_relations(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    memory = gitrepo.write(tmp_path, "memory.jsonl", gitrepo.jsonl(
        gitrepo.entity("Ada"), gitrepo.entity("Bob"), gitrepo.entity("Cy"),
        gitrepo.relation("Ada", "Bob"), gitrepo.relation("Cy", "Ada"),
        gitrepo.relation("Bob", "Cy"),
    ))  # fmt: skip
    server = memory_server_factory(memory)
    server.delete_entities(["Ada"])
    assert memory.read_bytes() == gitrepo.jsonl(
        gitrepo.entity("Bob"), gitrepo.entity("Cy"), gitrepo.relation("Bob", "Cy")
    )
    assert server.open_nodes(["Bob"])["relations"] == [
        {"from": "Bob", "to": "Cy", "relationType": "knows"}
    ]


def test_two_servers_on_two_files(tmp_path: Path, memory_server_factory: ServerFactory) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = memory_server_factory(tmp_path / "a" / "memory.jsonl")
    second = memory_server_factory(tmp_path / "b" / "memory.jsonl")
    first.create_entities([{"name": "Ada", "entityType": "person", "observations": []}])
    assert second.read_graph() == {"entities": [], "relations": []}


# --- the client itself ------------------------------------------------------------


def test_context_manager_closes_the_server(tmp_path: Path) -> None:
    with MemoryServer(tmp_path / "memory.jsonl") as server:
        assert server.read_graph() == {"entities": [], "relations": []}
    with pytest.raises(ServerError, match="closed"):
        server.read_graph()
    server.close()  # closing twice is harmless


def test_unknown_tool_is_a_tool_error(tmp_path: Path, memory_server_factory: ServerFactory) -> None:
    with pytest.raises(ToolError, match="no_such_tool"):
        memory_server_factory(tmp_path / "memory.jsonl").call("no_such_tool")


def test_missing_server_says_run_npm_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_server, "SERVER_SCRIPT", tmp_path / "missing" / "index.js")
    with pytest.raises(ServerUnavailable, match="npm ci"):
        MemoryServer(tmp_path / "memory.jsonl").start()


def test_missing_node_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerUnavailable, match="node"):
        MemoryServer(tmp_path / "memory.jsonl").start()


def test_a_silent_server_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Reads its input and never answers, like a hung server.
    silent = [sys.executable, "-c", "import sys\nfor _ in sys.stdin: pass"]
    monkeypatch.setattr(memory_server, "server_command", lambda: silent)
    with pytest.raises(ServerError, match=r"no reply to initialize within 0\.5s"):
        MemoryServer(tmp_path / "memory.jsonl", timeout=0.5).start()


def test_a_server_that_dies_fails_with_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dying = [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]
    monkeypatch.setattr(memory_server, "server_command", lambda: dying)
    with pytest.raises(ServerError, match=r"exited \(code 3\)[^\n]*\n[\s\S]*boom"):
        MemoryServer(tmp_path / "memory.jsonl").start()
