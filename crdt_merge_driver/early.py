"""A clone that ran ``install`` before its first pull: its ``.gitattributes`` is untracked.

Then the remote's committed ``.gitattributes`` cannot come in: git refuses
to overwrite an untracked file, even one with the same bytes, and every
merge, rebase or checkout that brings the remote's commits fails. So while
sync or backup runs (holding the clone's lock), the untracked file waits in
the git folder; afterwards the remote's file is kept and the lines only the
set-aside one had (install's own, the user's) are put back after it, as an
uncommitted change. If nothing brought a ``.gitattributes`` in, the file
goes back as it was. A run killed meanwhile leaves it in the git folder,
where the next run (or `restore_set_aside`) finds it first.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from crdt_merge_driver import PROGRAM, git
from crdt_merge_driver.atomic import write_atomic
from crdt_merge_driver.log import say

ATTRIBUTES = ".gitattributes"
SET_ASIDE = "crdt-merge-driver-early.gitattributes"


@contextmanager
def set_aside(top: Path, git_dir: Path, log: TextIO, *, active: bool = True) -> Iterator[None]:
    """Move an untracked ``.gitattributes`` out of git's way while the block runs.

    ``active=False``: leave it (the caller commits it), only put back a killed run's.
    """
    restore_set_aside(top, git_dir, log)  # a killed run's first
    path, kept = top / ATTRIBUTES, git_dir / SET_ASIDE
    if not active or not path.is_file() or path.is_symlink() or _tracked(top):
        yield
        return
    path.replace(kept)  # one rename: the bytes are never only in memory
    try:
        yield
    finally:
        restore_set_aside(top, git_dir, log)


def restore_set_aside(top: Path, git_dir: Path, log: TextIO) -> None:
    """Put a set-aside ``.gitattributes`` back: after the remote's, or as it was."""
    path, kept = top / ATTRIBUTES, git_dir / SET_ASIDE
    if not kept.exists():
        return
    if not path.exists():  # nothing brought one in: ours goes back unchanged
        kept.replace(path)
        return
    ours, theirs = kept.read_bytes(), path.read_bytes()
    present = set(_lines(theirs))
    missing = [line for line in _lines(ours) if line.strip() and line not in present]
    if missing:
        separator = b"" if not theirs or theirs.endswith(b"\n") else b"\n"
        write_atomic(path, theirs + separator + b"\n".join(missing) + b"\n")
        say(log, f"warning: {path} came from the remote; the lines only this clone's "
                 f"uncommitted one had are added back, uncommitted: "
                 f"{', '.join(line.decode(errors='replace') for line in missing)}")  # fmt: skip
    else:
        say(log, f"{path} came from the remote; this clone's uncommitted one said the same")
    kept.unlink()


def diagnose(top: Path) -> list[str]:
    """Doctor's line when an untracked ``.gitattributes`` stands in the way of the remote's."""
    if not (top / ATTRIBUTES).is_file() or _tracked(top):
        return []
    upstream = git.run("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}",
                       cwd=top, check=False).stdout.decode().strip()  # fmt: skip
    if not upstream or git.run("cat-file", "-e", f"{upstream}:{ATTRIBUTES}", cwd=top,
                               check=False).returncode != 0:  # fmt: skip
        return []
    return [
        f"problem: {top / ATTRIBUTES} is not committed here while {upstream} has one, so "
        f"`git pull` refuses to overwrite it; run `{PROGRAM} sync --repo "
        f"{shlex.quote(str(top))}`, which takes {upstream}'s and adds back the lines only this "
        "one has"
    ]


def _tracked(top: Path) -> bool:
    return bool(git.run("ls-files", "-z", "--", ATTRIBUTES, cwd=top).stdout)


def _lines(data: bytes) -> list[bytes]:
    # Lines without their ends: the same line with or without \r\n is the same line.
    return [line.rstrip(b"\r") for line in data.split(b"\n") if line]
