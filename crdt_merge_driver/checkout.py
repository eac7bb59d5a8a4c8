"""Move HEAD to the replayed commits and the work tree with it, and finish after a kill.

Sync does this once the remote has the replayed commits. HEAD moves first,
with its old value as a condition (``git update-ref``), so that a commit
made meanwhile is never lost: the attempt is tried again with it. Then
``git read-tree -m -u`` brings the changed files to the new commit; it
writes nothing if one of them is not clean, and then HEAD goes back and
git rebase --autostash onto the pushed commit does the work instead.

Between the two, HEAD and the work tree disagree: a sync killed there would
leave memory files that look like a change which undoes the merge, and the
next sync would commit it. So a mark in the git folder names the files and
both their versions while it lasts, and the next sync first brings each file
that holds one of those versions in line with HEAD (`recover`).
"""

from __future__ import annotations

import os
from typing import TextIO

import orjson

from crdt_merge_driver.clone import PROGRAM, Clone, SyncError, say
from crdt_merge_driver.lock import group_gone
from crdt_merge_driver.rebase import rebase
from crdt_merge_driver.verdict import Transient

# In the git folder (per worktree): the files of a replay that is moving HEAD.
REPLAY_MARK = "crdt-merge-driver-sync.replaying"

Versions = dict[str, tuple[str | None, str | None]]  # path -> (blob at the old HEAD, at the new)


def follow(clone: Clone, old: str, new: str, versions: Versions, log: TextIO) -> None:
    """Bring HEAD (at ``old``) and the work tree to ``new``, the replayed commits."""
    if new != old and not move_head(clone, old, new, versions):
        # A changed file is not clean: the rebase's autostash keeps the edit. The local
        # commits are in ``new`` already, so the rebase drops them or leaves them empty.
        rebase(clone, new, log)


def move_head(clone: Clone, old: str, new: str, versions: Versions) -> bool:
    """HEAD from ``old`` to ``new`` and the work tree after it; False if a changed file is dirty."""
    mark = clone.git_dir / REPLAY_MARK
    mark.write_bytes(orjson.dumps({"pid": os.getpid(), "pgid": os.getpgrp(), "paths": versions}))
    moved = False
    try:
        said = clone.git("update-ref", "-m", f"{PROGRAM} sync: replayed onto {clone.where}",
                         "HEAD", new, old, check=False)  # fmt: skip
        if said.returncode != 0:
            raise Transient("the local branch moved during the replay (a commit made meanwhile)")
        moved = True
        if _check_out(clone, old, new):
            moved = False
            return True
        return False
    finally:
        undone = not moved or clone.git(
            "update-ref", "-m", f"{PROGRAM} sync: replay undone", "HEAD", old, new, check=False
        ).returncode == 0  # fmt: skip
        if undone:  # else the next sync's `recover` brings the files in line with HEAD
            mark.unlink(missing_ok=True)


def _check_out(clone: Clone, old: str, new: str) -> bool:
    for _ in range(2):
        if clone.git("read-tree", "-m", "-u", old, new, check=False).returncode == 0:
            return True
        # A file touched but unchanged (new mtime, same bytes) fails too: refresh, then again.
        clone.git("update-index", "-q", "--refresh", check=False)
    return False


def recover(clone: Clone, log: TextIO) -> None:
    """Bring the files of a replay a killed sync left half-done in line with HEAD."""
    mark = clone.git_dir / REPLAY_MARK
    if not mark.exists():
        return
    try:
        left = orjson.loads(mark.read_bytes())
        versions: dict[str, list[str | None]] = left["paths"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        versions, left = {}, {}
    index_lock = clone.git_dir / "index.lock"
    if index_lock.exists():
        # Killed inside read-tree: safe to remove only if nothing of that sync still runs.
        if not group_gone(left.get("pgid")):
            raise SyncError(
                f"an interrupted sync left {index_lock}, and a process of its group may still "
                f"run; wait for it, or if no git runs here, delete {index_lock} and sync again"
            )
        index_lock.unlink(missing_ok=True)
    present = [path for path in versions if (clone.top / path).is_file()]
    feed = "".join(f"{path}\n" for path in present).encode("utf-8", "surrogateescape")
    hashed = clone.git("hash-object", "--stdin-paths", stdin=feed).stdout.decode().split()
    held = dict(zip(present, hashed, strict=True))
    # A file with neither version is someone's edit: it stays, and gets committed as one.
    follow = [path for path in versions if path not in held or held[path] in versions[path]]
    if follow:
        clone.git("checkout", "HEAD", "--", *follow, env={"GIT_LITERAL_PATHSPECS": "1"})
    for path in sorted(set(versions) - set(follow)):
        say(log, f"warning: {path} changed while an interrupted sync was replaying; kept as is")
    say(log, f"finished the replay an interrupted sync left (pid {left.get('pid', '?')}): "
             "the work tree matches HEAD")  # fmt: skip
    mark.unlink(missing_ok=True)
