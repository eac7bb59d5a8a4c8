"""The merge driver as git runs it: ``merge [--marker-size N] %O %A %B [%P]``.

git hands the driver three temp files and reads the result back from
``%A``; exit 0 means merged, 1..128 a conflict (git then keeps all three
stages). These tests run the driver as a separate process on real files,
the way git does, and check ``%A`` and the exit code: a plain merge, two
identical sides (``%A`` is not even rewritten), files over 1 MiB, a file
that cannot be read or written, and the kill-switch that hands the file to git's own
text merge, also inside a real ``git merge``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

from crdt_merge_driver.driver import KILL_SWITCH
from crdt_merge_driver.errors import ExitCode
from tests import gitrepo
from tests.gitrepo import entity, jsonl, relation

BASE = jsonl(entity("Ada", "person", ("likes tea",)), entity("Bob"), relation("Ada", "Bob"))


def stamp(time: str, host: str) -> dict[str, object]:
    # In canonical order (nested keys sorted), as a merged record is written.
    return {"counter": 0, "host": host, "time": time}


def versions(folder: Path, base: bytes, ours: bytes, theirs: bytes) -> tuple[Path, Path, Path]:
    """The three files git would hand the driver (temp names, no extension)."""
    paths = (folder / ".merge_file_O", folder / ".merge_file_A", folder / ".merge_file_B")
    for path, data in zip(paths, (base, ours, theirs), strict=True):
        path.write_bytes(data)
    return paths


def driver(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run ``merge args...`` as git would; the exit code and stderr's lines."""
    full_env = {**os.environ, **(env or {})}
    result = gitrepo.cli("merge", *map(str, args), env=full_env)
    assert result.stdout == b""  # git reads the result from %A, never from stdout
    return result.returncode, result.stderr.decode().splitlines()


# --- a merge ------------------------------------------------------------------------------


def test_the_merge_is_written_over_ours_and_logged_per_record(tmp_path: Path) -> None:
    ours_data = jsonl(
        entity("Ada", "person", ("likes coffee",)),
        entity("Bob", "robot", _crdt=stamp("2026-03-01T09:00:00Z", "laptop")),
        entity("Cy"),
        relation("Ada", "Bob"),
    )
    theirs_data = jsonl(
        entity("Ada", "person", ("likes milk",)),
        entity("Bob", "cat", _crdt=stamp("2026-03-02T09:00:00Z", "server")),
        relation("Ada", "Bob"),
    )
    o, a, b = versions(tmp_path, BASE, ours_data, theirs_data)
    code, err = driver("--marker-size", "7", o, a, b, "memory.jsonl")
    assert code == ExitCode.OK
    assert a.read_bytes() == jsonl(
        entity("Ada", "person", ("likes coffee", "likes milk")),  # tea deleted on both sides
        entity("Bob", "cat", _crdt=stamp("2026-03-02T09:00:00Z", "server")),  # the later stamp
        entity("Cy"),
        relation("Ada", "Bob"),
    )
    assert err == [
        "crdt-merge-driver: merged memory.jsonl: 4 records, +1 added, ~2 changed, -0 deleted, "
        "1 concurrent edits resolved",
        'crdt-merge-driver: memory.jsonl: entity "Bob": edited on both sides, kept entityType '
        '"cat" over "robot" (the later stamp)',
    ]
    assert b.read_bytes() == theirs_data  # only %A is written
    assert o.read_bytes() == BASE


def test_without_a_path_the_log_names_ours(tmp_path: Path) -> None:
    o, a, b = versions(tmp_path, BASE, BASE + b"\n" + entity("Cy"), jsonl(entity("Bob")))
    code, err = driver(o, a, b)
    assert code == ExitCode.OK
    assert err == [f"crdt-merge-driver: merged {a}: 2 records, +1 added, ~0 changed, -2 deleted"]
    assert gitrepo.graph(a.read_bytes()) == (
        {"Bob": ("thing", frozenset()), "Cy": ("thing", frozenset())},
        set(),
    )


def test_ours_keeps_its_mode(tmp_path: Path) -> None:
    o, a, b = versions(tmp_path, BASE, BASE + b"\n" + entity("Cy"), BASE + b"\n" + entity("Dee"))
    a.chmod(0o640)
    code, _ = driver(o, a, b, "memory.jsonl")
    assert code == ExitCode.OK
    assert a.stat().st_mode & 0o777 == 0o640
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".merge_file_A",
        ".merge_file_B",
        ".merge_file_O",
    ]  # no temp file left beside %A


def test_identical_sides_leave_ours_untouched_without_reading_the_ancestor(
    tmp_path: Path,
) -> None:
    same = BASE + b"\n" + entity("Cy")
    o, a, b = versions(tmp_path, b"<<<<<<< not even read", same, same)
    before = a.stat()
    code, err = driver(o, a, b, "memory.jsonl")
    assert code == ExitCode.OK
    assert err == ["crdt-merge-driver: memory.jsonl: both sides are the same"]
    after = a.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert a.read_bytes() == same


# --- files that cannot be read or written --------------------------------------------------


def test_a_missing_file_is_a_conflict_in_one_line(tmp_path: Path) -> None:
    o, a, b = versions(tmp_path, BASE, BASE + b"\n" + entity("Cy"), BASE)
    b.unlink()
    code, err = driver(o, a, b, "memory.jsonl")
    assert code == ExitCode.CONFLICT
    assert err == [f"crdt-merge-driver: memory.jsonl: cannot read {b} (No such file or directory)"]
    assert a.read_bytes() == BASE + b"\n" + entity("Cy")


def test_a_merge_that_cannot_be_written_leaves_ours_as_it_was(tmp_path: Path) -> None:
    ours_data = BASE + b"\n" + entity("Cy")
    o, a, b = versions(tmp_path, BASE, ours_data, BASE + b"\n" + entity("Dee"))

    def small_files_only() -> None:  # in the driver's process: writes past 300 bytes fail
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))

    result = subprocess.run(
        [sys.executable, "-m", "crdt_merge_driver", "merge", *map(str, (o, a, b)), "memory.jsonl"],
        capture_output=True, check=False, preexec_fn=small_files_only,
    )  # fmt: skip
    assert result.returncode == ExitCode.CONFLICT
    assert (
        "crdt-merge-driver: memory.jsonl: cannot write the merge over "
        in result.stderr.decode().splitlines()[0]
    )
    assert "(File too large); left for you to resolve" in result.stderr.decode().splitlines()[0]
    assert a.read_bytes() == ours_data
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".merge_file_A", ".merge_file_B", ".merge_file_O",
    ]  # fmt: skip


# --- files over 1 MiB ----------------------------------------------------------------------


def big_memory(count: int = 14_000) -> list[bytes]:
    """About 2 MB of memory in the server's format: entities, then relations."""
    lines = [
        entity(f"person-{i:05}", "person", (f"met at event {i}", "likes tea", f"badge {i * 7}"))
        for i in range(count)
    ]
    lines += [relation(f"person-{i:05}", f"person-{i + 1:05}") for i in range(0, count, 3)]
    return lines


def test_a_two_megabyte_file_merges_through_the_command_line(tmp_path: Path) -> None:
    lines = big_memory()
    base = jsonl(*lines)
    assert len(base) > 2 * 1024 * 1024
    ours_lines = list(lines)
    ours_lines[5] = entity("person-00005", "person", ("met at event 5", "likes coffee", "badge 35"))
    ours_lines.insert(14_000, entity("newcomer", "person", ("joined today",)))
    theirs_lines = [line for line in lines if b'"person-09000"' not in line]
    theirs_lines[5] = entity("person-00005", "robot", ("met at event 5", "likes tea", "badge 35"))
    o, a, b = versions(tmp_path, base, jsonl(*ours_lines), jsonl(*theirs_lines))

    code, err = driver(o, a, b, "memory.jsonl")
    assert code == ExitCode.OK, err
    merged = a.read_bytes()
    entities, relations = gitrepo.graph(merged)
    assert len(entities) == 14_000  # one added, one deleted
    assert "person-09000" not in entities
    assert relation("person-09000", "person-09001") in lines
    assert ("person-09000", "knows", "person-09001") not in relations  # went with it
    assert entities["newcomer"] == ("person", frozenset({"joined today"}))
    assert entities["person-00005"] == (
        "robot",
        frozenset({"met at event 5", "likes coffee", "badge 35"}),
    )
    assert entities["person-13999"] == (
        "person",
        frozenset({"met at event 13999", "likes tea", "badge 97993"}),
    )
    assert len(relations) == 4_667 - 1
    # Untouched lines come through byte for byte, in place.
    assert merged.split(b"\n")[6:100] == lines[6:100]
    assert err == [
        "crdt-merge-driver: merged memory.jsonl: 18666 records, +1 added, ~1 changed, -2 deleted"
    ]


def test_two_large_sides_that_differ_only_past_the_first_mebibyte_are_merged(
    tmp_path: Path,
) -> None:
    lines = big_memory()
    ours_lines, theirs_lines = list(lines), list(lines)
    # Same length, one byte apart, near the end: only the last chunk compared differs.
    ours_lines[11_000] = lines[11_000].replace(b"likes tea", b"likes tex")
    theirs_lines[11_000] = lines[11_000].replace(b"likes tea", b"likes tez")
    o, a, b = versions(tmp_path, jsonl(*lines), jsonl(*ours_lines), jsonl(*theirs_lines))
    assert a.stat().st_size == b.stat().st_size
    assert a.read_bytes().index(b"likes tex") > 1024 * 1024
    code, _ = driver(o, a, b, "memory.jsonl")
    assert code == ExitCode.OK
    entities, _ = gitrepo.graph(a.read_bytes())
    assert entities["person-11000"][1] == {
        "met at event 11000",
        "likes tex",
        "likes tez",
        "badge 77000",
    }


def test_two_identical_large_sides_are_not_rewritten(tmp_path: Path) -> None:
    same = jsonl(*big_memory())
    o, a, b = versions(tmp_path, b"", same, same)
    before = a.stat()
    code, err = driver(o, a, b, "memory.jsonl")
    assert code == ExitCode.OK
    assert err == ["crdt-merge-driver: memory.jsonl: both sides are the same"]
    assert a.stat().st_ino == before.st_ino
    assert a.read_bytes() == same


# --- the kill-switch: git's own text merge --------------------------------------------------


def test_the_kill_switch_gives_conflict_markers_and_exit_1(tmp_path: Path) -> None:
    ours = BASE.replace(b"likes tea", b"likes coffee")
    theirs = BASE.replace(b"likes tea", b"likes milk")
    o, a, b = versions(tmp_path, BASE, ours, theirs)
    code, err = driver("--marker-size", "9", o, a, b, "memory.jsonl", env={KILL_SWITCH: "1"})
    assert code == ExitCode.CONFLICT
    assert err == [f"crdt-merge-driver: {KILL_SWITCH} is set: memory.jsonl gets git's text merge"]
    text = a.read_bytes().split(b"\n")
    assert text[:5] == [
        b"<<<<<<<<< ours",
        entity("Ada", "person", ("likes coffee",)),
        b"=========",
        entity("Ada", "person", ("likes milk",)),
        b">>>>>>>>> theirs",
    ]


def test_the_kill_switch_merges_separate_lines_as_text(tmp_path: Path) -> None:
    ours = BASE.replace(b"likes tea", b"likes coffee")
    theirs = BASE.replace(b'"knows"', b'"admires"')
    o, a, b = versions(tmp_path, BASE, ours, theirs)
    code, _ = driver(o, a, b, "memory.jsonl", env={KILL_SWITCH: "yes"})
    assert code == ExitCode.OK
    assert a.read_bytes() == BASE.replace(b"likes tea", b"likes coffee").replace(
        b'"knows"', b'"admires"'
    )


def test_the_kill_switch_set_to_0_or_empty_is_off(tmp_path: Path) -> None:
    ours = BASE.replace(b"likes tea", b"likes coffee")
    theirs = BASE.replace(b"likes tea", b"likes milk")
    for value in ("0", ""):
        o, a, b = versions(tmp_path, BASE, ours, theirs)
        code, _ = driver(o, a, b, "memory.jsonl", env={KILL_SWITCH: value})
        assert code == ExitCode.OK
        assert entity("Ada", "person", ("likes coffee", "likes milk")) in a.read_bytes()


def test_the_kill_switch_on_a_file_git_cannot_merge_is_a_conflict_in_one_line(
    tmp_path: Path,
) -> None:
    o, a, b = versions(tmp_path, b"a\0b\n", b"a\0c\n", b"a\0d\n")
    code, err = driver(o, a, b, "memory.jsonl", env={KILL_SWITCH: "1"})
    assert 1 <= code <= 128  # a conflict to git: all three stages are kept
    assert code == ExitCode.GIT
    assert err[-1] == (
        f"crdt-merge-driver: git merge-file failed: error: Cannot merge binary files: {a}"
    )
    assert a.read_bytes() == b"a\0c\n"


def test_the_kill_switch_inside_a_real_git_merge(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    gitrepo.install(repo)
    gitrepo.commit_file(repo, "memory.jsonl", BASE, "the ancestor")
    gitrepo.git(repo, "switch", "--quiet", "-c", "server")
    gitrepo.commit_file(repo, "memory.jsonl", BASE.replace(b"tea", b"milk"), "server")
    gitrepo.git(repo, "switch", "--quiet", "main")
    gitrepo.commit_file(repo, "memory.jsonl", BASE.replace(b"tea", b"coffee"), "laptop")

    env = {**os.environ, KILL_SWITCH: "1"}
    result = subprocess.run(
        ["git", "merge", "--quiet", "server"], cwd=repo, env=env, capture_output=True, check=False
    )
    assert result.returncode == 1
    assert gitrepo.conflicted(repo) == ["memory.jsonl"]
    assert b"<<<<<<< ours" in (repo / "memory.jsonl").read_bytes()
    # Without the switch, the same merge goes through.
    gitrepo.git(repo, "merge", "--abort")
    gitrepo.git(repo, "merge", "--quiet", "--no-edit", "server")
    merged = (repo / "memory.jsonl").read_bytes()
    assert merged == BASE.replace(b'"likes tea"', b'"likes coffee","likes milk"')
