"""sync: the retry policy, git's failures classified, and the loop against real remotes.

The unit tests inject ``sleep=calls.append`` and check the backoff schedule
without sleeping. Classification is checked against git's real stderr,
captured in tests/fixtures/git-stderr by its capture.py. Everything else
runs the real git against real bare remotes; `sync` is called in-process
(so coverage sees it) except where the exit code or a separate process is
the point.
"""

from __future__ import annotations

import io
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest

from crdt_merge_driver import git as git_module
from crdt_merge_driver.errors import CrdtError, ExitCode, GaveUpError, GitError, RefusedError
from crdt_merge_driver.sync import checkout as checkout_module
from crdt_merge_driver.sync import clone as clone_module
from crdt_merge_driver.sync import landing as sync_module
from crdt_merge_driver.sync import lock as lock_module
from crdt_merge_driver.sync import rebase as rebase_module
from crdt_merge_driver.sync import replay as replay_module
from crdt_merge_driver.sync import session as session_module
from crdt_merge_driver.sync import verdict as verdict_module
from crdt_merge_driver.sync.landing import (
    ATTRIBUTES,
    LOCK,
    REBASE_MARK,
    WAIT_FIRST,
    WAIT_GROWTH,
    WAIT_LOAD,
    WAIT_LOAD_MAX,
    WAIT_MAX,
    SyncError,
    SyncResult,
    Transient,
    retrying,
    sync,
)
from crdt_merge_driver.sync.pending import Queue, Record
from crdt_merge_driver.sync.verdict import classify
from tests import gitrepo

FIXTURES = Path(__file__).parent / "fixtures" / "git-stderr"
SEED = ("alice", "bob", "carol", "dave")


# --- helpers ----------------------------------------------------------------------


def memory(*names: str) -> bytes:
    return gitrepo.jsonl(*(gitrepo.entity(name) for name in names))


def remote_file(remote: Path, name: str = "memory.jsonl", branch: str = "main") -> bytes:
    return gitrepo.git(remote, "show", f"{branch}:{name}").encode()


def names_on(remote: Path, branch: str = "main") -> set[str]:
    entities, _ = gitrepo.graph(remote_file(remote, branch=branch))
    return set(entities)


def run(clone: Path, **options: object) -> tuple[SyncResult, str, list[float]]:
    """`sync` in-process; its result, what it logged, and the waits it asked for."""
    log = io.StringIO()
    waits: list[float] = []
    result = sync(repo=clone, sleep=waits.append, log=log, **options)  # type: ignore[arg-type]
    return result, log.getvalue(), waits


class Ran(NamedTuple):
    returncode: int
    stderr: str


def cli_sync(clone: Path, *args: str) -> Ran:
    """``crdt-merge-driver sync -v --repo clone args...`` as its own process (every line)."""
    done = gitrepo.cli("sync", "-v", "--repo", str(clone), *args)
    stderr: object = done.stderr  # gitrepo.cli says str; it runs without text=True
    text = stderr.decode() if isinstance(stderr, bytes) else str(stderr)
    return Ran(done.returncode, gitrepo.unstamped(text))


def rebasing(clone: Path) -> bool:
    git_dir = clone / ".git"
    return (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists()


@pytest.fixture(autouse=True)
def no_crowd_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # A loaded test machine must not add a first wait to the schedules these tests check;
    # test_a_busy_machine_spreads_the_first_attempt checks that wait.
    monkeypatch.setattr(sync_module, "WAIT_CROWD_FROM", math.inf)


@pytest.fixture
def origin(tmp_path: Path, remote: Path) -> Path:
    """The bare remote with memory.jsonl (four entities) on main; no .gitattributes, no install."""
    seed = gitrepo.clone(remote, tmp_path / "seed")
    gitrepo.commit_file(seed, "memory.jsonl", memory(*SEED), "seed memory")
    gitrepo.git(seed, "push", "--quiet", "origin", "HEAD:main")
    return remote


@pytest.fixture
def pair(tmp_path: Path, origin: Path) -> tuple[Path, Path]:
    return gitrepo.clone(origin, tmp_path / "laptop"), gitrepo.clone(origin, tmp_path / "server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the retry policy -------------------------------------------------------------


def fail_every_time(policy: object) -> int:
    tries = 0
    with pytest.raises(Transient):
        for attempt in policy:  # type: ignore[attr-defined]
            with attempt:
                tries += 1
                raise Transient("the remote moved on")
    return tries


def test_waits_are_full_jitter_exponential_and_capped() -> None:
    calls: list[float] = []
    random.seed(1234)
    policy = retrying(attempts=12, deadline=1e6, sleep=calls.append, log=io.StringIO())
    tries = fail_every_time(policy)

    windows = [min(WAIT_MAX, WAIT_FIRST * WAIT_GROWTH ** (n - 1)) for n in range(1, 12)]
    # The load term adds nothing here (these attempts took no time), so each
    # wait is drawn from its exponential window alone.
    assert tries == 12 and len(calls) == 11
    assert windows[-1] == WAIT_MAX and windows[0] == WAIT_FIRST
    assert all(0 <= wait <= window for wait, window in zip(calls, windows, strict=True))
    assert len(set(calls)) == len(calls)  # jitter: no two waits alike


def test_slow_attempts_wait_longer_in_proportion() -> None:
    calls: list[float] = []
    tries = 0
    with pytest.raises(Transient):
        for attempt in retrying(attempts=40, deadline=1e6, sleep=calls.append, log=io.StringIO()):
            with attempt:
                tries += 1
                raise Transient("busy", took=0.3 if tries % 2 else 30.0)
    windows = [min(WAIT_MAX, WAIT_FIRST * WAIT_GROWTH ** (n - 1)) for n in range(1, 40)]
    loads = [min(WAIT_LOAD_MAX, WAIT_LOAD * (0.3 if n % 2 else 30.0)) for n in range(1, 40)]
    assert all(0 <= wait <= window + load
               for wait, window, load in zip(calls, windows, loads, strict=True))  # fmt: skip
    assert max(calls) > WAIT_MAX  # the load term did add
    assert max(calls) <= WAIT_MAX + WAIT_LOAD_MAX  # and it is capped


def test_no_wait_is_longer_than_the_cap_however_many_failures() -> None:
    calls: list[float] = []
    fail_every_time(retrying(attempts=200, deadline=1e9, sleep=calls.append, log=io.StringIO()))
    assert len(calls) == 199
    assert max(calls) <= WAIT_MAX
    assert max(calls[-50:]) > WAIT_MAX / 2  # the window stays at the cap


def test_the_deadline_stops_before_a_wait_would_pass_it() -> None:
    now = [0.0]
    woke: list[float] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds
        woke.append(now[0])

    tries = 0
    policy = retrying(attempts=1000, deadline=10.0, sleep=sleep, log=io.StringIO(),
                      clock=lambda: now[0])  # fmt: skip
    with pytest.raises(Transient):
        for attempt in policy:
            with attempt:
                tries += 1
                now[0] += 0.1  # an attempt takes 0.1 s
                raise Transient("the remote moved on")
    assert tries == len(woke) + 1 < 1000
    assert max(woke) < 10.0  # no wait ends past the deadline
    assert now[0] > 10.0 - WAIT_MAX  # and it did not stop long before it


def test_a_busy_machine_spreads_the_first_attempt(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    monkeypatch.setattr(sync_module, "WAIT_CROWD_FROM", 0.0)
    monkeypatch.setattr(sync_module, "_cpu_seconds", lambda: 0.0)  # all of it waiting for a CPU
    started = time.monotonic()
    result, log, waits = run(laptop)
    busy = float(log.split("sync waited ")[1].split("s for a CPU")[0])
    assert 0 < busy < time.monotonic() - started
    assert len(waits) == 1 and 0 <= waits[0] <= sync_module.WAIT_CROWD * busy
    assert f"first try in {waits[0]:.2f}s" in log and result.attempts == 1


def test_a_writer_alone_starts_at_once(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    monkeypatch.setattr(sync_module, "WAIT_CROWD_FROM", 0.1)
    monkeypatch.setattr(sync_module, "_cpu_seconds", time.monotonic)  # never waited for a CPU
    result, log, waits = run(laptop)
    assert waits == [] and "busy" not in log and result.attempts == 1


def test_fatal_errors_are_raised_at_once_without_waiting() -> None:
    calls: list[float] = []
    tries = 0
    with pytest.raises(GitError):
        for attempt in retrying(attempts=5, deadline=60, sleep=calls.append, log=io.StringIO()):
            with attempt:
                tries += 1
                raise GitError("authentication failed")
    assert (tries, calls) == (1, [])


def test_each_retry_logs_its_number_reason_and_wait() -> None:
    log = io.StringIO()
    calls: list[float] = []
    fail_every_time(retrying(attempts=3, deadline=60, sleep=calls.append, log=log))
    lines = log.getvalue().splitlines()
    assert lines == [
        f"crdt-merge-driver: sync attempt {n}: the remote moved on; next try in {wait:.2f}s"
        for n, wait in enumerate(calls, 1)
    ]


# --- what git's words mean ----------------------------------------------------------


def fixture_names(prefix: str) -> list[str]:
    return sorted(path.stem for path in FIXTURES.glob(f"{prefix}-*.txt"))


def test_every_captured_failure_has_a_verdict_fixture() -> None:
    assert len(fixture_names("retry")) >= 10
    assert len(fixture_names("fatal")) >= 8


@pytest.mark.parametrize("name", fixture_names("retry"))
def test_transient_failures_are_retried(name: str) -> None:
    verdict = classify((FIXTURES / f"{name}.txt").read_text())
    assert verdict.retry, verdict


@pytest.mark.parametrize("name", [name for name in fixture_names("fatal") if "rebase" not in name])
def test_permanent_failures_are_fatal(name: str) -> None:
    verdict = classify((FIXTURES / f"{name}.txt").read_text())
    assert not verdict.retry, verdict


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("retry-push-fetch-first", "the remote moved on"),
        ("retry-push-non-fast-forward", "the remote moved on"),
        ("retry-push-remote-ref-lock", "locked by another push"),
        ("retry-push-pre-receive-transient", "refused for now: transient: the backup server"),
        ("retry-fetch-git-connection-refused", "connection refused"),
        ("retry-fetch-ssh-connection-refused", "connection refused"),
        ("retry-push-git-connection-reset", "connection reset"),
        ("retry-push-git-hung-up-mid-reply", "hung up"),
        ("retry-fetch-http-unavailable", "HTTP 408, 429 or 5xx"),
        ("fatal-fetch-http-auth-no-prompt", "authentication failed"),
        ("fatal-fetch-http-auth-failed", "authentication failed"),
        ("fatal-fetch-http-forbidden", "authentication failed"),
        ("fatal-fetch-not-a-repository", "no such repository"),
        ("fatal-fetch-http-not-found", "no such repository"),
        ("fatal-push-pre-receive-declined", "refused the push: main is protected"),
        ("fatal-push-no-atomic", "does not take atomic pushes"),
        ("retry-push-queue-stale-info", "the remote moved on"),
    ],
)
def test_each_verdict_says_why(name: str, reason: str) -> None:
    assert reason in classify((FIXTURES / f"{name}.txt").read_text()).reason


def test_a_hook_refusal_with_the_marker_anywhere_is_transient() -> None:
    refusal = "remote: Backup quota recalculating, TRY AGAIN in a minute\n" + (
        " ! [remote rejected] HEAD -> main (pre-receive hook declined)\n"
    )
    assert classify(refusal).retry
    assert not classify(refusal.replace("TRY AGAIN", "come back")).retry


def test_an_unknown_failure_is_fatal_and_quoted() -> None:
    verdict = classify("hint: something\nfatal: the moon is in the wrong phase\n")
    assert verdict == (False, "fatal: the moon is in the wrong phase")
    assert classify("") == (False, "git printed nothing")


def test_a_missing_remote_branch_is_recognised() -> None:
    assert verdict_module.MISSING_BRANCH.search(
        (FIXTURES / "missing-fetch-remote-branch.txt").read_text()
    )


def test_the_driver_complaint_in_a_rebase_is_read() -> None:
    complaint = rebase_module.DRIVER_COMPLAINT.search(
        (FIXTURES / "fatal-rebase-damaged-memory.txt").read_text()
    )
    assert complaint is not None
    assert (complaint["path"], complaint["side"], complaint["line"]) == ("memory.jsonl", "A", "2")
    assert complaint["reason"].startswith("conflict marker")


# --- the loop against a real remote -----------------------------------------------------


def test_concurrent_changes_merge_and_land(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, server = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    first, log, _ = run(laptop)
    assert first.attempts == 1 and first.commit == gitrepo.head(laptop)
    assert "committed memory.jsonl" in log
    assert f"synced: origin/main is at {first.commit[:10]} after 1 attempt\n" in log

    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    second, log, waits = run(server)
    assert second.attempts == 1 and waits == []
    assert names_on(origin) == {*SEED, "erin", "frank"}
    assert gitrepo.git(origin, "rev-parse", "main").strip() == second.commit == gitrepo.head(server)
    # the local branch is the remote's, and nothing is left in progress
    assert not rebasing(server)
    assert gitrepo.git(server, "status", "--porcelain") == ""


def test_a_rejected_push_is_retried_after_a_wait(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, server = pair
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    fetch = sync_module.fetch
    calls: list[bool] = []

    def fetch_then_race(clone: clone_module.Clone, timeout: float, queue: Queue) -> bool:
        # Another machine lands a commit between our fetch and our push, once.
        fetched = fetch(clone, timeout, queue)
        if not calls:
            calls.append(fetched)
            (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
            gitrepo.commit(laptop, "erin", "memory.jsonl")
            gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
        return fetched

    monkeypatch.setattr(sync_module, "fetch", fetch_then_race)
    result, log, waits = run(server)
    assert result.attempts == 2 and len(waits) == 1
    assert "sync attempt 1: push failed: rejected: the remote moved on" in log
    assert "next try in" in log
    assert names_on(origin) == {*SEED, "erin", "frank"}


def test_first_sync_creates_the_remote_branch(tmp_path: Path, remote: Path) -> None:
    clone = gitrepo.clone(remote, tmp_path / "fresh")
    (clone / "memory.jsonl").write_bytes(memory("first"))
    result, _, _ = run(clone)
    assert result.commit is not None
    assert names_on(remote) == {"first"}


def test_a_new_branch_is_pushed_to_the_name_given(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    result, _, _ = run(laptop, branch="backups")
    assert names_on(origin, "backups") == {*SEED, "erin"}
    assert names_on(origin) == set(SEED)
    assert result.commit == gitrepo.git(origin, "rev-parse", "backups").strip()


def test_nothing_to_push_says_so(pair: tuple[Path, Path]) -> None:
    laptop, _ = pair
    result, log, _ = run(laptop)
    assert result == SyncResult(None, 1)
    assert log == "crdt-merge-driver: nothing to push: origin/main already has every local commit\n"


def test_a_clone_behind_is_brought_up_to_date(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, server = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    result, log, _ = run(server)
    assert result.commit is None and "nothing to push" in log
    assert gitrepo.head(server) == gitrepo.git(origin, "rev-parse", "main").strip()
    assert b"erin" in (server / "memory.jsonl").read_bytes()


def test_only_the_given_paths_are_committed_with_the_message(pair: tuple[Path, Path]) -> None:
    laptop, _ = pair
    gitrepo.write(laptop, "agents/memory-claude.jsonl", memory("claude"))
    gitrepo.write(laptop, "memory.jsonl", memory(*SEED, "not-now"))
    result, _, _ = run(laptop, paths=[Path("agents/memory-claude.jsonl")], message="backup claude")
    assert result.commit is not None
    shown = gitrepo.git(laptop, "show", "--name-only", "--format=%s", "HEAD").split()
    assert shown == ["backup", "claude", "agents/memory-claude.jsonl"]
    assert gitrepo.git(laptop, "status", "--porcelain") == " M memory.jsonl\n"


def test_the_default_commit_takes_every_changed_memory_file_and_nothing_else(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, "notes.txt", b"one\ntwo\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "pull", "--quiet", "--rebase")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)  # the remote moves on

    gitrepo.write(server, "memory.jsonl", memory(*SEED, "frank"))
    gitrepo.write(server, "deep/memory-agent.json", b'[{"type": "entity", "name": "x"}]\n')
    gitrepo.write(server, "notes.txt", b"one\ntwo, edited\n")  # tracked, not staged
    gitrepo.write(server, "staged.txt", b"staged\n")
    gitrepo.git(server, "add", "staged.txt")
    gitrepo.write(server, "scratch.txt", b"untracked\n")
    result, log, _ = run(server)

    committed = gitrepo.git(server, "show", "--name-only", "--format=", "HEAD").split()
    assert committed == ["deep/memory-agent.json", "memory.jsonl"]
    assert result.commit == gitrepo.head(server)
    assert names_on(origin) == {*SEED, "erin", "frank"}
    # the other changes survive the autostash: content kept (staging is not)
    assert (server / "notes.txt").read_bytes() == b"one\ntwo, edited\n"
    assert (server / "staged.txt").read_bytes() == b"staged\n"
    assert (server / "scratch.txt").read_bytes() == b"untracked\n"
    status = gitrepo.git(server, "status", "--porcelain").splitlines()
    assert sorted(line[3:] for line in status) == ["notes.txt", "scratch.txt", "staged.txt"]
    assert gitrepo.git(server, "stash", "list") == ""
    assert "committed deep/memory-agent.json, memory.jsonl" in log


def test_a_clone_where_install_never_ran_merges_with_the_driver(
    tmp_path: Path, pair: tuple[Path, Path], origin: Path, hermetic_seal: Path
) -> None:
    # The user's own global attributes file still applies: notes.txt merges as union.
    attributes = hermetic_seal / ".config" / "git" / "attributes"
    attributes.parent.mkdir(parents=True)
    attributes.write_text("notes.txt merge=union\n")
    laptop, server = pair
    gitrepo.commit_file(laptop, "notes.txt", b"base\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "pull", "--quiet", "--rebase")
    assert gitrepo.git(server, "config", "--get-regexp", r"^merge\.", check=False) == ""

    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    gitrepo.write(laptop, "notes.txt", b"base\nfrom laptop\n")
    run(laptop, paths=[Path("memory.jsonl"), Path("notes.txt")])
    # Both append a line: git's text merge would write conflict markers here.
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    gitrepo.write(server, "notes.txt", b"base\nfrom server\n")
    run(server, paths=[Path("memory.jsonl"), Path("notes.txt")])

    merged = remote_file(origin)
    assert b"<<<<<<<" not in merged and b"=======" not in merged
    assert names_on(origin) == {*SEED, "erin", "frank"}
    assert remote_file(origin, "notes.txt") == b"base\nfrom laptop\nfrom server\n"
    assert not list((server / ".git").glob(f"{sync_module.ATTRIBUTES}*"))  # cleaned up


def test_the_repositorys_own_attributes_still_win(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, ".gitattributes", b"memory.jsonl merge=binary\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "pull", "--quiet", "--rebase")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop, paths=[Path("memory.jsonl")])
    # merge=binary is not the driver: not committed by default, and not merged
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    assert (
        clone_module.memory_changes(
            clone_module.Clone(server, server / ".git", server / ".git", {}, "origin", "", "main")
        )
        == []
    )
    gitrepo.commit(server, "frank", "memory.jsonl")
    with pytest.raises(GitError, match=r"stopped on a conflict in memory\.jsonl"):
        run(server)
    assert not rebasing(server)


def test_uncommitted_changes_that_conflict_are_kept_in_the_stash(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, "notes.txt", b"base\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "pull", "--quiet", "--rebase")
    gitrepo.commit_file(laptop, "notes.txt", b"laptop\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.write(server, "notes.txt", b"server, not committed\n")
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    result, log, _ = run(server)
    assert result.commit is not None and names_on(origin) == {*SEED, "frank"}
    assert "warning: your uncommitted changes conflict with origin/main" in log
    assert gitrepo.git(server, "stash", "list").count("autostash") == 1
    assert b"server, not committed" in gitrepo.git(server, "stash", "show", "-p").encode()


# --- refusals -------------------------------------------------------------------------


def test_a_mass_delete_is_refused_unless_allowed(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, _ = pair
    more = ("erin", "frank", "gina")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, *more))
    run(laptop)
    (laptop / "memory.jsonl").write_bytes(memory("alice"))
    with pytest.raises(RefusedError, match="deletes 6 of the 7 records origin/main has") as error:
        run(laptop)
    assert "--allow-mass-delete" in str(error.value)
    assert names_on(origin) == {*SEED, *more}
    assert gitrepo.git(laptop, "log", "-1", "--format=%s").startswith("memory: sync memory.jsonl")

    result, _, _ = run(laptop, allow_mass_delete=True)
    assert result.commit is not None
    assert names_on(origin) == {"alice"}


def test_a_few_deletions_from_a_small_memory_are_not_a_mass_delete(
    pair: tuple[Path, Path], origin: Path
) -> None:
    # Found by review (2026-12-04): one entity deleted with its relation, in a memory of
    # a handful, is more than half of it: it was refused, and the machine was stuck.
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(memory("alice"))  # 3 of the 4 deleted
    run(laptop)
    assert names_on(origin) == {"alice"}


def test_deleting_half_is_allowed_and_deleting_the_file_is_a_mass_delete(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(memory("alice", "bob"))
    run(laptop)
    assert names_on(origin) == {"alice", "bob"}

    (laptop / "memory.jsonl").unlink()
    with pytest.raises(RefusedError, match="deletes 2 of the 2 records"):
        run(laptop)
    assert names_on(origin) == {"alice", "bob"}


def test_a_file_with_conflict_markers_is_not_pushed(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, _ = pair
    damaged = memory(*SEED) + b"\n<<<<<<< HEAD\n" + gitrepo.entity("x") + b"\n>>>>>>> other"
    (laptop / "memory.jsonl").write_bytes(damaged)
    with pytest.raises(RefusedError, match=r"memory\.jsonl, line 5: conflict marker"):
        run(laptop)
    assert names_on(origin) == set(SEED)


def test_repeated_records_are_not_pushed(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(
        memory(*SEED) + b"\n" + gitrepo.entity("bob", observations=("again",))
    )
    with pytest.raises(RefusedError, match='entity "bob" appears more than once'):
        run(laptop)
    assert names_on(origin) == set(SEED)


def test_a_damaged_remote_file_stops_the_rebase_with_a_repair_hint(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    # Elsewhere, a text merge left conflict markers and they were pushed.
    damaged = b"\n".join([memory(*SEED), b"<<<<<<< HEAD", gitrepo.entity("x"), b"=======",
                          gitrepo.entity("y"), b">>>>>>> theirs"])  # fmt: skip
    gitrepo.commit_file(laptop, "memory.jsonl", damaged, "a bad text merge")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")

    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    with pytest.raises(RefusedError) as error:
        run(server)
    message = str(error.value)
    assert message.startswith("memory.jsonl: the version on origin/main is damaged (conflict")
    assert "line 5" in message and "crdt-merge-driver join memory.jsonl -o memory.jsonl" in message
    assert "rebase aborted, local commits kept" in message
    assert not rebasing(server)
    assert b"frank" in gitrepo.git(server, "show", "HEAD:memory.jsonl").encode()
    assert (server / "memory.jsonl").read_bytes() == memory(*SEED, "frank")


def test_a_conflict_in_another_file_aborts_the_rebase(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, "notes.txt", b"laptop\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "notes.txt", b"server\n")
    before = gitrepo.head(server)
    with pytest.raises(GitError, match=r"stopped on a conflict in notes\.txt") as error:
        run(server)
    assert "git pull --rebase origin main" in str(error.value)
    assert gitrepo.head(server) == before and not rebasing(server)
    assert gitrepo.git(server, "status", "--porcelain") == ""


def test_an_untracked_file_in_the_way_fails_the_rebase_cleanly(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, "notes.txt", b"laptop\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.write(server, "notes.txt", b"mine, untracked\n")
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    with pytest.raises(GitError, match=r"rebase onto origin/main failed: .*untracked"):
        run(server)
    assert not rebasing(server)
    assert (server / "notes.txt").read_bytes() == b"mine, untracked\n"


def test_a_permanent_hook_refusal_is_fatal_at_once(pair: tuple[Path, Path], origin: Path) -> None:
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected: ask for review' >&2\nexit 1\n")
    hook.chmod(0o755)
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    with pytest.raises(GitError, match="hook refused the push: main is protected") as error:
        run(laptop)
    assert "your local commits are kept" in str(error.value)


def test_an_authentication_failure_is_fatal_at_once(pair: tuple[Path, Path]) -> None:
    import http.server  # noqa: PLC0415  # only this test serves HTTP

    class Unauthorized(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="memory"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    laptop, _ = pair
    url = f"http://127.0.0.1:{server.server_address[1]}/memory.git"
    gitrepo.git(laptop, "remote", "set-url", "origin", url)
    try:
        log = io.StringIO()
        with pytest.raises(GitError, match="authentication failed"):
            sync(repo=laptop, log=log, sleep=lambda _: pytest.fail("a fatal error was retried"))
    finally:
        server.shutdown()
        server.server_close()
    assert "attempt" not in log.getvalue()


def test_an_unreachable_remote_gives_up_by_the_deadline(pair: tuple[Path, Path]) -> None:
    laptop, _ = pair
    url = f"git://127.0.0.1:{free_port()}/memory.git"  # nothing listens there
    gitrepo.git(laptop, "remote", "set-url", "origin", url)
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    started = time.monotonic()
    done = cli_sync(laptop, "--deadline", "2")
    elapsed = time.monotonic() - started
    assert done.returncode == ExitCode.GAVE_UP, done.stderr
    assert elapsed < 8
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"crdt-merge-driver: gave up on origin ({url}) after ")
    assert "connection refused" in last and "your local commits are kept" in last
    assert "sync attempt 1: fetch failed: connection refused; next try in" in done.stderr
    assert gitrepo.git(laptop, "log", "-1", "--format=%s").startswith("memory: sync")
    assert not rebasing(laptop) and gitrepo.git(laptop, "status", "--porcelain") == ""


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung remote)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_a_remote_that_hangs_times_out_by_the_deadline(
    pair: tuple[Path, Path], silent_server: int
) -> None:
    laptop, _ = pair
    gitrepo.git(laptop, "remote", "set-url", "origin", f"git://127.0.0.1:{silent_server}/m.git")
    started = time.monotonic()
    with pytest.raises(GaveUpError, match="git fetch timed out after"):
        sync(repo=laptop, deadline=1.5, log=io.StringIO())
    assert time.monotonic() - started < 6


@pytest.mark.parametrize("scheme", ["http", "git"])
def test_a_token_in_the_url_is_never_shown(pair: tuple[Path, Path], scheme: str) -> None:
    laptop, _ = pair
    url = f"{scheme}://ci:s3cret-token@127.0.0.1:{free_port()}/memory.git"
    gitrepo.git(laptop, "remote", "set-url", "origin", url)
    with pytest.raises(CrdtError) as error:
        sync(repo=laptop, attempts=1, log=io.StringIO())
    assert "s3cret" not in str(error.value)
    assert f"{scheme}://127.0.0.1:" in str(error.value)


def test_redact_keeps_everything_but_the_credentials() -> None:
    assert (
        verdict_module.redact(
            "fatal: unable to look up ci:tok@host.example (port 9418); https://u:p@h/x.git, a:b c@d"
        )
        == "fatal: unable to look up host.example (port 9418); https://h/x.git, a:b c@d"
    )


# --- where sync cannot start ---------------------------------------------------------------


def test_a_detached_head_needs_a_branch(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, _ = pair
    gitrepo.git(laptop, "checkout", "--quiet", "--detach")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    with pytest.raises(SyncError, match=r"HEAD is detached in .*: pass --branch NAME"):
        run(laptop)
    result, _, _ = run(laptop, branch="main")
    assert names_on(origin) == {*SEED, "erin"}
    assert result.commit == gitrepo.head(laptop)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"remote": "upstream"}, "unknown remote 'upstream': this clone has origin"),
        ({"attempts": 0}, "--attempts must be at least 1"),
        ({"deadline": 0.0}, "--deadline above 0"),
    ],
)
def test_bad_options_are_refused(
    pair: tuple[Path, Path], options: dict[str, object], message: str
) -> None:
    with pytest.raises(SyncError, match=message):
        run(pair[0], **options)


def test_outside_a_repository_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CrdtError, match="is not inside a git work tree"):
        run(tmp_path)


def test_a_rebase_of_the_users_own_is_left_alone(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, "notes.txt", b"laptop\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "notes.txt", b"server\n")
    gitrepo.git(server, "fetch", "--quiet")
    assert gitrepo.git_result(server, "rebase", "origin/main").returncode != 0
    with pytest.raises(SyncError, match="a rebase is in progress"):
        run(server)
    assert rebasing(server)  # not ours to abort


def test_a_rebase_left_by_a_killed_sync_is_aborted_first(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, "notes.txt", b"laptop\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "notes.txt", b"server\n")
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))
    own = gitrepo.head(server)
    gitrepo.git(server, "fetch", "--quiet")
    gitrepo.git_result(server, "rebase", "origin/main")  # stops, as a killed sync would leave it
    (server / ".git" / REBASE_MARK).write_text("pid 99999999\n")
    gitrepo.git(server, "config", "merge.ours.driver", "true")
    gitrepo.write(server, ".git/info/attributes", b"notes.txt merge=ours\n")

    result, log, _ = run(server)
    assert "aborted the rebase an interrupted sync left (pid 99999999)" in log
    assert result.commit is not None and not rebasing(server)
    assert gitrepo.head(server) != own  # replayed onto the remote
    assert remote_file(origin, "notes.txt") == b"laptop\n"  # the driver `true` kept upstream's
    assert names_on(origin) == {*SEED, "frank"}
    assert not (server / ".git" / REBASE_MARK).exists()


def test_a_caller_can_recover_before_looking_at_head(pair: tuple[Path, Path]) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, "notes.txt", b"laptop\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "notes.txt", b"server\n")
    own = gitrepo.head(server)
    gitrepo.git(server, "fetch", "--quiet")
    gitrepo.git_result(server, "rebase", "origin/main")
    (server / ".git" / REBASE_MARK).write_text("pid 99999999\n")
    assert gitrepo.git_result(server, "symbolic-ref", "HEAD").returncode != 0  # detached

    log = io.StringIO()
    sync_module.recover_interrupted(repo=server, log=log)
    assert "aborted the rebase an interrupted sync left" in log.getvalue()
    assert gitrepo.git(server, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert gitrepo.head(server) == own and not rebasing(server)
    assert (server / ".git" / LOCK).read_text() == ""  # released
    sync_module.recover_interrupted(repo=server, log=log)  # nothing left: a no-op


def test_an_index_lock_left_by_a_killed_sync_is_removed_once_its_group_is_gone(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, "notes.txt", b"laptop\n")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "notes.txt", b"server\n")
    gitrepo.git(server, "fetch", "--quiet")
    gitrepo.git_result(server, "rebase", "origin/main")
    gitrepo.git(server, "config", "merge.ours.driver", "true")
    gitrepo.write(server, ".git/info/attributes", b"notes.txt merge=ours\n")
    # What a sync killed while the driver ran leaves: its mark, a rebase, the index lock.
    group = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             start_new_session=True)  # fmt: skip
    (server / ".git" / REBASE_MARK).write_text(f"pid {group.pid} pgid {group.pid}\n")
    (server / ".git" / "index.lock").write_text("")
    try:
        with pytest.raises(SyncError, match="a process of its group may still run"):
            run(server)
        assert rebasing(server)
    finally:
        group.kill()
        group.wait()
    result, log, _ = run(server)
    assert f"aborted the rebase an interrupted sync left (pid {group.pid})" in log
    assert not rebasing(server) and not (server / ".git" / "index.lock").exists()
    assert result.commit is None  # notes.txt took the remote's version: nothing left to push


# --- the lock ---------------------------------------------------------------------------------


HOLDER = """
import sys, time
from pathlib import Path
from crdt_merge_driver.sync.lock import lock
with lock(Path(sys.argv[1]), sys.stderr):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_lock(git_dir: Path) -> subprocess.Popen[str]:
    """A real process holding the clone's lock (the same code sync runs), once it says so."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(git_dir)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_a_held_lock_refuses_a_second_run_until_its_holder_is_killed(
    pair: tuple[Path, Path],
) -> None:
    laptop, _ = pair
    holder = hold_lock(laptop / ".git")
    try:
        refused = f"another sync or backup \\(pid {holder.pid}\\) is running in this clone"
        with pytest.raises(RefusedError, match=refused):
            run(laptop)
        assert (laptop / ".git" / LOCK).read_text() == f"{holder.pid}\n"  # not ours to touch
    finally:
        holder.kill()  # SIGKILL: no cleanup of its own; the kernel drops the lock
        holder.wait()
    result, log, _ = run(laptop)
    assert result.attempts == 1 and "took over" not in log
    assert (laptop / ".git" / LOCK).read_text() == ""  # released: no pid left behind


def test_a_lock_file_nobody_holds_is_no_lock(pair: tuple[Path, Path]) -> None:
    # What the old pid-file lock, or a full disk, could leave: a file, empty or with a pid.
    laptop, _ = pair
    lock = laptop / ".git" / LOCK
    for left in ("", f"{os.getpid()}\n", "99999999\n"):
        lock.write_text(left)
        result, _, _ = run(laptop)
        assert result.attempts == 1


def test_files_a_killed_run_left_in_the_git_folder_are_removed(pair: tuple[Path, Path]) -> None:
    laptop, _ = pair
    git_dir = laptop / ".git"
    left = [git_dir / f"{ATTRIBUTES}.k1ll3d", git_dir / "crdt-merge-driver-backup.4242.index"]
    for path in left:
        path.write_bytes(b"left by a sync killed with -9\n")
    _, log, _ = run(laptop)
    assert not any(path.exists() for path in left)
    for path in left:
        assert f"removed {path.name}, left by an interrupted sync or backup" in log
    assert not list(git_dir.glob(f"{ATTRIBUTES}.*"))  # nor its own, once done


def test_the_lock_is_released_after_a_failure(pair: tuple[Path, Path]) -> None:
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(b"")  # emptied: a mass deletion
    with pytest.raises(RefusedError):
        run(laptop)
    with pytest.raises(RefusedError):
        run(laptop)  # refused for the same reason, not for the lock
    assert (laptop / ".git" / LOCK).read_text() == ""


# --- CI ------------------------------------------------------------------------------------------


def test_without_an_identity_sync_commits_as_itself(
    pair: tuple[Path, Path], origin: Path, hermetic_seal: Path
) -> None:
    # CI: no user.name or user.email anywhere, and no guessing from the host name.
    (hermetic_seal / ".gitconfig").write_text(
        "[user]\n\tuseConfigOnly = true\n[init]\n\tdefaultBranch = main\n"
        '[protocol "file"]\n\tallow = always\n'
    )
    laptop, server = pair
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    gitrepo.git(laptop, "-c", "user.name=L", "-c", "user.email=l@x", "commit", "--quiet",
                "--allow-empty", "-m", "meanwhile")  # fmt: skip
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    run(server)  # commits, then rebases (which commits again)
    host = socket.gethostname()
    fallback = f"crdt-merge-driver <crdt-merge-driver@{host}>"
    who = gitrepo.git(origin, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "main").strip()
    assert who == f"{fallback}|{fallback}"


def test_an_identity_git_would_refuse_is_not_taken_for_one(
    pair: tuple[Path, Path], origin: Path, hermetic_seal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name in the config and an e-mail in $EMAIL, which user.useConfigOnly makes git refuse
    # (found by review: every sync failed with "Author identity unknown").
    (hermetic_seal / ".gitconfig").write_text(
        "[user]\n\tname = Tess\n\tuseConfigOnly = true\n[init]\n\tdefaultBranch = main\n"
        '[protocol "file"]\n\tallow = always\n'
    )
    monkeypatch.setenv("EMAIL", "tess@example.com")
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    who = gitrepo.git(origin, "log", "-1", "--format=%an <%ae>", "main").strip()
    assert who == f"crdt-merge-driver <crdt-merge-driver@{socket.gethostname()}>"


def test_an_identity_that_is_set_is_used(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    assert gitrepo.git(origin, "log", "-1", "--format=%an", "main").strip() == "Test Machine"


def test_a_name_git_cannot_read_as_a_path_is_still_the_identity(
    pair: tuple[Path, Path], origin: Path
) -> None:
    # sync reads core.attributesFile and the identity in one `git config --type=path`,
    # which fails on a value starting "~nobody/": it reads them one by one instead.
    laptop, _ = pair
    gitrepo.git(laptop, "config", "user.name", "~nobody-here/x")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    assert gitrepo.git(origin, "log", "-1", "--format=%an", "main").strip() == "~nobody-here/x"


def test_a_shallow_single_branch_clone_syncs(
    tmp_path: Path, pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, _ = pair
    for name in ("erin", "frank"):
        (laptop / "memory.jsonl").write_bytes(memory(*SEED, name))
        run(laptop)
    shallow = tmp_path / "ci"
    gitrepo.git(tmp_path, "clone", "--quiet", "--depth=1", "--single-branch",
                f"file://{origin}", str(shallow))  # fmt: skip
    assert gitrepo.git(shallow, "rev-parse", "--is-shallow-repository").strip() == "true"
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "frank", "gina"))
    run(laptop)  # the remote moves past the shallow clone's only commit
    (shallow / "memory.jsonl").write_bytes(memory(*SEED, "frank", "hugo"))
    result, _, _ = run(shallow)
    assert result.commit is not None
    assert names_on(origin) == {*SEED, "frank", "gina", "hugo"}


def test_the_command_line_exit_codes(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin", "frank"))
    done = cli_sync(laptop, "-m", "from the command line")
    assert done.returncode == ExitCode.OK, done.stderr
    assert "synced: origin/main is at" in done.stderr
    (laptop / "memory.jsonl").write_bytes(memory("alice"))
    done = cli_sync(laptop)
    assert done.returncode == ExitCode.REFUSED
    assert done.stderr.splitlines()[-1].startswith("crdt-merge-driver: refusing to push")
    done = cli_sync(laptop, "--allow-mass-delete")
    assert done.returncode == ExitCode.OK, done.stderr
    assert names_on(origin) == {"alice"}


def test_git_missing_from_path_is_reported(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(pair[0]))
    with pytest.raises(GitError, match="git is not installed"):
        run(pair[0])


@pytest.mark.parametrize("spelled", ["absolute", "from home"])
def test_the_attributes_file_keeps_the_users_lines(
    pair: tuple[Path, Path], hermetic_seal: Path, spelled: str
) -> None:
    laptop, _ = pair
    custom = hermetic_seal / "my-attributes"
    custom.write_text("*.txt diff=plain")  # no final newline
    configured = str(custom) if spelled == "absolute" else "~/my-attributes"  # git expands ~
    gitrepo.git(laptop, "config", "core.attributesFile", configured)
    with sync_module.driver_environment(laptop, laptop / ".git") as env:
        assert env["GIT_CONFIG_KEY_3"] == "core.attributesFile"
        written = Path(env["GIT_CONFIG_VALUE_3"]).read_text().splitlines()
        with sync_module.driver_environment(laptop, laptop / ".git") as inner:
            assert inner["GIT_CONFIG_VALUE_3"] != env["GIT_CONFIG_VALUE_3"]
        assert Path(env["GIT_CONFIG_VALUE_3"]).exists()  # nesting leaves the outer one alone
    assert written[0] == "*.txt diff=plain"
    assert "memory*.jsonl merge=crdt-memory" in written


def test_existing_command_line_config_is_kept(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "user.name")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "From The Environment")
    laptop, _ = pair
    with sync_module.driver_environment(laptop, laptop / ".git") as env:
        assert env["GIT_CONFIG_COUNT"] == "5"
        assert env["GIT_CONFIG_KEY_1"] == "merge.crdt-memory.name"


# --- corners of the lock, the recovery and the checks ----------------------------------------


def test_process_checks_where_the_answer_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lock_module.stat_of(Path("/no/such/proc/stat")) is None
    assert not lock_module.group_gone(None)
    assert not lock_module.group_gone(os.getpgrp())

    def forbidden(pid: int, signal: int) -> None:
        raise PermissionError(pid)

    monkeypatch.setattr(os, "killpg", forbidden)
    assert not lock_module.group_gone(999999)  # someone else's group: cannot tell


def test_an_unreadable_mark_reads_as_empty(tmp_path: Path) -> None:
    assert rebase_module.read_mark(tmp_path) == {}  # a folder, not a file


def test_a_mark_without_a_rebase_is_just_removed(pair: tuple[Path, Path]) -> None:
    laptop, _ = pair
    mark = laptop / ".git" / REBASE_MARK
    mark.write_text("pid 1 pgid 1\n")
    result, log, _ = run(laptop)
    assert not mark.exists() and "aborted" not in log
    assert result.commit is None


def test_only_this_rebases_temp_files_are_removed(pair: tuple[Path, Path]) -> None:
    laptop, _ = pair
    old, new = laptop / ".merge_file_old123", laptop / ".merge_file_new456"
    old.write_text("a merge of someone else's, long ago")
    new.write_text("ours")
    past = time.time() - 600
    os.utime(old, (past, past))
    clone = clone_module.Clone(laptop, laptop / ".git", laptop / ".git", {}, "origin", "", "main")
    rebase_module.remove_merge_temps(clone, since=time.time() - 5)
    assert old.exists() and not new.exists()
    assert clone_module.read_blobs(clone, []) == []


def test_a_timeout_is_transient_and_other_git_errors_are_not() -> None:
    class Failing(NamedTuple):
        returncode: int

        def git(self, *args: str, **options: object) -> object:
            raise GitError("boom", returncode=self.returncode)

    with pytest.raises(Transient, match="git fetch timed out after 3s"):
        session_module.network(Failing(-1), "fetch", timeout=3)  # type: ignore[arg-type]
    with pytest.raises(GitError, match="boom"):
        session_module.network(Failing(0), "fetch", timeout=3)  # type: ignore[arg-type]


def test_unchanged_paths_make_no_commit(pair: tuple[Path, Path]) -> None:
    laptop, _ = pair
    before = gitrepo.head(laptop)
    result, log, _ = run(laptop, paths=[Path("memory.jsonl")])
    assert result.commit is None and gitrepo.head(laptop) == before
    assert "committed" not in log


def test_a_clone_with_no_commits_and_nothing_to_commit_has_nothing_to_push(
    tmp_path: Path, origin: Path
) -> None:
    fresh = gitrepo.init_repo(tmp_path / "fresh")
    gitrepo.git(fresh, "remote", "add", "origin", str(origin))
    result, log, _ = run(fresh)
    assert result.commit is None and "nothing to push" in log


def test_a_new_clone_of_its_own_history_merges_into_the_remote(
    tmp_path: Path, origin: Path
) -> None:
    # `git init`, point at the remote, write memory, sync: unrelated histories,
    # so both sides added memory.jsonl and the driver merges them.
    fresh = gitrepo.init_repo(tmp_path / "fresh")
    gitrepo.git(fresh, "remote", "add", "origin", str(origin))
    (fresh / "memory.jsonl").write_bytes(memory("newcomer"))
    result, _, _ = run(fresh)
    assert result.commit is not None
    assert names_on(origin) == {*SEED, "newcomer"}


def test_a_push_that_repairs_a_damaged_remote_file_is_allowed(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    damaged = memory(*SEED) + b"\n<<<<<<< HEAD\n=======\n>>>>>>> theirs"
    gitrepo.commit_file(laptop, "memory.jsonl", damaged, "a bad text merge")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "pull", "--quiet", "--ff-only")
    (server / "memory.jsonl").write_bytes(memory("alice"))  # "deletes" from a file of 0 records
    result, _, _ = run(server)
    assert result.commit is not None and names_on(origin) == {"alice"}


# --- the in-process replay ----------------------------------------------------------------------
#
# When every local commit only edits or adds memory files, sync replays them itself instead of
# running `git rebase` (crdt_merge_driver/sync/replay.py). Each test below runs the real git; the
# reflog says which of the two did the work.

REPLAYED = "crdt-merge-driver sync: replayed onto origin/main"


def last_move(clone: Path) -> str:
    return gitrepo.git(clone, "reflog", "-1", "--format=%gs", "HEAD").strip()


def rebased_by_git(clone: Path, tmp_path: Path) -> Path:
    """A copy of ``clone`` rebased onto its origin/main by git itself, with sync's driver."""
    copy = tmp_path / f"{clone.name}-rebased-by-git"
    shutil.copytree(clone, copy, symlinks=True)
    with sync_module.driver_environment(copy, copy / ".git") as env:
        done = git_module.run("rebase", "--merge", "--quiet", "origin/main", cwd=copy, env=env,
                              check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return copy


def edits_on_both_sides(laptop: Path, server: Path) -> None:
    gitrepo.commit_file(laptop, "memory.jsonl", gitrepo.jsonl(
        gitrepo.entity("alice"), gitrepo.entity("bob", observations=("from the laptop",)),
        *map(gitrepo.entity, ("carol", "dave", "erin"))))  # fmt: skip
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.write(server, "memory.jsonl", gitrepo.jsonl(
        gitrepo.entity("alice"), gitrepo.entity("bob", observations=("from the server",)),
        *map(gitrepo.entity, ("carol", "dave", "frank"))))  # fmt: skip
    gitrepo.git(server, "add", "memory.jsonl")
    gitrepo.git(server, "commit", "--quiet", "--author", "Ada Lovelace <ada@example.invalid>",
                "--date", "2001-02-03T04:05:06+0130", "-m",
                "frank\n\nand a body,\n\n  indented")  # fmt: skip
    gitrepo.commit_file(server, "memory-agent.jsonl", memory("agent"), "a new memory file")
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank", "gina"), "gina")


def a_change_already_upstream(laptop: Path, server: Path) -> None:
    for clone in (laptop, server):  # the same patch on both sides: rebase drops it
        gitrepo.commit_file(clone, "memory.jsonl", memory(*SEED, "erin"), f"erin on {clone.name}")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "erin", "frank"), "frank")


def a_change_that_becomes_empty(laptop: Path, server: Path) -> None:
    gitrepo.commit_file(laptop, "memory.jsonl", memory(*SEED, "erin", "frank"))
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))


def both_add_one_file_in_a_folder(laptop: Path, server: Path) -> None:
    gitrepo.commit_file(laptop, "agents/memory-claude.jsonl", memory("from-laptop"))
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "agents/memory-claude.jsonl", memory("from-server"))


@pytest.mark.parametrize(
    "history",
    [
        edits_on_both_sides,
        a_change_already_upstream,
        a_change_that_becomes_empty,
        both_add_one_file_in_a_folder,
    ],
)
def test_the_replay_makes_the_commits_git_rebase_makes(
    pair: tuple[Path, Path], origin: Path, tmp_path: Path, history: Callable[[Path, Path], None]
) -> None:
    laptop, server = pair
    history(laptop, server)
    gitrepo.git(server, "fetch", "--quiet", "origin")
    by_git = rebased_by_git(server, tmp_path)

    run(server)
    assert last_move(server) == REPLAYED
    # Dates are fixed (conftest): the same trees, authors, messages and parents, the same ids.
    assert gitrepo.head(server) == gitrepo.head(by_git)
    assert gitrepo.git(server, "status", "--porcelain") == ""
    assert (server / "memory.jsonl").read_bytes() == (by_git / "memory.jsonl").read_bytes()
    assert gitrepo.git(origin, "rev-parse", "main").strip() == gitrepo.head(server)


def test_the_replay_keeps_author_date_and_message(pair: tuple[Path, Path], origin: Path) -> None:
    laptop, server = pair
    edits_on_both_sides(laptop, server)
    shown = "%an <%ae>|%ad|%B"
    before = gitrepo.git(server, "log", "--date=raw", f"--format={shown}", "-3")
    run(server)
    assert last_move(server) == REPLAYED
    assert gitrepo.git(origin, "log", "--date=raw", f"--format={shown}", "-3", "main") == before
    first = gitrepo.git(origin, "log", "-1", "--skip=2", "--format=%an|%ad|%B", "main")
    message = "frank\n\nand a body,\n\n  indented\n"
    assert first == f"Ada Lovelace|Sat Feb 3 04:05:06 2001 +0130|{message}\n"
    assert gitrepo.git(origin, "rev-list", "--count", "main").strip() == "5"  # all replayed


def test_a_commit_that_touches_another_file_goes_to_git_rebase(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    run(server, paths=[Path("memory.jsonl"), Path(gitrepo.write(server, "notes.txt", b"n\n").name)])
    assert last_move(server).startswith("rebase (finish)")
    assert names_on(origin) == {*SEED, "erin", "frank"}
    assert remote_file(origin, "notes.txt") == b"n\n"


@pytest.mark.parametrize("also_notes", [False, True], ids=["replay", "rebase"])
def test_a_damaged_remote_file_is_refused_alike_by_replay_and_rebase(
    pair: tuple[Path, Path], also_notes: bool
) -> None:
    laptop, server = pair
    damaged = memory(*SEED) + b"\n<<<<<<< HEAD\n" + gitrepo.entity("x") + b"\n>>>>>>> theirs"
    gitrepo.commit_file(laptop, "memory.jsonl", damaged, "a bad text merge")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    if also_notes:
        gitrepo.write(server, "notes.txt", b"notes\n")
    before = gitrepo.head(server)
    with pytest.raises(RefusedError) as error:
        run(server, paths=[Path("memory.jsonl"), *([Path("notes.txt")] if also_notes else [])])
    assert str(error.value) == (
        "memory.jsonl: the version on origin/main is damaged (conflict marker (a text merge was "
        "left unresolved), line 5), so the driver cannot merge it; nothing pushed, rebase aborted, "
        "local commits kept. Repair it: delete the conflict-marker lines, run "
        "`crdt-merge-driver join memory.jsonl -o memory.jsonl`, commit, then sync again"
    )
    assert gitrepo.git(server, "rev-parse", "HEAD~1").strip() == before  # only our commit on top
    assert not rebasing(server) and gitrepo.git(server, "status", "--porcelain") == ""


def test_a_commit_made_during_the_replay_is_not_lost(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, server = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    write_commits = replay_module._write_commits
    meanwhile: list[str] = []

    def commit_meanwhile(*args: Any, **options: Any) -> str:
        # Between the fetch and the move of HEAD, someone commits in this clone.
        made = write_commits(*args, **options)
        if not meanwhile:
            meanwhile.append(gitrepo.commit_file(server, "memory-zoe.jsonl", memory("zoe")))
        return made

    monkeypatch.setattr(replay_module, "_write_commits", commit_meanwhile)
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    result, log, waits = run(server)
    assert "sync attempt 1: the local branch moved during the replay" in log
    assert result.attempts == 2 and len(waits) == 1
    assert names_on(origin) == {*SEED, "erin", "frank"}
    assert remote_file(origin, "memory-zoe.jsonl") == memory("zoe")
    assert last_move(server) == REPLAYED and gitrepo.git(server, "status", "--porcelain") == ""


def test_a_dirty_memory_file_goes_to_git_rebase_and_its_autostash(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    gitrepo.commit_file(server, "memory-unchanged.jsonl", memory("unchanged"))
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))
    gitrepo.write(server, "memory.jsonl", memory(*SEED, "frank", "gina"))  # not committed
    result, _, _ = run(server, paths=[Path("memory-unchanged.jsonl")])
    assert result.commit is not None and last_move(server).startswith("rebase (finish)")
    moves = gitrepo.git(server, "reflog", "--format=%gs", "HEAD").splitlines()
    assert "crdt-merge-driver sync: replay undone" in moves  # read-tree refused: HEAD went back
    assert names_on(origin) == {*SEED, "erin", "frank"}
    entities, _ = gitrepo.graph((server / "memory.jsonl").read_bytes())
    assert set(entities) == {*SEED, "erin", "frank", "gina"}  # kept, still uncommitted
    assert gitrepo.git(server, "status", "--porcelain") == " M memory.jsonl\n"


def test_a_memory_file_touched_but_unchanged_is_still_replayed(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))
    later = time.time() + 5
    os.utime(server / "memory.jsonl", (later, later))  # what an editor's save-as-is does
    run(server)
    assert last_move(server) == REPLAYED
    assert names_on(origin) == {*SEED, "erin", "frank"}


def test_with_the_kill_switch_git_rebase_does_the_work(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, "memory.jsonl", memory(*SEED, "erin"))
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))
    monkeypatch.setenv("CRDT_MERGE_DRIVER_DISABLE", "1")
    with pytest.raises(GitError, match=r"stopped on a conflict in memory\.jsonl"):
        run(server)  # git's text merge, as the driver's kill switch asks


def replay_cut_short(
    laptop: Path, server: Path, *, remote_only: tuple[str, bytes | None] | None = None
) -> tuple[str, str]:
    """What a sync killed between moving HEAD and the work tree leaves: the mark, HEAD moved.

    ``remote_only``: a file the laptop also pushed (None: deleted), which the server never touched.
    """
    gitrepo.commit_file(laptop, "memory.jsonl", memory(*SEED, "erin"))
    if remote_only is not None and remote_only[1] is not None:
        gitrepo.commit_file(laptop, remote_only[0], remote_only[1])
    elif remote_only is not None:
        gitrepo.git(laptop, "rm", "--quiet", remote_only[0])
        gitrepo.commit(laptop, f"remove {remote_only[0]}")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    old = gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))
    gitrepo.git(server, "fetch", "--quiet")
    merged = gitrepo.git(server, "hash-object", "-w", "--stdin",
                         input_bytes=memory(*SEED, "erin", "frank")).strip()  # fmt: skip
    ours = f"100644 blob {merged}\tmemory.jsonl"
    entries = [ours if line.endswith("\tmemory.jsonl") else line
               for line in gitrepo.git(server, "ls-tree", "origin/main").splitlines()]  # fmt: skip
    tree = gitrepo.git(server, "mktree", input_bytes="".join(f"{entry}\n" for entry in entries)
                       .encode()).strip()  # fmt: skip
    new = gitrepo.git(server, "commit-tree", tree, "-p", "origin/main", "-m", "frank").strip()
    gitrepo.git(server, "update-ref", "HEAD", new, old)
    mark = {"pid": 99999999, "pgid": 99999999, "old": old, "new": new}
    (server / ".git" / checkout_module.REPLAY_MARK).write_bytes(orjson.dumps(mark))
    return old, new


def test_a_replay_killed_before_the_work_tree_followed_is_finished(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    _, new = replay_cut_short(laptop, server)
    # Without the recovery, sync would commit the old file on top: erin deleted.
    result, log, _ = run(server)
    assert "finished the replay an interrupted sync left (pid 99999999)" in log
    assert "committed" not in log and result.commit == new
    assert names_on(origin) == {*SEED, "erin", "frank"}
    assert not (server / ".git" / checkout_module.REPLAY_MARK).exists()


def test_a_replay_killed_before_the_work_tree_followed_keeps_what_only_the_remote_changed(
    pair: tuple[Path, Path], origin: Path
) -> None:
    # Found by review: the mark named only the files the local commits changed,
    # so a file only the remote changed stayed old, and the next sync committed
    # that as a change: the other machine's records undone.
    laptop, server = pair
    _, new = replay_cut_short(laptop, server, remote_only=("memory-agent.jsonl", memory("agent")))
    assert not (server / "memory-agent.jsonl").exists()  # the work tree never followed
    result, log, _ = run(server)
    assert "committed" not in log and result.commit == new
    assert (server / "memory-agent.jsonl").read_bytes() == memory("agent")
    assert gitrepo.git(origin, "show", "main:memory-agent.jsonl").encode() == memory("agent")
    assert gitrepo.git(server, "status", "--porcelain") == ""


def test_a_replay_killed_before_the_work_tree_followed_removes_what_the_remote_removed(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    gitrepo.commit_file(laptop, "memory-agent.jsonl", memory("agent"))
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "pull", "--quiet", "--ff-only")
    _, new = replay_cut_short(laptop, server, remote_only=("memory-agent.jsonl", None))
    assert (server / "memory-agent.jsonl").exists()  # the work tree never followed
    result, log, _ = run(server)
    assert "committed" not in log and result.commit == new
    assert not (server / "memory-agent.jsonl").exists()
    assert gitrepo.git(server, "status", "--porcelain") == ""


def test_an_edit_made_while_a_replay_was_cut_short_is_kept(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    replay_cut_short(laptop, server)
    (server / "memory.jsonl").write_bytes(memory(*SEED, "erin", "frank", "gina"))
    (server / ".git" / "index.lock").write_text("")  # and git was killed holding the index
    log = io.StringIO()
    sync_module.recover_interrupted(repo=server, log=log)
    assert "warning: memory.jsonl changed while an interrupted sync was replaying" in log.getvalue()
    assert not (server / ".git" / "index.lock").exists()
    run(server)
    assert names_on(origin) == {*SEED, "erin", "frank", "gina"}


def the_same_file_on_both_sides(laptop: Path, server: Path) -> None:
    gitrepo.commit_file(laptop, "memory.jsonl", memory(*SEED, "erin"))
    gitrepo.commit_file(laptop, "memory.jsonl", memory(*SEED, "erin", "frank"))
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "erin", "frank"))  # another patch


def a_merge_among_the_local_commits(laptop: Path, server: Path) -> None:
    gitrepo.commit_file(laptop, "memory.jsonl", memory(*SEED, "erin"))
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "checkout", "--quiet", "-b", "side")
    gitrepo.commit_file(server, "memory-agent.jsonl", memory("agent"))
    gitrepo.git(server, "checkout", "--quiet", "main")
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))
    gitrepo.git(server, "merge", "--quiet", "--no-ff", "--no-edit", "side")


def a_file_the_remote_renamed(laptop: Path, server: Path) -> None:
    gitrepo.git(laptop, "mv", "memory.jsonl", "memory-main.jsonl")
    gitrepo.git(laptop, "commit", "--quiet", "-m", "rename")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))


def other_attributes_on_the_remote(laptop: Path, server: Path) -> None:
    gitrepo.write(laptop, ".gitattributes", b"memory.jsonl merge=union\n")
    gitrepo.write(laptop, "memory.jsonl", memory(*SEED, "erin"))
    gitrepo.commit(laptop, "union from now on")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))


def a_message_in_another_encoding(laptop: Path, server: Path) -> None:
    gitrepo.commit_file(laptop, "memory.jsonl", memory(*SEED, "erin"))
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.write(server, "memory.jsonl", memory(*SEED, "frank"))
    gitrepo.git(server, "-c", "i18n.commitEncoding=ISO-8859-1", "commit", "--quiet", "-am", "f")


@pytest.mark.parametrize(
    ("history", "by"),
    [
        (the_same_file_on_both_sides, REPLAYED),
        (a_merge_among_the_local_commits, "rebase (finish)"),
        (a_file_the_remote_renamed, "rebase (finish)"),
        (other_attributes_on_the_remote, "rebase (finish)"),
        (a_message_in_another_encoding, "rebase (finish)"),
    ],
)
def test_what_the_replay_leaves_to_git_rebase_comes_out_as_git_makes_it(
    pair: tuple[Path, Path], tmp_path: Path, history: Callable[[Path, Path], None], by: str
) -> None:
    laptop, server = pair
    history(laptop, server)
    gitrepo.git(server, "fetch", "--quiet", "origin")
    by_git = rebased_by_git(server, tmp_path)
    run(server)
    assert last_move(server).startswith(by)
    assert gitrepo.head(server) == gitrepo.head(by_git)


def test_a_damaged_replay_mark_and_an_index_lock_stop_sync(pair: tuple[Path, Path]) -> None:
    laptop, _ = pair
    mark = laptop / ".git" / checkout_module.REPLAY_MARK
    mark.write_text("not json")
    lock = laptop / ".git" / "index.lock"
    lock.write_text("")
    with pytest.raises(SyncError, match=r"index\.lock, and a process of its group may still"):
        run(laptop)  # whose sync it was is unknown: it might still run
    lock.unlink()
    result, log, _ = run(laptop)
    assert "finished the replay an interrupted sync left (pid ?)" in log
    assert not mark.exists() and result.commit is None


def test_an_attempt_that_loses_the_race_leaves_head_where_it_was(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, server = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    mine = gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))
    push = sync_module.push
    at_push: list[str] = []

    def lose_once(
        clone: clone_module.Clone, head: str, timeout: float, carried: dict[str, str],
        record: Record | None = None,
    ) -> None:
        at_push.append(gitrepo.head(server))
        if len(at_push) == 1:
            raise Transient("push failed: rejected: the remote moved on")
        push(clone, head, timeout, carried, record=record)

    monkeypatch.setattr(sync_module, "push", lose_once)
    result, _, _ = run(server)
    assert at_push == [mine, mine]  # replayed, pushed, and only then checked out
    assert result.attempts == 2 and result.commit == gitrepo.head(server)
    moves = gitrepo.git(server, "reflog", "--format=%gs", "HEAD").splitlines()
    assert moves.count(REPLAYED) == 1
    assert names_on(origin) == {*SEED, "erin", "frank"}


def test_a_work_tree_that_cannot_follow_a_landed_push_says_it_landed(
    pair: tuple[Path, Path], origin: Path
) -> None:
    # Found by review: the push had landed, yet the message said "nothing pushed".
    laptop, server = pair
    gitrepo.write(laptop, "notes.txt", b"the laptop's notes\n")
    gitrepo.write(laptop, "memory.jsonl", memory(*SEED, "erin"))
    gitrepo.commit(laptop, "notes and erin")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))
    gitrepo.write(server, "notes.txt", b"the server's own, never committed\n")
    with pytest.raises(GitError) as raised:
        run(server)
    message = str(raised.value)
    assert "is on origin/main already" in message and "nothing pushed" not in message, message
    assert "notes.txt" in message, message  # what is in the way
    assert names_on(origin) == {*SEED, "erin", "frank"}
    assert (server / "notes.txt").read_bytes() == b"the server's own, never committed\n"
