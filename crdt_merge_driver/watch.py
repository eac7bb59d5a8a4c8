"""``watch``: back up the live file moments after each write; restore when the remote moves.

The memory server re-reads its file on every tool call, so a process that
runs `backup` a moment after each write, and again a moment after another
machine pushes, makes the repository one shared memory. watch adds no merge
logic of its own: every step is `backup` (or `restore`, for a machine whose
live file does not exist yet), with its compare-and-swap restore, under
sync's lock. What watch adds is *when*:

* the live file's stat (mtime, size, inode: the server renames a new file
  over the old) is polled every POLL seconds at most; once it has been quiet
  for ``debounce`` seconds (or has kept changing for LONGEST_BURST), a step;
* every ``interval`` seconds one ``git ls-remote`` of the branch; when it
  names another commit than the one the live file last reflected, a step.

Nothing changed anywhere costs one stat per poll and one ls-remote per
interval: no commit, no write. A step that fails (the remote unreachable,
another backup holding the lock) is retried with tenacity's backoff, one log
line when the failure starts and one when it ends; local changes wait in the
live file meanwhile and go out with the first step that reaches the remote.
SIGTERM and SIGINT set a flag: the step running finishes (a retry wait inside
it is cut short), and watch exits 0. docs/watch.md tells the whole story.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import TextIO

import tenacity

from crdt_merge_driver import install
from crdt_merge_driver.backup import DEFAULT_AS, BackupError, backup, live_path, remote_of, restore
from crdt_merge_driver.core.live import server_form
from crdt_merge_driver.errors import CrdtError, ExitCode
from crdt_merge_driver.log import say
from crdt_merge_driver.sync.clone import Clone, current_branch, find_url
from crdt_merge_driver.sync.lock import lock
from crdt_merge_driver.sync.verdict import classify

DEFAULT_INTERVAL = 30.0
DEFAULT_DEBOUNCE = 1.0
POLL = 0.25  # seconds between two stats of the live file, at most
LONGEST_BURST = 10.0  # a file that never stays quiet is backed up this often all the same
LOCK = "crdt-merge-driver-watch.lock"
# One step's backup: enough attempts for a crowd of machines, short enough
# that a remote lost in the middle is noticed by the next probe, not in 5 min.
BACKUP_ATTEMPTS = 30
BACKUP_DEADLINE = 60.0
PROBE_TIMEOUT = 20.0
BACKOFF_FIRST = 1.0  # the first retry after a failed step; doubling from there
BACKOFF_MAX = 300.0

Stat = tuple[int, int, int] | None


class WatchError(CrdtError):
    """watch cannot start: bad arguments, no folder for the live file."""


class Stopped(CrdtError):
    """SIGTERM or SIGINT arrived: what runs stops at its next wait (a clean exit, code 0)."""

    exit_code = ExitCode.OK


class _Unreachable(Exception):
    """The probe did not reach the remote."""


class _Failed(Exception):
    """A step's backup or restore failed (its error's line is the message); retried."""


def stat_of(path: Path) -> Stat:
    """What changes whenever the server writes: mtime, size and inode (None: no file)."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_mtime_ns, found.st_size, found.st_ino


def backoff() -> tenacity.wait.wait_base:
    """The wait before each retry of a failed step: 1 s, 2 s, 4 s... at most 5 min, jittered."""
    return tenacity.wait_exponential(multiplier=BACKOFF_FIRST, max=BACKOFF_MAX) + \
        tenacity.wait_random(0, BACKOFF_FIRST / 2)  # fmt: skip


def watch(
    *, memory: Path | None = None, repo: Path | None = None, as_path: str | None = None,
    interval: float = DEFAULT_INTERVAL, debounce: float = DEFAULT_DEBOUNCE,
    log: TextIO = sys.stderr,
) -> None:  # fmt: skip
    """Keep the live file and the remote branch in step until SIGTERM or SIGINT."""
    if not interval > 0 or debounce < 0:
        raise WatchError("--interval must be above 0 seconds and --debounce at least 0")
    top, git_dir, common = install.find_folders(repo or _env_path("REPO_DIR") or Path.cwd())
    live = live_path(memory, top)
    if not live.parent.is_dir():
        raise WatchError(f"the folder of the memory file does not exist: {live.parent}")
    # For the whole process: a second watcher on this clone would only race the first.
    alone = "it runs until stopped, and one watch a clone is enough: stop it to start another"
    with lock(git_dir, log, what="watch", name=LOCK, then=alone), _stop_on_signals() as stopping:
        remote = remote_of(top)
        clone = Clone(top, git_dir, common, {}, remote, find_url(top, remote), "")
        watcher = Watcher(live, clone._replace(branch=current_branch(clone)),
                          as_path or DEFAULT_AS, interval=interval, debounce=debounce,
                          stopping=stopping, log=log)  # fmt: skip
        with suppress(Stopped):
            watcher.run()
        say(log, "stopped; the next watch, backup or sync takes up from here", summary=True)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value) if value else None


@contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """While the block runs, SIGTERM and SIGINT only set a flag; the block gets its reader."""
    caught: list[int] = []

    def note(number: int, frame: FrameType | None) -> None:
        # Only a flag: raising here could cut a git command's bookkeeping in half.
        caught.append(number)

    previous = {number: signal.signal(number, note) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: bool(caught)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class Watcher:
    """The loop: poll the live file, probe the remote, and run a step when either moved."""

    def __init__(
        self, memory: Path, clone: Clone, as_path: str, *, interval: float, debounce: float,
        stopping: Callable[[], bool], log: TextIO, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wait: tenacity.wait.wait_base | None = None,
    ) -> None:  # fmt: skip
        self.memory, self.clone, self.as_path = memory, clone, as_path
        self.interval, self.debounce = interval, debounce
        self.stopping, self.log, self.clock, self._sleep = stopping, log, clock, sleep
        self.wait = wait or backoff()
        self.poll = min(POLL, max(debounce / 2, 0.05))
        self.known: str | None = None  # the remote commit the live file last reflected
        self.last: Stat = None  # the live file's stat when it was last backed up or restored
        self.failing: str | None = None  # the kind of failure last reported, if failing

    def run(self) -> None:
        say(self.log, f"watching {self.memory} with {self.clone.top} ({self.clone.where}): the "
                      f"remote every {self.interval:g}s, the file after {self.debounce:g}s quiet",
            summary=True)  # fmt: skip
        self.last = stat_of(self.memory)
        self.converge(local=True)  # whatever happened while no watcher ran
        changed_at = burst_at = None
        next_probe = self.clock() + self.interval
        while not self.stopping():
            now, current = self.clock(), stat_of(self.memory)
            if current != self.last:
                self.last, changed_at = current, now
                burst_at = now if burst_at is None else burst_at
            if changed_at is not None and burst_at is not None and (
                now - changed_at >= self.debounce or now - burst_at >= LONGEST_BURST
            ):
                changed_at = burst_at = None
                self.converge(local=True)
                next_probe = self.clock() + self.interval
            elif now >= next_probe:
                self.converge(local=False)
                next_probe = self.clock() + self.interval
            self.pause(self.poll)

    def pause(self, seconds: float) -> None:
        """Sleep, in slices short enough to see a stop request; `Stopped` once one came."""
        until = self.clock() + seconds
        while not self.stopping():
            left = until - self.clock()
            if left <= 0:
                return
            self._sleep(min(left, POLL))
        raise Stopped("stopped by a signal")

    # --- one step ---------------------------------------------------------------

    def converge(self, *, local: bool) -> None:
        """A step, retried until it succeeds.

        ``local``: the live file changed, so back it up even if the remote did not move.
        """
        policy = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((_Unreachable, _Failed)),
            stop=tenacity.stop_never, wait=self.wait, sleep=self.pause,
            before_sleep=self._report, reraise=True,
        )  # fmt: skip
        for attempt in policy:
            with attempt:
                self._step(local=local)
        if self.failing is not None:
            say(self.log, "the failing step has succeeded", summary=True)
            self.failing = None

    def _step(self, *, local: bool) -> None:
        tip = self._probe()
        if self.failing == "unreachable":  # said before the step's own line, which may follow
            say(self.log, f"{self.clone.where} is reachable again", summary=True)
            self.failing = None
        if not local and tip == self.known:
            return
        before = stat_of(self.memory)
        try:
            if before is None:
                if tip is None:  # no memory anywhere yet: the server's first write starts it
                    self.known = None
                    return
                try:
                    result = restore(memory=self.memory, repo=self.clone.top,
                                     as_path=self.as_path, attempts=BACKUP_ATTEMPTS,
                                     deadline=BACKUP_DEADLINE, sleep=self.pause,
                                     log=self.log)  # fmt: skip
                except BackupError as nothing:  # the branch holds no memory file yet
                    say(self.log, str(nothing))
                    self.known = tip
                    return
            else:
                result = backup(memory=self.memory, repo=self.clone.top, as_path=self.as_path,
                                attempts=BACKUP_ATTEMPTS, deadline=BACKUP_DEADLINE,
                                sleep=self.pause, log=self.log)  # fmt: skip
        except Stopped:
            raise
        except CrdtError as error:
            raise _Failed(str(error)) from None
        self.known = result.commit
        after = stat_of(self.memory)
        # Our own restore, or nothing, is not a change to back up. Else the server
        # wrote meanwhile: `last` stays as it was, and the next poll sees a change.
        if after == before or self._holds(result.commit):
            self.last = after

    def _probe(self) -> str | None:
        """The remote branch's commit (None: no such branch yet); `_Unreachable` if no answer."""
        try:
            result = self.clone.git("ls-remote", self.clone.remote,
                                    f"refs/heads/{self.clone.branch}", check=False,
                                    timeout=PROBE_TIMEOUT)  # fmt: skip
        except CrdtError:  # timed out
            raise _Unreachable(f"no answer within {PROBE_TIMEOUT:g}s") from None
        if result.returncode != 0:
            raise _Unreachable(classify(result.stderr).reason)
        words = result.stdout.split()
        return words[0].decode() if words else None

    def _holds(self, commit: str) -> bool:
        """Whether the live file is exactly what a restore of ``commit`` writes."""
        found = self.clone.git("cat-file", "blob", f"{commit}:{self.as_path}", check=False)
        try:
            return found.returncode == 0 and self.memory.read_bytes() == server_form(found.stdout)
        except (OSError, CrdtError):
            return False

    def _report(self, state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        kind = "unreachable" if isinstance(failure, _Unreachable) else "failed"
        wait = state.next_action.sleep if state.next_action else 0.0
        if kind == "unreachable":
            line = (f"{self.clone.where} ({self.clone.url}) is unreachable: {failure}; local "
                    "changes wait in the live file, pushed once it is back")  # fmt: skip
        else:
            line = f"{failure}; trying again"
        # One line when a failure starts (or changes kind), every retry only with -v.
        say(self.log, f"{line} (next try in {wait:.1f}s)", summary=kind != self.failing)
        self.failing = kind
