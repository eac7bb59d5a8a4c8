"""The paths a user takes after the first day (issue 9, items 3 to 7), end to end.

An install before the first pull, a symlinked live file, the log a cron line
writes, the errors a new user meets, the lock under kill -9 and a full disk:
each with real git, a bare remote and, where memory is edited, the real
memory server; commands run as separate processes, as cron runs them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import shlex
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdt_merge_driver.early import SET_ASIDE
from crdt_merge_driver.errors import ExitCode
from crdt_merge_driver.sync.lock import LOCK
from tests import gitrepo
from tests.memory_server import ServerFactory
from tests.test_backup import (
    MEMORY,
    Graph,
    Machine,
    machine,
    new,
    observe,
    ok,
    one_line_error,
    remote_graph,
)
from tests.test_sync import hold_lock

REPO_ROOT = Path(__file__).resolve().parent.parent
USER_LINE = b"*.txt text eol=lf\n"  # a line of the user's own, beside install's


def names(found: Graph) -> set[str]:
    return set(found[0])


def first_machine(tmp_path: Path, remote: Path, start: ServerFactory) -> Machine:
    """The machine that set the remote up: install, commit .gitattributes, a first backup."""
    first = machine(tmp_path, remote, start, "first")
    gitrepo.install(first.clone)
    gitrepo.commit(first.clone, "install the memory driver", ".gitattributes")
    gitrepo.git(first.clone, "push", "--quiet", "origin", "HEAD:main")
    first.server.create_entities([new("Ada", "person", "likes tea")])
    first.backup()
    return first


def early_machine(tmp_path: Path, remote: Path, start: ServerFactory, variant: str) -> Machine:
    """A clone of the still empty remote that ran install at once: .gitattributes untracked."""
    early = machine(tmp_path, remote, start, "early")
    gitrepo.install(early.clone)
    if variant == "different":
        with (early.clone / ".gitattributes").open("ab") as stream:
            stream.write(USER_LINE)
    assert gitrepo.git(early.clone, "status", "--porcelain") == "?? .gitattributes\n"
    return early


def doctor(clone: Path) -> subprocess.CompletedProcess[bytes]:
    return gitrepo.cli("doctor", "--repo", str(clone))


def problems(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [line for line in result.stdout.decode().splitlines() if line.startswith("problem:")]


def check_attributes_adopted(early: Machine, first: Machine, variant: str) -> None:
    """The remote's .gitattributes is the clone's now; only the user's own line is added back."""
    remote_attributes = (first.clone / ".gitattributes").read_bytes()
    tracked = gitrepo.git(early.clone, "ls-files", "--", ".gitattributes")
    assert tracked == ".gitattributes\n"
    here = (early.clone / ".gitattributes").read_bytes()
    if variant == "identical":
        assert here == remote_attributes
        assert gitrepo.git(early.clone, "status", "--porcelain") == ""
    else:
        assert here == remote_attributes + USER_LINE
        assert gitrepo.git(early.clone, "status", "--porcelain") == " M .gitattributes\n"
    assert not (early.clone / ".git" / SET_ASIDE).exists()
    # A plain `git pull` works there again, and the driver is still attached.
    gitrepo.git(early.clone, "pull", "--quiet", "--ff-only")
    attribute = gitrepo.git(early.clone, "check-attr", "merge", "--", MEMORY)
    assert attribute.endswith(": merge: crdt-memory\n")


# --- item 3: install before the first pull ------------------------------------------------------


@pytest.mark.parametrize("variant", ["identical", "different"])
def test_a_clone_that_installed_before_its_first_pull_backs_up(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, variant: str
) -> None:
    early = early_machine(tmp_path, remote, memory_server_factory, variant)
    first = first_machine(tmp_path, remote, memory_server_factory)
    gitrepo.git(early.clone, "fetch", "--quiet")
    # What a user meets first: `git pull` refuses, and doctor says so with the fix.
    assert gitrepo.git_result(early.clone, "pull", "--ff-only").returncode != 0
    before = doctor(early.clone)
    assert before.returncode == ExitCode.NOT_CONFIGURED, before.stdout.decode()
    [problem] = problems(before)
    assert "is not committed here while origin/main has one" in problem
    assert f"crdt-merge-driver sync --repo {early.clone}" in problem

    early.server.create_entities([new("Grace", "person", "wrote a compiler")])
    early.backup()

    check_attributes_adopted(early, first, variant)
    assert names(remote_graph(remote)) == {"Ada", "Grace"}
    assert names(early.graph()) == {"Ada", "Grace"}  # restored through its own server
    first.backup()
    assert names(first.graph()) == {"Ada", "Grace"}
    after = doctor(early.clone)
    assert after.returncode == ExitCode.OK, after.stdout.decode()


@pytest.mark.parametrize("variant", ["identical", "different"])
def test_a_clone_that_installed_before_its_first_pull_syncs_its_commit(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, variant: str
) -> None:
    early = early_machine(tmp_path, remote, memory_server_factory, variant)
    first = first_machine(tmp_path, remote, memory_server_factory)
    # This clone is the memory folder itself: its server writes the file in the clone.
    server = memory_server_factory(early.clone / MEMORY)
    server.create_entities([new("Hopper", "person", "found a bug")])
    ok(gitrepo.cli("sync", "--repo", str(early.clone)))

    check_attributes_adopted(early, first, variant)
    assert names(remote_graph(remote)) == {"Ada", "Hopper"}
    assert doctor(early.clone).returncode == ExitCode.OK


@pytest.mark.parametrize("command", ["sync", "restore"])
def test_a_clone_with_nothing_of_its_own_takes_the_remotes_history(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, command: str
) -> None:
    early = early_machine(tmp_path, remote, memory_server_factory, "different")
    first = first_machine(tmp_path, remote, memory_server_factory)
    ok(early.run(command, *(["--repo", str(early.clone)] if command == "sync" else [])))
    check_attributes_adopted(early, first, "different")
    assert gitrepo.head(early.clone) == gitrepo.head(first.clone)
    if command == "restore":
        assert names(early.graph()) == {"Ada"}


def test_a_set_aside_attributes_file_a_killed_run_left_comes_back(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    # A run killed while the file waited in the git folder; the remote has none.
    lonely = machine(tmp_path, remote, memory_server_factory, "lonely")
    gitrepo.install(lonely.clone)
    own = (lonely.clone / ".gitattributes").read_bytes()
    (lonely.clone / ".gitattributes").rename(lonely.clone / ".git" / SET_ASIDE)
    lonely.server.create_entities([new("Ada", "person")])
    lonely.backup()
    assert (lonely.clone / ".gitattributes").read_bytes() == own
    assert not (lonely.clone / ".git" / SET_ASIDE).exists()
    assert gitrepo.git(lonely.clone, "status", "--porcelain") == "?? .gitattributes\n"


def test_committing_the_untracked_attributes_file_on_purpose_still_works(
    tmp_path: Path, remote: Path
) -> None:
    # What setup does in the first clone of an empty remote: sync .gitattributes itself.
    clone = gitrepo.clone(remote, tmp_path / "first")
    gitrepo.install(clone)
    ok(gitrepo.cli("sync", ".gitattributes", cwd=clone))
    assert gitrepo.git(remote, "ls-tree", "--name-only", "main") == ".gitattributes\n"
    assert gitrepo.git(clone, "status", "--porcelain") == ""


# --- item 4: a symlinked live file ----------------------------------------------------------------


def linked_machine(tmp_path: Path, remote: Path, start: ServerFactory, name: str) -> Machine:
    """A machine whose live file is a link into a dotfiles folder (relative, as stow makes)."""
    each = machine(tmp_path, remote, start, name)
    dotfiles = tmp_path / f"{name}-dotfiles"
    dotfiles.mkdir()
    each.live.symlink_to(Path("..") / dotfiles.name / MEMORY)
    return each


def target(each: Machine) -> Path:
    return each.live.parent.parent / f"{each.name}-dotfiles" / MEMORY


def check_linked(each: Machine, mode: int) -> None:
    link = str(each.live.readlink())
    assert each.live.is_symlink() and link == str(Path("..") / target(each).parent.name / MEMORY)
    assert target(each).is_file() and not target(each).is_symlink()
    assert stat.S_IMODE(target(each).stat().st_mode) == mode
    for folder in (each.live.parent, target(each).parent):  # no temp file left in either
        assert sorted(path.name for path in folder.iterdir()) == [MEMORY], folder


def test_a_symlinked_live_file_stays_a_link_through_backup_restore_and_the_server(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = linked_machine(tmp_path, remote, memory_server_factory, "laptop")
    laptop.server.create_entities([new("Ada", "person", "likes tea")])  # the server makes it
    target(laptop).chmod(0o600)
    laptop.backup()
    check_linked(laptop, 0o600)
    assert names(remote_graph(remote)) == {"Ada"}

    desktop = machine(tmp_path, remote, memory_server_factory, "desktop")
    desktop.restore()
    desktop.server.create_entities([new("Grace", "person", "wrote a compiler")])
    desktop.backup()

    ok(laptop.run("restore"))  # the laptop has nothing new: restore may overwrite
    check_linked(laptop, 0o600)
    assert names(laptop.graph()) == {"Ada", "Grace"}  # read through the link

    # The server, running all along, writes through the link too; backup sees it.
    laptop.server.add_observations([observe("Grace", "found a moth")])
    # The server's own save makes the file 0666 & ~umask (docs/backup.md): its doing, not ours.
    umask = os.umask(0)
    os.umask(umask)
    check_linked(laptop, 0o666 & ~umask)
    target(laptop).chmod(0o600)
    desktop.server.create_entities([new("Hopper", "person")])
    desktop.backup()
    laptop.backup()  # backs up the moth and restores Hopper: a real write through the link
    check_linked(laptop, 0o600)
    assert names(laptop.graph()) == {"Ada", "Grace", "Hopper"}
    assert remote_graph(remote)[0]["Grace"] == (
        "person",
        frozenset({"wrote a compiler", "found a moth"}),
    )

    # Another machine whose link points at nothing yet: restore creates the target.
    tablet = linked_machine(tmp_path, remote, memory_server_factory, "tablet")
    tablet.restore()
    check_linked(tablet, 0o600)  # a new memory file is private
    assert tablet.graph() == laptop.graph()
    desktop.backup()
    assert desktop.graph() == laptop.graph()


# --- item 5: quiet, timestamped, self-contained logs ---------------------------------------------


def lines_of(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    """stderr's lines with their time stamps taken off (stderr is a pipe: all are stamped)."""
    return gitrepo.unstamped(result.stderr.decode()).splitlines()


def test_quiet_prints_errors_only_default_one_line_and_verbose_every_attempt(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    laptop.server.create_entities([new("Ada", "person")])
    quiet = laptop.run("backup", "-q")
    ok(quiet)
    assert quiet.stderr == b"" and quiet.stdout == b""
    assert names(remote_graph(remote)) == {"Ada"}

    laptop.server.create_entities([new("Grace", "person")])
    default = laptop.run("backup")
    ok(default)
    [summary] = lines_of(default)
    assert summary.startswith(f"crdt-merge-driver: backed up and restored {laptop.live} at ")

    laptop.server.create_entities([new("Hopper", "person")])
    verbose = laptop.run("backup", "-v")
    ok(verbose)
    said = lines_of(verbose)
    assert len(said) > 1 and said[-1].startswith("crdt-merge-driver: backed up and restored")
    assert any(re.fullmatch(r"crdt-merge-driver: sync attempt 1: pushed \w+ to origin/main", line)
               for line in said), said  # fmt: skip
    # No restore was overwritten by the server here: its warning must not appear.
    assert not [line for line in said if "overwritten" in line], said

    failed = laptop.run("backup", "-q", "--memory", str(tmp_path / "gone.jsonl"))
    [error] = lines_of(failed)
    assert failed.returncode == ExitCode.USAGE and "gone.jsonl does not exist" in error


def test_lines_to_a_terminal_carry_no_time_stamp(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    laptop.server.create_entities([new("Ada", "person")])
    main, terminal = pty.openpty()
    try:
        process = subprocess.run([*gitrepo.CLI, "backup"], cwd=laptop.live.parent,
                                 env=laptop.env(), stderr=terminal, check=False)  # fmt: skip
        os.close(terminal)
        said = b""
        while chunk := _read_pty(main):
            said += chunk
    finally:
        os.close(main)
    assert process.returncode == ExitCode.OK
    [line] = said.decode().splitlines()
    assert line.startswith("crdt-merge-driver: backed up and restored "), line


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other end is closed and everything was read
        return b""


def test_log_file_appends_makes_its_folder_and_errors_also_reach_stderr(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    laptop.server.create_entities([new("Ada", "person")])
    log = tmp_path / "state" / "deep" / "backup.log"
    for _ in range(2):
        run = laptop.run("backup", "--log", str(log))
        ok(run)
        assert run.stderr == b""  # all of it went to the file
    first, second = gitrepo.unstamped(log.read_text()).splitlines()
    assert first.startswith("crdt-merge-driver: backed up and restored ")
    assert second.startswith(f"crdt-merge-driver: nothing new in {laptop.live} since ")

    failed = laptop.run("backup", "--log", str(log), "--memory", str(tmp_path / "gone.jsonl"))
    assert failed.returncode == ExitCode.USAGE
    [error] = lines_of(failed)
    assert gitrepo.unstamped(log.read_text()).splitlines()[-1] == error
    assert "gone.jsonl does not exist" in error


def documented(doc: str, fence: str) -> list[str]:
    """The lines of every ```fence block in docs/doc, comments and blank lines left out."""
    text = (REPO_ROOT / "docs" / doc).read_text()
    blocks = re.findall(rf"^```{fence}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [line for block in blocks for line in block.splitlines()
            if line.strip() and not line.startswith("#")]  # fmt: skip


def cron_command(line: str) -> str:
    """The command of a crontab line: what cron hands to ``sh -c``."""
    return line.split(None, 5)[5]


def bare_run(home: Path, argv: list[str], env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """``env -i HOME=... PATH=/usr/bin:/bin argv``: the environment cron gives a job."""
    pairs = [f"{name}={value}" for name, value in (env or {}).items()]
    return subprocess.run(["/usr/bin/env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", *pairs,
                           *argv], cwd=home, capture_output=True, check=False)  # fmt: skip


def cron_home(hermetic_seal: Path, remote: Path) -> Path:
    """HOME as the docs assume it: the tool under ~/src and ~/.venvs, a clone, no log folder."""
    home = hermetic_seal  # its .gitconfig gives git an identity, as a user's would
    (home / "src").mkdir()
    (home / "src" / "crdt-merge-driver").symlink_to(REPO_ROOT)
    (home / ".venvs").mkdir()
    (home / ".venvs" / "memory").symlink_to(REPO_ROOT / ".venv")
    (home / ".mcp").mkdir()
    gitrepo.clone(remote, home / "memory-repo")
    assert not (home / ".local").exists()  # no log folder yet
    return home


def test_the_documented_backup_cron_line_runs_under_env_i_and_logs(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, hermetic_seal: Path
) -> None:
    [line] = documented("backup.md", "cron")
    home = cron_home(hermetic_seal, remote)
    server = memory_server_factory(home / ".mcp" / MEMORY)
    server.create_entities([new("Ada", "person", "likes tea")])
    for _ in range(2):  # a change, then an idle run
        run = bare_run(home, ["/bin/sh", "-c", cron_command(line)])
        assert run.returncode == ExitCode.OK, run.stderr.decode()
        assert run.stdout == b"" and run.stderr == b""  # nothing for cron to mail
    log = home / ".local" / "state" / "crdt-merge-driver" / "backup.log"
    first, second = gitrepo.unstamped(log.read_text()).splitlines()
    assert first.startswith("crdt-merge-driver: backed up and restored ")
    assert second.startswith("crdt-merge-driver: nothing new in ")
    assert names(remote_graph(remote)) == {"Ada"}


def test_the_documented_systemd_service_runs_under_env_i_and_logs(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, hermetic_seal: Path
) -> None:
    lines = documented("backup.md", "ini")
    home = cron_home(hermetic_seal, remote)

    def expand(value: str) -> str:
        return value.replace("%h", str(home))  # the one specifier the unit uses

    settings = [line.split("=", 1) for line in lines if "=" in line]
    env = dict(expand(value).split("=", 1) for key, value in settings if key == "Environment")
    [command] = [expand(value) for key, value in settings if key == "ExecStart"]
    server = memory_server_factory(Path(env["MEMORY_FILE_PATH"]))
    server.create_entities([new("Ada", "person")])
    run = bare_run(home, shlex.split(command), env)
    assert run.returncode == ExitCode.OK, run.stderr.decode()
    log = home / ".local" / "state" / "crdt-merge-driver" / "backup.log"
    [summary] = gitrepo.unstamped(log.read_text()).splitlines()
    assert summary.startswith("crdt-merge-driver: backed up and restored ")
    assert names(remote_graph(remote)) == {"Ada"}


def test_the_documented_sync_cron_line_runs_under_env_i_and_logs(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, hermetic_seal: Path
) -> None:
    [line] = documented("ci.md", "crontab")
    home = cron_home(hermetic_seal, remote)
    clone = gitrepo.clone(remote, home / "agent-memory")
    gitrepo.install(clone)
    gitrepo.commit(clone, "install", ".gitattributes")
    server = memory_server_factory(clone / MEMORY)
    server.create_entities([new("Ada", "person")])
    run = bare_run(home, ["/bin/sh", "-c", cron_command(line)])
    assert run.returncode == ExitCode.OK, run.stderr.decode()
    assert run.stdout == b"" and run.stderr == b""
    [summary] = gitrepo.unstamped((home / ".local/state/crdt-memory-sync.log").read_text()
                                  ).splitlines()  # fmt: skip
    assert summary.startswith("crdt-merge-driver: synced: origin/main is at ")
    assert names(remote_graph(remote)) == {"Ada"}


# --- item 6: errors name the thing -------------------------------------------------------------


def test_restore_into_a_folder_that_does_not_exist_names_it_and_creates_nothing(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    first_machine(tmp_path, remote, memory_server_factory)
    new_one = machine(tmp_path, remote, memory_server_factory, "new")
    missing = tmp_path / "typo" / "memory.jsonl"
    for given in (["--memory", str(missing)], []):
        env = {**new_one.env(), "MEMORY_FILE_PATH": str(missing)}
        result = gitrepo.cli("restore", *given, cwd=tmp_path, env=env)
        line = one_line_error(result, ExitCode.USAGE, f"does not exist: {missing.parent} ")
        assert ("check --memory" if given else "check MEMORY_FILE_PATH") in line
        assert line.count(str(missing.parent)) == 1  # named once
    assert not missing.parent.exists()


def test_a_live_file_named_but_missing_says_which_setting_named_it(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    passed = laptop.run("backup", "--memory", str(laptop.live))
    line = one_line_error(passed, ExitCode.USAGE, f"memory file {laptop.live} does not exist")
    assert "(check --memory)" in line and "pass --memory" not in line
    from_env = laptop.run("backup")
    line = one_line_error(from_env, ExitCode.USAGE, f"memory file {laptop.live} does not exist")
    assert "check MEMORY_FILE_PATH" in line and "set MEMORY_FILE_PATH" not in line


def test_join_of_one_file_says_one_file_and_one_record(tmp_path: Path) -> None:
    one = gitrepo.write(tmp_path, "one.jsonl", gitrepo.jsonl(gitrepo.entity("Ada")))
    result = gitrepo.cli("join", str(one), "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode == ExitCode.OK
    assert result.stderr.decode() == (
        f"crdt-merge-driver: joined 1 file into {tmp_path / 'out.jsonl'}: 1 record\n"
    )


def test_a_healthy_doctor_has_no_ok_note_line_and_a_bad_file_is_named_once(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    first = first_machine(tmp_path, remote, memory_server_factory)
    said = doctor(first.clone)
    assert said.returncode == ExitCode.OK
    assert not [line for line in said.stdout.decode().splitlines() if "ok: note" in line]
    first.live.write_bytes(b"{not json")
    line = one_line_error(first.run("backup"), ExitCode.USAGE, "not a memory file")
    assert line.count(str(first.live)) == 1, line


def test_the_license_pyproject_promises_is_there() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', pyproject, flags=re.MULTILINE)
    assert (REPO_ROOT / "LICENSE").read_text().startswith("MIT License")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted after the test; skipped where mounting is not allowed."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; remove it to free the space again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as stream:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):  # big writes first, then the last few bytes
            try:
                while stream.write(b"\0" * size):
                    pass
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    return filler


def test_a_full_disk_names_the_live_file_that_could_not_be_written(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, small_disk: Path
) -> None:
    first = first_machine(tmp_path, remote, memory_server_factory)
    laptop = machine(tmp_path, remote, memory_server_factory, "laptop")
    laptop = Machine("laptop", small_disk / MEMORY, laptop.clone, memory_server_factory)
    laptop.restore()
    first.server.create_entities([new("Grace", "person", "wrote a compiler " * 50)])
    first.backup()
    before = laptop.live.read_bytes()
    filler = fill(small_disk)

    line = one_line_error(laptop.run("backup"), ExitCode.USAGE, "No space left on device")
    assert line == f"crdt-merge-driver: {laptop.live}: No space left on device"
    assert laptop.live.read_bytes() == before  # untouched, no temp file beside it
    assert sorted(path.name for path in small_disk.iterdir()) == ["filler", MEMORY]

    filler.unlink()
    laptop.backup()
    assert names(laptop.graph()) == {"Ada", "Grace"}


def test_the_lock_on_a_full_disk_still_locks_and_leaves_no_stale_lock(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory, small_disk: Path
) -> None:
    first = first_machine(tmp_path, remote, memory_server_factory)
    clone = gitrepo.clone(remote, small_disk / "clone")
    laptop = Machine("laptop", tmp_path / "first-live" / "laptop.jsonl", clone,
                     memory_server_factory)  # fmt: skip
    laptop.restore()
    lock_file = clone / ".git" / LOCK
    lock_file.unlink()  # a clone where no run ever took the lock
    first.server.create_entities([new("Grace", "person")])
    first.backup()
    filler = fill(small_disk)

    holder = hold_lock(clone / ".git")  # the lock's own code, in a process of its own
    try:
        assert lock_file.read_bytes() == b""  # no room for the pid: only the message lacks it
        refused = laptop.run("backup")
        one_line_error(refused, ExitCode.REFUSED, "another sync or backup is running in this clone")
    finally:
        holder.kill()
        holder.wait()
    failed = laptop.run("backup")  # the disk is still full: it fails, and says why
    assert failed.returncode != ExitCode.OK and b"another sync" not in failed.stderr
    filler.unlink()
    laptop.backup()  # nothing stale stands in the way
    assert names(laptop.graph()) == {"Ada", "Grace"}


# --- item 7: the lock under kill -9 ------------------------------------------------------------


def test_a_sync_killed_with_9_while_pushing_leaves_no_lock_and_its_files_go(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    first = first_machine(tmp_path, remote, memory_server_factory)
    server = memory_server_factory(first.clone / MEMORY)
    server.create_entities([new("Hopper", "person")])
    pushing = tmp_path / "pushing"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(pushing))}\nsleep 60\n")
    hook.chmod(0o755)
    sync = subprocess.Popen([*gitrepo.CLI, "sync", "--repo", str(first.clone)],
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        give_up = time.monotonic() + 30
        while not pushing.exists():
            assert sync.poll() is None and time.monotonic() < give_up, "sync never pushed"
            time.sleep(0.05)
        git_dir = first.clone / ".git"
        left = sorted(git_dir.glob("crdt-merge-driver-sync.attributes.*"))
        assert left, "sync holds its attributes file while it runs"
        with (git_dir / LOCK).open("rb") as lock_file, pytest.raises(BlockingIOError):
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by the sync
    finally:
        os.killpg(sync.pid, signal.SIGKILL)  # the whole job, as a killed cron job goes
        sync.wait()
    hook.unlink()
    assert all(path.exists() for path in left)  # nothing cleaned up: it had no chance

    again = gitrepo.cli("sync", "-v", "--repo", str(first.clone))
    ok(again)
    said = lines_of(again)
    for path in left:
        assert f"crdt-merge-driver: removed {path.name}, left by an interrupted sync or backup" \
            in said  # fmt: skip
    assert not list(git_dir.glob("crdt-merge-driver-sync.attributes.*"))
    assert not any("another sync" in line for line in said)
    assert names(remote_graph(remote)) == {"Ada", "Hopper"}
