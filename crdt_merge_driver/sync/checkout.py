"""Move HEAD to the replayed commits and the work tree with it, and finish after a kill.

Sync does this once the remote has the replayed commits. HEAD moves first,
with its old value as a condition (``git update-ref``), so that a commit
made meanwhile is never lost: the attempt is tried again with it. Then
``git read-tree -m -u`` brings the changed files to the new commit; it
writes nothing if one of them is not clean, and then HEAD goes back and
git rebase --autostash --onto NEW OLD does the work instead (it replays
nothing: NEW holds the local commits already, maybe rewritten).

Between the two, HEAD and the work tree disagree: a sync killed there would
leave files that look like a change which undoes the merge (and every other
machine's changes the replay brought in), and the next sync would commit
it. So a mark in the git folder names both commits while it lasts, and the
next sync first brings each file the two commits differ in, and that holds
one of their two versions, in line with HEAD (`recover`).
"""

from __future__ import annotations

# Marks of a few bytes: the standard library's json, not orjson, whose import
# (12 ms) an idle backup, which reads no mark, need not pay for.
import json
import os
from typing import TextIO

from crdt_merge_driver import PROGRAM
from crdt_merge_driver.sync.clone import Clone, say
from crdt_merge_driver.sync.lock import clear_index_lock
from crdt_merge_driver.sync.rebase import rebase
from crdt_merge_driver.sync.verdict import Transient

# In the git folder (per worktree): the two commits of a replay that is moving HEAD.
REPLAY_MARK = "crdt-merge-driver-sync.replaying"

Versions = dict[str, tuple[str | None, str | None]]  # path -> (blob at the old HEAD, at the new)


def follow(clone: Clone, old: str, new: str, log: TextIO) -> None:
    """Bring HEAD (at ``old``) and the work tree to ``new``, the replayed commits."""
    if new != old and not move_head(clone, old, new):
        # A changed file is not clean: the rebase's autostash keeps the edit. ``--onto NEW
        # OLD`` replays nothing (HEAD is at OLD): ``new`` holds the local commits already,
        # maybe rewritten, and a rebase onto it alone would apply them a second time.
        rebase(clone, new, log, after=old, kept=(
            f"{new[:10]} is on {clone.where} already, but this work tree could not follow it: "
            "HEAD and the files are as they were. Move what is in the way, then sync again"
        ))  # fmt: skip


def move_head(clone: Clone, old: str, new: str) -> bool:
    """HEAD from ``old`` to ``new`` and the work tree after it; False if a changed file is dirty."""
    mark = clone.git_dir / REPLAY_MARK
    mark.write_bytes(
        json.dumps({"pid": os.getpid(), "pgid": os.getpgrp(), "old": old, "new": new}).encode()
    )
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
        left = json.loads(mark.read_bytes())
        old, new = str(left["old"]), str(left["new"])
    except (OSError, ValueError, KeyError, TypeError):
        left, old, new = {}, "", ""
    clear_index_lock(clone.git_dir, left.get("pgid"), left="")  # killed inside read-tree
    versions = _differences(clone, old, new) if old and new else {}
    present = [path for path in versions if (clone.top / path).is_file()]
    feed = "".join(f"{path}\n" for path in present).encode("utf-8", "surrogateescape")
    hashed = clone.git("hash-object", "--stdin-paths", stdin=feed).stdout.decode().split()
    held = dict(zip(present, hashed, strict=True))
    # A file with neither version is someone's edit: it stays, and gets committed as one.
    # A missing file is not: git may have been killed between removing and writing it.
    follow = [path for path in versions if path not in held or held[path] in versions[path]]
    in_head = _blobs(clone, "HEAD", follow)
    literal = {"GIT_LITERAL_PATHSPECS": "1"}
    if restore := [path for path in follow if path in in_head]:
        clone.git("checkout", "HEAD", "--", *restore, env=literal)
    if drop := [path for path in follow if path not in in_head]:
        clone.git("rm", "--quiet", "--cached", "--ignore-unmatch", "--", *drop, env=literal)
        for path in drop:
            (clone.top / path).unlink(missing_ok=True)
    for path in sorted(set(versions) - set(follow)):
        say(log, f"warning: {path} changed while an interrupted sync was replaying; kept as is")
    say(log, f"finished the replay an interrupted sync left (pid {left.get('pid', '?')}): "
             "the work tree matches HEAD")  # fmt: skip
    mark.unlink(missing_ok=True)


def _differences(clone: Clone, old: str, new: str) -> Versions:
    """Every file ``old`` and ``new`` hold differently: its blob in each (None: not there)."""
    listed = clone.git("diff-tree", "-r", "-z", "--no-renames", old, new, check=False)
    if listed.returncode != 0:
        return {}  # a commit is gone: nothing is known to line up
    fields = listed.stdout.split(b"\0")
    versions: Versions = {}
    for meta, path in zip(fields[0:-1:2], fields[1::2], strict=True):
        _, _, before, after, _ = meta.decode().split(" ")
        name = path.decode("utf-8", "surrogateescape")
        versions[name] = (_blob_or_none(before), _blob_or_none(after))
    return versions


def _blob_or_none(oid: str) -> str | None:
    return None if not oid.strip("0") else oid  # all zeros: no file on that side


def _blobs(clone: Clone, rev: str, paths: list[str]) -> dict[str, str]:
    """The blob of each of ``paths`` that ``rev`` holds."""
    if not paths:
        return {}
    listed = clone.git("ls-tree", "-r", "-z", rev, "--", *paths, env={"GIT_LITERAL_PATHSPECS": "1"})
    found = {}
    for entry in listed.stdout.split(b"\0"):
        if entry:
            meta, _, path = entry.partition(b"\t")
            found[path.decode("utf-8", "surrogateescape")] = meta.decode().split(" ")[2]
    return found


