#!/usr/bin/env bash
# One-time setup of crdt-merge-driver on a fresh machine; see usage() below.
#
# Everything goes into .venv beside this script. git stores the absolute path
# of .venv's python in the driver command, so do not move this folder after
# `install --repo` (run this script again, with REPO_DIR, if you do).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3}"   # the interpreter that creates .venv
MIN_PYTHON=(3 11)
MIN_NODE=20

usage() {
    cat <<EOF
Usage:
  ./install.sh [REPO_DIR]   set up .venv with crdt-merge-driver; with REPO_DIR, also
                            register the merge driver in that git repository
  ./install.sh --demo       set up, then run the built-in demo (three machines, one remote)
  ./install.sh --test [PYTEST_ARGS...]
                            set up for development (editable install, test tools, the
                            real memory server via npm ci), then run exactly what CI
                            runs: ruff, mypy --strict, pytest under coverage (>= 95%)
  ./install.sh -h | --help  show this help

Needs Python >= ${MIN_PYTHON[0]}.${MIN_PYTHON[1]} (set PYTHON=... to choose one) and git; --test
also needs Node >= $MIN_NODE with npm. Running it again reuses .venv.
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

step() {
    echo "==> $*" >&2
}

need_python() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python >= ${MIN_PYTHON[0]}.${MIN_PYTHON[1]} or set PYTHON=/path/to/python3"
    if ! "$PYTHON" -c "import sys; sys.exit(sys.version_info < (${MIN_PYTHON[0]}, ${MIN_PYTHON[1]}))"; then
        die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); crdt-merge-driver needs >= ${MIN_PYTHON[0]}.${MIN_PYTHON[1]} (set PYTHON=/path/to/python3.11 or newer)"
    fi
}

# Create .venv, or reuse it when its python still runs and is new enough.
make_venv() {
    if [[ -x "$VENV/bin/python" ]] \
        && "$VENV/bin/python" -c "import sys; sys.exit(sys.version_info < (${MIN_PYTHON[0]}, ${MIN_PYTHON[1]}))" 2>/dev/null; then
        step "reusing $VENV"
        return
    fi
    need_python
    step "creating $VENV"
    # --clear: a .venv left broken (say, by a removed interpreter) is rebuilt.
    "$PYTHON" -m venv --clear "$VENV" \
        || die "could not create $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
    # Python 3.11's venv comes with setuptools, whose .pth file puts an import
    # hook in every python started from .venv: git's merge driver among them,
    # about 1.6 ms of its start. Nothing here needs it at run time (pip builds
    # in an isolated environment of its own), so it goes.
    "$VENV/bin/python" -m pip uninstall --yes --quiet setuptools 2>/dev/null || true
}

pip_install() {
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

need_git() {
    command -v git >/dev/null 2>&1 || die "git not found: the merge driver runs inside git; install it first"
}

setup_user() {
    need_git
    make_venv
    step "installing crdt-merge-driver into $VENV"
    pip_install "$HERE"
}

next_steps() {
    cat <<EOF

crdt-merge-driver is installed in $VENV.
Next:
  $VENV/bin/crdt-merge-driver demo                       see it merge three machines' memory
  $VENV/bin/crdt-merge-driver install --repo REPO_DIR    attach it to your memory repository
  $VENV/bin/crdt-merge-driver doctor --repo REPO_DIR     check that git will use it
Commit the .gitattributes that install writes; every clone needs its own install.
EOF
}

# The schedule tests use the real `crontab` (setup writes the user's crontab).
# As root on Debian/Ubuntu (CI), install it; elsewhere say what to install.
need_crontab() {
    command -v crontab >/dev/null 2>&1 && return
    if (( EUID == 0 )) && command -v apt-get >/dev/null 2>&1; then
        step "installing cron for the schedule tests (apt-get install cron)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cron >/dev/null \
            || die "apt-get install cron failed"
        return
    fi
    die "crontab not found: the tests use the real one; install it (Debian/Ubuntu: apt-get install cron)"
}

run_tests() {
    need_git
    command -v node >/dev/null 2>&1 || die "node not found: the tests run the real MCP memory server; install Node >= $MIN_NODE and npm"
    command -v npm >/dev/null 2>&1 || die "npm not found: install it with Node >= $MIN_NODE"
    local node_major
    node_major="$(node -p 'process.versions.node.split(".")[0]')"
    (( node_major >= MIN_NODE )) || die "node is $(node --version); the memory server needs Node >= $MIN_NODE"

    need_crontab
    make_venv
    step "installing crdt-merge-driver (editable) with its test tools"
    # Editable, so the driver processes that git starts import the same files
    # that coverage's `source` names and measure them.
    pip_install -e "${HERE}[test]"
    step "installing the MCP memory server for the tests (npm ci)"
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)

    cd "$HERE"
    local bin="$VENV/bin"
    step "ruff check ."
    "$bin/ruff" check .
    step "mypy --strict crdt_merge_driver"
    "$bin/mypy" --strict crdt_merge_driver

    # Coverage of subprocesses: pyproject's `patch = ["subprocess"]` makes
    # `coverage run` put its config in COVERAGE_PROCESS_CONFIG, and the
    # coverage .pth file in .venv starts measuring in every python that sees
    # that variable. The merge driver is such a python: git runs
    # `.venv/bin/python -m crdt_merge_driver merge ...` (tests install it with
    # sys.executable). So, for the driver's lines to count:
    #   - a test that builds a child environment must start from os.environ
    #     (as crdt_merge_driver.git.environment does), or COVERAGE_PROCESS_CONFIG
    #     is lost and that child goes unmeasured;
    #   - the child must exit normally (not SIGKILL) so coverage saves its data;
    #   - the install must be editable (above), so the child runs this tree;
    #   - each process writes its own .coverage.* file (parallel = true);
    #     `coverage combine` merges them before the report.
    step "pytest under coverage"
    "$bin/coverage" erase
    local status=0
    # Two workers (pytest-xdist; TEST_WORKERS=0 for one process, or more on a
    # bigger machine): the suite spends most of its time waiting on git and
    # node processes, so two halve it on CI's two cores. Each worker is a
    # python that coverage measures like the drivers git starts.
    "$bin/coverage" run -m pytest --numprocesses="${TEST_WORKERS:-2}" "$@" || status=$?
    if (( status == 5 )); then
        # pytest's "no tests collected" must never pass as green.
        die "pytest collected no tests (exit 5)"
    fi
    "$bin/coverage" combine --quiet || (( status != 0 )) || die "coverage combine found no data"
    local report_status=0
    "$bin/coverage" report || report_status=$?
    if (( status != 0 )); then
        die "tests failed (pytest exit $status)"
    fi
    if (( report_status != 0 )); then
        die "coverage report failed (exit $report_status; the floor is fail_under in pyproject.toml)"
    fi
    step "all checks passed"
}

main() {
    case "${1:-}" in
        -h | --help)
            usage
            ;;
        --test)
            shift
            run_tests "$@"
            ;;
        --demo)
            (( $# == 1 )) || die "--demo takes no arguments (see --help)"
            setup_user
            step "running the demo"
            "$VENV/bin/crdt-merge-driver" demo
            ;;
        -*)
            usage >&2
            die "unknown option: $1"
            ;;
        *)
            (( $# <= 1 )) || die "at most one REPO_DIR (see --help)"
            setup_user
            if (( $# == 1 )); then
                [[ -d "$1" ]] || die "$1 is not a folder"
                step "registering the merge driver in $1"
                "$VENV/bin/crdt-merge-driver" install --repo "$1"
            fi
            next_steps
            ;;
    esac
}

main "$@"
