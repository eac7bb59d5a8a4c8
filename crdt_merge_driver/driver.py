"""The git merge driver: ``%O %A %B %P`` in, the merge written over ``%A``.

git's contract (docs/git-driver.md): exit 0 means merged; 1..128 means a
conflict, and git keeps whatever is in ``%A`` plus all three stages in the
index. Bad input therefore exits 1 with ``%A`` untouched, so nothing is
lost and the user sees which side and which line is bad. The driver never
exits above 128 and never deletes ``%A`` (either would abort the merge).

During a rebase or cherry-pick git swaps the sides; the merge is symmetric,
so the bytes are the same either way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from crdt_merge_driver.atomic import write_atomic
from crdt_merge_driver.errors import ExitCode, InputError
from crdt_merge_driver.merge import merge_bytes

KILL_SWITCH = "CRDT_MERGE_DRIVER_DISABLE"
PROGRAM = "crdt-merge-driver"


def run_driver(
    *,
    base: Path,
    ours: Path,
    theirs: Path,
    path: str = "",
    marker_size: int = 7,
    log: TextIO = sys.stderr,
) -> ExitCode:
    """Merge ``base``/``ours``/``theirs`` into ``ours``; the exit code for git."""
    shown = path or str(ours)
    if os.environ.get(KILL_SWITCH, "") not in ("", "0"):
        return _defer_to_git(base=base, ours=ours, theirs=theirs, path=shown,
                             marker_size=marker_size, log=log)  # fmt: skip
    ours_bytes = ours.read_bytes()
    labels = (f"{shown} (ancestor, %O)", f"{shown} (ours, %A)", f"{shown} (theirs, %B)")
    try:
        merged, report = merge_bytes(base.read_bytes(), ours_bytes, theirs.read_bytes(), labels=labels)
    except InputError as error:
        print(f"{PROGRAM}: cannot merge {error}; left for you to resolve", file=log)
        return ExitCode.CONFLICT
    if merged != ours_bytes:
        write_atomic(ours, merged)
    print(f"{PROGRAM}: merged {shown}: {report.summary()}", file=log)
    for decision in report.decisions:
        print(f"{PROGRAM}: {shown}: {decision.explain()}", file=log)
    return ExitCode.OK


def _defer_to_git(
    *, base: Path, ours: Path, theirs: Path, path: str, marker_size: int, log: TextIO
) -> ExitCode:
    from crdt_merge_driver import git  # noqa: PLC0415  # only here: keeps the merge path light

    print(f"{PROGRAM}: {KILL_SWITCH} is set: {path} gets git's text merge", file=log)
    conflicts = git.merge_file(
        ours, base, theirs, marker_size=marker_size, labels=("ours", "base", "theirs")
    )
    return ExitCode.CONFLICT if conflicts else ExitCode.OK
