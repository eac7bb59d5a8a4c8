"""How fast `watch` spreads one machine's tool call to every other machine, and what idling costs.

N machines (default 3 and 8) share one local bare remote. Each is a clone,
a live file in a folder of its own, the real memory server over it (driven
over stdio, as an agent's client would) and ``python -m crdt_merge_driver
watch --interval 1`` as a process of its own. Each round, one machine (in
turn) creates an entity through its server; the time until that entity is
in every other machine's live file is that round's propagation. Then, with
nothing changing anywhere, the CPU one watcher uses (itself and the git it
waits for, from /proc) over --idle seconds. Last, every live file must hold
every entity exactly once: 0 lost.

Prints a Markdown table for docs/watch.md; exit 0 when every target holds
(median under 5 s for 3 machines, under 10 s for 8; idle under 5% of one
core; nothing lost), 1 otherwise.

    .venv/bin/python benchmarks/watch_bench.py [--machines 3 8] [--rounds 6] [--idle 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' client for the real memory server

from tests.memory_server import MemoryServer  # noqa: E402

TARGETS = {3: 5.0, 8: 10.0}  # median propagation, seconds, by machines
IDLE_TARGET = 5.0  # percent of one core
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Machine:
    name: str
    live: Path
    clone: Path
    server: MemoryServer
    watcher: subprocess.Popen[bytes]


def git(*args: str, cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def sealed_env(home: Path) -> dict[str, str]:
    """The user's environment, but a HOME and git config of the benchmark's own."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / ".gitconfig"
    config.write_text("[user]\n\tname = Bench\n\temail = bench@example.invalid\n"
                      "[init]\n\tdefaultBranch = main\n")  # fmt: skip
    mine = ("MEMORY_FILE_PATH", "MEMORY_FILE", "REPO_DIR")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("GIT_") and name not in mine}  # fmt: skip
    env.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")
    return env


@contextmanager
def machines(
    work: Path, count: int, *, interval: float, debounce: float
) -> Iterator[list[Machine]]:
    env = sealed_env(work / "home")
    remote = work / "remote.git"
    remote.mkdir()
    git("init", "--quiet", "--bare", "--initial-branch=main", cwd=remote, env=env)
    with ExitStack() as stack:
        made = []
        for index in range(count):
            name = f"m{index}"
            folder = work / f"{name}-live"
            folder.mkdir()
            clone = work / f"{name}-clone"
            git("clone", "--quiet", str(remote), str(clone), cwd=work, env=env)
            live = folder / "memory.jsonl"
            server = stack.enter_context(MemoryServer(live))
            log = stack.enter_context((work / f"{name}.log").open("wb"))
            watcher = subprocess.Popen(
                [sys.executable, "-m", "crdt_merge_driver", "watch", "--memory", str(live),
                 "--repo", str(clone), "--interval", str(interval), "--debounce", str(debounce)],
                cwd=ROOT, env={**env, "CRDT_MERGE_DRIVER_HOST": name},
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
            stack.callback(stop, watcher)
            made.append(Machine(name, live, clone, server, watcher))
        yield made


def stop(watcher: subprocess.Popen[bytes]) -> None:
    watcher.terminate()
    try:
        watcher.wait(timeout=30)
    except subprocess.TimeoutExpired:
        watcher.kill()
        watcher.wait()


def names_in(live: Path) -> list[str]:
    try:
        data = live.read_bytes()
    except FileNotFoundError:
        return []
    return [str(value["name"]) for line in data.split(b"\n") if line.strip()
            if (value := orjson.loads(line)).get("type") == "entity"]  # fmt: skip


def propagate(group: Sequence[Machine], name: str, writer: Machine, timeout: float) -> float:
    """Create ``name`` on ``writer``; seconds until every other live file holds it."""
    began = time.monotonic()
    writer.server.create_entities([{"name": name, "entityType": "bench", "observations": []}])
    waiting = [one for one in group if one is not writer]
    while waiting:
        waiting = [one for one in waiting if name not in names_in(one.live)]
        if time.monotonic() - began > timeout:
            raise SystemExit(f"{name} did not reach {[one.name for one in waiting]} "
                             f"in {timeout:g}s")  # fmt: skip
        time.sleep(0.02)
    return time.monotonic() - began


def cpu_seconds(pid: int) -> float:
    """User and system time of ``pid`` and of the children it has waited for (git)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / TICKS


def settle(group: Sequence[Machine], quiet: float = 2.0, timeout: float = 60.0) -> None:
    """Wait until no live file has changed for ``quiet`` seconds."""
    def state() -> list[tuple[int, int]]:
        return [(s.st_mtime_ns, s.st_ino) for s in (one.live.stat() for one in group)]

    last, since, began = state(), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - began < timeout:
        time.sleep(0.1)
        if (now := state()) != last:
            last, since = now, time.monotonic()


def bench(
    count: int, *, rounds: int, idle: float, interval: float, debounce: float
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as folder, \
            machines(Path(folder), count, interval=interval, debounce=debounce) as group:
        # A first entity, so that every machine has a live file and has synced once.
        propagate(group, "seed", group[0], timeout=120)
        settle(group)
        times = []
        for number in range(rounds):
            times.append(propagate(group, f"round-{number}", group[number % count], timeout=120))
            settle(group, quiet=0.5)
        settle(group)
        pid = group[-1].watcher.pid
        before = cpu_seconds(pid)
        time.sleep(idle)  # the measurement: nothing happens, on purpose
        used = (cpu_seconds(pid) - before) / idle * 100
        wanted = {"seed", *(f"round-{number}" for number in range(rounds))}
        lost = 0
        for one in group:
            names = names_in(one.live)
            assert len(names) == len(set(names)), f"{one.name}: an entity twice: {names}"
            lost += len(wanted - set(names))
        return {"median": statistics.median(times), "max": max(times), "idle": used,
                "lost": float(lost)}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--debounce", type=float, default=1.0)
    args = parser.parse_args(argv)
    print(f"watch --interval {args.interval:g} --debounce {args.debounce:g}, {args.rounds} "
          f"rounds, {os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d}\n")  # fmt: skip
    print("| machines | propagation median | propagation max | idle watcher CPU | lost |")
    print("|---:|---:|---:|---:|---:|")
    ok = True
    for count in args.machines:
        found = bench(count, rounds=args.rounds, idle=args.idle, interval=args.interval,
                      debounce=args.debounce)  # fmt: skip
        print(f"| {count} | {found['median']:.2f} s | {found['max']:.2f} s | "
              f"{found['idle']:.1f}% of one core | {found['lost']:.0f} |", flush=True)
        target = TARGETS.get(count)
        ok &= (target is None or found["median"] < target) and found["idle"] < IDLE_TARGET
        ok &= found["lost"] == 0
    print(f"\ntargets: median under {TARGETS[3]:g} s (3 machines), {TARGETS[8]:g} s (8); "
          f"idle under {IDLE_TARGET:g}%; 0 lost: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
