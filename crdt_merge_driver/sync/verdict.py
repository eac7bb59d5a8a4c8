"""What a failed fetch or push means: try again later, or stop now and say why.

The verdict is read from git's own stderr (git runs with ``LC_ALL=C``); the
samples the tests check are git's real output, captured in
tests/fixtures/git-stderr. Only what a later attempt can get past is worth
another attempt; everything else is one line for the user.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

# A pre-receive (or update) hook that refuses a push is retried only when one
# of its lines says the refusal is temporary with one of these words.
TRANSIENT_MARKERS = ("transient", "try again")
MISSING_BRANCH = re.compile(r"couldn't find remote ref")
NO_ATOMIC = re.compile(r"does not support --atomic push")


class Verdict(NamedTuple):
    retry: bool
    reason: str


class Transient(Exception):
    # Not an error a user sees: the signal to try again, caught by the retry policy.
    """A failure that a later attempt can get past (the remote moved on, a dropped link)."""

    def __init__(
        self, reason: str, *, took: float = 0.0, queued: int = 0, unclear: bool = False
    ) -> None:
        self.reason = reason
        self.took = took  # seconds the failed attempt took; the loop fills it in
        self.queued = queued  # commits the queue's first is landing, when waiting for it
        self.unclear = unclear  # a push whose answer was lost: it may have landed
        super().__init__(reason)


_HOOK_DECLINED = re.compile(r"\(.*hook declined\)")
# Checked in order; the first match decides. Compiled when git first fails
# (`_rules`): compiling them at import cost every idle backup 2.5 ms.
# fmt: off
_RULES: tuple[tuple[bool, str, str], ...] = (
    (False, r"Authentication failed|could not read (Username|Password)|Permission denied \("
            r"|Host key verification failed|Invalid username or password"
            r"|returned error: 40[13]\b|HTTP 40[13]\b", "authentication failed"),
    (False, r"does not appear to be a git repository|repository '[^']*' not found"
            r"|Repository not found|no such repository|access denied", "no such repository"),
    (False, r"Could not resolve (host|hostname)|unable to look up|Name or service not known",
            "unknown host"),
    (False, NO_ATOMIC.pattern, "the remote does not take atomic pushes"),
    (True, r"\((fetch first|non-fast-forward|stale info)\)",
           "rejected: the remote moved on (another machine pushed first)"),
    (True, r"cannot lock ref|failed to update ref|incorrect old value"
           r"|Unable to create '[^']*\.lock'", "the remote branch was locked by another push"),
    (True, r"returned error: (408|429|5\d\d)|HTTP (408|429|5\d\d)",
           "the server is busy or failing for now (HTTP 408, 429 or 5xx)"),
    (True, r"Connection refused|Couldn't connect to server|Failed to connect",
           "connection refused"),
    (True, r"Connection reset|Broken pipe", "connection reset"),
    (True, r"timed out|Operation too slow", "timed out"),
    (True, r"hung up unexpectedly|early EOF|unexpected disconnect"
           r"|Could not read from remote repository", "the remote hung up"),
)
# fmt: on


@functools.cache
def _rules() -> tuple[tuple[bool, re.Pattern[str], str], ...]:
    return tuple((retry, re.compile(pattern, re.IGNORECASE), reason)
                 for retry, pattern, reason in _RULES)  # fmt: skip


_REFUSALS = frozenset(reason for retry, _, reason in _RULES if retry) - {
    "the server is busy or failing for now (HTTP 408, 429 or 5xx)", "connection reset",
    "timed out", "the remote hung up",
}


def refused(verdict: Verdict) -> bool:
    """Whether a failed push surely changed nothing: the remote said no, or was never reached.

    A push cut off (timed out, reset, hung up) may have landed all the same.
    """
    return verdict.reason in _REFUSALS or verdict.reason.startswith("the remote's hook refused")


def classify(stderr: str) -> Verdict:
    """Whether a failed fetch or push is worth another attempt, and why, from git's stderr."""
    stderr = redact(stderr)
    if _HOOK_DECLINED.search(stderr):
        said = [line.removeprefix("remote:").strip() for line in stderr.splitlines()
                if line.startswith("remote:")]  # fmt: skip
        words = "; ".join(line for line in said if line) or "no reason given"
        if any(marker in words.lower() for marker in TRANSIENT_MARKERS):
            return Verdict(True, f"the remote's hook refused for now: {words}")
        return Verdict(False, f"the remote's hook refused the push: {words}")
    for retry, pattern, reason in _rules():
        if pattern.search(stderr):
            return Verdict(retry, reason)
    return Verdict(False, first_line(stderr))


_USERINFO = re.compile(r"(?<=//)[^/@\s]+@|(?<![\w/])[^\s/@:'\"]+:[^\s/@'\"]+@(?=[\w.-])")


def redact(text: str) -> str:
    """``text`` without the ``user:token@`` of any URL in it (CI logs are often public)."""
    return _USERINFO.sub("", text)


def first_line(stderr: str, *, lines: int = 1) -> str:
    """The first line (or ``lines``) of git's output that say something: not hints, not progress."""
    noise = ("hint:", "To ", "remote: ")
    said = [text for line in stderr.splitlines()
            if (text := line.strip()) and not text.startswith(noise)]  # fmt: skip
    return " ".join(said[:lines]) or "git printed nothing"
