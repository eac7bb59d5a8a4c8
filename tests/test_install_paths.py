"""Every way of installing the tool gives a merge driver that git can start.

Each install is real and built once per session from a copy of this source
tree: a virtual environment, a `pip install --user` into a temporary user
base, pipx and uv tool when the machine has them, and the CI recipe of
docs/ci.md run as written. In each, the installed `crdt-merge-driver
install` registers the driver, a real concurrent `git pull` merges the
memory file, and `doctor` passes, then names a broken driver command.

The registry is used once, to fetch the dependency wheels (and setuptools
for the builds) into a wheelhouse; the venv, --user and CI recipe installs
are offline from it, so they measure the install paths, not the network.
"""

from __future__ import annotations

import ensurepip
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

from tests import gitrepo

ROOT = Path(__file__).resolve().parents[1]
NAME = "crdt-memory"
RECIPE_MARKER = "<!-- recipe: tests/test_install_paths.py"
RECIPE_URL = "https://github.com/OWNER/crdt-merge-driver"
# Actions replaces its expressions before the shell sees a step; these are the
# ones the recipe uses, with the values a run would give them.
ACTIONS_EXPRESSIONS = {"github.run_id": "4242"}
TIMEOUT = 300.0


class Installed(NamedTuple):
    """One install of the tool: its console script, and the variables that find a user base."""

    kind: str
    cli: Path
    env: Mapping[str, str] = {}

    def python(self) -> str:
        # The console script's #! line names the interpreter that install writes into git config.
        first = self.cli.read_text().splitlines()[0]
        assert first.startswith("#!/"), f"{self.cli} starts with {first!r}"
        return first[2:].split()[0]  # pipx writes `#!.../python -E`


def run(argv: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    ran = subprocess.run(
        argv, cwd=cwd, env=None if env is None else dict(env), capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )  # fmt: skip
    if check and ran.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} failed ({ran.returncode}):\n"
                             f"{ran.stdout}{ran.stderr}")  # fmt: skip
    return ran


def sealed(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a session-wide build: a HOME of its own and no git config.

    The machine's pip settings (PIP_INDEX_URL, PIP_CERT...) stay: they are how
    its pip reaches a registry.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env |= {"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
    return env | extra


def pip(*args: str, env: Mapping[str, str]) -> None:
    # This test run's own pip; `--python X` installs for X exactly as `X -m pip` would.
    run([sys.executable, "-m", "pip", *args], env=env)


# --- what the installs are built from, once per session ---------------------------


@pytest.fixture(scope="session")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("install-paths")


@pytest.fixture(scope="session")
def source(builds: Path) -> Path:
    """This tree as it is now (uncommitted edits too), as a git repository a URL can name."""
    copy = builds / "crdt-merge-driver"
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                 cwd=ROOT, env=sealed(builds)).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():  # a tracked file deleted in the work tree is left out
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    env = sealed(builds)
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
    run([*git, "init", "--quiet", "--initial-branch=main"], cwd=copy, env=env)
    run([*git, "add", "--all"], cwd=copy, env=env)
    run([*git, "commit", "--quiet", "-m", "the tree under test"], cwd=copy, env=env)
    return copy


@pytest.fixture(scope="session")
def wheelhouse(builds: Path, source: Path) -> Path:
    """The dependencies and build requirements from the registry, and this project's wheel."""
    wheels = builds / "wheels"
    project = tomllib.loads((source / "pyproject.toml").read_text())
    needed = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    env = sealed(builds / "pip-home")
    pip("download", "--quiet", "--only-binary", ":all:", "--dest", str(wheels), *needed, env=env)
    pip("wheel", "--quiet", "--no-index", "--find-links", str(wheels), "--no-deps",
        "--wheel-dir", str(wheels), str(source), env=env)  # fmt: skip
    return wheels


def offline(wheelhouse: Path, home: Path, **extra: str) -> dict[str, str]:
    return sealed(home, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse), **extra)


@pytest.fixture(scope="session")
def venv_install(builds: Path, wheelhouse: Path) -> Installed:
    venv = builds / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    pip("--python", str(venv / "bin" / "python"), "install", "--quiet", "crdt-merge-driver",
        env=offline(wheelhouse, builds / "pip-home"))  # fmt: skip
    return Installed("venv", venv / "bin" / "crdt-merge-driver")


def base_python() -> Path:
    """The interpreter this test run's virtualenv was made from: one with a user site."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return Path(sys.base_prefix) / "bin" / version


@pytest.fixture(scope="session")
def user_install(builds: Path, wheelhouse: Path) -> Installed:
    """`pip install --user` into a temporary user base (PYTHONUSERBASE)."""
    base = builds / "user-home" / ".local"
    python = base_python()
    env = offline(wheelhouse, builds / "pip-home", PYTHONUSERBASE=str(base),
                  PIP_BREAK_SYSTEM_PACKAGES="1")  # on Debian, past its EXTERNALLY-MANAGED file
    probe = run([str(python), "-c", "import site, sys; sys.exit(not site.ENABLE_USER_SITE)"],
                env=env, check=False)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"{python} has no user site (site.ENABLE_USER_SITE is false)")
    # -P: from this folder, `-c` would import the source tree itself.
    bare = run([str(python), "-s", "-P", "-c", "import crdt_merge_driver"], env=env, check=False)
    if bare.returncode == 0:
        pytest.skip(f"{python} imports crdt_merge_driver without a user site: a --user "
                    "install there would prove nothing")  # fmt: skip
    pip("--python", str(python), "install", "--user", "--quiet", "crdt-merge-driver", env=env)
    return Installed("user", base / "bin" / "crdt-merge-driver", {"PYTHONUSERBASE": str(base)})


@pytest.fixture(scope="session")
def home_user_install(user_install: Installed) -> Installed:
    """The same files found as most users have them: the default user base, ~/.local."""
    base = Path(user_install.env["PYTHONUSERBASE"])
    return Installed("user (~/.local)", user_install.cli, {"HOME": str(base.parent)})


def tool(name: str) -> str | None:
    """The machine's ``name``, else the one the test extra put beside this python (CI)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


# pipx and uv are run as a user would, with the registry reachable; the
# wheelhouse only saves them the downloads.


@pytest.fixture(scope="session")
def pipx_install(builds: Path, wheelhouse: Path, source: Path) -> Installed:
    pipx = tool("pipx")
    if pipx is None:
        pytest.skip("pipx is not installed on this machine (`command -v pipx` finds nothing)")
    home = builds / "pipx-home"
    env = sealed(home, PIP_FIND_LINKS=str(wheelhouse), PIPX_HOME=str(home / "pipx"),
                 PIPX_BIN_DIR=str(home / "bin"))  # fmt: skip
    run([pipx, "install", "--python", str(base_python()), str(source)], env=env)
    return Installed("pipx", home / "bin" / "crdt-merge-driver")


@pytest.fixture(scope="session")
def uv_install(builds: Path, wheelhouse: Path, source: Path) -> Installed:
    uv = tool("uv")
    if uv is None:
        pytest.skip("uv is not installed on this machine (`command -v uv` finds nothing)")
    home = builds / "uv-home"
    env = sealed(home, UV_TOOL_DIR=str(home / "tools"), UV_TOOL_BIN_DIR=str(home / "bin"),
                 UV_NO_CONFIG="1")  # fmt: skip
    run([uv, "tool", "install", "--python", str(base_python()), "--find-links", str(wheelhouse),
         str(source)], env=env)  # fmt: skip
    return Installed("uv tool", home / "bin" / "crdt-merge-driver")


@pytest.fixture(params=["venv", "user", "home_user", "pipx", "uv"])
def installed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Installed:
    found: Installed = request.getfixturevalue(f"{request.param}_install")
    # Set for git and its children (the driver) too; git config stays sealed
    # (GIT_CONFIG_GLOBAL), whatever HOME is.
    for key, value in found.env.items():
        monkeypatch.setenv(key, value)
    return found


# --- in each install: install, a concurrent pull, doctor ----------------------------


def memory(*names: str) -> bytes:
    return gitrepo.jsonl(*(gitrepo.entity(name) for name in names))


def cli(installed: Installed, *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(installed.cli), *args], check=False)


def test_installed_driver_merges_a_concurrent_pull_and_doctor_proves_it(
    installed: Installed, tmp_path: Path, remote: Path
) -> None:
    laptop = gitrepo.clone(remote, tmp_path / "laptop")
    assert cli(installed, "install", "--repo", str(laptop)).returncode == 0
    driver = gitrepo.git(laptop, "config", f"merge.{NAME}.driver").strip()
    python = installed.python()
    assert driver.startswith(f"{shlex.quote(python)} -E -P -m crdt_merge_driver merge "), driver
    gitrepo.write(laptop, "memory.jsonl", memory("A"))
    gitrepo.commit(laptop, "install the driver, start the memory")
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    server = gitrepo.clone(remote, tmp_path / "server")
    assert cli(installed, "install", "--repo", str(server)).returncode == 0

    gitrepo.commit_file(laptop, "memory.jsonl", memory("A", "from-laptop"))
    gitrepo.git(laptop, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.commit_file(server, "memory.jsonl", memory("A", "from-server"))
    pulled = gitrepo.git_result(server, "pull", "--no-rebase", "--no-edit", "origin", "main")

    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert "crdt-merge-driver: merged memory.jsonl" in pulled.stderr
    entities, _ = gitrepo.graph((server / "memory.jsonl").read_bytes())
    assert set(entities) == {"A", "from-laptop", "from-server"}

    doctor = cli(installed, "doctor", "--repo", str(server))
    assert doctor.returncode == 0, doctor.stdout
    assert f"ok: merge.{NAME}.driver merged a test memory file" in doctor.stdout

    broken = driver.replace(shlex.quote(python), "/nowhere/bin/python", 1)
    gitrepo.git(server, "config", f"merge.{NAME}.driver", broken)
    doctor = cli(installed, "doctor", "--repo", str(server))
    assert doctor.returncode == 6, doctor.stdout
    [problem] = [line for line in doctor.stdout.splitlines() if line.startswith("problem:")]
    assert problem.startswith(f"problem: merge.{NAME}.driver `{broken}` failed a test merge")
    assert "the interpreter /nowhere/bin/python does not exist" in problem


def test_the_backup_setup_schedules_runs_in_cron_s_bare_environment(
    installed: Installed, tmp_path: Path, remote: Path
) -> None:
    # Found by review (2026-12-04): after a `pip install --user` into a moved PYTHONUSERBASE,
    # the scheduled line failed with "No module named crdt_merge_driver" every time, before
    # its log opened, since cron does not have the variable.
    live = tmp_path / "memory.jsonl"
    live.write_bytes(memory("A"))
    done = cli(installed, "setup", str(remote), "--repo", str(tmp_path / "clone"),
               "--memory", str(live), "--schedule", "none")  # fmt: skip
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "back up with: " in line]
    argv = shlex.split(line.partition("back up with: ")[2])
    # What cron gives a job: HOME, a bare PATH, no PYTHON* (git config kept sealed).
    cron = {"HOME": os.environ["HOME"], "PATH": "/usr/bin:/bin",
            **{key: value for key, value in os.environ.items() if key.startswith("GIT_CONFIG")}}
    live.write_bytes(memory("A", "B"))
    ran = run(argv, env=cron, cwd=tmp_path, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    pushed = gitrepo.git(remote, "show", "HEAD:memory.jsonl").encode()
    assert set(gitrepo.graph(pushed)[0]) == {"A", "B"}


def test_the_old_isolated_driver_cannot_see_a_user_install(
    user_install: Installed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bug that -E -P fixes: -I hides the user site, so git could not start the driver."""
    for key, value in user_install.env.items():
        monkeypatch.setenv(key, value)
    python = user_install.python()
    hidden = run([python, "-I", "-c", "import crdt_merge_driver"], check=False)
    assert "No module named 'crdt_merge_driver'" in hidden.stderr
    seen = run([python, "-E", "-P", "-c", "import crdt_merge_driver as c; print(c.__file__)"])
    assert seen.stdout.startswith(user_install.env["PYTHONUSERBASE"])

    repo = gitrepo.init_repo(tmp_path / "repo")
    assert cli(user_install, "install", "--repo", str(repo)).returncode == 0
    old = gitrepo.git(repo, "config", f"merge.{NAME}.driver").strip().replace(" -E -P ", " -I ")
    gitrepo.git(repo, "config", f"merge.{NAME}.driver", old)

    doctor = cli(user_install, "doctor", "--repo", str(repo))

    assert doctor.returncode == 6
    assert (
        f"-I hides the user site, where `pip install --user` puts crdt-merge-driver; run "
        f"`crdt-merge-driver install --repo {repo}` to rewrite it with -E -P" in doctor.stdout
    )
    assert cli(user_install, "install", "--repo", str(repo)).returncode == 0
    assert cli(user_install, "doctor", "--repo", str(repo)).returncode == 0


# --- the CI recipe of docs/ci.md, as written --------------------------------------------


def recipe_steps() -> list[str]:
    """The `run:` steps of the workflow after the recipe marker in docs/ci.md."""
    text = (ROOT / "docs" / "ci.md").read_text()
    assert RECIPE_MARKER in text, "docs/ci.md lost the recipe marker this test reads"
    block = re.search(r"```yaml\n(.*?)```", text[text.index(RECIPE_MARKER) :], re.DOTALL)
    assert block is not None, "no ```yaml block after the recipe marker in docs/ci.md"
    runs = re.findall(r"^\s*-?\s*run:(.*)$", block[1], re.MULTILINE)
    # One line each: a `run: |` block would need a YAML parser here.
    assert runs and all(step.strip() not in ("", "|", ">") for step in runs), runs
    return [step.strip() for step in runs]


def as_actions_would(step: str) -> str:
    def evaluate(found: re.Match[str]) -> str:
        assert found[1] in ACTIONS_EXPRESSIONS, f"the recipe uses ${{{{ {found[1]} }}}}"
        return ACTIONS_EXPRESSIONS[found[1]]

    return re.sub(r"\$\{\{\s*([^}]*?)\s*\}\}", evaluate, step)


def test_ci_recipe_installs_from_the_repository_url_and_syncs(
    builds: Path, source: Path, wheelhouse: Path, tmp_path: Path, remote: Path
) -> None:
    steps = recipe_steps()
    assert any(RECIPE_URL in step for step in steps), steps
    # actions/setup-python: a python with pip on PATH (pip from ensurepip's bundled wheel).
    python = tmp_path / "setup-python"
    run([sys.executable, "-m", "venv", "--without-pip", str(python)])
    [bundled] = (Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl")
    pip("--python", str(python / "bin" / "python"), "install", "--quiet", str(bundled),
        env=offline(wheelhouse, builds / "pip-home"))  # fmt: skip
    # actions/checkout: a clone of the repository whose memory another machine changed meanwhile.
    other = gitrepo.clone(remote, tmp_path / "other")
    gitrepo.install(other)
    gitrepo.write(other, "memory.jsonl", memory("A"))
    gitrepo.commit(other, "start the memory")
    gitrepo.git(other, "push", "--quiet", "origin", "HEAD:main")
    checkout = gitrepo.clone(remote, tmp_path / "checkout")
    gitrepo.commit_file(other, "memory.jsonl", memory("A", "from-other"))
    gitrepo.git(other, "push", "--quiet", "origin", "HEAD:main")
    gitrepo.write(checkout, "memory.jsonl", memory("A", "from-ci"))  # what the agent step wrote

    env = {**os.environ, "PATH": f"{python / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}  # fmt: skip
    for step in steps:
        # Only the URL changes: it names the local copy of this tree instead of GitHub.
        script = as_actions_would(step).replace(RECIPE_URL, source.as_uri())
        ran = run(["bash", "-e", "-c", script], cwd=checkout, env=env, check=False)
        assert ran.returncode == 0, f"{script}\n{ran.stdout}{ran.stderr}"

    published = gitrepo.git(remote, "show", "main:memory.jsonl").encode()
    entities, _ = gitrepo.graph(published)
    assert set(entities) == {"A", "from-other", "from-ci"}
    message = gitrepo.git(remote, "log", "-1", "--format=%s", "main").strip()
    assert message == "memory from run 4242"
    assert (python / "bin" / "crdt-merge-driver").exists()  # installed by the recipe, not by us


# --- the docs name no registry --------------------------------------------------------

# An install command and what it installs: the first argument that is not an option.
INSTALL_COMMAND = re.compile(
    r"\b(pipx install|uv tool install|uv pip install|pip3? install)((?:\s+-[^\s`]+)*)"
    r"\s+([^\s`-][^\s`]*)"
)
# What may follow: a folder, a git URL, the "PATH"/"URL" placeholders, or a variable.
LOCAL_OR_URL = re.compile(r"""["']?(git\+|\.|/|~|\$|PATH|URL|"\$)""")


def test_no_doc_tells_users_to_install_from_a_registry() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = []
    for document in documents:
        for number, line in enumerate(document.read_text().splitlines(), 1):
            for command in INSTALL_COMMAND.finditer(line):
                if not LOCAL_OR_URL.match(command[3]):
                    found.append(f"{document.relative_to(ROOT)}:{number}: {command[0]}")
    assert found == [], "crdt-merge-driver is on no package registry:\n" + "\n".join(found)
    assert any(INSTALL_COMMAND.search(d.read_text()) for d in documents)  # the check sees them
