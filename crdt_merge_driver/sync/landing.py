"""``crdt-merge-driver sync``: commit memory files, then fetch, rebase and push until it lands.

When many machines back up to one branch in the same minute, every push but
one is rejected as non-fast-forward. Each attempt here fetches the branch,
rebases the local commits onto it (the merge driver, supplied to git by
`clone.driver_environment`, merges the memory files), checks what the push
would change, and pushes; a rejection is retried after a random wait that
grows with the failures and with how long the failed attempt took, so that
the losers of one round spread out instead of colliding again.

Only what a later attempt can fix is retried (see `verdict.classify`);
everything else stops at once with one line that says what happened and
what to run. Whatever happens, the clone is left on its local commits, never
in the middle of a rebase. docs/sync.md gives the reasons for each choice.
"""

from __future__ import annotations

import enum
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TextIO

from crdt_merge_driver import PROGRAM, early, git
from crdt_merge_driver.errors import CrdtError, GaveUpError, GitError
from crdt_merge_driver.sync import checkout
from crdt_merge_driver.sync.clone import (
    ATTRIBUTES,
    Clone,
    SyncError,
    commit,
    driver_environment,
    read_objects,
    say,
)
from crdt_merge_driver.sync.guard import check_files, check_push, passes
from crdt_merge_driver.sync.lock import LOCK, lock
from crdt_merge_driver.sync.pending import Queue, Record
from crdt_merge_driver.sync.rebase import REBASE_MARK, rebase
from crdt_merge_driver.sync.replay import Files, Memo, authorship, replay, replayable
from crdt_merge_driver.sync.retry import (
    WAIT_FIRST,
    WAIT_GROWTH,
    WAIT_LOAD,
    WAIT_LOAD_MAX,
    WAIT_MAX,
    retrying,
)
from crdt_merge_driver.sync.session import fetch, network, prepared, recover_interrupted
from crdt_merge_driver.sync.verdict import NO_ATOMIC, Transient, classify, refused

# What backup, demo, the CLI and the tests use, from where they always found it.
__all__ = [
    "ATTRIBUTES",
    "LOCK",
    "REBASE_MARK",
    "WAIT_CROWD",
    "WAIT_CROWD_FROM",
    "WAIT_FIRST",
    "WAIT_GROWTH",
    "WAIT_LOAD",
    "WAIT_LOAD_MAX",
    "WAIT_MAX",
    "SyncError",
    "SyncResult",
    "Transient",
    "driver_environment",
    "land",
    "lock",
    "prepared",
    "recover_interrupted",
    "retrying",
    "sync",
]

# Before the first attempt: when sync's own git commands so far (the lock,
# the commit) waited more than WAIT_CROWD_FROM seconds for a CPU (wall time
# minus the CPU they used), many writers share this machine and would all
# collide in their first attempt; each then waits up to WAIT_CROWD times
# that long (uniform, at most WAIT_LOAD_MAX), so the first round is already
# spread. A lone writer, even on a slow machine, does not wait.
WAIT_CROWD = 6.0
# The same, for a sync that waits in the queue (pending.py) meanwhile: it only
# has to stay out of the way of whoever lands first, which carries it too.
WAIT_CROWD_QUEUED = 2.0
WAIT_CROWD_FROM = 0.1
_MIN_NETWORK_TIMEOUT = 1.0

Clock = Callable[[], float]


class SyncResult(NamedTuple):
    commit: str | None  # what the remote branch holds now; None if nothing was pushed
    attempts: int


# --- sync ---------------------------------------------------------------------


def sync(
    *,
    repo: Path,
    remote: str = "origin",
    branch: str | None = None,
    message: str | None = None,
    paths: Sequence[Path] | None = None,
    attempts: int = 30,
    deadline: float = 300.0,
    allow_mass_delete: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    log: TextIO = sys.stderr,
) -> SyncResult:
    """Commit memory files, then fetch, rebase, check and push until the remote has them.

    ``paths``: the files to commit; None (the default) means every changed
    memory file, and an empty list commits nothing (only pushes what is
    committed already).
    """
    if attempts < 1 or not deadline > 0:
        raise SyncError("--attempts must be at least 1 and --deadline above 0 seconds")
    began, spent = time.monotonic(), _cpu_seconds()
    # Committing an untracked .gitattributes (setup publishes install's) is no early install.
    aside = not any(Path(path).name == early.ATTRIBUTES for path in paths or ())
    with prepared(repo, remote=remote, branch=branch, log=log, aside=aside) as clone:
        mine = None if paths is None else [(repo / path).absolute() for path in paths]
        return land(
            clone, paths=mine, message=message, attempts=attempts, deadline=deadline,
            allow_mass_delete=allow_mass_delete, sleep=sleep, log=log, since=(began, spent),
        )  # fmt: skip


def land(
    clone: Clone, *, paths: Sequence[Path] | None = None, message: str | None = None,
    attempts: int = 30, deadline: float = 300.0, allow_mass_delete: bool = False,
    sleep: Callable[[float], None] = time.sleep, log: TextIO = sys.stderr,
    since: tuple[float, float] | None = None, summary: bool = True, fetched: bool = False,
) -> SyncResult:  # fmt: skip
    """In a `prepared` clone: commit ``paths`` (None: every changed memory file), then push.

    ``since``: the wall and CPU clocks when the caller began, to tell how long
    its git commands waited for a CPU (the first wait on a busy machine).
    ``fetched``: the caller has just fetched the branch and its queue (`fetch`).
    """
    began, spent = since or (time.monotonic(), _cpu_seconds())
    commit(clone, paths, message, log)
    crowd = time.monotonic() - began - (_cpu_seconds() - spent)
    return push_until_landed(
        clone, attempts=attempts, deadline=deadline, allow_mass_delete=allow_mass_delete,
        sleep=sleep, log=log, crowd=crowd, summary=summary, fetched=fetched,
    )  # fmt: skip


def _cpu_seconds() -> float:
    """CPU time used by this process and the git commands it waited for."""
    used = os.times()
    return used.user + used.system + used.children_user + used.children_system


def push_until_landed(
    clone: Clone, *, attempts: int, deadline: float, allow_mass_delete: bool,
    sleep: Callable[[float], None], log: TextIO, clock: Clock = time.monotonic,
    crowd: float = 0.0, summary: bool = True, fetched: bool = False,
) -> SyncResult:  # fmt: skip
    """The attempts, under the retry policy; ``crowd``: seconds sync so far waited for a CPU.

    ``summary``: its last line is the command's summary (False when backup, which
    says its own, runs it). ``fetched``: the branch and its queue were fetched
    just now, so the first attempt pushes without fetching again (a round trip
    less); had another machine pushed since, that push is refused, and the
    next attempt fetches.
    """
    started = clock()
    number = 0
    pushed: str | None = None

    def remaining() -> float:
        return max(started + deadline - clock(), _MIN_NETWORK_TIMEOUT)

    memo, queue = Memo(), Queue(clone)
    queue.check_urls()
    queue.resume()

    def pause(seconds: float) -> None:
        if queue.mine:
            queue.waited += seconds
        sleep(seconds)

    policy = retrying(attempts=attempts, deadline=deadline, sleep=pause, log=log, clock=clock)
    if crowd > WAIT_CROWD_FROM:
        # Many writers at once: most would lose the first round. Wait in the queue
        # from the start, so that whoever lands first carries these commits too.
        head, known = _revisions(clone, "HEAD", clone.tracking)
        if head and known and head != known and replayable(clone, head, known, memo):
            _join(clone, queue, head, timeout=remaining(), log=log)
        spread = (WAIT_CROWD_QUEUED if queue.mine else WAIT_CROWD) * crowd
        first = random.uniform(0, min(WAIT_LOAD_MAX, deadline / 2, spread))  # noqa: S311
        say(log, f"this machine is busy (sync waited {crowd:.2f}s for a CPU so far): "
                 f"first try in {first:.2f}s")  # fmt: skip
        pause(first)
        fetched = False  # a fetch from before the wait is worth a fetch no more
    try:
        for attempt in policy:
            with attempt:
                number = attempt.retry_state.attempt_number
                began = clock()
                try:
                    pushed = attempt_once(
                        clone, number, remaining, allow_mass_delete=allow_mass_delete, log=log,
                        memo=memo, queue=queue, fetched=fetched and number == 1,
                    )  # fmt: skip
                except Transient as failure:
                    # Waiting in the queue, the next push lands these commits: no need
                    # to make way for the others in proportion to the load.
                    failure.took = 0.0 if queue.mine else clock() - began
                    raise
    except Transient as last:
        say(log, f"sync attempt {number}: {last.reason}; giving up")
        ref = queue.mine
        became = _leave(clone, queue, remaining(), log)
        raise GaveUpError(
            f"gave up on {clone.remote} ({clone.url}) after {number} attempts in "
            f"{clock() - started:.0f}s: {last.reason}. Nothing is lost: your local commits "
            f"are kept; run `{PROGRAM} sync` (or a backup, which pushes them too) again once "
            f"{clone.remote} takes pushes"
            + ("" if became is _Withdrawn.OUT else f" (they waited in {ref}, {became.value}; "
               "that sync finds them there)")
        ) from None
    except CrdtError:
        _leave(clone, queue, remaining(), log)  # refused or failed: nothing may land later
        raise
    # Landed alone with its ref still waiting (the queue went off, the branch was new...).
    _leave(clone, queue, remaining(), log)
    if pushed is None:
        say(log, f"nothing to push: {clone.where} already has every local commit",
            summary=summary)
    else:
        say(log, f"synced: {clone.where} is at {pushed[:10]} after {number} "
                 f"attempt{'s' if number > 1 else ''}", summary=summary)  # fmt: skip
    return SyncResult(pushed, number)


def attempt_once(
    clone: Clone, number: int, timeout: Callable[[], float], *, allow_mass_delete: bool,
    log: TextIO, memo: Memo, queue: Queue, fetched: bool = False,
) -> str | None:  # fmt: skip
    """Fetch, replay or rebase, check, push once; the commit pushed, or None if nothing to.

    ``fetched``: the branch and its queue were fetched just now; no fetch first.
    """
    fetched = fetched or fetch(clone, timeout(), queue)
    head, remote_tip = _revisions(clone, "HEAD", clone.tracking if fetched else None)
    if head is None:  # an unborn branch with nothing committed (cloned before the first push)
        _take(clone, remote_tip)
        return None
    waiting = queue.waiting() if fetched else {}
    if remote_tip is not None and _settle(clone, queue, head, remote_tip, number=number,
                                          timeout=timeout, log=log, memo=memo):  # fmt: skip
        head, remote_tip = _revisions(clone, "HEAD", clone.tracking)
        assert head is not None
    if remote_tip is not None and queue.gone(waiting):
        landed = _carried(clone, queue, head, remote_tip, number=number, timeout=timeout,
                          log=log, memo=memo)  # fmt: skip
        if landed is not None:
            return landed
        # HEAD may have moved onto the branch, and the branch may have been fetched again.
        moved, remote_tip = _revisions(clone, "HEAD", clone.tracking)
        head = moved or head
    leader = queue.leader(waiting)
    if leader is not None and remote_tip != head:
        raise Transient(f"waiting for {leader.removeprefix(queue.remote_prefix)}, first in the "
                        f"queue of {len(waiting)}, to land it", queued=len(waiting))  # fmt: skip
    mine = {ref: commit for ref, commit in waiting.items() if ref == queue.mine}
    others = {ref: commit for ref, commit in waiting.items() if ref != queue.mine}
    if remote_tip is not None and head != remote_tip:
        # Another machine's --allow-mass-delete is not this one's to give.
        def acceptable(files: Files) -> bool:
            return passes(clone, files, allow_mass_delete=False)

        replayed = replay(clone, head, remote_tip, memo, list(dict.fromkeys(others.values())),
                          accept=acceptable)  # fmt: skip
        if replayed is not None:
            if replayed.head != remote_tip:
                check_files(clone, replayed.files, allow_mass_delete=allow_mass_delete)
                carried = {ref: commit for ref, commit in others.items()
                           if commit in replayed.carried}  # fmt: skip
                _push(clone, queue, replayed.head, {**mine, **carried}, timeout=timeout, log=log,
                      join=head)
            checkout.follow(clone, head, replayed.head, log)
            if replayed.head == remote_tip:
                return _nothing_to_push(clone, queue, mine, remote_tip=remote_tip,
                                        number=number, timeout=timeout, log=log)  # fmt: skip
            carrying = (f", carrying {replayed.brought} other machines' waiting commits"
                        if replayed.brought else "")  # fmt: skip
            say(log, f"sync attempt {number}: pushed {replayed.head[:10]} to {clone.where}"
                     f"{carrying}")  # fmt: skip
            return replayed.head
        mine.update(queue.contained(head) if waiting else {})  # a killed sync's, say
        if queue.mine is not None and queue.mine in mine:
            # git rebase rewrites the commit waiting in the queue: settle its place first.
            held = mine.pop(queue.mine)
            if _withdraw(clone, queue.mine, held, timeout(), log) is not _Withdrawn.OUT:
                raise Transient(f"{queue.mine} left the queue meanwhile; looking again")
            queue.landed()
        rebase(clone, remote_tip, log)  # only a fast-forward when HEAD is behind
        memo.forget()
        head = _revision(clone, "HEAD") or head
    if head == remote_tip:
        return _nothing_to_push(clone, queue, mine, remote_tip=head, number=number,
                                timeout=timeout, log=log)  # fmt: skip
    check_push(clone, remote_tip, head, allow_mass_delete=allow_mass_delete)
    _push(clone, queue, head, mine, timeout=timeout, log=log)
    say(log, f"sync attempt {number}: pushed {head[:10]} to {clone.where}")
    return head


def _take(clone: Clone, remote_tip: str | None) -> None:
    """An unborn branch has nothing of its own to keep: it takes the remote's, as pull would."""
    if remote_tip is not None:
        clone.git("merge", "--quiet", remote_tip)


def _carried(
    clone: Clone, queue: Queue, head: str, remote_tip: str, *, number: int,
    timeout: Callable[[], float], log: TextIO, memo: Memo,
) -> str | None:  # fmt: skip
    """This sync's ref is gone: if carried, what the remote holds when that was all to land.

    Only the record says a ref was carried: a ref can also go by hand, with a
    mirror push, or be hidden from fetches. Not on record, the sync fetches
    once more (in case it read the two at different moments), then lands
    alone. Commits made since the carried one are moved onto the branch at
    once (as ``git rebase --onto BRANCH CARRIED`` would), before the place
    in the queue is given up: from then on the carried commit is not a local
    one, so no later attempt, and no later sync, lands it a second time.
    """
    ref, held = queue.mine, queue.commit
    assert ref is not None and held is not None  # by Queue.gone
    if not queue.was_carried():
        if not (fetch(clone, timeout(), queue) and queue.was_carried()):
            queue.off = (f"{ref} left the queue without landing (deleted by hand or by a "
                         "mirror push, or hidden from fetches)")  # fmt: skip
            say(log, f"sync attempt {number}: {queue.off}: landing alone from now on")
            if _withdraw(clone, ref, held, timeout(), log) is not _Withdrawn.FAILED:
                queue.landed()  # settled: the commits are this clone's alone to land
            return None
        remote_tip = _revision(clone, clone.tracking) or remote_tip
    who = ("a push (this sync's own, whose answer was lost, or another machine's)"
           if queue.unsure else "another machine's push")  # fmt: skip
    say(log, f"sync attempt {number}: {who} landed {held[:10]} (waiting in {ref}) "
             f"on {clone.where}")  # fmt: skip
    if head == held:
        checkout.follow(clone, head, remote_tip, log)
        queue.landed()
        return remote_tip
    _move_onto(clone, head, remote_tip, after=held, memo=memo, log=log)
    queue.landed()
    say(log, f"sync attempt {number}: the commits made since are now on top of {clone.where}")
    return None


def _move_onto(
    clone: Clone, head: str, remote_tip: str, *, after: str, memo: Memo, log: TextIO
) -> None:
    """The local commits after ``after`` onto the branch (``git rebase --onto TIP AFTER``)."""
    replayed = replay(clone, head, remote_tip, memo, after=after)
    if replayed is not None:
        checkout.follow(clone, head, replayed.head, log)
    else:
        rebase(clone, remote_tip, log, after=after, kept=(
            f"{after[:10]} is on {clone.where} already (carried from the queue); the commits "
            f"after it are kept as they were. Run `git rebase --onto {clone.tracking} "
            f"{after[:10]}`, merge by hand, then sync again"
        ))  # fmt: skip
    memo.forget()


def _settle(
    clone: Clone, queue: Queue, head: str, remote_tip: str, *, number: int,
    timeout: Callable[[], float], log: TextIO, memo: Memo,
) -> bool:  # fmt: skip
    """Give up a place whose commit the branch no longer holds; whether HEAD moved.

    The branch was rewritten since it joined (a rebase, an amend, a reset).
    Taken out of the queue, the commit is this clone's alone, as rewritten.
    Gone and on record as carried, it landed: a rewritten copy of it here (the
    same author line and message) would land it twice, so the commits after
    that copy are moved onto the branch, and the copy is left behind.
    """
    ref, held = queue.mine, queue.commit
    if ref is None or held is None or head == held or queue.holds(head):
        return False
    became = _withdraw(clone, ref, held, timeout(), log)
    if became is _Withdrawn.FAILED:
        raise Transient(f"could not take {ref} out of the queue")
    carried = became is _Withdrawn.GONE and (
        queue.was_carried() or (fetch(clone, timeout(), queue) and queue.was_carried())
    )
    queue.landed()
    if not carried:
        return False
    copy = _copy_of(clone, held, head)
    say(log, f"sync attempt {number}: {held[:10]}, waiting in {ref}, was landed by another "
             f"machine's push; this branch was rewritten since"
             + (f": its copy {copy[:10]} is left out" if copy else
                "; a copy of it here, if any, lands again"))  # fmt: skip
    if copy is None:
        return False
    _move_onto(clone, head, _revision(clone, clone.tracking) or remote_tip, after=copy,
               memo=memo, log=log)  # fmt: skip
    return True


def _copy_of(clone: Clone, commit: str, head: str) -> str | None:
    """The oldest local commit, if it is the one with ``commit``'s author line and message."""
    listed = clone.git("rev-list", head, f"^{clone.tracking}").stdout.decode().split()
    found = read_objects(clone, [commit, *listed])
    if found[0] is None:
        return None

    wanted = authorship(found[0].data)
    copies = [one.oid for one in found[1:] if one is not None and authorship(one.data) == wanted]
    if len(copies) != 1:
        return None
    # Only the oldest local commit can be left out with `rebase --onto`: any before it
    # would go with it, and they may be commits of this clone's own, never queued.
    first = clone.git("merge-base", "--is-ancestor", f"{copies[0]}^", clone.tracking, check=False)
    return copies[0] if first.returncode == 0 else None


def _nothing_to_push(
    clone: Clone, queue: Queue, mine: dict[str, str], *, remote_tip: str, number: int,
    timeout: Callable[[], float], log: TextIO,
) -> str | None:  # fmt: skip
    """Every local change is upstream already; what the remote holds, if a push of ours did it.

    ``mine``: this clone's refs still in view, this sync's own or a killed
    sync's; their commits are upstream, so they go. For this sync's own,
    either a fetch saw the ref before the push that carried it deleted it,
    or a push of this sync landed and then failed to say so: taking the ref
    out tells which.
    """
    carried = False
    for ref, held in mine.items():
        if ref == queue.mine:
            carried = _leave(clone, queue, timeout(), log) is _Withdrawn.GONE
        else:
            _withdraw(clone, ref, held, timeout(), log)
    if not carried:
        return None
    say(log, f"sync attempt {number}: these commits are on {clone.where} already, and their "
             "place in the queue is gone")  # fmt: skip
    return remote_tip


def _push(
    clone: Clone, queue: Queue, head: str, carried: dict[str, str], *,
    timeout: Callable[[], float], log: TextIO, join: str | None = None,
) -> None:  # fmt: skip
    """`push`; when it loses the race, ``join`` (the local commits) waits in the queue."""
    try:
        push(clone, head, timeout(), carried, record=queue.record(carried) if carried else None)
    except Transient as failure:
        queue.unsure = queue.unsure or failure.unclear
        # Only after a clear refusal: a push whose answer was lost may have landed these
        # commits, and the queue would then land them a second time.
        if join is not None and not failure.unclear:
            _join(clone, queue, join, timeout=timeout(), log=log)
        raise
    except GitError as refusal:
        if not carried or not NO_ATOMIC.search(refusal.stderr):
            raise
        queue.off = "the remote does not take atomic pushes"
        raise Transient(f"{queue.off}; landing alone from now on") from None
    if queue.mine in carried:
        queue.landed()


class _Withdrawn(enum.Enum):
    OUT = "taken out of the queue"
    GONE = "gone already: carried by another machine's push, or deleted"
    FAILED = "still there: the remote did not take the deletion"


def _withdraw(clone: Clone, ref: str, commit: str, timeout: float, log: TextIO) -> _Withdrawn:
    """Take a ref out of the queue (leased on its commit); what became of it."""
    try:
        result = network(clone, "push", "--quiet", f"--force-with-lease={ref}:{commit}",
                          clone.remote, f":{ref}", timeout=timeout)  # fmt: skip
    except Transient as failure:  # timed out: outside the retry loop, one line like the rest
        result = git.Result(-1, b"", failure.reason)
    if result.returncode == 0:
        return _Withdrawn.OUT
    if "(stale info)" in result.stderr:
        return _Withdrawn.GONE
    say(log, f"could not take {ref} out of the queue ({classify(result.stderr).reason}); "
             f"`git push {clone.remote} :{ref}` deletes it")  # fmt: skip
    return _Withdrawn.FAILED


def _leave(clone: Clone, queue: Queue, timeout: float, log: TextIO) -> _Withdrawn:
    """Take this sync's own ref out of the queue, if it still waits there."""
    if queue.mine is None or queue.commit is None:
        return _Withdrawn.OUT
    became = _withdraw(clone, queue.mine, queue.commit, timeout, log)
    if became is _Withdrawn.OUT:
        queue.landed()  # the commits are this clone's alone to land
    elif became is _Withdrawn.GONE:
        queue.forget()  # carried? the next sync settles it from the record
    return became


def _join(clone: Clone, queue: Queue, head: str, *, timeout: float, log: TextIO) -> None:
    """Wait in the queue, so that whoever lands next carries these commits too."""
    if queue.mine is not None or queue.off:
        return
    name = queue.new_name()
    try:
        result = network(clone, "push", "--quiet", clone.remote, f"{head}:{name}",
                          timeout=timeout)  # fmt: skip
    except Transient as failure:  # timed out: outside the retry loop before the first attempt
        result = git.Result(-1, b"", failure.reason)
    if result.returncode == 0:
        queue.joined(name, head)
        say(log, f"{head[:10]} waits in {name} for the next push to carry it")
        return
    verdict = classify(result.stderr)
    if verdict.retry:
        say(log, f"{head[:10]} could not wait in the queue this time: {verdict.reason}")
    else:
        queue.off = f"the remote refused {name} ({verdict.reason})"
        say(log, f"{queue.off}: landing alone from now on")


def _revision(clone: Clone, name: str) -> str | None:
    result = clone.git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
    return result.stdout.decode().strip() if result.returncode == 0 else None


def _revisions(clone: Clone, first: str, second: str | None) -> tuple[str | None, str | None]:
    """Two commits in one git call when both exist (the usual case), else one by one."""
    if second is not None:
        both = clone.git("rev-parse", f"{first}^{{commit}}", f"{second}^{{commit}}", check=False)
        if both.returncode == 0:
            one, two = both.stdout.decode().split()
            return one, two
    return _revision(clone, first), second and _revision(clone, second)


# --- the network ----------------------------------------------------------------


def push(
    clone: Clone, head: str, timeout: float, carried: Mapping[str, str] | None = None, *,
    record: Record | None = None,
) -> None:  # fmt: skip
    """Push ``head`` to the branch; with ``carried``, delete those waiting refs in the same push.

    Each deletion is leased on the commit that was carried, the ``record`` of
    carried refs moves with them (leased on the one fetched), and the push is
    atomic: the branch moves, the refs go and the record grows together, or
    nothing happens.
    """
    leases = [f"--force-with-lease={ref}:{commit}" for ref, commit in (carried or {}).items()]
    refspecs = [f":{ref}" for ref in carried or {}]
    if record is not None:
        leases.append(f"--force-with-lease={record.ref}:{record.old}")
        refspecs.append(f"{record.new}:{record.ref}")
    result = network(
        clone, "push", "--quiet", *(["--atomic", *leases] if leases else []), clone.remote,
        f"{head}:refs/heads/{clone.branch}", *refspecs, timeout=timeout,
    )  # fmt: skip
    if result.returncode == 0:
        return
    verdict = classify(result.stderr)
    if verdict.retry:
        raise Transient(f"push failed: {verdict.reason}", unclear=not refused(verdict))
    raise GitError(
        f"cannot push to {clone.where} ({clone.url}): {verdict.reason}; nothing pushed, "
        "your local commits are kept",
        returncode=result.returncode, stderr=result.stderr,
    )  # fmt: skip
