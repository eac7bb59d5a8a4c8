"""``crdt-merge-driver join``: memory files that share no ancestor, merged into one.

A user joins the files of several hosts (or an old backup and a new one)
when there is no history to merge them with. The same record in two files
must come out once, with everything both had; the later stamp decides a
type both changed; the output is written atomically (a 0600 memory file
stays 0600) in the format its name asks for; and bad input is one line
naming the file and the line, with nothing written. Everything runs the
real command line in its own process.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from crdt_merge_driver.errors import ExitCode
from tests import gitrepo
from tests.gitrepo import entity, jsonl, relation

Record = dict[str, Any]


def stamp(time: str, host: str) -> dict[str, object]:
    return {"time": time, "counter": 0, "host": host}


LAPTOP = jsonl(
    entity(
        "Ada", "person", ("likes tea", "writes code"), _crdt=stamp("2026-03-01T09:00:00Z", "laptop")
    ),
    entity("Babbage", "person", ("builds engines",)),
    relation("Ada", "Babbage", "works with"),
)
DESKTOP = jsonl(
    entity("Ada", "mathematician", ("writes code", "first programmer"),
           _crdt=stamp("2026-03-02T09:00:00Z", "desktop")),
    entity("Turing", "person", ("broke codes",)),
    relation("Ada", "Babbage", "works with"),
    relation("Turing", "Ada", "admires"),
)  # fmt: skip
JOINED_GRAPH = (
    {
        "Ada": ("mathematician", frozenset({"likes tea", "writes code", "first programmer"})),
        "Babbage": ("person", frozenset({"builds engines"})),
        "Turing": ("person", frozenset({"broke codes"})),
    },
    {("Ada", "works with", "Babbage"), ("Turing", "admires", "Ada")},
)


def join(*args: str | Path, cwd: Path) -> tuple[int, bytes, list[str]]:
    """Run ``join args...``; exit code, stdout and stderr's lines."""
    result = gitrepo.cli("join", *map(str, args), cwd=cwd)
    return result.returncode, result.stdout, result.stderr.decode().splitlines()


def files(folder: Path, **contents: bytes) -> list[Path]:
    paths = []
    for name, data in contents.items():
        path = folder / name.replace("_", ".")
        path.write_bytes(data)
        paths.append(path)
    return paths


def array(*records: bytes, indent: int | None = 2) -> bytes:
    """An older JSON array file, as Python's json.dump wrote it."""
    return json.dumps([orjson.loads(raw) for raw in records], indent=indent).encode() + b"\n"


# --- what comes out -------------------------------------------------------------------


def test_the_same_entity_in_two_files_comes_out_once_with_everything(tmp_path: Path) -> None:
    laptop, desktop = files(tmp_path, laptop_jsonl=LAPTOP, desktop_jsonl=DESKTOP)
    code, out, err = join(laptop, desktop, cwd=tmp_path)
    assert code == ExitCode.OK
    assert gitrepo.graph(out) == JOINED_GRAPH
    kinds = [record["type"] for record in gitrepo.records(out)]
    assert kinds == ["entity"] * 3 + ["relation"] * 2  # entities first, as the server writes
    assert not out.endswith(b"\n")  # the server's layout: no final newline
    assert err[0] == "crdt-merge-driver: joined 2 files into stdout: 5 records"


def test_the_later_stamp_wins_whatever_the_order_of_the_files(tmp_path: Path) -> None:
    laptop, desktop = files(tmp_path, laptop_jsonl=LAPTOP, desktop_jsonl=DESKTOP)
    code, forward, err = join(laptop, desktop, cwd=tmp_path)
    assert code == ExitCode.OK
    code, backward, _ = join(desktop, laptop, cwd=tmp_path)
    assert code == ExitCode.OK
    assert forward == backward
    (ada,) = (record for record in gitrepo.records(forward) if record.get("name") == "Ada")
    assert ada["entityType"] == "mathematician"  # desktop's edit, a day later
    assert ada["_crdt"] == stamp("2026-03-02T09:00:00Z", "desktop")
    assert err[1:] == [
        'crdt-merge-driver: entity "Ada": edited on both sides, kept entityType '
        '"mathematician" over "person" (the later stamp)'
    ]


def test_without_stamps_a_type_both_changed_is_decided_the_same_in_any_order(
    tmp_path: Path,
) -> None:
    one, other = files(
        tmp_path,
        one_jsonl=entity("Ada", "person", ("likes tea",)),
        other_jsonl=entity("Ada", "robot", ("beeps",)),
    )
    _, forward, err = join(one, other, cwd=tmp_path)
    _, backward, _ = join(other, one, cwd=tmp_path)
    assert forward == backward
    assert gitrepo.graph(forward)[0]["Ada"][1] == {"likes tea", "beeps"}
    assert err[1].endswith("(no stamps to compare: by content)")


def test_the_older_per_host_arrays_fold_by_unique_id_and_timestamp(tmp_path: Path) -> None:
    def note(content: str, timestamp: str, host: str) -> bytes:
        meta = {"unique_id": "m1", "timestamp": timestamp, "host": host}
        return orjson.dumps({"content": content, "_crdt_metadata": meta})

    laptop, server = files(
        tmp_path,
        memory_laptop_json=array(note("deploys on Fridays", "2025-03-01T09:00:00", "laptop")),
        memory_server_json=array(note("avoid Friday deploys", "2025-03-04T09:00Z", "server")),
    )  # fmt: skip
    code, out, _ = join(laptop, server, "--format", "jsonl", cwd=tmp_path)
    assert code == ExitCode.OK
    (record,) = gitrepo.records(out)
    assert record["content"] == "avoid Friday deploys"  # later, though it sorts first


def test_joining_a_file_with_itself_or_with_an_empty_file_adds_nothing(tmp_path: Path) -> None:
    laptop, empty = files(tmp_path, laptop_jsonl=LAPTOP, empty_jsonl=b"")
    _, alone, _ = join(laptop, cwd=tmp_path)
    _, twice, _ = join(laptop, laptop, cwd=tmp_path)
    _, with_empty, _ = join(empty, laptop, empty, cwd=tmp_path)
    assert alone == twice == with_empty
    assert gitrepo.graph(alone) == gitrepo.graph(LAPTOP)


# --- where it goes and in which format --------------------------------------------------


def test_output_replaces_out_atomically_and_keeps_its_mode(tmp_path: Path) -> None:
    laptop, desktop = files(tmp_path, laptop_jsonl=LAPTOP, desktop_jsonl=DESKTOP)
    out = tmp_path / "memory.jsonl"
    out.write_bytes(b"the old contents")
    out.chmod(0o600)  # memory files are private
    code, stdout, err = join(laptop, desktop, "-o", out, cwd=tmp_path)
    assert code == ExitCode.OK
    assert stdout == b""
    assert gitrepo.graph(out.read_bytes()) == JOINED_GRAPH
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert err[0] == f"crdt-merge-driver: joined 2 files into {out}: 5 records"
    # Nothing left behind: no temp file beside the output.
    assert names_in(tmp_path) == ["desktop.jsonl", "laptop.jsonl", "memory.jsonl"]


def test_a_new_out_is_created_with_the_default_mode(tmp_path: Path) -> None:
    (laptop,) = files(tmp_path, laptop_jsonl=LAPTOP)
    out = tmp_path / "joined.jsonl"
    umask = os.umask(0o022)
    try:
        code, _, _ = join(laptop, "--output", out, cwd=tmp_path)
    finally:
        os.umask(umask)
    assert code == ExitCode.OK
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert gitrepo.graph(out.read_bytes()) == gitrepo.graph(LAPTOP)


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        # JSONL in, JSONL out, whatever the output is called (a .json name included).
        pytest.param("out.json", (), "jsonl", id="json-extension-inputs-format"),
        pytest.param("out.jsonl", (), "jsonl", id="jsonl-extension"),
        pytest.param("out.json", ("--format", "jsonl"), "jsonl", id="format-over-extension"),
        pytest.param("out.jsonl", ("--format", "array"), "array", id="array-over-extension"),
        pytest.param("memory.bak", (), "jsonl", id="other-extension-inputs-format"),
    ],
)
def test_the_output_format_follows_format_then_the_inputs(
    tmp_path: Path, name: str, options: tuple[str, ...], expected: str
) -> None:
    laptop, desktop = files(tmp_path, laptop_jsonl=LAPTOP, desktop_jsonl=DESKTOP)
    out = tmp_path / name
    code, _, _ = join(laptop, desktop, "-o", out, *options, cwd=tmp_path)
    assert code == ExitCode.OK
    assert format_of(out.read_bytes()) == expected
    assert graph_of(out.read_bytes()) == JOINED_GRAPH


def test_arrays_in_give_an_array_out_and_jsonl_on_request(tmp_path: Path) -> None:
    laptop, desktop = files(
        tmp_path,
        laptop_json=array(*LAPTOP.split(b"\n")),
        desktop_json=array(*DESKTOP.split(b"\n"), indent=None),
    )
    _, out, _ = join(laptop, desktop, cwd=tmp_path)
    assert format_of(out) == "array"
    assert out.startswith(b"[\n  {\n")  # no layout to agree on: two spaces, as json.dump(indent=2)
    assert graph_of(out) == JOINED_GRAPH
    _, out, _ = join(laptop, desktop, "--format", "jsonl", cwd=tmp_path)
    assert format_of(out) == "jsonl"
    assert gitrepo.graph(out) == JOINED_GRAPH


def test_inputs_that_end_in_a_newline_give_a_join_that_does(tmp_path: Path) -> None:
    laptop, desktop = files(tmp_path, laptop_jsonl=LAPTOP + b"\n", desktop_jsonl=DESKTOP + b"\n")
    _, out, _ = join(laptop, desktop, cwd=tmp_path)
    assert out.endswith(b"}\n") and not out.endswith(b"\n\n")
    _, out, _ = join(laptop, desktop, "-o", tmp_path / "out.jsonl", cwd=tmp_path)
    assert (tmp_path / "out.jsonl").read_bytes().endswith(b"}\n")
    _, out, _ = join(laptop, files(tmp_path, bare_jsonl=DESKTOP)[0], cwd=tmp_path)
    assert not out.endswith(b"\n")  # the inputs disagree: the server's layout, no final newline


def test_mixed_inputs_take_the_extension_else_jsonl(tmp_path: Path) -> None:
    laptop, desktop = files(
        tmp_path, laptop_json=array(*LAPTOP.split(b"\n")), desktop_jsonl=DESKTOP
    )
    code, _, _ = join(laptop, desktop, "-o", tmp_path / "out.json", cwd=tmp_path)
    assert code == ExitCode.OK
    assert format_of((tmp_path / "out.json").read_bytes()) == "array"
    assert graph_of((tmp_path / "out.json").read_bytes()) == JOINED_GRAPH


def test_an_array_and_a_jsonl_file_give_jsonl(tmp_path: Path) -> None:
    laptop, desktop = files(
        tmp_path, laptop_json=array(*LAPTOP.split(b"\n")), desktop_jsonl=DESKTOP
    )
    _, out, _ = join(laptop, desktop, cwd=tmp_path)
    assert format_of(out) == "jsonl"
    assert gitrepo.graph(out) == JOINED_GRAPH
    _, out, _ = join(laptop, desktop, "--format", "array", cwd=tmp_path)
    assert format_of(out) == "array"
    assert graph_of(out) == JOINED_GRAPH


def format_of(data: bytes) -> str:
    return "array" if data.lstrip().startswith(b"[") else "jsonl"


def names_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def graph_of(
    data: bytes,
) -> tuple[dict[str, tuple[str, frozenset[str]]], set[tuple[str, str, str]]]:
    if format_of(data) == "jsonl":
        return gitrepo.graph(data)
    values: list[Record] = orjson.loads(data)
    return gitrepo.graph(b"\n".join(orjson.dumps(value) for value in values))


# --- bad input ------------------------------------------------------------------------


def test_a_bad_line_is_one_line_naming_the_file_and_line_and_out_is_untouched(
    tmp_path: Path,
) -> None:
    damaged = jsonl(entity("Ada"), entity("Bob"), b'{"type":"entity","entityType":"person"}')
    laptop, bad = files(tmp_path, laptop_jsonl=LAPTOP, bad_jsonl=damaged)
    out = tmp_path / "memory.jsonl"
    out.write_bytes(b"keep me")
    code, stdout, err = join(laptop, bad, "-o", out, cwd=tmp_path)
    assert code == ExitCode.CONFLICT
    assert stdout == b""
    assert err == [f'crdt-merge-driver: {bad}, line 3: an entity needs a string "name"']
    assert out.read_bytes() == b"keep me"
    assert names_in(tmp_path) == ["bad.jsonl", "laptop.jsonl", "memory.jsonl"]


def test_a_bad_array_element_names_its_line(tmp_path: Path) -> None:
    broken = b'[\n  {"type": "entity", "name": "Ada", "entityType": "x"},\n  "Bob"\n]\n'
    (bad,) = files(tmp_path, old_json=broken)
    code, _, err = join(bad, cwd=tmp_path)
    assert code == ExitCode.CONFLICT
    assert err == [
        f"crdt-merge-driver: {bad}, line 3: record 2: expected a JSON object, found a string"
    ]


def test_a_missing_file_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    (laptop,) = files(tmp_path, laptop_jsonl=LAPTOP)
    missing = tmp_path / "desktop.jsonl"
    out = tmp_path / "memory.jsonl"
    code, stdout, err = join(laptop, missing, "-o", out, cwd=tmp_path)
    assert code == ExitCode.USAGE
    assert stdout == b""
    assert err == [f"crdt-merge-driver: cannot read {missing}: No such file or directory"]
    assert not out.exists()


def test_no_file_at_all_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = join(cwd=tmp_path)
    assert code == ExitCode.USAGE
    assert "the following arguments are required: FILE" in err[-1]


def test_an_output_folder_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    (laptop,) = files(tmp_path, laptop_jsonl=LAPTOP)
    out = tmp_path / "no-such-folder" / "memory.jsonl"
    code, _, err = join(laptop, "-o", out, cwd=tmp_path)
    assert code != ExitCode.OK
    assert len(err) == 1
    assert str(out) in err[0]
