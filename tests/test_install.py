"""install, uninstall and doctor against real repositories, clones and worktrees."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from crdt_merge_driver import git, probe
from crdt_merge_driver.doctor import doctor
from crdt_merge_driver.install import (
    DEFAULT_PATTERNS,
    InstallError,
    driver_command,
    install,
    uninstall,
)
from tests import gitrepo

NAME = "crdt-memory"
MARKER = (
    "# crdt-merge-driver: the lines below attach merge=crdt-memory; "
    "`crdt-merge-driver uninstall` removes them"
)
OWNED = [f"{pattern} merge={NAME}" for pattern in DEFAULT_PATTERNS]


def config(repo: Path, key: str) -> str:
    return gitrepo.git(repo, "config", "--get", key, check=False).rstrip("\n")


def install_here(repo: Path, patterns: list[str] | None = None) -> list[str]:
    return install(repo=repo, scope_global=False, patterns=patterns, name=NAME)


def uninstall_here(repo: Path) -> list[str]:
    return uninstall(repo=repo, scope_global=False, name=NAME)


def lines_of(output: str | bytes) -> list[str]:
    # gitrepo.cli is annotated as text but runs without text=True: accept both.
    return (output.decode() if isinstance(output, bytes) else output).splitlines()


def memory(*names: str) -> bytes:
    return gitrepo.jsonl(*(gitrepo.entity(name) for name in names))


def test_install_writes_the_three_keys_and_the_attribute_lines(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")

    lines = install_here(repo)

    description = "CRDT merge of AI-agent memory files (crdt-merge-driver)"
    assert config(repo, f"merge.{NAME}.name") == description
    python = shlex.quote(sys.executable)
    assert config(repo, f"merge.{NAME}.driver") == (
        f"{python} -E -P -m crdt_merge_driver merge --marker-size %L -- %O %A %B %P"
    )
    assert config(repo, f"merge.{NAME}.recursive") == NAME
    created_marker = f"{MARKER} (and this file, which install created)"
    assert (repo / ".gitattributes").read_text() == "\n".join([created_marker, *OWNED]) + "\n"
    assert lines[0].startswith(f"set merge.{NAME}.name, merge.{NAME}.driver")
    assert any("commit .gitattributes" in line for line in lines)
    attributes = gitrepo.git(repo, "check-attr", "merge", "--", "memory.jsonl", "a/b/memory-x.json",
                             "unified-memory.json", "notes.json")  # fmt: skip
    assert attributes.splitlines() == [
        f"memory.jsonl: merge: {NAME}",
        f"a/b/memory-x.json: merge: {NAME}",
        f"unified-memory.json: merge: {NAME}",
        "notes.json: merge: unspecified",
    ]


def test_driver_command_quotes_an_interpreter_path_with_spaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/opt/my tools/bin/python")
    assert driver_command().startswith(
        "'/opt/my tools/bin/python' -E -P -m crdt_merge_driver merge "
    )


def test_install_twice_changes_nothing(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    before = ((repo / ".git/config").read_bytes(), (repo / ".gitattributes").read_bytes())

    lines = install_here(repo)

    assert lines == [
        f"already installed: merge.{NAME}.* in {repo / '.git/config'} and the crdt-merge-driver "
        f"lines in {repo / '.gitattributes'}; nothing changed"
    ]
    assert ((repo / ".git/config").read_bytes(), (repo / ".gitattributes").read_bytes()) == before


@pytest.mark.parametrize(
    "attributes",
    [
        None,
        b"",
        b"*.txt text\n",
        b"*.txt text\n*.bin binary",  # no final newline
        b"# ours\r\n*.png binary\r\n",
    ],
    ids=["absent", "empty", "lines", "no-final-newline", "crlf"],
)
def test_uninstall_restores_config_and_attributes_byte_for_byte(
    tmp_path: Path, attributes: bytes | None
) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    gitrepo.git(repo, "config", "merge.other.driver", "other %O %A %B")
    gitrepo.git(repo, "config", "core.autocrlf", "false")
    if attributes is not None:
        (repo / ".gitattributes").write_bytes(attributes)
    config_before = (repo / ".git/config").read_bytes()

    install_here(repo)
    assert OWNED[0] in (repo / ".gitattributes").read_text()
    lines = uninstall_here(repo)

    assert (repo / ".git/config").read_bytes() == config_before
    if attributes is None:
        assert not (repo / ".gitattributes").exists()
        assert lines[-1] == f"deleted {repo / '.gitattributes'} (install had created it)"
    else:
        assert (repo / ".gitattributes").read_bytes() == attributes
        assert lines[-1] == f"removed the crdt-merge-driver lines from {repo / '.gitattributes'}"


def test_uninstall_keeps_lines_the_user_wrote_after_the_block(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    with (repo / ".gitattributes").open("a") as stream:
        stream.write("*.sh text eol=lf\n")

    uninstall_here(repo)

    assert (repo / ".gitattributes").read_text() == "*.sh text eol=lf\n"


def test_install_with_other_patterns_updates_the_block_in_place(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    (repo / ".gitattributes").write_bytes(b"*.txt text\n")
    install_here(repo)
    (repo / ".gitattributes").write_bytes((repo / ".gitattributes").read_bytes() + b"*.md text\n")

    lines = install_here(repo, ["agents/*.jsonl", "agents/*.jsonl"])

    assert lines[0] == f"updated {repo / '.gitattributes'}: agents/*.jsonl merge={NAME}"
    assert (repo / ".gitattributes").read_text() == (
        f"*.txt text\n{MARKER}\nagents/*.jsonl merge={NAME}\n*.md text\n"
    )
    uninstall_here(repo)
    assert (repo / ".gitattributes").read_bytes() == b"*.txt text\n*.md text\n"


@pytest.mark.parametrize("attributes", [None, b"*.txt text\n"], ids=["absent", "other-lines"])
def test_uninstall_with_nothing_installed_says_so(tmp_path: Path, attributes: bytes | None) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    if attributes is not None:
        (repo / ".gitattributes").write_bytes(attributes)

    assert uninstall_here(repo) == [
        f"nothing to remove: merge.{NAME} is not installed in {repo / '.git/config'} "
        f"or {repo / '.gitattributes'}"
    ]
    if attributes is not None:
        assert (repo / ".gitattributes").read_bytes() == attributes
    git.unset_config(f"merge.{NAME}.driver", cwd=repo, scope="--local")  # absent is fine


def test_global_install_uses_the_global_config_and_attributes_file(
    tmp_path: Path, hermetic_seal: Path
) -> None:
    global_config = hermetic_seal / ".gitconfig"
    before = global_config.read_bytes()
    outside = tmp_path / "not-a-repo"
    outside.mkdir()

    result = gitrepo.cli("install", "--global", "--repo", str(outside))

    assert result.returncode == 0, result.stderr
    attributes = hermetic_seal / ".config/git/attributes"  # $XDG_CONFIG_HOME/git/attributes
    assert attributes.read_text().splitlines()[1:] == OWNED
    assert f'[merge "{NAME}"]' in global_config.read_text()
    repo = gitrepo.init_repo(tmp_path / "repo")
    assert config(repo, f"merge.{NAME}.recursive") == NAME
    assert not (repo / ".gitattributes").exists()
    assert doctor(repo=repo, name=NAME).healthy

    result = gitrepo.cli("uninstall", "--global", "--repo", str(outside))

    assert result.returncode == 0, result.stderr
    assert global_config.read_bytes() == before
    assert not attributes.exists()


def test_global_install_writes_core_attributes_file_when_set(
    tmp_path: Path, hermetic_seal: Path
) -> None:
    gitrepo.git(tmp_path, "config", "--global", "core.attributesFile", "~/my-attributes")

    lines = install(repo=tmp_path, scope_global=True, patterns=["*.mem"], name=NAME)

    assert (hermetic_seal / "my-attributes").read_text().splitlines()[1:] == [f"*.mem merge={NAME}"]
    assert not (hermetic_seal / ".config/git/attributes").exists()
    assert lines[0] == (
        f"set merge.{NAME}.name, merge.{NAME}.driver, merge.{NAME}.recursive "
        "in the global git config"
    )


def test_install_from_a_sub_folder_writes_at_the_top(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    deeper = repo / "agents" / "claude"
    deeper.mkdir(parents=True)

    result = gitrepo.cli("install", cwd=deeper)

    assert result.returncode == 0, result.stderr
    assert (repo / ".gitattributes").exists()
    assert not (deeper / ".gitattributes").exists()
    assert config(repo, f"merge.{NAME}.recursive") == NAME
    assert install(repo=deeper / "..", scope_global=False, patterns=None, name=NAME)[0].startswith(
        "already installed"
    )


def test_install_in_a_linked_worktree_writes_the_common_config(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    gitrepo.commit(repo, "first")
    worktree = tmp_path / "worktree"
    gitrepo.git(repo, "worktree", "add", "--quiet", "-b", "side", str(worktree))

    lines = install_here(worktree / ".")

    assert lines[0].endswith(f"in {repo / '.git' / 'config'}")
    assert config(repo, f"merge.{NAME}.driver") == driver_command()
    assert (worktree / ".gitattributes").exists()
    assert not (repo / ".gitattributes").exists()
    assert doctor(repo=worktree, name=NAME).healthy
    uninstall_here(worktree)
    assert config(repo, f"merge.{NAME}.driver") == ""


def test_install_outside_a_repository_names_the_folder(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()

    result = gitrepo.cli("install", "--repo", str(plain))

    assert result.returncode == 2
    assert lines_of(result.stderr) == [
        f"crdt-merge-driver: {plain} is not inside a git work tree "
        "(run `git init` there, or pass --repo with a repository's folder)"
    ]
    with pytest.raises(InstallError, match="is not a folder"):
        doctor(repo=tmp_path / "missing", name=NAME)


def test_install_in_a_bare_repository_is_refused(tmp_path: Path) -> None:
    bare = gitrepo.init_bare(tmp_path / "bare.git")
    with pytest.raises(InstallError, match="is not inside a git work tree"):
        install_here(bare)


def test_a_broken_config_is_reported_as_git_said_it(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    (repo / ".git/config").write_text("[core\nbroken")

    result = gitrepo.cli("doctor", "--repo", str(repo))

    assert result.returncode == 3
    assert lines_of(result.stderr) == [
        "crdt-merge-driver: `git rev-parse --show-toplevel --absolute-git-dir "
        "--path-format=absolute --git-common-dir` failed with exit code 128: "
        "fatal: bad config line 1 in file .git/config"
    ]


@pytest.mark.parametrize(
    ("patterns", "name", "message"),
    [
        (["memory notes.json"], NAME, "cannot be written as one .gitattributes line"),
        (["!memory.json"], NAME, "cannot be written as one .gitattributes line"),
        ([""], NAME, "cannot be written as one .gitattributes line"),
        (None, "crdt memory", "must be letters, digits"),
    ],
)
def test_install_refuses_what_cannot_be_written(
    tmp_path: Path, patterns: list[str] | None, name: str, message: str
) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    with pytest.raises(InstallError, match=message):
        install(repo=repo, scope_global=False, patterns=patterns, name=name)
    assert not (repo / ".gitattributes").exists()


# --- doctor ---------------------------------------------------------------------


def test_doctor_is_healthy_after_install(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    gitrepo.install(repo)
    gitrepo.commit_file(repo, "agents/memory.jsonl", memory("A"))

    result = gitrepo.cli("doctor", "--repo", str(repo))

    assert result.returncode == 0, result.stdout
    lines = lines_of(result.stdout)
    assert all(line.startswith(("ok: ", "note: ")) for line in lines), lines
    assert f"ok: agents/memory.jsonl uses merge={NAME}" in lines
    assert any("libgit2" in line for line in lines)


def test_clone_without_install_gets_markers_until_install(tmp_path: Path, remote: Path) -> None:
    laptop = gitrepo.clone(remote, tmp_path / "laptop")
    gitrepo.install(laptop)
    gitrepo.write(laptop, "memory.jsonl", memory("A"))
    gitrepo.commit(laptop, "start the memory")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    server = gitrepo.clone(remote, tmp_path / "server")  # .gitattributes arrives; config does not

    result = gitrepo.cli("doctor", "--repo", str(server))

    assert result.returncode == 6
    found = lines_of(result.stdout)
    assert found[0] == (
        f"problem: merge.{NAME}.driver is not set, so git does not know the driver `{NAME}` and "
        f"merges memory files as text; run `crdt-merge-driver install --repo {server}`"
    )
    assert found[1] == (
        f"problem: memory.jsonl has merge={NAME} in .gitattributes, but this "
        f"clone has no merge.{NAME}.driver: git silently falls back to its text merge and writes "
        f"conflict markers; run `crdt-merge-driver install --repo {server}`"
    )

    gitrepo.commit_file(laptop, "memory.jsonl", memory("A", "from-laptop"))
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "memory.jsonl", memory("A", "from-server"))
    gitrepo.git(server, "fetch", "--quiet", "origin")
    merged = gitrepo.git_result(server, "merge", "--no-edit", "origin/main")
    assert merged.returncode == 1
    assert gitrepo.conflicted(server) == ["memory.jsonl"]
    assert b"<<<<<<<" in (server / "memory.jsonl").read_bytes()
    gitrepo.git(server, "merge", "--abort")

    gitrepo.install(server)
    assert gitrepo.cli("doctor", "--repo", str(server)).returncode == 0
    merged = gitrepo.git_result(server, "merge", "--no-edit", "origin/main")

    assert merged.returncode == 0, merged.stderr
    entities, _ = gitrepo.graph((server / "memory.jsonl").read_bytes())
    assert set(entities) == {"A", "from-laptop", "from-server"}


def write_driver(repo: Path, command: str) -> None:
    gitrepo.git(repo, "config", f"merge.{NAME}.driver", command)


def problems(repo: Path) -> list[str]:
    diagnosis = doctor(repo=repo, name=NAME)
    found = [line for line in diagnosis.lines if line.startswith("problem: ")]
    assert diagnosis.healthy == (not found)
    return found


def failed(repo: Path, command: str, reason: str) -> str:
    """The problem line doctor gives for a driver command whose test merge failed."""
    return (
        f"problem: merge.{NAME}.driver `{command}` failed a test merge run as git runs it "
        f"({reason}); "
    )


def test_doctor_names_an_interpreter_that_is_gone(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    command = "/gone/venv/bin/python -m crdt_merge_driver merge %O %A %B %P"
    write_driver(repo, command)

    [problem] = problems(repo)

    # What sh says then (dash: "sh: 1: /gone/venv/bin/python: not found") differs between shells.
    assert problem.startswith(failed(repo, command, "exit 127: sh: ").removesuffix("); "))
    assert problem.endswith(
        "); the interpreter /gone/venv/bin/python does not exist (a removed virtualenv?); "
        f"run `crdt-merge-driver install --repo {repo}` with the python that has crdt-merge-driver"
    )


def test_doctor_names_an_interpreter_that_cannot_import_the_package(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text("#!/bin/sh\necho \"$0: No module named crdt_merge_driver\" >&2\nexit 1\n")
    python.chmod(0o755)
    command = f"{python} -E -P -m crdt_merge_driver merge %O %A %B %P"
    write_driver(repo, command)

    assert problems(repo) == [
        failed(repo, command, f"exit 1: {python}: No module named crdt_merge_driver")
        + f"{python} cannot import crdt_merge_driver: install crdt-merge-driver into it "
        f"(docs/install.md), or run `crdt-merge-driver install --repo {repo}` from the "
        "environment that has it"
    ]


def test_doctor_tells_an_old_isolated_driver_to_reinstall(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    # The -I form earlier versions wrote still works where the package is not in the user site.
    write_driver(repo, driver_command().replace(" -E -P ", " -I "))
    assert problems(repo) == []

    # Where it is, -I keeps it off sys.path (tests/test_install_paths.py does it for real).
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'No module named crdt_merge_driver' >&2\nexit 1\n")
    python.chmod(0o755)
    command = f"{python} -I -m crdt_merge_driver merge --marker-size %L -- %O %A %B %P"
    write_driver(repo, command)

    assert problems(repo) == [
        failed(repo, command, "exit 1: No module named crdt_merge_driver")
        + "-I hides the user site, where `pip install --user` puts crdt-merge-driver; run "
        f"`crdt-merge-driver install --repo {repo}` to rewrite it with -E -P"
    ]


def test_doctor_names_the_kill_switch_when_it_is_what_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    monkeypatch.setenv("CRDT_MERGE_DRIVER_DISABLE", "1")

    [problem] = problems(repo)

    assert problem.startswith(failed(repo, driver_command(), "exit 1").removesuffix("); "))
    assert problem.endswith(
        "(exit 1: crdt-merge-driver: CRDT_MERGE_DRIVER_DISABLE is set: memory.jsonl gets git's "
        "text merge); unset CRDT_MERGE_DRIVER_DISABLE to merge memory files with the driver again"
    )


def test_doctor_names_an_interpreter_that_cannot_start(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    python = tmp_path / "python"
    python.write_text("#!/no/such/interpreter\n")
    python.chmod(0o755)
    command = f"{python} -m crdt_merge_driver merge %O %A %B %P"
    write_driver(repo, command)

    [problem] = problems(repo)

    # The shell's words for a missing #! interpreter differ between shells.
    assert problem.startswith(failed(repo, command, "exit 127: ").removesuffix("); "))
    assert problem.endswith(f"run `crdt-merge-driver install --repo {repo}` with a working python")


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("cat %A", "exit 0, but %A lacks doctor-theirs"),
        ("true", "exit 0, but %A lacks doctor-theirs"),
        ("python -m 'crdt_merge_driver merge", "exit 2: sh: "),  # then the shell's words
        ("exit 3", "exit 3"),
        ("rm %A", "exit 0, but %A is gone"),
        ("echo '{' > %A", "exit 0, but %A is not JSONL"),
        ("cp %B %A", "exit 0, but %A lacks doctor-ours"),
        ("echo 1 > %A", "exit 0, but %A lacks doctor-base, doctor-ours, doctor-theirs"),
    ],
    ids=["cat", "true", "bad-quote", "exit-3", "rm", "garbage", "theirs", "not-records"],
)
def test_doctor_flags_a_command_that_is_not_the_driver(
    tmp_path: Path, command: str, reason: str
) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    write_driver(repo, command)

    [problem] = problems(repo)

    assert problem.startswith(failed(repo, command, reason).removesuffix("); "))
    assert problem.endswith(
        "); it does not run `<python> -E -P -m crdt_merge_driver`; "
        f"run `crdt-merge-driver install --repo {repo}` to replace it"
    )


def test_doctor_gives_up_on_a_driver_that_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    write_driver(repo, "sleep 30")
    monkeypatch.setattr(probe, "TIMEOUT", 0.2)

    [problem] = problems(repo)

    assert problem.startswith(
        failed(repo, "sleep 30", "could not be run: Command '['sh', '-c', 'sleep 30']' timed out")
        .removesuffix("); ")
    )


def test_doctor_runs_the_driver_as_git_does_from_the_top_of_the_work_tree(
    tmp_path: Path,
) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    # A module committed to the memory repository must not be importable by the driver.
    gitrepo.commit_file(repo, "orjson.py", b"raise SystemExit('orjson.py of the work tree ran')")
    assert problems(repo) == []

    command = f"{sys.executable} -m crdt_merge_driver merge --marker-size %L -- %O %A %B %P"
    write_driver(repo, command)  # no -P: the work tree comes first on sys.path

    assert problems(repo) == [
        failed(repo, command, "exit 1: orjson.py of the work tree ran")
        + f"run `crdt-merge-driver install --repo {repo}` with a working python"
    ]


def test_doctor_passes_a_wrapper_that_runs_the_driver(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    wrapper = tmp_path / "my driver"
    python = shlex.quote(sys.executable)
    wrapper.write_text(f'#!/bin/sh\nexec {python} -E -P -m crdt_merge_driver "$@"\n')
    wrapper.chmod(0o755)
    write_driver(repo, f"{shlex.quote(str(wrapper))} merge -- %O %A %B %P")

    assert problems(repo) == []


def test_doctor_flags_a_foreign_command_and_a_foreign_recursive_driver(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install(repo=repo, scope_global=False, patterns=None, name="mine")
    gitrepo.git(repo, "config", "merge.mine.driver", "cat %A")
    gitrepo.git(repo, "config", "merge.mine.recursive", "binary")

    found = doctor(repo=repo, name="mine").lines

    fix = f"crdt-merge-driver install --repo {repo} --name mine"
    assert found[1] == (
        "problem: merge.mine.driver `cat %A` failed a test merge run as git runs it (exit 0, but "
        "%A lacks doctor-theirs); it does not run `<python> -E -P -m crdt_merge_driver`; "
        f"run `{fix}` to replace it"
    )
    assert found[2] == (
        "problem: merge.mine.recursive is `binary`: criss-cross merges build their virtual "
        f"ancestor with it, not with the driver; run `{fix}`"
    )


def test_doctor_flags_memory_files_the_driver_is_not_attached_to(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    gitrepo.commit_file(repo, "memory.json", b"[]")
    gitrepo.commit_file(repo, "memory.jsonl", memory("A"))
    install_here(repo)
    with (repo / ".gitattributes").open("a") as stream:
        stream.write("memory.json -merge\n")  # a later line wins

    assert problems(repo) == [
        f"problem: memory.json is a memory file but has -merge, not merge={NAME}: git keeps "
        f"this side's version and reports a conflict; run `crdt-merge-driver install --repo "
        f"{repo}` and check that no later .gitattributes line overrides it "
        "(`git check-attr merge -- memory.json`)"
    ]


def test_doctor_flags_a_memory_file_when_only_the_config_is_there(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    gitrepo.commit_file(repo, "notes/unified-memory.json", b"[]")
    gitrepo.git(repo, "config", f"merge.{NAME}.driver", driver_command())

    [problem] = problems(repo)

    assert problem.startswith(
        "problem: notes/unified-memory.json is a memory file but has no merge attribute, not "
        f"merge={NAME}: git merges it as text"
    )


def test_doctor_with_no_memory_files_checks_where_a_new_one_would_go(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    gitrepo.git(repo, "config", f"merge.{NAME}.driver", driver_command())

    assert problems(repo) == [
        "problem: no memory files tracked yet, and a new memory.jsonl would have no merge "
        f"attribute, not merge={NAME}: git merges it as text; run `crdt-merge-driver install "
        f"--repo {repo}`"
    ]
    install_here(repo)
    assert problems(repo) == []


# --- criss-cross: the virtual ancestor goes through the driver too -------------------


def criss_cross(repo: Path) -> None:
    """main and side each merged the other's first commit, then moved on: two merge bases."""
    gitrepo.install(repo)
    gitrepo.commit_file(repo, "memory.jsonl", memory("A"))
    gitrepo.git(repo, "checkout", "--quiet", "-b", "side")
    gitrepo.commit_file(repo, "memory.jsonl", memory("A", "R1"))
    gitrepo.git(repo, "checkout", "--quiet", "main")
    gitrepo.commit_file(repo, "memory.jsonl", memory("A", "L1"))
    gitrepo.git(repo, "merge", "--quiet", "--no-edit", "side")
    gitrepo.git(repo, "checkout", "--quiet", "side")
    gitrepo.git(repo, "merge", "--quiet", "--no-edit", "main~1")
    gitrepo.commit_file(repo, "memory.jsonl", (repo / "memory.jsonl").read_bytes() + b"\n"
                        + gitrepo.entity("R3"))  # fmt: skip
    gitrepo.git(repo, "checkout", "--quiet", "main")
    gitrepo.commit_file(repo, "memory.jsonl", (repo / "memory.jsonl").read_bytes() + b"\n"
                        + gitrepo.entity("L3"))  # fmt: skip
    assert len(gitrepo.git(repo, "merge-base", "--all", "main", "side").split()) == 2


def test_criss_cross_merge_builds_the_virtual_ancestor_with_the_driver(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    criss_cross(repo)

    merged = gitrepo.git_result(repo, "merge", "--no-edit", "side")

    assert merged.returncode == 0, merged.stderr
    # Once for the virtual ancestor (L1 + R1), once for the merge itself.
    assert merged.stderr.count("crdt-merge-driver: merged memory.jsonl") == 2
    entities, _ = gitrepo.graph((repo / "memory.jsonl").read_bytes())
    assert set(entities) == {"A", "L1", "R1", "L3", "R3"}


def test_criss_cross_merge_with_the_text_merge_inside_conflicts(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    criss_cross(repo)

    merged = gitrepo.git_result(
        repo, "-c", f"merge.{NAME}.recursive=text", "merge", "--no-edit", "side"
    )

    # The text-merged virtual ancestor has conflict markers, which the driver refuses.
    assert merged.returncode == 1
    assert "(ancestor, %O), line 2: conflict marker" in merged.stderr


def test_kill_switch_gives_gits_text_merge_through_the_installed_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    install_here(repo)
    gitrepo.commit_file(repo, "memory.jsonl", memory("A"))
    gitrepo.git(repo, "checkout", "--quiet", "-b", "side")
    gitrepo.commit_file(repo, "memory.jsonl", memory("A", "B"))
    gitrepo.git(repo, "checkout", "--quiet", "main")
    gitrepo.commit_file(repo, "memory.jsonl", memory("A", "C"))
    monkeypatch.setenv("CRDT_MERGE_DRIVER_DISABLE", "1")

    merged = gitrepo.git_result(repo, "merge", "--no-edit", "side")

    assert merged.returncode == 1
    assert "CRDT_MERGE_DRIVER_DISABLE is set: memory.jsonl gets git's text merge" in merged.stderr
    assert b"<<<<<<<" in (repo / "memory.jsonl").read_bytes()
