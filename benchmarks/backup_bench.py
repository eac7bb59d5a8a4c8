"""What a `backup` costs from cron: idle, and with one change, against git's own fetch and push.

One local bare remote, one clone with the driver installed, and a live
memory file of N entities (each with observations, plus relations) in the
memory server's exact format, backed up once. Then, in the same run:

* ``fetch``: ``git fetch`` of that clone from the remote, nothing new: the
  least any backup must do to learn whether another machine pushed.
* ``idle backup``: ``python -m crdt_merge_driver backup`` with nothing new
  in the live file: it must cost about one fetch (target: at most 2x).
* ``fetch + push``: in a second clone, one entity's observation changed and
  committed (untimed), then ``git fetch`` and ``git push`` timed: what a
  hand-written backup script pays for one change.
* ``backup, one change``: one observation added to one entity of the live
  file, then ``backup``: the commit, the merge, the push and the restore
  (target: under 3x ``fetch + push``).

Each is the median of --rounds runs; the ratios compare medians measured
in the same run, so the machine's speed cancels out. Prints a Markdown
table for docs/benchmarks.md; exit 0 when both targets hold, 1 otherwise.

Two remotes. A path on the same disk, where `git fetch` is a local process
pair (~10 ms) and the ratio shows what the interpreter and backup's own git
commands cost. And a ``git daemon`` reached through a proxy that adds
``--latency MS`` to each trip (default 40 ms, a nearby server; 0 skips it):
the remote users have, whose fetch costs round trips. The targets are
judged on that one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson

DEFAULT_SIZES = (100, 10_000)
IDLE_TARGET = 2.0
CHANGE_TARGET = 3.0


DAEMON_PORT = 9419
# As a user's machine runs it: byte-compiled modules (pip writes them on install).
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=ENV)


def memory(entities: int) -> bytes:
    """A memory file as the server writes it: entities, then relations, no final newline."""
    lines = [
        orjson.dumps({"type": "entity", "name": f"entity {number}", "entityType": "note",
                      "observations": [f"fact {number}.{each}" for each in range(3)]})
        for number in range(entities)
    ]  # fmt: skip
    lines += [
        orjson.dumps({"type": "relation", "from": f"entity {number}",
                      "to": f"entity {number + 1}", "relationType": "follows"})
        for number in range(0, entities - 1, 2)
    ]  # fmt: skip
    return b"\n".join(lines)


def backup(clone: Path, live: Path) -> None:
    command = [sys.executable, "-m", "crdt_merge_driver", "backup", "-q",
               "--repo", str(clone), "--memory", str(live)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, check=False, env=ENV)
    if result.returncode != 0:
        raise SystemExit(f"backup failed (exit {result.returncode}): {result.stderr.decode()}")


def median_seconds(rounds: int, step: Callable[[], None], before: Callable[[], None]) -> float:
    times = []
    for _ in range(rounds):
        before()
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(entities: int, rounds: int, work: Path, url: str | None) -> dict[str, float]:
    remote = work / "remote.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(remote), cwd=work)
    clone, other = work / "clone", work / "other"
    for folder in (clone, other):
        git("clone", "--quiet", url or str(remote), str(folder), cwd=work)
        for key, value in (("user.name", "bench"), ("user.email", "bench@example.com")):
            git("config", key, value, cwd=folder)
    subprocess.run([sys.executable, "-m", "crdt_merge_driver", "install", "--repo", str(clone)],
                   check=True, capture_output=True)  # fmt: skip
    git("add", ".gitattributes", cwd=clone)
    git("commit", "--quiet", "-m", "install", cwd=clone)
    live = work / "live" / "memory.jsonl"
    live.parent.mkdir()
    live.write_bytes(memory(entities))
    backup(clone, live)  # the first backup publishes it
    backup(clone, live)  # and the next one leaves its note of the bytes it synced
    git("pull", "--quiet", cwd=other)

    def nothing() -> None:
        pass

    counter = iter(range(10**9))

    def learn(path: Path) -> None:
        data = path.read_bytes()
        first = data.index(b"\n")
        record = orjson.loads(data[:first])
        record["observations"].append(f"learned {next(counter)}")
        path.write_bytes(orjson.dumps(record) + data[first:])

    def change_other() -> None:
        learn(other / "memory.jsonl")
        git("commit", "--quiet", "-am", "one change", cwd=other)

    def fetch_push() -> None:
        git("fetch", "--quiet", "origin", cwd=other)
        git("push", "--quiet", "origin", "HEAD:refs/heads/other", cwd=other)

    def run_backup() -> None:
        backup(clone, live)

    return {
        "fetch": median_seconds(rounds, lambda: git("fetch", "--quiet", cwd=clone), nothing),
        "idle backup": median_seconds(rounds, run_backup, nothing),
        "fetch + push": median_seconds(rounds, fetch_push, change_other),
        "backup, one change": median_seconds(rounds, run_backup, lambda: learn(live)),
    }


@contextmanager
def slow_network(latency_ms: float, base: Path) -> Iterator[str]:
    """A git daemon serving ``base``, reached through a proxy that adds ``latency_ms`` per trip.

    The proxy holds each chunk for half the round trip in each direction, as
    a link with that latency would (bandwidth is not limited): what a fetch
    from a remote across a network pays in round trips, on one machine.
    """
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
         f"--base-path={base}", "--listen=127.0.0.1", f"--port={DAEMON_PORT}", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                await asyncio.sleep(latency_ms / 2000)
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def relay(client: asyncio.StreamReader, back: asyncio.StreamWriter) -> None:
        for _ in range(100):  # the daemon may still be starting
            try:
                upstream, forward = await asyncio.open_connection("127.0.0.1", DAEMON_PORT)
                break
            except ConnectionError:
                await asyncio.sleep(0.05)
        else:
            back.close()
            return
        await asyncio.gather(pipe(client, forward), pipe(upstream, back))

    async def serve() -> None:
        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await server.serve_forever()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    ready.wait()
    try:
        yield f"git://127.0.0.1:{port[0]}/remote.git"
    finally:
        daemon.terminate()
        daemon.wait()


def run_table(sizes: Sequence[int], rounds: int, latency_ms: float | None) -> bool:
    where = f"git daemon, {latency_ms:g} ms round trip" if latency_ms else "path on this disk"
    held = True
    for entities in sizes:
        with tempfile.TemporaryDirectory(prefix="backup-bench-") as folder:
            work = Path(folder)
            if latency_ms:
                with slow_network(latency_ms, work) as url:
                    found = measure(entities, rounds, work, url)
            else:
                found = measure(entities, rounds, work, None)
        idle = found["idle backup"] / found["fetch"]
        change = found["backup, one change"] / found["fetch + push"]
        held = held and idle <= IDLE_TARGET and change < CHANGE_TARGET
        print(f"| {where} | {entities:,} | {found['fetch'] * 1000:.0f} ms | "
              f"{found['idle backup'] * 1000:.0f} ms | {idle:.2f}x | "
              f"{found['fetch + push'] * 1000:.0f} ms | "
              f"{found['backup, one change'] * 1000:.0f} ms | {change:.2f}x |")  # fmt: skip
    return held


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        metavar="N", help="entities (default: 100 10000)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=7, help="runs per measure (median)")
    parser.add_argument("--latency", type=float, default=40.0, metavar="MS",
                        help="round trip of the networked remote (default 40; 0: none)")
    args = parser.parse_args(argv)
    print(f"backup from cron, {datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, "
          f"median of {args.rounds} runs\n")  # fmt: skip
    print("| remote | entities | git fetch | idle backup | ratio (target <= 2x) | "
          "git fetch + push | backup, one change | ratio (target < 3x) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    local = run_table(args.sizes, args.rounds, None)
    if not args.latency:
        return 0 if local else 1
    return 0 if run_table(args.sizes, args.rounds, args.latency) else 1


if __name__ == "__main__":
    sys.exit(main())
