"""``crdt-merge-driver demo``: the built-in example must run, and must mean what it prints.

The demo is the first thing a new user runs, and it prints "no conflicts,
nothing lost" only after checking it. So these tests run it for real (once
as a user would, once in-process with ``--keep`` to look at what it built),
check that its `Memory` writes exactly what the real memory server writes
(the demo's third part stands for the server), and check that it does fail,
in one line, when a claim does not hold: with git's own ``union`` merge in
place of the driver, and with a remote that refuses pushes.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from crdt_merge_driver import demo
from crdt_merge_driver.demo import MACHINES, MEMORY, DemoFailed, Memory, run_demo
from crdt_merge_driver.errors import ExitCode
from tests import gitrepo
from tests.gitrepo import entity, jsonl, relation
from tests.memory_server import Entity, Relation, ServerFactory

PARTS = (
    "1. the merge driver: concurrent edits, plain git pull",
    "2. sync: all three push at the same moment",
    "3. backup and restore: live memory files, backed up at the same moment",
    "4. watch: two machines share one memory live",
)
SERVER_KEYS = (
    ["type", "name", "entityType", "observations"],
    ["type", "from", "to", "relationType"],
)


def with_config(*settings: tuple[str, str]) -> dict[str, str]:
    """git's environment form of ``git -c key=value``: the demo's own config does not replace it."""
    env = {"GIT_CONFIG_COUNT": str(len(settings))}
    for index, (key, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


# git's text merge that keeps both sides' lines: what people configured before this driver.
UNION_DRIVER = with_config(("merge.crdt-memory.driver", "git merge-file --union %A %O %B"))


# --- it runs ----------------------------------------------------------------------------


def test_the_demo_command_runs_all_three_parts_and_cleans_up(tmp_path: Path) -> None:
    result = gitrepo.cli("demo", env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == ExitCode.OK, result.stderr.decode()
    out = result.stdout.decode()
    positions = [out.index(part) for part in PARTS]
    assert positions == sorted(positions)
    assert out.endswith("\nno conflicts, nothing lost\n")
    assert result.stderr == b""  # the library's own log lines stay out of the story
    first_line = out.splitlines()[0]
    assert first_line.startswith(f"crdt-merge-driver demo in {tmp_path}")
    assert list(tmp_path.iterdir()) == []  # its temporary folder is gone


def test_keep_leaves_three_converged_clones_and_the_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = tmp_path / "kept" / "demo"  # a new folder, parents included
    # A user's shell sets neither; the demo sets both for its own git, then unsets them.
    monkeypatch.delenv("GIT_CONFIG_GLOBAL")
    monkeypatch.delenv("GIT_CONFIG_NOSYSTEM")
    out = io.StringIO()
    assert run_demo(keep=kept, out=out) == ExitCode.OK
    assert out.getvalue().startswith(f"crdt-merge-driver demo in {kept}\n")
    assert out.getvalue().endswith("\nno conflicts, nothing lost\n")
    assert "GIT_CONFIG_GLOBAL" not in os.environ
    assert "GIT_CONFIG_NOSYSTEM" not in os.environ

    names = sorted(path.name for path in kept.iterdir())
    live = [f"{name}-live" for name in MACHINES]
    watch_logs = [f"{name}-watch.log" for name in MACHINES[:2]]
    assert names == sorted([*MACHINES, *live, *watch_logs, "remote.git", "demo.gitconfig"])
    remote_head = gitrepo.git(kept / "remote.git", "rev-parse", "main").strip()
    committed = {name: (kept / name / MEMORY).read_bytes() for name in MACHINES}
    assert len(set(committed.values())) == 1  # identical bytes in every clone
    for name in MACHINES:
        clone = kept / name
        assert gitrepo.head(clone) == remote_head
        assert gitrepo.git(clone, "status", "--porcelain") == ""
        attached = gitrepo.git(clone, "check-attr", "merge", MEMORY)
        assert attached == f"{MEMORY}: merge: crdt-memory\n"
        assert gitrepo.git(clone, "config", "merge.crdt-memory.driver").strip()
    subjects = gitrepo.git(kept / "remote.git", "log", "--format=%s", "main").splitlines()
    for name in MACHINES:
        assert f"{name}: memory edits" in subjects
        assert f"{name}: sync" in subjects

    lives = {name: (kept / f"{name}-live" / MEMORY).read_bytes() for name in MACHINES}
    assert len(set(lives.values())) == 1  # the live files converged
    data = lives[MACHINES[0]]
    assert written_by_the_server(data)
    entities, relations = gitrepo.graph(data)
    assert gitrepo.graph(committed[MACHINES[0]]) == (entities, relations)
    assert "Hopper" in entities
    assert "Turing" not in entities  # deleted on one machine while others backed up
    assert entities["Grace"] == ("person", frozenset({"wrote a compiler", "a rear admiral"}))
    assert entities["Engine"][1] == {"analytical", "never finished"}
    assert entities["Ada"][1] == {"writes code", "first programmer"}
    assert relations == {("Grace", "admires", "Ada")}
    assert {f"note from {name}" for name in MACHINES} <= entities.keys()
    # Part 4: written on one watched machine, carried to the other by the watchers.
    assert entities["Hamilton"] == (
        "person", frozenset({"wrote flight software", "led the Apollo team"})
    )
    for log in watch_logs:
        said = (kept / log).read_text()
        assert "watching" in said and "stopped" in said, said


def written_by_the_server(data: bytes) -> bool:
    """Server fields only, in the server's order; entities first; no final newline."""
    orders = [[key for key, _ in orjson.loads(line).items()] for line in data.split(b"\n")]
    kinds = [SERVER_KEYS.index(order) for order in orders]
    return kinds == sorted(kinds) and not data.endswith(b"\n")


def test_keep_on_a_folder_that_is_not_empty_is_one_line_and_touches_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = gitrepo.cli("demo", "--keep", str(tmp_path))
    assert result.returncode == ExitCode.USAGE
    assert result.stdout == b""
    assert result.stderr.decode() == (
        f"crdt-merge-driver: {tmp_path} is not empty: give --keep an empty or new folder\n"
    )
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --- the demo's Memory is the memory server ------------------------------------------------


def test_memory_writes_what_the_real_server_writes_after_each_tool(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    ours = Memory(tmp_path / "demo" / MEMORY)
    ours.path.parent.mkdir()
    server_file = tmp_path / "server" / MEMORY
    server_file.parent.mkdir()
    server = memory_server_factory(server_file)

    steps: list[tuple[Callable[[], object], Callable[[], object]]] = [
        (lambda: ours.create_entity("Ada", "person", "likes tea", 'says "hi"'),
         lambda: server.create_entities([person("Ada", "likes tea", 'says "hi"')])),
        (lambda: ours.create_relation("Ada", "knows", "Bob"),
         lambda: server.create_relations([knows("Ada", "Bob")])),
        # created after a relation, written before it
        (lambda: ours.create_entity("Bob", "person"),
         lambda: server.create_entities([person("Bob")])),
        (lambda: ours.create_entity("Ada", "robot", "beeps"),  # exists: ignored
         lambda: server.create_entities([{"name": "Ada", "entityType": "robot",
                                          "observations": ["beeps"]}])),
        (lambda: ours.add_observations("Ada", "likes tea", "café ☕"),
         lambda: server.add_observations([{"entityName": "Ada",
                                           "contents": ["likes tea", "café ☕"]}])),
        (lambda: ours.create_relation("Ada", "knows", "Bob"),  # exists: ignored
         lambda: server.create_relations([knows("Ada", "Bob")])),
        (lambda: ours.create_relation("Bob", "knows", "Ada"),
         lambda: server.create_relations([knows("Bob", "Ada")])),
        (lambda: ours.delete_observation("Ada", "likes tea"),
         lambda: server.delete_observations([{"entityName": "Ada",
                                              "observations": ["likes tea"]}])),
        (lambda: ours.delete_relation("Ada", "knows", "Bob"),
         lambda: server.delete_relations([knows("Ada", "Bob")])),
        (lambda: ours.create_relation("Ada", "knows", "Bob"),
         lambda: server.create_relations([knows("Ada", "Bob")])),
        (lambda: ours.delete_entity("Bob"),  # takes its relations along
         lambda: server.delete_entities(["Bob"])),
    ]  # fmt: skip
    for number, (demo_step, server_step) in enumerate(steps, 1):
        demo_step()
        server_step()
        assert ours.path.read_bytes() == server_file.read_bytes(), f"after step {number}"
    assert ours.path.read_bytes() == jsonl(entity("Ada", "person", ('says "hi"', "café ☕")))
    assert ours.graph() == ({"Ada": ("person", frozenset({'says "hi"', "café ☕"}))}, frozenset())


def test_memory_drops_what_the_server_drops_at_its_next_save(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    committed = jsonl(
        entity("Ada", "person", ("likes tea",), _crdt={"time": "2026-01-01T00:00:00Z"}),
        relation("Ada", "Bob", "knows", _crdt={"time": "2026-01-01T00:00:00Z"}),
        orjson.dumps({"content": "prefers dark mode", "_crdt_metadata": {"unique_id": "m1"}}),
    )
    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    ours.write_bytes(committed)
    theirs.write_bytes(committed)
    Memory(ours).create_entity("Bob", "person")
    memory_server_factory(theirs).create_entities([person("Bob")])
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours.read_bytes() == jsonl(
        entity("Ada", "person", ("likes tea",)), entity("Bob", "person"), relation("Ada", "Bob")
    )


def test_memory_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "nothing-yet.jsonl")
    assert memory.graph() == ({}, frozenset())
    assert not memory.path.exists()


def person(name: str, *observations: str) -> Entity:
    return {"name": name, "entityType": "person", "observations": list(observations)}


def knows(source: str, target: str) -> Relation:
    return {"from": source, "to": target, "relationType": "knows"}


# --- it fails when a claim does not hold ---------------------------------------------------


def test_with_a_union_merge_instead_of_the_driver_the_demo_fails_in_one_line(
    tmp_path: Path,
) -> None:
    result = gitrepo.cli("demo", env={**os.environ, **UNION_DRIVER, "TMPDIR": str(tmp_path)})
    assert result.returncode == ExitCode.CONFLICT
    assert "no conflicts, nothing lost" not in result.stdout.decode()
    # The union kept both versions of every line both sides changed: records twice.
    assert result.stderr.decode() == "crdt-merge-driver: demo check failed: every record once\n"
    assert list(tmp_path.iterdir()) == []  # cleaned up after a failure too


def test_a_sync_that_cannot_push_fails_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pre-push hook (git runs it in the clone, with the config of our environment)
    # that refuses the commits `sync` makes, and lets the demo's other pushes through.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    refuse = hooks / "pre-push"
    refuse.write_text(
        "#!/bin/sh\n"
        "while read local_ref local_sha remote_ref remote_sha; do\n"
        '  case "$(git log -1 --format=%s "$local_sha")" in\n'
        '    *": sync") echo "syncs are closed for maintenance" >&2; exit 1;;\n'
        "  esac\n"
        "done\n"
    )
    refuse.chmod(0o755)
    for name, value in with_config(("core.hooksPath", str(hooks))).items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    with pytest.raises(
        DemoFailed, match=r"^a sync failed: .*syncs are closed for maintenance"
    ) as failed:
        run_demo(keep=tmp_path / "kept", out=out)
    assert "\n" not in str(failed.value)  # one line for the user
    assert PARTS[1] in out.getvalue()
    assert "no conflicts, nothing lost" not in out.getvalue()


def test_a_driver_that_keeps_one_side_fails_the_demo_with_the_claim_it_broke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `true` leaves %A as it is: each merge keeps our side and drops theirs.
    for name, value in with_config(("merge.crdt-memory.driver", "true")).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(DemoFailed, match=r"^demo check failed: Grace was added$"):
        run_demo(out=io.StringIO())


# --- part 4 says so when the watchers do not deliver ------------------------------------


def test_part_four_fails_in_one_line_when_a_watcher_dies(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(DemoFailed, match=r"^the laptop's watcher exited 3$"):
        demo._until(lambda: False, {"laptop": dead}, "anything")


def test_part_four_fails_when_a_write_does_not_arrive_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo, "LIVE_TIMEOUT", 0.3)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(DemoFailed, match=r"Hamilton in the desktop's live file within 0\.3 s"):
            demo._until(lambda: False, {"laptop": alive}, "Hamilton in the desktop's live file")
    finally:
        assert demo._stop_watchers({"laptop": alive}) == {"laptop": -signal.SIGTERM}
