"""The clone sync works in: its folders, the git it runs there, and what it commits.

Every git command sync runs goes through `Clone.git`, with an environment
that supplies the merge driver (so a clone where ``install`` never ran
still merges memory files with it) and, in CI without an identity, a
default author. docs/sync.md gives the reasons.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, TextIO

from crdt_merge_driver import PROGRAM, git, install
from crdt_merge_driver.errors import CrdtError

# Re-exported (the alias says so to mypy): the sync modules import it from here.
from crdt_merge_driver.log import say as say  # noqa: PLC0414
from crdt_merge_driver.sync.verdict import redact

DRIVER_NAME = install.DEFAULT_NAME  # the name install writes
# sync's attributes files in the git folder: this name plus a unique suffix.
ATTRIBUTES = "crdt-merge-driver-sync.attributes"


class SyncError(CrdtError):
    """Sync cannot start: not a repository, unknown remote, detached HEAD, bad limits."""


class Clone(NamedTuple):
    top: Path
    git_dir: Path  # this worktree's: the rebase state, sync's lock and mark
    common_dir: Path  # shared by all worktrees: config, refs, the shallow file
    env: Mapping[str, str]  # the driver's config and, when none is set, an identity
    remote: str
    url: str
    branch: str

    def git(self, *args: str, check: bool = True, stdin: bytes | None = None,
            timeout: float | None = None, env: Mapping[str, str] | None = None,
            ) -> git.Result:  # fmt: skip
        return git.run(*args, cwd=self.top, env={**self.env, **env} if env else self.env,
                       check=check, stdin=stdin, timeout=timeout)  # fmt: skip

    @property
    def tracking(self) -> str:
        return f"refs/remotes/{self.remote}/{self.branch}"

    @property
    def where(self) -> str:
        return f"{self.remote}/{self.branch}"

    def rebasing(self) -> bool:
        return any((self.git_dir / name).exists() for name in ("rebase-merge", "rebase-apply"))


# --- the environment every git command gets -----------------------------------------


@contextmanager
def driver_environment(top: Path, git_dir: Path) -> Iterator[dict[str, str]]:
    """The environment that supplies the driver to every git command sync runs.

    The config goes in as GIT_CONFIG_COUNT/KEY/VALUE, git's environment form
    of ``git -c`` (same scope, and it reaches the git processes git starts).
    """
    said = _settings(top)
    user = _user_attributes(said.get("core.attributesfile"))
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
    env.update(identity(top, said))
    try:
        yield env
    finally:
        attributes.unlink(missing_ok=True)


# What driver_environment reads of the user's config: one git process, not one a key.
_SETTINGS = r"^(core\.attributesfile|user\.name|user\.email)$"


def _settings(top: Path) -> dict[str, str]:
    """The settings `_SETTINGS` names (lower-case keys), the last value of each."""
    said = git.run("config", "--type=path", "-z", "--get-regexp", _SETTINGS, cwd=top, check=False)
    if said.returncode == 1:  # none of them set
        return {}
    if said.returncode != 0:  # a value that is no path (a name "~nobody"), a broken config
        each = {key: git.read_config(key, cwd=top, path=key == "core.attributesfile")
                for key in ("core.attributesfile", "user.name", "user.email")}  # fmt: skip
        return {key: value for key, value in each.items() if value is not None}
    found: dict[str, str] = {}
    for entry in said.stdout.decode("utf-8", "surrogateescape").split("\0"):
        key, _, value = entry.partition("\n")  # a key with no value at all has no "\n"
        if key:
            found[key] = value  # the last one wins, as for git
    return found


def _user_attributes(configured: str | None) -> bytes:
    # core.attributesFile from the command line replaces the user's own: keep its lines.
    # Unset in every scope, git reads $XDG_CONFIG_HOME/git/attributes.
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    path = Path(configured) if configured else Path(config_home) / "git" / "attributes"
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


def identity(top: Path, said: Mapping[str, str]) -> dict[str, str]:
    """A default author and committer for sync's commits, only if git has none (CI).

    ``said``: `_settings`. A name and an e-mail there are git's identity, and
    asking git is not needed. Anything else (an identity in the environment,
    which git reads with rules of its own, like ``user.useConfigOnly``), git
    is asked: it may find one in the system, or refuse one.
    """
    from_environment = any(name in os.environ for name in _IDENTITY_VARIABLES)
    name, email = said.get("user.name", ""), said.get("user.email", "")
    if not from_environment and name.strip(_CRUD) and email.strip(_CRUD):
        return {}
    if git.run("var", "GIT_COMMITTER_IDENT", cwd=top, check=False).returncode == 0:
        return {}
    name, email = PROGRAM, f"{PROGRAM}@{socket.gethostname()}"
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}  # fmt: skip


# What git strips from the ends of a name or an e-mail (its crud(): every byte up to
# the space, and these): one made only of them is empty to git, which refuses it.
_CRUD = "".join(map(chr, range(33))) + ".,:;<>\"\\'"
# What git reads an identity from besides its config.
_IDENTITY_VARIABLES = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                       "GIT_COMMITTER_EMAIL", "EMAIL")  # fmt: skip


# --- where sync pushes, and whether it can start ------------------------------------


def find_url(top: Path, remote: str) -> str:
    found = git.run("remote", "get-url", remote, cwd=top, check=False)
    if found.returncode == 0:
        return redact(found.stdout.decode("utf-8", "replace").strip())
    remotes = git.output("remote", cwd=top).split()
    if remote not in remotes:
        raise SyncError(
            f"unknown remote {remote!r}: this clone has "
            f"{', '.join(remotes) or 'no remotes'}; pass --remote NAME, or `git remote add`"
        )
    return redact(git.output("remote", "get-url", remote, cwd=top))  # fails with git's words


def current_branch(clone: Clone) -> str:
    result = clone.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if result.returncode != 0:
        raise SyncError(
            f"HEAD is detached in {clone.top}: pass --branch NAME to say which remote branch "
            "to sync, or check out the branch the memory goes to"
        )
    return result.stdout.decode().strip()


def check_idle(clone: Clone) -> None:
    states = {"rebase-merge": "a rebase", "rebase-apply": "a rebase or am",
              "MERGE_HEAD": "a merge", "CHERRY_PICK_HEAD": "a cherry-pick",
              "REVERT_HEAD": "a revert"}  # fmt: skip
    for name, what in states.items():
        if (clone.git_dir / name).exists():
            raise SyncError(
                f"{what} is in progress in {clone.top}; finish or abort it, then sync again"
            )


# --- what sync commits, and reads back -----------------------------------------------


def commit(
    clone: Clone, paths: Sequence[Path] | None, message: str | None, log: TextIO
) -> str | None:
    """Commit ``paths`` (None: every changed memory file) and only them; None if unchanged."""
    specs = memory_changes(clone) if paths is None else [str(path) for path in paths]
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
    return git.check_attribute("merge", paths, cwd=clone.top, env=clone.env)


class Object(NamedTuple):
    oid: str
    kind: str  # blob, tree, commit
    data: bytes


def read_blobs(clone: Clone, names: Sequence[str]) -> list[bytes | None]:
    """The content of each ``rev:path``, None where it does not exist; one git process."""
    return [found.data if found else None for found in read_objects(clone, names)]


def read_objects(clone: Clone, names: Sequence[str]) -> list[Object | None]:
    """Each object named (``rev:path``, an id...), None where it does not exist; one git process."""
    if not names:
        return []
    feed = "".join(f"{name}\n" for name in names).encode("utf-8", "surrogateescape")
    data = clone.git("cat-file", "--batch", stdin=feed).stdout
    found: list[Object | None] = []
    at = 0
    for _ in names:
        end = data.index(b"\n", at)
        header = data[at:end].split(b" ")
        if header[-1] == b"missing" or len(header) != 3:
            found.append(None)
            at = end + 1
            continue
        size = int(header[2])
        found.append(Object(header[0].decode(), header[1].decode(), data[end + 1 : end + 1 + size]))
        at = end + 1 + size + 1
    return found
