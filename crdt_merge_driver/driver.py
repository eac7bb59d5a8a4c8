"""The git merge driver: ``%O %A %B %P`` in, the merge written over ``%A``.

git's contract (docs/git-driver.md): exit 0 means merged; 1..128 means a
conflict, and git keeps whatever is in ``%A`` plus all three stages in the
index. Bad input therefore exits 1 with git's own text merge in ``%A``
(both sides' lines, with conflict markers, as without the driver), so
nothing is lost from view in any integration mode, and stderr says which
side and which line is bad. The driver never
exits above 128 and never deletes ``%A`` (either would abort the merge).

During a rebase or cherry-pick git swaps the sides; the merge is symmetric,
so the bytes are the same either way.
"""

from __future__ import annotations

import mmap
import os
import sys
from contextlib import ExitStack, suppress

from crdt_merge_driver import KILL_SWITCH, PROGRAM
from crdt_merge_driver.atomic import StrPath, write_atomic
from crdt_merge_driver.core.document import Buffer
from crdt_merge_driver.core.merge import merge_buffers
from crdt_merge_driver.errors import ExitCode, GitError, InputError

# On the merge driver's path, where importing typing would cost 3 ms of a
# 10k-entity merge's 80: names only the type checker needs are imported for it
# alone (mypy takes any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

# Every input but an empty one (which cannot be mapped) is mapped rather than
# read: the driver is a fresh process, and in a fresh process every page a
# read() copies into is a page fault (about 2.5 us each on a VM: 3,100 of them
# for three 10k-entity files, 8 ms of the driver's 95); the kernel maps
# page-cache pages of a file sixteen at a time and copies nothing. The
# ancestor's unchanged lines then go from the page cache to the output
# without a copy either.
# docs/benchmarks.md has the numbers.


def run_driver(
    *,
    base: StrPath,
    ours: StrPath,
    theirs: StrPath,
    path: str = "",
    marker_size: int = 7,
    log: TextIO = sys.stderr,
) -> ExitCode:
    """Merge ``base``/``ours``/``theirs`` into ``ours``; the exit code for git."""
    shown = path or os.fspath(ours)
    if os.environ.get(KILL_SWITCH, "") not in ("", "0"):
        return _defer_to_git(
            base=base, ours=ours, theirs=theirs, path=shown, marker_size=marker_size, log=log
        )
    labels = (f"{shown} (ancestor, %O)", f"{shown} (ours, %A)", f"{shown} (theirs, %B)")
    try:
        return _merge_over(base, ours, theirs, shown=_printable(shown), labels=labels, log=log)
    except InputError as error:
        print(f"{PROGRAM}: cannot merge {_printable(str(error))}; left for you to resolve",
              file=log)  # fmt: skip
    # Past the mappings' end: git's text merge rewrites %A in place.
    _show_both_sides(base=base, ours=ours, theirs=theirs, marker_size=marker_size, log=log)
    return ExitCode.CONFLICT


def _merge_over(
    base: StrPath,
    ours: StrPath,
    theirs: StrPath,
    *,
    shown: str,
    labels: tuple[str, str, str],
    log: TextIO,
) -> ExitCode:
    """The merge written over ``ours``; raises `InputError` for input it cannot merge."""
    with ExitStack() as stack:
        try:
            base_data, ours_data, theirs_data = (
                _load(name, stack) for name in (base, ours, theirs)
            )
        except OSError as error:
            print(f"{PROGRAM}: {shown}: cannot read {error.filename} ({error.strerror})", file=log)
            return ExitCode.CONFLICT
        if _equal(ours_data, theirs_data):
            print(f"{PROGRAM}: {shown}: both sides are the same", file=log)
            return ExitCode.OK
        merged = merge_buffers(base_data, ours_data, theirs_data, labels=labels)
        # %A is git's temp file: git reads it back at once and stores the
        # result itself, so a crash before it reaches the disk loses nothing
        # git would keep. Atomic, so never half-written; not flushed (fsync
        # costs more than merging a 10k-entity file).
        try:
            write_atomic(ours, merged.chunks(), durable=False)
        except OSError as error:
            print(f"{PROGRAM}: {shown}: cannot write the merge over {error.filename or ours} "
                  f"({error.strerror}); left for you to resolve", file=log)  # fmt: skip
            return ExitCode.CONFLICT
    print(f"{PROGRAM}: merged {shown}: {merged.report.summary()}", file=log)
    for decision in merged.report.decisions:
        print(f"{PROGRAM}: {shown}: {_printable(decision.explain())}", file=log)
    return ExitCode.OK


def _printable(text: str) -> str:
    """``text`` with its control characters escaped, so a path or a name cannot forge a line."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else repr(char)[1:-1] if ord(char) < 0x80 else
        f"\\u{ord(char):04x}" for char in text
    )  # fmt: skip


def _load(path: StrPath, stack: ExitStack) -> Buffer:
    with open(path, "rb") as stream:
        try:
            mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # empty (ValueError), or a file system that cannot map
            return stream.read()
    stack.callback(_close_quietly, mapped)
    return mapped


def _close_quietly(mapped: mmap.mmap) -> None:
    # A view may still be alive; the mapping then goes with the process.
    with suppress(BufferError):
        mapped.close()


def _equal(first: Buffer, second: Buffer) -> bool:
    if len(first) != len(second):
        return False
    if isinstance(first, bytes) and isinstance(second, bytes):
        return first == second
    step = 1 << 20
    return all(first[at : at + step] == second[at : at + step] for at in range(0, len(first), step))


def _show_both_sides(
    *, base: StrPath, ours: StrPath, theirs: StrPath, marker_size: int, log: TextIO
) -> None:
    """Leave git's own text merge in ``ours``: the working file then shows both sides.

    Without it, git keeps ``%A`` as the working file, which during a rebase
    is the upstream version: the user's own lines would vanish from view.
    Where git cannot merge the text either (binary, git missing), ``%A``
    stays as it was; git still has all three versions in the index.
    """
    from crdt_merge_driver import git  # noqa: PLC0415  # only here: keeps the merge path light

    try:
        git.merge_file(
            ours, base, theirs, marker_size=marker_size, labels=("ours", "base", "theirs")
        )
    except (GitError, OSError) as error:
        print(f"{PROGRAM}: git's text merge failed too ({_printable(str(error))}); "
              "the file is as it was", file=log)  # fmt: skip


def _defer_to_git(
    *, base: StrPath, ours: StrPath, theirs: StrPath, path: str, marker_size: int, log: TextIO
) -> ExitCode:
    from crdt_merge_driver import git  # noqa: PLC0415  # only here: keeps the merge path light

    print(f"{PROGRAM}: {KILL_SWITCH} is set: {path} gets git's text merge", file=log)
    conflicts = git.merge_file(
        ours, base, theirs, marker_size=marker_size, labels=("ours", "base", "theirs")
    )
    return ExitCode.CONFLICT if conflicts else ExitCode.OK
