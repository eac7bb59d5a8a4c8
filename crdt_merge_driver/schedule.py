"""The schedule that runs ``backup``: a systemd user timer, a crontab line, or a line by hand.

Or, with ``--schedule watch``, no schedule but a systemd user service that
keeps ``watch`` running (``Restart=on-failure``); where no user manager
answers, the unit is written all the same and printed, to be started by hand.

Everything written is tagged with the clone's hash (`tag`): a marker comment
above the one crontab line, unit names ``crdt-merge-driver-backup-<tag>``.
So `install` finds its own entry again and changes nothing the second time,
and `remove` takes away exactly what `install` added: the crontab goes back
to the bytes it had (deleted again if setup created it).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from crdt_merge_driver import PROGRAM
from crdt_merge_driver.atomic import write_atomic
from crdt_merge_driver.errors import CrdtError

KINDS = ("auto", "systemd", "cron", "watch", "none")
UNIT_PREFIX = f"{PROGRAM}-backup-"
WATCH_PREFIX = f"{PROGRAM}-watch-"
_TIMEOUT = 30.0


class ScheduleError(CrdtError):
    """A schedule that cannot be installed or read (no systemd, a crontab that refuses)."""


class Entry(NamedTuple):
    """One scheduled backup: what runs, how often, under which tag."""

    tag: str
    argv: Sequence[str]  # absolute interpreter, then the backup's own arguments
    every: int  # minutes
    log: Path


class Found(NamedTuple):
    kind: str  # "systemd" or "cron"
    description: str


def tag(repo: Path) -> str:
    """The tag of the clone's entries: its absolute path, hashed (short, stable)."""
    return hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:12]


def log_path(repo: Path) -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / PROGRAM / f"backup-{tag(repo)}.log"


def unit_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


# --- which tool -------------------------------------------------------------------


def systemd_works() -> bool:
    """Whether a systemd user manager answers (not just whether systemctl exists)."""
    return _runs(["systemctl", "--user", "show-environment"])


def cron_works() -> bool:
    # `crontab -l` exits 1 for "no crontab for <user>": a working crontab all the same.
    if shutil.which("crontab") is None:
        return False
    listed = _run(["crontab", "-l"])
    return listed.returncode == 0 or b"no crontab" in listed.stderr


def choose(kind: str) -> str:
    """The tool for ``kind``: auto picks systemd, else cron, else "manual" (print the line)."""
    if kind == "watch":  # a service where systemd runs, else the unit printed: never refused
        return kind
    if kind == "auto":
        return "systemd" if systemd_works() else "cron" if cron_works() else "manual"
    if kind == "systemd" and not systemd_works():
        raise ScheduleError("`systemctl --user` does not work here (no user session bus); "
                            "use --schedule cron or --schedule none")  # fmt: skip
    if kind == "cron" and not cron_works():
        raise ScheduleError("`crontab` is missing or does not work here (install cron); "
                            "use --schedule systemd or --schedule none")  # fmt: skip
    return kind


# --- the entries as text ----------------------------------------------------------------


def cron_timing(every: int) -> str:
    if 1 <= every <= 59:
        return f"*/{every} * * * *"
    if every % 60 == 0 and 1 <= every // 60 <= 23:
        return f"0 */{every // 60} * * *"
    if every == 1440:
        return "0 0 * * *"
    raise ScheduleError(f"--every {every}: cron takes 1 to 59 minutes, or whole hours up to 24")


def cron_marker(entry_tag: str) -> str:
    return f"# {PROGRAM} backup {entry_tag}: added by `{PROGRAM} setup`; `setup --remove` drops it"


def cron_lines(entry: Entry) -> bytes:
    # cron runs the line with sh; `%` would end the command there, so it is escaped.
    # No redirection: with --log only errors reach stderr, and cron mails those.
    command = " ".join(shlex.quote(arg) for arg in entry.argv).replace("%", "\\%")
    line = f"{cron_timing(entry.every)} {command}"
    return f"{cron_marker(entry.tag)}\n{line}\n".encode()


def _systemd_quote(arg: str) -> str:
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def units(entry: Entry) -> dict[str, bytes]:
    """The .service and .timer files, by file name."""
    if entry.every < 1:
        raise ScheduleError(f"--every {entry.every}: must be at least 1 minute")
    name = UNIT_PREFIX + entry.tag
    service = (
        f"[Unit]\nDescription={PROGRAM} backup (added by `{PROGRAM} setup`)\n\n"
        f"[Service]\nType=oneshot\nExecStart={' '.join(_systemd_quote(a) for a in entry.argv)}\n"
    )
    timer = (
        f"[Unit]\nDescription={PROGRAM} backup every {entry.every} minutes\n\n"
        f"[Timer]\nOnBootSec=2min\nOnUnitActiveSec={entry.every}min\nUnit={name}.service\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    return {f"{name}.service": service.encode(), f"{name}.timer": timer.encode()}


def watch_unit(entry: Entry) -> tuple[str, bytes]:
    """The .service that keeps ``watch`` running: its file name and bytes."""
    service = (
        f"[Unit]\nDescription={PROGRAM} watch (added by `{PROGRAM} setup`)\n\n"
        f"[Service]\nExecStart={' '.join(_systemd_quote(a) for a in entry.argv)}\n"
        # A crash or a refusal to start is retried; a clean stop (exit 0) is not.
        "Restart=on-failure\nRestartSec=10\n"
        # SIGTERM to watch alone: it finishes its step, the git it runs is not cut off.
        "KillMode=mixed\n\n"
        "[Install]\nWantedBy=default.target\n"
    )
    return f"{WATCH_PREFIX}{entry.tag}.service", service.encode()


def manual_line(entry: Entry) -> str:
    return cron_lines(entry).decode().splitlines()[1]


# --- install, find, remove ----------------------------------------------------------


def install(kind: str, entry: Entry) -> list[str]:
    """Install the entry with ``kind`` (already chosen); what was done, as lines."""
    entry.log.parent.mkdir(parents=True, exist_ok=True)
    if kind == "cron":
        return _install_cron(entry)
    if kind == "systemd":
        return _install_systemd(entry)
    if kind == "watch":
        return _install_watch(entry)
    return [f"no schedule installed (no systemd user manager, no crontab): add this line to "
            f"your crontab by hand: {manual_line(entry)}"]  # fmt: skip


def find(entry_tag: str) -> Found | None:
    """The entry installed under ``entry_tag``, if any (crontab first, then the timer)."""
    if shutil.which("crontab") is not None:
        lines = _read_crontab().splitlines()
        marker = cron_marker(entry_tag).encode()
        for index, line in enumerate(lines[:-1]):
            if line == marker:
                return Found("cron", f"crontab: {lines[index + 1].decode(errors='replace')}")
    timer = unit_dir() / f"{UNIT_PREFIX}{entry_tag}.timer"
    service = unit_dir() / f"{WATCH_PREFIX}{entry_tag}.service"
    for kind, unit, what in (("systemd", timer, "timer"), ("watch", service, "service")):
        if unit.exists():
            # The files alone run nothing: a container, or a user without a login session.
            idle = "" if systemd_works() else "; no systemd user manager here: it does not run"
            runs = " running watch" if kind == "watch" else ""
            return Found(kind, f"systemd user {what} {unit.name}{runs} ({unit}{idle})")
    return None


def remove(entry_tag: str) -> list[str]:
    """Remove what `install` added under ``entry_tag``; what was removed, as lines."""
    done = []
    if shutil.which("crontab") is not None and _remove_cron(entry_tag):
        done.append("removed the backup line from your crontab")
    names = [f"{UNIT_PREFIX}{entry_tag}.{suffix}" for suffix in ("timer", "service")]
    if any((unit_dir() / name).exists() for name in names):
        if systemd_works():
            _run(["systemctl", "--user", "disable", "--now", names[0]])
        for name in names:
            (unit_dir() / name).unlink(missing_ok=True)
        if systemd_works():
            _run(["systemctl", "--user", "daemon-reload"])
        done.append(f"removed the systemd user units {', '.join(names)}")
    service = unit_dir() / f"{WATCH_PREFIX}{entry_tag}.service"
    if service.exists():
        if systemd_works():
            _run(["systemctl", "--user", "disable", "--now", service.name])
        service.unlink()
        if systemd_works():
            _run(["systemctl", "--user", "daemon-reload"])
        done.append(f"removed the systemd user service {service.name}")
    return done or ["no schedule of this clone's to remove"]


def _install_cron(entry: Entry) -> list[str]:
    current = _read_crontab()
    wanted = cron_lines(entry)
    block = _cron_block(current, entry.tag)
    if block is not None and current[block[0] : block[1]] == wanted:
        return [f"crontab already runs the backup every {entry.every} minutes; unchanged"]
    if block is not None:
        updated = current[: block[0]] + wanted + current[block[1] :]
    else:
        updated = current + wanted
    _write_crontab(updated)
    done = "replaced this clone's line in your crontab with" if block else "added to your crontab:"
    return [f"{done} {wanted.decode().splitlines()[1]}"]


def _remove_cron(entry_tag: str) -> bool:
    exists = _run(["crontab", "-l"]).returncode == 0
    current = _read_crontab()
    block = _cron_block(current, entry_tag)
    if not exists or block is None:
        return False
    remaining = current[: block[0]] + current[block[1] :]
    if remaining:
        _write_crontab(remaining)
    else:
        # Only our lines were there: setup created the crontab, so it goes again.
        _check(_run(["crontab", "-r"]), "crontab -r")
    return True


def _cron_block(content: bytes, entry_tag: str) -> tuple[int, int] | None:
    """The byte span of our marker and the line after it."""
    marker = cron_marker(entry_tag).encode() + b"\n"
    if content.startswith(marker):
        start = 0
    else:
        found = content.find(b"\n" + marker)
        if found < 0:
            return None
        start = found + 1
    after = start + len(marker)
    end = content.find(b"\n", after)
    return start, len(content) if end < 0 else end + 1


def _read_crontab() -> bytes:
    listed = _run(["crontab", "-l"])
    if listed.returncode != 0:
        if b"no crontab" in listed.stderr:
            return b""
        _check(listed, "crontab -l")
    return listed.stdout


def _write_crontab(content: bytes) -> None:
    _check(_run(["crontab", "-"], stdin=content), "crontab -")


def _install_systemd(entry: Entry) -> list[str]:
    folder = unit_dir()
    folder.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, data in units(entry).items():
        path = folder / name
        if not path.exists() or path.read_bytes() != data:
            write_atomic(path, data)
            changed.append(name)
    timer = f"{UNIT_PREFIX}{entry.tag}.timer"
    enabled = _runs(["systemctl", "--user", "is-enabled", "--quiet", timer])
    if not changed and enabled:
        return [f"systemd user timer {timer} already runs the backup; unchanged"]
    _check(_run(["systemctl", "--user", "daemon-reload"]), "systemctl --user daemon-reload")
    _check(_run(["systemctl", "--user", "enable", "--now", timer]), f"systemctl enable {timer}")
    return [f"installed and started the systemd user timer {timer} in {folder}"]


def _install_watch(entry: Entry) -> list[str]:
    folder = unit_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name, data = watch_unit(entry)
    path = folder / name
    changed = not path.exists() or path.read_bytes() != data
    if changed:
        write_atomic(path, data)
    if not systemd_works():
        return [f"wrote {path}, but no systemd user manager answers here: start it with "
                f"`systemctl --user enable --now {name}` where one does, or run "
                f"`{' '.join(shlex.quote(a) for a in entry.argv)}` under tmux or as a "
                "container's entrypoint. The unit:",
                *(f"    {line}" for line in data.decode().splitlines())]  # fmt: skip
    if not changed and _runs(["systemctl", "--user", "is-active", "--quiet", name]):
        return [f"systemd user service {name} already runs watch; unchanged"]
    _check(_run(["systemctl", "--user", "daemon-reload"]), "systemctl --user daemon-reload")
    _check(_run(["systemctl", "--user", "enable", name]), f"systemctl enable {name}")
    # restart, not start: a changed unit (another interval, say) takes effect now.
    _check(_run(["systemctl", "--user", "restart", name]), f"systemctl restart {name}")
    return [f"installed and started the systemd user service {name} in {folder}"]


def _run(argv: list[str], *, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=_TIMEOUT,
                              check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(argv, 127, b"", str(error).encode())


def _runs(argv: list[str]) -> bool:
    return shutil.which(argv[0]) is not None and _run(argv).returncode == 0


def _check(result: subprocess.CompletedProcess[bytes], what: str) -> None:
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        raise ScheduleError(f"`{what}` failed ({result.returncode}): {said[0] if said else ''}")
