"""``backup`` and ``restore`` of a live memory file through the shared repository.

The trap this avoids: a machine's live file lacks the entities other
machines added since it last synced, and a naive backup commits that as
their deletion. So the live file is committed on top of the commit at which
this machine last synced it (a ref in the clone,
``refs/crdt-merge-driver/synced/<hash of the path>``): git's ancestor for the
merge is what this machine last saw, so what it never received is not a
deletion and what it really deleted is.

    live file --read--> this machine's version --commit on top of--> last sync
                                                                         |
    live file <--restore (only if unchanged)-- merged tip <--merge, sync--+

docs/backup.md tells the flow step by step, with what happens on a fault.
"""

from __future__ import annotations

import enum
import hashlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, TextIO

from crdt_merge_driver import PROGRAM, git, install
from crdt_merge_driver.atomic import ChangedMeanwhile, write_atomic
from crdt_merge_driver.errors import CrdtError, InputError, RefusedError
from crdt_merge_driver.sync import session
from crdt_merge_driver.sync.clone import Clone, read_objects, say
from crdt_merge_driver.sync.pending import Queue
from crdt_merge_driver.sync.verdict import Transient

DEFAULT_AS = "memory.jsonl"
SYNCED_REFS = "refs/crdt-merge-driver/synced/"
OWN_REFS = "refs/crdt-merge-driver/own/"
HOST_VARIABLE = "CRDT_MERGE_DRIVER_HOST"
# The server writes after every tool call; give up (nothing lost) after this
# many rounds in which it wrote between our read and our restore.
ROUNDS = 5
_FETCH_TIMEOUT = 60.0


class BackupError(CrdtError):
    """A backup or restore that cannot start (no file, no remote, not a memory file)."""


class BackupResult(NamedTuple):
    commit: str  # the commit the live file now reflects
    rounds: int


class Place(NamedTuple):
    """Where a backup runs: the live file, the clone (prepared by sync), the file's path in it."""

    memory: Path
    clone: Clone
    as_path: str
    # The file in each commit read so far: a backup reads the last-sync
    # point's version in four steps, a megabyte's inflate each at 10k entities.
    blobs: dict[str, bytes | None]

    @property
    def top(self) -> Path:
        return self.clone.top

    @property
    def git_dir(self) -> Path:
        return self.clone.git_dir

    @property
    def remote(self) -> str:
        return self.clone.remote

    @property
    def branch(self) -> str:
        return self.clone.branch

    def git(
        self, *args: str, stdin: bytes | None = None, check: bool = True,
        env: Mapping[str, str] | None = None, timeout: float | None = None,
    ) -> git.Result:  # fmt: skip
        return self.clone.git(*args, stdin=stdin, check=check, env=env, timeout=timeout)

    def rev(self, name: str) -> str | None:
        result = self.git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
        return result.stdout.decode().strip() or None

    @property
    def tracking(self) -> str:
        return f"refs/remotes/{self.remote}/{self.branch}"

    def revs(self, *names: str) -> list[str | None]:
        """The commit each name points to (None where it does not), in one git process."""
        found = read_objects(self.clone, [f"{name}^{{commit}}" for name in names])
        return [each.oid if each else None for each in found]

    def seen(self) -> _Seen | None:
        """What `mark` last noted, if anything."""
        try:
            commit, digest = self._seen_file().read_text().split()
        except (OSError, ValueError):
            return None
        return _Seen(commit, digest)

    def mark(self, seen: _Seen) -> None:
        """Note the live file's bytes as holding ``seen.commit``'s memory, for the next run.

        Only a cache: the next backup skips reading and comparing the file when
        its bytes are these. Lost or stale, the next run compares in full.
        """
        if self.seen() != seen:
            write_atomic(self._seen_file(), f"{seen.commit} {seen.digest}\n".encode(),
                         mode=0o644, durable=False)  # fmt: skip

    def _seen_file(self) -> Path:
        return self.git_dir / f"crdt-merge-driver-seen.{self.ref().rsplit('/', 1)[-1]}"

    def blob(self, commit: str | None) -> bytes | None:
        """The memory file in ``commit`` (an object id: what a commit holds never changes)."""
        if commit is None:
            return None
        if commit not in self.blobs:
            result = self.git("cat-file", "blob", f"{commit}:{self.as_path}", check=False)
            self.blobs[commit] = result.stdout if result.returncode == 0 else None
        return self.blobs[commit]

    def sync(
        self, *, attempts: int, deadline: float, sleep: Callable[[float], None], log: TextIO,
        allow_mass_delete: bool = False, fetched: bool = False,
    ) -> None:  # fmt: skip
        """Land the local commits on the remote branch (the file itself is already committed).

        ``fetched``: the branch was fetched just now; the first attempt builds on that.
        """
        # Only the file backup committed; a clone that has none yet (a restore
        # before any backup) has nothing to commit at all: an empty list, which
        # sync reads as "commit nothing" (None would mean every memory file).
        from crdt_merge_driver.sync import landing as sync

        mine = [self.top / self.as_path] if (self.top / self.as_path).exists() else []
        sync.land(self.clone, paths=mine, attempts=attempts, deadline=deadline, sleep=sleep,
                  log=log, summary=False, allow_mass_delete=allow_mass_delete,
                  fetched=fetched)  # fmt: skip

    def ref(self, *, own: bool = False) -> str:
        """The last-sync point (what the live file reflects), or this machine's last own version."""
        digest = hashlib.sha256(self.as_path.encode()).hexdigest()[:24]
        return (OWN_REFS if own else SYNCED_REFS) + digest


def backup(
    *,
    memory: Path | None = None,
    repo: Path | None = None,
    as_path: str | None = None,
    restore: bool = True,
    host: str | None = None,
    wall: Callable[[], float] = time.time,
    attempts: int = 30,
    deadline: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
    log: TextIO = sys.stderr,
    allow_mass_delete: bool = False,
) -> BackupResult:
    """Back up the live file, merge it with what the others pushed, and restore the result."""
    machine = host or os.environ.get(HOST_VARIABLE) or socket.gethostname()
    with _place(memory, repo, as_path, log) as place:
        for round_number in range(1, ROUNDS + 1):
            live = _read_or_none(place.memory)
            if live is None:
                raise BackupError(f"memory file {place.memory} does not exist")
            fetched = _fetch(place)
            reached = fetched is not _Fetched.NOT_REACHED
            synced, own, head, tracking = place.revs(
                place.ref(), place.ref(own=True), "HEAD", place.tracking
            )
            # Idle: the live file holds nothing its last-sync point lacks. Known
            # at no parse when its bytes are those this machine last synced.
            base: str | None = synced
            if synced is not None and place.seen() == _Seen(synced, _digest(live)):
                fresh = False
            else:
                from crdt_merge_driver import versions  # a file to read: see versions.py

                base, fresh = versions.read_live(place, live, synced, own, log)
            holds = base  # a commit whose memory the live file holds, if one is known
            if fresh:
                ours = versions.commit_version(place, base, live, machine=machine, wall=wall,
                                               seen=(tracking, head or tracking),
                                               allow_mass_delete=allow_mass_delete)  # fmt: skip
                versions.integrate(place, ours)
                # From here the live file (as read) is this commit, whatever happens
                # next: a later backup builds on it, so a deletion made after a
                # failed push is a deletion, not an echo of this commit.
                _move(place, ours, own=True)
                holds = ours if base is not None else None  # a first backup adopts
            elif not reached:
                say(log, f"warning: could not fetch from {place.clone.where} ({place.clone.url});"
                         " what it has that this machine lacks comes with a later run")  # fmt: skip
            # A sync only for what there is to land: this round's commit, what an
            # earlier run left unpushed, or what the remote has that HEAD lacks.
            # Unpushed commits are tried even when the fetch failed: a backup
            # that cannot land what it holds fails, whichever run committed it.
            waiting = 0 if fresh or head == tracking else unpushed(place, head, tracking)
            landed = ""
            if fresh or (head != tracking and (reached or waiting)):
                landed = _left_unpushed(waiting)
                place.sync(attempts=attempts, deadline=deadline, sleep=sleep, log=log,
                           allow_mass_delete=allow_mass_delete,
                           fetched=fetched is _Fetched.BRANCH)  # fmt: skip
                head = None
            tip = head or _head(place)
            if not restore:
                what = (f"backed up {place.memory} as {place.as_path} ({tip[:12]})" if fresh
                        else _nothing_new(place, base, "the live file was left alone"))  # fmt: skip
                say(log, what, summary=True)
                return BackupResult(tip, round_number)
            try:
                now = _write_live(place, tip, expect=live, holds=holds)
            except ChangedMeanwhile:
                say(log, f"the memory server wrote {place.memory} meanwhile; again, round "
                          f"{round_number + 1}")  # fmt: skip
                continue
            _move(place, tip, known=synced)
            place.mark(_Seen(tip, _digest(now or live)))
            if fresh:
                what = f"backed up and restored {place.memory} at {tip[:12]}"
            elif now is not None:
                what = _nothing_new(place, base, f"restored {place.clone.where} at {tip[:12]}")
            else:
                what = _nothing_new(place, base, f"{place.clone.where} has nothing newer")
            say(log, what + landed, summary=True)
            return BackupResult(tip, round_number)
    raise RefusedError(
        f"the memory server kept writing {place.memory} during {ROUNDS} rounds; everything it "
        "wrote is backed up, the live file was left alone: run backup again"
    )


def restore(
    *,
    memory: Path | None = None,
    repo: Path | None = None,
    as_path: str | None = None,
    attempts: int = 30,
    deadline: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
    log: TextIO = sys.stderr,
) -> BackupResult:
    """Write the repository's merged memory into the live file (a new machine starts here)."""
    from crdt_merge_driver import versions  # there is a file to read: see versions.py

    with _place(memory, repo, as_path, log, need_live=False) as place:
        place.sync(attempts=attempts, deadline=deadline, sleep=sleep, log=log)
        tip = _head(place)
        check_tracked(place)
        if place.blob(tip) is None:
            raise BackupError(f"nothing to restore: {place.as_path} is not in {place.top} yet")
        current = _read_or_none(place.memory)
        if current is not None and not versions.restorable(
            place, versions.checked(place.memory, current), tip
        ):
            raise RefusedError(
                f"{place.memory} has memory that is not backed up yet; run "
                f"`{PROGRAM} backup` instead (it merges, where restore would overwrite)"
            )
        try:
            wrote = versions.write_live(place, tip, expect=current)
        except ChangedMeanwhile:
            raise RefusedError(
                f"the memory server wrote {place.memory} while restoring; it was left alone: "
                "run restore (or backup) again"
            ) from None
        _move(place, tip)
        if wrote:
            say(log, f"restored {place.memory} from {place.as_path} at {tip[:12]}", summary=True)
        else:
            say(log, f"{place.memory} holds {place.as_path} at {tip[:12]} already; nothing to "
                     "restore", summary=True)  # fmt: skip
        return BackupResult(tip, 1)


# --- where ----------------------------------------------------------------------


@contextmanager
def _place(
    memory: Path | None, repo: Path | None, as_path: str | None, log: TextIO,
    *, need_live: bool = True,
) -> Iterator[Place]:  # fmt: skip
    folder = repo or _env_path("REPO_DIR") or Path.cwd()
    folders = install.find_folders(folder)
    top = folders[0]
    live = live_path(memory, top)
    given = _which_path(memory, top)
    if need_live and not live.is_file():
        raise BackupError(f"memory file {live} does not exist ({given})")
    if not live.parent.is_dir():  # restore does not make folders: a typo would go unseen
        raise BackupError(f"the folder of the memory file does not exist: {live.parent} "
                          f"(create it first, or {given})")  # fmt: skip
    # Under sync's own lock for the whole round: a sync from cron and a
    # backup never work in one clone at once, nor two backups.
    with session.prepared(top, remote=remote_of(top), log=log, folders=folders) as clone:
        place = Place(live, clone, as_path or DEFAULT_AS, {})
        try:
            yield place
        except InputError as error:
            # The live file is checked on its own (records_in): this is the
            # repository's file, which a link or a submodule is not.
            check_tracked(place)
            raise error.located(f"{place.as_path} in {place.top}") from None


_LINK, _SUBMODULE = "120000", "160000"


def check_tracked(place: Place) -> None:
    """`BackupError` if the repository holds the memory path as a link or a submodule.

    Read as a file, a link is its target's name ("not JSON") and a submodule
    is no file at all, which a backup would replace. Checked where a backup
    or restore has work to do, not on an idle run.
    """
    for rev in ("HEAD", place.tracking):
        listed = place.git("ls-tree", "-z", rev, "--", place.as_path, check=False).stdout
        mode = listed.split(b" ", 1)[0].decode()
        if mode not in (_LINK, _SUBMODULE):
            continue
        where = f"{place.as_path} in {place.top} ({rev})"
        if mode == _LINK:
            raise BackupError(
                f"{where} is a symbolic link: the repository must hold the memory file itself; "
                f'repair: in {place.top}, `cp --remove-destination "$(readlink {place.as_path})" '
                f"{place.as_path}` and commit it (or back up to another path with --as PATH)"
            )
        raise BackupError(
            f"{where} is a submodule, not a file: back up to another path with --as PATH"
        )


def live_path(memory: Path | None, top: Path | None = None) -> Path:
    """The live memory file: ``--memory``, else $MEMORY_FILE_PATH, else the older $MEMORY_FILE.

    Else, with the clone's ``top``, the live file `setup` noted in its config.
    """
    found = memory or _env_path("MEMORY_FILE_PATH") or _env_path("MEMORY_FILE")
    if found is None and top is not None:
        noted = git.read_config(MEMORY_KEY, cwd=top, scope="--local")
        found = Path(noted) if noted else None
    if found is None:
        raise BackupError("which memory file? pass --memory FILE or set MEMORY_FILE_PATH")
    if found.is_dir():  # else "does not exist", or a watch retrying it forever
        raise BackupError(f"memory file {found.absolute()} is a folder: name the memory file in it")
    return found.absolute()


MEMORY_KEY = "crdt-merge-driver.memory"  # where setup notes a clone's live file


def _which_path(memory: Path | None, top: Path) -> str:
    """What to check when the live file is not there, by where its path came from."""
    if memory:
        return "check --memory"
    if not (os.environ.get("MEMORY_FILE_PATH") or os.environ.get("MEMORY_FILE")):
        return f"setup noted it as {MEMORY_KEY} in {top}: pass --memory"
    name = "MEMORY_FILE_PATH" if os.environ.get("MEMORY_FILE_PATH") else "MEMORY_FILE"
    return f"check {name}, or pass --memory"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value) if value else None


def remote_of(top: Path) -> str:
    """The remote a clone backs up to: ``origin``, else its only (or first) remote."""
    remotes = git.output("remote", cwd=top).split()
    if not remotes:
        raise BackupError(f"{top} has no remote to back up to: `git remote add origin URL` first")
    return "origin" if "origin" in remotes else remotes[0]


# --- steps ------------------------------------------------------------------------


def _read_or_none(memory: Path) -> bytes | None:
    try:
        return memory.read_bytes()
    except FileNotFoundError:
        return None


def _fetch(place: Place) -> _Fetched:
    """Fetch the branch and its queue, as sync's first attempt would; what came of it.

    Best effort: the stamps already pushed make this machine's clock move
    past them. Sync's first attempt builds on this fetch (a round trip
    less); if another machine pushed since, its push is refused and the next
    attempt fetches again.
    """
    try:
        found = session.fetch(place.clone, _FETCH_TIMEOUT, Queue(place.clone))
    except (Transient, CrdtError):  # unreachable, timed out, refused
        return _Fetched.NOT_REACHED
    return _Fetched.BRANCH if found else _Fetched.NO_BRANCH


class _Fetched(enum.Enum):
    NOT_REACHED = "the remote did not answer"
    NO_BRANCH = "the remote has no such branch yet"
    BRANCH = "the branch is fetched"


def _left_unpushed(count: int) -> str:
    """What to add to the summary line when this round pushes what an earlier run left."""
    return f"; pushed {count} commit{'s' * (count != 1)} an earlier run left" if count else ""


def unpushed(place: Place, head: str | None, tracking: str | None) -> int:
    """How many commits ``head`` holds that ``tracking`` (the remote's branch, as fetched) lacks."""
    if head is None:
        return 0
    since = f"{tracking}..{head}" if tracking else head
    return int(place.git("rev-list", "--count", since).stdout or b"0")


def _nothing_new(place: Place, base: str | None, then: str) -> str:
    return f"nothing new in {place.memory} since {(base or '')[:12]}; {then}"


def _head(place: Place) -> str:
    head = _head_or_none(place)
    tracking = place.rev(f"refs/remotes/{place.remote}/{place.branch}")
    if head is None and tracking is not None:
        # A clone made before anything was pushed: its branch is still unborn,
        # and there is nothing of its own to keep. Take the remote's.
        place.git("merge", "--quiet", tracking)
        head = _head_or_none(place)
    if head is None:
        raise BackupError(f"{place.top} has no commits on {place.branch} after syncing")
    return head


def _head_or_none(place: Place) -> str | None:
    return place.rev("HEAD")


def _write_live(place: Place, tip: str, *, expect: bytes, holds: str | None) -> bytes | None:
    """`versions.write_live`, unless the live file is known to hold the tip (``holds``).

    Known (the commit its memory is, is the tip), nothing is read or written:
    an idle run with nothing newer on the remote.
    """
    if tip == holds:
        return None
    from crdt_merge_driver import versions  # a file to read: see versions.py

    return versions.write_live(place, tip, expect=expect)


def _move(place: Place, commit: str, *, own: bool = False, known: str | None = None) -> None:
    """Move the last-sync point (and, for this machine's own version, its ref too).

    A ref already there is not written again (``known``: where the last-sync
    point is, if the caller has just read it): with reflogs on (setup turns
    them on for status), an idle run would otherwise log a move.
    """
    if own:
        place.git("update-ref", place.ref(own=True), commit)
    if commit != (known or place.rev(place.ref())):
        place.git("update-ref", place.ref(), commit)


class _Seen(NamedTuple):
    """The live file's bytes (their digest) when it last held the last-sync point's memory."""

    commit: str
    digest: str


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
