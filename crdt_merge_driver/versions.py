"""The versions a backup reads and writes: the live file checked, this machine's version committed.

`backup` imports this module only when the live file is not the one it
last synced (its bytes differ from what it noted): an idle backup, cron's
common case, reads no memory file, and importing what reads them (`live`,
`merge`, orjson under them) was a third of its time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from crdt_merge_driver import PROGRAM
from crdt_merge_driver.atomic import write_atomic
from crdt_merge_driver.backup import BackupError, check_tracked
from crdt_merge_driver.core.clock import HybridClock
from crdt_merge_driver.core.envelope import is_object_file
from crdt_merge_driver.core.live import (
    SERVER_TYPES,
    first_foreign_line,
    graph_of,
    machine_version,
    observe,
    records_of,
    same_graph,
    server_form,
)
from crdt_merge_driver.core.merge import merge_bytes
from crdt_merge_driver.core.record import Key, Record, describe
from crdt_merge_driver.core.value import dumps
from crdt_merge_driver.errors import GitError, InputError, RefusedError
from crdt_merge_driver.sync.clone import say
from crdt_merge_driver.sync.guard import is_mass_deletion

if TYPE_CHECKING:
    from pathlib import Path

    from crdt_merge_driver.backup import Place


def read_live(
    place: Place, live: bytes, synced: str | None, own: str | None, log: TextIO
) -> tuple[str | None, bool]:
    """The live file checked: the commit it was made from (`base_of`), and whether it is new.

    New: it holds memory that commit (or, with none, an empty file) lacks, as the server reads it.
    """
    checked(place.memory, live)
    check_tracked(place)
    base = base_of(place, live, synced, own, log)
    return base, base is None or not same_graph(place.blob(base) or b"", live)


def checked(memory: Path, data: bytes) -> bytes:
    """``data``, once it is known to be a memory file (else a one-line error naming it)."""
    records_in(memory, data)
    return data


def records_in(memory: Path, data: bytes) -> dict[Key, Record]:
    """The records of the live file ``memory``; `BackupError` naming it if it is not one.

    A live file is what the official memory server reads and writes: its
    entity and relation records, nothing else. A file another writer keeps
    (a header line, records tagged ``_type`` or untagged, one JSON object)
    is refused, not read: backup would not see its changes, and restore
    would write what that writer cannot load (docs/formats.md).
    """
    if _is_object_file(data):  # at a glance for the server's files: `{"type":` first
        raise BackupError(_FOREIGN.format(f"{memory}, line 1", "one JSON object"))
    try:
        records = records_of(data)
    except InputError as error:
        # The located error names the file (and line) already: once is enough.
        raise BackupError(f"not a memory file: {error.located(str(memory))}") from None
    for key, value in records.items():
        if value.get("type") not in SERVER_TYPES:
            where = f"{memory}, line {first_foreign_line(data)}"
            what = (f"a record of type {dumps(value['type']).decode()}" if "type" in value
                    else f'{describe(key)} has no "type" field')  # fmt: skip
            raise BackupError(_FOREIGN.format(where, what))
    return records


_FOREIGN = (
    "{}: {}: not the official memory server's format; backup and restore keep that "
    "format only (for another writer's file, commit it with git: the driver merges it)"
)


def _is_object_file(data: bytes) -> bool:
    try:
        return is_object_file(data)
    except InputError:
        return True  # one JSON object, in a layout no writer is known for


def base_of(
    place: Place, live: bytes, synced: str | None, own: str | None, log: TextIO
) -> str | None:
    """What the live file was last made from: the last-sync point, as a rule.

    The exception: a tool call that read the live file before a restore
    replaced it, and saved after, puts the server's older view back. Then
    none of what the restore brought is in the live file, and building on
    the last-sync point would delete it all; building on this machine's own
    last version does not.
    """
    if synced is None or own is None or own == synced:
        return synced
    restored, before = records_of(place.blob(synced) or b""), records_of(place.blob(own) or b"")
    brought = [key for key in restored.keys() | before.keys()
               if _server_view(restored.get(key)) != _server_view(before.get(key))]  # fmt: skip
    if not brought:
        return synced
    now = records_of(live)
    seen = any(_server_view(now.get(key)) == _server_view(restored.get(key)) for key in brought)
    if seen:
        return synced
    say(log, f"warning: the last restore of {place.memory} was overwritten by the memory server; "
              "backing up on top of this machine's previous backup instead")  # fmt: skip
    return own


def _server_view(value: Record | None) -> bytes | None:
    # A record the server cannot hold is never in the live file: as absent as no record.
    return None if value is None else server_form(dumps(value)) or None


def commit_version(
    place: Place, base: str | None, live: bytes, *, machine: str, wall: Callable[[], float],
    seen: tuple[str | None, str | None], allow_mass_delete: bool,
) -> str:  # fmt: skip
    """A commit holding this machine's version of the file, on top of ``base``.

    New stamps come from ``machine``'s hybrid clock over ``wall``, once it has
    moved past the stamps in ``seen``: the remote's tip and HEAD (else the
    remote's tip).
    """
    if base is not None and not allow_mass_delete:
        _check_deletions(place, place.blob(base) or b"", live)
    clock = HybridClock(machine, wall=wall)
    head = seen[1]
    for data in map(place.blob, seen):
        if data:
            observe(clock, data)
    if base is not None:
        version = machine_version(place.blob(base) or b"", live, clock)
        return _commit_file(place, base, version, machine=machine)
    # A first backup has no point of last sync: it may only add. Its version
    # adopts what the repository already says of a record, and merges with it
    # as add/add (an empty ancestor), so nothing there is deleted or undone.
    here = place.blob(head) or b""
    version, _ = merge_bytes(b"", here, machine_version(here, live, clock, adopt=True))
    return _commit_file(place, head, version, machine=machine)


def _commit_file(place: Place, parent: str | None, data: bytes, *, machine: str) -> str:
    index = place.git_dir / f"crdt-merge-driver-backup.{os.getpid()}.index"
    scratch = {"GIT_INDEX_FILE": str(index)}
    try:
        if parent is not None:
            place.git("read-tree", parent, env=scratch)
        blob = place.git("hash-object", "-w", "--stdin", stdin=data).stdout.decode().strip()
        place.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{place.as_path}",
                  env=scratch)  # fmt: skip
        tree = place.git("write-tree", env=scratch).stdout.decode().strip()
    finally:
        index.unlink(missing_ok=True)
    message = f"backup {place.as_path} from {machine}"
    parents = ["-p", parent] if parent else []
    return place.git("commit-tree", tree, *parents, "-m", message).stdout.decode().strip()


def _check_deletions(place: Place, synced: bytes, live: bytes) -> None:
    """`RefusedError`, before anything is committed, if ``live`` deletes most of the memory.

    The push guard refuses such a push too, but only after this machine has
    committed the deletion, which every later backup and restore then tries
    to push again. A live file emptied by accident (a new server, a reset)
    must not get that far: refused here, a restore brings the memory back.
    """
    before, after = graph_of(synced), graph_of(live)
    lost = len(before.keys() - after.keys())
    if is_mass_deletion(len(before), lost):
        # Named only where restore would take the file: it refuses one holding
        # changes of its own (by its own test, against the last sync and HEAD).
        head = place.rev("HEAD")
        if head is not None and place.blob(head) is not None and restorable(place, live, head):
            back = f"`{PROGRAM} restore` brings them back"
        else:
            back = (f"add them again (`git -C {place.top} show HEAD:{place.as_path}` has them; "
                    "the file holds other changes too, which `restore` would undo)")  # fmt: skip
        raise RefusedError(
            f"{place.memory} holds {len(before) - lost} of the {len(before)} records this "
            f"machine last backed up or restored: a backup would delete {lost} (more than "
            f"half) from everyone's memory; nothing backed up or changed. If it was not "
            f"meant, {back}; if it was, `{PROGRAM} backup --allow-mass-delete`"
        )


def integrate(place: Place, commit: str) -> None:
    """Merge the machine's commit into the branch (the driver merges the file)."""
    result = place.git("merge", "--quiet", "--no-edit", commit, check=False)
    if result.returncode != 0:
        place.git("merge", "--abort", check=False)
        raise GitError(
            f"could not merge this machine's {place.as_path} into {place.branch}: "
            f"{result.stderr.strip() or result.stdout.decode().strip()}"
        )


def restorable(place: Place, current: bytes, tip: str) -> bool:
    """Restoring loses nothing: the live file holds no record the last sync or the tip lacks.

    Empty, what was last synced, the tip, or a part of either (records
    deleted since, which a restore brings back: what a refused mass
    deletion asks for, `_check_deletions`).
    """
    live = graph_of(current)
    if not live:
        return True
    synced = place.blob(place.rev(place.ref()))
    candidates = [data for data in (synced, place.blob(tip)) if data is not None]
    return any(live.items() <= graph_of(data).items() for data in candidates)


def write_live(place: Place, tip: str, *, expect: bytes | None) -> bytes | None:
    """Write the tip's memory into the live file: the bytes written, or None if it holds it.

    Holding the same graph already (in another line order or layout), the
    file is left alone: the server reads the same memory, and an idle run
    writes nothing.
    """
    merged = place.blob(tip)
    assert merged is not None  # the tip holds the file: it was just merged or checked
    if expect is not None and same_graph(merged, expect):
        return None
    mode = None if place.memory.exists() else 0o600  # a new memory file is private
    data = server_form(merged)
    write_atomic(place.memory, data, expect=expect, mode=mode)
    return data
