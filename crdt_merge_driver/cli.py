"""The command line: parse arguments, call the library, map errors to exit codes.

This is the only module that knows about argparse, and `main` is the one
place where an error becomes an exit code. Subcommands import their module
when they run, so the merge driver (run by git for every merged file) pays
only for what it uses; for the same reason the driver's own command line,
exactly as `install` writes it, is read without building the argparse
parser at all (argparse and its help formatter cost more than merging a
small file).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace

from crdt_merge_driver import PROGRAM, __version__
from crdt_merge_driver.errors import CrdtError, ExitCode

# On the merge driver's path, where importing typing would cost 3 ms of a
# 10k-entity merge's 80: names only the type checker needs are imported for it
# alone (mypy takes any TYPE_CHECKING as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from crdt_merge_driver.log import Log

DRIVER_NAME = "crdt-memory"

# Subcommands import their modules lazily; ruff's PLC0415 is off in this file
# for that reason (see pyproject.toml).
Handler = Callable[["argparse.Namespace"], int]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _driver_call(arguments) or _parser().parse_args(arguments)
    handler: Handler = args.handler
    complain: Callable[[str], None] = _print_error
    try:
        if hasattr(args, "quiet"):  # a command with `_log_options`: it logs through a Log
            args.log = _open_log(args)
            complain = args.log.error
        return handler(args)
    except CrdtError as error:
        complain(f"{PROGRAM}: {error}")
        return int(error.exit_code)
    except OSError as error:  # a file or folder the command needs is missing or not usable
        where = f"{error.filename}: " if error.filename else ""
        # Permission denied: say what to check, not only what the system said.
        hint = (f" ({_user_name()} may not write there: check the owner and mode of "
                "its folder)" if isinstance(error, PermissionError) else "")  # fmt: skip
        complain(f"{PROGRAM}: {where}{error.strerror or error}{hint}")
        return int(ExitCode.CONFLICT if args.command == "merge" else ExitCode.USAGE)
    except KeyboardInterrupt:
        complain(f"{PROGRAM}: interrupted")
        # git treats a driver's exit above 128 as a failed merge, not a conflict.
        return int(ExitCode.CONFLICT if args.command == "merge" else ExitCode.INTERRUPTED)
    finally:
        if hasattr(args, "log") and hasattr(args.log, "close"):
            args.log.close()


def _user_name() -> str:
    """Who this process runs as, for a message (a name, else the numeric id)."""
    import os  # only on an error path
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"user {os.getuid()}"


def _print_error(line: str) -> None:
    print(line, file=sys.stderr)


def _open_log(args: argparse.Namespace) -> Log:
    from crdt_merge_driver.log import Log

    try:
        return Log.open(quiet=args.quiet, verbose=args.verbose, path=args.log_file)
    except OSError as error:
        message = f"cannot open the log: {error.strerror}"
        raise OSError(error.errno, message, error.filename) from None


def _driver_call(arguments: list[str]) -> argparse.Namespace | None:
    """``merge [--marker-size N] [--] BASE OURS THEIRS [PATH]`` as git runs it; else None.

    Anything unusual (``--help``, a typo, a path that looks like an option
    without ``--`` before it) is left to argparse, which reports it properly.
    """
    if arguments[:1] != ["merge"]:
        return None
    rest, marker_size = arguments[1:], 7
    if rest[:1] == ["--marker-size"] and len(rest) > 1 and rest[1].isdigit():
        rest, marker_size = rest[2:], int(rest[1])
    if rest[:1] == ["--"]:
        rest = rest[1:]
    elif any(argument.startswith("-") for argument in rest):
        return None
    if len(rest) not in (3, 4):
        return None
    base, ours, theirs, *path = rest
    # Not a Namespace, but it has every attribute `_merge` and `main` read.
    return SimpleNamespace(  # type: ignore[return-value]
        command="merge", handler=_merge, base=base, ours=ours, theirs=theirs,
        path=path[0] if path else None, marker_size=marker_size,
    )  # fmt: skip


def _merge(args: argparse.Namespace) -> int:
    from crdt_merge_driver.driver import run_driver

    return int(
        run_driver(
            base=args.base,
            ours=args.ours,
            theirs=args.theirs,
            path=args.path or "",
            marker_size=args.marker_size,
        )
    )


def _join(args: argparse.Namespace) -> int:
    from crdt_merge_driver.joiner import join_files

    join_files(
        inputs=[_path(name) for name in args.files],
        output=_path(args.output) if args.output else None,
        format_name=args.format,
    )
    return ExitCode.OK


def _install(args: argparse.Namespace) -> int:
    from crdt_merge_driver.install import install

    for line in install(
        repo=_repo(args), scope_global=args.scope_global, patterns=args.pattern, name=args.name
    ):
        print(line)
    return ExitCode.OK


def _uninstall(args: argparse.Namespace) -> int:
    from crdt_merge_driver.install import uninstall

    for line in uninstall(repo=_repo(args), scope_global=args.scope_global, name=args.name):
        print(line)
    return ExitCode.OK


def _doctor(args: argparse.Namespace) -> int:
    from crdt_merge_driver.doctor import doctor

    diagnosis = doctor(repo=_repo(args), name=args.name)
    for line in diagnosis.lines:
        print(line)
    return ExitCode.OK if diagnosis.healthy else ExitCode.NOT_CONFIGURED


def _sync(args: argparse.Namespace) -> int:
    from crdt_merge_driver.sync.landing import sync

    sync(
        repo=_repo(args),
        remote=args.remote,
        branch=args.branch,
        message=args.message,
        paths=[_path(name) for name in args.paths] or None,  # none named: every memory file
        attempts=args.attempts,
        deadline=args.deadline,
        allow_mass_delete=args.allow_mass_delete,
        log=args.log,
    )
    return ExitCode.OK


def _backup(args: argparse.Namespace) -> int:
    from crdt_merge_driver.backup import backup

    backup(
        memory=_path(args.memory) if args.memory else None,
        repo=_path(args.repo) if args.repo else None,
        as_path=args.as_path,
        restore=not args.no_restore,
        attempts=args.attempts,
        deadline=args.deadline,
        log=args.log,
        allow_mass_delete=args.allow_mass_delete,
    )
    return ExitCode.OK


def _restore(args: argparse.Namespace) -> int:
    from crdt_merge_driver.backup import restore

    restore(
        memory=_path(args.memory) if args.memory else None,
        repo=_path(args.repo) if args.repo else None,
        as_path=args.as_path,
        attempts=args.attempts,
        deadline=args.deadline,
        log=args.log,
    )
    return ExitCode.OK


def _watch(args: argparse.Namespace) -> int:
    from crdt_merge_driver.watch import watch

    watch(
        memory=_path(args.memory) if args.memory else None,
        repo=_path(args.repo) if args.repo else None,
        as_path=args.as_path,
        interval=args.interval,
        debounce=args.debounce,
        log=args.log,
    )
    return ExitCode.OK


def _setup(args: argparse.Namespace) -> int:
    from crdt_merge_driver import setup

    repo = _path(args.repo).absolute() if args.repo else None
    if args.remove:
        setup.remove(remote=args.remote, repo=repo, log=args.log)
        return ExitCode.OK
    if args.remote is None:
        print(f"{PROGRAM}: setup: which remote? pass REMOTE (a URL or a path)", file=sys.stderr)
        return ExitCode.USAGE
    setup.setup(
        remote=args.remote, repo=repo, memory=_path(args.memory) if args.memory else None,
        branch=args.branch, kind=args.schedule, every=args.every, log=args.log,
    )  # fmt: skip
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    import json

    from crdt_merge_driver.status import render, status

    found = status(
        repo=_path(args.repo).absolute() if args.repo else None,
        memory=_path(args.memory) if args.memory else None,
        offline=args.offline,
    )
    for line in [json.dumps(found.as_json())] if args.json else render(found):
        print(line)
    return int(found.exit_code)


def _migrate(args: argparse.Namespace) -> int:
    from crdt_merge_driver.migration import migrate

    migrate(repo=_repo(args), dry_run=args.dry_run, log=args.log)
    return ExitCode.OK


def _demo(args: argparse.Namespace) -> int:
    from crdt_merge_driver.demo import run_demo

    return int(run_demo(keep=_path(args.keep) if args.keep else None))


def _path(name: str) -> Path:
    from pathlib import Path  # not at the top: the driver's path never needs it

    return Path(name)


def _repo(args: argparse.Namespace) -> Path:
    return _path(args.repo) if args.repo else _path(".").absolute()


def _backup_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-restore",
        action="store_true",
        help="do not write the merged memory back to the live file",
    )
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="back up even a live file that deletes over half of the memory",
    )


def _retry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--attempts", type=int, default=30, help="give up after N push attempts (default 30)"
    )
    parser.add_argument(
        "--deadline", type=float, default=300.0,
        help="give up retrying after this many seconds (default 300)",
    )  # fmt: skip


def _watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval", type=float, default=30.0, metavar="SECONDS",
        help="ask the remote whether it moved this often (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--debounce", type=float, default=1.0, metavar="SECONDS",
        help="back up once the live file has been quiet this long (default 1)",
    )  # fmt: skip


def _log_options(parser: argparse.ArgumentParser) -> None:
    """-q/-v/--log, for every command that runs long or from cron (see crdt_merge_driver/log.py)."""
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    loudness.add_argument(
        "-v", "--verbose", action="store_true", help="print every step, each attempt"
    )
    parser.add_argument(
        "--log", dest="log_file", metavar="FILE",
        help="append the lines to FILE (its folder is made if needed), each with the UTC time; "
        "errors go to stderr as well",
    )  # fmt: skip


def _setup_and_status(command: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    setup = command("setup", _setup, "join a shared memory repository: clone, install, sync, "
                    "schedule backups")  # fmt: skip
    setup.add_argument("remote", metavar="REMOTE", nargs="?", help="the shared repository")
    setup.add_argument("--repo", metavar="DIR",
                       help="the clone (default $XDG_DATA_HOME/crdt-merge-driver/NAME)")
    setup.add_argument("--memory", metavar="FILE",
                       help="live file (default $MEMORY_FILE_PATH, else $MEMORY_FILE)")
    setup.add_argument("--branch", help="the branch (default: the remote's)")
    setup.add_argument("--schedule", choices=("auto", "systemd", "cron", "watch", "none"),
                       default="auto", help="how backups run (default auto; watch: a systemd "
                       "user service running `watch`)")
    setup.add_argument("--every", type=int, default=15, metavar="MINUTES",
                       help="minutes between backups (default 15)")
    setup.add_argument("--remove", action="store_true",
                       help="remove the schedule setup added (the clone and memory stay)")
    _log_options(setup)

    status = command("status", _status, "is this machine in sync, and when did it last back up")
    status.add_argument("--repo", metavar="DIR",
                        help="the clone (default $REPO_DIR, here, else the one setup made)")
    status.add_argument("--memory", metavar="FILE",
                        help="live file (default $MEMORY_FILE_PATH, else $MEMORY_FILE, "
                        "else the one setup noted)")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument("--offline", action="store_true", help="do not fetch")


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Merge AI agents' memory files (MCP memory server JSONL, older JSON arrays) "
            "inside git as a CRDT: no conflicts, nothing lost."
        ),
        epilog="Try `crdt-merge-driver demo`, then `crdt-merge-driver setup REMOTE` on each "
        "machine (or `crdt-merge-driver install` in a repository you manage yourself).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
        # help strings are %-formatted by argparse, a description is printed as it is
        sub = commands.add_parser(name, help=summary, description=summary.replace("%%", "%"))
        sub.set_defaults(handler=handler)
        return sub

    merge = command("merge", _merge, "the git merge driver: merge %%O and %%B into %%A")
    merge.add_argument("base", metavar="BASE", help="the common ancestor (%%O)")
    merge.add_argument("ours", metavar="OURS", help="the current version, overwritten (%%A)")
    merge.add_argument("theirs", metavar="THEIRS", help="the other version (%%B)")
    merge.add_argument("path", metavar="PATH", nargs="?", help="the path in the repo (%%P)")
    merge.add_argument("--marker-size", type=int, default=7, help="%%L, for the kill-switch")

    join = command("join", _join, "merge memory files that share no ancestor into one")
    join.add_argument("files", metavar="FILE", nargs="+", help="memory files (JSONL or arrays)")
    join.add_argument("-o", "--output", metavar="OUT", help="write here (default: stdout)")
    join.add_argument(
        "--format",
        choices=("jsonl", "array"),
        help="output format (default: the inputs' format; mixed inputs: OUT's extension, "
        "else jsonl)",
    )

    for name, handler, summary in (
        ("install", _install, "register the driver in git config and .gitattributes"),
        ("uninstall", _uninstall, "remove exactly what install added"),
    ):
        sub = command(name, handler, summary)
        sub.add_argument("--repo", metavar="DIR", help="the repository (default: this folder)")
        sub.add_argument(
            "--global",
            dest="scope_global",
            action="store_true",
            help="use the global git config (and its attributes file)",
        )
        sub.add_argument("--name", default=DRIVER_NAME, help=f"driver name (default {DRIVER_NAME})")
        if name == "install":
            sub.add_argument(
                "--pattern",
                action="append",
                metavar="GLOB",
                help="files to attach the driver to (repeatable; default: memory*.json, "
                "memory*.jsonl, unified-memory.json)",
            )

    doctor = command("doctor", _doctor, "check that the driver is configured and attached")
    doctor.add_argument("--repo", metavar="DIR", help="the repository (default: this folder)")
    doctor.add_argument("--name", default=DRIVER_NAME, help=f"driver name (default {DRIVER_NAME})")

    sync = command("sync", _sync, "commit memory files, then fetch, rebase and push until it lands")
    sync.add_argument(
        "paths", metavar="PATH", nargs="*", help="files to commit (default: memory files)"
    )
    sync.add_argument("--repo", metavar="DIR", help="the repository (default: this folder)")
    sync.add_argument("--remote", default="origin", help="remote to push to (default origin)")
    sync.add_argument("--branch", help="remote branch (default: the current branch)")
    sync.add_argument("-m", "--message", help="commit message")
    _retry_options(sync)
    _log_options(sync)
    sync.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="push even if it deletes over half of the remote's records",
    )

    for name, handler, summary in (
        (
            "backup",
            _backup,
            "back up a live memory file, bring back what others learned",
        ),
        ("restore", _restore, "write the repository's merged memory into the live file"),
        (
            "watch",
            _watch,
            "back up the live file moments after each write, restore when the remote moves; "
            "runs until SIGTERM or Ctrl-C",
        ),
    ):
        sub = command(name, handler, summary)
        sub.add_argument(
            "--memory",
            metavar="FILE",
            help="live file (default $MEMORY_FILE_PATH, else $MEMORY_FILE, else the one setup "
            "noted in the clone)",
        )
        sub.add_argument("--repo", metavar="DIR", help="the clone (default $REPO_DIR, else here)")
        sub.add_argument(
            "--as",
            dest="as_path",
            metavar="PATH_IN_REPO",
            help="the file in the repo (default memory.jsonl)",
        )
        # watch retries each step for as long as it runs: its own timing instead.
        (_watch_options if name == "watch" else _retry_options)(sub)
        _log_options(sub)
        if name == "backup":
            _backup_options(sub)

    _setup_and_status(command)

    migrate = command("migrate", _migrate, "fold older per-host JSON files into one memory.jsonl")
    migrate.add_argument("--repo", metavar="DIR", help="the repository (default: this folder)")
    migrate.add_argument(
        "--dry-run", action="store_true", help="say what would change; change nothing"
    )
    _log_options(migrate)

    demo = command("demo", _demo, "run three machines against one remote, end to end, and check")
    demo.add_argument("--keep", metavar="DIR", help="build the demo here and keep it")
    return parser
