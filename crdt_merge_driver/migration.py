"""``crdt-merge-driver migrate``: the older layout folded into one ``memory.jsonl``.

Older setups kept one JSON file per host (``memory-<host>.json``), a
``unified-memory.json`` and a ``memory.json``, arrays of records carrying
``_crdt_metadata``. They share no ancestor, so they are joined: every
record once, the same record from several files merged (observations
united, the later ``_crdt_metadata.timestamp`` winning for scalar fields),
the old metadata kept on the records. Then the old files leave the
repository, the driver is installed, and the result is committed, ready for
``sync``. docs/migration.md walks through it.
"""

from __future__ import annotations

import sys
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import NamedTuple, TextIO

from crdt_merge_driver import git, install
from crdt_merge_driver.atomic import write_atomic
from crdt_merge_driver.core.codec import diff
from crdt_merge_driver.core.document import EMPTY, JSONL, Side, Style
from crdt_merge_driver.core.merge import join
from crdt_merge_driver.errors import CrdtError, InputError
from crdt_merge_driver.log import say

TARGET = "memory.jsonl"
OLD_PATTERNS = ("memory.json", "memory-*.json", "unified-memory.json")


class MigrationResult(NamedTuple):
    sources: list[str]  # paths in the repository, folded into TARGET
    records: int
    commit: str | None  # None for a dry run or when there was nothing to do


def migrate(*, repo: Path, dry_run: bool = False, log: TextIO = sys.stderr) -> MigrationResult:
    """Fold the old memory files of ``repo`` into ``memory.jsonl`` and commit it."""
    top = install.find_toplevel(repo)
    sources = _old_files(top)
    if not sources:
        say(log, f"nothing to migrate: no {', '.join(OLD_PATTERNS)} in {top}", summary=True)
        return MigrationResult([], 0, None)
    target = top / TARGET
    inputs = [*sources, TARGET] if target.exists() else sources
    merged = join([_read(top, name) for name in inputs], style=Style(JSONL))
    for name in sources:
        say(log, f"{'would fold' if dry_run else 'folding'} {name}")
    say(log, f"{TARGET}: {merged.report.kept} records from {len(inputs)} files")
    for decision in merged.report.decisions:
        say(log, decision.explain())
    if dry_run:
        say(log, f"dry run: would fold {len(sources)} files into {TARGET} "
                 f"({merged.report.kept} records); nothing written", summary=True)  # fmt: skip
        return MigrationResult(sources, merged.report.kept, None)
    write_atomic(target, merged.chunks())
    tracked = set(git.list_files(top))
    old_tracked = [name for name in sources if name in tracked]
    if old_tracked:
        git.run("rm", "--quiet", "--", *old_tracked, cwd=top)
    for name in sorted(set(sources) - set(old_tracked)):
        # Never in git's history: left for the user to delete once checked.
        say(log, f"left {name} in place (it was never committed); delete it when satisfied")
    installed = install.install(
        repo=top, scope_global=False, patterns=None, name=install.DEFAULT_NAME
    )
    for line in installed:
        say(log, line)
    git.run("add", "--", TARGET, ".gitattributes", cwd=top)
    message = f"migrate: fold {len(sources)} older memory files into {TARGET}"
    # Only what migrate changed: anything else the user had staged stays staged.
    ours = [TARGET, ".gitattributes", *old_tracked]
    result = git.run("commit", "--quiet", "-m", message, "--", *ours, cwd=top, check=False)
    if result.returncode != 0:
        raise CrdtError(f"{TARGET} is written but not committed: {result.stderr.strip()}")
    commit = git.output("rev-parse", "HEAD", cwd=top)
    say(log, f"committed {commit[:12]}; push it with `crdt-merge-driver sync`", summary=True)
    return MigrationResult(sources, merged.report.kept, commit)


def _old_files(top: Path) -> list[str]:
    names = set(git.list_files(top, "--cached", "--others", "--exclude-standard"))
    return sorted(
        name for name in names
        if any(fnmatch(PurePosixPath(name).name, pattern) for pattern in OLD_PATTERNS)
        and (top / name).is_file()
    )  # fmt: skip


def _read(top: Path, name: str) -> Side:
    try:
        return diff(EMPTY, (top / name).read_bytes())
    except InputError as error:
        raise error.located(name) from None
