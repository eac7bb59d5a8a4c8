"""The test merge doctor runs: the configured driver command, started as git starts it.

Inspecting a driver command cannot tell whether its python finds the package
(a user site hidden by -I, a removed virtualenv, a wrapper script): running
it on a tiny merge does.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

from crdt_merge_driver import git

TIMEOUT = 60.0
# Each side adds one entity to a shared ancestor; a working driver keeps all three.
_ENTITY = b'{"type":"entity","name":"doctor-%s","entityType":"check","observations":[]}'
_INPUTS = {
    "O": _ENTITY % b"base",
    "A": _ENTITY % b"base" + b"\n" + _ENTITY % b"ours",
    "B": _ENTITY % b"base" + b"\n" + _ENTITY % b"theirs",
}
_WANTED = {"doctor-base", "doctor-ours", "doctor-theirs"}


def try_merge(driver: str, *, cwd: Path) -> str | None:
    """Run ``driver`` with ``sh -c`` from ``cwd`` on a tiny merge: None, or how it failed."""
    with tempfile.TemporaryDirectory(prefix="crdt-merge-driver-doctor.") as folder:
        # git's own temp file names: no extension, so the driver reads the format.
        paths = {key: Path(folder, f".merge_file_{key}") for key in _INPUTS}
        for key, content in _INPUTS.items():
            paths[key].write_bytes(content)
        failure = run(expand_placeholders(driver, paths), cwd)
        return failure or check(paths["A"])


def expand_placeholders(driver: str, paths: dict[str, Path]) -> str:
    # As git does: %O %A %B become shell-quoted paths, %P the path in the
    # repository, %L the marker size, %% a %.
    values = {key: shlex.quote(str(path)) for key, path in paths.items()}
    values |= {"P": "memory.jsonl", "L": "7", "%": "%"}
    return re.sub(r"%(.)", lambda found: values.get(found[1], found[0]), driver)


def run(command: str, cwd: Path) -> str | None:
    try:
        ran = subprocess.run(
            ["sh", "-c", command], cwd=cwd, env=git.environment(), stdin=subprocess.DEVNULL,
            capture_output=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"could not be run: {error}"
    if ran.returncode != 0:
        said = ran.stderr.decode(errors="replace").strip().splitlines()
        return f"exit {ran.returncode}" + (f": {said[-1]}" if said else "")
    return None


def check(result: Path) -> str | None:
    try:
        lines = result.read_bytes().splitlines()
    except FileNotFoundError:
        return "exit 0, but %A is gone"
    names = set()
    for line in filter(bytes.strip, lines):
        try:
            record = json.loads(line)
        except ValueError:  # json.JSONDecodeError, or bytes that are not UTF-8
            return "exit 0, but %A is not JSONL"
        if isinstance(record, dict):
            names.add(record.get("name"))
    missing = _WANTED - names
    return f"exit 0, but %A lacks {', '.join(sorted(missing))}" if missing else None
