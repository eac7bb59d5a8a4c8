"""The exception hierarchy and the exit codes it maps to.

Every error a user can cause or fix is a `CrdtError` whose message is one
line; `cli.main` turns it into that line on stderr and its `exit_code`. So
is an `OSError` (a file or folder missing, unreadable, a folder where a file
should be), as exit code 2 (1 for the merge driver). Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # git's merge-driver contract: 1..128 means "conflict, keep all stages".
    # Bad input to the driver uses 1 so git keeps the three versions.
    CONFLICT = 1
    USAGE = 2
    GIT = 3
    GAVE_UP = 4
    REFUSED = 5
    NOT_CONFIGURED = 6
    INTERRUPTED = 130


class CrdtError(Exception):
    """An error with a one-line message meant for the user."""

    exit_code: ExitCode = ExitCode.USAGE


class InputError(CrdtError):
    """A memory file that cannot be merged: where it is bad and why."""

    exit_code = ExitCode.CONFLICT

    def __init__(self, reason: str, *, source: str = "", line: int | None = None) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.source or "input"
        if self.line is not None:
            where = f"{where}, line {self.line}"
        return f"{where}: {self.reason}"

    def located(self, source: str) -> InputError:
        """The same error, naming `source` (a path and side) as the file."""
        return InputError(self.reason, source=source, line=self.line)


class GitError(CrdtError):
    """A git command failed; the message shows the command and git's words."""

    exit_code = ExitCode.GIT

    def __init__(self, message: str, *, returncode: int = 0, stderr: str = "") -> None:
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)


class RefusedError(CrdtError):
    """A safety check refused to go on (mass delete, invalid file before push)."""

    exit_code = ExitCode.REFUSED


class GaveUpError(CrdtError):
    """Retries ran out (attempts or deadline) before the push landed."""

    exit_code = ExitCode.GAVE_UP


class NotConfiguredError(CrdtError):
    """The driver is not set up where it is needed; the message says what to run."""

    exit_code = ExitCode.NOT_CONFIGURED
