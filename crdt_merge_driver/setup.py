"""``setup``: a machine joins a shared memory repository in one command; ``setup --remove``.

Each step is a command that exists (clone, `install`, `sync` for the
``.gitattributes`` commit, `backup` or `restore`, a schedule): setup only
picks which, in order, and does nothing a second time. docs/setup.md tells
the flow.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import TextIO

from crdt_merge_driver import PROGRAM, git, install, schedule
from crdt_merge_driver.backup import DEFAULT_AS, MEMORY_KEY, backup, live_path, restore
from crdt_merge_driver.errors import CrdtError
from crdt_merge_driver.log import say
from crdt_merge_driver.status import clones_folder, status
from crdt_merge_driver.sync import landing as sync

ATTRIBUTES = ".gitattributes"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SetupError(CrdtError):
    """A folder setup cannot use (holds something else, another remote's clone)."""


def setup(
    *, remote: str, repo: Path | None = None, memory: Path | None = None,
    branch: str | None = None, kind: str = "auto", every: int = 15, log: TextIO = sys.stderr,
) -> None:  # fmt: skip
    """Clone (or reuse), install, publish the attributes, bring the memories together, schedule.

    Each step's line is a summary line: what setup did is what its user asked to
    see (``-q`` hides them; the steps' own details need ``-v``).
    """
    live = live_path(memory)
    # Before anything is cloned: a typo must not leave a clone behind.
    if not live.parent.is_dir():
        raise SetupError(f"the folder of the memory file does not exist: {live.parent} "
                         "(create it first, or check --memory)")  # fmt: skip
    if every < 1:
        raise SetupError(f"--every {every}: must be at least 1 minute")
    chosen = schedule.choose(kind) if kind != "none" else "none"
    url = _normalized(remote)
    top = _clone(url, repo or default_clone(url), branch, log)
    _configure(top, live, log)
    for line in install.install(repo=top, scope_global=False, patterns=None,
                                name=install.DEFAULT_NAME):  # fmt: skip
        say(log, line)
    if git.output("status", "--porcelain", "--", ATTRIBUTES, cwd=top):
        say(log, f"publishing {ATTRIBUTES} to {url}", summary=True)
        sync.sync(repo=top, paths=[Path(ATTRIBUTES)], log=log,
                  message=f"memory: merge memory files with {PROGRAM}")  # fmt: skip
    _bring_together(top, live, log)
    argv = _backup_argv(top, live, command="watch" if chosen == "watch" else "backup")
    entry = schedule.Entry(schedule.tag(top), argv, every, schedule.log_path(top))
    if chosen == "none":
        say(log, f"no schedule (--schedule none); back up with: {shlex.join(entry.argv)}",
            summary=True)  # fmt: skip
    else:
        for line in schedule.install(chosen, entry):
            say(log, line, summary=True)
    check = shlex.join([PROGRAM, "status", "--repo", str(top), "--memory", str(live)])
    say(log, f"set up: clone {top}, live file {live}, log {entry.log}; check it with "
             f"`{check}`", summary=True)  # fmt: skip


def remove(*, remote: str | None, repo: Path | None, log: TextIO = sys.stderr) -> None:
    """Remove the schedule setup added for the clone (and its note of the live file)."""
    if repo is None and remote is None:
        raise SetupError("which clone? pass REMOTE or --repo DIR")
    top = install.find_toplevel(repo or default_clone(_normalized(remote or "")))
    for line in schedule.remove(schedule.tag(top)):
        say(log, line, summary=True)
    git.unset_config(MEMORY_KEY, cwd=top, scope="--local")
    say(log, f"removed what setup scheduled for {top}; the clone and the live file are "
             "left as they are", summary=True)  # fmt: skip


def default_clone(url: str) -> Path:
    """Under $XDG_DATA_HOME/crdt-merge-driver/, named after the remote's last path part."""
    name = re.split(r"[/:\\]", url.rstrip("/"))[-1].removesuffix(".git")
    return clones_folder() / (_UNSAFE.sub("-", name).strip("-.") or "memory")


def _normalized(remote: str) -> str:
    # A local path: absolute, so that the clone's origin works from any folder.
    path = Path(remote).expanduser()
    return str(path.resolve()) if "://" not in remote and path.exists() else remote


def _clone(url: str, folder: Path, branch: str | None, log: TextIO) -> Path:
    if folder.exists() and any(folder.iterdir()):
        top = git.find_toplevel(folder) if folder.is_dir() else None
        if top is None or top.resolve() != folder.resolve():
            raise SetupError(f"{folder} holds something else than a clone of {url}: "
                             "pass --repo with another folder")  # fmt: skip
        origin = git.run("remote", "get-url", "origin", cwd=top, check=False)
        if _normalized(origin.stdout.decode().strip()) != url:
            raise SetupError(f"{folder} is a clone of {origin.stdout.decode().strip() or 'nothing'}"
                             f", not of {url}: pass --repo with another folder")  # fmt: skip
        say(log, f"using the existing clone {top}", summary=True)
        _check_branch(top, branch)
        return top
    folder.parent.mkdir(parents=True, exist_ok=True)
    git.run("clone", "--quiet", url, str(folder), cwd=folder.parent)
    top = install.find_toplevel(folder)
    if branch:
        has = git.run("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}",
                      cwd=top, check=False).returncode == 0  # fmt: skip
        if has:
            git.run("checkout", "--quiet", "-B", branch, f"origin/{branch}", cwd=top)
        else:
            git.run("checkout", "--quiet", "--orphan", branch, cwd=top)
    say(log, f"cloned {url} into {top}", summary=True)
    return top


def _check_branch(top: Path, branch: str | None) -> None:
    current = git.run("symbolic-ref", "--quiet", "--short", "HEAD", cwd=top, check=False)
    if branch and current.stdout.decode().strip() != branch:
        raise SetupError(f"{top} is on {current.stdout.decode().strip() or 'a detached HEAD'}, "
                         f"not {branch}: check out {branch} there, or pass --repo")  # fmt: skip


def _configure(top: Path, live: Path, log: TextIO) -> None:
    noted = git.read_config(MEMORY_KEY, cwd=top, scope="--local")
    if noted != str(live):
        if noted:  # a setup run again with another (often a relative) path: said, not silent
            say(log, f"the live file of {top} was {noted}; it is {live} from now on", summary=True)
        git.write_config(MEMORY_KEY, str(live), cwd=top, scope="--local")
    # Reflogs of backup's own refs: status reads when they last moved from them.
    if git.read_config("core.logAllRefUpdates", cwd=top, scope="--local") != "always":
        git.write_config("core.logAllRefUpdates", "always", cwd=top, scope="--local")


def _bring_together(top: Path, live: Path, log: TextIO) -> None:
    found = status(repo=top, memory=live)
    published = f"refs/remotes/{found.remote}/{found.branch}:{DEFAULT_AS}"
    if found.live_exists and found.in_sync:
        say(log, f"{live} and {found.url} are in sync already; nothing to back up",
            summary=True)  # fmt: skip
    elif found.live_exists:
        backup(memory=live, repo=top, log=log)
    elif git.run("cat-file", "-e", published, cwd=top, check=False).returncode == 0:
        restore(memory=live, repo=top, log=log)
    else:
        say(log, f"nothing to bring together yet: no live file at {live} and no {DEFAULT_AS} "
                 f"in {found.url}; the first backup after the memory server writes it "
                 "publishes it", summary=True)  # fmt: skip


def _backup_argv(top: Path, live: Path, *, command: str = "backup") -> list[str]:
    # Absolute paths: cron and systemd start it from $HOME, with a bare PATH.
    # The merge driver's interpreter options: -I would hide a `pip install --user` package.
    return [*_user_base(), sys.executable, *install.DRIVER_FLAGS, "-m", "crdt_merge_driver",
            command, "--repo", str(top), "--memory", str(live),
            "--log", str(schedule.log_path(top))]  # fmt: skip


def _user_base() -> list[str]:
    """``env PYTHONUSERBASE=...`` where this interpreter's user site comes from that variable.

    A `pip install --user` into a user base the variable moved is found by
    Python's site (even under -E) only where the variable is set, and cron and
    systemd start with an environment of their own: the scheduled line sets it.
    """
    import site  # noqa: PLC0415  # only here

    moved = os.environ.get("PYTHONUSERBASE")
    # Whenever this interpreter reads a user site (not in a virtualenv): the
    # package may be there, or be an editable install a .pth file there names.
    if not moved or not site.ENABLE_USER_SITE:
        return []
    return [shutil.which("env") or "/usr/bin/env", f"PYTHONUSERBASE={moved}"]
