"""``status``: is this machine's live file in sync with the shared repository, and since when.

Read only: it fetches (unless ``--offline``) into the same remote-tracking
refs sync uses, and never commits, pushes or writes the live file. "In sync"
compares memory the way the server sees it (`live.same_graph`): the live
file against the file at the last-sync point (local changes), and the
remote's tip against that point (changes not yet restored).
"""

from __future__ import annotations

import datetime
import os
import shlex
from pathlib import Path
from typing import Any, NamedTuple

from crdt_merge_driver import PROGRAM, git, install, schedule
from crdt_merge_driver.backup import DEFAULT_AS, MEMORY_KEY, Place, live_path, remote_of, unpushed
from crdt_merge_driver.core.live import same_graph
from crdt_merge_driver.doctor import doctor
from crdt_merge_driver.errors import CrdtError, ExitCode, GitError
from crdt_merge_driver.sync.clone import Clone, current_branch, find_url
from crdt_merge_driver.sync.pending import Queue
from crdt_merge_driver.sync.session import fetch
from crdt_merge_driver.sync.verdict import Transient
from crdt_merge_driver.versions import records_in

_FETCH_TIMEOUT = 30.0


class StatusError(CrdtError):
    """No single clone to report on."""


class Status(NamedTuple):
    repo: Path
    remote: str
    url: str
    branch: str
    driver_ok: bool
    driver_problems: list[str]
    memory: Path
    live_exists: bool
    local_changes: bool
    unpushed: int  # commits of this clone the remote's branch lacks (as last fetched)
    remote_ahead: bool | None  # None: the remote could not be asked
    remote_error: str | None
    fetched: bool
    last_backup: str | None
    last_backup_commit: str | None
    last_restore: str | None
    last_restore_commit: str | None
    schedule: str | None
    schedule_last_ran: str | None
    waiting: list[str]

    @property
    def in_sync(self) -> bool:
        return not self.local_changes and not self.unpushed and self.remote_ahead is False

    @property
    def exit_code(self) -> ExitCode:
        if not self.driver_ok:
            return ExitCode.NOT_CONFIGURED
        return ExitCode.OK if self.in_sync else ExitCode.CONFLICT

    def as_json(self) -> dict[str, Any]:
        fields = {key: str(value) if isinstance(value, Path) else value
                  for key, value in self._asdict().items()}  # fmt: skip
        return {"in_sync": self.in_sync, **fields}


def status(
    *, repo: Path | None = None, memory: Path | None = None, offline: bool = False
) -> Status:
    top = find_clone(repo)
    place = _place(top, memory)
    clone = place.clone
    diagnosis = doctor(repo=top, name=install.DEFAULT_NAME)
    synced, own = place.rev(place.ref()), place.rev(place.ref(own=True))
    at_sync = place.blob(synced) or b""
    queue = Queue(clone)
    remote_error = None
    if not offline:
        try:
            fetch(clone, _FETCH_TIMEOUT, queue)
        except Transient as failure:
            remote_error = failure.reason
        except GitError as error:
            remote_error = str(error)
    try:
        live: bytes | None = place.memory.read_bytes()
    except FileNotFoundError:
        live = None
    if live is not None:
        records_in(place.memory, live)  # a live file that is not a memory file: one line
    tip = place.rev(clone.tracking)
    if remote_error:
        remote_ahead = None
    elif live is None:  # no live file (a new machine, a typo): it lacks all the remote has
        remote_ahead = tip is not None and not same_graph(place.blob(tip) or b"", b"")
    else:
        # Not ahead where the last-sync point already holds the remote's tip: a
        # backup whose push failed moved that point past it, to its own commit.
        remote_ahead = (
            tip is not None
            and tip != synced
            and not _holds(place, synced, tip)
            and not same_graph(place.blob(tip) or b"", at_sync)
        )
    found = schedule.find(schedule.tag(top))
    ran = schedule.log_path(top)
    queue.resume()
    waiting = sorted(queue.waiting()) + ([f"{queue.mine} (this clone's)"] if queue.mine else [])
    backed = _last_move(place, place.ref(own=True)) or _commit_time(place, own)
    return Status(
        repo=top, remote=clone.remote, url=clone.url, branch=clone.branch,
        driver_ok=diagnosis.healthy,
        driver_problems=[line for line in diagnosis.lines if line.startswith("problem:")],
        memory=place.memory, live_exists=live is not None,
        local_changes=live is not None and not same_graph(live, at_sync),
        unpushed=unpushed(place, place.rev("HEAD"), tip),
        remote_ahead=remote_ahead, remote_error=remote_error, fetched=not offline,
        last_backup=backed, last_backup_commit=own,
        last_restore=_last_move(place, place.ref()), last_restore_commit=synced,
        schedule=found.description if found else None,
        schedule_last_ran=_iso(ran.stat().st_mtime) if ran.exists() else None,
        waiting=waiting,
    )  # fmt: skip


def _holds(place: Place, commit: str | None, other: str) -> bool:
    """Whether ``commit`` has ``other`` in its history."""
    if commit is None:
        return False
    found = place.git("merge-base", "--is-ancestor", other, commit, check=False)
    return found.returncode == 0


def find_clone(repo: Path | None) -> Path:
    """--repo, else $REPO_DIR, else this folder's memory clone, else the one setup made.

    This folder's clone counts only when it is a memory clone (setup noted a
    live file there, or the driver is installed): `status` typed inside some
    project's checkout must not report on that project.
    """
    if repo is None and os.environ.get("REPO_DIR"):
        repo = Path(os.environ["REPO_DIR"])
    if repo is None:
        here = git.find_toplevel(Path.cwd())
        if here is not None and _is_memory_clone(here):
            return here
        made = [path for path in clones_folder().glob("*") if (path / ".git").exists()]
        if len(made) > 1:
            raise StatusError(f"{len(made)} clones under {clones_folder()}: pass --repo DIR")
        repo = made[0] if made else here or Path.cwd()
    return install.find_toplevel(repo)


def _is_memory_clone(top: Path) -> bool:
    keys = (MEMORY_KEY, f"merge.{install.DEFAULT_NAME}.driver")
    return any(git.read_config(key, cwd=top, scope="--local") for key in keys)


def clones_folder() -> Path:
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / PROGRAM


def _place(top: Path, memory: Path | None) -> Place:
    live = live_path(memory, top)
    _, git_dir, common = install.find_folders(top)
    remote = remote_of(top)
    clone = Clone(top, git_dir, common, {}, remote, find_url(top, remote), "")
    return Place(live, clone._replace(branch=current_branch(clone)), DEFAULT_AS, {})


def _last_move(place: Place, ref: str) -> str | None:
    """When ``ref`` last moved, from its reflog (setup turns reflogs on for these refs)."""
    result = place.git("log", "-g", "-1", "--date=unix", "--format=%gd", ref, "--", check=False)
    stamp = result.stdout.decode().strip().rpartition("@{")[2].rstrip("}")
    return _iso(int(stamp)) if result.returncode == 0 and stamp.isdigit() else None


def _commit_time(place: Place, commit: str | None) -> str | None:
    # Without a reflog: this machine's own version is committed when it backs up.
    if commit is None:
        return None
    return _iso(int(place.git("log", "-1", "--format=%ct", commit).stdout.decode().strip()))


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


def render(found: Status) -> list[str]:
    """The few lines `status` prints."""
    lines = [f"repository: {found.repo} (remote {found.remote} = {found.url}, "
             f"branch {found.branch})"]  # fmt: skip
    lines += (["driver: installed and working"] if found.driver_ok else
              [f"driver: {problem}" for problem in found.driver_problems])  # fmt: skip
    if not found.live_exists:
        lines.append(f"live file: {found.memory} does not exist yet")
    elif found.local_changes:
        lines.append(f"live file: {found.memory} holds changes not backed up yet")
    elif found.unpushed:
        lines.append(f"live file: {found.memory}: everything in it is committed, not all pushed")
    else:
        lines.append(f"live file: {found.memory}: everything in it is backed up")
    if found.unpushed:
        count = found.unpushed
        lines.append(f"local: {count} commit{'s' * (count != 1)} not pushed yet")
    if found.remote_error:
        lines.append(f"remote: unreachable ({found.remote_error}); not known whether it moved on")
    else:
        seen = "" if found.fetched else " (as of the last fetch: --offline)"
        lines.append(f"remote: holds changes not restored here yet{seen}" if found.remote_ahead
                     else f"remote: nothing new since this machine last synced{seen}")  # fmt: skip
    lines.append(_when("last backup", found.last_backup, found.last_backup_commit))
    lines.append(_when("last restore", found.last_restore, found.last_restore_commit))
    if found.schedule is None:
        setup = shlex.join([PROGRAM, "setup", found.url, "--repo", str(found.repo),
                            "--memory", str(found.memory)])  # fmt: skip
        lines.append(f"schedule: none; `{setup}` installs one")
    else:
        lines.append(f"schedule: {found.schedule}; last ran "
                     f"{found.schedule_last_ran or 'never (no log yet)'}")  # fmt: skip
    lines += [f"waiting in the sync queue: {ref}" for ref in found.waiting]
    # Nothing here to back up: the remote's memory only has to come in.
    verb = "backup" if found.live_exists and (found.local_changes or found.unpushed) else "restore"
    command = shlex.join([PROGRAM, verb, "--repo", str(found.repo), "--memory", str(found.memory)])
    lines.append("in sync" if found.in_sync else f"not in sync: run `{command}`")
    return lines


def _when(what: str, time: str | None, commit: str | None) -> str:
    if commit is None:
        return f"{what}: never"
    return f"{what}: {time or 'time unknown'} (commit {commit[:12]})"
