"""``doctor``: does what install wrote work, here, as git will run it?

It runs the configured driver on a test merge, as git would, and looks for
the failure git never reports: an attribute that names a driver this clone
has not configured makes git fall back to its text merge, and the memory
file gets conflict markers.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from crdt_merge_driver import KILL_SWITCH, PROGRAM, early, git, probe
from crdt_merge_driver.install import (
    DEFAULT_NAME,
    DEFAULT_PATTERNS,
    DRIVER_FLAGS,
    check_name,
    find_toplevel,
)

# The interpreter options doctor accepts before `-m crdt_merge_driver`: today's,
# -I (what earlier versions wrote; it hides the user site) and none.
_KNOWN_FLAGS: tuple[tuple[str, ...], ...] = (DRIVER_FLAGS, ("-I",), ())
_FORGE_NOTE = (
    "note: web merge buttons (GitHub, GitLab, Gitea...) and libgit2-based clients do not "
    "run custom merge drivers; merge memory files with command-line git"
)


class Diagnosis(NamedTuple):
    healthy: bool
    lines: list[str]


def doctor(*, repo: Path, name: str) -> Diagnosis:
    check_name(name)
    top = find_toplevel(repo)
    fix = f"{PROGRAM} install --repo {shlex.quote(str(top))}"
    if name != DEFAULT_NAME:
        fix += f" --name {name}"
    driver = git.read_config(f"merge.{name}.driver", cwd=top)
    lines = [*diagnose_config(top, name, driver, fix), *diagnose_attributes(top, name, driver, fix)]
    lines += early.diagnose(top)  # an install before the first pull
    lines.append(_FORGE_NOTE)
    return Diagnosis(healthy=not any(line.startswith("problem:") for line in lines), lines=lines)


def diagnose_config(top: Path, name: str, driver: str | None, fix: str) -> list[str]:
    if driver is None:
        return [
            f"problem: merge.{name}.driver is not set, so git does not know the driver "
            f"`{name}` and merges memory files as text; run `{fix}`"
        ]
    lines = [
        f"ok: merge.{name}.driver is set: {driver}",
        diagnose_driver(top, name, driver, fix),
    ]
    recursive = git.read_config(f"merge.{name}.recursive", cwd=top)
    if recursive in (None, name):
        lines.append(
            f"ok: merge.{name}.recursive is {recursive or 'unset'}: criss-cross merges "
            "build their virtual ancestor with the driver too"
        )
    else:
        lines.append(
            f"problem: merge.{name}.recursive is `{recursive}`: criss-cross merges build their "
            f"virtual ancestor with it, not with the driver; run `{fix}`"
        )
    return lines


def diagnose_driver(top: Path, name: str, driver: str, fix: str) -> str:
    failure = probe.try_merge(driver, cwd=top)
    if failure is None:
        return (
            f"ok: merge.{name}.driver merged a test memory file (run with `sh -c` from {top}, "
            "as git runs it)"
        )
    return (
        f"problem: merge.{name}.driver `{driver}` failed a test merge run as git runs it "
        f"({failure}); {explain_failure(driver, failure, fix)}"
    )


def parse_driver(driver: str) -> tuple[str, tuple[str, ...]] | None:
    """The interpreter and its options in `<python> [options] -m crdt_merge_driver ...`."""
    try:
        argv = shlex.split(driver)
    except ValueError:
        return None
    for flags in _KNOWN_FLAGS:
        if argv[1 : len(flags) + 3] == [*flags, "-m", "crdt_merge_driver"]:
            return argv[0], flags
    return None


def explain_failure(driver: str, failure: str, fix: str) -> str:
    """What to do about a failed test merge, from what the command names."""
    parsed = parse_driver(driver)
    if parsed is None:
        return (
            f"it does not run `<python> {' '.join(DRIVER_FLAGS)} -m crdt_merge_driver`; "
            f"run `{fix}` to replace it"
        )
    interpreter, flags = parsed
    python = shutil.which(interpreter)
    if python is None:
        return (
            f"the interpreter {interpreter} does not exist (a removed virtualenv?); "
            f"run `{fix}` with the python that has {PROGRAM}"
        )
    if os.environ.get(KILL_SWITCH, "") not in ("", "0"):
        return f"unset {KILL_SWITCH} to merge memory files with the driver again"
    if "No module named" not in failure:
        return f"run `{fix}` with a working python"
    if flags == ("-I",):
        return (
            f"-I hides the user site, where `pip install --user` puts {PROGRAM}; "
            f"run `{fix}` to rewrite it with {' '.join(DRIVER_FLAGS)}"
        )
    return (
        f"{python} cannot import crdt_merge_driver: install {PROGRAM} into it "
        f"(docs/install.md), or run `{fix}` from the environment that has it"
    )


def is_memory_file(path: str) -> bool:
    # A .gitattributes pattern without a slash matches the basename in any folder.
    basename = PurePosixPath(path).name
    return any(fnmatch.fnmatchcase(basename, pattern) for pattern in DEFAULT_PATTERNS)


def diagnose_attributes(top: Path, name: str, driver: str | None, fix: str) -> list[str]:
    files = git.list_files(top)
    merge = git.check_attribute("merge", files, cwd=top)
    named = [path for path in files if merge.get(path) == name]
    if named and driver is None:
        return [
            f"problem: {describe(named)} ha{'s' if len(named) == 1 else 've'} merge={name} "
            f"in .gitattributes, but this clone has no merge.{name}.driver: git silently "
            f"falls back to its text merge and writes conflict markers; run `{fix}`"
        ]
    memory = [path for path in files if is_memory_file(path)]
    detached = [path for path in memory if merge.get(path) != name]
    lines = [
        f"problem: {path} is a memory file but {_attribute(merge.get(path), name)}; run "
        f"`{fix}` and check that no later .gitattributes line overrides it "
        f"(`git check-attr merge -- {path}`)"
        for path in detached
    ]
    if named:
        lines.append(f"ok: {describe(named)} use{'s' if len(named) == 1 else ''} merge={name}")
    elif not memory:
        lines.append(diagnose_new_file(top, name, fix))
    return lines


def diagnose_new_file(top: Path, name: str, fix: str) -> str:
    # check-attr answers for paths that do not exist yet.
    probe = "memory.jsonl"
    value = git.check_attribute("merge", [probe], cwd=top).get(probe)
    if value == name:
        return f"ok: no memory files tracked yet; a new {probe} would use merge={name}"
    return (
        f"problem: no memory files tracked yet, and a new {probe} would have "
        f"{_attribute(value, name).removeprefix('has ')}; run `{fix}`"
    )


def _attribute(value: str | None, name: str) -> str:
    """A path's merge attribute and what git does with it, in words, not git's own."""
    if value in (None, "unspecified"):
        return f"has no merge attribute, not merge={name}: git merges it as text"
    if value == "unset":
        return (f"has -merge, not merge={name}: git keeps this side's version and reports a "
                "conflict")  # fmt: skip
    if value == "set":
        return f"has merge (git's own text merge), not merge={name}: git merges it as text"
    return f"has merge={value}, not merge={name}: git merges it with that driver"


def describe(paths: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    more = len(paths) - limit
    return f"{shown} and {more} more" if more > 0 else shown
