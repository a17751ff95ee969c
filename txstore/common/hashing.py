# -*- test-case-name: txstore.test.unit.test_hashing -*-
"""
Path hashing: where an account, container or object lives.

Every process of a cluster must hash names identically, so the secret prefix and suffix
(``[txstore-hash]`` in ``txstore.conf``) are cluster-wide and must never change once data
is stored: a different secret puts every name on a different partition.
"""

from __future__ import annotations

import hashlib
import struct

from attrs import frozen

MAX_PART_POWER = 32


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def hash_path(
    account: str | bytes,
    container: str | bytes | None = None,
    obj: str | bytes | None = None,
    *,
    prefix: bytes = b"",
    suffix: bytes = b"",
    raw_digest: bool = False,
) -> str | bytes:
    """
    The md5 of ``prefix + b"/account[/container[/object]]" + suffix``, as hex (or raw bytes).

    Names are UTF-8 encoded; an object without a container is a programming error.
    """
    if obj is not None and container is None:
        raise ValueError("an object name needs a container name")
    parts = [_as_bytes(account)]
    if container is not None:
        parts.append(_as_bytes(container))
        if obj is not None:
            parts.append(_as_bytes(obj))
    digest = hashlib.md5(prefix + b"/" + b"/".join(parts) + suffix, usedforsecurity=False)
    return digest.digest() if raw_digest else digest.hexdigest()


def partition_for_hash(digest: str | bytes, part_power: int) -> int:
    """
    The partition of a path hash: the first four bytes of the digest, big-endian, shifted
    right by ``32 - part_power``. Accepts the hex form or the raw 16 bytes.
    """
    if not 0 <= part_power <= MAX_PART_POWER:
        raise ValueError(f"part_power must be between 0 and {MAX_PART_POWER}, not {part_power}")
    raw = bytes.fromhex(digest) if isinstance(digest, str) else digest
    if len(raw) < 4:
        raise ValueError("a path digest has at least 4 bytes")
    (top,) = struct.unpack_from(">I", raw)
    return top >> (32 - part_power)


@frozen
class PathHasher:
    """The cluster's hashing secret, bound: what rings and storage servers carry around."""

    prefix: bytes = b""
    suffix: bytes = b""

    def hash_path(
        self,
        account: str | bytes,
        container: str | bytes | None = None,
        obj: str | bytes | None = None,
        *,
        raw_digest: bool = False,
    ) -> str | bytes:
        return hash_path(
            account, container, obj, prefix=self.prefix, suffix=self.suffix, raw_digest=raw_digest
        )

    def partition(
        self,
        part_power: int,
        account: str | bytes,
        container: str | bytes | None = None,
        obj: str | bytes | None = None,
    ) -> int:
        digest = self.hash_path(account, container, obj, raw_digest=True)
        return partition_for_hash(digest, part_power)
