"""The command line: help, version, the driver's fast path, and exit codes.

Users meet the tool through ``--help``; git meets it through the driver's
command line, which is read without argparse and must accept exactly what
``install`` writes (and leave anything else to argparse, which explains the
mistake); scripts and CI meet it through exit codes, one per kind of
failure (errors.py), each with one line on stderr. Every test runs the real
command in its own process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from crdt_merge_driver import __version__
from crdt_merge_driver.errors import ExitCode
from tests import gitrepo
from tests.gitrepo import entity, jsonl, relation

COMMANDS = {
    "merge": ("BASE", "OURS", "THEIRS", "PATH", "--marker-size"),
    "join": ("FILE", "-o OUT, --output OUT", "--format {jsonl,array}"),
    "install": ("--repo DIR", "--global", "--name NAME", "--pattern GLOB"),
    "uninstall": ("--repo DIR", "--global", "--name NAME"),
    "doctor": ("--repo DIR", "--name NAME"),
    "sync": (
        "PATH",
        "--repo DIR",
        "--remote REMOTE",
        "--branch BRANCH",
        "-m MESSAGE, --message MESSAGE",
        "--attempts ATTEMPTS",
        "--deadline DEADLINE",
        "--allow-mass-delete",
    ),
    "backup": ("--memory FILE", "--repo DIR", "--as PATH_IN_REPO", "--no-restore"),
    "restore": ("--memory FILE", "--repo DIR", "--as PATH_IN_REPO"),
    "watch": ("--memory FILE", "--repo DIR", "--interval SECONDS", "--debounce SECONDS"),
    "setup": ("REMOTE", "--repo DIR", "--memory FILE", "--branch BRANCH", "--schedule",
              "--every MINUTES", "--remove", "-q, --quiet", "--log FILE"),
    "status": ("--repo DIR", "--memory FILE", "--json", "--offline"),
    "migrate": ("--repo DIR", "--dry-run"),
    "demo": ("--keep DIR",),
}
BASE = jsonl(entity("Ada", "person", ("likes tea",)), entity("Bob"), relation("Ada", "Bob"))


def run(*args: str | Path, cwd: Path | None = None) -> tuple[int, str, str]:
    result = gitrepo.cli(*map(str, args), cwd=cwd)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


# --- help and version ------------------------------------------------------------------------


def test_help_lists_every_command_and_where_to_start() -> None:
    code, out, err = run("--help")
    assert code == ExitCode.OK
    assert err == ""
    assert out.startswith("usage: crdt-merge-driver [-h] [--version] COMMAND ...")
    listed = re.findall(r"^    (\S+)", out, re.MULTILINE)  # a long name's summary wraps
    assert listed == list(COMMANDS)
    assert "Try `crdt-merge-driver demo`" in out


def test_version_is_the_installed_packages() -> None:
    code, out, _ = run("--version")
    assert code == ExitCode.OK
    assert out == f"crdt-merge-driver {__version__}\n"
    assert __version__ == version("crdt-merge-driver")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_commands_help_lists_its_options(command: str) -> None:
    code, out, err = run(command, "--help")
    assert code == ExitCode.OK
    assert err == ""
    assert out.startswith(f"usage: crdt-merge-driver {command} [-h]")
    for option in COMMANDS[command]:
        assert option in out, f"{command} --help does not mention {option}"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        pytest.param((), "the following arguments are required: COMMAND", id="no-command"),
        pytest.param(("merg",), "argument COMMAND: invalid choice: 'merg'", id="unknown-command"),
        pytest.param(("doctor", "--fix"), "unrecognized arguments: --fix", id="unknown-option"),
        pytest.param(("join", "--format", "csv", "x.jsonl"), "invalid choice: 'csv'", id="format"),
        pytest.param(("sync", "--attempts", "many"), "invalid int value: 'many'", id="attempts"),
    ],
)
def test_a_usage_mistake_exits_2_with_the_usage_and_the_complaint(
    args: tuple[str, ...], complaint: str
) -> None:
    code, out, err = run(*args)
    assert code == ExitCode.USAGE
    assert out == ""
    assert err.startswith("usage: crdt-merge-driver")
    assert complaint in err.splitlines()[-1]


# --- the driver's command line ----------------------------------------------------------------


def versions(folder: Path) -> tuple[Path, Path, Path]:
    paths = (folder / "O", folder / "A", folder / "B")
    ours = BASE.replace(b"likes tea", b"likes coffee")
    theirs = BASE + b"\n" + entity("Cy")
    for path, data in zip(paths, (BASE, ours, theirs), strict=True):
        path.write_bytes(data)
    return paths


MERGED = jsonl(
    entity("Ada", "person", ("likes coffee",)), entity("Bob"), entity("Cy"), relation("Ada", "Bob")
)


@pytest.mark.parametrize(
    ("shape", "shown"),
    [
        pytest.param(("--marker-size", "7", "{O}", "{A}", "{B}", "memory.jsonl"), "memory.jsonl",
                     id="as-install-writes-it"),
        pytest.param(("{O}", "{A}", "{B}", "memory.jsonl"), "memory.jsonl", id="no-marker-size"),
        pytest.param(("--marker-size", "7", "{O}", "{A}", "{B}"), "{A}", id="no-path"),
        pytest.param(("{O}", "{A}", "{B}"), "{A}", id="three-files"),
        # Not the fast path's shape: argparse reads these, with the same result.
        pytest.param(("{O}", "{A}", "{B}", "memory.jsonl", "--marker-size", "9"), "memory.jsonl",
                     id="option-last"),
        pytest.param(("--marker-size=9", "{O}", "{A}", "{B}", "memory.jsonl"), "memory.jsonl",
                     id="option-with-equals"),
        pytest.param(("--", "{O}", "{A}", "{B}", "memory.jsonl"), "memory.jsonl",
                     id="double-dash"),
    ],
)  # fmt: skip
def test_the_driver_command_line_in_every_shape(
    tmp_path: Path, shape: tuple[str, ...], shown: str
) -> None:
    o, a, b = versions(tmp_path)
    names = {"O": str(o), "A": str(a), "B": str(b)}
    code, out, err = run("merge", *(part.format(**names) for part in shape))
    assert code == ExitCode.OK, err
    assert out == ""
    assert a.read_bytes() == MERGED
    assert err.startswith(f"crdt-merge-driver: merged {shown.format(**names)}: 4 records")


@pytest.mark.parametrize(
    ("shape", "complaint"),
    [
        pytest.param(("{O}", "{A}"), "the following arguments are required: THEIRS", id="two"),
        pytest.param(("--marker-size", "x", "{O}", "{A}", "{B}"), "invalid int value: 'x'",
                     id="marker-size-not-a-number"),
        pytest.param(("{O}", "{A}", "{B}", "memory.jsonl", "extra"), "unrecognized arguments",
                     id="five"),
    ],
)  # fmt: skip
def test_a_wrong_driver_command_line_leaves_ours_alone(
    tmp_path: Path, shape: tuple[str, ...], complaint: str
) -> None:
    o, a, b = versions(tmp_path)
    before = a.read_bytes()
    names = {"O": str(o), "A": str(a), "B": str(b)}
    code, _, err = run("merge", *(part.format(**names) for part in shape))
    assert code == ExitCode.USAGE  # between 1 and 128: git keeps all three stages
    assert complaint in err.splitlines()[-1]
    assert a.read_bytes() == before


def test_a_memory_file_in_a_folder_whose_name_starts_with_a_dash_merges(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    gitrepo.install(repo)
    name = "-team/memory.jsonl"
    gitrepo.commit_file(repo, name, BASE, "the ancestor")
    gitrepo.git(repo, "switch", "--quiet", "-c", "other")
    gitrepo.commit_file(repo, name, BASE + b"\n" + entity("Cy"), "other")
    gitrepo.git(repo, "switch", "--quiet", "main")
    gitrepo.commit_file(repo, name, BASE.replace(b"likes tea", b"likes coffee"), "main")
    result = gitrepo.git_result(repo, "merge", "--no-edit", "other")
    assert result.returncode == 0, result.stderr
    assert (repo / name).read_bytes() == MERGED


# --- errors become exit codes -------------------------------------------------------------------


def test_bad_input_to_the_driver_exits_1_in_one_line(tmp_path: Path) -> None:
    o, a, b = versions(tmp_path)
    b.write_bytes(BASE + b"\n<<<<<<< HEAD")
    before = a.read_bytes()
    code, _, err = run("merge", o, a, b, "memory.jsonl")
    assert code == ExitCode.CONFLICT
    assert err == (
        "crdt-merge-driver: cannot merge memory.jsonl (theirs, %B), line 4: conflict marker "
        "(a text merge was left unresolved); left for you to resolve\n"
    )
    # git's text merge: ours' lines and theirs' (bad) line both in view.
    assert set(before.split(b"\n")) <= set(a.read_bytes().split(b"\n"))
    assert a.read_bytes().endswith(b"\n<<<<<<< HEAD")


def test_a_user_error_exits_2_in_one_line(tmp_path: Path) -> None:
    code, out, err = run("install", "--repo", tmp_path / "nowhere")
    assert code == ExitCode.USAGE
    assert out == ""
    assert err == f"crdt-merge-driver: {tmp_path / 'nowhere'} is not a folder\n"


def test_a_file_system_error_exits_2_in_one_line(tmp_path: Path) -> None:
    # Found by review: a folder where install writes .gitattributes gave a traceback.
    repo = gitrepo.init_repo(tmp_path / "repo")
    (repo / ".gitattributes").mkdir()
    code, out, err = run("install", "--repo", repo)
    assert code == ExitCode.USAGE
    assert err == f"crdt-merge-driver: {repo / '.gitattributes'}: Is a directory\n", out


def test_doctor_on_a_repository_without_the_driver_exits_6(tmp_path: Path) -> None:
    repo = gitrepo.init_repo(tmp_path / "repo")
    code, out, _ = run("doctor", "--repo", repo)
    assert code == ExitCode.NOT_CONFIGURED
    assert "problem: merge.crdt-memory.driver is not set" in out
    gitrepo.install(repo)
    gitrepo.commit_file(repo, "memory.jsonl", BASE)
    code, _, _ = run("doctor", "--repo", repo)
    assert code == ExitCode.OK


@pytest.fixture
def clone(tmp_path: Path, remote: Path) -> Path:
    """A clone with the driver installed and four entities pushed to ``remote``."""
    path = gitrepo.clone(remote, tmp_path / "laptop")
    gitrepo.install(path)
    memory = jsonl(*(entity(name) for name in ("Ada", "Bob", "Cy", "Dee")))
    gitrepo.commit_file(path, "memory.jsonl", memory, "four entities")
    gitrepo.git(path, "push", "--quiet", "origin", "HEAD:main")
    return path


def one_line(err: str) -> str:
    """The one line (an error) a failed command prints by default, stamped: stderr is a pipe."""
    lines = gitrepo.unstamped(err).splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("crdt-merge-driver: "), err
    return lines[0]


def test_a_git_failure_exits_3(clone: Path, tmp_path: Path) -> None:
    gitrepo.git(clone, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    (clone / "memory.jsonl").write_bytes(BASE)
    code, _, err = run("sync", "--repo", clone, "--attempts", "1")
    assert code == ExitCode.GIT
    assert "gone.git" in one_line(err)


def test_giving_up_on_a_busy_remote_exits_4(clone: Path, remote: Path) -> None:
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'busy: try again later' >&2\nexit 1\n")
    hook.chmod(0o755)
    (clone / "memory.jsonl").write_bytes(
        jsonl(*(entity(n) for n in ("Ada", "Bob", "Cy", "Dee", "Eve")))
    )
    code, _, err = run("sync", "--repo", clone, "--attempts", "1")
    assert code == ExitCode.GAVE_UP
    assert "gave up" in err
    assert gitrepo.git(remote, "log", "-1", "--format=%s", "main").strip() == "four entities"


def test_a_clone_this_user_cannot_write_says_what_to_check(clone: Path) -> None:
    # Found by review (2026-12-04): a bare "...lock: Permission denied". Root writes through
    # any mode, so the folder is made immutable instead (ext4 and the like; else skipped).
    git_dir = clone / ".git"
    frozen = subprocess.run(["chattr", "+i", str(git_dir)], check=False, capture_output=True)
    if frozen.returncode != 0:
        pytest.skip("chattr +i does not work here")
    try:
        code, _, err = run("sync", "--repo", clone)
    finally:
        subprocess.run(["chattr", "-i", str(git_dir)], check=True)
    assert code == ExitCode.USAGE
    [line] = err.splitlines()
    assert "check the owner and mode of its folder" in line, line


def test_a_refused_mass_delete_exits_5_and_is_allowed_on_request(clone: Path, remote: Path) -> None:
    (clone / "memory.jsonl").write_bytes(b"")  # emptied (3 of the 4 deleted is not enough)
    code, _, err = run("sync", "--repo", clone)
    assert code == ExitCode.REFUSED
    assert "--allow-mass-delete" in err
    assert gitrepo.git(remote, "log", "-1", "--format=%s", "main").strip() == "four entities"
    code, _, err = run("sync", "--repo", clone, "--allow-mass-delete")
    assert code == ExitCode.OK, err
    assert gitrepo.git(remote, "show", "main:memory.jsonl") == ""


def test_the_console_script_is_the_same_program() -> None:
    # pip puts the `crdt-merge-driver` command beside the interpreter it installed into.
    script = Path(sys.executable).parent / "crdt-merge-driver"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == ExitCode.OK
    assert result.stdout == f"crdt-merge-driver {__version__}\n"
