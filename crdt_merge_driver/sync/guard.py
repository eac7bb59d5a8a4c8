"""The checks before every push: each memory file parses, and none loses most of its records.

A damaged or emptied local file must not wipe everyone's memory, and a file
that ``merge=union`` or a text merge left behind must not spread. "Records"
are identities (an entity name, a relation's ends and type), so editing
observations never counts as a deletion.
"""

from __future__ import annotations

from collections.abc import Mapping

from crdt_merge_driver import PROGRAM
from crdt_merge_driver.core.codec import parse
from crdt_merge_driver.core.live import plain_keys
from crdt_merge_driver.core.record import Key, describe
from crdt_merge_driver.errors import InputError, RefusedError
from crdt_merge_driver.sync.clone import DRIVER_NAME, Clone, merge_attributes, read_blobs

# Fewer deletions than this are never a mass deletion, unless they empty the
# file: in a small memory, deleting one entity takes its relations with it,
# over half of the records, and that is the server's ordinary use.
MASS_DELETION_FLOOR = 5


def is_mass_deletion(before: int, lost: int) -> bool:
    """Whether losing ``lost`` of ``before`` records is what a damaged or emptied file does."""
    return lost * 2 > before and (lost == before or lost >= MASS_DELETION_FLOOR)


def check_push(clone: Clone, remote_tip: str | None, head: str, *, allow_mass_delete: bool) -> None:
    """Refuse a push that carries a bad memory file or deletes most of one."""
    if remote_tip is None:
        listed = clone.git("ls-tree", "-r", "-z", "--name-only", head).stdout
        changed = [name.decode("utf-8", "surrogateescape") for name in listed.split(b"\0") if name]
    else:
        diffed = clone.git("diff", "--name-only", "-z", "--no-renames", remote_tip, head).stdout
        changed = [name.decode("utf-8", "surrogateescape") for name in diffed.split(b"\0") if name]
    attributes = merge_attributes(clone, changed)
    memory = [path for path in changed if attributes.get(path) == DRIVER_NAME]
    if not memory:
        return
    blobs = read_blobs(clone, [f"{head}:{path}" for path in memory]
                       + [f"{remote_tip}:{path}" for path in memory if remote_tip])  # fmt: skip
    files = {path: (blobs[len(memory) + index] if remote_tip else None, blobs[index])
             for index, path in enumerate(memory)}  # fmt: skip
    check_files(clone, files, allow_mass_delete=allow_mass_delete)


def check_files(
    clone: Clone, files: Mapping[str, tuple[bytes | None, bytes | None]], *,
    allow_mass_delete: bool,
) -> None:  # fmt: skip
    """`check_push` on memory files already read: each path's remote and pushed versions."""
    for path, (remote, pushed) in files.items():
        after = _keys(path, pushed)
        before = _remote_keys(remote)
        lost = len(before - after)
        if is_mass_deletion(len(before), lost) and not allow_mass_delete:
            raise RefusedError(
                f"refusing to push {path}: it deletes {lost} of the {len(before)} records "
                f"{clone.where} has (more than half), which a damaged or emptied file must not "
                f"do to everyone's memory. Nothing pushed; your commits are kept. If you mean it, "
                f"`{PROGRAM} sync --allow-mass-delete --repo {clone.top}`"
            )


def passes(
    clone: Clone, files: Mapping[str, tuple[bytes | None, bytes | None]], *,
    allow_mass_delete: bool,
) -> bool:  # fmt: skip
    """Whether `check_files` lets these files through."""
    try:
        check_files(clone, files, allow_mass_delete=allow_mass_delete)
    except RefusedError:
        return False
    return True


def _keys(path: str, data: bytes | None) -> set[Key]:
    if data is None:
        return set()  # deleted by the push
    if (plain := plain_keys(data)) is not None:
        return set(plain)  # parses, no record twice: known without another parse
    try:
        document = parse(data)
    except InputError as error:
        raise RefusedError(
            f"refusing to push {error.located(path)}; nothing pushed, your commits are kept. "
            f"Fix the file (`{PROGRAM} join {path} -o {path}` rewrites a readable one), "
            f"commit, then sync again"
        ) from None
    if document.repeated:
        key = min(document.repeated, key=repr)
        raise RefusedError(
            f"refusing to push {path}: {describe(key)} appears more than once (as merge=union "
            f"leaves it); nothing pushed. `{PROGRAM} join {path} -o {path}` folds repeats "
            f"into one; commit, then sync again"
        )
    return set(document.keys)


def _remote_keys(data: bytes | None) -> set[Key]:
    # A damaged remote file counts no records: a push that repairs it is not a mass delete.
    if data is None:
        return set()
    if (plain := plain_keys(data)) is not None:
        return set(plain)
    try:
        return set(parse(data).keys)
    except InputError:
        return set()
