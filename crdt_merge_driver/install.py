"""Register the driver with git, and remove it exactly.

`install` owns three config keys (``merge.<name>.name``, ``.driver``,
``.recursive``) and one marked block of attribute lines; `uninstall`
removes exactly those, so a repository goes back to the same bytes.
`doctor` (doctor.py) checks that what install wrote works.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from crdt_merge_driver import PROGRAM, git
from crdt_merge_driver.atomic import write_atomic
from crdt_merge_driver.errors import CrdtError

DEFAULT_PATTERNS = ("memory*.json", "memory*.jsonl", "unified-memory.json")
DESCRIPTION = "CRDT merge of AI-agent memory files (crdt-merge-driver)"
# cli.DRIVER_NAME, repeated so that the library does not import the CLI.
DEFAULT_NAME = "crdt-memory"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DRIVER_FLAGS = ("-E", "-P")


class InstallError(CrdtError):
    """A folder, driver name or pattern that install cannot work with."""


class _Target(NamedTuple):
    """Where one install goes: a config scope and the attributes file beside it."""

    scope: str
    cwd: Path
    config_label: str
    attributes: Path


class _Block(NamedTuple):
    """Our marked lines in an attributes file, as byte offsets."""

    start: int
    end: int
    created: bool


def driver_command() -> str:
    # The absolute interpreter, so that cron, CI and GUI clients without the
    # virtualenv on PATH still find the package. git runs the driver from the
    # top of the work tree, and a plain `python -m` puts that folder first on
    # sys.path, so a file committed to the memory repository (say, orjson.py)
    # would run as code. -P keeps it off sys.path; -E ignores PYTHONPATH and
    # the like, so the driver imports the same modules from a shell, cron or a
    # GUI client (site still honours PYTHONUSERBASE). Not -I: it also hides
    # the user site, where `pip install --user` puts the package.
    python = shlex.quote(sys.executable)
    # "--": the path in the repository (%P) may start with "-".
    flags = " ".join(DRIVER_FLAGS)
    return f"{python} {flags} -m crdt_merge_driver merge --marker-size %L -- %O %A %B %P"


def install(*, repo: Path, scope_global: bool, patterns: list[str] | None, name: str) -> list[str]:
    check_name(name)
    wanted = choose_patterns(patterns)
    target = locate(repo, scope_global=scope_global)
    changed = write_driver_config(target, name)
    status = add_attributes(target.attributes, name, wanted)
    if not changed and status == "unchanged":
        return [
            f"already installed: merge.{name}.* in {target.config_label} and "
            f"the {PROGRAM} lines in {target.attributes}; nothing changed"
        ]
    lines = [f"set {', '.join(changed)} in {target.config_label}"] if changed else []
    if status != "unchanged":
        attached = ", ".join(f"{pattern} merge={name}" for pattern in wanted)
        lines.append(f"{status} {target.attributes}: {attached}")
        if not scope_global:
            lines.append(
                f"commit {target.attributes.name} so other clones attach the driver too; "
                f"each clone still runs `{PROGRAM} install` once (git config is not shared)"
            )
    return lines


def uninstall(*, repo: Path, scope_global: bool, name: str) -> list[str]:
    check_name(name)
    target = locate(repo, scope_global=scope_global)
    removed = remove_driver_config(target, name)
    status = remove_attributes(target.attributes, name)
    lines = [f"removed {', '.join(removed)} from {target.config_label}"] if removed else []
    if status == "removed":
        lines.append(f"removed the {PROGRAM} lines from {target.attributes}")
    elif status == "deleted":
        lines.append(f"deleted {target.attributes} (install had created it)")
    if not lines:
        lines.append(
            f"nothing to remove: merge.{name} is not installed in "
            f"{target.config_label} or {target.attributes}"
        )
    return lines


# --- where things go ----------------------------------------------------------


def check_name(name: str) -> None:
    # The name ends up in a config key and in `merge=<name>`, where a space would split it.
    if not _NAME.fullmatch(name):
        raise InstallError(f"driver name {name!r} must be letters, digits, '.', '_' or '-'")


def choose_patterns(patterns: Sequence[str] | None) -> list[str]:
    chosen = list(dict.fromkeys(patterns or DEFAULT_PATTERNS))
    for pattern in chosen:
        # One attribute line is `<pattern> merge=<name>`: a space would end the
        # pattern, `#` starts a comment and `!` (negation) is refused by git.
        if not pattern or re.search(r"\s", pattern) or pattern[0] in '#!"':
            raise InstallError(
                f"pattern {pattern!r} cannot be written as one .gitattributes line "
                "(no spaces; it may not start with #, ! or a quote)"
            )
    return chosen


def find_toplevel(repo: Path) -> Path:
    return find_folders(repo)[0]


def find_folders(repo: Path) -> tuple[Path, Path, Path]:
    """The top of ``repo``'s work tree, its git folder and its common git folder.

    `InstallError` if ``repo`` is not a folder inside a work tree.
    """
    check_folder(repo)
    found = git.locate(repo)
    if found is None:
        raise InstallError(
            f"{repo.resolve()} is not inside a git work tree "
            "(run `git init` there, or pass --repo with a repository's folder)"
        )
    return found


def check_folder(repo: Path) -> None:
    # git would fail with a misleading "git is not installed" if cwd is missing.
    if not repo.is_dir():
        raise InstallError(f"{repo} is not a folder")


def locate(repo: Path, *, scope_global: bool) -> _Target:
    if scope_global:
        check_folder(repo)
        return _Target("--global", repo, "the global git config", find_global_attributes(repo))
    top = find_toplevel(repo)
    # `--local` writes the common config, shared by every linked worktree.
    config = git.find_common_dir(top) / "config"
    return _Target("--local", top, str(config), top / ".gitattributes")


def find_global_attributes(cwd: Path) -> Path:
    for scope in ("--global", "--system"):
        configured = git.read_config("core.attributesFile", cwd=cwd, scope=scope, path=True)
        if configured:
            return Path(configured)
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "git" / "attributes"


# --- git config ---------------------------------------------------------------


def driver_config(name: str) -> dict[str, str]:
    # recursive = the driver itself: the virtual ancestor of a criss-cross merge
    # is built by the driver too. git does the same when the key is unset, but
    # an explicit local value also overrides a global or system one.
    return {
        f"merge.{name}.name": DESCRIPTION,
        f"merge.{name}.driver": driver_command(),
        f"merge.{name}.recursive": name,
    }


def write_driver_config(target: _Target, name: str) -> list[str]:
    changed = []
    for key, value in driver_config(name).items():
        if git.read_config(key, cwd=target.cwd, scope=target.scope) != value:
            git.write_config(key, value, cwd=target.cwd, scope=target.scope)
            changed.append(key)
    return changed


def remove_driver_config(target: _Target, name: str) -> list[str]:
    removed = []
    for key in driver_config(name):
        if git.read_config(key, cwd=target.cwd, scope=target.scope) is not None:
            git.unset_config(key, cwd=target.cwd, scope=target.scope)
            removed.append(key)
    return removed


# --- the attributes file --------------------------------------------------------


def marker(name: str, *, created: bool) -> bytes:
    text = f"# {PROGRAM}: the lines below attach merge={name}; `{PROGRAM} uninstall` removes them"
    if created:
        text += " (and this file, which install created)"
    return text.encode()


def render_block(
    name: str, patterns: Sequence[str], *, created: bool, final_newline: bool
) -> bytes:
    lines = [marker(name, created=created)]
    lines += [f"{pattern} merge={name}".encode() for pattern in patterns]
    return b"\n".join(lines) + (b"\n" if final_newline else b"")


def split_lines(content: bytes) -> list[bytes]:
    # bytes.splitlines would also split on \r, \f and \x1c, which git does not.
    return re.findall(rb"[^\n]*\n|[^\n]+\Z", content)


def find_block(content: bytes, name: str) -> _Block | None:
    markers = {marker(name, created=False): False, marker(name, created=True): True}
    owned = re.compile(rb"\S+ merge=" + re.escape(name.encode()))
    lines = split_lines(content)
    offset = 0
    for index, line in enumerate(lines):
        created = markers.get(line.rstrip(b"\r\n"))
        if created is not None:
            end = offset + len(line)
            for following in lines[index + 1 :]:
                if not owned.fullmatch(following.rstrip(b"\r\n")):
                    break
                end += len(following)
            return _Block(offset, end, created)
        offset += len(line)
    return None


def add_attributes(path: Path, name: str, patterns: Sequence[str]) -> str:
    """Add or update our block in ``path``: "added", "updated" or "unchanged"."""
    exists = path.exists()
    content = path.read_bytes() if exists else b""
    block = find_block(content, name)
    if block is not None:
        old = content[block.start : block.end]
        new_block = render_block(
            name, patterns, created=block.created, final_newline=old.endswith(b"\n")
        )
        if old == new_block:
            return "unchanged"
        updated = content[: block.start] + new_block + content[block.end :]
        status = "updated"
    elif content and not content.endswith(b"\n"):
        # Keep the file's missing final newline: the one we add goes before
        # our block, and uninstall takes it away again.
        updated = content + b"\n" + render_block(name, patterns, created=False, final_newline=False)
        status = "added to"
    else:
        updated = content + render_block(name, patterns, created=not exists, final_newline=True)
        status = "added to" if exists else "created"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, updated)
    return status


def remove_attributes(path: Path, name: str) -> str:
    """Remove our block(s) from ``path``: "removed", "deleted" or "unchanged"."""
    if not path.exists():
        return "unchanged"
    content = path.read_bytes()
    remaining = content
    created = False
    while (block := find_block(remaining, name)) is not None:
        start = block.start
        if start and not remaining[start : block.end].endswith(b"\n"):
            start -= 1  # the newline install put before a block at the very end
        remaining = remaining[:start] + remaining[block.end :]
        created = created or block.created
    if remaining == content:
        return "unchanged"
    if created and not remaining:
        path.unlink()
        return "deleted"
    write_atomic(path, remaining)
    return "removed"
