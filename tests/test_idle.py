"""Idle is a no-op: a backup with nothing new commits nothing, pushes nothing, writes nothing.

Users run `backup` from cron every few minutes for months; a run that found
nothing new must leave the remote, the clone's branch and the live file
exactly as they were, and say so in one line. Real git, the real memory
server, each backup a separate process (see tests/test_backup.py).
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from tests import gitrepo
from tests.memory_server import ServerFactory
from tests.test_backup import (
    Machine,
    first_graph,
    first_memory,
    machine,
    new,
    ok,
    remote_record,
    stamp,
)


def remote_commits(remote: Path) -> list[str]:
    return gitrepo.git_result(remote, "rev-list", "--all").stdout.split()


def summary(result: subprocess.CompletedProcess[bytes]) -> str:
    ok(result)
    lines = gitrepo.unstamped(result.stderr.decode()).splitlines()
    assert len(lines) == 1, lines  # the default level: the summary line alone
    return lines[0]


def backed_up(tmp_path: Path, remote: Path, start: ServerFactory, name: str = "laptop") -> Machine:
    laptop = machine(tmp_path, remote, start, name)
    first_memory(laptop.server)
    laptop.backup()
    return laptop


def resaved(live: Path, how: str) -> None:
    """The same graph, written the way another save (or another writer) might write it."""
    lines = live.read_bytes().splitlines()
    if how == "reordered":
        lines.reverse()
    elif how == "keys reordered, spaced":
        lines = [orjson.dumps(dict(reversed(orjson.loads(line).items()))).replace(b'":', b'": ')
                 for line in lines]  # fmt: skip
    data = b"\n".join(lines) + (b"\n" if how == "final newline" else b"")
    live.write_bytes(data)


def test_backups_in_a_row_with_nothing_new_leave_everything_as_it_was(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = backed_up(tmp_path, remote, memory_server_factory)
    commits = remote_commits(remote)
    head = gitrepo.git(laptop.clone, "rev-parse", "HEAD")
    live, modified = laptop.live.read_bytes(), laptop.live.stat().st_mtime_ns

    for _ in range(3):
        said = summary(laptop.run("backup"))
        assert said.startswith("crdt-merge-driver: nothing new in "), said
        assert f"since {head[:12]}" in said

    assert remote_commits(remote) == commits
    assert gitrepo.git(laptop.clone, "rev-parse", "HEAD") == head
    assert laptop.live.read_bytes() == live
    assert laptop.live.stat().st_mtime_ns == modified  # not even rewritten with the same bytes


@pytest.mark.parametrize("how", ["reordered", "final newline", "keys reordered, spaced"])
def test_the_same_graph_saved_another_way_adds_no_commit(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, how: str
) -> None:
    laptop = backed_up(tmp_path, remote, memory_server_factory)
    commits = remote_commits(remote)
    resaved(laptop.live, how)
    written = laptop.live.read_bytes()

    assert "nothing new" in summary(laptop.run("backup"))

    assert remote_commits(remote) == commits
    assert laptop.live.read_bytes() == written  # the server reads it as it is: left alone
    assert laptop.graph() == first_graph()


def test_a_real_change_after_idle_runs_lands_with_a_stamp_on_the_changed_record_only(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = backed_up(tmp_path, remote, memory_server_factory)
    before = {name: remote_record(remote, name) for name in ("Ada", "Babbage")}
    laptop.backup()
    laptop.server.create_entities([new("Grace", "person", "wrote a compiler")])
    laptop.server.add_observations([{"entityName": "Ada", "contents": ["first programmer"]}])

    said = summary(laptop.run("backup"))

    assert said.startswith("crdt-merge-driver: backed up and restored"), said
    assert "Grace" in orjson.dumps(remote_record(remote, "Grace")).decode()
    assert stamp(remote_record(remote, "Grace")).host == "laptop"
    # An observation is no scalar change: Ada keeps her stamp; Babbage, untouched, too.
    assert remote_record(remote, "Ada")["_crdt"] == before["Ada"]["_crdt"]
    assert remote_record(remote, "Babbage") == before["Babbage"]


def test_an_idle_backup_still_restores_what_another_machine_pushed(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = backed_up(tmp_path, remote, memory_server_factory)
    desktop = machine(tmp_path, remote, memory_server_factory, "desktop")
    desktop.restore()
    desktop.server.create_entities([new("Turing", "person", "broke codes")])
    desktop.backup()
    commits = remote_commits(remote)

    said = summary(laptop.run("backup"))

    assert "nothing new in " in said and "restored" in said, said
    assert remote_commits(remote) == commits  # the laptop had nothing to add
    assert "Turing" in laptop.graph()[0]


def test_an_idle_sync_commits_and_pushes_nothing(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = backed_up(tmp_path, remote, memory_server_factory)
    commits = remote_commits(remote)
    head = gitrepo.git(laptop.clone, "rev-parse", "HEAD")

    said = summary(gitrepo.cli("sync", cwd=laptop.clone))

    assert "nothing to push" in said, said
    assert remote_commits(remote) == commits
    assert gitrepo.git(laptop.clone, "rev-parse", "HEAD") == head


def test_an_idle_backup_with_the_remote_unreachable_says_so_and_succeeds(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = backed_up(tmp_path, remote, memory_server_factory)
    gitrepo.git(laptop.clone, "remote", "set-url", "origin", str(tmp_path / "gone.git"))

    result = laptop.run("backup")

    ok(result)
    lines = gitrepo.unstamped(result.stderr.decode()).splitlines()
    assert any(line.startswith("crdt-merge-driver: warning: could not fetch") for line in lines)
    assert "nothing new in " in lines[-1]


def test_three_machines_backing_up_for_a_while_commit_only_their_changes(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = backed_up(tmp_path, remote, memory_server_factory)
    others = [machine(tmp_path, remote, memory_server_factory, name) for name in ("desk", "ci")]
    for each in others:
        each.restore()
    everyone = [laptop, *others]
    start = len(remote_commits(remote))
    changes = 0
    with ThreadPoolExecutor(max_workers=3) as pool:
        for round_number in range(4):
            # Now and then one machine's agent learns something; the rest is idle.
            if round_number % 2 == 0:
                writer = everyone[round_number % 3]
                writer.server.create_entities([new(f"Note {round_number}", "note")])
                changes += 1
            runs = [pool.submit(each.run, "backup") for each in everyone]
            for done in runs:
                ok(done.result())
    # A backup that carried a change adds its own commit and, where others
    # moved meanwhile, one merge; an idle one adds none. Each change here was
    # the only one in its round, so: its commit and, at most, one merge.
    added = len(remote_commits(remote)) - start
    assert changes <= added <= 2 * changes, (changes, added)
    for each in everyone:
        each.backup()
    names = {f"Note {number}" for number in (0, 2)}
    for each in everyone:
        assert names <= each.graph()[0].keys(), each.name


def test_an_idle_backup_leaves_the_clones_last_sync_ref_and_reflog_alone(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = backed_up(tmp_path, remote, memory_server_factory)
    refs = gitrepo.git(laptop.clone, "for-each-ref", "refs/crdt-merge-driver/")
    logs = laptop.clone / ".git" / "logs"
    before = {path: path.read_bytes() for path in logs.rglob("*") if path.is_file()}

    ok(laptop.run("backup"))

    assert gitrepo.git(laptop.clone, "for-each-ref", "refs/crdt-merge-driver/") == refs
    assert {path: path.read_bytes() for path in logs.rglob("*") if path.is_file()} == before


def test_an_idle_backup_imports_nothing_that_reads_memory_files(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # A third of an idle run's time was importing what parses memory files
    # (orjson under it); an idle run parses none (docs/benchmarks.md).
    laptop = backed_up(tmp_path, remote, memory_server_factory)
    laptop.backup()  # notes the bytes it synced

    result = gitrepo.cli("backup", cwd=laptop.live.parent,
                         env={**laptop.env(), "PYTHONPROFILEIMPORTTIME": "1"})  # fmt: skip

    ok(result)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.decode().splitlines()
                if line.startswith("import time:")}  # fmt: skip
    assert "crdt_merge_driver.backup" in imported  # the trace is there
    heavy = {"orjson", "crdt_merge_driver.core.live", "crdt_merge_driver.core.merge",
             "crdt_merge_driver.versions", "crdt_merge_driver.sync.landing"}  # fmt: skip
    assert not imported & heavy
