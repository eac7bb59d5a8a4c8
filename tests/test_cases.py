"""Golden cases kept as data: ``tests/cases/<name>/{base,ours,theirs,expected}``.

Every folder is merged both ways round (``ours``/``theirs`` and swapped, as a
rebase does) and must give ``expected`` byte for byte. See
``tests/cases/README.md`` for how to add one.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from crdt_merge_driver.core.merge import merge_bytes
from crdt_merge_driver.errors import ExitCode, InputError

CASES = Path(__file__).parent / "cases"

class Case(NamedTuple):
    base: bytes
    ours: bytes
    theirs: bytes
    expected: bytes


def load(name: str) -> Case:
    folder = CASES / name
    return Case(*((folder / part).read_bytes() for part in Case._fields))


def case_names() -> list[str]:
    return sorted(path.name for path in CASES.iterdir() if (path / "expected").is_file())


@pytest.mark.parametrize("name", case_names())
def test_case(name: str) -> None:
    case = load(name)
    assert merge_bytes(case.base, case.ours, case.theirs)[0] == case.expected
    assert merge_bytes(case.base, case.theirs, case.ours)[0] == case.expected


def refused_names() -> list[str]:
    return sorted(path.name for path in CASES.iterdir() if (path / "refused").is_file())


@pytest.mark.parametrize("name", refused_names())
def test_refused_case(name: str, tmp_path: Path) -> None:
    """A case with ``refused`` instead of ``expected``: no merge, one line naming why."""
    folder = CASES / name
    base, ours, theirs = ((folder / part).read_bytes() for part in ("base", "ours", "theirs"))
    reason = (folder / "refused").read_text(encoding="utf-8").strip()
    for a, b in ((ours, theirs), (theirs, ours)):
        with pytest.raises(InputError, match=re.escape(reason)):
            merge_bytes(base, a, b)
    result = run_driver(Case(base, ours, theirs, b""), tmp_path)
    assert result.returncode == ExitCode.CONFLICT, result.stderr
    said = [line for line in result.stderr.splitlines() if reason in line]
    assert len(said) == 1 and "memory.jsonl" in said[0], result.stderr


def test_there_are_cases_for_every_rule() -> None:
    # A folder renamed or a glob gone wrong must not turn the golden cases into zero tests.
    assert len(case_names()) >= 20
    assert refused_names()


# A few cases through the driver as git runs it: a whole process, %A rewritten.


def run_driver(case: Case, folder: Path) -> subprocess.CompletedProcess[str]:
    for part in ("base", "ours", "theirs"):
        (folder / f".merge_file_{part}").write_bytes(getattr(case, part))
    return subprocess.run(
        [sys.executable, "-m", "crdt_merge_driver", "merge",
         ".merge_file_base", ".merge_file_ours", ".merge_file_theirs", "memory.jsonl"],
        cwd=folder, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["crlf", "json-array", "union-damaged", "empty-base"])
def test_case_through_the_driver(name: str, tmp_path: Path) -> None:
    case = load(name)
    result = run_driver(case, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".merge_file_ours").read_bytes() == case.expected


def test_driver_says_what_it_decided_for_a_concurrent_scalar_edit(tmp_path: Path) -> None:
    case = load("scalar-conflict-stamped")
    result = run_driver(case, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".merge_file_ours").read_bytes() == case.expected
    decided = [line for line in result.stderr.splitlines() if "Alice" in line]
    assert len(decided) == 1, result.stderr
    assert "engineer" in decided[0]
