"""The lock that keeps two syncs (or backups) out of one clone.

The lock is ``flock`` on a file in the git folder: the kernel releases it
when its holder exits, however it exits (kill -9 included), so there is no
stale lock to take over and no window in which a just-started holder looks
dead. The file holds the holder's pid, for the message only; it stays in
place between runs (removing it would let a second run lock a file a third
no longer sees). Holding the lock, a run removes what a killed run left in
the git folder (sync's attributes files, backup's scratch indexes). The
process checks for a killed sync's ``index.lock`` read Linux's /proc where
they need to, and answer "alive" where they cannot tell.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

from crdt_merge_driver.errors import RefusedError
from crdt_merge_driver.sync.clone import ATTRIBUTES, SyncError, say

LOCK = "crdt-merge-driver-sync.lock"
# What a run killed before its cleanup leaves in the git folder: nobody else
# uses them once the lock is ours (every writer of them holds it).
LEFTOVERS = (f"{ATTRIBUTES}.*", "crdt-merge-driver-backup.*.index")
_DEAD = ("Z", "X")


@contextmanager
def lock(
    git_dir: Path, log: TextIO, *, what: str = "sync or backup", name: str = LOCK,
    then: str = "wait for it",
) -> Iterator[None]:  # fmt: skip
    """Hold ``flock`` on ``<git dir>/<name>`` while sync or backup runs; refuse if another does.

    ``name``: another lock than sync's (watch holds one for its lifetime); only
    sync's lock tidies up after a killed run, since only its holders make leftovers.
    ``then``: what the refusal tells the user to do.
    """
    path = git_dir / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            who = f" (pid {holder})" if holder else ""
            raise RefusedError(
                f"another {what}{who} is running in this clone ({path}); {then}"
            ) from None
        # The pid is for the message only: a full disk that keeps it out costs nothing.
        with suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            if name == LOCK:
                remove_leftovers(git_dir, log)
            yield
        finally:
            with suppress(OSError):
                os.ftruncate(fd, 0)  # still ours: the next reader sees no stale pid
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def remove_leftovers(git_dir: Path, log: TextIO) -> None:
    """Remove the files a killed sync or backup left in ``git_dir`` (call holding the lock)."""
    for pattern in LEFTOVERS:
        for left in sorted(git_dir.glob(pattern)):
            left.unlink(missing_ok=True)
            say(log, f"removed {left.name}, left by an interrupted sync or backup")


def stat_of(path: Path) -> tuple[str, int] | None:
    """A process's state letter and process group, from Linux's /proc; None elsewhere."""
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def group_gone(pgid: int | None, grace: float = 1.0) -> bool:
    """Whether no live process is left in group ``pgid`` (zombies do not count)."""
    if pgid is None or pgid == os.getpgrp():
        return False  # unknown, or our own group: cannot tell
    give_up = time.monotonic() + grace  # SIGKILLed processes take a moment to go
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        members = [stat for path in Path("/proc").glob("[0-9]*/stat")
                   if (stat := stat_of(path)) is not None and stat[1] == pgid]  # fmt: skip
        if members and all(state in _DEAD for state, _ in members):
            return True
        if time.monotonic() > give_up:
            return False
        time.sleep(0.05)


def clear_index_lock(git_dir: Path, pgid: int | None, *, left: str) -> None:
    """Remove the ``index.lock`` a killed sync's git left, if no process of its group runs.

    git cannot remove its lock when killed; another git may hold one, though,
    so it goes only when nothing of that sync (process group ``pgid``) is
    alive. ``left``: what else the killed sync left, for the message.
    """
    index_lock = git_dir / "index.lock"
    if not index_lock.exists():
        return
    if not group_gone(pgid):
        raise SyncError(
            f"an interrupted sync left {left}{index_lock}, and a process of its group may still "
            f"run; wait for it, or if no git runs here, delete {index_lock} and sync again"
        )
    index_lock.unlink(missing_ok=True)

