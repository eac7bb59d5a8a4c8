"""``crdt-merge-driver join``: files that share no ancestor, merged into one."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from crdt_merge_driver.atomic import write_atomic
from crdt_merge_driver.core.codec import diff
from crdt_merge_driver.core.document import ARRAY, EMPTY, JSONL, Side, Style, joined_style
from crdt_merge_driver.core.merge import Merged, join
from crdt_merge_driver.errors import CrdtError, InputError


def join_files(*, inputs: Sequence[Path], output: Path | None, format_name: str | None) -> Merged:
    """Join ``inputs``; write to ``output`` (atomically) or to stdout."""
    sides = [_read(path) for path in inputs]
    # The inputs' own format first (JSONL in, JSONL out, whatever -o is
    # called), with their layout; -o's extension only where they differ.
    shared = joined_style(side.style for side in sides)
    chosen = format_name or shared.format or _format_of(output) or JSONL
    merged = join(sides, style=shared if chosen == shared.format else Style(chosen))
    if output is None:
        sys.stdout.buffer.writelines(merged.chunks())
        sys.stdout.buffer.flush()
    else:
        try:
            write_atomic(output, merged.chunks())
        except OSError as error:
            raise CrdtError(f"cannot write {output}: {error.strerror}") from None
    print(
        f"crdt-merge-driver: joined {_count(len(inputs), 'file')} into {output or 'stdout'}: "
        f"{_count(merged.report.kept, 'record')}",
        file=sys.stderr,
    )
    for decision in merged.report.decisions:
        print(f"crdt-merge-driver: {decision.explain()}", file=sys.stderr)
    return merged


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


def _read(path: Path) -> Side:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CrdtError(f"cannot read {path}: {error.strerror}") from None
    try:
        return diff(EMPTY, data)
    except InputError as error:
        raise error.located(str(path)) from None


def _format_of(path: Path | None) -> str | None:
    if path is None:
        return None
    return {".jsonl": JSONL, ".json": ARRAY}.get(path.suffix)
