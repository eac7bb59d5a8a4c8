"""``crdt-merge-driver demo``: three machines, one remote, every kind of edit, checked.

Everything happens in a temporary folder with real git: a bare repository
stands for the shared remote, three clones for a laptop, a desktop and a CI
runner, each with the driver installed. The demo then shows the product's
three jobs and checks each claim before printing it:

1. the merge driver: concurrent edits of one memory file, integrated with
   plain ``git pull`` and ``git pull --rebase``, with no conflict;
2. ``sync``: the three machines push at the same moment and all land;
3. ``backup``/``restore``: three live memory files, edited the way the
   memory server edits them, backed up at the same moment, converge;
4. ``watch``: a watcher process on the laptop and one on the desktop; what
   one machine's agent writes is in the other's live file seconds later.

The live files are written exactly as the memory server writes them
(``Memory`` below applies the server's tool semantics to its file). The
library's own log lines go to a buffer, to keep the story short.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import orjson

from crdt_merge_driver import git
from crdt_merge_driver.core.live import records_of
from crdt_merge_driver.errors import CrdtError, ExitCode
from crdt_merge_driver.install import install

MEMORY = "memory.jsonl"
MACHINES = ("laptop", "desktop", "ci-runner")
Graph = tuple[dict[str, tuple[str, frozenset[str]]], frozenset[tuple[str, str, str]]]


class Memory:
    """A memory file edited with the memory server's tool semantics, saved in its format."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        entities, relations = [], []
        if self.path.exists():
            # Copies: `records_of` shares its records with later reads of the
            # same bytes, and the tools below edit what they load.
            for value in records_of(self.path.read_bytes()).values():
                if value.get("type") == "entity":
                    entities.append({**value, "observations": list(value["observations"])})
                elif value.get("type") == "relation":
                    relations.append(dict(value))
        return entities, relations

    def _save(self, entities: list[dict[str, Any]], relations: list[dict[str, Any]]) -> None:
        lines = [_server_entity(value) for value in entities]
        lines += [_server_relation(value) for value in relations]
        self.path.write_bytes(b"\n".join(lines))

    def create_entity(self, name: str, entity_type: str, *observations: str) -> None:
        entities, relations = self._load()
        if all(value["name"] != name for value in entities):
            entities.append(
                {"name": name, "entityType": entity_type, "observations": [*observations]}
            )
        self._save(entities, relations)

    def add_observations(self, name: str, *observations: str) -> None:
        entities, relations = self._load()
        for value in entities:
            if value["name"] == name:
                value["observations"] += [o for o in observations if o not in value["observations"]]
        self._save(entities, relations)

    def delete_observation(self, name: str, observation: str) -> None:
        entities, relations = self._load()
        for value in entities:
            if value["name"] == name:
                value["observations"] = [o for o in value["observations"] if o != observation]
        self._save(entities, relations)

    def delete_entity(self, name: str) -> None:
        entities, relations = self._load()
        entities = [value for value in entities if value["name"] != name]
        relations = [value for value in relations if name not in (value["from"], value["to"])]
        self._save(entities, relations)

    def create_relation(self, source: str, relation_type: str, target: str) -> None:
        entities, relations = self._load()
        new = {"from": source, "to": target, "relationType": relation_type}
        if all(_relation_key(value) != _relation_key(new) for value in relations):
            relations.append(new)
        self._save(entities, relations)

    def delete_relation(self, source: str, relation_type: str, target: str) -> None:
        entities, relations = self._load()
        gone = (source, relation_type, target)
        self._save(entities, [value for value in relations if _relation_key(value) != gone])

    def graph(self) -> Graph:
        entities, relations = self._load()
        return (
            {
                value["name"]: (value["entityType"], frozenset(value["observations"]))
                for value in entities
            },
            frozenset(_relation_key(value) for value in relations),
        )


def _server_entity(value: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "entity", "name": value["name"], "entityType": value["entityType"],
                         "observations": value["observations"]})  # fmt: skip


def _server_relation(value: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "relation", "from": value["from"], "to": value["to"],
                         "relationType": value["relationType"]})  # fmt: skip


def _relation_key(value: dict[str, Any]) -> tuple[str, str, str]:
    return (value["from"], value["relationType"], value["to"])


# --- the demo ----------------------------------------------------------------------


class DemoFailed(CrdtError):
    """A claim the demo checks did not hold (a bug: please report it)."""

    exit_code = ExitCode.CONFLICT


def run_demo(*, keep: Path | None = None, out: TextIO = sys.stdout) -> ExitCode:
    """Run the three parts; the exit code is 0 only if every check held."""
    with _workspace(keep) as root, _own_git_config(root):
        print(f"crdt-merge-driver demo in {root}\n", file=out)
        clones = _setup(root, out)
        _part_merge(clones, out)
        _part_sync(clones, out)
        live = _part_backup(root, clones, out)
        _part_watch(root, clones, live, out)
    print("\nno conflicts, nothing lost", file=out)
    return ExitCode.OK


@contextmanager
def _workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            raise CrdtError(f"{keep} is not empty: give --keep an empty or new folder")
        yield keep.absolute()
        return
    root = Path(tempfile.mkdtemp(prefix="crdt-merge-driver-demo-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _own_git_config(root: Path) -> Iterator[None]:
    """Run the demo's git with a config of its own, whatever the user's says.

    A user's global config may sign commits, rebase on pull or name another
    default branch; none of that belongs in a demo. The library functions
    the demo calls start git with this process's environment, so the
    variables are set here, for the demo's duration only.
    """
    config = root / "demo.gitconfig"
    config.write_text(
        "[user]\n\tname = demo\n\temail = demo@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n"
        "[advice]\n\tdetachedHead = false\n"
    )
    saved = {name: os.environ.get(name) for name in _CONFIG_VARIABLES}
    os.environ.update(GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_CONFIG_VARIABLES = ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM")


def _git(repo: Path, *args: str) -> str:
    return git.run(*args, cwd=repo).stdout.decode().strip()


def _setup(root: Path, out: TextIO) -> dict[str, Path]:
    remote = root / "remote.git"
    git.run("init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    first = root / MACHINES[0]
    git.run("init", "--quiet", "--initial-branch=main", str(first))
    _git(first, "remote", "add", "origin", str(remote))
    install(repo=first, scope_global=False, patterns=None, name="crdt-memory")
    memory = Memory(first / MEMORY)
    memory.create_entity("Ada", "person", "likes tea", "writes code")
    memory.create_entity("Babbage", "person", "builds engines")
    memory.create_entity("Engine", "machine", "analytical")
    memory.create_relation("Ada", "works with", "Babbage")
    memory.create_relation("Babbage", "built", "Engine")
    _git(first, "add", "-A")
    _git(first, "commit", "--quiet", "-m", "a first memory, and the driver attached to it")
    _git(first, "push", "--quiet", "--set-upstream", "origin", "main")
    clones = {MACHINES[0]: first}
    for name in MACHINES[1:]:
        clones[name] = root / name
        git.run("clone", "--quiet", str(remote), str(clones[name]))
        # .gitattributes came with the clone; install adds what is per clone: git config.
        install(repo=clones[name], scope_global=False, patterns=None, name="crdt-memory")
    print(f"three clones of one remote, the driver installed in each: {', '.join(MACHINES)}",
          file=out)  # fmt: skip
    _show(out, "the shared memory", memory.graph())
    return clones


def _part_merge(clones: dict[str, Path], out: TextIO) -> None:
    print("\n1. the merge driver: concurrent edits, plain git pull", file=out)
    laptop, desktop, runner = (Memory(clones[name] / MEMORY) for name in MACHINES)
    edits: dict[str, list[tuple[Callable[..., None], tuple[str, ...]]]] = {
        "laptop": [(laptop.create_entity, ("Grace", "person", "wrote a compiler")),
                   (laptop.add_observations, ("Ada", "first programmer")),
                   (laptop.create_relation, ("Grace", "admires", "Ada"))],
        "desktop": [(desktop.create_entity, ("Turing", "person", "broke codes")),
                    (desktop.delete_observation, ("Ada", "likes tea")),
                    (desktop.delete_entity, ("Engine",))],
        "ci-runner": [(runner.add_observations, ("Engine", "never finished")),
                      (runner.add_observations, ("Ada", "first programmer")),
                      (runner.delete_relation, ("Ada", "works with", "Babbage"))],
    }  # fmt: skip
    for name, steps in edits.items():
        for action, args in steps:
            action(*args)
        print(f"  {name}: " + "; ".join(_describe(action, args) for action, args in steps),
              file=out)  # fmt: skip
        _git(clones[name], "commit", "--quiet", "-am", f"{name}: memory edits")
    _git(clones["laptop"], "push", "--quiet", "origin", "main")
    for name, how in (("desktop", "--no-rebase"), ("ci-runner", "--rebase")):
        _git(clones[name], "pull", "--quiet", how, "origin", "main")
        _git(clones[name], "push", "--quiet", "origin", "main")
        print(f"  {name}: git pull {how} && git push: no conflict", file=out)
    for name in MACHINES:
        _git(clones[name], "pull", "--quiet", "--rebase", "origin", "main")
    graph = _same_everywhere(clones)
    entities, relations = graph
    _check(entities.get("Grace") == ("person", frozenset({"wrote a compiler"})), "Grace was added")
    _check("Turing" in entities, "Turing was added")
    _check(_observations(graph, "Ada") == {"writes code", "first programmer"},
           "Ada: one 'first programmer' (added twice), 'likes tea' deleted")  # fmt: skip
    _check(_observations(graph, "Engine") == {"analytical", "never finished"},
           "Engine: deleted on one machine, changed on another: kept, with the change")  # fmt: skip
    _check(relations == {("Grace", "admires", "Ada")},
           "relations: Grace's added; Ada's and the deleted Engine's removed")  # fmt: skip
    _show(out, "merged, identical bytes on all three machines", graph)


def _part_sync(clones: dict[str, Path], out: TextIO) -> None:
    from crdt_merge_driver.sync.landing import sync  # noqa: PLC0415  # tenacity only when it runs

    print("\n2. sync: all three push at the same moment", file=out)
    for name in MACHINES:
        Memory(clones[name] / MEMORY).create_entity(
            f"note from {name}", "note", f"written on {name}"
        )

    def push(name: str) -> None:
        log = io.StringIO()
        result = sync(repo=clones[name], message=f"{name}: sync", log=log)
        said = log.getvalue()
        how = (" (waited in the queue; another machine's push carried it)"
               if "another machine's push landed" in said
               else " (its push carried the others waiting in the queue)"
               if "waiting commits" in said else "")  # fmt: skip
        print(f"  {name}: landed in {result.attempts} attempt(s){how}", file=out)

    _at_once(push, "sync")
    for name in MACHINES:
        _git(clones[name], "pull", "--quiet", "--rebase", "origin", "main")
    entities, _ = _same_everywhere(clones)
    _check(all(f"note from {name}" in entities for name in MACHINES), "every machine's note landed")


def _part_backup(root: Path, clones: dict[str, Path], out: TextIO) -> dict[str, Path]:
    from crdt_merge_driver.backup import backup, restore  # noqa: PLC0415

    print("\n3. backup and restore: live memory files, backed up at the same moment", file=out)
    live = {name: root / f"{name}-live" / MEMORY for name in MACHINES}
    for name in MACHINES:
        live[name].parent.mkdir()
        restore(memory=live[name], repo=clones[name], log=io.StringIO())
    Memory(live["laptop"]).create_entity("Hopper", "person", "found a bug")
    Memory(live["desktop"]).delete_entity("Turing")
    Memory(live["ci-runner"]).add_observations("Grace", "a rear admiral")
    print("  laptop: create Hopper; desktop: delete Turing; ci-runner: observe Grace", file=out)

    def back_up(name: str) -> None:
        backup(memory=live[name], repo=clones[name], host=name, log=io.StringIO())

    _at_once(back_up, "backup")
    for name in MACHINES:
        restore(memory=live[name], repo=clones[name], log=io.StringIO())
    graphs = {name: Memory(live[name]).graph() for name in MACHINES}
    graph = graphs["laptop"]
    _check(all(other == graph for other in graphs.values()), "the three live files converged")
    entities, _ = graph
    _check("Hopper" in entities and "Turing" not in entities, "Hopper added, Turing deleted")
    _check("a rear admiral" in _observations(graph, "Grace"), "Grace's new observation arrived")
    _show(out, "the converged memory, in every live file", graph)
    return live


# How long part 4 waits for a write to reach the other machine before it
# says the demo failed: watch's own target is under 5 s with --interval 1.
LIVE_TIMEOUT = 60.0


def _part_watch(root: Path, clones: dict[str, Path], live: dict[str, Path], out: TextIO) -> None:
    from crdt_merge_driver.backup import restore  # noqa: PLC0415

    print("\n4. watch: two machines share one memory live", file=out)
    pair = MACHINES[:2]
    watchers = {name: _start_watcher(root, clones[name], live[name], name) for name in pair}
    try:
        print(f"  a watcher runs on the {pair[0]} and on the {pair[1]} "
              "(`watch --interval 1`)", file=out)  # fmt: skip
        Memory(live[pair[0]]).create_entity("Hamilton", "person", "wrote flight software")
        took = _until(
            lambda: _holds(live[pair[1]], "Hamilton", "wrote flight software"),
            watchers,
            f"Hamilton, created on the {pair[0]}, in the {pair[1]}'s live file",
        )
        print(f"  {pair[0]}: create Hamilton; the {pair[1]}'s memory has it {took:.1f} s later",
              file=out)  # fmt: skip
        Memory(live[pair[1]]).add_observations("Hamilton", "led the Apollo team")
        took = _until(
            lambda: _holds(live[pair[0]], "Hamilton", "led the Apollo team"),
            watchers,
            f"the {pair[1]}'s observation of Hamilton in the {pair[0]}'s live file",
        )
        print(f"  {pair[1]}: observe Hamilton; the {pair[0]}'s memory has it {took:.1f} s later",
              file=out)  # fmt: skip
    finally:
        codes = _stop_watchers(watchers)
    _check(all(code == 0 for code in codes.values()), f"the watchers exited 0 on SIGTERM: {codes}")
    rest = MACHINES[len(pair) :]
    for name in rest:  # a machine with no watcher: one restore brings it up to date
        restore(memory=live[name], repo=clones[name], log=io.StringIO())
    print(f"  {', '.join(rest)}, not watching: one `restore` brings it up to date", file=out)
    graphs = [Memory(live[name]).graph() for name in MACHINES]
    _check(all(graph == graphs[0] for graph in graphs), "the three live files converged")


def _holds(memory: Path, name: str, observation: str) -> bool:
    return observation in _observations(Memory(memory).graph(), name)


def _start_watcher(root: Path, clone: Path, memory: Path, name: str) -> subprocess.Popen[bytes]:
    """``watch`` as a user runs it: its own process, its log in the demo's folder."""
    with (root / f"{name}-watch.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "crdt_merge_driver", "watch", "--repo", str(clone),
             "--memory", str(memory), "--interval", "1", "--debounce", "0.2"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip


def _until(
    arrived: Callable[[], bool], watchers: dict[str, subprocess.Popen[bytes]], what: str
) -> float:
    """Seconds until ``arrived()``; `DemoFailed` if a watcher dies or LIVE_TIMEOUT passes."""
    start = time.monotonic()
    while not arrived():
        for name, process in watchers.items():
            if process.poll() is not None:
                raise DemoFailed(f"the {name}'s watcher exited {process.returncode}")
        if time.monotonic() - start > LIVE_TIMEOUT:
            raise DemoFailed(f"demo check failed: {what} within {LIVE_TIMEOUT:g} s")
        time.sleep(0.05)
    return time.monotonic() - start


def _stop_watchers(watchers: dict[str, subprocess.Popen[bytes]]) -> dict[str, int | None]:
    for process in watchers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    for name, process in watchers.items():
        try:
            codes[name] = process.wait(timeout=LIVE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            codes[name] = process.wait()
    return codes


def _at_once(job: Callable[[str], None], what: str) -> None:
    """Run ``job`` for every machine at the same moment, one thread each."""
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            job(name)
        except BaseException as error:  # raised below, once the others finished
            errors.append(error)

    threads = [threading.Thread(target=run, args=(name,)) for name in MACHINES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise DemoFailed(f"a {what} failed: {errors[0]}")


def _same_everywhere(clones: dict[str, Path]) -> Graph:
    files = {name: (clone / MEMORY).read_bytes() for name, clone in clones.items()}
    first = files[MACHINES[0]]
    _check(all(data == first for data in files.values()), "all machines hold identical bytes")
    _check(b"<<<<<<<" not in first and b">>>>>>>" not in first, "no conflict markers")
    graph = Memory(clones[MACHINES[0]] / MEMORY).graph()
    names = [line for line in first.split(b"\n") if line]
    _check(len(names) == len(graph[0]) + len(graph[1]), "every record once")
    return graph


def _observations(graph: Graph, name: str) -> frozenset[str]:
    """An entity's observations; none if it is missing (which its check then reports)."""
    return graph[0].get(name, ("", frozenset()))[1]


def _describe(action: Callable[..., None], args: tuple[str, ...]) -> str:
    verb = action.__name__.replace("_", " ")
    return f"{verb} {args[0]}" + (f" ({', '.join(args[1:])})" if args[1:] else "")


def _check(claim: bool, what: str) -> None:
    if not claim:
        raise DemoFailed(f"demo check failed: {what}")


def _show(out: TextIO, title: str, graph: Graph) -> None:
    entities, relations = graph
    print(f"  {title}:", file=out)
    for name, (entity_type, observations) in sorted(entities.items()):
        print(f"    {name} ({entity_type}): {', '.join(sorted(observations)) or '-'}", file=out)
    for source, relation_type, target in sorted(relations):
        print(f"    {source} -{relation_type}-> {target}", file=out)
