# -*- test-case-name: txstore.test.unit.test_async_pending -*-
"""
Async pendings: container updates that could not be sent when an object changed.

An object write succeeds even when its container server is down; the update it owed is saved as
``async_pending[-<policy>]/<suffix>/<hash>-<timestamp>`` on the object's device and replayed by
the object updater later. The name orders the pendings of one object by timestamp, so the
updater can send only the newest and drop the older ones. Files are JSON (versioned, never
pickle) and are written durably by `DiskFileManager.write_async_pending`; this module only knows
names and the record format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from attrs import field, frozen

from txstore.common.timestamps import Timestamp

ASYNC_DIR = "async_pending"
FORMAT_VERSION = 1
OPS = ("PUT", "DELETE")
_NAME = re.compile(r"^(?P<hash>[0-9a-f]{32})-(?P<ts>\d{10}\.\d{5}(?:_[0-9a-f]{16})?)$")
_DIR = re.compile(r"^async_pending(?:-(?P<policy>[1-9][0-9]*))?$")
_SUFFIX = re.compile(r"^[0-9a-f]{3}$")


class PendingCorrupt(ValueError):
    """An async pending file that does not decode."""


def _readonly(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@frozen
class AsyncPending:
    """One container update owed: what the updater sends to the container servers."""

    op: str
    account: str
    container: str
    obj: str
    headers: Mapping[str, str] = field(converter=_readonly)
    timestamp: Timestamp
    policy_index: int = 0

    def __attrs_post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"async pending op must be one of {OPS}, not {self.op!r}")
        for name in (self.account, self.container, self.obj):
            if not isinstance(name, str) or not name:
                raise ValueError("account, container and object names must be non-empty str")
        for key, value in self.headers.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"headers must map str to str, not {key!r}: {value!r}")


def async_dir_name(policy_index: int) -> str:
    """``async_pending`` for policy 0, ``async_pending-<index>`` for the others."""
    if not isinstance(policy_index, int) or isinstance(policy_index, bool) or policy_index < 0:
        raise ValueError(f"not a policy index: {policy_index!r}")
    return ASYNC_DIR if policy_index == 0 else f"{ASYNC_DIR}-{policy_index}"


def policy_of_dir(name: str) -> int | None:
    """The policy index of an async pending directory name, or None if it is not one."""
    match = _DIR.match(name)
    if match is None:
        return None
    return int(match["policy"]) if match["policy"] else 0


def pending_name(name_hash: str, timestamp: Timestamp) -> str:
    return f"{name_hash}-{timestamp.internal}"


def parse_pending_name(name: str) -> tuple[str, Timestamp] | None:
    """``(hash, timestamp)`` of a pending file name, None for anything else (temp files, junk)."""
    match = _NAME.match(name)
    if match is None:
        return None
    timestamp = Timestamp.parse(match["ts"])
    if timestamp.internal != match["ts"]:
        return None
    return match["hash"], timestamp


def encode_pending(pending: AsyncPending) -> bytes:
    record = {
        "version": FORMAT_VERSION,
        "op": pending.op,
        "account": pending.account,
        "container": pending.container,
        "obj": pending.obj,
        "headers": dict(pending.headers),
        "timestamp": pending.timestamp.internal,
        "policy_index": pending.policy_index,
    }
    return json.dumps(record, ensure_ascii=True, sort_keys=True).encode("ascii")


def decode_pending(raw: bytes) -> AsyncPending:
    try:
        record = json.loads(raw.decode("ascii"))
        if not isinstance(record, dict) or record.get("version") != FORMAT_VERSION:
            raise ValueError("not a version 1 async pending")
        headers = record["headers"]
        if not isinstance(headers, dict):
            raise ValueError("headers is not an object")
        policy_index = record.get("policy_index", 0)
        if not isinstance(policy_index, int):
            raise ValueError("policy_index is not an int")
        return AsyncPending(
            op=record["op"],
            account=record["account"],
            container=record["container"],
            obj=record["obj"],
            headers=headers,
            timestamp=Timestamp.parse(record["timestamp"]),
            policy_index=policy_index,
        )
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as error:
        raise PendingCorrupt(f"bad async pending: {error}") from None


def list_pendings(async_dir: Path) -> list[Path]:
    """The pending files under one ``async_pending[-N]`` directory, ordered by suffix, hash, time."""
    found: list[tuple[str, str, Timestamp, Path]] = []
    try:
        suffixes = sorted(p for p in async_dir.iterdir() if _SUFFIX.match(p.name))
    except FileNotFoundError:
        return []
    for suffix_dir in suffixes:
        try:
            entries = list(suffix_dir.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            parsed = parse_pending_name(entry.name)
            if parsed is not None and parsed[0].endswith(suffix_dir.name):
                found.append((suffix_dir.name, parsed[0], parsed[1], entry))
    found.sort(key=lambda item: item[:3])
    return [item[3] for item in found]
