"""``watch`` on machines that share one bare remote, with real processes throughout.

Each machine is a live file in a folder of its own, the real memory server
over it (driven over stdio), a clone of the one bare remote, and a watcher:
``python -m crdt_merge_driver watch --interval 1 --debounce 0.2`` in a
session of its own, its stderr in a file the test reads. Every wait polls
with a deadline, so a broken watcher fails the test in seconds.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TextIO, cast

import pytest

from crdt_merge_driver import schedule
from crdt_merge_driver.errors import ExitCode
from crdt_merge_driver.log import Level, Log
from crdt_merge_driver.sync.clone import Clone
from crdt_merge_driver.sync.lock import LOCK as SYNC_LOCK
from crdt_merge_driver.sync.lock import lock as sync_lock
from crdt_merge_driver.watch import LOCK, Stopped, Watcher
from tests import gitrepo
from tests.memory_server import Entity, MemoryServer, ServerFactory
from tests.test_backup import Graph, server_graph

WATCH = ("watch", "--interval", "1", "--debounce", "0.2")
TIMEOUT = 30.0  # seconds for anything a watcher should do in one or two


def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g}s: {what}"
        time.sleep(0.05)


@dataclass(eq=False)
class Machine:
    name: str
    live: Path
    clone: Path
    start: ServerFactory
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @cached_property
    def server(self) -> MemoryServer:
        return self.start(self.live)

    def env(self) -> dict[str, str]:
        return {**os.environ, "MEMORY_FILE_PATH": str(self.live), "REPO_DIR": str(self.clone),
                "CRDT_MERGE_DRIVER_HOST": self.name}  # fmt: skip

    def watch(self) -> subprocess.Popen[bytes]:
        """Start a watcher, in its own session (so kill -9 takes its git with it)."""
        with self.logs.open("ab") as stderr:
            process = subprocess.Popen(
                [*gitrepo.CLI, *WATCH], cwd=self.live.parent, env=self.env(),
                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)
        return process

    def said(self) -> str:
        return self.logs.read_text() if self.logs.exists() else ""

    def watching(self) -> subprocess.Popen[bytes]:
        """A watcher that has finished its first step."""
        before = self.said().count("watching ")
        process = self.watch()
        wait_until(lambda: self.said().count("watching ") > before, f"{self.name} watches")
        return process

    def graph(self) -> Graph:
        return server_graph(self.server)

    def has(self, name: str) -> bool:
        return name in self.graph()[0]

    def sees(self, *names: str) -> Callable[[], bool]:
        """A check for `wait_until`: this machine's server knows every one of ``names``."""
        return lambda: all(self.has(name) for name in names)

    def says(self, text: str) -> Callable[[], bool]:
        return lambda: text in self.said()

    def run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return gitrepo.cli(*args, cwd=self.live.parent, env=self.env())


def entity(name: str, *observations: str) -> Entity:
    return {"name": name, "entityType": "thing", "observations": list(observations)}


@pytest.fixture
def make(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> Iterator[Callable[[str], Machine]]:
    """``make(name)``: a machine on ``remote``; every watcher is stopped after the test."""
    made: list[Machine] = []

    def new(name: str) -> Machine:
        folder = tmp_path / f"{name}-live"
        folder.mkdir()
        clone = gitrepo.clone(remote, tmp_path / f"{name}-clone")
        one = Machine(name, folder / "memory.jsonl", clone, memory_server_factory,
                      tmp_path / f"{name}-watch.log")  # fmt: skip
        made.append(one)
        return one

    yield new
    # SIGTERM first: a watcher that exits normally saves its coverage data.
    running = [process for one in made for process in one.processes if process.poll() is None]
    for process in running:
        process.terminate()
    for process in running:
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _holds(one: Machine, wanted: Graph) -> bool:
    return one.graph() == wanted


def remote_tip(remote: Path) -> str:
    return gitrepo.git(remote, "rev-parse", "--verify", "--quiet", "main", check=False).strip()


def steady(machines: list[Machine], remote: Path) -> tuple[object, ...]:
    """What an idle watcher must not change: the remote, each clone's refs, file and log."""
    return (remote_tip(remote),
            *(gitrepo.git(one.clone, "for-each-ref").strip() for one in machines),
            *(one.live.stat().st_mtime_ns for one in machines),
            *(one.said() for one in machines))  # fmt: skip


def test_an_entity_reaches_the_other_machines_and_idle_changes_nothing(
    make: Callable[[str], Machine], remote: Path
) -> None:
    machines = [make(name) for name in ("laptop", "server", "runner")]
    for one in machines:
        one.watching()
    laptop, *others = machines

    laptop.server.create_entities([entity("Ada", "wrote the first program")])
    for other in others:
        wait_until(other.sees("Ada"), f"Ada in {other.name}'s read_graph")
    assert all(one.graph()[0]["Ada"][1] == {"wrote the first program"} for one in machines)

    # Idle: once settled, three intervals add no commit, move no ref, write no file or line.
    state = steady(machines, remote)
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 1.5:  # settled: nothing moved for 1.5 s
        if (now := steady(machines, remote)) != state:
            state, quiet_since = now, time.monotonic()
        time.sleep(0.1)
    commits = gitrepo.git(remote, "rev-list", "--count", "main")
    time.sleep(3.0)  # three probes of the remote: the very thing under test is that nothing comes
    assert steady(machines, remote) == state
    assert gitrepo.git(remote, "rev-list", "--count", "main") == commits
    for one in machines:
        said = one.said()
        gitrepo.unstamped(said)  # every line has its time stamp
        assert "Ada" not in said and "first program" not in said, said  # no memory content


def test_three_machines_writing_at_once_converge(
    make: Callable[[str], Machine], remote: Path
) -> None:
    machines = [make(name) for name in ("laptop", "server", "runner")]
    for one in machines:
        one.watching()
    laptop, server, runner = machines
    laptop.server.create_entities([entity("shared", "old"), entity("doomed", "soon gone")])
    for one in (server, runner):
        wait_until(one.sees("doomed", "shared"), f"{one.name} seeded")

    def laptop_work() -> None:
        laptop.server.create_entities([entity("a1")])
        laptop.server.delete_entities(["doomed"])
        laptop.server.create_entities([entity("a2")])

    def server_work() -> None:
        server.server.create_entities([entity("b1")])
        server.server.delete_observations([{"entityName": "shared", "observations": ["old"]}])
        server.server.create_entities([entity("b2")])

    def runner_work() -> None:
        runner.server.create_entities([entity("c1"), entity("c2")])
        runner.server.add_observations([{"entityName": "shared", "contents": ["new"]}])
        runner.server.create_relations([{"from": "c1", "to": "c2", "relationType": "knows"}])

    with ThreadPoolExecutor(3) as pool:
        for done in [pool.submit(work) for work in (laptop_work, server_work, runner_work)]:
            done.result()

    wanted: Graph = (
        {name: ("thing", frozenset()) for name in ("a1", "a2", "b1", "b2", "c1", "c2")}
        | {"shared": ("thing", frozenset({"new"}))},
        frozenset({("c1", "knows", "c2")}),
    )
    for one in machines:  # server_graph fails on any entity, observation or relation twice
        wait_until(partial(_holds, one, wanted), f"{one.name} converged")
    remote_entities, remote_relations = gitrepo.graph(
        gitrepo.git(remote, "cat-file", "blob", "main:memory.jsonl").encode()
    )
    assert set(remote_entities) == set(wanted[0]) and remote_relations == set(wanted[1])


def test_a_watcher_killed_during_a_backup_loses_nothing_when_restarted(
    make: Callable[[str], Machine], remote: Path, tmp_path: Path
) -> None:
    laptop, server = make("laptop"), make("server")
    pushing = tmp_path / "push-started"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ntouch '{pushing}'\nsleep 60\n")
    hook.chmod(0o755)
    killed = laptop.watching()
    server.watching()

    laptop.server.create_entities([entity("Grace", "found the bug")])
    wait_until(pushing.exists, "the laptop's backup pushing")
    os.killpg(killed.pid, signal.SIGKILL)  # the watcher, its git and the hook
    killed.wait()
    hook.unlink()

    laptop.watching()
    wait_until(lambda: server.has("Grace"), "Grace on the server after the restart")
    assert laptop.graph() == server.graph()
    assert "another" not in laptop.said(), laptop.said()  # the dead watcher held no lock


def test_sigterm_and_sigint_exit_0_and_a_second_watcher_is_refused(
    make: Callable[[str], Machine], remote: Path, tmp_path: Path
) -> None:
    laptop, server = make("laptop"), make("server")
    laptop.server.create_entities([entity("Linus")])
    first = laptop.watching()
    server.watching()
    wait_until(lambda: server.has("Linus"), "Linus on the server")

    second = laptop.watch()
    assert second.wait(timeout=TIMEOUT) == ExitCode.REFUSED
    assert "another watch" in laptop.said() and "stop it to start another" in laptop.said(), (
        laptop.said()
    )

    # SIGTERM in the middle of a step: the remote refuses "for now", so the backup's
    # sync waits between attempts; the wait is cut short, the step abandoned.
    refusing = tmp_path / "refused"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ntouch '{refusing}'\necho 'busy, try again' >&2\nexit 1\n")
    hook.chmod(0o755)
    laptop.server.create_entities([entity("Margaret")])
    wait_until(refusing.exists, "the laptop's push refused")
    began = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=TIMEOUT) == 0, laptop.said()
    assert time.monotonic() - began < 5, "SIGTERM waited for the step's retries to run out"
    assert "stopped" in laptop.said().splitlines()[-1]
    hook.unlink()

    # No lock left: a backup runs at once, and lands what the abandoned step had.
    done = laptop.run("backup")
    assert done.returncode == 0, done.stderr.decode()
    assert b"another" not in done.stderr
    assert (laptop.clone / ".git" / SYNC_LOCK).read_bytes() == b""  # no holder's pid left
    wait_until(lambda: server.has("Margaret"), "Margaret on the server")

    again = laptop.watching()
    again.send_signal(signal.SIGINT)
    assert again.wait(timeout=TIMEOUT) == 0, laptop.said()
    assert "interrupted" not in laptop.said()
    assert (laptop.clone / ".git" / LOCK).exists()


def test_an_unreachable_remote_is_one_line_and_its_return_another(
    make: Callable[[str], Machine], remote: Path
) -> None:
    laptop, server = make("laptop"), make("server")
    laptop.server.create_entities([entity("Barbara")])
    laptop.watching()
    server.watching()
    wait_until(lambda: server.has("Barbara"), "Barbara on the server")

    away = remote.with_name("away.git")
    remote.rename(away)
    laptop.server.create_entities([entity("Offline", "learned while the remote was gone")])
    for one in (laptop, server):
        wait_until(one.says("is unreachable"), f"{one.name} notices")
    # Several probes fail meanwhile (1 s, 2 s...), each only a detail line.
    time.sleep(3.5)  # the outage itself: what is tested is what the watchers say during it
    assert not server.has("Offline")
    away.rename(remote)

    wait_until(lambda: server.has("Offline"), "what the laptop learned offline, on the server")
    for one in (laptop, server):
        wait_until(one.says("reachable again"), f"{one.name} says it is back")
        said = one.said()
        assert said.count("is unreachable") == 1 and said.count("reachable again") == 1, said
    # The return is said first, then what the first step after it did.
    assert laptop.said().rindex("backed up") > laptop.said().index("reachable again")
    assert laptop.graph() == server.graph()


def test_a_step_refused_by_a_busy_clone_is_retried_one_line_each_way(
    make: Callable[[str], Machine], tmp_path: Path
) -> None:
    laptop, server = make("laptop"), make("server")
    laptop.server.create_entities([entity("Alan")])
    # A backup from cron holds the clone's lock: the watcher's first step is refused.
    with sync_lock(laptop.clone / ".git", io.StringIO()):
        laptop.watch()
        wait_until(laptop.says("another sync or backup"), "the watcher refused the lock")
    wait_until(laptop.says("the failing step has succeeded"), "the step retried after the lock")
    server.watching()
    wait_until(server.sees("Alan"), "Alan on the server")
    assert laptop.said().count("another sync or backup") == 1, laptop.said()


# --- the backoff, without waiting: tenacity's schedule with a fake clock -----------------


def test_the_probe_of_an_unreachable_remote_backs_off_with_one_summary_line(
    tmp_path: Path,
) -> None:
    clone = gitrepo.init_repo(tmp_path / "clone")
    gitrepo.git(clone, "remote", "add", "origin", str(tmp_path / "missing.git"))
    git_dir = clone / ".git"
    now = [0.0]

    def advance(seconds: float) -> None:
        now[0] += seconds

    for level in (Level.SUMMARY, Level.VERBOSE):
        out = io.StringIO()
        watcher = Watcher(
            tmp_path / "memory.jsonl",
            Clone(clone, git_dir, git_dir, {}, "origin", "missing.git", "main"),
            "memory.jsonl", interval=1.0, debounce=0.2, stopping=lambda: now[0] > 40,
            log=cast(TextIO, Log([out], level=level)),  # a TextIOBase, as cli hands it
            clock=lambda: now[0], sleep=advance,
        )  # fmt: skip
        now[0] = 0.0
        with pytest.raises(Stopped):
            watcher.converge(local=False)
        lines = out.getvalue().splitlines()
        if level is Level.SUMMARY:
            assert len(lines) == 1 and "origin/main (missing.git) is unreachable" in lines[0]
        else:  # 1 s, 2 s, 4 s... (each up to 0.5 s more); the stop cuts the 32 s wait short
            waits = [float(line.rsplit("next try in ", 1)[1].rstrip("s)")) for line in lines]
            for wait, least in zip(waits, (1, 2, 4, 8, 16, 32), strict=True):
                assert least <= wait <= least + 0.5, waits


# --- setup --schedule watch --------------------------------------------------------------


def test_setup_schedule_watch_writes_a_service_prints_it_and_removes_it(
    make: Callable[[str], Machine], remote: Path, tmp_path: Path
) -> None:
    lone = make("lone")
    lone.server.create_entities([entity("Edsger")])
    clone = tmp_path / "setup-clone"
    done = lone.run("setup", str(remote), "--repo", str(clone), "--schedule", "watch")
    said = done.stderr.decode()
    assert done.returncode == 0, said
    [unit] = list(schedule.unit_dir().glob("crdt-merge-driver-watch-*.service"))
    text = unit.read_text()
    assert "Restart=on-failure" in text and "KillMode=mixed" in text
    assert '"watch" "--repo"' in text and f'"{lone.live}"' in text
    if not schedule.systemd_works():  # no user manager here: the unit is printed to start by hand
        assert "no systemd user manager answers here" in said and "Restart=on-failure" in said
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True,
                                  text=True, check=False, cwd=tmp_path)  # fmt: skip
        assert verified.returncode == 0, verified.stderr
    status = lone.run("status", "--repo", str(clone), "--memory", str(lone.live))
    assert b"systemd user service" in status.stdout, status.stdout

    removed = lone.run("setup", "--remove", "--repo", str(clone))
    assert removed.returncode == 0, removed.stderr.decode()
    assert b"removed the systemd user service" in removed.stderr
    assert not unit.exists()


def test_bad_arguments_are_one_line_and_a_branch_without_memory_waits_for_the_first_write(
    make: Callable[[str], Machine], remote: Path, tmp_path: Path
) -> None:
    lone = make("lone")
    for args, words in (
        (("--interval", "0"), b"--interval must be above 0"),
        (("--memory", str(tmp_path / "nowhere" / "memory.jsonl")), b"folder of the memory file"),
        (("--memory", str(tmp_path)), b"is a folder"),  # it retried forever (review, 2026-12-04)
    ):
        refused = lone.run("watch", *args)
        assert refused.returncode == ExitCode.USAGE, refused.stderr
        assert refused.stderr.count(b"\n") == 1 and words in refused.stderr, refused.stderr

    # The branch exists but holds no memory file: nothing to restore, the watcher waits.
    gitrepo.commit_file(lone.clone, "README", b"memory lives here\n")
    gitrepo.git(lone.clone, "push", "--quiet", "origin", "HEAD:main")
    lone.watching()
    lone.server.create_entities([entity("Kathleen")])
    wait_until(lambda: b"Kathleen" in gitrepo.git(remote, "show", "main:memory.jsonl",
                                                 check=False).encode(), "the first backup")
