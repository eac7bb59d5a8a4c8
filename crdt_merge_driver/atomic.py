"""Atomic replacement of a file: a reader sees the old bytes or the new, never half.

The new bytes go to a temp file in the same folder (so the rename stays on
one file system), are flushed to disk, take the old file's mode (memory files
are often 0600), and are renamed over the old file.

A path that is a symbolic link (dotfiles managers link memory files) is
written through it: the link's target is replaced, in the target's folder,
and the link stays a link. A dangling link gets its target created, as the
memory server's own write would. An error names the file it is about (a
full disk: the file that could not be written), never the temp file.

This module and the driver use `os` rather than `pathlib` on purpose: git
starts the driver once per merged file, and importing pathlib costs it a few
milliseconds each time (see docs/benchmarks.md).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

StrPath = str | os.PathLike[str]


class ChangedMeanwhile(Exception):
    """The file no longer holds what the caller expected; it was left alone."""


def write_atomic(
    path: StrPath,
    data: bytes | Iterable[bytes | memoryview],
    *,
    mode: int | None = None,
    expect: bytes | None = None,
    durable: bool = True,
) -> None:
    """Replace ``path`` with ``data`` (bytes, or chunks), keeping its mode (or ``mode``).

    With ``expect``, replace it only if it still holds exactly those bytes
    (checked after the new file is on disk, just before the rename, to keep
    the window for a concurrent writer as small as it can be); otherwise
    raise `ChangedMeanwhile` and leave it alone.

    ``durable=False`` skips flushing to disk (fsync), which costs more than a
    small merge: for a file that only matters while its writer's caller is
    alive, where atomicity is what counts, not surviving a power cut.
    """
    path = os.fspath(path)
    if os.path.islink(path):  # one lstat: git's %A never is one, a live memory file may be
        path = os.path.realpath(path)
    if mode is None:
        mode = _current_mode(path)
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        _name(error, folder or "." if isinstance(error, FileNotFoundError) else path)
        raise
    try:
        try:
            _write_all(fd, [data] if isinstance(data, bytes) else data)
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        except OSError as error:
            _name(error, path)
            raise
        finally:
            os.close(fd)
        if expect is not None and _read_or_none(path) != expect:
            raise ChangedMeanwhile(path)
        os.replace(temp, path)
    except BaseException:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise
    if durable:
        _sync_folder(folder or ".")


def _name(error: OSError, path: str) -> None:
    """Make ``error`` about ``path`` (the file being replaced, or its missing folder)."""
    error.filename, error.filename2 = path, None


def _write_all(fd: int, chunks: Iterable[bytes | memoryview]) -> None:
    """Write every chunk, many to a system call (a merge is thousands of small chunks)."""
    batch: list[bytes | memoryview] = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) == _BATCH:
            _write_batch(fd, batch)
            batch = []
    _write_batch(fd, batch)


def _write_batch(fd: int, batch: list[bytes | memoryview]) -> None:
    written = os.writev(fd, batch) if batch else 0
    # writev may stop short (a full disk, a signal): write the rest plainly.
    rest = memoryview(b"".join(batch))[written:] if written < sum(map(len, batch)) else b""
    while rest:
        rest = rest[os.write(fd, rest) :]


_BATCH = 512  # well under IOV_MAX (1024 on Linux)


def _read_or_none(path: str) -> bytes | None:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def _current_mode(path: str) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _sync_folder(folder: str) -> None:
    # The rename itself is durable only once the folder is flushed too.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
