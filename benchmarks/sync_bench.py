"""Race N writers to one bare remote: `crdt-merge-driver sync` against the loop users write today.

Every writer is a clone of one local bare remote that adds its own entities
(and one relation) to ``memory.jsonl``, in the memory server's exact format.
All writers are started first, wait for a start file, and are released at
the same moment; the wall time runs from the release until the last one
exits. Two methods run in the same process, one after the other, for each N:

* ``sync``: ``python -m crdt_merge_driver sync`` in a clone where install
  was never run (sync supplies the driver itself);
* ``naive``: ``git commit``, then ``for i in $(seq 30); do git pull --rebase
  && git push && break; sleep 0.$RANDOM; done`` with ``memory.jsonl
  merge=union`` in ``.gitattributes``, the loop the older backup scripts
  used.

Each writer also adds an observation to one shared seed entity, in place.
Afterwards the remote's ``memory.jsonl`` is read: lost (a writer's entity,
or its observation on the shared entity, missing), duplicate lines (one
entity name on several lines, which the memory server loads as two
entities) and writers that failed (exit non-zero, i.e. out of attempts).
Attempts per writer come from sync's final line, or from the naive loop's
counter.

Targets (issue 3): 0 lost, always; with 32 writers sync lands all no slower
than the naive loop in the same run; 64 writers in under 15 s. Exit 0 when
they hold, 1 otherwise. Prints a Markdown table for docs/sync.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_WRITERS = (1, 8, 32, 64)
ENTITIES_PER_WRITER = 3
SEED_ENTITIES = 20
NAIVE_TRIES = 30
# The naive loop exactly as users write it; it reports its tries on stdout.
NAIVE_LOOP = f"""
set -u
git add memory.jsonl && git commit --quiet -m "memory from $WRITER"
while [ ! -e "$START" ]; do sleep 0.005; done
for i in $(seq {NAIVE_TRIES}); do
    if git pull --rebase --quiet && git push --quiet; then echo "tries=$i"; exit 0; fi
    sleep 0.$RANDOM
done
echo "tries={NAIVE_TRIES}"
exit 1
"""
# A sync writer imports everything first, then waits, so the race starts with
# every interpreter ready (the naive loop's bash starts ready too).
SYNC_WRITER = """
import os, runpy, sys, time
import crdt_merge_driver.cli, crdt_merge_driver.sync.landing
while not os.path.exists(os.environ["START"]):
    time.sleep(0.005)
sys.argv = ["crdt-merge-driver", "sync"]
runpy.run_module("crdt_merge_driver", run_name="__main__", alter_sys=True)
"""
_ATTEMPTS = re.compile(rb"after (\d+) attempts?")


class Outcome(NamedTuple):
    method: str
    writers: int
    seconds: float
    failed: int
    attempts: list[int]
    duplicates: int
    lost: int


def entity(name: str, kind: str = "thing", observations: Sequence[str] = ()) -> bytes:
    record = {"type": "entity", "name": name, "entityType": kind,
              "observations": list(observations)}  # fmt: skip
    return orjson.dumps(record)


def relation(source: str, target: str) -> bytes:
    return orjson.dumps({"type": "relation", "from": source, "to": target, "relationType": "knows"})


def seed() -> tuple[list[bytes], list[bytes]]:
    names = [f"seed-{i:02d}" for i in range(SEED_ENTITIES)]
    entities = [entity(name, "seed", [f"seeded as {name}"]) for name in names]
    relations = [relation(names[i], names[i + 1]) for i in range(len(names) - 1)]
    return entities, relations


def seen_by(index: int) -> str:
    return f"seen by writer {index}"


def writer_names(index: int) -> list[str]:
    return [f"writer-{index:02d}-{j}" for j in range(ENTITIES_PER_WRITER)]


def memory_of(index: int) -> bytes:
    """What writer ``index``'s memory server saves: the seed, its own entities, one observation.

    Besides its own entities, every writer adds an observation to the first
    seed entity, in place, as the server's add_observations does: the edit
    that concurrent agents make to a shared entity.
    """
    entities, relations = seed()
    entities[0] = entity("seed-00", "seed", ["seeded as seed-00", seen_by(index)])
    own = writer_names(index)
    entities += [entity(name, "note", [f"learned by writer {index}"]) for name in own]
    relations += [relation(own[0], "seed-00")]
    return b"\n".join(entities + relations)  # the server writes no final newline


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), LC_ALL="C",
               GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")  # fmt: skip
    return env


def git(cwd: Path, *args: str, env: dict[str, str]) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def prepare(work: Path, method: str, writers: int, env: dict[str, str]) -> list[Path]:
    remote = work / "remote.git"
    git(work, "init", "--quiet", "--bare", "--initial-branch=main", str(remote), env=env)
    first = work / "seed"
    git(work, "clone", "--quiet", str(remote), str(first), env=env)
    entities, relations = seed()
    (first / "memory.jsonl").write_bytes(b"\n".join(entities + relations))
    if method == "naive":
        (first / ".gitattributes").write_text("memory.jsonl merge=union\n")
    git(first, "add", ".", env=env)
    git(first, "commit", "--quiet", "-m", "seed", env=env)
    git(first, "push", "--quiet", "origin", "HEAD:main", env=env)
    clones = []
    for index in range(writers):
        clone = work / f"writer-{index:02d}"
        git(work, "clone", "--quiet", str(remote), str(clone), env=env)
        (clone / "memory.jsonl").write_bytes(memory_of(index))
        clones.append(clone)
    return clones


def race(method: str, writers: int, scratch: Path) -> Outcome:
    work = Path(tempfile.mkdtemp(prefix=f"{method}-{writers}-", dir=scratch))
    home = work / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Bench\n\temail = bench@example.invalid\n[init]\n\tdefaultBranch = main\n"
    )
    env = environment(home)
    clones = prepare(work, method, writers, env)
    start = work / "start"
    processes = []
    for index, clone in enumerate(clones):
        child_env = {**env, "START": str(start), "WRITER": str(index)}
        argv = (["bash", "-c", NAIVE_LOOP] if method == "naive"
                else [sys.executable, "-c", SYNC_WRITER])  # fmt: skip
        process = subprocess.Popen(
            argv, cwd=clone, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        processes.append(process)
    # The clones' writes reach the disk now, not in the middle of the race (the
    # kernel flushes dirty pages some 30 s later), and every writer has started.
    os.sync()
    time.sleep(1.0 + writers * 0.03)
    began = time.monotonic()
    start.touch()
    outputs = [process.communicate() for process in processes]
    seconds = time.monotonic() - began
    failed = sum(process.returncode != 0 for process in processes)
    attempts = [_attempts(method, out, err) for out, err in outputs]
    final = subprocess.run(["git", "show", "main:memory.jsonl"], cwd=work / "remote.git",
                           env=env, capture_output=True, check=True).stdout  # fmt: skip
    duplicates, lost = _count(final, writers)
    shutil.rmtree(work)
    return Outcome(method, writers, seconds, failed, attempts, duplicates, lost)


def _attempts(method: str, out: bytes, err: bytes) -> int:
    found = re.search(rb"tries=(\d+)", out) if method == "naive" else _ATTEMPTS.search(err)
    return int(found.group(1)) if found else 0


def _count(data: bytes, writers: int) -> tuple[int, int]:
    """Duplicate entity lines, and entities or observations of some writer missing."""
    records = [record for line in data.splitlines() if line.strip()
               for record in [_load(line)] if record.get("type") == "entity"]  # fmt: skip
    names = Counter(str(record["name"]) for record in records)
    seen = {str(observation) for record in records if record["name"] == "seed-00"
            for observation in _list(record.get("observations"))}  # fmt: skip
    expected = {f"seed-{i:02d}" for i in range(SEED_ENTITIES)}
    expected |= {name for index in range(writers) for name in writer_names(index)}
    duplicates = sum(count - 1 for count in names.values() if count > 1)
    lost = len(expected - names.keys())
    lost += sum(seen_by(index) not in seen for index in range(writers))
    return duplicates, lost


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _load(line: bytes) -> dict[str, object]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def combine(runs: Sequence[Outcome]) -> Outcome:
    """Repeated runs of one method and N: median wall time, everything else pooled."""
    first = runs[0]
    return Outcome(
        first.method, first.writers, statistics.median(run.seconds for run in runs),
        sum(run.failed for run in runs), [n for run in runs for n in run.attempts],
        sum(run.duplicates for run in runs), sum(run.lost for run in runs),
    )  # fmt: skip


def table(results: Sequence[Sequence[Outcome]]) -> str:
    """One row per method and N; with repeats, the median wall time and its range."""
    rows = [
        "| writers | method | wall time (s) | failed writers | attempts median | attempts max "
        "| duplicate lines | lost |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for runs in results:
        outcome = combine(runs)
        wall = f"{outcome.seconds:.2f}"
        if len(runs) > 1:
            wall += f" ({min(r.seconds for r in runs):.1f}-{max(r.seconds for r in runs):.1f})"
        landed = [n for n in outcome.attempts if n] or [0]
        rows.append(
            f"| {outcome.writers} | {outcome.method} | {wall} | {outcome.failed} "
            f"| {statistics.median(landed):g} | {max(landed)} | {outcome.duplicates} "
            f"| {outcome.lost} |"
        )
    return "\n".join(rows)


def verdicts(results: Sequence[Sequence[Outcome]]) -> list[str]:
    problems = []
    by = {(runs[0].method, runs[0].writers): combine(runs) for runs in results}
    for outcome in by.values():
        if outcome.method == "sync" and (outcome.lost or outcome.failed or outcome.duplicates):
            problems.append(
                f"sync with {outcome.writers} writers: lost {outcome.lost}, "
                f"failed {outcome.failed}, duplicates {outcome.duplicates}"
            )
    if ("sync", 32) in by and ("naive", 32) in by:
        ours, theirs = by["sync", 32], by["naive", 32]
        if ours.seconds > theirs.seconds:
            problems.append(f"32 writers: sync {ours.seconds:.2f}s > naive {theirs.seconds:.2f}s")
    if ("sync", 64) in by and by["sync", 64].seconds >= 15:
        problems.append(f"64 writers: sync took {by['sync', 64].seconds:.2f}s (target < 15s)")
    return problems


def header() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    version = subprocess.run(["git", "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()  # fmt: skip
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit or '?'}, "
            f"{os.cpu_count()} CPUs, {version}, Python {sys.version.split()[0]}")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--writers", type=int, nargs="+", default=list(DEFAULT_WRITERS))
    parser.add_argument("--methods", nargs="+", default=["naive", "sync"],
                        choices=["naive", "sync"])  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (median wall time)")
    parser.add_argument("--scratch", type=Path, help="folder for the clones (default: a temp one)")
    args = parser.parse_args(argv)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="sync-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    results: list[list[Outcome]] = []
    try:
        for writers in args.writers:
            runs: dict[str, list[Outcome]] = {method: [] for method in args.methods}
            for round_number in range(args.repeat):
                # Alternate, and swap who goes first each round, so drift (and whatever
                # the race before leaves behind) falls on both alike.
                order = args.methods if round_number % 2 == 0 else args.methods[::-1]
                for method in order:
                    outcome = race(method, writers, scratch)
                    print(table([[outcome]]).splitlines()[-1], file=sys.stderr, flush=True)
                    runs[method].append(outcome)
            results += runs.values()
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(header())
    print()
    print(table(results))
    problems = verdicts(results)
    for problem in problems:
        print(f"target missed: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
