"""``git rebase`` of the local commits onto the remote's, never left half-done.

Any failure aborts the rebase (in a ``finally``, so Ctrl-C does too), which
puts the branch back on the local commits. Only a kill that gives Python no
chance leaves a rebase behind; the mark sync writes before each rebase (its
pid and process group) lets the next sync tell its own interrupted rebase
from one the user started, and abort only the former.
"""

from __future__ import annotations

import os
import re
from contextlib import suppress
from pathlib import Path
from typing import TextIO

from crdt_merge_driver import PROGRAM, git
from crdt_merge_driver.errors import CrdtError, GitError, RefusedError
from crdt_merge_driver.sync.clone import Clone, say
from crdt_merge_driver.sync.lock import clear_index_lock
from crdt_merge_driver.sync.verdict import first_line, redact

# In the git folder (per worktree): the mark of a rebase sync started.
REBASE_MARK = "crdt-merge-driver-sync.rebasing"
AUTOSTASH_CONFLICT = "Applying autostash resulted in conflicts"
DRIVER_COMPLAINT = re.compile(
    rf"{PROGRAM}: cannot merge (?P<path>.+?) \((?:ancestor|ours|theirs), %(?P<side>[OAB])\)"
    r"(?:, line (?P<line>\d+))?: (?P<reason>.*?); left for you to resolve"
)
# During a rebase git swaps the sides: %A is the remote's version, %B the local commit.
_SIDES = {"A": "the version on {where}", "B": "your local commit's version",
          "O": "the common ancestor's version"}  # fmt: skip


_KEPT = "nothing pushed, rebase aborted, local commits kept"


def rebase(
    clone: Clone, onto: str, log: TextIO, *, kept: str = _KEPT, after: str | None = None
) -> None:
    """Replay the local commits onto ``onto``; on any failure, abort and raise.

    ``kept``: what the error says of the state it leaves (nothing pushed, unless the caller says).
    ``after``: only the commits after this one (``git rebase --onto ONTO AFTER``).
    """
    mark = clone.git_dir / REBASE_MARK
    mark.write_text(f"pid {os.getpid()} pgid {os.getpgrp()}\n")
    upstream = ["--onto", onto, after] if after else [onto]
    try:
        result = clone.git("rebase", "--merge", "--autostash", "--quiet", *upstream, check=False)
        if result.returncode != 0:
            raise _rebase_error(clone, result, kept)
        if AUTOSTASH_CONFLICT in result.stderr:
            # The rebase is done; only the uncommitted changes did not fit on top.
            say(log, f"warning: your uncommitted changes conflict with {clone.where}: "
                     "they are kept in `git stash list`; see `git status`")  # fmt: skip
    finally:
        if clone.rebasing():
            aborted = clone.git("rebase", "--abort", check=False)
            remove_merge_temps(clone, since=mark.stat().st_mtime)
            if clone.rebasing():  # say so, and keep the mark: the next sync aborts it
                raise GitError(
                    f"the rebase onto {clone.where} could not be aborted "
                    f"({first_line(aborted.stderr)}); the clone is still in it, local commits "
                    f"kept. Run `git rebase --abort`, or `{PROGRAM} sync` again, which aborts it",
                    returncode=aborted.returncode, stderr=aborted.stderr,
                )  # fmt: skip
        mark.unlink(missing_ok=True)


def remove_merge_temps(clone: Clone, *, since: float) -> None:
    """Remove the ``%O %A %B`` temp files an interrupted merge left in the work tree.

    git writes them as ``.merge_file_XXXXXX`` at the top and deletes them when
    the driver returns; a rebase cut short by a signal leaves them behind.
    Only those from this rebase (not older than its mark) are ours.
    """
    for path in clone.top.glob(".merge_file_*"):
        with suppress(OSError):
            if path.is_file() and path.stat().st_mtime >= since - 1:
                path.unlink()


def refuse_damaged(clone: Clone, path: str, side: str, reason: str, line: str | None) -> CrdtError:
    """The refusal for a memory file the driver cannot merge; ``side`` is git's O, A or B."""
    what = _SIDES[side].format(where=clone.where)
    return RefusedError(
        f"{path}: {what} is damaged ({reason}{f', line {line}' if line else ''}), so the "
        f"driver cannot merge it; nothing pushed, rebase aborted, local commits kept. "
        f"Repair it: delete the conflict-marker lines, run `{PROGRAM} join {path} -o {path}`, "
        "commit, then sync again"
    )


def _rebase_error(clone: Clone, result: git.Result, kept: str) -> CrdtError:
    output = redact(result.stdout.decode("utf-8", "replace") + result.stderr)
    complaint = DRIVER_COMPLAINT.search(output)
    if complaint:
        return refuse_damaged(
            clone, complaint["path"], complaint["side"], complaint["reason"], complaint["line"]
        )
    conflicted = clone.git("diff", "--name-only", "--diff-filter=U", "-z").stdout
    files = [name.decode("utf-8", "replace") for name in conflicted.split(b"\0") if name]
    if files:
        return GitError(
            f"rebase onto {clone.where} stopped on a conflict in {', '.join(files)}; {kept}. "
            f"Merge by hand (`git pull --rebase {clone.remote} {clone.branch}`), then sync again",
            returncode=result.returncode, stderr=result.stderr,
        )  # fmt: skip
    return GitError(
        f"rebase onto {clone.where} failed: {first_line(output, lines=3)}; {kept}",
        returncode=result.returncode, stderr=result.stderr,
    )  # fmt: skip


# --- after a killed sync --------------------------------------------------------------


def recover(clone: Clone, log: TextIO) -> None:
    """Abort a rebase that a killed sync left behind (its mark says so)."""
    mark = clone.git_dir / REBASE_MARK
    if not mark.exists():
        return
    if clone.rebasing():
        left = read_mark(mark)
        # Killed while the driver ran: git held the index then.
        clear_index_lock(clone.git_dir, left.get("pgid"), left="a rebase and ")
        clone.git("rebase", "--abort")
        remove_merge_temps(clone, since=mark.stat().st_mtime)
        say(log, f"aborted the rebase an interrupted sync left (pid {left.get('pid', '?')}); "
                 "the local commits are as they were before it")  # fmt: skip
    mark.unlink(missing_ok=True)


def read_mark(path: Path) -> dict[str, int]:
    try:
        words = path.read_text().split()
    except OSError:
        return {}
    return {key: int(value) for key, value in zip(words[::2], words[1::2], strict=False)
            if value.isdigit()}  # fmt: skip
