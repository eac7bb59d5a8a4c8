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

import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, TextIO

import tenacity

from crdt_merge_driver import PROGRAM, checkout, git, install
from crdt_merge_driver.clone import (
    ATTRIBUTES,
    Clone,
    SyncError,
    check_idle,
    commit,
    current_branch,
    driver_environment,
    find_url,
    say,
)
from crdt_merge_driver.errors import GaveUpError, GitError
from crdt_merge_driver.guard import check_files, check_push
from crdt_merge_driver.lock import LOCK, lock
from crdt_merge_driver.rebase import REBASE_MARK, rebase, recover
from crdt_merge_driver.replay import Memo, Replayed, replay
from crdt_merge_driver.verdict import MISSING_BRANCH, Transient, classify

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

# The first retry waits up to WAIT_FIRST seconds, each later one up to
# WAIT_GROWTH times as long, never more than WAIT_MAX (full jitter: uniform
# from 0). On top, up to WAIT_LOAD times as long as the failed attempt took
# (at most WAIT_LOAD_MAX): attempts slow down when many writers compete, so
# a crowd spreads out at once instead of colliding for several rounds while
# the exponential window grows. Measured with benchmarks/sync_bench.py.
WAIT_FIRST = 0.25
WAIT_GROWTH = 1.5
WAIT_MAX = 4.0
WAIT_LOAD = 10.0
WAIT_LOAD_MAX = 8.0
# Before the first attempt: when sync's own git commands so far (the lock,
# the commit) waited more than WAIT_CROWD_FROM seconds for a CPU (wall time
# minus the CPU they used), many writers share this machine and would all
# collide in their first attempt; each then waits up to WAIT_CROWD times
# that long (uniform, at most WAIT_LOAD_MAX), so the first round is already
# spread. A lone writer, even on a slow machine, does not wait.
WAIT_CROWD = 6.0
WAIT_CROWD_FROM = 0.1
_MIN_NETWORK_TIMEOUT = 1.0

Clock = Callable[[], float]


class SyncResult(NamedTuple):
    commit: str | None  # what the remote branch holds now; None if nothing was pushed
    attempts: int


# --- the retry policy ---------------------------------------------------------


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop when the next wait would end past the deadline (the clock is injectable)."""

    def __init__(self, deadline: float, clock: Clock) -> None:
        self.at = clock() + deadline
        self.clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        # tenacity >= 8.3 computes the wait before asking stop; older ones do not.
        upcoming = float(getattr(retry_state, "upcoming_sleep", 0.0))
        return self.clock() + upcoming >= self.at


class _WaitForLoad(tenacity.wait.wait_base):
    """Uniform from 0 to ``factor`` times as long as the failed attempt took, capped."""

    def __init__(self, factor: float, most: float) -> None:
        self.factor = factor
        self.most = most

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        took = failure.took if isinstance(failure, Transient) else 0.0
        return random.uniform(0, min(self.most, self.factor * took))  # noqa: S311  # jitter


def retrying(
    *, attempts: int, deadline: float, sleep: Callable[[float], None], log: TextIO,
    clock: Clock = time.monotonic,
) -> tenacity.Retrying:  # fmt: skip
    """The one retry policy: `Transient` failures, full-jitter waits, N attempts or a deadline."""

    def report(state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        reason = failure.reason if isinstance(failure, Transient) else str(failure)
        wait = state.next_action.sleep if state.next_action else 0.0
        say(log, f"sync attempt {state.attempt_number}: {reason}; next try in {wait:.2f}s")

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Transient),
        stop=tenacity.stop_after_attempt(attempts) | _StopAtDeadline(deadline, clock),
        wait=tenacity.wait_random_exponential(
            multiplier=WAIT_FIRST, max=WAIT_MAX, exp_base=WAIT_GROWTH
        )
        + _WaitForLoad(WAIT_LOAD, WAIT_LOAD_MAX),
        sleep=sleep,
        before_sleep=report,
        reraise=True,
    )


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
    with prepared(repo, remote=remote, branch=branch, log=log) as clone:
        mine = None if paths is None else [(repo / path).absolute() for path in paths]
        return land(
            clone, paths=mine, message=message, attempts=attempts, deadline=deadline,
            allow_mass_delete=allow_mass_delete, sleep=sleep, log=log, since=(began, spent),
        )  # fmt: skip


@contextmanager
def prepared(
    repo: Path, *, remote: str = "origin", branch: str | None = None, log: TextIO = sys.stderr
) -> Iterator[Clone]:
    """The clone, ready to sync, for as long as the block runs.

    Under the clone's lock, with the driver supplied to every git command,
    after finishing what a killed sync left, and never in the middle of the
    user's own merge or rebase. `sync` runs in it; `backup` runs its whole
    round in it, so a sync from cron and a backup never work in one clone at
    once.
    """
    top = install.find_toplevel(repo)
    git_dir = Path(git.output("rev-parse", "--absolute-git-dir", cwd=top))
    with lock(git_dir, log), driver_environment(top, git_dir) as env:
        common = git.find_common_dir(top)
        clone = Clone(top, git_dir, common, env, remote, find_url(top, remote), "")
        recover(clone, log)
        checkout.recover(clone, log)
        check_idle(clone)
        yield clone._replace(branch=branch or current_branch(clone))


def land(
    clone: Clone, *, paths: Sequence[Path] | None = None, message: str | None = None,
    attempts: int = 30, deadline: float = 300.0, allow_mass_delete: bool = False,
    sleep: Callable[[float], None] = time.sleep, log: TextIO = sys.stderr,
    since: tuple[float, float] | None = None,
) -> SyncResult:  # fmt: skip
    """In a `prepared` clone: commit ``paths`` (None: every changed memory file), then push.

    ``since``: the wall and CPU clocks when the caller began, to tell how long
    its git commands waited for a CPU (the first wait on a busy machine).
    """
    began, spent = since or (time.monotonic(), _cpu_seconds())
    commit(clone, paths, message, log)
    crowd = time.monotonic() - began - (_cpu_seconds() - spent)
    return push_until_landed(
        clone, attempts=attempts, deadline=deadline, allow_mass_delete=allow_mass_delete,
        sleep=sleep, log=log, crowd=crowd,
    )  # fmt: skip


def _cpu_seconds() -> float:
    """CPU time used by this process and the git commands it waited for."""
    used = os.times()
    return used.user + used.system + used.children_user + used.children_system


def recover_interrupted(*, repo: Path, log: TextIO = sys.stderr) -> None:
    """Finish what a killed sync left in ``repo`` (a rebase, a replay), under sync's lock.

    `sync` does this itself; this is for callers (backup) that look at HEAD
    before they call `sync`, and would otherwise find it detached mid-rebase.
    """
    top = install.find_toplevel(repo)
    git_dir = Path(git.output("rev-parse", "--absolute-git-dir", cwd=top))
    with lock(git_dir, log):
        clone = Clone(top, git_dir, git.find_common_dir(top), {}, "", "", "")
        recover(clone, log)
        checkout.recover(clone, log)


def push_until_landed(
    clone: Clone, *, attempts: int, deadline: float, allow_mass_delete: bool,
    sleep: Callable[[float], None], log: TextIO, clock: Clock = time.monotonic,
    crowd: float = 0.0,
) -> SyncResult:  # fmt: skip
    """The attempts, under the retry policy; ``crowd``: seconds sync so far waited for a CPU."""
    started = clock()
    number = 0
    pushed: str | None = None

    def remaining() -> float:
        return max(started + deadline - clock(), _MIN_NETWORK_TIMEOUT)

    policy = retrying(attempts=attempts, deadline=deadline, sleep=sleep, log=log, clock=clock)
    memo = Memo()
    if crowd > WAIT_CROWD_FROM:
        first = random.uniform(0, min(WAIT_LOAD_MAX, deadline / 2, WAIT_CROWD * crowd))  # noqa: S311
        say(log, f"this machine is busy (sync waited {crowd:.2f}s for a CPU so far): "
                 f"first try in {first:.2f}s")  # fmt: skip
        sleep(first)
    try:
        for attempt in policy:
            with attempt:
                number = attempt.retry_state.attempt_number
                began = clock()
                try:
                    pushed = attempt_once(
                        clone, number, remaining, allow_mass_delete=allow_mass_delete, log=log,
                        memo=memo,
                    )  # fmt: skip
                except Transient as failure:
                    failure.took = clock() - began
                    raise
    except Transient as last:
        say(log, f"sync attempt {number}: {last.reason}; giving up")
        raise GaveUpError(
            f"gave up on {clone.remote} ({clone.url}) after {number} attempts in "
            f"{clock() - started:.0f}s: {last.reason}. Nothing is lost: your local commits "
            f"are kept; run `{PROGRAM} sync` again once {clone.remote} takes pushes"
        ) from None
    if pushed is None:
        say(log, f"nothing to push: {clone.where} already has every local commit")
    else:
        say(log, f"synced: {clone.where} is at {pushed[:10]} after {number} "
                 f"attempt{'s' if number > 1 else ''}")  # fmt: skip
    return SyncResult(pushed, number)


def attempt_once(
    clone: Clone, number: int, timeout: Callable[[], float], *, allow_mass_delete: bool,
    log: TextIO, memo: Memo,
) -> str | None:  # fmt: skip
    """Fetch, replay or rebase, check, push once; the commit pushed, or None if nothing to."""
    fetched = fetch(clone, timeout())
    head, remote_tip = _revisions(clone, "HEAD", clone.tracking if fetched else None)
    if head is None:
        return None  # an unborn branch with nothing committed
    if remote_tip is not None and head != remote_tip:
        replayed = replay(clone, head, remote_tip, memo)
        if replayed is not None:
            return _land_replayed(
                clone, replayed, head=head, remote_tip=remote_tip, number=number,
                timeout=timeout, allow_mass_delete=allow_mass_delete, log=log,
            )  # fmt: skip
        rebase(clone, remote_tip, log)  # only a fast-forward when HEAD is behind
        memo.forget()
        head = _revision(clone, "HEAD") or head
    if head == remote_tip:
        return None
    check_push(clone, remote_tip, head, allow_mass_delete=allow_mass_delete)
    push(clone, head, timeout())
    say(log, f"sync attempt {number}: pushed {head[:10]} to {clone.where}")
    return head


def _land_replayed(
    clone: Clone, replayed: Replayed, *, head: str, remote_tip: str, number: int,
    timeout: Callable[[], float], allow_mass_delete: bool, log: TextIO,
) -> str | None:  # fmt: skip
    """Check and push the replayed commits, then bring HEAD there; HEAD stays if the push fails."""
    if replayed.head != remote_tip:
        check_files(clone, replayed.files, allow_mass_delete=allow_mass_delete)
        push(clone, replayed.head, timeout())
    checkout.follow(clone, head, replayed.head, log)
    if replayed.head == remote_tip:
        return None  # every local change was upstream already
    say(log, f"sync attempt {number}: pushed {replayed.head[:10]} to {clone.where}")
    return replayed.head


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


def _network(clone: Clone, *args: str, timeout: float) -> git.Result:
    try:
        return clone.git(*args, check=False, timeout=timeout)
    except GitError as error:
        if error.returncode == -1:  # git.run's timeout
            raise Transient(f"git {args[0]} timed out after {timeout:.0f}s") from None
        raise


def fetch(clone: Clone, timeout: float) -> bool:
    """Fetch the one branch into its remote-tracking ref; False if the remote has none yet."""
    # A shallow clone may lack the merge base the rebase needs: fetch all of
    # the branch's history, once (the shallow file goes with it).
    shallow = (clone.common_dir / "shallow").exists()
    # No housekeeping after each fetch (git maintenance --auto, a process
    # every attempt): sync's own commit, like any git commit, still runs it.
    args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance",
            *(["--unshallow"] if shallow else [])]  # fmt: skip
    refspec = f"+refs/heads/{clone.branch}:{clone.tracking}"
    result = _network(clone, *args, clone.remote, refspec, timeout=timeout)
    if result.returncode != 0:
        if MISSING_BRANCH.search(result.stderr):
            return False
        verdict = classify(result.stderr)
        if verdict.retry:
            raise Transient(f"fetch failed: {verdict.reason}")
        raise GitError(
            f"cannot fetch {clone.branch} from {clone.remote} ({clone.url}): {verdict.reason}",
            returncode=result.returncode, stderr=result.stderr,
        )  # fmt: skip
    return True


def push(clone: Clone, head: str, timeout: float) -> None:
    result = _network(
        clone, "push", "--quiet", clone.remote, f"{head}:refs/heads/{clone.branch}",
        timeout=timeout,
    )  # fmt: skip
    if result.returncode == 0:
        return
    verdict = classify(result.stderr)
    if verdict.retry:
        raise Transient(f"push failed: {verdict.reason}")
    raise GitError(
        f"cannot push to {clone.where} ({clone.url}): {verdict.reason}; nothing pushed, "
        "your local commits are kept",
        returncode=result.returncode, stderr=result.stderr,
    )  # fmt: skip
