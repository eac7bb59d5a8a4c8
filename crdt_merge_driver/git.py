"""The one module that runs git.

Every call goes through `run`, whose error names the command, its exit code
and what git printed. The child's environment is built on purpose: git
exports ``GIT_DIR``, ``GIT_INDEX_FILE`` and friends to the programs it runs
(a merge driver among them), and those must not leak into a git command
aimed at another repository; messages are in English so they can be read.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from crdt_merge_driver.errors import GitError

# Variables git sets for its children that point a git command at one repository.
_REPOSITORY_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_PREFIX",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)


class Result(NamedTuple):
    returncode: int
    stdout: bytes
    stderr: str


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a git child: ours, minus repository pointers, in English."""
    env = {name: value for name, value in os.environ.items() if name not in _REPOSITORY_VARIABLES}
    env["LC_ALL"] = "C"
    env["LANGUAGE"] = "C"
    env["GIT_TERMINAL_PROMPT"] = "0"
    if extra:
        env.update(extra)
    return env


def run(
    *args: str,
    cwd: Path | None = None,
    check: bool = True,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Result:
    """Run ``git args...``; raises `GitError` on a non-zero exit when ``check``."""
    argv = ["git", *args]
    try:
        completed = subprocess.run(
            argv,
            cwd=cwd,
            input=stdin,
            capture_output=True,
            env=environment(env),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        raise GitError(f"`{_show(argv)}` timed out after {timeout:g}s", returncode=-1) from expired
    except FileNotFoundError as missing:
        raise GitError("git is not installed or not on PATH") from missing
    result = Result(completed.returncode, completed.stdout, completed.stderr.decode("utf-8", "replace"))
    if check and result.returncode != 0:
        raise GitError(
            f"`{_show(argv)}` failed with exit code {result.returncode}: {_first_lines(result.stderr)}",
            returncode=result.returncode,
            stderr=result.stderr,
        )
    return result


def output(*args: str, cwd: Path | None = None) -> str:
    """What ``git args...`` prints, as text without the final newline."""
    return run(*args, cwd=cwd).stdout.decode("utf-8", "replace").rstrip("\n")


def merge_file(
    ours: Path, base: Path, theirs: Path, *, marker_size: int, labels: Sequence[str]
) -> int:
    """git's own text merge of three files into ``ours``; the number of conflicts."""
    label_args = [arg for label in labels for arg in ("-L", label)]
    result = run(
        "merge-file", f"--marker-size={marker_size}", *label_args,
        str(ours), str(base), str(theirs), check=False,
    )  # fmt: skip
    if result.returncode > 127:  # 1..127 count conflicts; an error is 255
        raise GitError(f"git merge-file failed: {_first_lines(result.stderr)}")
    return result.returncode


def _show(argv: Sequence[str]) -> str:
    return " ".join(argv)


def _first_lines(text: str, limit: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    shown = " | ".join(lines[:limit])
    return shown or "(git printed nothing)"
