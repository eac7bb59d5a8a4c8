#!/usr/bin/env bash
# Old cron lines call memory_backup.sh; it now runs `crdt-merge-driver backup`
# with the same environment (MEMORY_FILE_PATH or MEMORY_FILE, REPO_DIR) and
# any arguments given. See docs/migration.md.
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"  # through symlinks too
if [[ -x "$here/.venv/bin/crdt-merge-driver" ]]; then
    exec "$here/.venv/bin/crdt-merge-driver" backup "$@"
fi
exec crdt-merge-driver backup "$@"
