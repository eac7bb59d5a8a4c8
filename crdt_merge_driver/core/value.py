"""JSON text to values and back, exactly as the memory server's ``JSON.parse`` reads it.

orjson does the work wherever it is faithful, which is nearly always. It is
not for three kinds of text the server writes and reads back: a lone UTF-16
surrogate escape (``"\\ud83d"``, an emoji cut in half), which orjson refuses;
an integer beyond 64 bits, which it reads as a float (and cannot write); a
value nested deeper than it writes (254 levels). There the standard
library's ``json`` takes over: it keeps lone surrogates and integers of any
size, and is given the recursion it needs up to `MAX_DEPTH` levels (Node's
``JSON.stringify`` gives up at about 4,000, so the server never writes
deeper). Text nested deeper is refused as not JSON, never a traceback.

Written back, a lone surrogate is the escape ``JSON.stringify`` writes
(``\\ud83d``, lower case); everything else is as orjson writes it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from crdt_merge_driver.errors import InputError

# On the merge driver's path, where importing typing would cost 3 ms of a
# 10k-entity merge's 80: names only the type checker needs are imported for it
# alone (mypy takes any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from mmap import mmap
    from typing import Any

MAX_DEPTH = 10_000
# 19 digits in a row: maybe an integer beyond 64 bits, which orjson reads as a
# float. Only then is the text read again (a digit run inside a string, too:
# harmless, the values come out the same).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_ZEROS = b"0" * 19
_SURROGATE = re.compile("[\ud800-\udfff]")


def loads(data: bytes, *, short_numbers: bool = False) -> Any:
    """The value of JSON text; raises `orjson.JSONDecodeError` where ``JSON.parse`` would fail.

    ``short_numbers``: the caller searched the text around ``data`` with
    `has_long_digits` and found none, so the search per line is skipped (on
    a 10k-entity file it cost more than orjson's parse).
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        return _loads_exactly(data, error)
    if short_numbers or not has_long_digits(data):
        return value
    return _loads_exactly(data, None, value)


def has_long_digits(data: bytes | mmap) -> bool:
    """Whether ``data`` may hold an integer orjson cannot read exactly (19 digits in a row).

    Every digit made a zero, then one `bytes.find`: a tenth of the time a
    regular expression takes (1.3 against 10.7 us a line; this runs on every
    line a merge parses). A mapped file is not copied to be searched: True.
    """
    if type(data) is not bytes:
        return True
    return data.translate(_DIGITS_TO_ZERO).find(_NINETEEN_ZEROS) >= 0


def dumps(value: object, *, sort_keys: bool = False, indent: bool = False) -> bytes:
    """JSON of ``value`` as orjson writes it: compact, or ``indent`` by two spaces.

    Raises `InputError` for a value nested too deeply to write.
    """
    option = (orjson.OPT_SORT_KEYS if sort_keys else 0) | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        pass
    with _room():
        try:
            text = json.dumps(
                value,
                ensure_ascii=False,
                sort_keys=sort_keys,
                indent=2 if indent else None,
                separators=(",", ": ") if indent else (",", ":"),
            )
        except RecursionError:
            raise InputError(f"a value nested deeper than {MAX_DEPTH} levels") from None
    return escape_lone_surrogates(text).encode("utf-8")


def escape_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate as the escape ``JSON.stringify`` writes (``\\ud83d``)."""
    return _SURROGATE.sub(_escape, text)


def _loads_exactly(data: bytes, error: orjson.JSONDecodeError | None, value: Any = None) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if error is None:  # pragma: no cover - orjson read it, so it is UTF-8
            return value
        raise error from None
    try:
        with _room():
            return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep(text, 0) from None
    except ValueError:
        if error is None:  # pragma: no cover - orjson read it: keep its value
            return value
        raise error from None


@contextmanager
def _room() -> Iterator[None]:
    """Recursion enough for `MAX_DEPTH` levels, and integers of any length."""
    limit, digits = sys.getrecursionlimit(), sys.get_int_max_str_digits()
    sys.setrecursionlimit(max(limit, MAX_DEPTH + 200))
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)
        sys.set_int_max_str_digits(digits)


def _finite(text: str) -> float:
    # 1e400: JSON.parse reads Infinity, which JSON.stringify writes as null.
    # Not a value that can be kept, so the line stays refused as orjson refuses it.
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite number: {text}")
    return number


def _no_constant(name: str) -> Any:
    # NaN, Infinity and -Infinity: Python reads them, JSON.parse does not.
    raise ValueError(f"not JSON: {name}")


def _too_deep(text: str, position: int) -> orjson.JSONDecodeError:
    return orjson.JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", text, position)


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"
