"""``setup`` on two simulated machines, and the schedules it writes, with the real tools.

Each machine has its own HOME and XDG folders and a live file written by its
own real memory server; one bare remote starts empty. Setup runs as a
separate process, as a user would run it. The crontab tests use the real
`crontab` (Debian's cron package) on this user's real crontab, saved before
and put back byte for byte after each test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest

from crdt_merge_driver import schedule
from crdt_merge_driver.errors import ExitCode
from tests import gitrepo
from tests.memory_server import MemoryServer, ServerFactory
from tests.test_backup import first_graph, first_memory, server_graph


@dataclass(eq=False)
class Machine:
    home: Path
    live: Path
    start: ServerFactory

    @cached_property
    def server(self) -> MemoryServer:
        return self.start(self.live)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "XDG_DATA_HOME": str(self.home / "data"),
            "XDG_STATE_HOME": str(self.home / "state"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "MEMORY_FILE_PATH": str(self.live),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return gitrepo.cli(*args, cwd=self.home, env=self.env())

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr.decode()}"
        return result.stderr.decode()

    @property
    def clone(self) -> Path:
        return self.home / "data" / "crdt-merge-driver" / "remote"


def machine(tmp_path: Path, start: ServerFactory, name: str) -> Machine:
    home = tmp_path / name
    (home / "live").mkdir(parents=True)
    return Machine(home, home / "live" / "memory.jsonl", start)


def remote_log(remote: Path) -> list[str]:
    result = gitrepo.git_result(remote, "rev-list", "--all")
    return result.stdout.split()


def read_crontab() -> bytes | None:
    listed = subprocess.run(["crontab", "-l"], capture_output=True, check=False)
    return listed.stdout if listed.returncode == 0 else None


def test_two_machines_join_an_empty_remote_with_setup(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop, server = (machine(tmp_path, memory_server_factory, name) for name in ("a", "b"))
    first_memory(laptop.server)
    said = laptop.ok("setup", str(remote), "--schedule", "none")
    assert "status --repo" in said.splitlines()[-1], said
    assert "memory.jsonl" in gitrepo.git(remote, "ls-tree", "--name-only", "main")
    assert ".gitattributes" in gitrepo.git(remote, "ls-tree", "--name-only", "main")

    assert not server.live.exists()
    server.ok("setup", str(remote), "--schedule", "none")
    assert server_graph(server.server) == first_graph() == server_graph(laptop.server)
    for each in (laptop, server):
        each.ok("doctor", "--repo", str(each.clone))

    commits = remote_log(remote)
    for each in (laptop, server):
        again = each.ok("setup", str(remote), "--schedule", "none")
        assert "in sync already" in again, again
        assert "using the existing clone" in again
        assert "from now on" not in again  # the same live file: nothing to say of it
    assert remote_log(remote) == commits  # setup again commits and pushes nothing

    # Run again with another live file (a relative path from another folder, say): said.
    moved = server.live.with_name("other.jsonl")
    again = server.ok("setup", str(remote), "--schedule", "none", "--memory", str(moved))
    assert f"was {server.live}; it is {moved} from now on" in again, again


def test_an_empty_remote_and_no_live_file_is_nothing_to_do_yet(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    lone = machine(tmp_path, memory_server_factory, "lone")
    said = lone.ok("setup", str(remote), "--schedule", "none")
    assert "nothing to bring together yet" in said
    assert not lone.live.exists()
    # The attributes are published all the same: the next machine finds them.
    assert gitrepo.git(remote, "ls-tree", "--name-only", "main").split() == [".gitattributes"]


def test_a_clone_made_while_the_remote_was_empty_publishes_the_attributes_only_once(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    early, late = (machine(tmp_path, memory_server_factory, name) for name in ("early", "late"))
    # Both clones exist before either pushes: each writes its own .gitattributes.
    for each in (early, late):
        gitrepo.clone(remote, each.clone)
        each.clone.parent.mkdir(parents=True, exist_ok=True)
    early.ok("setup", str(remote), "--schedule", "none")
    late.ok("setup", str(remote), "--schedule", "none")
    published = gitrepo.git(remote, "log", "--format=%s", "main", "--", ".gitattributes")
    assert len(published.splitlines()) == 1, published


def test_setup_refuses_a_folder_that_holds_something_else(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    lone = machine(tmp_path, memory_server_factory, "lone")
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"mine")
    result = lone.run("setup", str(remote), "--repo", str(folder), "--schedule", "none")
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert b"holds something else" in result.stderr
    assert (folder / "notes.txt").read_bytes() == b"mine"
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]

    other = gitrepo.init_bare(tmp_path / "other.git")
    lone.ok("setup", str(other), "--repo", str(tmp_path / "c"), "--schedule", "none")
    result = lone.run("setup", str(remote), "--repo", str(tmp_path / "c"), "--schedule", "none")
    assert result.returncode == ExitCode.USAGE
    assert b"is a clone of" in result.stderr


def test_setup_without_a_memory_file_says_to_pass_it(tmp_path: Path, remote: Path) -> None:
    env = {key: value for key, value in os.environ.items()
           if key not in ("MEMORY_FILE_PATH", "MEMORY_FILE")}  # fmt: skip
    result = gitrepo.cli("setup", str(remote), env=env, cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE
    assert b"pass --memory FILE" in result.stderr


@pytest.mark.parametrize(
    ("memory", "says"),
    [("nodir/memory.jsonl", "the folder of the memory file does not exist"),
     ("live", "is a folder: name the memory file in it")],
)  # fmt: skip
def test_a_bad_memory_path_is_refused_before_anything_is_cloned(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, memory: str, says: str
) -> None:
    lone = machine(tmp_path, memory_server_factory, "lone")
    result = lone.run("setup", str(remote), "--memory", str(lone.home / memory))
    assert result.returncode == ExitCode.USAGE
    [line] = result.stderr.decode().splitlines()
    assert says in line and str(lone.home / memory.split("/", maxsplit=1)[0]) in line, line
    assert not lone.clone.exists()  # no clone left behind


def test_cron_schedule_is_added_once_and_removed_byte_for_byte(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, crontab: bytes | None
) -> None:
    mine = b"# the user's own line, kept as it is\n0 3 * * * /bin/true\n"
    subprocess.run(["crontab", "-"], input=mine, check=True)
    lone = machine(tmp_path, memory_server_factory, "lone")
    first_memory(lone.server)
    lone.ok("setup", str(remote), "--schedule", "cron", "--every", "10")
    added = read_crontab()
    assert added is not None and added.startswith(mine)
    line = added[len(mine):].decode().splitlines()[1]
    assert line.startswith(f"*/10 * * * * {sys.executable} -E -P -m crdt_merge_driver backup")
    assert f"--repo {lone.clone}" in line and f"--memory {lone.live}" in line
    assert f"--log {lone.home / 'state' / 'crdt-merge-driver'}" in line

    said = lone.ok("setup", str(remote), "--schedule", "cron", "--every", "10")
    assert read_crontab() == added  # no second line
    assert "crontab already runs the backup every 10 minutes; unchanged" in said
    found = lone.run("status", "--repo", str(lone.clone), "--json").stdout
    assert b"*/10 * * * *" in found
    said = lone.ok("setup", str(remote), "--schedule", "cron", "--every", "20")
    assert "replaced this clone's line in your crontab with */20 * * * *" in said, said
    assert read_crontab() == added.replace(b"*/10 * * * *", b"*/20 * * * *")
    lone.ok("setup", str(remote), "--schedule", "cron", "--every", "10")

    lone.ok("setup", "--remove", str(remote))
    assert read_crontab() == mine
    assert lone.clone.is_dir() and lone.live.exists()


def test_cron_removal_deletes_a_crontab_setup_created(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, crontab: bytes | None
) -> None:
    subprocess.run(["crontab", "-r"], capture_output=True, check=False)
    lone = machine(tmp_path, memory_server_factory, "lone")
    lone.ok("setup", str(remote), "--schedule", "auto")  # no systemd here: cron
    assert read_crontab() is not None
    lone.ok("setup", "--remove", "--repo", str(lone.clone))
    assert read_crontab() is None
    said = lone.ok("setup", "--remove", "--repo", str(lone.clone))
    assert "no schedule of this clone's to remove" in said


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: the units are not verified")
    entry = schedule.Entry("0123456789ab", [sys.executable, "-c", "print('100% $HOME')"], 15,
                           tmp_path / "backup.log")  # fmt: skip
    for name, data in schedule.units(entry).items():
        (tmp_path / name).write_bytes(data)
    names = sorted(str(tmp_path / name) for name in schedule.units(entry))
    result = subprocess.run([analyze, "verify", *names], capture_output=True, text=True,
                            check=False, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "%%" in (tmp_path / "crdt-merge-driver-backup-0123456789ab.service").read_text()


def test_systemd_where_there_is_no_user_manager_is_one_clear_line(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    if schedule.systemd_works():
        pytest.skip("this machine has a systemd user manager: the refusal cannot be shown")
    lone = machine(tmp_path, memory_server_factory, "lone")
    result = lone.run("setup", str(remote), "--schedule", "systemd")
    assert result.returncode == ExitCode.USAGE
    assert b"systemctl --user` does not work here" in result.stderr
    assert not lone.clone.exists()  # refused before anything was done


def test_cron_timing_takes_minutes_or_whole_hours() -> None:
    assert schedule.cron_timing(15) == "*/15 * * * *"
    assert schedule.cron_timing(120) == "0 */2 * * *"
    assert schedule.cron_timing(1440) == "0 0 * * *"
    with pytest.raises(schedule.ScheduleError, match="whole hours"):
        schedule.cron_timing(90)
