"""A clone ready to sync: under its lock, the driver supplied, what a killed sync left finished.

Every sync and every backup begins in `prepared`, and every attempt to land
with `fetch`. They are kept apart from `sync` (the attempts, their replays
and merges) because an idle backup, cron's common case, only prepares and
fetches: importing what merges memory files (orjson under it) was a third
of its time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from crdt_merge_driver import early, git, install
from crdt_merge_driver.errors import GitError
from crdt_merge_driver.sync import checkout
from crdt_merge_driver.sync.clone import (
    Clone,
    check_idle,
    current_branch,
    driver_environment,
    find_url,
)
from crdt_merge_driver.sync.lock import lock
from crdt_merge_driver.sync.rebase import recover
from crdt_merge_driver.sync.verdict import MISSING_BRANCH, Transient, classify

if TYPE_CHECKING:
    from crdt_merge_driver.sync.pending import Queue


@contextmanager
def prepared(
    repo: Path, *, remote: str = "origin", branch: str | None = None, log: TextIO = sys.stderr,
    aside: bool = True, folders: tuple[Path, Path, Path] | None = None,
) -> Iterator[Clone]:  # fmt: skip
    """The clone, ready to sync, for as long as the block runs.

    Under the clone's lock, with the driver supplied to every git command,
    after finishing what a killed sync left, and never in the middle of the
    user's own merge or rebase. `sync` runs in it; `backup` runs its whole
    round in it, so a sync from cron and a backup never work in one clone at
    once. ``aside``: an untracked ``.gitattributes`` waits out of git's way (`early`).
    ``folders``: `install.find_folders` of ``repo``, if the caller has them.
    """
    top, git_dir, common = folders or install.find_folders(repo)
    with lock(git_dir, log), early.set_aside(top, git_dir, log, active=aside), \
            driver_environment(top, git_dir) as env:  # fmt: skip
        clone = Clone(top, git_dir, common, env, remote, find_url(top, remote), "")
        recover(clone, log)
        checkout.recover(clone, log)
        check_idle(clone)
        yield clone._replace(branch=branch or current_branch(clone))




def recover_interrupted(*, repo: Path, log: TextIO = sys.stderr) -> None:
    """Finish what a killed sync left in ``repo`` (a rebase, a replay), under sync's lock.

    `sync` does this itself; this is for callers (backup) that look at HEAD
    before they call `sync`, and would otherwise find it detached mid-rebase.
    """
    top, git_dir, common = install.find_folders(repo)
    with lock(git_dir, log):
        clone = Clone(top, git_dir, common, {}, "", "", "")
        recover(clone, log)
        checkout.recover(clone, log)




def network(clone: Clone, *args: str, timeout: float) -> git.Result:
    try:
        return clone.git(*args, check=False, timeout=timeout)
    except GitError as error:
        if error.returncode == -1:  # git.run's timeout
            raise Transient(f"git {args[0]} timed out after {timeout:.0f}s") from None
        raise


def fetch(clone: Clone, timeout: float, queue: Queue | None = None) -> bool:
    """Fetch the one branch (and its queue) into local refs; False if the remote has no branch."""
    # A shallow clone may lack the merge base the rebase needs: fetch all of
    # the branch's history, once (the shallow file goes with it).
    shallow = (clone.common_dir / "shallow").exists()
    # No housekeeping after each fetch (git maintenance --auto, a process
    # every attempt): sync's own commit, like any git commit, still runs it.
    args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance",
            *(["--unshallow"] if shallow else [])]  # fmt: skip
    refspecs = [f"+refs/heads/{clone.branch}:{clone.tracking}"]
    refspecs += queue.refspecs() if queue else []
    if len(refspecs) > 1:
        args.append("--prune")  # a waiting ref that is gone: carried (if on record)
    result = network(clone, *args, clone.remote, *refspecs, timeout=timeout)
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
