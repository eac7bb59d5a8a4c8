"""Fixtures: every test runs sealed off from the user's git config and HOME.

The autouse `hermetic_seal` gives each test a temp HOME with its own global
git config, no system config, a fixed identity and fixed dates, and no
editor; a session check fails loudly if the real global config changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests import gitrepo

# Property tests on the pure core run many examples; tests that spawn git use
# the "git" profile (few examples, no deadline).
settings.register_profile("default", deadline=None, max_examples=200)
settings.register_profile("git", deadline=None, max_examples=12)
settings.register_profile("ci", deadline=None, max_examples=300, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_REAL_GLOBAL_CONFIG = Path.home() / ".gitconfig"
# Variables of the user's own setup that would point a test at real files.
_USER_VARIABLES = ("EMAIL", "MEMORY_FILE_PATH", "MEMORY_FILE", "REPO_DIR")


def _fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


@pytest.fixture(scope="session", autouse=True)
def _real_config_untouched() -> Iterator[None]:
    before = _fingerprint(_REAL_GLOBAL_CONFIG)
    yield
    after = _fingerprint(_REAL_GLOBAL_CONFIG)
    assert before == after, f"a test changed the real {_REAL_GLOBAL_CONFIG}"


@pytest.fixture(autouse=True)
def hermetic_seal(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path_factory.mktemp("home")
    global_config = home / ".gitconfig"
    global_config.write_text(
        "[user]\n\tname = Test Machine\n\temail = test@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
        "[advice]\n\tdetachedHead = false\n\tskippedCherryPicks = false\n"
        "[protocol \"file\"]\n\tallow = always\n"
    )
    for name in list(os.environ):
        if name.startswith("GIT_") or name in _USER_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_config))
    monkeypatch.setenv("GIT_AUTHOR_DATE", "2026-01-01T00:00:00+0000")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-01-01T00:00:00+0000")
    monkeypatch.setenv("GIT_EDITOR", "false")
    monkeypatch.setenv("EDITOR", "false")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    monkeypatch.setenv("LC_ALL", "C")
    return home


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """An empty bare repository standing for the shared backup remote."""
    return gitrepo.init_bare(tmp_path / "remote.git")


@pytest.fixture
def machines(tmp_path: Path, remote: Path) -> tuple[Path, Path]:
    """Two clones of `remote` with the driver installed and a first commit pushed."""
    first = gitrepo.clone(remote, tmp_path / "laptop")
    gitrepo.install(first)
    gitrepo.commit(first, "install the memory driver")
    gitrepo.git(first, "push", "--quiet", "origin", "HEAD:main")
    second = gitrepo.clone(remote, tmp_path / "server")
    gitrepo.install(second)
    return first, second


# --- the real MCP memory server (npm ci installs it; see tests/memory_server.py) ---

from tests.memory_server import ServerFactory, server_pool  # noqa: E402  # appended section


@pytest.fixture
def memory_server_factory() -> Iterator[ServerFactory]:
    """``start(path)`` runs a real memory server over ``path``; all are closed after the test."""
    with server_pool() as start:
        yield start


# The user's crontab is one per user, not one per test: tests running at the
# same time (pytest-xdist workers) take turns on it, holding this lock.
CRONTAB_LOCK = Path(tempfile.gettempdir()) / "crdt-merge-driver-tests-crontab.lock"


@pytest.fixture
def crontab() -> Iterator[bytes | None]:
    """This user's crontab as it was (None: none), put back byte for byte after the test."""
    if shutil.which("crontab") is None:
        pytest.fail("`crontab` is missing: install Debian's cron package (apt-get install cron)")
    with CRONTAB_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        listed = subprocess.run(["crontab", "-l"], capture_output=True, check=False)
        before = listed.stdout if listed.returncode == 0 else None
        yield before
        if before is None:
            subprocess.run(["crontab", "-r"], capture_output=True, check=False)
        else:
            subprocess.run(["crontab", "-"], input=before, check=True)
