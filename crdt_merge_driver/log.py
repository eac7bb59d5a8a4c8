"""What a long-running command prints: how much, where, and stamped with the time.

The library writes its lines with `say` to any text stream it is handed;
a plain stream (a test's buffer, the demo's) gets every line, as it always
did. The command line hands it a `Log` instead, built from ``-q``/``-v`` and
``--log FILE``: by default only the one summary line a command ends with
(and warnings) gets through, ``-v`` lets every detail line through too,
``-q`` none (errors are written by ``cli.main``, which bypasses the level).
A line bound for a file or a pipe (cron, systemd, CI) starts with the UTC
time, so a log collected for months says when each run happened.
"""

from __future__ import annotations

import enum
import io
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from crdt_merge_driver import PROGRAM


class Level(enum.IntEnum):
    QUIET = 0  # errors only
    SUMMARY = 1  # the summary line and warnings
    VERBOSE = 2  # every detail line: each attempt, each step


def say(log: TextIO, line: str, *, summary: bool = False) -> None:
    """Write ``line`` to ``log``: a detail line, or with ``summary`` the command's last word."""
    if isinstance(log, Log) and not log.shows(line, summary=summary):
        return
    print(f"{PROGRAM}: {line}", file=log, flush=True)


def stamp(now: float) -> str:
    """ISO 8601, UTC, to the second: ``2026-12-02T20:38:37Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


class Log(io.TextIOBase):
    """A text stream over sinks (stderr, a log file), each line stamped where read later.

    Lines are written whole: a partial line waits for its newline.
    """

    def __init__(
        self, sinks: Sequence[TextIO], *, level: Level = Level.SUMMARY,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        super().__init__()
        self.level = level
        self._sinks = [(sink, not _is_terminal(sink)) for sink in sinks]
        self._clock = clock
        self._partial = ""

    @classmethod
    def open(
        cls, *, quiet: bool = False, verbose: bool = False, path: str | None = None,
        stderr: TextIO | None = None,
    ) -> Log:  # fmt: skip
        """The log a command's flags ask for; ``path``: append there (its folder made if needed)."""
        level = Level.QUIET if quiet else Level.VERBOSE if verbose else Level.SUMMARY
        if path is None:
            return cls([stderr or sys.stderr], level=level)
        file = Path(path).expanduser()
        file.absolute().parent.mkdir(parents=True, exist_ok=True)
        # Closed by `close`. A lone surrogate in a record's name (the server
        # writes them) is written as its escape, as on stderr, not a crash.
        stream = file.open("a", encoding="utf-8", errors="backslashreplace")
        return _FileLog([stream], level=level, errors=stderr or sys.stderr)

    def shows(self, line: str, *, summary: bool) -> bool:
        """Whether `say` lets ``line`` through at this level."""
        if summary or line.startswith("warning:"):
            return self.level >= Level.SUMMARY
        return self.level >= Level.VERBOSE

    def error(self, line: str) -> None:
        """An error line: written whatever the level."""
        self.write(f"{line}\n")

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *whole, self._partial = (self._partial + text).split("\n")
        if whole:
            when = stamp(self._clock())
            for sink, stamped in self._sinks:
                sink.writelines(f"{when} {line}\n" if stamped else f"{line}\n" for line in whole)
                sink.flush()
        return len(text)

    def close(self) -> None:
        if self._partial:
            self.write("\n")
        super().close()


class _FileLog(Log):
    """A log that goes to a file it opened: errors go to stderr as well (cron mails them)."""

    def __init__(self, sinks: Sequence[TextIO], *, level: Level, errors: TextIO) -> None:
        super().__init__(sinks, level=level)
        self._owned = list(sinks)
        self._errors = Log([errors])

    def error(self, line: str) -> None:
        super().error(line)
        self._errors.error(line)

    def close(self) -> None:
        super().close()
        for stream in self._owned:
            stream.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False
