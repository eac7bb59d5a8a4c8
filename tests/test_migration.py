"""``migrate`` from the older layout, and the ``memory_backup.sh`` wrapper old cron lines call.

The older backup scripts kept one JSON array per host (``memory-<host>.json``)
and a ``unified-memory.json``, pretty-printed by Python's ``json.dump(indent=2)``,
each record carrying ``_crdt_metadata`` (host, ISO 8601 timestamp, version,
unique id). The layout below is what such a repository looks like after a
few weeks: the same entities on several hosts with different observations
and different types, and a unified file that lags behind the hosts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tests import gitrepo
from tests.memory_server import ServerFactory

REPO_ROOT = Path(__file__).resolve().parent.parent
WRAPPER = REPO_ROOT / "memory_backup.sh"
TARGET = "memory.jsonl"

Record = dict[str, Any]
Graph = tuple[dict[str, tuple[str, frozenset[str]]], frozenset[tuple[str, str, str]]]


def stamped(record: Record, host: str, timestamp: str, version: int) -> Record:
    """A record as the older scripts wrote it."""
    unique_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{host}/{json.dumps(record)}/{version}"))
    metadata = {"host": host, "timestamp": timestamp, "version": version, "unique_id": unique_id}
    return {**record, "_crdt_metadata": metadata}


def entity(name: str, entity_type: str, *observations: str) -> Record:
    return {"type": "entity", "name": name, "entityType": entity_type,
            "observations": list(observations)}  # fmt: skip


def relation(source: str, relation_type: str, target: str) -> Record:
    return {"type": "relation", "from": source, "to": target, "relationType": relation_type}


OLD_FILES: dict[str, list[Record]] = {
    "memory-laptop.json": [
        stamped(entity("Ada", "person", "likes tea", "writes code"),
                "laptop", "2025-03-01T09:00:00.125000", 3),
        stamped(entity("Babbage", "person", "builds engines"),
                "laptop", "2025-03-01T09:05:12.500000", 1),
        stamped(entity("Engine", "machine", "analytical"),
                "laptop", "2025-03-02T10:00:00.000001", 2),
        stamped(relation("Ada", "works with", "Babbage"), "laptop", "2025-03-01T09:06:00", 1),
        stamped(relation("Babbage", "built", "Engine"), "laptop", "2025-03-02T10:01:00", 1),
    ],
    "memory-desktop.json": [
        # The newest Ada: her type changed here, last.
        stamped(entity("Ada", "mathematician", "writes code", "first programmer"),
                "desktop", "2025-03-04T18:30:00", 4),
        # An older Engine than the laptop's: its type loses.
        stamped(entity("Engine", "invention", "never finished"),
                "desktop", "2025-03-01T08:00:00", 1),
        stamped(entity("Turing", "person", "broke codes", "café au lait"),
                "desktop", "2025-03-03T12:00:00", 1),
        stamped(relation("Ada", "works with", "Babbage"), "desktop", "2025-03-04T18:31:00", 2),
        stamped(relation("Turing", "admired", "Ada"), "desktop", "2025-03-03T12:01:00", 1),
    ],
    "memory-ci.json": [
        # Timezone-aware, as a later version of the scripts wrote them.
        stamped(entity("Babbage", "inventor", "lucasian professor"),
                "ci", "2025-03-05T02:00:00+00:00", 2),
        stamped(entity("Build Bot", "machine", "runs the tests"),
                "ci", "2025-03-05T02:00:01+00:00", 1),
        stamped(relation("Build Bot", "tests", "Engine"), "ci", "2025-03-05T02:00:02+00:00", 1),
    ],
    "unified-memory.json": [
        # Written by the old merge script weeks ago: behind every host, and
        # holding Grace, whom no host file has any more.
        stamped(entity("Ada", "person", "likes tea"), "laptop", "2025-02-20T08:00:00", 1),
        stamped(entity("Babbage", "person", "builds engines"),
                "laptop", "2025-03-01T09:05:12.500000", 1),
        stamped(entity("Engine", "machine", "analytical"),
                "laptop", "2025-03-02T10:00:00.000001", 2),
        stamped(entity("Grace", "person", "wrote a compiler"), "laptop", "2025-02-15T10:00:00", 1),
        stamped(relation("Ada", "works with", "Babbage"), "laptop", "2025-03-01T09:06:00", 1),
        stamped(relation("Grace", "admires", "Ada"), "laptop", "2025-02-15T10:00:01", 1),
    ],
}  # fmt: skip

MIGRATED: Graph = (
    {
        "Ada": ("mathematician", frozenset({"likes tea", "writes code", "first programmer"})),
        "Babbage": ("inventor", frozenset({"builds engines", "lucasian professor"})),
        "Engine": ("machine", frozenset({"analytical", "never finished"})),
        "Turing": ("person", frozenset({"broke codes", "café au lait"})),
        "Build Bot": ("machine", frozenset({"runs the tests"})),
        "Grace": ("person", frozenset({"wrote a compiler"})),
    },
    frozenset({
        ("Ada", "works with", "Babbage"),
        ("Babbage", "built", "Engine"),
        ("Turing", "admired", "Ada"),
        ("Build Bot", "tests", "Engine"),
        ("Grace", "admires", "Ada"),
    }),
)  # fmt: skip


def identity(record: Record) -> tuple[str, ...]:
    if record["type"] == "entity":
        return ("entity", record["name"])
    return ("relation", record["from"], record["relationType"], record["to"])


def moment(metadata: Record) -> datetime:
    parsed = datetime.fromisoformat(metadata["timestamp"])
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # naive ones were UTC


def newest_metadata() -> dict[tuple[str, ...], Record]:
    """For every record, the ``_crdt_metadata`` of its newest version among the old files."""
    newest: dict[tuple[str, ...], Record] = {}
    for records in OLD_FILES.values():
        for record in records:
            key, metadata = identity(record), record["_crdt_metadata"]
            if key not in newest or moment(metadata) > moment(newest[key]):
                newest[key] = metadata
    return newest


def older_repository(path: Path, remote: Path | None = None) -> Path:
    """A repository as the older scripts left it: the four JSON files, committed."""
    repo = gitrepo.init_repo(path)
    for name, records in OLD_FILES.items():
        with (repo / name).open("w") as stream:  # exactly as the old scripts wrote them
            json.dump(records, stream, indent=2)
    gitrepo.commit(repo, "backup from laptop")
    if remote is not None:
        gitrepo.git(repo, "remote", "add", "origin", str(remote))
    return repo


def snapshot(repo: Path) -> tuple[str, str, str, list[tuple[str, bytes]]]:
    """Everything migrate could change: HEAD, status, config, every file's bytes."""
    files = sorted((str(path.relative_to(repo)), path.read_bytes()) for path in repo.rglob("*")
                   if path.is_file() and ".git" not in path.relative_to(repo).parts)  # fmt: skip
    return (
        gitrepo.head(repo),
        gitrepo.git(repo, "status", "--porcelain", "--ignored", "--untracked-files=all"),
        gitrepo.git(repo, "config", "--local", "--list"),
        files,
    )


def graph_of(data: bytes) -> Graph:
    entities, relations = gitrepo.graph(data)  # fails on a repeated record
    return entities, frozenset(relations)


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == 0, f"exit {result.returncode}:\n{stderr}"
    return stderr


def test_dry_run_changes_nothing_and_says_what_it_would_do(tmp_path: Path) -> None:
    repo = older_repository(tmp_path / "memory")
    before = snapshot(repo)

    said = ok(gitrepo.cli("migrate", "--dry-run", "-v", "--repo", str(repo), cwd=tmp_path))

    for name in OLD_FILES:
        assert f"would fold {name}" in said, said
    assert f"{TARGET}: {len(MIGRATED[0]) + len(MIGRATED[1])} records from 4 files" in said
    assert "; nothing written" in said
    assert snapshot(repo) == before


def test_migrate_folds_the_older_layout_into_one_file_the_server_loads(
    tmp_path: Path, memory_server_factory: ServerFactory
) -> None:
    repo = older_repository(tmp_path / "memory")
    before = gitrepo.head(repo)

    said = ok(gitrepo.cli("migrate", "-v", "--repo", str(repo), cwd=tmp_path))

    # One commit: the old files out, memory.jsonl and the driver's attributes in.
    assert gitrepo.git(repo, "rev-parse", "HEAD~1").strip() == before
    changes = gitrepo.git(repo, "diff", "--name-status", "--no-renames", before, "HEAD")
    assert sorted(changes.splitlines()) == sorted(
        [f"D\t{name}" for name in OLD_FILES] + [f"A\t{TARGET}", "A\t.gitattributes"]
    )
    assert gitrepo.git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert not any((repo / name).exists() for name in OLD_FILES)
    assert "push it with `crdt-merge-driver sync`" in said
    doctor = gitrepo.cli("doctor", "--repo", str(repo), cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout.decode() + doctor.stderr.decode()

    data = (repo / TARGET).read_bytes()
    assert graph_of(data) == MIGRATED  # every record once, observations united, newest types
    newest = newest_metadata()
    for record in gitrepo.records(data):
        assert record["_crdt_metadata"] == newest[identity(record)], record

    # The real server loads it (and reading does not rewrite it).
    server = memory_server_factory(repo / TARGET)
    found = server.read_graph()
    names = [value["name"] for value in found["entities"]]
    assert len(names) == len(set(names)), names
    entities = {value["name"]: (value["entityType"], frozenset(value["observations"]))
                for value in found["entities"]}  # fmt: skip
    relations = [(value["from"], value["relationType"], value["to"])
                 for value in found["relations"]]  # fmt: skip
    assert len(relations) == len(set(relations)), relations
    assert (entities, frozenset(relations)) == MIGRATED
    assert (repo / TARGET).read_bytes() == data


def test_migrate_then_sync_then_the_old_wrapper_backs_up_a_live_file(
    tmp_path: Path, remote: Path, memory_server_factory: ServerFactory
) -> None:
    repo = older_repository(tmp_path / "memory", remote)
    ok(gitrepo.cli("migrate", "--repo", str(repo), cwd=tmp_path))
    ok(gitrepo.cli("sync", "--repo", str(repo), cwd=tmp_path))
    assert gitrepo.git(remote, "rev-parse", "main") == gitrepo.git(repo, "rev-parse", "HEAD")

    # A machine's live memory file, kept by its server outside the repository.
    live = tmp_path / "agent" / TARGET
    live.parent.mkdir()
    server = memory_server_factory(live)
    server.create_entities([{"name": "Hopper", "entityType": "person",
                             "observations": ["found a bug"]}])  # fmt: skip
    server.add_observations([{"entityName": "Hopper", "contents": ["wrote COBOL"]}])

    # The line an old crontab still has: `bash memory_backup.sh`, with its environment.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MEMORY_FILE_PATH": str(live), "REPO_DIR": str(repo), "PATH": path}
    result = subprocess.run(["bash", str(WRAPPER)], cwd=tmp_path, env=env, capture_output=True,
                            check=False)  # fmt: skip
    assert "backed up and restored" in ok(result)

    hopper = ("person", frozenset({"found a bug", "wrote COBOL"}))
    expected = ({**MIGRATED[0], "Hopper": hopper}, MIGRATED[1])
    pushed = gitrepo.git(remote, "cat-file", "blob", f"main:{TARGET}").encode()
    assert graph_of(pushed) == expected
    restored = server.read_graph()
    assert {value["name"] for value in restored["entities"]} == expected[0].keys()
    assert len(restored["entities"]) == len(expected[0])
    assert b"_crdt" not in live.read_bytes()
    assert orjson.loads(live.read_bytes().split(b"\n")[0])["type"] == "entity"


def test_a_file_name_that_is_not_utf_8_does_not_stop_migrate(tmp_path: Path) -> None:
    # Found by review: the listing of untracked files was decoded strictly.
    repo = older_repository(tmp_path / "memory")
    (repo / os.fsdecode(b"notes-\xff.txt")).write_bytes(b"not memory")

    said = ok(gitrepo.cli("migrate", "--dry-run", "-v", "--repo", str(repo), cwd=tmp_path))

    assert "; nothing written" in said
