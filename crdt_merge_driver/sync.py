"""``crdt-merge-driver sync``: commit memory files, then fetch, rebase and push until it lands.

When many machines back up to one branch in the same minute, every push but
one is rejected as non-fast-forward. Each attempt here fetches the branch,
rebases the local commits onto it (the merge driver, supplied to git by this
module, merges the memory files), checks what the push would change, and
pushes; a rejection is retried after a random wait that grows with the
failures and with how long the failed attempt took, so that the losers of
one round spread out instead of colliding again.

Only what a later attempt can fix is retried (see `classify`); everything
else stops at once with one line that says what happened and what to run.
Whatever happens, the clone is left on its local commits, never in the
middle of a rebase. docs/sync.md gives the reasons for each choice.
"""

from __future__ import annotations

import os
import random
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple, TextIO

import tenacity

from crdt_merge_driver import git, install
from crdt_merge_driver.codec import parse
from crdt_merge_driver.errors import CrdtError, GaveUpError, GitError, InputError, RefusedError
from crdt_merge_driver.install import _DEFAULT_NAME as DRIVER_NAME  # the name install writes
from crdt_merge_driver.record import Key, describe

PROGRAM = "crdt-merge-driver"
# A pre-receive (or update) hook that refuses a push is retried only when one
# of its lines says the refusal is temporary with one of these words.
TRANSIENT_MARKERS = ("transient", "try again")
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
# Files sync keeps in the git folder (per worktree): the lock that stops two
# syncs in one clone, the mark of a rebase it started, its attributes files
# (this name plus a unique suffix).
LOCK = "crdt-merge-driver-sync.lock"
REBASE_MARK = "crdt-merge-driver-sync.rebasing"
ATTRIBUTES = "crdt-merge-driver-sync.attributes"
_TAKEOVER_STALE = 10.0  # seconds after which an abandoned takeover guard is ignored
_MIN_NETWORK_TIMEOUT = 1.0

Clock = Callable[[], float]


class SyncResult(NamedTuple):
    commit: str | None  # what the remote branch holds now; None if nothing was pushed
    attempts: int


class Verdict(NamedTuple):
    retry: bool
    reason: str


class SyncError(CrdtError):
    """Sync cannot start: not a repository, unknown remote, detached HEAD, bad limits."""


class Transient(Exception):
    # Not an error a user sees: the signal to try again, caught by the retry policy.
    """A failure that a later attempt can get past (the remote moved on, a dropped link)."""

    def __init__(self, reason: str, *, took: float = 0.0) -> None:
        self.reason = reason
        self.took = took  # seconds the failed attempt took; the loop fills it in
        super().__init__(reason)


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


# --- what git's words mean ------------------------------------------------------

_HOOK_DECLINED = re.compile(r"\(.*hook declined\)")
_MISSING_BRANCH = re.compile(r"couldn't find remote ref")
# Checked in order; the first match decides.
# fmt: off
_RULES: tuple[tuple[bool, re.Pattern[str], str], ...] = tuple(
    (retry, re.compile(pattern, re.IGNORECASE), reason)
    for retry, pattern, reason in (
        (False, r"Authentication failed|could not read (Username|Password)|Permission denied \("
                r"|Host key verification failed|Invalid username or password"
                r"|returned error: 40[13]\b|HTTP 40[13]\b", "authentication failed"),
        (False, r"does not appear to be a git repository|repository '[^']*' not found"
                r"|Repository not found|no such repository|access denied", "no such repository"),
        (False, r"Could not resolve (host|hostname)|unable to look up|Name or service not known",
                "unknown host"),
        (True, r"\((fetch first|non-fast-forward|stale info)\)",
               "rejected: the remote moved on (another machine pushed first)"),
        (True, r"cannot lock ref|failed to update ref|incorrect old value"
               r"|Unable to create '[^']*\.lock'", "the remote branch was locked by another push"),
        (True, r"returned error: (408|429|5\d\d)|HTTP (408|429|5\d\d)",
               "the server is busy or failing for now (HTTP 408, 429 or 5xx)"),
        (True, r"Connection refused|Couldn't connect to server|Failed to connect",
               "connection refused"),
        (True, r"Connection reset|Broken pipe", "connection reset"),
        (True, r"timed out|Operation too slow", "timed out"),
        (True, r"hung up unexpectedly|early EOF|unexpected disconnect"
               r"|Could not read from remote repository", "the remote hung up"),
    )
)
# fmt: on


def classify(stderr: str) -> Verdict:
    """Whether a failed fetch or push is worth another attempt, and why, from git's stderr."""
    stderr = redact(stderr)
    if _HOOK_DECLINED.search(stderr):
        said = [line.removeprefix("remote:").strip() for line in stderr.splitlines()
                if line.startswith("remote:")]  # fmt: skip
        words = "; ".join(line for line in said if line) or "no reason given"
        if any(marker in words.lower() for marker in TRANSIENT_MARKERS):
            return Verdict(True, f"the remote's hook refused for now: {words}")
        return Verdict(False, f"the remote's hook refused the push: {words}")
    for retry, pattern, reason in _RULES:
        if pattern.search(stderr):
            return Verdict(retry, reason)
    return Verdict(False, _first_line(stderr))


_USERINFO = re.compile(r"(?<=//)[^/@\s]+@|(?<![\w/])[^\s/@:'\"]+:[^\s/@'\"]+@(?=[\w.-])")


def redact(text: str) -> str:
    """``text`` without the ``user:token@`` of any URL in it (CI logs are often public)."""
    return _USERINFO.sub("", text)


def _first_line(stderr: str) -> str:
    for line in stderr.splitlines():
        text = line.strip()
        if text and not text.startswith(("hint:", "To ", "remote: ")):
            return text
    return "git printed nothing"


# --- the clone sync works in ------------------------------------------------------


class Clone(NamedTuple):
    top: Path
    git_dir: Path  # this worktree's: the rebase state, sync's lock and mark
    common_dir: Path  # shared by all worktrees: config, refs, the shallow file
    env: Mapping[str, str]  # the driver's config and, when none is set, an identity
    remote: str
    url: str
    branch: str

    def git(self, *args: str, check: bool = True, stdin: bytes | None = None,
            timeout: float | None = None) -> git.Result:  # fmt: skip
        return git.run(*args, cwd=self.top, env=self.env, check=check, stdin=stdin,
                       timeout=timeout)  # fmt: skip

    @property
    def tracking(self) -> str:
        return f"refs/remotes/{self.remote}/{self.branch}"

    @property
    def where(self) -> str:
        return f"{self.remote}/{self.branch}"

    def rebasing(self) -> bool:
        return any((self.git_dir / name).exists() for name in ("rebase-merge", "rebase-apply"))


def sync(
    *,
    repo: Path,
    remote: str = "origin",
    branch: str | None = None,
    message: str | None = None,
    paths: Sequence[Path] = (),
    attempts: int = 30,
    deadline: float = 300.0,
    allow_mass_delete: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    log: TextIO = sys.stderr,
) -> SyncResult:
    """Commit memory files, then fetch, rebase, check and push until the remote has them."""
    if attempts < 1 or not deadline > 0:
        raise SyncError("--attempts must be at least 1 and --deadline above 0 seconds")
    top = install.find_toplevel(repo)
    git_dir = Path(git.output("rev-parse", "--absolute-git-dir", cwd=top))
    with lock(git_dir, log), driver_environment(top, git_dir) as env:
        common = git.find_common_dir(top)
        clone = Clone(top, git_dir, common, env, remote, find_url(top, remote), "")
        recover(clone, log)
        check_idle(clone)
        clone = clone._replace(branch=branch or current_branch(clone))
        commit(clone, [(repo / path).absolute() for path in paths], message, log)
        return push_until_landed(
            clone, attempts=attempts, deadline=deadline, allow_mass_delete=allow_mass_delete,
            sleep=sleep, log=log,
        )  # fmt: skip


def say(log: TextIO, line: str) -> None:
    print(f"{PROGRAM}: {line}", file=log, flush=True)


# --- before the loop ------------------------------------------------------------


@contextmanager
def lock(git_dir: Path, log: TextIO, *, name: str = LOCK) -> Iterator[None]:
    """Hold ``<git dir>/<name>`` (created with O_EXCL, holding our pid) while sync runs."""
    path = git_dir / name
    for _ in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if not _stale(path, holder):
                who = f"pid {holder}" if holder else "just starting"
                raise RefusedError(
                    f"another sync ({who}) is running in this clone; wait for it "
                    f"(delete {path} only if no sync is running)"
                ) from None
            _break_stale(path, holder, log)
            continue
        with os.fdopen(fd, "w") as stream:
            stream.write(f"{os.getpid()}\n")
        break
    else:
        raise RefusedError(f"could not take {path}: other syncs keep taking it")
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
    stat = _stat(Path(f"/proc/{pid}/stat"))
    # A killed sync its parent has not reaped yet is a zombie: gone.
    return stat is None or stat[0] not in _DEAD


_DEAD = ("Z", "X")


def _stat(path: Path) -> tuple[str, int] | None:
    """A process's state letter and process group, from Linux's /proc; None elsewhere."""
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def _break_stale(path: Path, holder: int | None, log: TextIO) -> None:
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
            say(log, f"took over {path.name} from sync pid {holder}, which is gone")
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


@contextmanager
def driver_environment(top: Path, git_dir: Path) -> Iterator[dict[str, str]]:
    """The environment that supplies the driver to every git command sync runs.

    The config goes in as GIT_CONFIG_COUNT/KEY/VALUE, git's environment form
    of ``git -c`` (same scope, and it reaches the git processes git starts).
    """
    user = _user_attributes(top)
    ours = [f"# {PROGRAM} sync: the memory files merge with the driver"]
    ours += [f"{pattern} merge={DRIVER_NAME}" for pattern in install.DEFAULT_PATTERNS]
    separator = b"\n" if user and not user.endswith(b"\n") else b""
    # A file of its own, so that environments can nest (backup runs sync inside one).
    fd, name = tempfile.mkstemp(prefix=f"{ATTRIBUTES}.", dir=git_dir)
    attributes = Path(name)
    with os.fdopen(fd, "wb") as stream:
        stream.write(user + separator + "\n".join(ours).encode() + b"\n")
    settings = {**install.driver_config(DRIVER_NAME), "core.attributesFile": str(attributes)}
    env = _config_env(settings)
    env.update(identity(top))
    try:
        yield env
    finally:
        attributes.unlink(missing_ok=True)


def _user_attributes(top: Path) -> bytes:
    # core.attributesFile from the command line replaces the user's own: keep its lines.
    configured = git.read_config("core.attributesFile", cwd=top, path=True)
    path = Path(configured) if configured else install.find_global_attributes(top)
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _config_env(settings: Mapping[str, str]) -> dict[str, str]:
    # Append to entries the caller's own environment may already hold.
    start = int(os.environ.get("GIT_CONFIG_COUNT", "0") or "0")
    env = {"GIT_CONFIG_COUNT": str(start + len(settings))}
    for index, (key, value) in enumerate(settings.items(), start):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def identity(top: Path) -> dict[str, str]:
    """A default author and committer for sync's commits, only if git has none (CI)."""
    if git.run("var", "GIT_COMMITTER_IDENT", cwd=top, check=False).returncode == 0:
        return {}
    name, email = PROGRAM, f"{PROGRAM}@{socket.gethostname()}"
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}  # fmt: skip


def find_url(top: Path, remote: str) -> str:
    remotes = git.output("remote", cwd=top).split()
    if remote not in remotes:
        raise SyncError(
            f"unknown remote {remote!r}: this clone has "
            f"{', '.join(remotes) or 'no remotes'}; pass --remote NAME, or `git remote add`"
        )
    return redact(git.output("remote", "get-url", remote, cwd=top))


def current_branch(clone: Clone) -> str:
    result = clone.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if result.returncode != 0:
        raise SyncError("HEAD is detached: pass --branch NAME to say which remote branch to sync")
    return result.stdout.decode().strip()


def recover(clone: Clone, log: TextIO) -> None:
    """Abort a rebase that a killed sync left behind (its mark says so)."""
    mark = clone.git_dir / REBASE_MARK
    if not mark.exists():
        return
    if clone.rebasing():
        left = _read_mark(mark)
        index_lock = clone.git_dir / "index.lock"
        if index_lock.exists():
            # Killed while the driver ran: git held the index then and could
            # not remove its lock. Safe to remove only if nothing of that
            # sync (its process group) is still running.
            if not _group_gone(left.get("pgid")):
                raise SyncError(
                    f"an interrupted sync left a rebase and {index_lock}, and a process of "
                    f"its group may still run; wait for it, or if no git runs here, delete "
                    f"{index_lock} and sync again"
                )
            index_lock.unlink(missing_ok=True)
        clone.git("rebase", "--abort")
        remove_merge_temps(clone, since=mark.stat().st_mtime)
        say(log, f"aborted the rebase an interrupted sync left (pid {left.get('pid', '?')}); "
                 "the local commits are as they were before it")  # fmt: skip
    mark.unlink(missing_ok=True)


def recover_interrupted(*, repo: Path, log: TextIO = sys.stderr) -> None:
    """Abort a rebase a killed sync left in ``repo``, under sync's lock.

    `sync` does this itself; this is for callers (backup) that look at HEAD
    before they call `sync`, and would otherwise find it detached mid-rebase.
    """
    top = install.find_toplevel(repo)
    git_dir = Path(git.output("rev-parse", "--absolute-git-dir", cwd=top))
    with lock(git_dir, log):
        recover(Clone(top, git_dir, git.find_common_dir(top), {}, "", "", ""), log)


def _read_mark(path: Path) -> dict[str, int]:
    try:
        words = path.read_text().split()
    except OSError:
        return {}
    return {key: int(value) for key, value in zip(words[::2], words[1::2], strict=False)
            if value.isdigit()}  # fmt: skip


def _group_gone(pgid: int | None, grace: float = 1.0) -> bool:
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
                   if (stat := _stat(path)) is not None and stat[1] == pgid]  # fmt: skip
        if members and all(state in _DEAD for state, _ in members):
            return True
        if time.monotonic() > give_up:
            return False
        time.sleep(0.05)


def check_idle(clone: Clone) -> None:
    states = {"rebase-merge": "a rebase", "rebase-apply": "a rebase or am",
              "MERGE_HEAD": "a merge", "CHERRY_PICK_HEAD": "a cherry-pick",
              "REVERT_HEAD": "a revert"}  # fmt: skip
    for name, what in states.items():
        if (clone.git_dir / name).exists():
            raise SyncError(
                f"{what} is in progress in {clone.top}; finish or abort it, then sync again"
            )


def commit(clone: Clone, paths: Sequence[Path], message: str | None, log: TextIO) -> str | None:
    """Commit ``paths`` (default: changed memory files) and only them; None if unchanged."""
    specs = [str(path) for path in paths] or memory_changes(clone)
    if not specs:
        return None
    clone.git("add", "--", *specs)
    staged = clone.git("diff", "--cached", "--name-only", "-z", "--", *specs).stdout
    names = [name.decode("utf-8", "surrogateescape") for name in staged.split(b"\0") if name]
    if not names:
        return None
    text = message or f"memory: sync {', '.join(names)} from {socket.gethostname()}"
    clone.git("commit", "--quiet", "-m", text, "--", *specs)
    head = clone.git("rev-parse", "HEAD").stdout.decode().strip()
    say(log, f"committed {', '.join(names)} as {head[:10]}")
    return head


def memory_changes(clone: Clone) -> list[str]:
    """Changed, deleted or untracked files that the driver is attached to."""
    data = clone.git("status", "--porcelain", "-z", "--untracked-files=all", "--no-renames").stdout
    paths = [entry[3:].decode("utf-8", "surrogateescape") for entry in data.split(b"\0") if entry]
    attributes = merge_attributes(clone, paths)
    return [path for path in paths if attributes.get(path) == DRIVER_NAME]


def merge_attributes(clone: Clone, paths: Sequence[str]) -> dict[str, str]:
    """The ``merge`` attribute of each path, as sync's git sees it."""
    if not paths:
        return {}
    feed = b"".join(path.encode("utf-8", "surrogateescape") + b"\0" for path in paths)
    data = clone.git("check-attr", "-z", "--stdin", "merge", stdin=feed).stdout
    fields = [field.decode("utf-8", "surrogateescape") for field in data.split(b"\0")]
    return {fields[i]: fields[i + 2] for i in range(0, len(fields) - 2, 3)}


# --- the loop ------------------------------------------------------------------


def push_until_landed(
    clone: Clone, *, attempts: int, deadline: float, allow_mass_delete: bool,
    sleep: Callable[[float], None], log: TextIO, clock: Clock = time.monotonic,
) -> SyncResult:  # fmt: skip
    started = clock()
    number = 0
    pushed: str | None = None

    def remaining() -> float:
        return max(started + deadline - clock(), _MIN_NETWORK_TIMEOUT)

    policy = retrying(attempts=attempts, deadline=deadline, sleep=sleep, log=log, clock=clock)
    try:
        for attempt in policy:
            with attempt:
                number = attempt.retry_state.attempt_number
                began = clock()
                try:
                    pushed = attempt_once(clone, number, remaining, allow_mass_delete, log)
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
    clone: Clone, number: int, timeout: Callable[[], float], allow_mass_delete: bool, log: TextIO
) -> str | None:
    """Fetch, rebase, check, push once; the commit pushed, or None if there was nothing to."""
    fetched = fetch(clone, timeout())
    head, remote_tip = _revisions(clone, "HEAD", clone.tracking if fetched else None)
    if head is None:
        return None  # an unborn branch with nothing committed
    if remote_tip is not None and head != remote_tip:
        rebase(clone, remote_tip, log)  # only a fast-forward when HEAD is behind
        head = _revision(clone, "HEAD") or head
    if head == remote_tip:
        return None
    check_push(clone, remote_tip, head, allow_mass_delete=allow_mass_delete)
    push(clone, head, timeout())
    say(log, f"sync attempt {number}: pushed {head[:10]} to {clone.where}")
    return head


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
    args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
            *(["--unshallow"] if shallow else [])]  # fmt: skip
    refspec = f"+refs/heads/{clone.branch}:{clone.tracking}"
    result = _network(clone, *args, clone.remote, refspec, timeout=timeout)
    if result.returncode != 0:
        if _MISSING_BRANCH.search(result.stderr):
            return False
        verdict = classify(result.stderr)
        if verdict.retry:
            raise Transient(f"fetch failed: {verdict.reason}")
        raise GitError(
            f"cannot fetch {clone.branch} from {clone.remote} ({clone.url}): {verdict.reason}",
            returncode=result.returncode, stderr=result.stderr,
        )  # fmt: skip
    return True


def rebase(clone: Clone, onto: str, log: TextIO) -> None:
    """Replay the local commits onto ``onto``; on any failure, abort and raise."""
    mark = clone.git_dir / REBASE_MARK
    mark.write_text(f"pid {os.getpid()} pgid {os.getpgrp()}\n")
    try:
        result = clone.git("rebase", "--merge", "--autostash", "--quiet", onto, check=False)
        if result.returncode != 0:
            raise _rebase_error(clone, result)
        if _AUTOSTASH_CONFLICT in result.stderr:
            # The rebase is done; only the uncommitted changes did not fit on top.
            say(log, f"warning: your uncommitted changes conflict with {clone.where}: "
                     "they are kept in `git stash list`; see `git status`")  # fmt: skip
    finally:
        if clone.rebasing():
            clone.git("rebase", "--abort", check=False)
            remove_merge_temps(clone, since=mark.stat().st_mtime)
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


_AUTOSTASH_CONFLICT = "Applying autostash resulted in conflicts"
_DRIVER_COMPLAINT = re.compile(
    rf"{PROGRAM}: cannot merge (?P<path>.+?) \((?:ancestor|ours|theirs), %(?P<side>[OAB])\)"
    r"(?:, line (?P<line>\d+))?: (?P<reason>.*?); left for you to resolve"
)
# During a rebase git swaps the sides: %A is the remote's version, %B the local commit.
_SIDES = {"A": "the version on {where}", "B": "your local commit's version",
          "O": "the common ancestor's version"}  # fmt: skip


def _rebase_error(clone: Clone, result: git.Result) -> CrdtError:
    output = redact(result.stdout.decode("utf-8", "replace") + result.stderr)
    kept = "nothing pushed, rebase aborted, local commits kept"
    complaint = _DRIVER_COMPLAINT.search(output)
    if complaint:
        path, line = complaint["path"], complaint["line"]
        side = _SIDES[complaint["side"]].format(where=clone.where)
        return RefusedError(
            f"{path}: {side} is damaged ({complaint['reason']}"
            f"{f', line {line}' if line else ''}), so the driver cannot merge it; {kept}. "
            f"Repair it: delete the conflict-marker lines, run `{PROGRAM} join {path} -o {path}`, "
            "commit, then sync again"
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
        f"rebase onto {clone.where} failed: {_first_line(output)}; {kept}",
        returncode=result.returncode, stderr=result.stderr,
    )  # fmt: skip


def check_push(clone: Clone, remote_tip: str | None, head: str, *, allow_mass_delete: bool) -> None:
    """Refuse a push that carries a bad memory file or deletes most of one."""
    if remote_tip is None:
        listed = clone.git("ls-tree", "-r", "-z", "--name-only", head).stdout
        changed = [name.decode("utf-8", "surrogateescape") for name in listed.split(b"\0") if name]
    else:
        diffed = clone.git("diff", "--name-only", "-z", "--no-renames", remote_tip, head).stdout
        changed = [name.decode("utf-8", "surrogateescape") for name in diffed.split(b"\0") if name]
    attributes = merge_attributes(clone, changed)
    memory = [path for path in changed if attributes.get(path) == DRIVER_NAME]
    if not memory:
        return
    blobs = read_blobs(clone, [f"{head}:{path}" for path in memory]
                       + [f"{remote_tip}:{path}" for path in memory if remote_tip])  # fmt: skip
    for index, path in enumerate(memory):
        after = _keys(path, blobs[index], clone.where)
        before = _remote_keys(blobs[len(memory) + index] if remote_tip else None)
        lost = len(before - after)
        if lost * 2 > len(before) and not allow_mass_delete:
            raise RefusedError(
                f"refusing to push {path}: it deletes {lost} of the {len(before)} records "
                f"{clone.where} has (more than half), which a damaged or emptied file must not "
                f"do to everyone's memory. Nothing pushed; your commits are kept. If you mean it, "
                f"sync again with --allow-mass-delete"
            )


def _keys(path: str, data: bytes | None, where: str) -> set[Key]:
    if data is None:
        return set()  # deleted by the push
    try:
        document = parse(data)
    except InputError as error:
        raise RefusedError(
            f"refusing to push {error.located(path)}; nothing pushed, your commits are kept. "
            f"Fix the file (`{PROGRAM} join {path} -o {path}` rewrites a readable one), "
            f"commit, then sync again"
        ) from None
    if document.repeated:
        key = min(document.repeated, key=repr)
        raise RefusedError(
            f"refusing to push {path}: {describe(key)} appears more than once (as merge=union "
            f"leaves it); nothing pushed. `{PROGRAM} join {path} -o {path}` folds repeats "
            f"into one; commit, then sync again"
        )
    return set(document.keys)


def _remote_keys(data: bytes | None) -> set[Key]:
    # A damaged remote file counts no records: a push that repairs it is not a mass delete.
    if data is None:
        return set()
    try:
        return set(parse(data).keys)
    except InputError:
        return set()


def read_blobs(clone: Clone, names: Sequence[str]) -> list[bytes | None]:
    """The content of each ``rev:path``, None where it does not exist; one git process."""
    if not names:
        return []
    feed = "".join(f"{name}\n" for name in names).encode("utf-8", "surrogateescape")
    data = clone.git("cat-file", "--batch", stdin=feed).stdout
    blobs: list[bytes | None] = []
    at = 0
    for _ in names:
        end = data.index(b"\n", at)
        header = data[at:end].split(b" ")
        if header[-1] == b"missing" or len(header) != 3:
            blobs.append(None)
            at = end + 1
            continue
        size = int(header[2])
        blobs.append(data[end + 1 : end + 1 + size])
        at = end + 1 + size + 1
    return blobs


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
