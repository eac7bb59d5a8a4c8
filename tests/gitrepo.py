"""Small helpers that build real git repositories for tests.

Everything runs the real git and the real driver (``sys.executable -m
crdt_merge_driver``, so tests never depend on PATH). `conftest.py` composes
these into fixtures.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson

CLI = (sys.executable, "-m", "crdt_merge_driver")


def git(repo: Path, *args: str, check: bool = True, input_bytes: bytes | None = None) -> str:
    """Run git in ``repo``; its stdout as text. Fails the test with git's words on error."""
    completed = subprocess.run(
        ["git", *args], cwd=repo, input=input_bytes, capture_output=True, check=False
    )
    if check and completed.returncode != 0:
        raise AssertionError(
            f"git {' '.join(args)} failed ({completed.returncode}):\n"
            f"{completed.stdout.decode(errors='replace')}{completed.stderr.decode(errors='replace')}"
        )
    return completed.stdout.decode("utf-8", "replace")


def git_result(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run git in ``repo`` without checking; for tests about failures and conflicts."""
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``crdt-merge-driver args...`` as a separate process, unchecked."""
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, input=input_bytes, capture_output=True, check=False,
    )


STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def unstamped(text: str) -> str:
    """A command's stderr from a pipe: every line stamped with the time, the stamps taken off."""
    lines = text.splitlines(keepends=True)
    assert all(STAMP.match(line) for line in lines), f"a line without a time stamp:\n{text}"
    return "".join(STAMP.sub("", line, count=1) for line in lines)


def init_bare(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--bare", "--quiet", "--initial-branch=main")
    return path


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    return path


def clone(remote: Path, path: Path) -> Path:
    git(remote.parent, "clone", "--quiet", str(remote), str(path))
    return path


def write(repo: Path, name: str, data: bytes) -> Path:
    target = repo / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def commit(repo: Path, message: str, *names: str) -> str:
    """Stage ``names`` (default: everything) and commit; the new commit's id."""
    git(repo, "add", "--", *(names or (".",)))
    git(repo, "commit", "--quiet", "--allow-empty", "-m", message)
    return head(repo)


def commit_file(repo: Path, name: str, data: bytes, message: str = "") -> str:
    write(repo, name, data)
    return commit(repo, message or f"write {name}", name)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def install(repo: Path) -> None:
    """Register the driver in ``repo`` the way a user would."""
    result = cli("install", "--repo", str(repo))
    assert result.returncode == 0, result.stderr


def conflicted(repo: Path) -> list[str]:
    """Paths git holds as unmerged."""
    return git(repo, "diff", "--name-only", "--diff-filter=U").split()


# --- memory files in the server's exact format --------------------------------


def entity(name: str, entity_type: str = "thing", observations: tuple[str, ...] = (),
           **extra: object) -> bytes:
    value: dict[str, object] = {"type": "entity", "name": name, "entityType": entity_type,
                                "observations": list(observations)}
    value.update(extra)
    return orjson.dumps(value)


def relation(source: str, target: str, relation_type: str = "knows", **extra: object) -> bytes:
    value: dict[str, object] = {"type": "relation", "from": source, "to": target,
                                "relationType": relation_type}
    value.update(extra)
    return orjson.dumps(value)


def jsonl(*lines: bytes) -> bytes:
    """A memory file as the server writes it: lines joined by newline, none at the end."""
    return b"\n".join(lines)


def records(data: bytes) -> list[dict[str, object]]:
    """The records of a JSONL memory file, in order."""
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def graph(data: bytes) -> tuple[dict[str, tuple[str, frozenset[str]]], set[tuple[str, str, str]]]:
    """Entities (name -> type, observations) and relations of a JSONL file; fails on duplicates."""
    entities: dict[str, tuple[str, frozenset[str]]] = {}
    relations: set[tuple[str, str, str]] = set()
    for value in records(data):
        if value.get("type") == "entity":
            name = str(value["name"])
            assert name not in entities, f"entity {name!r} appears twice"
            observations = value["observations"]
            assert isinstance(observations, list)
            entities[name] = (str(value["entityType"]), frozenset(observations))
        elif value.get("type") == "relation":
            key = (str(value["from"]), str(value["relationType"]), str(value["to"]))
            assert key not in relations, f"relation {key!r} appears twice"
            relations.add(key)
    return entities, relations
