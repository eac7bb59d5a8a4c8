"""``status`` and ``status --json`` in each state a machine can be in (real server, real git)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from crdt_merge_driver import schedule
from crdt_merge_driver.errors import ExitCode
from tests import gitrepo
from tests.memory_server import ServerFactory
from tests.test_backup import first_memory, new
from tests.test_setup import Machine, machine


def status(each: Machine, *args: str) -> tuple[int, dict[str, Any], str]:
    """The exit code, the --json object and the plain lines of one state."""
    found = each.run("status", "--repo", str(each.clone), "--json", *args)
    plain = each.run("status", "--repo", str(each.clone), *args)
    assert found.returncode == plain.returncode, plain.stderr
    assert not found.stderr and not plain.stderr, found.stderr + plain.stderr  # no traceback
    return found.returncode, json.loads(found.stdout), plain.stdout.decode()


def joined(tmp_path: Path, remote: Path, start: ServerFactory) -> tuple[Machine, Machine]:
    laptop, desk = (machine(tmp_path, start, name) for name in ("laptop", "desk"))
    first_memory(laptop.server)
    laptop.ok("setup", str(remote), "--schedule", "none")
    desk.ok("setup", str(remote), "--schedule", "none")
    return laptop, desk


def test_a_fresh_clone_with_a_live_file_has_local_changes(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    lone = machine(tmp_path, memory_server_factory, "lone")
    first_memory(lone.server)
    gitrepo.clone(remote, lone.clone)
    code, found, plain = status(lone)
    assert code == ExitCode.NOT_CONFIGURED  # install never ran here
    assert found["driver_ok"] is False and found["local_changes"] is True
    assert found["in_sync"] is False and found["remote_ahead"] is False
    assert found["last_backup"] is None and found["last_restore"] is None
    assert found["schedule"] is None
    assert "holds changes not backed up yet" in plain and "last backup: never" in plain


def test_in_sync_after_setup_then_each_change_shows(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop, desk = joined(tmp_path, remote, memory_server_factory)
    for each in (laptop, desk):
        code, found, plain = status(each)
        assert code == ExitCode.OK, plain
        assert found["in_sync"] is True and found["driver_ok"] is True
        assert found["local_changes"] is False and found["remote_ahead"] is False
        assert found["last_restore"] is not None and found["last_restore_commit"]
        assert plain.splitlines()[-1] == "in sync"
    assert status(laptop)[1]["last_backup"] is not None
    assert status(desk)[1]["last_backup"] is None  # it only restored

    # The server writes the laptop's live file: changes not backed up yet.
    laptop.server.create_entities([new("Grace", "person", "wrote a compiler")])
    code, found, plain = status(laptop)
    assert code == 1 and found["local_changes"] is True and found["in_sync"] is False
    assert "not in sync: run `crdt-merge-driver backup" in plain
    assert status(desk)[0] == ExitCode.OK  # the remote has not moved yet

    # The laptop backs up: the remote moved on for the desk.
    laptop.ok("backup", "--repo", str(laptop.clone))
    assert status(laptop)[0] == ExitCode.OK
    code, found, plain = status(desk)
    assert code == 1 and found["remote_ahead"] is True and found["local_changes"] is False
    assert "holds changes not restored here yet" in plain
    assert "not in sync: run `crdt-merge-driver restore" in plain  # nothing here to back up
    # Offline, the desk knows only the last fetch, which saw the move.
    assert status(desk, "--offline")[1]["remote_ahead"] is True
    desk.ok("backup", "--repo", str(desk.clone))
    assert status(desk)[0] == ExitCode.OK


def test_a_live_file_that_is_missing_lacks_what_the_remote_holds(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # A typo in the path, or a machine whose server never wrote: not "in sync".
    laptop, _ = joined(tmp_path, remote, memory_server_factory)
    code, found, plain = status(laptop, "--memory", str(tmp_path / "typo.jsonl"))
    assert code == 1 and found["in_sync"] is False and found["remote_ahead"] is True
    assert found["local_changes"] is False
    assert "typo.jsonl does not exist yet" in plain
    assert "not in sync: run `crdt-merge-driver restore" in plain


def test_a_broken_driver_is_exit_6_and_named(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop, _ = joined(tmp_path, remote, memory_server_factory)
    gitrepo.git(laptop.clone, "config", "merge.crdt-memory.driver", "/nowhere/python -I -m "
                "crdt_merge_driver merge %O %A %B %P")  # fmt: skip
    code, found, plain = status(laptop)
    assert code == ExitCode.NOT_CONFIGURED and found["driver_ok"] is False
    assert any("/nowhere/python" in problem for problem in found["driver_problems"])
    assert "driver: problem:" in plain


def test_an_unreachable_remote_is_one_clear_line(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop, _ = joined(tmp_path, remote, memory_server_factory)
    remote.rename(tmp_path / "gone.git")
    code, found, plain = status(laptop)
    assert code == 1 and found["remote_ahead"] is None and found["in_sync"] is False
    assert found["remote_error"]
    [line] = [line for line in plain.splitlines() if line.startswith("remote:")]
    assert "unreachable" in line and "Traceback" not in plain
    assert status(laptop, "--offline")[0] == ExitCode.OK  # no fetch: as of the last one


def test_a_commit_no_push_landed_is_not_in_sync(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # Found by review (2026-12-04): after a backup whose push failed, status said
    # "everything in it is backed up" and, the remote back, that the remote was ahead.
    laptop, _ = joined(tmp_path, remote, memory_server_factory)
    laptop.server.add_observations([{"entityName": "Ada", "contents": ["found a bug"]}])
    away = tmp_path / "away.git"
    remote.rename(away)
    assert laptop.run("backup", "--repo", str(laptop.clone)).returncode == ExitCode.GIT
    for args in (("--offline",), ()):
        if not args:
            away.rename(remote)
        code, found, plain = status(laptop, *args)
        assert code == ExitCode.CONFLICT and found["in_sync"] is False, plain
        assert found["unpushed"] == 1 and found["local_changes"] is False
        assert found["remote_ahead"] is False
        assert "1 commit not pushed yet" in plain
        assert plain.rstrip().endswith(f"run `crdt-merge-driver backup --repo {laptop.clone} "
                                       f"--memory {laptop.live}`")  # fmt: skip


def test_status_finds_the_clone_and_live_file_setup_made(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop, _ = joined(tmp_path, remote, memory_server_factory)
    env = {key: value for key, value in laptop.env().items() if key != "MEMORY_FILE_PATH"}
    result = gitrepo.cli("status", cwd=laptop.home, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"live file: {laptop.live}".encode() in result.stdout


def test_backup_and_restore_use_the_live_file_setup_noted(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop, _ = joined(tmp_path, remote, memory_server_factory)
    env = {key: value for key, value in laptop.env().items() if key != "MEMORY_FILE_PATH"}
    laptop.server.create_entities([new("Grace", "person", "wrote a compiler")])
    for command in ("backup", "restore"):
        result = gitrepo.cli(command, "--repo", str(laptop.clone), cwd=laptop.home, env=env)
        assert result.returncode == 0, result.stderr
        assert str(laptop.live).encode() in result.stderr
    assert "Grace" in gitrepo.graph((laptop.clone / "memory.jsonl").read_bytes())[0]
    laptop.ok("setup", "--remove", "--repo", str(laptop.clone))
    gone = gitrepo.cli("backup", "--repo", str(laptop.clone), cwd=laptop.home, env=env)
    assert gone.returncode == ExitCode.USAGE and b"which memory file?" in gone.stderr


def test_status_inside_another_projects_checkout_reports_the_memory_clone(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop, _ = joined(tmp_path, remote, memory_server_factory)
    project = tmp_path / "project"
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    env = {key: value for key, value in laptop.env().items() if key != "MEMORY_FILE_PATH"}
    result = gitrepo.cli("status", cwd=project, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"repository: {laptop.clone}".encode() in result.stdout
    inside = gitrepo.cli("status", cwd=laptop.clone, env=env)  # a memory clone counts
    assert f"repository: {laptop.clone}".encode() in inside.stdout, inside.stderr


def test_waiting_queue_entries_are_listed(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop, _ = joined(tmp_path, remote, memory_server_factory)
    head = gitrepo.head(laptop.clone)
    ref = "refs/crdt-merge-driver/pending/main/0000000000001.other.1.abcd"
    subprocess.run(["git", "push", "--quiet", "origin", f"{head}:{ref}"], cwd=laptop.clone,
                   check=True, capture_output=True)  # fmt: skip
    _, found, plain = status(laptop)
    assert found["waiting"] == [ref]
    assert f"waiting in the sync queue: {ref}" in plain


def test_no_schedule_names_the_setup_command_that_installs_one(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, crontab: bytes | None
) -> None:
    laptop = machine(tmp_path, memory_server_factory, "lap top")  # a path with a space
    first_memory(laptop.server)
    laptop.ok("setup", str(remote), "--schedule", "none")
    [line] = [line for line in status(laptop)[2].splitlines() if line.startswith("schedule:")]
    assert line.startswith("schedule: none; `") and line.endswith("` installs one"), line

    command = shlex.split(line.split("`")[1])
    assert command[:2] == ["crdt-merge-driver", "setup"], command
    laptop.ok(*command[1:])  # as the user copies it (the schedule: auto, so cron here)

    assert status(laptop)[1]["schedule"].startswith("crontab: ")


def test_a_systemd_unit_with_no_systemd_to_run_it_is_said_not_to_run(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop, _ = joined(tmp_path, remote, memory_server_factory)
    units = laptop.home / "config" / "systemd" / "user"
    units.mkdir(parents=True)
    (units / f"crdt-merge-driver-watch-{schedule.tag(laptop.clone)}.service").write_text(
        "[Service]\nExecStart=/bin/true\n"
    )
    if schedule.systemd_works():
        pytest.skip("a systemd user manager answers here: the unit would run")

    found = status(laptop)[1]["schedule"]

    assert "running watch" in found and "no systemd user manager here: it does not run" in found
