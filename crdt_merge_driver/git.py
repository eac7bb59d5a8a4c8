"""The one module that runs git.

Every call goes through `run`, whose error names the command, its exit code
and what git printed. The child's environment is built on purpose: git
exports ``GIT_DIR``, ``GIT_INDEX_FILE`` and friends to the programs it runs
(a merge driver among them), and those must not leak into a git command
aimed at another repository; messages are in English so they can be read.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from crdt_merge_driver.atomic import StrPath
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
# What rev-parse says in a folder that is not in a repository, or in a bare one.
_OUTSIDE_WORK_TREE = re.compile(r"not a git repository|must be run in a work tree")


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
    result = Result(
        completed.returncode, completed.stdout, completed.stderr.decode("utf-8", "replace")
    )
    if check:
        _check(args, result)
    return result


def output(*args: str, cwd: Path | None = None) -> str:
    """What ``git args...`` prints, as text without the final newline."""
    return run(*args, cwd=cwd).stdout.decode("utf-8", "replace").rstrip("\n")


def merge_file(
    ours: StrPath, base: StrPath, theirs: StrPath, *, marker_size: int, labels: Sequence[str]
) -> int:
    """git's own text merge of three files into ``ours``; the number of conflicts."""
    label_args = [arg for label in labels for arg in ("-L", label)]
    result = run(
        "merge-file",
        f"--marker-size={marker_size}",
        *label_args,
        os.fspath(ours),
        os.fspath(base),
        os.fspath(theirs),
        check=False,
    )
    if result.returncode > 127:  # 1..127 count conflicts; an error is 255
        raise GitError(f"git merge-file failed: {_first_lines(result.stderr)}")
    return result.returncode


# --- install, uninstall, doctor -------------------------------------------------


def find_toplevel(cwd: Path) -> Path | None:
    """The top of the work tree containing ``cwd``; None outside one (or in a bare repo)."""
    args = ("rev-parse", "--show-toplevel")
    result = run(*args, cwd=cwd, check=False)
    if result.returncode != 0 and _OUTSIDE_WORK_TREE.search(result.stderr):
        return None
    _check(args, result)
    return Path(result.stdout.decode("utf-8", "surrogateescape").rstrip("\n"))


def locate(cwd: Path) -> tuple[Path, Path, Path] | None:
    """The work tree's top, its git folder and the common git folder, in one git process.

    None outside a work tree (or in a bare repository), as `find_toplevel`.
    """
    args = ("rev-parse", "--show-toplevel", "--absolute-git-dir",
            "--path-format=absolute", "--git-common-dir")  # fmt: skip
    result = run(*args, cwd=cwd, check=False)
    if result.returncode != 0 and _OUTSIDE_WORK_TREE.search(result.stderr):
        return None
    _check(args, result)
    top, git_dir, common = result.stdout.decode("utf-8", "surrogateescape").splitlines()
    return Path(top), Path(git_dir), Path(common)


def find_common_dir(cwd: Path) -> Path:
    """The repository's common git folder, shared by all its worktrees (holds ``config``)."""
    return Path(output("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=cwd))


def read_config(key: str, *, cwd: Path, scope: str | None = None, path: bool = False) -> str | None:
    """The value of ``key`` in ``scope`` (``--local``...), else the effective one; None if unset."""
    args = ("config", *([scope] if scope else []), *(["--type=path"] if path else []), "--get", key)
    result = run(*args, cwd=cwd, check=False)
    if result.returncode == 1:  # git's "key not set"; a broken config file exits 128
        return None
    _check(args, result)
    return result.stdout.decode("utf-8", "surrogateescape").rstrip("\n")


def write_config(key: str, value: str, *, cwd: Path, scope: str) -> None:
    run("config", scope, key, value, cwd=cwd)


def unset_config(key: str, *, cwd: Path, scope: str) -> None:
    """Remove ``key``; git also drops its section header once the section is empty."""
    args = ("config", scope, "--unset-all", key)
    result = run(*args, cwd=cwd, check=False)
    if result.returncode != 5:  # 5: the key was not there, which is what we want
        _check(args, result)


def list_files(cwd: Path, *options: str) -> list[str]:
    """Tracked paths (or what ``options`` of ``git ls-files`` pick), from the work tree's top."""
    data = run("ls-files", "-z", "--full-name", *options, cwd=cwd).stdout
    return [name.decode("utf-8", "surrogateescape") for name in data.split(b"\0") if name]


def check_attribute(
    attribute: str, paths: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``attribute``'s value for each path (``unspecified``, ``set``, ``unset`` or a value)."""
    if not paths:
        return {}
    feed = b"".join(path.encode("utf-8", "surrogateescape") + b"\0" for path in paths)
    data = run("check-attr", "-z", "--stdin", attribute, cwd=cwd, stdin=feed, env=env).stdout
    fields = [field.decode("utf-8", "surrogateescape") for field in data.split(b"\0")]
    # -z output is path NUL attribute NUL value NUL, repeated.
    return {fields[i]: fields[i + 2] for i in range(0, len(fields) - 2, 3)}


def _check(args: Sequence[str], result: Result) -> None:
    """Raise as `run` would have with ``check``, for calls that accept some failures first."""
    if result.returncode != 0:
        raise GitError(
            f"`{_show(['git', *args])}` failed with exit code {result.returncode}: "
            f"{_first_lines(result.stderr)}",
            returncode=result.returncode,
            stderr=result.stderr,
        )


def _show(argv: Sequence[str]) -> str:
    return " ".join(argv)


def _first_lines(text: str, limit: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    shown = " | ".join(lines[:limit])
    return shown or "(git printed nothing)"
