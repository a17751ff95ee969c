# -*- test-case-name: txstore.test.unit.test_suffixes -*-
"""
``hashes.invalid``: which suffixes of a partition changed since the last hash pass.

The replicator compares per-suffix hashes with its peers; recomputing them means listing every
object directory of the suffix, so it only recomputes the suffixes named here. Every change to
an object (PUT, POST, DELETE) appends its suffix as one line. The file is append-only for
writers and is emptied in place (truncated, never replaced) by the hash pass, both under an
exclusive ``flock``: a writer holding a descriptor to a replaced file would append to a file
nobody reads, and an append landing between the pass's read and its truncate would be lost.

Appends are not fsynced: after a power cut the periodic full rehash of the replicator catches
what a lost line would have told it, and an extra fsync per write would double the cost of
every PUT.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HASHES_INVALID = "hashes.invalid"
_SUFFIX = re.compile(r"^[0-9a-f]{3}$")


def check_suffix(suffix: str) -> str:
    """A suffix is the last 3 lowercase hex digits of an object hash: nothing else is a name."""
    if not isinstance(suffix, str) or not _SUFFIX.match(suffix):
        raise ValueError(f"not a suffix: {suffix!r}")
    return suffix


@contextmanager
def _locked(path: Path, flags: int) -> Iterator[int]:
    fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def invalidate_suffix(partition_dir: Path, suffix: str) -> bool:
    """
    Record that ``suffix`` changed. False (nothing recorded) when the partition directory does
    not exist: no object of it can have changed.
    """
    line = (check_suffix(suffix) + "\n").encode("ascii")
    try:
        with _locked(partition_dir / HASHES_INVALID, os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
            os.write(fd, line)
    except FileNotFoundError:
        return False
    return True


def _parse(raw: bytes) -> set[str]:
    # A torn last line (a crash mid-append) is simply not a suffix.
    text = raw.decode("ascii", "replace")
    return {line for line in text.split("\n") if _SUFFIX.match(line)}


def read_invalid_suffixes(partition_dir: Path) -> set[str]:
    """The suffixes recorded so far, leaving the file as it is."""
    try:
        return _parse((partition_dir / HASHES_INVALID).read_bytes())
    except FileNotFoundError:
        return set()


def consume_invalid_suffixes(partition_dir: Path) -> set[str]:
    """The suffixes recorded so far, emptying the file in the same locked step (hash pass)."""
    try:
        with _locked(partition_dir / HASHES_INVALID, os.O_RDWR) as fd:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            os.ftruncate(fd, 0)
    except FileNotFoundError:
        return set()
    return _parse(b"".join(chunks))
