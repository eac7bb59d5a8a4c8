"""Replay local commits that change only memory files onto the remote's, in this process.

`git rebase` starts the merge driver, a Python process, for every memory
file both sides changed: about half of what a sync attempt cost (docs/sync.md,
"Speed"). When every local commit to land only edits or adds memory files,
as sync's own commits and backup's do, this does what that rebase would do
without it. Each local commit in turn: the parent's, the current tip's and
the commit's version of each file it changed, merged with `merge_bytes`
exactly as the driver merges them during a rebase (%O the parent, %A the
upstream plus what is already replayed, %B the commit); a new tree; a commit
with the original author, date and message. Like the rebase, a commit
already upstream or left empty by the merge is dropped, and leading commits
that already sit on the tip are kept as they are.

HEAD does not move here: sync pushes the replayed commits first and then
moves HEAD and the work tree there (`checkout.follow`), so an attempt that
loses the race leaves the clone as it was and costs two git processes less.

Whatever git might do differently goes to `git rebase`: `replay` returns
None for a merge or root commit, any change but an edit or addition of a
file the driver is attached to, a mode change, a file the upstream deleted,
renamed or re-moded, attributes that differ between the two sides, an
encoding header, signed commits, or the driver's kill switch.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from crdt_merge_driver import KILL_SWITCH, PROGRAM
from crdt_merge_driver.core.merge import merge_bytes
from crdt_merge_driver.errors import GitError, InputError, RefusedError
from crdt_merge_driver.sync.clone import (
    DRIVER_NAME,
    Clone,
    Object,
    merge_attributes,
    read_objects,
)
from crdt_merge_driver.sync.rebase import refuse_damaged

# What each commit changed, oldest first.
_RAW_LOG = ("log", "-z", "--reverse", "--topo-order", "--no-renames", "--raw", "--no-abbrev",
            "--no-color", "--no-show-signature", "--no-ext-diff", "--no-relative")  # fmt: skip
# The commits rebase would replay, marked "=" where the same change is upstream.
_LOG = (*_RAW_LOG, "--right-only", "--cherry-mark", "--format=%m %H %P")
# Other machines' waiting commits (see `_waiting`), each entry after a \1.
_LOG_WAITING = (*_RAW_LOG, "--format=%x01%m %H %P")
_PLAIN = ("100644", "100755")  # regular files; a symlink or a submodule goes to git
_AUTHOR = re.compile(rb"author (?P<name>[^<>\n]*) <(?P<email>[^<>\n]*)> (?P<date>\d+ [+-]\d{4})$")
_CRUD = bytes(range(33)) + b".,:;<>\"\\'"  # what git strips from the ends of a name or email


class Change(NamedTuple):
    path: str
    mode: str
    before: str | None  # the blob in the parent; None when the commit adds the file
    after: str


class Pick(NamedTuple):
    commit: str
    parent: str
    upstream: bool  # --cherry-mark's "=": the same change is upstream, rebase drops it
    changes: list[Change]


# Each memory file a push changes: path -> (the remote's version, the pushed one).
Files = dict[str, tuple[bytes | None, bytes | None]]


class Replayed(NamedTuple):
    head: str  # the last replayed commit; HEAD is not there yet (see `checkout.move_head`)
    files: Files
    carried: tuple[str, ...] = ()  # the other heads ``head`` holds now: their refs can go
    brought: int = 0  # how many of those brought commits (the rest were upstream already)


class Memo:
    """What a sync learns once and every attempt reuses."""

    def __init__(self) -> None:
        self.attributes: dict[str, str] = {}
        self.otherwise: bool | None = None  # see `_writes_otherwise`

    def forget(self) -> None:
        # git rebase may have brought a new .gitattributes.
        self.attributes.clear()


def replay(
    clone: Clone, head: str, onto: str, memo: Memo, others: Sequence[str] = (), *,
    accept: Callable[[Files], bool] | None = None, after: str | None = None,
) -> Replayed | None:  # fmt: skip
    """Land the local commits on ``onto`` as git rebase would; None: leave it to git rebase.

    ``others``: heads of other machines' commits waiting to land (see
    pending.py), replayed after the local ones, each as if rebased in turn.
    One that replay cannot do, whose memory file the driver cannot merge,
    that ``accept`` refuses (given the files as they would be pushed), or
    that builds on one left out, is left out; `Replayed.carried` names those
    that are in. Either way the local commits land. ``after``: a local commit
    that landed already (carried from the queue, rewritten): only the local
    commits after it are replayed, as ``git rebase --onto ONTO AFTER`` would.
    """
    picks = _own_picks(clone, head, onto, memo, after)
    if picks is None:
        return None
    base, rewrite = _skip_kept(onto, [pick for pick in picks if not pick.upstream])
    waiting = _waiting(clone, onto, head, others)
    every = [*rewrite, *(pick for chain in waiting.values() for pick in chain)]
    paths = sorted({change.path for pick in (*picks, *every) for change in pick.changes})
    objects = _Objects(clone, (head, *waiting), onto, base, paths=paths, rewrite=every)
    if not objects.same_attributes(head) or not all(map(objects.fits, rewrite)):
        return None
    state = {path: objects.at(base, path) for path in paths}
    steps = [_apply(clone, pick, state, objects) for pick in rewrite]
    carried: list[str] = []
    brought, left = 0, set[str]()
    for other, chain in waiting.items():
        more = None
        fits = (_attached(clone, chain, memo) and objects.same_attributes(other)
                and all(map(objects.fits, chain)))  # fmt: skip
        # Built on a chain left out (or, empty, taken whole by one): left out too.
        if fits and (chain[0].parent if chain else other) not in left:
            more = _carry(clone, chain, state, objects, accept)
        if more is None:
            left.update(pick.commit for pick in chain)  # and every chain built on it
            continue
        steps += more
        rewrite += chain
        carried.append(other)
        brought += bool(chain)
    merged = [found.data for step in steps for _, found in step.values() if found.oid is None]
    ids = _write_blobs(clone, [data for data in dict.fromkeys(merged) if data is not None])
    new_head = _write_commits(clone, base, rewrite, steps, ids=ids, objects=objects)
    return Replayed(new_head, _pushed(state, objects), tuple(carried), brought)


def _carry(
    clone: Clone, chain: list[Pick], state: dict[str, _File], objects: _Objects,
    accept: Callable[[Files], bool] | None,
) -> list[_Step] | None:  # fmt: skip
    """Apply another machine's chain to ``state``; None (``state`` as it was) if it is refused."""
    before = dict(state)
    try:
        steps = [_apply(clone, pick, state, objects) for pick in chain]
    except RefusedError:
        steps = None
    if steps is None or (accept is not None and chain and not accept(_pushed(state, objects))):
        state.update(before)  # the same paths: this undoes the chain's part
        return None
    return steps


def _pushed(state: dict[str, _File], objects: _Objects) -> Files:
    return {path: (objects.data_at(objects.onto, path), found.data)
            for path, found in state.items()
            if objects.data_at(objects.onto, path) != found.data}  # fmt: skip


def replayable(clone: Clone, head: str, onto: str, memo: Memo) -> bool:
    """Whether `replay` can likely land the local commits on ``onto``: a first look, no objects."""
    return _own_picks(clone, head, onto, memo) is not None


def _own_picks(
    clone: Clone, head: str, onto: str, memo: Memo, after: str | None = None
) -> list[Pick] | None:
    """The local commits to replay; None if any is one to leave to git rebase."""
    if os.environ.get(KILL_SWITCH, "") not in ("", "0"):
        return None  # the driver would defer to git's text merge
    picks = _picks(clone, onto, head, after)
    if picks is None or _writes_otherwise(clone, memo) or not _attached(clone, picks, memo):
        return None
    return picks


def _picks(clone: Clone, onto: str, head: str, after: str | None = None) -> list[Pick] | None:
    if after is None:
        picks = _parse(clone.git(*_LOG, f"{onto}...{head}").stdout)
    else:  # only the commits after ``after``, whose changes are upstream already
        picks = _parse(clone.git(*_RAW_LOG, "--format=%m %H %P", f"^{onto}", f"^{after}", head,
                                 "--").stdout)  # fmt: skip
    if picks is None or not picks or not all(pick.changes for pick in picks):
        return None  # HEAD is behind (a fast-forward), an empty commit, or beyond replay
    return picks


def _parse(data: bytes) -> list[Pick] | None:
    """The commits of a ``git log`` with `_LOG`'s format; None if one is beyond replay."""
    picks: list[Pick] = []
    tokens = iter(data.split(b"\0"))
    for token in tokens:
        token = token.lstrip(b"\n")  # noqa: PLW2901  # the newline git puts before a raw diff
        if not token:
            continue
        if token.startswith(b":") and picks:
            old_mode, new_mode, old_id, new_id, status = token[1:].decode().split()
            path = next(tokens).decode("utf-8", "surrogateescape")
            if (
                status not in ("M", "A")
                or new_mode not in _PLAIN
                or (status == "M" and old_mode != new_mode)
            ):
                return None  # deleted, a type change, a mode change, a symlink...
            before = old_id if status == "M" else None
            picks[-1].changes.append(Change(path, new_mode, before, new_id))
            continue
        mark, commit, *parents = token.decode().split(" ")
        if len(parents) != 1:
            return None  # a merge (rebase would drop it) or a root commit
        picks.append(Pick(commit, parents[0], mark == "=", []))
    return picks


def _waiting(clone: Clone, onto: str, head: str, others: Sequence[str]) -> dict[str, list[Pick]]:
    """The commits of each other head that ``onto`` and ``head`` lack, oldest first; one git log.

    A head with a commit replay cannot do (a merge, a deletion, an empty
    commit...) is left out: its own sync lands it, through git rebase.
    """
    if not others:
        return {}
    log = clone.git(*_LOG_WAITING, f"^{onto}", f"^{head}", *others, "--").stdout
    commits: dict[str, Pick | None] = {}  # None: beyond replay
    for entry in log.split(b"\1")[1:]:
        parsed = _parse(entry)
        commit = entry.split(b" ", 2)[1].decode()
        commits[commit] = parsed[0] if parsed and parsed[0].changes else None
    chains: dict[str, list[Pick]] = {}
    taken: set[str] = set()
    for other in dict.fromkeys(others):
        chain: list[Pick] = []
        commit = other
        while commit in commits and commit not in taken:
            pick = commits[commit]
            if pick is None:
                break
            chain.append(pick)
            commit = pick.parent
        else:
            taken.update(pick.commit for pick in chain)
            chains[other] = chain[::-1]
    return chains


def _attached(clone: Clone, picks: list[Pick], memo: Memo) -> bool:
    paths = {change.path for pick in picks for change in pick.changes}
    unknown = sorted(paths - memo.attributes.keys())
    memo.attributes.update(merge_attributes(clone, unknown))
    return all(memo.attributes.get(path) == DRIVER_NAME for path in paths)


def _writes_otherwise(clone: Clone, memo: Memo) -> bool:
    """Whether git rebase would write its commits otherwise than `_write_commits` does."""
    if memo.otherwise is None:
        # Signed (commit.gpgSign), or with an encoding header (i18n.commitEncoding).
        signing = clone.git("config", "--type=bool", "--get", "commit.gpgSign", check=False)
        encoding = clone.git("config", "--get", "i18n.commitEncoding", check=False)
        named = encoding.stdout.strip().lower()
        memo.otherwise = signing.stdout.strip() == b"true" or named not in (b"", b"utf-8", b"utf8")
    return memo.otherwise


def _skip_kept(onto: str, picks: list[Pick]) -> tuple[str, list[Pick]]:
    """Like git rebase, keep the leading commits that already sit on ``onto`` as they are."""
    base = onto
    for index, pick in enumerate(picks):
        if pick.parent != base:
            return base, picks[index:]
        base = pick.commit
    return base, []


class _File(NamedTuple):
    oid: str | None  # None: not written yet (a merge result), or absent when data is None
    data: bytes | None


_Step = dict[str, tuple[str, _File]]  # what one commit changes: path -> (mode, file)


class _Objects:
    """Everything the replay reads, in one ``git cat-file --batch``."""

    def __init__(
        self, clone: Clone, heads: Sequence[str], onto: str, base: str, *, paths: list[str],
        rewrite: list[Pick],
    ) -> None:  # fmt: skip
        """``heads``: the local head first, then the other machines' (attributes only)."""
        self.onto = onto
        self.folders = sorted({_folder(path) for path in paths})
        names = [f"{rev}:{path}" for rev in dict.fromkeys((onto, base)) for path in paths]
        names += [f"{rev}:{folder}{'/' if folder else ''}.gitattributes"
                  for rev in (*heads, onto) for folder in _ancestors(self.folders)]  # fmt: skip
        names += [f"{rev}:{folder}" for rev in (base, *(pick.parent for pick in rewrite))
                  for folder in self.folders]  # fmt: skip
        names += [pick.commit for pick in rewrite]
        names += [oid for pick in rewrite for change in pick.changes
                  for oid in (change.before, change.after) if oid]  # fmt: skip
        names = list(dict.fromkeys(names))
        self.found: dict[str, Object | None] = dict(zip(names, read_objects(clone, names),
                                                        strict=True))  # fmt: skip
        self.base = base

    def at(self, rev: str, path: str) -> _File:
        found = self.found[f"{rev}:{path}"]
        return _File(found.oid, found.data) if found else _File(None, None)

    def data_at(self, rev: str, path: str) -> bytes | None:
        return self.at(rev, path).data

    def blob(self, oid: str) -> bytes:
        found = self.found[oid]
        assert found is not None  # named by the commit that holds it
        return found.data

    def same_attributes(self, head: str) -> bool:
        # During a rebase git reads .gitattributes from the upstream's tree;
        # check-attr read this work tree's. Replay only where they agree.
        return all(
            _oid(self.found[f"{head}:{name}"]) == _oid(self.found[f"{self.onto}:{name}"])
            for folder in _ancestors(self.folders)
            for name in [f"{folder}{'/' if folder else ''}.gitattributes"]
        )

    def fits(self, pick: Pick) -> bool:
        """Whether each change lands on a file (or folder) the upstream has as the parent had."""
        for change in pick.changes:
            folder = self.found[f"{self.base}:{_folder(change.path)}"]
            if folder is None and self.found[f"{pick.parent}:{_folder(change.path)}"] is None:
                continue  # a new folder (one the upstream removed, git might follow to a rename)
            if folder is None or folder.kind != "tree":
                return False
            mode, _ = _entries(folder).get(PurePosixPath(change.path).name, (None, None))
            if (change.before is not None or mode is not None) and mode != change.mode:
                return False  # deleted, renamed, re-moded upstream, or not a file there
        return _representable(self.commit(pick.commit).data)

    def commit(self, oid: str) -> Object:
        found = self.found[oid]
        assert found is not None
        return found


def _representable(raw: bytes) -> bool:
    """Whether commit-tree can write this commit's author and message back byte for byte."""
    top, _, message = raw.partition(b"\n\n")
    header = top.split(b"\n")
    if any(line.startswith(b"encoding ") for line in header):
        return False  # git rebase re-encodes the message
    try:  # commit-tree rewrites text that is not UTF-8 (as Latin-1) in what it writes
        top.decode()
        message.decode()
    except UnicodeDecodeError:
        return False
    authors = [found for line in header if (found := _AUTHOR.fullmatch(line))]
    return len(authors) == 1 and all(
        value and value.strip(_CRUD) == value for value in (authors[0]["name"], authors[0]["email"])
    )


def _folder(path: str) -> str:
    parent = str(PurePosixPath(path).parent)
    return "" if parent == "." else parent


def _ancestors(folders: Iterable[str]) -> list[str]:
    every = {""}
    for folder in folders:
        parts = PurePosixPath(folder).parts
        every.update("/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return sorted(every)


def _oid(found: Object | None) -> str | None:
    return found.oid if found else None


def _entries(tree: Object) -> dict[str, tuple[str, str]]:
    """Each entry of a raw tree object (``<mode> <name>\\0<id>``...): name -> (mode, id)."""
    width = len(tree.oid) // 2  # the binary id: 20 bytes for SHA-1, 32 for SHA-256
    entries: dict[str, tuple[str, str]] = {}
    at = 0
    while at < len(tree.data):
        space = tree.data.index(b" ", at)
        end = tree.data.index(b"\0", space)
        name = tree.data[space + 1 : end].decode("utf-8", "surrogateescape")
        entries[name] = (
            _canonical(tree.data[at:space]),
            tree.data[end + 1 : end + 1 + width].hex(),
        )
        at = end + 1 + width
    return entries


def _canonical(mode: bytes) -> str:
    # As git reads trees (tree-walk's canon_mode), so the trees written match git's.
    value = int(mode, 8)
    kind = value & 0o170000
    if kind == 0o100000:
        return "100755" if value & 0o100 else "100644"
    return {0o040000: "40000", 0o120000: "120000"}.get(kind, "160000")


def _apply(clone: Clone, pick: Pick, state: dict[str, _File], objects: _Objects) -> _Step:
    """Apply one commit to ``state`` as git and the driver would; what it changes there."""
    step: _Step = {}
    for change in pick.changes:
        ours, theirs = state[change.path], objects.blob(change.after)
        base = objects.blob(change.before) if change.before else b""  # added: an empty %O
        if ours.data is None or (change.before is not None and ours.data == base):
            result = _File(change.after, theirs)  # only the commit changed it
        elif ours.data == theirs:
            result = ours
        else:
            result = _File(None, _merge_file(clone, change.path, base, ours.data, theirs))
        if result.data != ours.data:
            step[change.path] = (change.mode, result)
        state[change.path] = result
    return step


def _merge_file(clone: Clone, path: str, base: bytes, ours: bytes, theirs: bytes) -> bytes:
    labels = (f"{path} (ancestor, %O)", f"{path} (ours, %A)", f"{path} (theirs, %B)")
    try:
        merged, _ = merge_bytes(base, ours, theirs, labels=labels)
    except InputError as error:
        side = "OAB"[labels.index(error.source)] if error.source in labels else "A"
        line = str(error.line) if error.line is not None else None
        raise refuse_damaged(clone, path, side, error.reason, line) from None
    return merged


def _write_blobs(clone: Clone, contents: list[bytes]) -> dict[bytes, str]:
    """Store the merge results, all in one git process; the id of each."""
    return dict(zip(contents, _write_objects(clone, "blob", contents), strict=True))


def _write_objects(clone: Clone, kind: str, contents: list[bytes]) -> list[str]:
    """Store objects of one kind, all in one git process; the id of each."""
    if not contents:
        return []
    if len(contents) == 1:
        written = clone.git("hash-object", "-t", kind, "-w", "--stdin", stdin=contents[0]).stdout
        return [written.decode().strip()]
    with tempfile.TemporaryDirectory(prefix=f"{PROGRAM}-sync.", dir=clone.git_dir) as folder:
        names = []
        for number, data in enumerate(contents):
            name = Path(folder) / str(number)
            name.write_bytes(data)
            names.append(str(name))
        feed = "".join(f"{name}\n" for name in names).encode()
        written = clone.git("hash-object", "-t", kind, "-w", "--no-filters", "--stdin-paths",
                            stdin=feed).stdout  # fmt: skip
    return written.decode().split()


def _write_commits(
    clone: Clone, base: str, rewrite: list[Pick], steps: list[_Step], *,
    ids: Mapping[bytes, str], objects: _Objects,
) -> str:  # fmt: skip
    """A tree and a commit for each pick that still changes something; the last commit.

    The commits are what ``git commit-tree`` would write (the original
    author line and message, this clone's committer and the time now), but
    all in one git process: each commit's id, needed as the next one's
    parent, is computed here and checked against what git stored.
    """
    changes = [{path: (mode, found.oid or ids[found.data or b""])
                for path, (mode, found) in step.items()} for step in steps]  # fmt: skip
    root = objects.found.get(f"{base}:")
    flat = root is not None and all(_plain(path) for change in changes for path in change)
    if flat and root is not None and all(map(_plain, _entries(root))):
        trees = _trees_by_mktree(clone, _entries(root), changes)
    else:
        trees = _trees_by_index(clone, base, changes)
    if not any(trees):
        return base  # every change is already upstream: git rebase drops every commit
    committer = clone.git("var", "GIT_COMMITTER_IDENT").stdout.rstrip(b"\n")
    digest = hashlib.sha1 if len(base) == 40 else hashlib.sha256  # SHA-1 or SHA-256 ids
    bodies, expected = [], []
    parent = base
    for pick, tree in zip(rewrite, trees, strict=True):
        if tree is None:
            continue  # the change is already upstream: git rebase drops the commit
        author, message = authorship(objects.commit(pick.commit).data)
        body = b"tree %s\nparent %s\n%s\ncommitter %s\n\n%s" % (
            tree.encode(), parent.encode(), author, committer, message
        )  # fmt: skip
        parent = digest(b"commit %d\0%s" % (len(body), body), usedforsecurity=False).hexdigest()
        bodies.append(body)
        expected.append(parent)
    written = _write_objects(clone, "commit", bodies)
    if written != expected:  # pragma: no cover  # git and this module disagree on an id
        raise GitError(f"git stored the replayed commits as {written}, not {expected}")
    return parent


_Changes = dict[str, tuple[str, str]]  # path -> (mode, blob id)


def _plain(name: str) -> bool:
    # A name mktree reads back as written: no folder, quoting or control character.
    return name.isprintable() and not name.startswith('"') and "/" not in name and "\\" not in name


def _trees_by_mktree(
    clone: Clone, entries: dict[str, tuple[str, str]], changes: list[_Changes]
) -> list[str | None]:
    """Each pick's tree, when it changes only files at the top: one ``git mktree --batch``."""
    kinds = {"40000": "tree", "160000": "commit"}
    feed = []
    for change in changes:
        if change:
            entries = {**entries, **change}
            feed.append("".join(f"{mode} {kinds.get(mode, 'blob')} {oid}\t{name}\n"
                                for name, (mode, oid) in entries.items()))  # fmt: skip
    made = clone.git("mktree", "--batch", "--missing",
                     stdin="\n".join(feed).encode("utf-8", "surrogateescape")).stdout  # fmt: skip
    trees = iter(made.decode().split())
    return [next(trees) if change else None for change in changes]


def _trees_by_index(clone: Clone, base: str, changes: list[_Changes]) -> list[str | None]:
    """Each pick's tree, through a scratch index (files in folders)."""
    index = clone.git_dir / f"{PROGRAM}-sync.{os.getpid()}.index"
    scratch = {"GIT_INDEX_FILE": str(index)}
    trees: list[str | None] = []
    try:
        clone.git("read-tree", base, env=scratch)
        for change in changes:
            if not change:
                trees.append(None)
                continue
            feed = b"".join(f"{mode} {oid}\t".encode() + path.encode("utf-8", "surrogateescape")
                            + b"\0" for path, (mode, oid) in change.items())  # fmt: skip
            clone.git("update-index", "-z", "--index-info", stdin=feed, env=scratch)
            trees.append(clone.git("write-tree", env=scratch).stdout.decode().strip())
    finally:
        index.unlink(missing_ok=True)
    return trees


def authorship(raw: bytes) -> tuple[bytes, bytes]:
    """The author line of a raw commit object, and its message."""
    header, _, message = raw.partition(b"\n\n")
    for line in header.split(b"\n"):
        if _AUTHOR.fullmatch(line):
            return line, message
    raise AssertionError("a commit object without an author line")  # pragma: no cover
