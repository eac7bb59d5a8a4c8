"""The lock that keeps two syncs (or backups) out of one clone, and taking it over from the dead.

A lock is a file in the git folder created with ``O_EXCL`` that holds its
owner's pid. A sync killed without a chance to clean up leaves it behind,
so a lock whose process is gone (a zombie counts as gone) is taken over;
a guard file keeps two takers of one stale lock apart. The process checks
read Linux's /proc where they need to, and answer "alive" where they cannot
tell: a live sync must never lose its lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from crdt_merge_driver.clone import SyncError, say
from crdt_merge_driver.errors import RefusedError

LOCK = "crdt-merge-driver-sync.lock"
_TAKEOVER_STALE = 10.0  # seconds after which an abandoned takeover guard is ignored
_DEAD = ("Z", "X")


@contextmanager
def lock(git_dir: Path, log: TextIO, *, what: str = "sync or backup") -> Iterator[None]:
    """Hold ``<git dir>/<LOCK>`` (O_EXCL, holding our pid) while sync or backup runs."""
    path = git_dir / LOCK
    for _ in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if not _stale(path, holder):
                who = f"pid {holder}" if holder else "just starting"
                raise RefusedError(
                    f"another {what} ({who}) is running in this clone; wait for it "
                    f"(delete {path} only if no {what} is running)"
                ) from None
            _break_stale(path, holder, log, what)
            continue
        with os.fdopen(fd, "w") as stream:
            stream.write(f"{os.getpid()}\n")
        break
    else:
        raise RefusedError(f"could not take {path}: another {what} keeps taking it")
    try:
        yield
    finally:
        if _holder(path) == os.getpid():
            path.unlink(missing_ok=True)


def _holder(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _stale(path: Path, holder: int | None) -> bool:
    if holder is not None:
        return not _alive(holder)
    # No pid yet: a sync between creating the file and writing to it, or one
    # killed right there; only the second leaves it that way for long.
    try:
        return time.time() - path.stat().st_mtime > _TAKEOVER_STALE
    except FileNotFoundError:
        return True


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a lock with our own pid was left by an earlier life of this pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    stat = stat_of(Path(f"/proc/{pid}/stat"))
    # A killed sync its parent has not reaped yet is a zombie: gone.
    return stat is None or stat[0] not in _DEAD


def stat_of(path: Path) -> tuple[str, int] | None:
    """A process's state letter and process group, from Linux's /proc; None elsewhere."""
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def _break_stale(path: Path, holder: int | None, log: TextIO, what: str) -> None:
    """Remove a lock whose process is gone; a guard file keeps two takers apart."""
    guard = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        try:
            if time.time() - guard.stat().st_mtime > _TAKEOVER_STALE:
                guard.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
        return
    try:
        if _holder(path) == holder:  # still the dead one: nobody took it meanwhile
            path.unlink(missing_ok=True)
            say(log, f"took over {path.name} from {what} pid {holder}, which is gone")
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


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

