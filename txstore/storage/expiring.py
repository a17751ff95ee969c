# -*- test-case-name: txstore.test.unit.test_expirer -*-
"""
The local expiry queue: which objects of a device carry an ``X-Delete-At``, by time.

Whenever a ``.data`` or ``.meta`` carrying ``X-Delete-At`` is installed, `DiskFile` records an
entry ``expiring[-<policy>]/<bucket>/<delete_at>-<hash>`` on the object's device (the bucket is
the start of the hour the deletion falls in, so the expirer lists only the hours that are
due). Entries are small JSON files written durably. The queue only says where to look: the
expirer checks the object itself before deleting anything, so an entry left behind by an
overwrite, a POST or a replica that moved away is harmless. This module knows names and the
record format; `DiskFileManager` writes, lists and removes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen

EXPIRING_DIR = "expiring"
BUCKET_SECONDS = 3600
FORMAT_VERSION = 1
MAX_DELETE_AT = 9_999_999_999  # ten digits: names sort like the times they hold
_DIR = re.compile(r"^expiring(?:-(?P<policy>[1-9][0-9]*))?$")
_BUCKET = re.compile(r"^\d{10}$")
_NAME = re.compile(r"^(?P<at>\d{10})-(?P<hash>[0-9a-f]{32})$")


class EntryCorrupt(ValueError):
    """An expiry entry that does not decode."""


@frozen
class ExpiringEntry:
    """One object due for deletion at ``delete_at`` (whole seconds since the epoch)."""

    account: str
    container: str
    obj: str
    partition: int
    policy_index: int
    delete_at: int
    name_hash: str


def expiring_dir_name(policy_index: int) -> str:
    """``expiring`` for policy 0, ``expiring-<index>`` for the others."""
    if not isinstance(policy_index, int) or isinstance(policy_index, bool) or policy_index < 0:
        raise ValueError(f"not a policy index: {policy_index!r}")
    return EXPIRING_DIR if policy_index == 0 else f"{EXPIRING_DIR}-{policy_index}"


def policy_of_dir(name: str) -> int | None:
    match = _DIR.match(name)
    if match is None:
        return None
    return int(match["policy"]) if match["policy"] else 0


def bucket_name(delete_at: int) -> str:
    return f"{delete_at - delete_at % BUCKET_SECONDS:010d}"


def entry_name(delete_at: int, name_hash: str) -> str:
    return f"{delete_at:010d}-{name_hash}"


def parse_entry_name(name: str) -> tuple[int, str] | None:
    """``(delete_at, hash)`` of an entry file name; None for temp files and junk."""
    match = _NAME.match(name)
    if match is None:
        return None
    return int(match["at"]), match["hash"]


def delete_at_of(metadata: Mapping[str, str]) -> int | None:
    """The ``X-Delete-At`` of object metadata as an int, None when absent or unusable."""
    for key, value in metadata.items():
        if key.lower() == "x-delete-at":
            try:
                delete_at = int(value)
            except ValueError:
                return None
            return delete_at if 0 < delete_at <= MAX_DELETE_AT else None
    return None


def encode_entry(entry: ExpiringEntry) -> bytes:
    record = {
        "version": FORMAT_VERSION,
        "account": entry.account,
        "container": entry.container,
        "obj": entry.obj,
        "partition": entry.partition,
        "policy_index": entry.policy_index,
    }
    return json.dumps(record, ensure_ascii=True, sort_keys=True).encode("ascii")


def decode_entry(raw: bytes, name: str) -> ExpiringEntry:
    """An entry from its file's bytes and name (the name holds the time and the hash)."""
    parsed = parse_entry_name(name)
    try:
        if parsed is None:
            raise ValueError(f"not an expiry entry name: {name!r}")
        record = json.loads(raw.decode("ascii"))
        if not isinstance(record, dict) or record.get("version") != FORMAT_VERSION:
            raise ValueError("not a version 1 expiry entry")
        names = [record["account"], record["container"], record["obj"]]
        numbers = [record["partition"], record["policy_index"]]
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError("account, container and object must be non-empty strings")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            raise ValueError("partition and policy_index must be non-negative integers")
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as error:
        raise EntryCorrupt(f"bad expiry entry {name}: {error}") from None
    return ExpiringEntry(*names, *numbers, delete_at=parsed[0], name_hash=parsed[1])


def list_due(expiring_dir: Path, now: float) -> list[Path]:
    """Entries under one ``expiring[-N]`` directory whose time has come, oldest first."""
    try:
        buckets = sorted(p for p in expiring_dir.iterdir() if _BUCKET.match(p.name))
    except FileNotFoundError:
        return []
    due: list[tuple[str, Path]] = []
    for bucket in buckets:
        if int(bucket.name) > now:
            break
        try:
            names = [entry.name for entry in bucket.iterdir()]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            parsed = parse_entry_name(name)
            if parsed is not None and parsed[0] <= now and bucket_name(parsed[0]) == bucket.name:
                due.append((name, bucket / name))
    due.sort()
    return [path for _name, path in due]
