"""``backup`` and ``restore`` of live memory files, proven with the real memory server.

Every machine here is a live file in a folder of its own (where the memory
server keeps it) plus a clone of one bare remote, and every edit goes
through that machine's own server: the tests see memory exactly as an agent
sees it. Backups run as separate processes through the command line, with
the environment a cron line gives them, except where a test must reach into
the middle of one (the compare-and-swap) or fake its wall clock.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import orjson
import pytest

from crdt_merge_driver.backup import backup, restore
from crdt_merge_driver.core.clock import Stamp, stamp_of
from crdt_merge_driver.errors import ExitCode
from crdt_merge_driver.sync import landing as sync_module
from crdt_merge_driver.sync.landing import REBASE_MARK
from tests import gitrepo
from tests.memory_server import Entity, MemoryServer, Relation, ServerFactory

MEMORY = "memory.jsonl"

Graph = tuple[dict[str, tuple[str, frozenset[str]]], frozenset[tuple[str, str, str]]]


@dataclass(eq=False)
class Machine:
    name: str
    live: Path  # the memory server's file, outside the clone
    clone: Path
    start: ServerFactory

    @cached_property
    def server(self) -> MemoryServer:
        """This machine's own memory server, started on first use (node takes ~0.5 s)."""
        return self.start(self.live)

    def env(self) -> dict[str, str]:
        """What a cron line gives `crdt-merge-driver backup` on this machine."""
        return {
            **os.environ,
            "MEMORY_FILE_PATH": str(self.live),
            "REPO_DIR": str(self.clone),
            "CRDT_MERGE_DRIVER_HOST": self.name,
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """``crdt-merge-driver args...`` as a separate process, from outside the clone."""
        return gitrepo.cli(*args, cwd=self.live.parent, env=self.env())

    def backup(self, *args: str) -> None:
        ok(self.run("backup", *args))

    def restore(self) -> None:
        ok(self.run("restore"))

    def graph(self) -> Graph:
        return server_graph(self.server)


def ok(result: subprocess.CompletedProcess[bytes]) -> None:
    assert result.returncode == 0, (
        f"exit {result.returncode}:\n{result.stderr.decode(errors='replace')}"
    )


def machine(tmp_path: Path, remote: Path, start: ServerFactory, name: str) -> Machine:
    """A new machine: an empty folder for its live file and a clone of ``remote``."""
    folder = tmp_path / f"{name}-live"
    folder.mkdir()
    live = folder / MEMORY
    clone = gitrepo.clone(remote, tmp_path / f"{name}-clone")
    return Machine(name, live, clone, start)


def server_graph(server: MemoryServer) -> Graph:
    """The graph the server answers, each entity, observation and relation once."""
    found = server.read_graph()
    names = [value["name"] for value in found["entities"]]
    assert len(names) == len(set(names)), f"an entity appears twice: {sorted(names)}"
    entities = {}
    for value in found["entities"]:
        observations = value["observations"]
        assert len(observations) == len(set(observations)), f"repeated: {observations}"
        entities[value["name"]] = (value["entityType"], frozenset(observations))
    relations = [(value["from"], value["relationType"], value["to"])
                 for value in found["relations"]]  # fmt: skip
    assert len(relations) == len(set(relations)), f"a relation appears twice: {relations}"
    return entities, frozenset(relations)


def remote_file(remote: Path) -> bytes:
    """The memory file on the remote's branch, as bytes."""
    return subprocess.run(
        ["git", "cat-file", "blob", f"main:{MEMORY}"], cwd=remote, capture_output=True, check=True
    ).stdout


def remote_graph(remote: Path) -> Graph:
    entities, relations = gitrepo.graph(remote_file(remote))  # fails on a repeated record
    return entities, frozenset(relations)


def remote_record(remote: Path, name: str) -> dict[str, object]:
    [found] = [value for value in gitrepo.records(remote_file(remote))
               if value.get("type") == "entity" and value["name"] == name]  # fmt: skip
    return found


def stamp(value: dict[str, object]) -> Stamp:
    found = stamp_of(value)
    assert found is not None, f"no stamp on {value}"
    return found


def new(name: str, entity_type: str, *observations: str) -> Entity:
    return {"name": name, "entityType": entity_type, "observations": list(observations)}


def link(source: str, relation_type: str, target: str) -> Relation:
    return {"from": source, "relationType": relation_type, "to": target}


def observe(name: str, *contents: str) -> dict[str, object]:
    return {"entityName": name, "contents": list(contents)}


def forget(name: str, *observations: str) -> dict[str, object]:
    return {"entityName": name, "observations": list(observations)}


def one_line_error(
    result: subprocess.CompletedProcess[bytes], code: ExitCode, says: str, *, alone: bool = True
) -> str:
    """The error line: the last line on stderr, after progress lines only if not ``alone``."""
    message = gitrepo.unstamped(result.stderr.decode())
    assert result.returncode == code, f"exit {result.returncode}, not {code}:\n{message}"
    lines = message.splitlines()
    assert lines, "no message"
    assert all(line.startswith("crdt-merge-driver: ") for line in lines), message  # no traceback
    assert len(lines) == 1 or not alone, f"not one line:\n{message}"
    assert says in lines[-1], message
    return lines[-1]


# --- the shared history the tests start from ------------------------------------

FIRST_ENTITIES = [
    new("Ada", "person", "likes tea", "writes code"),
    new("Babbage", "person", "builds engines"),
    new("Engine", "machine", "analytical"),
    new("Difference Engine", "machine", "unfinished"),
    new("Jacquard Loom", "machine", "punched cards"),
    new("Menabrea", "person", "wrote the paper"),
]
FIRST_RELATIONS = [
    link("Ada", "works with", "Babbage"),
    link("Babbage", "built", "Engine"),
    link("Babbage", "designed", "Difference Engine"),
    link("Jacquard Loom", "inspired", "Engine"),
    link("Menabrea", "described", "Engine"),
    link("Ada", "translated", "Menabrea"),
    link("Ada", "wrote notes on", "Engine"),
]


def first_memory(server: MemoryServer) -> None:
    server.create_entities(FIRST_ENTITIES)
    server.create_relations(FIRST_RELATIONS)


def first_graph() -> Graph:
    entities = {value["name"]: (value["entityType"], frozenset(value["observations"]))
                for value in FIRST_ENTITIES}  # fmt: skip
    relations = frozenset((value["from"], value["relationType"], value["to"])
                          for value in FIRST_RELATIONS)  # fmt: skip
    return entities, relations


# --- three machines converge ------------------------------------------------------


def laptop_edits(server: MemoryServer) -> None:
    server.create_entities([new("Grace", "person", "wrote a compiler"),
                            new("Hopper", "person", "found a bug")])  # fmt: skip
    server.add_observations([observe("Ada", "first programmer")])
    server.create_relations(
        [link("Grace", "admires", "Ada"), link("Hopper", "worked with", "Grace")]
    )
    server.delete_observations([forget("Ada", "likes tea")])
    server.delete_entities(["Jacquard Loom"])  # and its relation to Engine
    server.delete_relations([link("Ada", "works with", "Babbage")])


def desktop_edits(server: MemoryServer) -> None:
    server.create_entities([new("Turing", "person", "broke codes"), new("Enigma", "machine")])
    server.add_observations([observe("Babbage", "lucasian professor"), observe("Enigma", "rotors")])
    server.create_relations([link("Turing", "broke", "Enigma"), link("Turing", "read", "Ada")])
    server.delete_observations([forget("Engine", "analytical")])
    server.delete_entities(["Difference Engine"])  # and Babbage's relation to it
    server.delete_relations([link("Babbage", "built", "Engine")])


def runner_edits(server: MemoryServer) -> None:
    server.create_entities([new("Build Bot", "machine", "runs the tests")])
    # The same observation as the laptop's, added concurrently: it must appear once.
    server.add_observations([observe("Engine", "never finished"),
                             observe("Ada", "first programmer")])  # fmt: skip
    server.create_relations([link("Build Bot", "tests", "Engine")])
    server.delete_observations([forget("Ada", "writes code")])
    server.delete_entities(["Menabrea"])  # and both relations to it
    server.delete_relations([link("Ada", "wrote notes on", "Engine")])
    # Created and deleted between two backups: the others never see it.
    server.create_entities([new("Scratch", "note", "temporary")])
    server.delete_entities(["Scratch"])


CONVERGED: Graph = (
    {
        "Ada": ("person", frozenset({"first programmer"})),
        "Babbage": ("person", frozenset({"builds engines", "lucasian professor"})),
        "Engine": ("machine", frozenset({"never finished"})),
        "Grace": ("person", frozenset({"wrote a compiler"})),
        "Hopper": ("person", frozenset({"found a bug"})),
        "Turing": ("person", frozenset({"broke codes"})),
        "Enigma": ("machine", frozenset({"rotors"})),
        "Build Bot": ("machine", frozenset({"runs the tests"})),
    },
    frozenset({
        ("Grace", "admires", "Ada"),
        ("Hopper", "worked with", "Grace"),
        ("Turing", "broke", "Enigma"),
        ("Turing", "read", "Ada"),
        ("Build Bot", "tests", "Engine"),
    }),
)  # fmt: skip


def test_three_machines_backing_up_at_once_converge_through_their_servers(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()  # the first backup: the remote was empty
    desktop, runner = (machine(tmp_path, remote, memory_server_factory, name)
                       for name in ("desktop", "ci-runner"))  # fmt: skip
    for joining in (desktop, runner):
        assert not joining.live.exists()
        joining.restore()  # a new machine's first command
        assert stat.S_IMODE(joining.live.stat().st_mode) == 0o600  # a new memory file is private
        assert joining.graph() == first_graph()

    # Each machine's agent works through its own server at the same time,
    # waiting for each reply (the server answers requests concurrently).
    edits = {laptop: laptop_edits, desktop: desktop_edits, runner: runner_edits}
    with ThreadPoolExecutor(max_workers=3) as pool:
        for done in [pool.submit(edit, each.server) for each, edit in edits.items()]:
            done.result()

    # All three back up at the same moment, as three processes.
    running = [subprocess.Popen([*gitrepo.CLI, "backup"], cwd=each.live.parent, env=each.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for each in edits]  # fmt: skip
    for each, process in zip(edits, running, strict=True):
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, f"{each.name}: exit {process.returncode}:\n{stderr!r}"

    for each in edits:
        each.restore()
    for each in edits:
        assert each.graph() == CONVERGED, each.name
    assert laptop.live.read_bytes() == desktop.live.read_bytes() == runner.live.read_bytes()
    assert remote_graph(remote) == CONVERGED
    for name in CONVERGED[0]:  # the repository holds who last wrote what, and when
        assert stamp(remote_record(remote, name)).host in {"laptop", "desktop", "ci-runner"}


# --- the last-sync point ---------------------------------------------------------------


def test_a_machine_offline_for_rounds_gets_everything_and_deletes_only_what_it_deleted(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    desktop, travel = (machine(tmp_path, remote, memory_server_factory, name)
                       for name in ("desktop", "travel"))  # fmt: skip
    desktop.restore()
    travel.restore()

    # The travel laptop goes offline and works on its own.
    travel.server.create_entities([new("Offline note", "note", "written on a train")])
    travel.server.add_observations([observe("Babbage", "seen from the train")])
    travel.server.delete_entities(["Menabrea"])
    travel.server.delete_observations([forget("Ada", "likes tea")])

    # Meanwhile the others back up three times, with changes each time.
    for round_number in (1, 2, 3):
        laptop.server.create_entities([new(f"laptop {round_number}", "note")])
        desktop.server.create_entities([new(f"desktop {round_number}", "note")])
        desktop.server.create_relations([link(f"desktop {round_number}", "about", "Ada")])
        if round_number == 2:
            laptop.server.delete_entities(["Jacquard Loom"])  # travel still has it, unchanged
            desktop.server.add_observations([observe("Ada", "first programmer")])
        laptop.backup()
        desktop.backup()

    travel.backup()
    notes = {f"{name} {number}" for name in ("laptop", "desktop") for number in (1, 2, 3)}
    entities, relations = remote_graph(remote)
    assert notes <= entities.keys()  # not received by travel: not deleted by it
    assert "Offline note" in entities
    assert "Menabrea" not in entities  # travel's own deletion is applied
    assert ("Ada", "translated", "Menabrea") not in relations
    assert "Jacquard Loom" not in entities  # the laptop's deletion stays
    assert entities["Ada"][1] == {"writes code", "first programmer"}
    assert entities["Babbage"][1] == {"builds engines", "seen from the train"}
    assert {(f"desktop {n}", "about", "Ada") for n in (1, 2, 3)} <= relations

    for each in (laptop, desktop, travel):
        each.restore()
        assert each.graph() == (entities, relations), each.name


def test_a_machine_cloned_before_the_first_backup_joins_with_restore(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # Every machine cloned the empty remote when the team set it up; one backs up first.
    laptop, desktop = (machine(tmp_path, remote, memory_server_factory, name)
                       for name in ("laptop", "desktop"))  # fmt: skip
    first_memory(laptop.server)
    laptop.backup()
    desktop.restore()
    assert desktop.graph() == first_graph()


def test_restore_commits_nothing_of_the_clone_but_its_own_file(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # Found by review: a restore before any backup asked sync for "no paths",
    # which sync read as "every changed memory file", and pushed a stray one.
    laptop, desktop = (machine(tmp_path, remote, memory_server_factory, name)
                       for name in ("laptop", "desktop"))  # fmt: skip
    first_memory(laptop.server)
    laptop.backup()
    stray = gitrepo.jsonl(gitrepo.entity("Old notes"))
    gitrepo.write(desktop.clone, "memory-old.jsonl", stray)
    desktop.restore()
    assert desktop.graph() == first_graph()
    listed = gitrepo.git(remote, "ls-tree", "--name-only", "main").split()
    assert "memory-old.jsonl" not in listed, listed
    assert (desktop.clone / "memory-old.jsonl").read_bytes() == stray  # left to its owner


@pytest.mark.parametrize("cloned", ["before the first push", "after the first push"])
def test_a_first_backup_of_memory_the_repository_never_saw_only_adds(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, cloned: str
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    early = cloned == "before the first push"
    newcomer = machine(tmp_path, remote, memory_server_factory, "newcomer") if early else None
    first_memory(laptop.server)
    laptop.backup()
    laptop.server.create_entities([new("Grace", "person", "wrote a compiler")])
    laptop.backup()
    newcomer = newcomer or machine(tmp_path, remote, memory_server_factory, "newcomer")
    before = remote_graph(remote)

    # The newcomer's server already holds memory of its own, never backed up,
    # lacking most of what the repository has.
    newcomer.server.create_entities([new("Ada", "mathematician", "wrote the first program"),
                                     new("Newcomer", "note", "arrived late")])  # fmt: skip
    newcomer.server.create_relations([link("Newcomer", "met", "Ada")])
    newcomer.backup()

    entities, relations = remote_graph(remote)
    assert before[0].keys() <= entities.keys(), "a first backup deleted entities"
    assert before[1] <= relations, "a first backup deleted relations"
    for name, (_, observations) in before[0].items():
        assert observations <= entities[name][1], name
    assert entities["Ada"][1] == {"likes tea", "writes code", "wrote the first program"}
    assert entities["Newcomer"] == ("note", frozenset({"arrived late"}))
    assert ("Newcomer", "met", "Ada") in relations
    assert newcomer.graph() == (entities, relations)  # and it got everything back
    laptop.restore()
    assert laptop.graph() == (entities, relations)


def test_a_first_backup_does_not_undo_a_type_change_the_repository_has(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    laptop.server.create_entities([new("Ada", "person", "writes code")])
    laptop.backup()
    laptop.server.delete_entities(["Ada"])
    laptop.server.create_entities([new("Ada", "engineer", "writes code")])
    laptop.backup()
    # A machine whose server holds an old copy of Ada backs up for the first time.
    newcomer = machine(tmp_path, remote, memory_server_factory, "newcomer")
    newcomer.server.create_entities([new("Ada", "person", "from an old copy")])

    newcomer.backup()

    assert remote_graph(remote)[0]["Ada"] == (
        "engineer",
        frozenset({"writes code", "from an old copy"}),
    )  # only added: an observation, not a type


# --- the compare-and-swap ---------------------------------------------------------------


class WriteWhenPushed(io.StringIO):
    """backup's log; the first time sync reports the push landed, the server writes.

    That moment is after backup read the live file and before it restores it:
    exactly the window in which an agent's tool call would be lost.
    """

    def __init__(self, server: MemoryServer) -> None:
        super().__init__()
        self.server = server
        self.wrote = False

    def write(self, text: str) -> int:
        if "synced:" in text and not self.wrote:
            self.wrote = True
            self.server.create_entities([new("Written meanwhile", "note", "during backup")])
        return super().write(text)


def test_a_server_write_during_backup_is_kept_and_backup_goes_round_again(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    desktop = machine(tmp_path, remote, memory_server_factory, "desktop")
    desktop.restore()
    desktop.server.create_entities([new("From desktop", "note")])
    desktop.backup()
    laptop.server.add_observations([observe("Ada", "before the backup")])

    log = WriteWhenPushed(laptop.server)
    result = backup(memory=laptop.live, repo=laptop.clone, host="laptop", log=log)

    assert log.wrote, f"sync never reported a landed push:\n{log.getvalue()}"
    assert result.rounds == 2, log.getvalue()
    assert "meanwhile; again, round 2" in log.getvalue()
    entities, _ = laptop.graph()
    assert entities["Written meanwhile"] == ("note", frozenset({"during backup"}))
    assert "before the backup" in entities["Ada"][1]
    assert "From desktop" in entities  # and the restore did happen, in round 2
    assert remote_graph(remote)[0] == entities
    assert gitrepo.git(laptop.clone, "rev-parse", "HEAD").strip() == result.commit


# --- the hybrid clock ---------------------------------------------------------------------

HOURS_BEHIND = 3 * 3600.0


def test_a_machine_whose_clock_is_hours_behind_still_gets_its_later_edit_in(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    a = machine(tmp_path, remote, memory_server_factory, "a")
    a.server.create_entities([new("X", "idea", "first thought")])
    a.backup()
    b = machine(tmp_path, remote, memory_server_factory, "b")
    restore(memory=b.live, repo=b.clone, log=io.StringIO())  # t0: b's last sync

    # a replaces X with another entityType (no tool changes a type in place).
    a.server.delete_entities(["X"])
    a.server.create_entities([new("X", "project", "first thought")])
    a.backup()
    a_stamp = stamp(remote_record(remote, "X"))
    assert a_stamp.host == "a"

    # Later, b (not restored since t0) replaces it again, with a clock 3 hours slow.
    b.server.delete_entities(["X"])
    b.server.create_entities([new("X", "task", "first thought")])
    skewed = time.time() - HOURS_BEHIND
    backup(memory=b.live, repo=b.clone, host="b", wall=lambda: time.time() - HOURS_BEHIND,
           log=io.StringIO())  # fmt: skip

    x = remote_record(remote, "X")
    assert x["entityType"] == "task"
    b_stamp = stamp(x)
    assert b_stamp.host == "b"
    assert b_stamp > a_stamp  # b saw a's stamp during backup and stamped after it
    assert b_stamp.micros > skewed * 1_000_000 + 3600 * 1_000_000  # not b's wall clock
    a.restore()
    for each in (a, b):
        assert each.graph()[0]["X"] == ("task", frozenset({"first thought"})), each.name


# --- errors and the live file's own properties --------------------------------------------


def test_a_missing_live_file_is_one_line_and_exit_2(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    one_line_error(laptop.run("backup"), ExitCode.USAGE, "does not exist")
    assert not laptop.live.exists()


def test_a_folder_given_as_the_live_file_is_named_a_folder(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # Found by review (2026-12-04): it said "does not exist" of a folder that does.
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    folder = tmp_path / "memories"
    folder.mkdir()
    for command in ("backup", "restore"):
        one_line_error(laptop.run(command, "--memory", str(folder)), ExitCode.USAGE,
                       f"memory file {folder} is a folder")  # fmt: skip


def test_a_repository_without_a_remote_is_one_line_and_exit_2(tmp_path: Path) -> None:
    lonely = gitrepo.init_repo(tmp_path / "lonely")
    live = tmp_path / "live" / MEMORY
    live.parent.mkdir()
    live.write_bytes(gitrepo.jsonl(gitrepo.entity("Ada")))
    env = {**os.environ, "MEMORY_FILE_PATH": str(live), "REPO_DIR": str(lonely)}
    result = gitrepo.cli("backup", cwd=tmp_path, env=env)
    one_line_error(result, ExitCode.USAGE, "has no remote")
    assert live.read_bytes() == gitrepo.jsonl(gitrepo.entity("Ada"))


def test_a_live_file_that_is_not_a_memory_file_is_refused_untouched(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    damaged = b"\n".join([b"<<<<<<< HEAD", gitrepo.entity("Ada"), b"=======",
                          gitrepo.entity("Ada", "person"), b">>>>>>> theirs"])  # fmt: skip
    laptop.live.write_bytes(damaged)
    pushed = gitrepo.git(remote, "rev-parse", "main")

    result = laptop.run("backup")

    error = one_line_error(result, ExitCode.USAGE, "not a memory file")
    assert error.count(str(laptop.live)) == 1, error  # named once, with the line
    assert laptop.live.read_bytes() == damaged
    assert gitrepo.git(remote, "rev-parse", "main") == pushed


CASES = Path(__file__).parent / "cases"


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("knowledge-graph-aim-header", 'line 1: a record of type "_aim"'),  # its header
        ("think-tank-restamped-saves", 'line 1: entity "Ada" has no "type" field'),  # "_type"
        ("memory-graph-untagged", 'line 1: entity "Ada" has no "type" field'),
        ("single-object-lists", "line 1: one JSON object"),
        ("single-object-keyed", "line 1: one JSON object"),  # on one line, as iflow writes it
    ],
)
def test_another_writers_live_file_is_refused_untouched_by_backup_and_restore(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory,
    case: str, says: str,
) -> None:  # fmt: skip
    # Read as the server's file, such a file was backed up once and then never
    # again ("nothing new"), and restore wrote what its writer cannot load.
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    laptop.live.write_bytes(gitrepo.jsonl(gitrepo.entity("Ada")))
    laptop.backup()
    pushed = gitrepo.git(remote, "rev-parse", "main")
    theirs = (CASES / case / "base").read_bytes()
    laptop.live.write_bytes(theirs)
    for command in ("backup", "restore"):
        error = one_line_error(laptop.run(command), ExitCode.USAGE, says, alone=False)
        assert error.startswith(f"crdt-merge-driver: {laptop.live}, {says}: "), error
        assert "not the official memory server's format" in error, error
        assert laptop.live.read_bytes() == theirs
        assert gitrepo.git(remote, "rev-parse", "main") == pushed


def test_restore_over_a_live_file_that_is_not_a_memory_file_names_it(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    laptop.live.write_bytes(gitrepo.jsonl(gitrepo.entity("Ada")))
    laptop.backup()
    damaged = b"<<<<<<< HEAD\n" + gitrepo.entity("Ada")
    laptop.live.write_bytes(damaged)

    result = laptop.run("restore")

    assert result.returncode != 0
    error = result.stderr.decode().splitlines()[-1]  # after restore's sync lines
    assert str(laptop.live) in error, error  # as backup says "<file> is not a memory file"
    assert laptop.live.read_bytes() == damaged


def test_restore_refuses_to_overwrite_memory_never_backed_up(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    desktop = machine(tmp_path, remote, memory_server_factory, "desktop")
    desktop.server.create_entities([new("Only here", "note", "never backed up")])
    before = desktop.live.read_bytes()

    # restore syncs first (its progress lines come before the refusal).
    refusal = one_line_error(desktop.run("restore"), ExitCode.REFUSED, "not backed up", alone=False)
    assert "run `crdt-merge-driver backup`" in refusal
    assert desktop.live.read_bytes() == before
    desktop.backup()  # what the message says to do: it merges
    assert {"Only here", "Ada"} <= desktop.graph()[0].keys()

    # Once backed up, a restore is allowed again (and changes nothing here).
    desktop.restore()
    assert {"Only here", "Ada"} <= desktop.graph()[0].keys()


def test_no_restore_backs_up_and_leaves_the_live_file_alone(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    desktop = machine(tmp_path, remote, memory_server_factory, "desktop")
    desktop.restore()
    laptop.server.create_entities([new("From laptop", "note")])
    laptop.backup()
    desktop.server.create_entities([new("From desktop", "note")])
    before = desktop.live.read_bytes()
    modified = desktop.live.stat().st_mtime_ns

    desktop.backup("--no-restore")

    assert desktop.live.read_bytes() == before
    assert desktop.live.stat().st_mtime_ns == modified
    assert {"From laptop", "From desktop"} <= remote_graph(remote)[0].keys()
    desktop.backup()  # the next backup brings the laptop's entity back, and loses nothing
    assert {"From laptop", "From desktop"} <= desktop.graph()[0].keys()


def test_the_live_file_keeps_its_mode_and_gets_the_servers_exact_format(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.live.chmod(0o600)
    laptop.backup()
    desktop = machine(tmp_path, remote, memory_server_factory, "desktop")
    assert stat.S_IMODE(laptop.live.stat().st_mode) == 0o600
    desktop.restore()
    desktop.server.create_entities([new("From desktop", "note", "é ☕")])
    desktop.backup()

    laptop.restore()
    assert stat.S_IMODE(laptop.live.stat().st_mode) == 0o600
    restored = laptop.live.read_bytes()
    assert b"_crdt" not in restored
    assert not restored.endswith(b"\n")
    assert b"_crdt" in remote_file(remote)  # the stamps live in the repository only

    # Byte for byte what the server itself writes: let a server save the same graph.
    copy = tmp_path / "copy" / MEMORY
    copy.parent.mkdir()
    copy.write_bytes(restored)
    server = memory_server_factory(copy)
    server.create_entities([new("Ada", "person")])  # skipped (it exists), but saved
    assert copy.read_bytes() == restored
    assert orjson.loads(restored.split(b"\n")[0]) == {"type": "entity", **FIRST_ENTITIES[0]}


# --- faults between two backups ---------------------------------------------------------


def test_a_deletion_after_a_failed_backup_is_still_a_deletion(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    laptop.server.create_entities([new("Draft", "note", "written offline")])
    away = remote.rename(tmp_path / "away.git")  # the network is down
    assert laptop.run("backup").returncode != 0
    away.rename(remote)
    laptop.server.delete_entities(["Draft"])  # the agent deletes it before the next backup

    laptop.backup()

    assert "Draft" not in remote_graph(remote)[0]
    assert "Draft" not in laptop.graph()[0]


def test_backup_leaves_a_merge_in_progress_in_the_clone_alone(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    # The clone is also someone's working copy, in the middle of resolving a conflict.
    gitrepo.commit_file(laptop.clone, "notes.txt", b"base\n")
    gitrepo.git(laptop.clone, "checkout", "--quiet", "-b", "side")
    gitrepo.commit_file(laptop.clone, "notes.txt", b"side\n")
    gitrepo.git(laptop.clone, "checkout", "--quiet", "main")
    gitrepo.commit_file(laptop.clone, "notes.txt", b"main\n")
    assert gitrepo.git_result(laptop.clone, "merge", "side").returncode != 0
    conflicted = (laptop.clone / "notes.txt").read_bytes()
    laptop.server.create_entities([new("Grace", "person")])

    result = laptop.run("backup")

    assert result.returncode != 0  # it cannot merge now; it must say so and touch nothing
    assert (laptop.clone / ".git" / "MERGE_HEAD").exists(), "the user's merge was aborted"
    assert (laptop.clone / "notes.txt").read_bytes() == conflicted


def test_a_backup_killed_during_its_rebase_is_recovered_by_the_next_backup(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    desktop = machine(tmp_path, remote, memory_server_factory, "desktop")
    desktop.restore()
    desktop.server.create_entities([new("From desktop", "note")])
    desktop.backup()
    # The state a backup killed in the middle of sync's rebase leaves: a local
    # commit, a rebase onto the remote stopped half-way, and sync's mark naming
    # a process that is gone.
    gitrepo.commit_file(laptop.clone, "notes.txt", b"a local commit\n")
    gitrepo.git(laptop.clone, "fetch", "--quiet", "origin")
    env = {**os.environ, "GIT_SEQUENCE_EDITOR": "sed -i 1ibreak"}
    subprocess.run(["git", "rebase", "--interactive", "origin/main"], cwd=laptop.clone, env=env,
                   capture_output=True, check=True)  # fmt: skip
    assert (laptop.clone / ".git" / "rebase-merge").is_dir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (laptop.clone / ".git" / REBASE_MARK).write_text(f"pid {gone.pid} pgid {gone.pid}\n")
    laptop.server.create_entities([new("After the kill", "note")])

    laptop.backup()

    assert not (laptop.clone / ".git" / "rebase-merge").exists()
    assert {"From desktop", "After the kill"} <= laptop.graph()[0].keys()
    assert {"From desktop", "After the kill"} <= remote_graph(remote)[0].keys()


def test_a_restore_the_server_overwrote_with_its_older_view_deletes_nothing(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # The race no lock can close: a tool call reads the live file, restore
    # replaces the file, the tool call saves its older view plus its own edit.
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    desktop = machine(tmp_path, remote, memory_server_factory, "desktop")
    first_memory(laptop.server)
    laptop.backup()
    desktop.restore()
    desktop.server.create_entities([new("From desktop", "note", "learned elsewhere")])
    desktop.backup()
    stale_view = laptop.live.read_bytes()  # what a tool call on the laptop read...
    laptop.backup()  # ...before this restore brought "From desktop"
    assert "From desktop" in laptop.graph()[0]
    own_edit = gitrepo.entity("Own edit", "note", ("saved by the slow tool call",))
    laptop.live.write_bytes(stale_view + b"\n" + own_edit)  # ...which then saves

    laptop.backup()

    entities = remote_graph(remote)[0]
    assert "From desktop" in entities  # not deleted: the laptop never saw it
    assert "Own edit" in entities
    assert {"From desktop", "Own edit"} <= laptop.graph()[0].keys()


@pytest.mark.parametrize("kind", ["symlink", "submodule"])
def test_a_memory_path_that_is_a_link_or_a_submodule_in_the_repository_is_named(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, kind: str
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    laptop.live.write_bytes(gitrepo.jsonl(gitrepo.entity("Ada")))
    clone = laptop.clone
    if kind == "symlink":  # a dotfiles manager committed the link, not the file
        gitrepo.write(clone, "real.jsonl", gitrepo.jsonl(gitrepo.entity("Ada")))
        (clone / MEMORY).symlink_to("real.jsonl")
        gitrepo.git(clone, "add", "real.jsonl", MEMORY)
    else:
        gitrepo.git(clone, "commit", "--quiet", "--allow-empty", "-m", "a commit to point at")
        head = gitrepo.head(clone)
        gitrepo.git(clone, "update-index", "--add", "--cacheinfo", f"160000,{head},{MEMORY}")
    gitrepo.git(clone, "commit", "--quiet", "-m", f"memory.jsonl as a {kind}")
    gitrepo.git(clone, "push", "--quiet", "origin", "HEAD")
    pushed = gitrepo.git(remote, "rev-parse", "main")
    live = laptop.live.read_bytes()
    for command in ("backup", "restore"):
        said = "a symbolic link" if kind == "symlink" else "a submodule, not a file"
        error = one_line_error(laptop.run(command), ExitCode.USAGE, said, alone=False)
        assert f"{MEMORY} in {clone} (HEAD) is {said}" in error, error
        assert "--as PATH" in error
        assert laptop.live.read_bytes() == live
        assert gitrepo.git(remote, "rev-parse", "main") == pushed


def test_an_emptied_live_file_is_not_backed_up_and_restore_brings_the_memory_back(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # A new or reset server, a truncated file: backed up, it would delete
    # everyone's memory; committed and refused at the push, it left this
    # machine stuck with a deletion every later run tried to push again.
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    pushed = gitrepo.git(remote, "rev-parse", "main")
    head = gitrepo.head(laptop.clone)
    laptop.live.write_bytes(b"")

    error = one_line_error(laptop.run("backup"), ExitCode.REFUSED, "holds 0 of the 13 records")
    assert "nothing backed up or changed" in error and "`crdt-merge-driver restore`" in error
    assert laptop.live.read_bytes() == b""
    assert gitrepo.head(laptop.clone) == head  # no commit of the deletion
    assert gitrepo.git(remote, "rev-parse", "main") == pushed

    laptop.restore()
    assert laptop.graph() == first_graph()
    laptop.backup()  # and backups go on
    assert gitrepo.git(remote, "rev-parse", "main") == pushed


def test_a_live_file_that_lost_most_records_is_refused_and_restore_brings_them_back(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    pushed = gitrepo.git(remote, "rev-parse", "main")
    kept = laptop.live.read_bytes().split(b"\n")[:2]  # a bad edit kept two lines
    laptop.live.write_bytes(b"\n".join(kept))

    one_line_error(laptop.run("backup"), ExitCode.REFUSED, "holds 2 of the 13 records")
    assert gitrepo.git(remote, "rev-parse", "main") == pushed
    laptop.restore()  # the live file holds nothing the last sync lacks: restore loses nothing
    assert laptop.graph() == first_graph()


def test_deleting_one_entity_of_a_small_memory_is_backed_up(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # Found by review (2026-12-04): 2 entities and a relation; deleting one entity takes the
    # relation too, 2 of the 3 records, "more than half": backup refused and said restore,
    # restore refused (a new observation) and said backup. The machine was stuck.
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    laptop.server.create_entities([new("Ada", "person"), new("Babbage", "person")])
    laptop.server.create_relations([link("Ada", "knows", "Babbage")])
    laptop.backup()
    laptop.server.delete_entities(["Babbage"])
    laptop.server.add_observations([observe("Ada", "writes code")])
    laptop.backup()
    assert remote_graph(remote) == ({"Ada": ("person", frozenset({"writes code"}))}, frozenset())


def test_a_mass_deletion_beside_other_changes_names_the_way_back(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    kept = list(first_graph()[0])[:1]
    laptop.server.delete_entities([name for name in first_graph()[0] if name not in kept])
    laptop.server.add_observations([observe(kept[0], "a new fact")])
    error = one_line_error(laptop.run("backup"), ExitCode.REFUSED, "more than half")
    assert "`restore` would undo" in error and "--allow-mass-delete" in error
    assert laptop.run("restore").returncode == ExitCode.REFUSED  # as the message says


def test_a_meant_mass_deletion_is_backed_up_with_allow_mass_delete(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    laptop.live.write_bytes(b"")
    laptop.backup("--allow-mass-delete")
    assert remote_graph(remote) == ({}, frozenset())
    assert laptop.live.read_bytes() == b""


def failed_push(tmp_path: Path, remote: Path, start: ServerFactory) -> tuple[Machine, Path]:
    """A machine whose backup of a change could not push: the remote is away, moved here."""
    laptop = machine(tmp_path, remote, start, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    laptop.server.add_observations([observe("Ada", "found a bug")])
    away = tmp_path / "away.git"
    remote.rename(away)  # the remote gone while the change is backed up
    assert laptop.run("backup").returncode == ExitCode.GIT
    return laptop, away


def test_a_backup_that_pushes_what_an_earlier_run_left_says_so(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop, away = failed_push(tmp_path, remote, memory_server_factory)
    away.rename(remote)

    result = laptop.run("backup")  # nothing new in the live file since; the commit waits
    ok(result)
    [line] = gitrepo.unstamped(result.stderr.decode()).splitlines()
    assert line.startswith(f"crdt-merge-driver: nothing new in {laptop.live}"), line
    assert line.endswith("; pushed 1 commit an earlier run left"), line
    assert "found a bug" in remote_graph(remote)[0]["Ada"][1]


def test_a_backup_that_cannot_push_what_an_earlier_run_left_fails(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # Found by review (2026-12-04): the second run saw nothing new in the live file and
    # exited 0, "nothing new", though the first run's commit had never left the machine.
    laptop, away = failed_push(tmp_path, remote, memory_server_factory)
    before = laptop.live.stat()
    again = laptop.run("backup")
    assert again.returncode == ExitCode.GIT, again.stderr
    assert laptop.live.stat().st_mtime_ns == before.st_mtime_ns  # the live file left alone
    away.rename(remote)
    ok(laptop.run("backup"))
    assert "found a bug" in remote_graph(remote)[0]["Ada"][1]


# --- round trips ------------------------------------------------------------------------


def traced(laptop: Machine, *args: str) -> tuple[subprocess.CompletedProcess[bytes], list[str]]:
    """``laptop.run(args)`` with git's own trace: the git commands run, in order."""
    trace = laptop.live.parent / "git-trace"
    trace.unlink(missing_ok=True)
    result = gitrepo.cli(*args, cwd=laptop.live.parent,
                         env={**laptop.env(), "GIT_TRACE": str(trace)})  # fmt: skip
    built_in = [line.split("trace: built-in: ", 1)[1] for line in trace.read_text().splitlines()
                if "trace: built-in: " in line]  # fmt: skip
    return result, built_in


def test_a_backup_of_one_change_fetches_once_and_pushes_once(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    laptop.server.add_observations([observe("Ada", "one change")])

    result, commands = traced(laptop, "backup")

    ok(result)
    assert len([line for line in commands if line.startswith("git fetch")]) == 1, commands
    assert len([line for line in commands if line.startswith("git push")]) == 1, commands
    assert "one change" in orjson.dumps(remote_record(remote, "Ada")).decode()


def test_a_push_landing_between_the_backups_fetch_and_its_push_costs_one_more_attempt(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    desktop = machine(tmp_path, remote, memory_server_factory, "desktop")
    desktop.restore()
    desktop.server.create_entities([new("From desktop", "note", "pushed meanwhile")])
    laptop.server.add_observations([observe("Ada", "from the laptop")])
    # The laptop's backup merges its own commit after its fetch and before its push:
    # there, once, the desktop's backup lands (a hook, so exactly in that window).
    hook = laptop.clone / ".git" / "hooks" / "post-merge"
    once = laptop.clone / ".git" / "desktop-pushes-once"
    once.touch()
    hook.write_text(
        "#!/bin/sh\n"
        f"[ -e {once} ] || exit 0\n"
        f"rm {once}\n"
        "unset GIT_DIR GIT_INDEX_FILE GIT_WORK_TREE GIT_PREFIX\n"
        f"MEMORY_FILE_PATH={desktop.live} REPO_DIR={desktop.clone} CRDT_MERGE_DRIVER_HOST=desktop"
        f" {' '.join(gitrepo.CLI)} backup -q >{tmp_path / 'desktop.log'} 2>&1\n"
    )
    hook.chmod(0o755)

    result = laptop.run("backup", "-v")

    ok(result)
    assert not once.exists(), "the hook never ran: the window was not reached"
    said = result.stderr.decode()
    assert "sync attempt 1" in said and "sync attempt 2: pushed" in said, said
    entities, _ = remote_graph(remote)
    assert "From desktop" in entities and "from the laptop" in entities["Ada"][1]
    assert "From desktop" in laptop.graph()[0]  # and the restore brought it


def test_after_waiting_out_a_busy_machine_the_first_attempt_fetches_again(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # A busy machine makes sync wait before its first attempt, in the queue: the fetch
    # backup made before that is stale by then, and does not show the queue's own ref
    # (found by review: the sync took its ref for gone and turned the queue off).
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    first_memory(laptop.server)
    laptop.backup()
    laptop.server.add_observations([observe("Ada", "on a busy machine")])
    monkeypatch.setattr(sync_module, "WAIT_CROWD_FROM", 0.0)
    monkeypatch.setattr(sync_module, "_cpu_seconds", lambda: 0.0)  # all of it waiting for a CPU
    trace = tmp_path / "git-trace"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    log = io.StringIO()

    backup(memory=laptop.live, repo=laptop.clone, host="laptop", log=log, sleep=lambda _: None)

    said = log.getvalue()
    assert "this machine is busy" in said and "sync attempt 1: pushed" in said, said
    assert "left the queue" not in said, said
    fetches = [line for line in trace.read_text().splitlines() if "built-in: git fetch" in line]
    assert len(fetches) == 2, fetches  # backup's own, and the first attempt's after the wait
    assert "on a busy machine" in orjson.dumps(remote_record(remote, "Ada")).decode()
