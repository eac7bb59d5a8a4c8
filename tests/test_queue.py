"""The queue on the remote (pending.py): commits that lost a race wait there, one push lands all.

Real git against real bare remotes throughout. A commit "waits in the
queue" exactly as a sync leaves it: pushed by hand to
``refs/crdt-merge-driver/pending/main/<name>``. Where a test needs a sync to
lose a race, its push is made to fail once; where it needs another machine
to act while a sync waits, the injected ``sleep`` does it.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crdt_merge_driver.errors import GaveUpError, GitError
from crdt_merge_driver.sync import landing as sync_module
from crdt_merge_driver.sync import pending as pending_module
from crdt_merge_driver.sync import retry
from crdt_merge_driver.sync.clone import Clone
from crdt_merge_driver.sync.landing import SyncResult, Transient, sync
from crdt_merge_driver.sync.pending import NAMESPACE, Queue, Record
from crdt_merge_driver.sync.verdict import classify, refused
from tests import gitrepo
from tests.test_sync import SEED, memory, names_on, origin, pair, remote_file

__all__ = ["origin", "pair"]  # fixtures, used by name
QUEUE = f"{NAMESPACE}/main/"
WITHOUT_BOB = tuple(name for name in SEED if name != "bob")  # a deletion to land exactly once


@pytest.fixture(autouse=True)
def no_crowd_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # A loaded test machine must not make a sync join the queue before its first try.
    monkeypatch.setattr(sync_module, "WAIT_CROWD_FROM", math.inf)


def waiting_refs(remote: Path) -> dict[str, str]:
    listed = gitrepo.git(remote, "for-each-ref", "--format=%(refname) %(objectname)", NAMESPACE)
    return dict(line.split(" ") for line in listed.splitlines())


def queue_commit(
    machine: Path, name: str, *entities: str, data: bytes | None = None,
    file: str = "memory.jsonl",
) -> str:  # fmt: skip
    """Commit on ``machine`` and leave it waiting in the queue, as a sync that lost a race does."""
    written = memory(*SEED, *entities) if data is None else data
    commit = gitrepo.commit_file(machine, file, written, f"memory from {name}")
    gitrepo.git(machine, "push", "--quiet", "origin", f"HEAD:{QUEUE}{name}")
    return commit


def run(
    machine: Path, sleep: Callable[[float], None] | None = None, **options: object
) -> tuple[SyncResult, str, list[float]]:
    log = io.StringIO()
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if sleep is not None:
            sleep(seconds)

    result = sync(repo=machine, sleep=wait, log=log, **options)  # type: ignore[arg-type]
    return result, log.getvalue(), waits


def interrupt(_: float) -> None:
    raise KeyboardInterrupt  # Ctrl-C during a wait


def script_pushes(monkeypatch: pytest.MonkeyPatch, *steps: str) -> Callable[..., None]:
    """The sync's next pushes to the branch do as told, in order, then land; the real push.

    "lose": refused, as if another machine won (nothing lands); "hang up": it
    lands, but the answer is lost (as a timeout or a reset would).
    """
    push = sync_module.push
    script = list(steps)

    def scripted(
        clone: Clone, head: str, timeout: float, carried: dict[str, str],
        record: Record | None = None,
    ) -> None:  # fmt: skip
        step = script.pop(0) if script else "land"
        if step == "lose":
            raise Transient("push failed: rejected: the remote moved on")
        push(clone, head, timeout, carried, record=record)
        if step == "hang up":
            raise Transient("push failed: the remote hung up", unclear=True)

    monkeypatch.setattr(sync_module, "push", scripted)
    return push


def lose_first_push(monkeypatch: pytest.MonkeyPatch) -> None:
    script_pushes(monkeypatch, "lose")


@pytest.fixture
def third(tmp_path: Path, origin: Path) -> Path:
    return gitrepo.clone(origin, tmp_path / "runner")


# --- carrying ---------------------------------------------------------------------


def test_a_sync_carries_every_commit_waiting_in_the_queue(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    laptop, server = pair
    queue_commit(server, "server.1.aa", "frank")
    queue_commit(third, "runner.2.bb", "grace")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    result, log, _ = run(laptop)
    assert result.attempts == 1 and result.commit == gitrepo.head(laptop)
    assert "carrying 2 other machines' waiting commits" in log
    assert names_on(origin) == {*SEED, "erin", "frank", "grace"}  # each once: graph() checks
    assert waiting_refs(origin) == {}  # deleted in the same push that landed them
    # each carried commit keeps its message and author, as git rebase would
    messages = gitrepo.git(origin, "log", "--format=%s", "main").splitlines()
    assert messages[:2] == ["memory from server.1.aa", "memory from runner.2.bb"]  # name order


def test_a_sync_whose_commits_were_carried_follows_the_branch(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, server = pair
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    lose_first_push(monkeypatch)
    carried: list[SyncResult] = []

    def another_machine_lands(_: float) -> None:
        # While the server waits, the laptop syncs and carries the server's commit.
        if not carried:
            (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
            carried.append(sync(repo=laptop, sleep=lambda _: None, log=io.StringIO()))

    result, log, _ = run(server, another_machine_lands)
    assert "waits in refs/crdt-merge-driver/pending/main/" in log
    assert "another machine's push landed" in log
    assert result.attempts == 2 and result.commit == carried[0].commit == gitrepo.head(server)
    assert names_on(origin) == {*SEED, "erin", "frank"}
    assert gitrepo.git(server, "status", "--porcelain") == ""
    assert memory(*SEED) != (server / "memory.jsonl").read_bytes()
    assert (server / "memory.jsonl").read_bytes() == remote_file(origin)
    assert waiting_refs(origin) == {}


def test_a_sync_that_lands_itself_takes_its_commits_out_of_the_queue(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = pair
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    lose_first_push(monkeypatch)
    result, log, waits = run(server)
    assert "waits in" in log and result.attempts == 2 and len(waits) == 1
    assert names_on(origin) == {*SEED, "frank"}
    assert waiting_refs(origin) == {}


def test_commits_a_killed_sync_left_in_the_queue_land_and_its_next_sync_follows(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    laptop, server = pair
    queue_commit(server, "server.1.aa", "frank")  # and then the sync was killed
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    assert names_on(origin) == {*SEED, "erin", "frank"}
    result, log, _ = run(server)  # the killed machine's next sync
    assert result.commit is None and "nothing to push" in log
    assert gitrepo.head(server) == gitrepo.git(origin, "rev-parse", "main").strip()
    assert names_on(origin) == {*SEED, "erin", "frank"}


# --- what is never carried ----------------------------------------------------------


def test_a_damaged_waiting_commit_is_left_and_does_not_block_the_others(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    laptop, server = pair
    damaged = memory(*SEED) + b"\n<<<<<<< ours\n" + memory("frank") + b"\n>>>>>>> theirs\n"
    bad = queue_commit(server, "server.1.aa", data=damaged)
    queue_commit(third, "runner.2.bb", "grace")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    result, log, _ = run(laptop)
    assert result.attempts == 1 and "carrying 1 other machines' waiting commits" in log
    assert names_on(origin) == {*SEED, "erin", "grace"}
    assert b"<<<<<<<" not in remote_file(origin)
    assert waiting_refs(origin) == {f"{QUEUE}server.1.aa": bad}  # for its own sync to refuse


def test_a_waiting_mass_delete_is_not_carried_and_the_rest_are(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    # Another machine's --allow-mass-delete is not this machine's to give.
    laptop, server = pair
    emptied = queue_commit(server, "server.1.aa", data=b"")
    queue_commit(third, "server.2.bb", "grace")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    result, log, _ = run(laptop, allow_mass_delete=True)
    assert result.attempts == 1 and "carrying 1 other machines' waiting commits" in log
    assert names_on(origin) == {*SEED, "erin", "grace"}
    assert waiting_refs(origin) == {f"{QUEUE}server.1.aa": emptied}


def test_a_chain_built_on_one_left_out_is_left_out_too(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    # Found by review: the later commit was carried without the earlier one it builds on,
    # and its sync, finding its ref gone, followed the branch without the earlier change.
    laptop, server = pair
    tmp_seed = seed = gitrepo.clone(origin, third.parent / "seed-again")
    gitrepo.commit_file(seed, "memory-old.jsonl", memory("zoe"), "an older memory file")
    gitrepo.git(seed, "push", "--quiet", "origin", "HEAD:main")
    for machine in (laptop, server):
        gitrepo.git(machine, "pull", "--quiet", "--rebase", "origin", "main")
    first = queue_commit(server, "server.1.aa", data=memory("zoe", "yann"), file="memory-old.jsonl")
    later = queue_commit(server, "server.2.bb", "frank")  # on top of the first
    gitrepo.git(tmp_seed, "rm", "--quiet", "memory-old.jsonl")  # what the first edits
    gitrepo.commit(tmp_seed, "no older memory")
    gitrepo.git(tmp_seed, "push", "--quiet", "origin", "HEAD:main")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    _, log, _ = run(laptop)
    assert "carrying" not in log and names_on(origin) == {*SEED, "erin"}
    assert waiting_refs(origin) == {f"{QUEUE}server.1.aa": first, f"{QUEUE}server.2.bb": later}


def test_a_ref_whose_commits_are_upstream_already_goes_without_a_word(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, _ = pair
    seed = gitrepo.git(origin, "rev-parse", "main").strip()
    gitrepo.git(laptop, "push", "--quiet", "origin", f"{seed}:refs/heads/x")
    gitrepo.git(origin, "update-ref", f"{QUEUE}server.1.aa", seed)
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    _, log, _ = run(laptop)
    assert "carrying" not in log  # nothing was carried: the commit was there
    assert waiting_refs(origin) == {}


def test_a_waiting_commit_beyond_replay_is_left_for_its_own_sync(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    gitrepo.write(server, "notes.txt", b"not a memory file\n")
    gitrepo.write(server, "memory.jsonl", memory(*SEED, "frank"))
    gitrepo.commit(server, "notes and frank")
    gitrepo.git(server, "push", "--quiet", "origin", f"HEAD:{QUEUE}server.1.aa")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    _, log, _ = run(laptop)
    assert "carrying" not in log
    assert names_on(origin) == {*SEED, "erin"}
    assert list(waiting_refs(origin)) == [f"{QUEUE}server.1.aa"]
    # Its own sync lands it (through git rebase) and takes it out of the queue.
    result, _, _ = run(server)
    assert result.commit is not None
    assert names_on(origin) == {*SEED, "erin", "frank"}
    assert "notes.txt" in gitrepo.git(origin, "ls-tree", "--name-only", "main")
    assert waiting_refs(origin) == {}


def test_a_queue_for_another_branch_is_never_carried(
    pair: tuple[Path, Path], origin: Path
) -> None:
    laptop, server = pair
    gitrepo.commit_file(server, "memory.jsonl", memory(*SEED, "frank"))
    other = f"{NAMESPACE}/main%2Fold/server.1.aa"  # the queue of a branch named main/old
    gitrepo.git(server, "push", "--quiet", "origin", f"HEAD:{other}")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    _, log, _ = run(laptop)
    assert "carrying" not in log and names_on(origin) == {*SEED, "erin"}
    assert list(waiting_refs(origin)) == [other]


# --- remotes that do not take the queue -------------------------------------------------


def test_a_remote_that_refuses_the_queue_refs_still_lands(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = origin / "hooks" / "update"
    hook.write_text('#!/bin/sh\ncase "$1" in refs/heads/*) exit 0;; esac\n'
                    'echo "only branches here" >&2\nexit 1\n')  # fmt: skip
    hook.chmod(0o755)
    _, server = pair
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    lose_first_push(monkeypatch)
    result, log, _ = run(server)
    assert "landing alone from now on" in log
    assert result.attempts == 2 and names_on(origin) == {*SEED, "frank"}
    assert waiting_refs(origin) == {}


def test_a_remote_without_atomic_pushes_turns_the_queue_off(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    gitrepo.git(origin, "config", "receive.advertiseAtomic", "false")
    laptop, server = pair
    queue_commit(server, "server.1.aa", "frank")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    result, log, waits = run(laptop)
    assert "the remote does not take atomic pushes; landing alone from now on" in log
    assert result.attempts == 2 and len(waits) == 1
    assert names_on(origin) == {*SEED, "erin"}
    assert list(waiting_refs(origin)) == [f"{QUEUE}server.1.aa"]


# --- who lands ------------------------------------------------------------------------


def made(seconds_ago: float = 0.0) -> str:
    """The time part of a queue ref's name, for a ref made ``seconds_ago``."""
    return f"{round((time.time() - seconds_ago) * 1000):013d}"


def test_the_oldest_in_the_queue_lands_and_the_others_wait_for_it(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = pair
    first = f"{made()}.aa.1.first"
    queue_commit(third, first, "grace")  # the oldest: its sync is the one to land
    later = f"{made(-1)}.zz.2.later"
    monkeypatch.setattr(Queue, "new_name", lambda self: f"{self.remote_prefix}{later}")
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    lose_first_push(monkeypatch)
    looks: list[float] = []

    def first_never_comes(seconds: float) -> None:
        looks.append(seconds)
        if len(looks) == 3:  # as if PATIENCE seconds had passed
            monkeypatch.setattr(pending_module, "PATIENCE", -1.0)

    result, log, waits = run(server, first_never_comes)
    assert log.count(f"waiting for {first}, first in the queue of 2, to land it") == 2
    # each look waits at least half of WAIT_QUEUE_EACH per waiting commit
    assert all(wait >= retry.WAIT_QUEUE_EACH for wait in waits[1:3])
    assert "carrying 1 other machines' waiting commits" in log
    assert result.attempts == 4
    assert names_on(origin) == {*SEED, "frank", "grace"}
    assert waiting_refs(origin) == {}


def test_an_old_ref_never_holds_the_queue_up(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Left by a sync killed long ago, with commits nobody can carry (damaged): not a leader.
    _, server = pair
    damaged = memory(*SEED) + b"\n<<<<<<< ours\n"
    stale = queue_commit(third, f"{made(3600)}.old.1.aa", data=damaged)
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    lose_first_push(monkeypatch)
    result, log, _ = run(server)
    assert "waiting for" not in log and result.attempts == 2
    assert names_on(origin) == {*SEED, "frank"}
    assert list(waiting_refs(origin).values()) == [stale]


def test_the_leader_is_the_oldest_live_ref_until_patience_runs_out(
    pair: tuple[Path, Path],
) -> None:
    clone = Clone(pair[0], pair[0] / ".git", pair[0] / ".git", {}, "origin", "", "main")
    queue = Queue(clone)
    first, mine = f"{QUEUE}{made(1)}.a", f"{QUEUE}{made()}.b"
    assert queue.leader({first: "1"}) is None  # not in the queue: land
    queue.joined(mine, "2")
    assert queue.leader({first: "1", mine: "2"}) == first
    assert queue.leader({mine: "2"}) is None  # first now
    assert queue.leader({first: "1"}) is None  # carried already: the caller follows
    old, unnamed = f"{QUEUE}{made(pending_module.PATIENCE + 1)}.c", f"{QUEUE}by-hand"
    assert queue.leader({old: "3", unnamed: "4", mine: "2"}) is None  # neither leads
    # In a long race every ref grows old together: the oldest still leads.
    early, late = f"{QUEUE}{made(21)}.a", f"{QUEUE}{made(20)}.b"
    queue.joined(late, "2")
    assert queue.leader({early: "1", late: "2"}) == early
    queue.waited = pending_module.PATIENCE + 0.1
    assert queue.leader({first: "1", late: "2"}) is None


def test_names_are_escaped_so_branches_never_share_a_queue() -> None:
    clone = Clone(Path(), Path(), Path(), {}, "up/stream", "", "feature/x%y")
    queue = Queue(clone)
    assert queue.remote_prefix == f"{NAMESPACE}/feature%2Fx%25y/"
    assert queue.refspecs() == [
        f"+{NAMESPACE}/feature%2Fx%25y/*:refs/crdt-merge-driver/seen/up%2Fstream/feature%2Fx%25y/*",
        "+refs/crdt-merge-driver/record/feature%2Fx%25y/*"
        ":refs/crdt-merge-driver/seen-record/up%2Fstream/feature%2Fx%25y/*",
    ]
    name = queue.new_name()
    assert name.startswith(queue.remote_prefix)
    assert "/" not in name.removeprefix(queue.remote_prefix)
    queue.off = "refused"
    assert queue.refspecs() == [] and queue.waiting() == {}


def test_carrying_works_in_a_sha256_repository(tmp_path: Path) -> None:
    # The replay computes each commit's id itself (to chain parents): SHA-256 ids too.
    remote = tmp_path / "remote.git"
    gitrepo.git(tmp_path, "init", "--quiet", "--bare", "--object-format=sha256",
                "--initial-branch=main", str(remote))  # fmt: skip
    seed = tmp_path / "seed"  # not a clone: git 2.39 clones an empty repository as SHA-1
    gitrepo.git(tmp_path, "init", "--quiet", "--object-format=sha256", str(seed))
    gitrepo.git(seed, "remote", "add", "origin", str(remote))
    gitrepo.commit_file(seed, "memory.jsonl", memory(*SEED), "seed memory")
    gitrepo.git(seed, "push", "--quiet", "origin", "HEAD:main")
    laptop, server = (gitrepo.clone(remote, tmp_path / name) for name in ("laptop", "server"))
    queue_commit(server, "server.1.aa", "frank")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    gitrepo.commit(laptop, "erin", "memory.jsonl")  # not on the remote's tip: replayed
    gitrepo.git(seed, "commit", "--quiet", "--allow-empty", "-m", "moved on")
    gitrepo.git(seed, "push", "--quiet", "origin", "HEAD:main")
    result, log, _ = run(laptop)
    assert "carrying 1 other machines' waiting commits" in log
    assert result.commit is not None and len(result.commit) == 64
    assert names_on(remote) == {*SEED, "erin", "frank"}
    gitrepo.git(remote, "fsck", "--strict", "--no-dangling")


# --- a sync's own ref: it never outlives the sync, or lies about landing -----------------


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        # Off, the queue is not fetched: the sync's own ref looked gone, and the sync
        # followed the branch without its commits (found by review).
        ("receive.advertiseAtomic=false", "the remote does not take atomic pushes"),
        # Hidden from fetches, the sync's own ref looked carried (found by review).
        ("uploadpack.hideRefs=refs/crdt-merge-driver", "left the queue without landing"),
    ],
)
def test_a_sync_that_joined_a_queue_the_remote_breaks_lands_its_own_commits(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch, setting: str,
    said: str,
) -> None:  # fmt: skip
    gitrepo.git(origin, "config", *setting.split("=", 1))
    _, server = pair
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    lose_first_push(monkeypatch)
    result, log, _ = run(server)
    assert "waits in" in log and said in log and "landing alone" in log
    assert "another machine's push landed" not in log
    assert result.commit == gitrepo.head(server) and names_on(origin) == {*SEED, "frank"}
    assert waiting_refs(origin) == {}  # taken out once the commits landed


def test_a_push_that_landed_but_said_it_failed_leaves_no_ref(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script_pushes(monkeypatch, "hang up")
    _, server = pair
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    result, log, _ = run(server)
    # found by review: a push whose answer was lost may have landed, and joining the queue
    # then would have let another machine land the same commits a second time
    assert "waits in" not in log and result.commit is None  # nothing left to push
    assert gitrepo.head(server) == gitrepo.git(origin, "rev-parse", "main").strip()
    assert names_on(origin) == {*SEED, "frank"}
    assert waiting_refs(origin) == {}


def test_a_sync_that_gives_up_takes_its_commits_out_of_the_queue(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: the ref stayed, and another machine landed the commits after this
    # sync had said it gave up.
    _, server = pair
    first = queue_commit(third, f"{made()}.aa.1.first", "grace")
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    lose_first_push(monkeypatch)
    with pytest.raises(GaveUpError, match="after 3 attempts") as error:
        run(server, attempts=3)  # the first never lands, and patience outlasts 3 attempts
    assert "may land" not in str(error.value)
    assert list(waiting_refs(origin).values()) == [first]
    assert names_on(origin) == set(SEED)


def test_a_fatal_push_that_carries_the_queue_is_still_fatal(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    # Only a remote without atomic pushes turns the queue off; a refusal stays a refusal.
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected: ask for review' >&2\nexit 1\n")
    queue_commit(third, "runner.2.bb", "grace")
    hook.chmod(0o755)
    laptop, _ = pair
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    with pytest.raises(GitError, match="hook refused the push: main is protected"):
        run(laptop)
    assert list(waiting_refs(origin)) == [f"{QUEUE}runner.2.bb"]


def test_a_message_that_is_not_utf8_goes_to_git_rebase(
    pair: tuple[Path, Path], origin: Path
) -> None:
    # Found by review: commit-tree rewrites such text (as Latin-1), so the ids differed.
    laptop, server = pair
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    run(server)
    gitrepo.write(laptop, "memory.jsonl", memory(*SEED, "erin"))
    gitrepo.git(laptop, "add", "memory.jsonl")
    tree = gitrepo.git(laptop, "write-tree").strip()
    parent = gitrepo.head(laptop)
    who = b"Ann <ann@example.invalid> 1767225600 +0000"
    raw = b"tree %s\nparent %s\nauthor %s\ncommitter %s\n\ncaf\xe9 notes\n" % (
        tree.encode(), parent.encode(), who, who
    )  # as an old tool wrote it: git commit itself would store UTF-8
    made = gitrepo.git(laptop, "hash-object", "-t", "commit", "-w", "--stdin", input_bytes=raw)
    gitrepo.git(laptop, "update-ref", "HEAD", made.strip())
    run(laptop)
    assert gitrepo.git(laptop, "reflog", "-1", "--format=%gs", "HEAD").startswith("rebase")
    assert names_on(origin) == {*SEED, "erin", "frank"}


def test_a_push_url_elsewhere_turns_the_queue_off(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    # A fetch from one place cannot tell what a push to another did with the queue.
    laptop, _ = pair
    queue_commit(third, "runner.2.bb", "grace")
    gitrepo.git(laptop, "remote", "set-url", "--push", "origin", f"file://{origin}")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    _, log, _ = run(laptop)
    assert "carrying" not in log and names_on(origin) == {*SEED, "erin"}
    assert list(waiting_refs(origin)) == [f"{QUEUE}runner.2.bb"]
    gitrepo.git(laptop, "config", "--unset", "remote.origin.pushurl")
    gitrepo.git(laptop, "config", f"url.{origin}.pushInsteadOf", str(origin))  # the same place
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin", "ivy"))
    _, log, _ = run(laptop)
    assert "carrying 1 other machines' waiting commits" in log


# --- a landed commit never lands twice (found by the second review) -----------------------


def carry_then_readd_bob(laptop: Path, third: Path, origin: Path) -> None:
    """The laptop's sync carries the server's deletion of bob; then a third machine re-adds him."""
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    sync(repo=laptop, sleep=lambda _: None, log=io.StringIO())
    assert "bob" not in names_on(origin)
    gitrepo.git(third, "pull", "--quiet", "origin", "main")
    data = (third / "memory.jsonl").read_bytes()
    gitrepo.commit_file(third, "memory.jsonl", data + b"\n" + gitrepo.entity("bob"), "re-add bob")
    gitrepo.git(third, "push", "--quiet", "origin", "HEAD:main")


def test_commits_made_while_waiting_land_on_top_of_the_carried_one(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's deletion of bob waits in the queue; another push carries it; bob is re-added;
    # meanwhile the user commits on the server. The deletion must not be applied a second time.
    laptop, server = pair
    without_bob = memory(*WITHOUT_BOB)
    (server / "memory.jsonl").write_bytes(without_bob)
    lose_first_push(monkeypatch)
    done: list[bool] = []

    def meanwhile(_: float) -> None:
        if not done:
            done.append(True)
            carry_then_readd_bob(laptop, third, origin)
            gitrepo.commit_file(server, "memory-notes.jsonl", memory("zed"), "the user's own")

    result, log, _ = run(server, meanwhile, paths=[Path("memory.jsonl")])
    assert "another machine's push landed" in log
    assert "bob" in names_on(origin)  # his re-add stands
    assert b"zed" in gitrepo.git(origin, "show", "main:memory-notes.jsonl").encode()
    assert result.commit == gitrepo.head(server)
    assert gitrepo.git(origin, "log", "-1", "--format=%s", "main").strip() == "the user's own"


def test_an_interrupted_sync_s_next_run_knows_its_commits_were_carried(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, server = pair
    without_bob = memory(*WITHOUT_BOB)
    (server / "memory.jsonl").write_bytes(without_bob)
    lose_first_push(monkeypatch)

    with pytest.raises(KeyboardInterrupt):
        run(server, interrupt)  # Ctrl-C while waiting in the queue
    assert list((server / ".git").glob(f"{pending_module.QUEUED}.*"))
    carry_then_readd_bob(laptop, third, origin)
    result, log, _ = run(server)  # the next sync in that clone
    assert "another machine's push landed" in log
    assert result.commit == gitrepo.head(server) == gitrepo.git(origin, "rev-parse", "main").strip()
    assert "bob" in names_on(origin)  # not deleted a second time
    assert not list((server / ".git").glob(f"{pending_module.QUEUED}.*"))


def test_a_timeout_while_taking_the_ref_out_is_still_one_line(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, server = pair
    slow = tmp_path / "slow"
    script = tmp_path / "slow-receive-pack"
    script.write_text(
        f'#!/bin/sh\nif [ -e {slow} ]; then sleep 5; fi\nexec git-receive-pack "$@"\n'
    )
    script.chmod(0o755)
    gitrepo.git(server, "config", "remote.origin.receivepack", str(script))
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    lose_first_push(monkeypatch)
    with pytest.raises(GaveUpError, match="still there: the remote did not take the deletion"):
        run(server, lambda _: slow.write_text(""), attempts=2, deadline=2)


def test_a_killed_sync_s_ref_on_the_branch_goes_when_the_clone_is_behind(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    laptop, _ = pair
    seed = gitrepo.git(origin, "rev-parse", "main").strip()
    gitrepo.git(origin, "update-ref", f"{QUEUE}{made()}.old.1.aa", seed)  # its commit is on main
    gitrepo.commit_file(third, "memory.jsonl", memory(*SEED, "grace"), "grace")
    gitrepo.git(third, "push", "--quiet", "origin", "HEAD:main")  # the laptop is behind
    result, log, _ = run(laptop)
    assert result.commit is None and "could not" not in log
    assert waiting_refs(origin) == {}


def test_a_landing_whose_answer_was_lost_is_not_credited_to_another_machine(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script_pushes(monkeypatch, "lose", "hang up")
    _, server = pair
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    result, log, _ = run(server)
    assert "a push (this sync's own, whose answer was lost, or another machine's) landed" in log
    assert result.commit == gitrepo.head(server) and names_on(origin) == {*SEED, "frank"}


def test_a_sync_that_joined_and_then_created_the_branch_leaves_no_ref(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = pair
    monkeypatch.setattr(sync_module, "WAIT_CROWD_FROM", -1.0)  # joins before its first attempt
    gitrepo.git(origin, "update-ref", "-d", "refs/heads/main")  # the branch is gone upstream
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    result, log, _ = run(server)
    assert "waits in" in log and result.commit == gitrepo.head(server)
    assert waiting_refs(origin) == {}


def test_a_ref_deleted_by_hand_is_not_taken_for_carried(
    pair: tuple[Path, Path], origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the record of carried refs says a ref was carried; gone alone proves nothing.
    _, server = pair
    (server / "memory.jsonl").write_bytes(memory(*SEED, "frank"))
    lose_first_push(monkeypatch)

    def someone_deletes_the_queue(_: float) -> None:
        for ref in waiting_refs(origin):
            gitrepo.git(origin, "update-ref", "-d", ref)

    result, log, _ = run(server, someone_deletes_the_queue)
    assert "left the queue without landing (deleted by hand" in log
    assert "another machine's push landed" not in log
    assert result.commit == gitrepo.head(server) and names_on(origin) == {*SEED, "frank"}


def test_the_record_names_every_carried_ref(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    laptop, server = pair
    first = queue_commit(server, "server.1.aa", "frank")
    second = queue_commit(third, "runner.2.bb", "grace")
    (laptop / "memory.jsonl").write_bytes(memory(*SEED, "erin"))
    run(laptop)
    record = gitrepo.git(origin, "cat-file", "-p", "refs/crdt-merge-driver/record/main/carried")
    assert record.splitlines() == [f"{QUEUE}runner.2.bb {second}", f"{QUEUE}server.1.aa {first}"]



# --- found by the third review ------------------------------------------------------------


def test_a_sync_that_gives_up_after_its_commit_was_carried_never_lands_it_again(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, server = pair
    (server / "memory.jsonl").write_bytes(memory(*WITHOUT_BOB))
    push = script_pushes(monkeypatch, *["lose"] * 30)
    done: list[bool] = []

    def meanwhile(_: float) -> None:
        if not done:
            done.append(True)
            with monkeypatch.context() as real:
                real.setattr(sync_module, "push", push)
                carry_then_readd_bob(laptop, third, origin)
            gitrepo.commit_file(server, "memory-notes.jsonl", memory("zed"), "the user's own")

    with pytest.raises(GaveUpError):
        run(server, meanwhile, paths=[Path("memory.jsonl")], attempts=2)
    monkeypatch.setattr(sync_module, "push", push)
    run(server)  # sync again, as the message says
    assert "bob" in names_on(origin)  # the carried deletion did not land a second time
    assert b"zed" in gitrepo.git(origin, "show", "main:memory-notes.jsonl").encode()


def test_after_a_carried_commit_the_rebase_path_never_copies_the_remote_s_commits(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, server = pair
    (server / "memory.jsonl").write_bytes(memory(*WITHOUT_BOB))
    push = script_pushes(monkeypatch, "lose", "lose")
    waits: list[float] = []

    def meanwhile(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            with monkeypatch.context() as real:
                real.setattr(sync_module, "push", push)
                carry_then_readd_bob(laptop, third, origin)
            gitrepo.commit_file(server, "notes.txt", b"a note\n", "the user's note")  # rebase
        if len(waits) == 2:  # after the rebased push lost: a fourth machine deletes erin
            fourth = gitrepo.clone(origin, third.parent / "fourth")
            kept = [line for line in (fourth / "memory.jsonl").read_bytes().splitlines()
                    if b'"erin"' not in line]  # fmt: skip
            gitrepo.commit_file(fourth, "memory.jsonl", b"\n".join(kept), "delete erin")
            gitrepo.git(fourth, "push", "--quiet", "origin", "HEAD:main")

    result, _, _ = run(server, meanwhile, paths=[Path("memory.jsonl")])
    assert result.commit == gitrepo.head(server)
    assert names_on(origin) == {"alice", "bob", "carol", "dave"}  # erin's deletion stands
    messages = gitrepo.git(origin, "log", "--format=%s", "main").splitlines()
    assert messages.count("re-add bob") == 1 and messages[0] == "the user's note"


def test_a_sync_to_another_remote_keeps_the_place_in_origin_s_queue(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    laptop, server = pair
    mirror = tmp_path / "mirror.git"
    gitrepo.git(tmp_path, "clone", "--quiet", "--bare", str(origin), str(mirror))
    gitrepo.git(server, "remote", "add", "mirror", str(mirror))
    (server / "memory.jsonl").write_bytes(memory(*WITHOUT_BOB))
    lose_first_push(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(server, interrupt)  # Ctrl-C while waiting in origin's queue
    sync(repo=server, remote="mirror", sleep=lambda _: None, log=io.StringIO())
    carry_then_readd_bob(laptop, third, origin)
    _, log, _ = run(server)
    assert "another machine's push landed" in log
    assert "bob" in names_on(origin)  # not deleted a second time


@pytest.mark.parametrize(
    ("name", "surely_refused"),
    [
        ("retry-push-fetch-first", True),
        ("retry-push-non-fast-forward", True),
        ("retry-push-queue-stale-info", True),
        ("retry-push-remote-ref-lock", True),
        ("retry-push-pre-receive-transient", True),
        ("retry-push-git-connection-reset", False),
        ("retry-push-git-hung-up-mid-reply", False),
    ],
)
def test_only_a_clear_refusal_counts_as_nothing_landed(name: str, surely_refused: bool) -> None:
    text = (Path(__file__).parent / "fixtures" / "git-stderr" / f"{name}.txt").read_text()
    assert refused(classify(text)) is surely_refused


# --- found by the fourth review -----------------------------------------------------------


def test_a_carrier_with_an_edited_memory_file_follows_without_replaying_again(
    pair: tuple[Path, Path], third: Path, origin: Path
) -> None:
    # The work tree cannot follow the push (an edit the agent has not committed), so git
    # rebase --autostash moves HEAD; onto the pushed commit alone it applied the laptop's
    # commit a second time, deleting bob again after the carried commit re-added him.
    laptop, server = pair
    without_bob = list(WITHOUT_BOB)
    gitrepo.commit_file(third, "memory.jsonl", memory(*without_bob), "delete bob")
    gitrepo.git(third, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "pull", "--quiet", "--rebase", "origin", "main")
    queue_commit(server, "server.1.aa", data=memory(*without_bob, "bob"))  # re-adds bob
    gitrepo.commit_file(laptop, "memory.jsonl", memory(*without_bob, "erin"), "erin, no bob")
    (laptop / "memory.jsonl").write_bytes(memory(*without_bob, "erin", "zed"))  # not committed
    result, log, _ = run(laptop, paths=[])
    assert "carrying 1 other machines' waiting commits" in log and "bob" in names_on(origin)
    assert gitrepo.head(laptop) == result.commit  # HEAD is the branch: no commit on top
    assert b"zed" in (laptop / "memory.jsonl").read_bytes()  # the edit is kept
    run(laptop, paths=[])
    assert "bob" in names_on(origin)


def test_a_sync_that_rebases_its_waiting_commit_takes_it_out_of_the_queue_first(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # git rebase rewrote the waiting commit; the place was dropped with the ref still
    # waiting, and the next machine to land carried the old commit a second time.
    laptop, server = pair
    (server / "memory.jsonl").write_bytes(memory(*WITHOUT_BOB))
    push = script_pushes(monkeypatch, "lose", "lose")
    waits: list[float] = []

    def meanwhile(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:  # a commit git rebase must do, and the remote moves on
            gitrepo.commit_file(server, "notes.txt", b"a note\n", "the user's note")
            gitrepo.commit_file(third, "memory-other.jsonl", memory("grace"), "grace")
            gitrepo.git(third, "push", "--quiet", "origin", "HEAD:main")

    run(server, meanwhile, paths=[Path("memory.jsonl")])
    assert waiting_refs(origin) == {}
    monkeypatch.setattr(sync_module, "push", push)
    carry_then_readd_bob(laptop, third, origin)
    assert "bob" in names_on(origin)


def test_a_rewritten_copy_of_a_carried_commit_is_left_out(
    pair: tuple[Path, Path], third: Path, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, server = pair
    base = gitrepo.head(server)
    (server / "memory.jsonl").write_bytes(memory(*WITHOUT_BOB))
    lose_first_push(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(server, interrupt)  # Ctrl-C while waiting
    waiting = gitrepo.head(server)
    carry_then_readd_bob(laptop, third, origin)  # carried; then bob is re-added
    gitrepo.git(server, "reset", "--quiet", "--hard", base)  # the user rewrites the branch:
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-01-02T00:00:00+0000")
    gitrepo.git(server, "cherry-pick", waiting)  # a copy (same author and message)
    assert gitrepo.head(server) != waiting
    _, log, _ = run(server, paths=[])
    assert "was landed by another machine's push; this branch was rewritten since" in log
    assert "its copy" in log and "bob" in names_on(origin)
    assert gitrepo.head(server) == gitrepo.git(origin, "rev-parse", "main").strip()
