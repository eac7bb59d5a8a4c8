"""Values as the memory server keeps them, and stamps as untrusted input.

The server (Node's ``JSON.parse``/``JSON.stringify``) writes and reads back
what orjson refuses or cannot keep: lone UTF-16 surrogate escapes, integers
beyond 64 bits, records nested deeper than orjson writes. Such records merge
with their values kept; where nothing can read a value, the merge refuses
with exit 1, never a traceback. A ``_crdt`` stamp from another machine is
only ever a hint: one out of range or malformed orders nothing.

Also here: an ancestor that holds every line twice (merge=union damage)
merges as its clean self does.
"""

from __future__ import annotations

from hypothesis import given

from crdt_merge_driver.merge import merge_bytes
from tests.strategies import History, histories


def _twice(data: bytes) -> bytes:
    return b"\n".join(line for line in data.split(b"\n") for line in (line, line))


# --- an ancestor with every line twice ------------------------------------------------


@given(histories())
def test_an_ancestor_with_every_line_twice_merges_as_its_clean_self(history: History) -> None:
    base, (ours, theirs) = history.base.data, history.sides
    if b"\r" in base:  # a CRLF ancestor doubled by hand would mix its own line breaks
        return
    clean, _ = merge_bytes(base, ours.data, theirs.data)
    damaged, _ = merge_bytes(_twice(base), ours.data, theirs.data)
    assert damaged == clean
