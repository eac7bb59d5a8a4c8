"""End to end: the installed driver inside real git, on two machines sharing a remote.

Each test is one story. Two clones of a bare remote (the `machines` fixture,
each installed with `python -m crdt_merge_driver install`) edit one memory
file at the same time, written the way the memory server writes it, and
integrate with plain git. The checks are git's own answer (exit code,
unmerged paths), the merged graph, and the property that matters most: the
same bytes whichever way the work is integrated and on whichever machine.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import orjson
import pytest

from tests import gitrepo
from tests.gitrepo import entity, jsonl, relation

MEMORY = "memory.jsonl"
NAME = "crdt-memory"
Graph = tuple[dict[str, tuple[str, frozenset[str]]], set[tuple[str, str, str]]]

# --- the memory both machines start from, and what each one does to it ----------

BASE_ENTITIES = (
    entity("Alice", "person", ("likes tea", "lives in Oslo")),
    entity("Bob", "person", ("plays chess",)),
    entity("Carol", "person", ("writes poems",)),
)
BASE_RELATIONS = (
    relation("Alice", "Bob", "knows"),
    relation("Bob", "Carol", "knows"),
    relation("Alice", "Carol", "works_with"),
    relation("Bob", "Alice", "likes"),
)
BASE = jsonl(*BASE_ENTITIES, *BASE_RELATIONS)

# The laptop adds an observation to Alice and deletes another, deletes Carol (the
# memory server deletes her relations with her), creates Dave and a project, and
# relates them.
LAPTOP = jsonl(
    entity("Alice", "person", ("likes tea", "runs on Sundays")),
    entity("Bob", "person", ("plays chess",)),
    entity("Dave", "person", ("new in town",)),
    entity("Apollo", "project", ("started in May",)),
    relation("Alice", "Bob", "knows"),
    relation("Bob", "Alice", "likes"),
    relation("Dave", "Alice", "knows"),
    relation("Dave", "Apollo", "works_on"),
    relation("Bob", "Apollo", "leads"),
)

# The same edits saved in two steps: first the new entities, then the rest.
LAPTOP_FIRST = jsonl(
    *BASE_ENTITIES,
    entity("Dave", "person", ("new in town",)),
    entity("Apollo", "project", ("started in May",)),
    *BASE_RELATIONS,
)

# The server adds an observation to Alice (keeping the one the laptop deleted), edits
# Carol, deletes one relation, creates Erin and the same project with another note,
# and adds one relation the laptop added too.
SERVER = jsonl(
    entity("Alice", "person", ("likes tea", "lives in Oslo", "speaks Norwegian")),
    entity("Bob", "person", ("plays chess",)),
    entity("Carol", "person", ("writes poems", "moved to Tromsø")),
    entity("Erin", "person", ("bakes bread",)),
    entity("Apollo", "project", ("has a budget",)),
    relation("Bob", "Carol", "knows"),
    relation("Alice", "Carol", "works_with"),
    relation("Bob", "Alice", "likes"),
    relation("Erin", "Bob", "knows"),
    relation("Bob", "Apollo", "leads"),
)

EXPECTED: Graph = (
    {
        "Alice": ("person", frozenset({"likes tea", "runs on Sundays", "speaks Norwegian"})),
        "Bob": ("person", frozenset({"plays chess"})),
        "Carol": ("person", frozenset({"writes poems", "moved to Tromsø"})),
        "Dave": ("person", frozenset({"new in town"})),
        "Erin": ("person", frozenset({"bakes bread"})),
        "Apollo": ("project", frozenset({"started in May", "has a budget"})),
    },
    {
        ("Bob", "likes", "Alice"),
        ("Bob", "leads", "Apollo"),
        ("Dave", "knows", "Alice"),
        ("Dave", "works_on", "Apollo"),
        ("Erin", "knows", "Bob"),
    },
)


# The ways a machine can take in the other's commit, as the user would type them.
WAYS: dict[str, tuple[str, ...]] = {
    "merge": ("merge", "--no-edit", "origin/{branch}"),
    "pull --no-rebase": ("pull", "--no-rebase", "--no-edit", "origin", "{branch}"),
    "pull --rebase": ("pull", "--rebase", "origin", "{branch}"),
    "rebase": ("rebase", "origin/{branch}"),
    "cherry-pick": ("cherry-pick", "origin/{branch}"),
}


@pytest.mark.parametrize("way", ["merge", "pull --no-rebase", "pull --rebase", "cherry-pick"])
def test_concurrent_edits_of_every_kind_integrate_without_conflict(
    machines: tuple[Path, Path], way: str
) -> None:
    laptop, server = machines
    share_start(laptop, server)
    gitrepo.commit_file(laptop, MEMORY, LAPTOP, "laptop's edits")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, MEMORY, SERVER, "server's edits")

    result = take_in(server, way, "main")

    assert result.returncode == 0, result.stderr
    assert gitrepo.conflicted(server) == []
    assert "crdt-merge-driver: merged memory.jsonl" in result.stderr
    merged = (server / MEMORY).read_bytes()
    assert gitrepo.graph(merged) == EXPECTED
    assert_server_format(merged)


def test_every_way_on_either_machine_gives_the_same_bytes(machines: tuple[Path, Path]) -> None:
    laptop, server = machines
    share_start(laptop, server)
    own_commit = {
        laptop: gitrepo.commit_file(laptop, MEMORY, LAPTOP, "laptop's edits"),
        server: gitrepo.commit_file(server, MEMORY, SERVER, "server's edits"),
    }
    # Each publishes its commit on a branch of its own, so that either can take in the other's.
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:laptop")
    gitrepo.git(server, "push", "--quiet", "origin", "HEAD:server")

    results: dict[tuple[str, str], bytes] = {}
    for machine, other in ((laptop, "server"), (server, "laptop")):
        for way in WAYS:
            result = take_in(machine, way, other)
            assert result.returncode == 0, f"{way} on {machine.name}: {result.stderr}"
            assert gitrepo.conflicted(machine) == []
            results[machine.name, way] = (machine / MEMORY).read_bytes()
            gitrepo.git(machine, "reset", "--quiet", "--hard", own_commit[machine])

    # During a rebase or a cherry-pick git swaps %A and %B: the driver is symmetric,
    # so neither the way nor the machine changes a byte.
    assert len(set(results.values())) == 1, differing(results)
    assert gitrepo.graph(results["laptop", "merge"]) == EXPECTED


def test_a_rebase_replaying_several_commits_gives_the_same_records_maybe_reordered(
    machines: tuple[Path, Path],
) -> None:
    laptop, server = machines
    share_start(laptop, server)
    # The laptop's memory server saved twice: once after creating, once after the rest.
    gitrepo.commit_file(laptop, MEMORY, LAPTOP_FIRST, "laptop: Dave and Apollo")
    laptop_head = gitrepo.commit_file(laptop, MEMORY, LAPTOP, "laptop: the rest")
    gitrepo.commit_file(server, MEMORY, SERVER, "server's edits")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:laptop")
    gitrepo.git(server, "push", "--quiet", "origin", "HEAD:server")
    assert take_in(laptop, "merge", "server").returncode == 0
    merged = (laptop / MEMORY).read_bytes()
    gitrepo.git(laptop, "reset", "--quiet", "--hard", laptop_head)

    result = take_in(laptop, "pull --rebase", "server")

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("crdt-merge-driver: merged memory.jsonl") == 2
    rebased = (laptop / MEMORY).read_bytes()
    assert gitrepo.graph(rebased) == gitrepo.graph(merged) == EXPECTED
    # The same lines, byte for byte. Their order may differ: the second replayed step's
    # ancestor is the laptop's first commit, and records that survive from an ancestor
    # keep its order: Dave stays before Apollo, where the merge sorts new records by name.
    assert sorted(rebased.split(b"\n")) == sorted(merged.split(b"\n"))
    assert_server_format(rebased)


def test_criss_cross_merge_builds_the_virtual_ancestor_with_the_driver(
    machines: tuple[Path, Path],
) -> None:
    laptop, server = machines
    share_start(laptop, server, jsonl(entity("Alice", "person", ("likes tea",))))
    gitrepo.commit_file(laptop, MEMORY, jsonl(
        entity("Alice", "person", ("likes tea",)),
        entity("Dave", "person", ("new in town",)),
    ))  # fmt: skip
    gitrepo.commit_file(server, MEMORY, jsonl(
        entity("Alice", "person", ("likes tea", "speaks Norwegian")),
        entity("Erin", "person", ("bakes bread",)),
    ))  # fmt: skip
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "push", "--quiet", "origin", "HEAD:server")
    # Each machine merges the other's first commit: the histories cross.
    gitrepo.git(laptop, "pull", "--quiet", "--no-rebase", "--no-edit", "origin", "server")
    gitrepo.git(server, "pull", "--quiet", "--no-rebase", "--no-edit", "origin", "main")
    assert (laptop / MEMORY).read_bytes() == (server / MEMORY).read_bytes()
    # Then both go on. The laptop forgets an observation that came from the server's
    # first commit: only a virtual ancestor that holds it tells this from an absence.
    gitrepo.commit_file(laptop, MEMORY, jsonl(
        entity("Alice", "person", ("likes tea",)),
        entity("Dave", "person", ("new in town",)),
        entity("Erin", "person", ("bakes bread",)),
        entity("Frank", "person", ("fixes bikes",)),
    ))  # fmt: skip
    gitrepo.commit_file(server, MEMORY, (server / MEMORY).read_bytes() + b"\n" + jsonl(
        entity("Grace", "person", ("sings",)),
        relation("Erin", "Dave", "knows"),
    ))  # fmt: skip
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "push", "--quiet", "origin", "HEAD:server")
    gitrepo.git(server, "fetch", "--quiet", "origin")
    bases = gitrepo.git(server, "merge-base", "--all", "HEAD", "origin/main").split()
    assert len(bases) == 2

    on_server = take_in(server, "pull --no-rebase", "main")
    on_laptop = take_in(laptop, "pull --no-rebase", "server")

    for machine, result in ((server, on_server), (laptop, on_laptop)):
        assert result.returncode == 0, result.stderr
        assert gitrepo.conflicted(machine) == []
        # Once for the virtual ancestor of the two merge bases, once for the merge itself.
        assert result.stderr.count("crdt-merge-driver: merged memory.jsonl") == 2
    merged = (server / MEMORY).read_bytes()
    assert (laptop / MEMORY).read_bytes() == merged
    assert gitrepo.graph(merged) == (
        {
            "Alice": ("person", frozenset({"likes tea"})),
            "Dave": ("person", frozenset({"new in town"})),
            "Erin": ("person", frozenset({"bakes bread"})),
            "Frank": ("person", frozenset({"fixes bikes"})),
            "Grace": ("person", frozenset({"sings"})),
        },
        {("Erin", "knows", "Dave")},
    )


def test_both_machines_adding_the_same_new_file_merge_against_an_empty_ancestor(
    machines: tuple[Path, Path],
) -> None:
    laptop, server = machines
    path = "agents/claude code/memory.jsonl"  # git quotes %P for the shell
    laptop_file = jsonl(
        entity("Alice", "person", ("likes tea",)),
        entity("Dave", "person", ("new in town",)),
        relation("Alice", "Dave", "knows"),
    )
    server_file = jsonl(
        entity("Alice", "person", ("speaks Norwegian",)),
        entity("Erin", "person", ("bakes bread",)),
        relation("Alice", "Dave", "knows"),
        relation("Erin", "Alice", "knows"),
    )
    gitrepo.commit_file(laptop, path, laptop_file, "laptop starts a memory")
    gitrepo.commit_file(server, path, server_file, "server starts a memory")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.git(server, "push", "--quiet", "origin", "HEAD:server")

    on_server = take_in(server, "pull --no-rebase", "main")
    on_laptop = take_in(laptop, "merge", "server")

    # Both added the path, so git hands the driver an empty ancestor: an empty memory.
    for machine, result in ((server, on_server), (laptop, on_laptop)):
        assert result.returncode == 0, result.stderr
        assert gitrepo.conflicted(machine) == []
        assert f"crdt-merge-driver: merged {path}: " in result.stderr
    merged = (server / path).read_bytes()
    assert (laptop / path).read_bytes() == merged
    assert gitrepo.graph(merged) == (
        {
            "Alice": ("person", frozenset({"likes tea", "speaks Norwegian"})),
            "Dave": ("person", frozenset({"new in town"})),
            "Erin": ("person", frozenset({"bakes bread"})),
        },
        {("Alice", "knows", "Dave"), ("Erin", "knows", "Alice")},
    )
    assert_server_format(merged)


def test_a_clone_without_install_gets_conflict_markers_and_doctor_says_why(
    machines: tuple[Path, Path], remote: Path, tmp_path: Path
) -> None:
    laptop, _ = machines
    share_start(laptop)
    # A third machine clones: .gitattributes arrives with the clone, git config does not.
    desktop = gitrepo.clone(remote, tmp_path / "desktop")

    doctor = gitrepo.cli("doctor", "--repo", str(desktop))

    assert doctor.returncode == 6
    report = doctor.stdout.decode()
    assert f"problem: merge.{NAME}.driver is not set" in report
    assert f"memory.jsonl has merge={NAME} in .gitattributes, but this clone has no" in report
    assert f"crdt-merge-driver install --repo {desktop}" in report

    gitrepo.commit_file(laptop, MEMORY, LAPTOP)
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(desktop, MEMORY, SERVER)
    result = take_in(desktop, "pull --no-rebase", "main")

    # Silently git's text merge: markers, and a file the memory server cannot load.
    assert result.returncode == 1
    assert gitrepo.conflicted(desktop) == [MEMORY]
    assert (desktop / MEMORY).read_bytes().startswith(b"<<<<<<< HEAD\n")
    assert "crdt-merge-driver" not in result.stderr

    # What doctor says to run fixes it.
    gitrepo.git(desktop, "merge", "--abort")
    gitrepo.install(desktop)
    assert gitrepo.cli("doctor", "--repo", str(desktop)).returncode == 0
    result = take_in(desktop, "merge", "main")
    assert result.returncode == 0, result.stderr
    assert gitrepo.graph((desktop / MEMORY).read_bytes()) == EXPECTED


def test_a_0600_memory_file_is_recreated_by_git_while_the_driver_keeps_the_mode(
    machines: tuple[Path, Path],
) -> None:
    laptop, server = machines
    share_start(laptop, server)
    (server / MEMORY).chmod(0o600)  # memory files are often private
    gitrepo.commit_file(laptop, MEMORY, LAPTOP)
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, MEMORY, SERVER)
    assert mode(server / MEMORY) == 0o600

    result = take_in(server, "pull --no-rebase", "main")

    assert result.returncode == 0, result.stderr
    assert gitrepo.graph((server / MEMORY).read_bytes()) == EXPECTED
    # git tracks only the executable bit: after the merge it deletes and recreates the
    # working file with 0666 & ~umask, whatever the driver left in %A.
    assert mode(server / MEMORY) == 0o666 & ~current_umask()
    assert gitrepo.git(server, "ls-files", "-s", MEMORY).startswith("100644 ")

    # The driver's own write keeps %A's mode: run the very command git runs, on a 0600 %A.
    ours = gitrepo.write(server, ".merge_file_ours", SERVER)
    ours.chmod(0o600)
    run_configured_driver(
        server,
        base=gitrepo.write(server, ".merge_file_base", BASE),
        ours=ours,
        theirs=gitrepo.write(server, ".merge_file_theirs", LAPTOP),
    )
    assert mode(ours) == 0o600
    assert ours.read_bytes() == (server / MEMORY).read_bytes()


def test_a_crlf_memory_file_keeps_crlf_through_a_merge(machines: tuple[Path, Path]) -> None:
    laptop, server = machines
    share_start(laptop, server, crlf(BASE))
    gitrepo.commit_file(laptop, MEMORY, crlf(LAPTOP))
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, MEMORY, crlf(SERVER))

    result = take_in(server, "pull --no-rebase", "main")

    assert result.returncode == 0, result.stderr
    merged = (server / MEMORY).read_bytes()
    assert gitrepo.graph(merged) == EXPECTED
    assert b"\n" not in merged.replace(b"\r\n", b"")  # every line ends in CRLF...
    assert not merged.endswith(b"\n")  # ...but the last, as the inputs had it
    # The merge commit stores those bytes: the driver saw the stored CRLF and kept it.
    assert gitrepo.git(server, "cat-file", "blob", f"HEAD:{MEMORY}").encode() == merged


@pytest.mark.parametrize("way", ["pull --no-rebase", "pull --rebase", "cherry-pick"])
@pytest.mark.parametrize("damaged_on", ["server", "laptop"])
def test_a_refused_merge_leaves_both_sides_lines_with_markers_in_the_working_file(
    machines: tuple[Path, Path], way: str, damaged_on: str
) -> None:
    laptop, server = machines
    share_start(laptop, server)
    # A hand merge left its markers in, on the server (the local side) or on the laptop.
    damaged = jsonl(*BASE_ENTITIES, b"<<<<<<< HEAD", entity("Dave"), b"=======", entity("Erin"),
                    b">>>>>>> theirs", *BASE_RELATIONS)  # fmt: skip
    on_server, on_laptop = (damaged, LAPTOP) if damaged_on == "server" else (SERVER, damaged)
    gitrepo.commit_file(laptop, MEMORY, on_laptop)
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, MEMORY, on_server)

    result = take_in(server, way, "main")

    assert result.returncode == 1
    assert gitrepo.conflicted(server) == [MEMORY]
    stages = [line.split()[2] for line in gitrepo.git(server, "ls-files", "-u").splitlines()]
    assert stages == ["1", "2", "3"]
    # The working file is git's own text merge of the three stages, whichever way
    # the sides were swapped: the damaged side's lines are in view, with markers.
    stage = {n: gitrepo.write(server, f".stage{n}", gitrepo.git(server, "show", f":{n}:{MEMORY}")
                              .encode()) for n in (1, 2, 3)}  # fmt: skip
    text_merge = subprocess.run(
        ["git", "merge-file", "-p", "-L", "ours", "-L", "base", "-L", "theirs",
         stage[2], stage[1], stage[3]], capture_output=True, check=False,
    ).stdout  # fmt: skip
    working = (server / MEMORY).read_bytes()
    assert working == text_merge
    assert entity("Dave") in working and entity("Erin") in working
    assert b"\n<<<<<<< ours\n" in working and b"\n>>>>>>> theirs" in working
    # A rebase replays the server's commit onto the laptop's: its file is then %B.
    local, remote = ("theirs, %B", "ours, %A") if way == "pull --rebase" else (
        "ours, %A", "theirs, %B")  # fmt: skip
    side = local if damaged_on == "server" else remote
    assert (
        f"crdt-merge-driver: cannot merge memory.jsonl ({side}), line 4: conflict marker "
        "(a text merge was left unresolved); left for you to resolve"
    ) in result.stderr.splitlines()


def test_the_kill_switch_falls_back_to_gits_text_merge(
    machines: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, server = machines
    share_start(laptop, server, jsonl(entity("Alice", "person", ("likes tea",))))
    gitrepo.commit_file(laptop, MEMORY, jsonl(
        entity("Alice", "person", ("likes tea",)), entity("Dave", "person", ("new in town",)),
    ))  # fmt: skip
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, MEMORY, jsonl(
        entity("Alice", "person", ("likes tea",)), entity("Erin", "person", ("bakes bread",)),
    ))  # fmt: skip
    monkeypatch.setenv("CRDT_MERGE_DRIVER_DISABLE", "1")

    result = take_in(server, "pull --no-rebase", "main")

    # Two appends at the end of one file: the text merge always conflicts on them.
    assert result.returncode == 1
    assert "CRDT_MERGE_DRIVER_DISABLE is set: memory.jsonl gets git's text merge" in result.stderr
    assert gitrepo.conflicted(server) == [MEMORY]
    merged = (server / MEMORY).read_bytes()
    assert b"\n<<<<<<< " in merged
    assert b"\n=======\n" in merged
    assert b"\n>>>>>>> " in merged


# --- helpers -------------------------------------------------------------------------


def share_start(laptop: Path, server: Path | None = None, memory: bytes = BASE) -> None:
    """The laptop commits the first memory and pushes it; the server pulls it."""
    gitrepo.commit_file(laptop, MEMORY, memory, "start the memory")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    if server is not None:
        gitrepo.git(server, "pull", "--quiet", "--ff-only", "origin", "main")


def take_in(machine: Path, way: str, branch: str) -> subprocess.CompletedProcess[str]:
    """Integrate origin's ``branch`` into ``machine`` the way named (see WAYS)."""
    if not way.startswith("pull"):
        gitrepo.git(machine, "fetch", "--quiet", "origin")
    return gitrepo.git_result(machine, *(arg.format(branch=branch) for arg in WAYS[way]))


def assert_server_format(data: bytes) -> None:
    """One compact JSON object a line, entities first, no final newline: what the server writes."""
    assert not data.endswith(b"\n")
    kinds = [str(record["type"]) for record in gitrepo.records(data)]
    assert kinds == sorted(kinds), "entities must come before relations"
    for line in data.split(b"\n"):
        assert orjson.dumps(orjson.loads(line)) == line  # JSON.stringify's compact form


def run_configured_driver(repo: Path, *, base: Path, ours: Path, theirs: Path) -> None:
    """Run ``merge.crdt-memory.driver`` as git does: ``sh -c`` from the top, placeholders filled."""
    command = gitrepo.git(repo, "config", f"merge.{NAME}.driver").strip()
    for placeholder, value in (("%O", base.name), ("%A", ours.name), ("%B", theirs.name),
                               ("%L", "7"), ("%P", shlex.quote(MEMORY))):  # fmt: skip
        command = command.replace(placeholder, value)
    completed = subprocess.run(["sh", "-c", command], cwd=repo, capture_output=True, check=False)
    assert completed.returncode == 0, completed.stderr


def differing(results: dict[tuple[str, str], bytes]) -> str:
    """Which ways gave which bytes, for the failure message."""
    groups: dict[bytes, list[str]] = {}
    for (machine, way), data in results.items():
        groups.setdefault(data, []).append(f"{way} on {machine}")
    return "\n".join(f"{', '.join(names)}:\n{data.decode()}" for data, names in groups.items())


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
