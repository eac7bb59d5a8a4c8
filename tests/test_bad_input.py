"""Input the driver cannot merge: refused, located, and ``%A`` left alone.

Each bad file is tried as each of the three versions, with the other two
good and different from each other (identical sides are returned as they
are without reading the ancestor). The library raises `InputError` naming
the version and the line; the driver, as git runs it, exits 1 (a conflict:
git keeps all three stages), leaves git's own text merge in ``%A``, and says in one
line which file, which version and which line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from crdt_merge_driver.core.merge import merge_bytes
from crdt_merge_driver.errors import InputError

ALICE = b'{"type":"entity","name":"Alice","entityType":"person","observations":["likes tea"]}'
BOB = b'{"type":"entity","name":"Bob","entityType":"person","observations":["uses vim"]}'
KNOWS = b'{"type":"relation","from":"Alice","to":"Bob","relationType":"knows"}'
CAROL = b'{"type":"entity","name":"Carol","entityType":"project","observations":[]}'
DAVE = b'{"type":"entity","name":"Dave","entityType":"person","observations":["on call"]}'

GOOD = {
    "ancestor": b"\n".join((ALICE, BOB, KNOWS)),
    "ours": b"\n".join((ALICE, BOB, CAROL, KNOWS)),
    "theirs": b"\n".join((ALICE, BOB, DAVE, KNOWS)),
}
SIDES = tuple(GOOD)


class Bad(NamedTuple):
    data: bytes
    line: int


BAD = {
    "not-json": Bad(b"\n".join((ALICE, b"remember: Bob uses vim", KNOWS)), 2),
    "truncated-line": Bad(b"\n".join((ALICE, BOB[:40], KNOWS)), 2),
    "conflict-markers": Bad(
        b"\n".join(
            (
                ALICE,
                b"<<<<<<< ours",
                BOB,
                b"=======",
                BOB.replace(b"uses vim", b"uses emacs"),
                b">>>>>>> theirs",
                KNOWS,
            )
        ),
        2,
    ),
    "not-utf-8": Bad(
        b"\n".join((ALICE, BOB, "Zoë".join(CAROL.decode().split("Carol")).encode("latin-1"))), 3
    ),
    "array-of-numbers": Bad(b"[\n  1,\n  2,\n  3\n]", 2),
    "jsonl-line-is-an-array": Bad(b"\n".join((ALICE, b'["entity", "Bob", "person"]', KNOWS)), 2),
    "entity-without-name": Bad(
        b"\n".join((ALICE, BOB, b'{"type":"entity","entityType":"person","observations":[]}')), 3
    ),
}

CASES = [pytest.param(kind, side, id=f"{kind}-{side}") for kind in BAD for side in SIDES]


def versions(kind: str, side: str) -> dict[str, bytes]:
    files = dict(GOOD)
    files[side] = BAD[kind].data
    return files


def names_only(side: str, message: str) -> None:
    for other in SIDES:
        named = re.search(rf"\b{other}\b", message) is not None
        assert named == (other == side), f"{message!r} should name {side} and only {side}"


@pytest.mark.parametrize(("kind", "side"), CASES)
def test_merge_bytes_names_the_side_and_the_line(kind: str, side: str) -> None:
    files = versions(kind, side)
    with pytest.raises(InputError) as raised:
        merge_bytes(files["ancestor"], files["ours"], files["theirs"])
    message = str(raised.value)
    names_only(side, message)
    assert re.search(rf"\bline {BAD[kind].line}\b", message), message


@pytest.mark.parametrize(("kind", "side"), CASES)
def test_driver_exits_1_and_leaves_gits_text_merge_in_ours(
    kind: str, side: str, tmp_path: Path
) -> None:
    files = versions(kind, side)
    paths = {}
    for version, suffix in zip(SIDES, ("O", "A", "B"), strict=True):
        paths[version] = tmp_path / f".merge_file_{suffix}"
        paths[version].write_bytes(files[version])

    result = subprocess.run(
        [sys.executable, "-m", "crdt_merge_driver", "merge",
         *(str(paths[version]) for version in SIDES), "memory.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    copies = {}
    for version in SIDES:  # the versions as git handed them, for git's own text merge
        copies[version] = tmp_path / f"copy_{version}"
        copies[version].write_bytes(files[version])
    text_merge = subprocess.run(
        ["git", "merge-file", "-p", "-L", "ours", "-L", "base", "-L", "theirs",
         *(str(copies[version]) for version in ("ours", "ancestor", "theirs"))],
        capture_output=True, check=False,
    ).stdout  # fmt: skip
    assert paths["ours"].read_bytes() == text_merge
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "memory.jsonl" in lines[0]
    names_only(side, lines[0])
    assert re.search(rf"\bline {BAD[kind].line}\b", lines[0]), lines[0]
