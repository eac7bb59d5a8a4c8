"""Races: many clones run `crdt-merge-driver sync` as separate processes at the same moment.

Each writer is a clone of one bare remote where install never ran; it adds
its own entities (in the memory server's exact format) and runs ``python -m
crdt_merge_driver sync``. All writers are started first and wait for a start
file, so they are released together. Every process must exit 0 and the
remote's final memory.jsonl must hold every entity of every writer, once.
The same race runs over ``git daemon`` on 127.0.0.1, against a pre-receive
hook that refuses pushes at random as "transient", and with writers killed
in the middle of a sync.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from crdt_merge_driver.sync.landing import LOCK, REBASE_MARK
from tests import gitrepo

SEED = ("alice", "bob", "carol")
# Imports first, then waits: the race starts when every interpreter is ready.
WRITER = """
import os, runpy, sys, time
import crdt_merge_driver.cli, crdt_merge_driver.sync.landing
while not os.path.exists(os.environ["SYNC_START"]):
    time.sleep(0.002)
sys.argv = ["crdt-merge-driver", "sync", "-v", *sys.argv[1:]]
runpy.run_module("crdt_merge_driver", run_name="__main__", alter_sys=True)
"""


def own_entities(index: int) -> list[str]:
    return [f"writer-{index:02d}-{n}" for n in range(3)]


def write_memory(clone: Path, index: int) -> None:
    """What writer ``index``'s memory server saves: the seed, its entities, one relation."""
    entities = [gitrepo.entity(name) for name in SEED]
    entities += [gitrepo.entity(name, "note", (f"learned by writer {index}",))
                 for name in own_entities(index)]  # fmt: skip
    relations = [gitrepo.relation(own_entities(index)[0], "alice")]
    (clone / "memory.jsonl").write_bytes(gitrepo.jsonl(*entities, *relations))


def seed_remote(remote: Path, work: Path) -> None:
    seed = gitrepo.clone(remote, work / "seed")
    gitrepo.commit_file(seed, "memory.jsonl", gitrepo.jsonl(*map(gitrepo.entity, SEED)))
    gitrepo.git(seed, "push", "--quiet", "origin", "HEAD:main")


def writers(url: str, work: Path, count: int) -> list[Path]:
    clones = []
    for index in range(count):
        clone = work / f"writer-{index:02d}"
        gitrepo.git(work, "clone", "--quiet", url, str(clone))
        write_memory(clone, index)
        clones.append(clone)
    return clones


def race(clones: Sequence[Path], work: Path, *args: str) -> list[subprocess.CompletedProcess[str]]:
    """Start a sync in every clone, release them together, wait for all."""
    start = work / "start"
    env = {**os.environ, "SYNC_START": str(start)}
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, *args], cwd=clone, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for clone in clones
    ]  # fmt: skip
    time.sleep(0.5)
    start.touch()
    done = []
    for process in processes:
        out, err = process.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def check_landed(
    remote: Path, count: int, done: Sequence[subprocess.CompletedProcess[str]]
) -> None:
    failures = [result.stderr for result in done if result.returncode != 0]
    assert not failures, failures[0]
    final = gitrepo.git(remote, "show", "main:memory.jsonl").encode()
    entities, relations = gitrepo.graph(final)  # fails on any entity or relation twice
    expected = {*SEED, *(name for index in range(count) for name in own_entities(index))}
    assert set(entities) == expected
    assert relations == {(own_entities(i)[0], "knows", "alice") for i in range(count)}
    assert b"<<<<<<<" not in final
    # every commit that waited in the queue (pending.py) landed, and its ref went with it
    assert gitrepo.git(remote, "for-each-ref", "refs/crdt-merge-driver/pending/") == ""
    for result in done:
        assert "crdt-merge-driver: synced: origin/main is at" in result.stderr.splitlines()[-1]


def run_race(remote: Path, url: str, work: Path, count: int) -> list[str]:
    seed_remote(remote, work)
    done = race(writers(url, work, count), work)
    check_landed(remote, count, done)
    return [result.stderr for result in done]


def test_ten_writers_at_once_all_land(tmp_path: Path, remote: Path) -> None:
    logs = run_race(remote, str(remote), tmp_path, 10)
    # They did collide: a push lost, or one push landed another writer's commits.
    assert any("push failed" in log or "another machine's push landed" in log for log in logs)


@pytest.mark.slow
def test_thirty_two_writers_at_once_all_land(
    tmp_path: Path, remote: Path, request: pytest.FixtureRequest
) -> None:
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("a long race: run with -m slow")
    run_race(remote, str(remote), tmp_path, 32)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``git daemon`` on 127.0.0.1 serving (and accepting pushes to) one bare remote."""
    base = tmp_path / "served"
    remote = gitrepo.init_bare(base / "memory.git")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}",
         f"--base-path={base}", "--export-all", "--enable=receive-pack",
         "--max-connections=0", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while gitrepo.git_result(
            base, "ls-remote", f"git://127.0.0.1:{port}/memory.git"
        ).returncode:
            assert time.monotonic() < deadline, "git daemon did not start"
            time.sleep(0.05)
        yield f"git://127.0.0.1:{port}/memory.git", remote
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_ten_writers_over_git_daemon_all_land(tmp_path: Path, daemon: tuple[str, Path]) -> None:
    url, remote = daemon
    seed_remote(remote, tmp_path)
    done = race(writers(url, tmp_path, 10), tmp_path)
    check_landed(remote, 10, done)


def test_random_transient_refusals_still_land(tmp_path: Path, remote: Path) -> None:
    seed_remote(remote, tmp_path)
    refusals = tmp_path / "refusals"
    hook = remote / "hooks" / "pre-receive"
    # Refuses the first push, then a random 30% of the others, as a busy server might.
    hook.write_text(
        "#!/usr/bin/env bash\n"
        f"if [ ! -e '{refusals}' ] || (( RANDOM % 10 < 3 )); then\n"
        f"    echo refused >> '{refusals}'\n"
        "    echo 'transient: the backup server is busy, try again' >&2\n"
        "    exit 1\n"
        "fi\n"
    )
    hook.chmod(0o755)

    done = race(writers(str(remote), tmp_path, 10), tmp_path)
    check_landed(remote, 10, done)
    assert refusals.read_text().count("refused") >= 1
    assert any("the remote's hook refused for now: transient" in r.stderr for r in done)


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def start_alone(clone: Path) -> subprocess.Popen[bytes]:
    # Its own session, so that killing it takes git and the hook with it, as a
    # closed terminal or a cancelled CI job would.
    return subprocess.Popen(
        [*gitrepo.CLI, "sync", "--repo", str(clone)], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_a_sync_killed_while_pushing_is_finished_by_the_next(tmp_path: Path, remote: Path) -> None:
    seed_remote(remote, tmp_path)
    [clone] = writers(str(remote), tmp_path, 1)
    started = tmp_path / "hook-started"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ntouch '{started}'\nsleep 60\n")
    hook.chmod(0o755)

    process = start_alone(clone)
    wait_for(started)
    kill(process)
    assert (clone / ".git" / LOCK).exists()  # left behind by the killed sync
    hook.unlink()

    done = gitrepo.cli("sync", "-v", "--repo", str(clone))
    stderr = done.stderr.decode() if isinstance(done.stderr, bytes) else done.stderr
    assert done.returncode == 0, stderr
    # The kernel released the dead sync's flock: nothing to take over, nothing refused.
    assert "another sync" not in stderr and "took over" not in stderr, stderr
    check_landed(remote, 1, [subprocess.CompletedProcess([], 0, "", stderr)])


def test_a_sync_killed_while_rebasing_leaves_a_rebase_the_next_aborts(
    tmp_path: Path, remote: Path
) -> None:
    seed_remote(remote, tmp_path)
    first, second = writers(str(remote), tmp_path, 2)
    # notes.txt changes on both sides and merges with a driver that hangs
    # (until the test lets it go), so the sync can be killed inside the rebase.
    started = tmp_path / "driver-started"
    for clone, text in ((first, "first\n"), (second, "second\n")):
        gitrepo.write(clone, ".git/info/attributes", b"notes.txt merge=slow\n")
        gitrepo.git(clone, "config", "merge.slow.driver", f"touch '{started}'; sleep 60")
        gitrepo.commit_file(clone, "notes.txt", text.encode())
    assert gitrepo.cli("sync", "-v", "--repo", str(first)).returncode == 0

    process = start_alone(second)
    wait_for(started)
    kill(process)
    assert (second / ".git" / REBASE_MARK).exists()
    assert (second / ".git" / "rebase-merge").exists()

    gitrepo.git(second, "config", "merge.slow.driver", "true")  # keeps the remote's notes
    done = gitrepo.cli("sync", "-v", "--repo", str(second))
    stderr = done.stderr.decode() if isinstance(done.stderr, bytes) else done.stderr
    assert done.returncode == 0, stderr
    assert "aborted the rebase an interrupted sync left" in stderr
    assert not (second / ".git" / "rebase-merge").exists()
    assert gitrepo.git(second, "status", "--porcelain") == ""  # no .merge_file_* left
    check_landed(remote, 2, [subprocess.CompletedProcess([], 0, "", stderr)])


def test_an_interrupted_sync_aborts_its_rebase_itself(tmp_path: Path, remote: Path) -> None:
    seed_remote(remote, tmp_path)
    first, second = writers(str(remote), tmp_path, 2)
    started = tmp_path / "driver-started"
    for clone, text in ((first, "first\n"), (second, "second\n")):
        gitrepo.write(clone, ".git/info/attributes", b"notes.txt merge=slow\n")
        gitrepo.git(clone, "config", "merge.slow.driver", f"touch '{started}'; sleep 60")
        gitrepo.commit_file(clone, "notes.txt", text.encode())
    assert gitrepo.cli("sync", "-v", "--repo", str(first)).returncode == 0
    before = gitrepo.head(second)

    process = subprocess.Popen(
        [*gitrepo.CLI, "sync", "--repo", str(second)], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_for(started)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert gitrepo.unstamped(stderr.decode()).splitlines()[-1] == "crdt-merge-driver: interrupted"
    assert not (second / ".git" / "rebase-merge").exists()
    assert not (second / ".git" / REBASE_MARK).exists()
    lock_file = second / ".git" / LOCK  # kept between runs, emptied when released
    assert not lock_file.exists() or lock_file.read_bytes() == b""
    assert gitrepo.head(second) != before  # its memory commit is there, on top
    assert gitrepo.git(second, "log", "-1", "--format=%s").startswith("memory: sync")
    assert gitrepo.git(second, "status", "--porcelain") == ""
