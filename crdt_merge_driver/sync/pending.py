"""The queue on the remote: commits that lost a race wait there, and the next push lands them all.

Pushes to one branch land one at a time, and a few hundred milliseconds
each on a busy machine: 64 writers, one after another, take longer than
any of them should wait. So a sync whose push lost the race pushes its
local commits to a ref of its own on the remote, which no other writer
touches and so is never rejected:

    refs/crdt-merge-driver/pending/<branch>/<time>.<host>.<pid>.<random>

Every sync fetches these refs with the branch (into ``refs/crdt-merge-
driver/seen/<remote>/<branch>/``), replays the waiting commits after its own
(replay.py), and pushes the branch and the deletion of each ref it carried
in one ``git push --atomic``, each deletion leased on the commit it carried,
with a record of what it carried (``refs/crdt-merge-driver/record/<branch>/
carried``). A writer that finds its ref gone looks itself up in the record:
only there is it carried (a ref can also be deleted by hand). Branch and
remote names are escaped (``%`` and ``/``) so that one branch's refs never
match another's pattern.

A remote that refuses these refs (a hook, a host that allows only
branches) turns the queue off for the rest of the sync: each writer then
lands on its own, as before. docs/sync.md, "The queue", gives the reasons.
"""

from __future__ import annotations

# Marks of a few bytes: the standard library's json, not orjson, whose import
# (12 ms) an idle backup, which reads no mark, need not pay for.
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Mapping
from typing import NamedTuple

from crdt_merge_driver.atomic import write_atomic
from crdt_merge_driver.sync.clone import Clone, read_objects

NAMESPACE = "refs/crdt-merge-driver/pending"
# In the git folder (per worktree): the ref this clone's commits wait in, and the commit.
QUEUED = "crdt-merge-driver-sync.queued"
# How long a waiting sync leaves the landing to the queue's first, and how old the
# first's ref may be (`Queue.leader`).
PATIENCE = 8.0
_SEEN = "refs/crdt-merge-driver/seen"
# The record of carried refs: a blob of "<ref> <commit>" lines, newest first, per branch.
# It sorts after the queue, as git lists refs: a fetch that sees a ref gone sees its record.
RECORD = "refs/crdt-merge-driver/record"
_RECORD_SEEN = "refs/crdt-merge-driver/seen-record"
RECORD_LINES = 2048


class Record(NamedTuple):
    """What a push that empties the queue writes to the record: its ref, old blob, new blob."""

    ref: str
    old: str  # "" when there is none yet
    new: str


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # what a host name may not bring into a ref name


class Queue:
    """This sync's place in the queue of one remote branch."""

    def __init__(self, clone: Clone) -> None:
        self.clone = clone
        branch, remote = _escape(clone.branch), _escape(clone.remote)
        self.remote_prefix = f"{NAMESPACE}/{branch}/"
        self.seen_prefix = f"{_SEEN}/{remote}/{branch}/"
        # The record's folder on the remote and here; a pattern, so that a remote
        # without a record yet is no error for `fetch`.
        self.record_folder = f"{RECORD}/{branch}/"
        self.record_seen_folder = f"{_RECORD_SEEN}/{remote}/{branch}/"
        self.record_ref = f"{self.record_folder}carried"
        self.record_seen = f"{self.record_seen_folder}carried"
        self.mine: str | None = None  # the ref this sync's commits wait in, once pushed
        self.commit: str | None = None  # the commit it holds
        self.off: str | None = None  # why the queue is off (the remote refused it)
        self.waited = 0.0  # seconds this sync has waited since it joined (the loop adds)
        self.unsure = False  # whether a push that deleted its ref failed without a clear answer
        # The place outlives the sync: a sync interrupted while waiting leaves it for the
        # next sync in this clone, which must not land the same commits a second time.
        self.mark = clone.git_dir / f"{QUEUED}.{remote}.{branch}"

    def resume(self) -> None:
        """Take up the place a sync interrupted while waiting left in this clone, if any."""
        try:
            place = json.loads(self.mark.read_bytes())
        except (OSError, ValueError):
            return
        if isinstance(place, dict) and place.get("ref", "").startswith(self.remote_prefix):
            self.mine, self.commit = str(place["ref"]), str(place.get("commit"))

    def holds(self, head: str) -> bool:
        """Whether the local branch (at ``head``) still holds the commit waiting in the queue."""
        assert self.commit is not None
        held = self.clone.git("merge-base", "--is-ancestor", self.commit, head, check=False)
        return held.returncode == 0

    def check_urls(self) -> None:
        """Off when pushes go elsewhere than fetches: a fetch would not show what was pushed."""
        remote = re.escape(self.clone.remote)
        said = self.clone.git("config", "--get-regexp",
                              rf"^(remote\.{remote}\.pushurl|url\..*\.pushinsteadof)$",
                              check=False).stdout  # fmt: skip
        if said and self._url("--push") != self._url():
            self.off = "pushes go to another URL than fetches"

    def _url(self, *options: str) -> bytes:
        return self.clone.git("remote", "get-url", *options, self.clone.remote).stdout

    def refspecs(self) -> list[str]:
        """What `fetch` adds to the branch's refspec: every waiting ref (pruned when gone), and
        the record of those carried."""
        if self.off:
            return []
        return [f"+{self.remote_prefix}*:{self.seen_prefix}*",
                f"+{self.record_folder}*:{self.record_seen_folder}*"]  # fmt: skip

    def _record(self) -> tuple[str, list[bytes]]:
        """The record as last fetched: its blob ("" if none) and its lines."""
        found = read_objects(self.clone, [self.record_seen])[0]
        return (found.oid, found.data.splitlines()) if found else ("", [])

    def record(self, carried: Mapping[str, str]) -> Record:
        """The record with ``carried`` added, written; for the push that carries them."""
        old, lines = self._record()
        entries = [f"{ref} {commit}".encode() for ref, commit in carried.items()]
        data = b"".join(line + b"\n" for line in [*entries, *lines][:RECORD_LINES])
        new = self.clone.git("hash-object", "-w", "--stdin", stdin=data).stdout.decode().strip()
        return Record(self.record_ref, old, new)

    def was_carried(self) -> bool:
        """Whether the record says a push landed this sync's commits from its ref."""
        return f"{self.mine} {self.commit}".encode() in self._record()[1]

    def new_name(self) -> str:
        # The time first (milliseconds, fixed width), so that refs sort oldest first.
        host = _UNSAFE.sub("-", socket.gethostname()).strip("-") or "host"
        made = f"{round(time.time() * 1000):013d}"
        return f"{self.remote_prefix}{made}.{host}.{os.getpid()}.{secrets.token_hex(4)}"

    def joined(self, name: str, commit: str) -> None:
        self.mine, self.commit = name, commit
        self.waited, self.seen = 0.0, False
        write_atomic(self.mark, json.dumps({"ref": name, "commit": commit}).encode())

    def leader(self, waiting: dict[str, str]) -> str | None:
        """The waiting ref whose sync should land the queue, if not this one's; None: land.

        Every waiting sync replaying and pushing everyone's commits at once
        would only burn the CPU the one push that wins needs. So the sync
        whose ref is oldest lands, and the others look again later. A ref
        made more than PATIENCE seconds before this sync's own does not lead
        (its sync may have been killed, or its commits may be ones nobody can
        carry); measured from this sync's own ref, not from now, so that in a
        long race the refs do not all stop leading at once. And a sync that
        has waited PATIENCE seconds in all lands itself. Seconds waited,
        not seconds passed: the retry policy's own measure, which a caller's
        ``sleep`` controls.
        """
        if self.off or self.mine not in waiting or self.waited > PATIENCE:
            return None
        mine = _made(self.mine, self.remote_prefix)
        alive = f"{int(mine) - round(PATIENCE * 1000):013d}" if mine else ""
        first = min((ref for ref in waiting if _made(ref, self.remote_prefix) >= alive),
                    default=self.mine)  # fmt: skip
        return None if first == self.mine else first

    def waiting(self) -> dict[str, str]:
        """The refs waiting on the remote, as of the last fetch: remote ref name -> commit."""
        if self.off:
            return {}
        listed = self.clone.git("for-each-ref", "--format=%(objectname) %(refname)",
                                self.seen_prefix).stdout.decode()  # fmt: skip
        return self._named(listed)

    def _named(self, listed: str) -> dict[str, str]:
        # for-each-ref's lines, "<commit> <local ref>": the remote's ref name -> commit
        refs = {}
        for line in listed.splitlines():
            commit, _, seen = line.partition(" ")
            refs[self.remote_prefix + seen.removeprefix(self.seen_prefix)] = commit
        return refs

    def contained(self, head: str) -> dict[str, str]:
        """The waiting refs whose commits ``head`` holds: this clone's, left by a killed sync."""
        if self.off:
            return {}
        listed = self.clone.git("for-each-ref", "--format=%(objectname) %(refname)",
                                f"--merged={head}", self.seen_prefix).stdout.decode()  # fmt: skip
        return self._named(listed)

    def gone(self, waiting: dict[str, str]) -> bool:
        """Whether this sync's ref has left the queue (`sync._settle` ran: HEAD holds its commit).

        Gone is not landed: the caller asks the record (`was_carried`). Off,
        the queue is not fetched: its refs are gone from view, not from the remote.
        """
        return self.mine is not None and not self.off and self.mine not in waiting

    def landed(self) -> None:
        """This sync's ref left the queue, and what became of its commits is settled."""
        self.forget()
        self.mark.unlink(missing_ok=True)

    def forget(self) -> None:
        """This sync's ref is gone, its fate unsettled: the mark stays for the next sync."""
        self.mine = self.commit = None


def _made(ref: str, prefix: str) -> str:
    """The time a ref's name says it was made (see `Queue.new_name`); "" if it says none."""
    made = ref.removeprefix(prefix).partition(".")[0]
    return made if len(made) == 13 and made.isdigit() else ""


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace("/", "%2F")

