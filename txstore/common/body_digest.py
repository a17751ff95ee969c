# -*- test-case-name: txstore.test.unit.test_body_digest -*-
"""
A replicated PUT's md5 computed once, by the proxy, instead of once per replica.

A replicated object's ETag is the md5 of its body, and md5 is the dearest thing a node does to
a body it stores (1.24 ms per MiB on this machine's CPU against CRC-32's 0.18). Each of three
replicas used to compute it. Now the proxy, which sees every byte once, computes the md5 and a
CRC-32 of the body as it streams it to the nodes (``MD5_FOOTER`` in the PUT's headers says so)
and sends both after the body as trailer fields of the chunked request. Each node computes only
the CRC-32 of what it received, and stores the proxy's md5 as the ETag only when the two CRCs
agree: what is stored is what the proxy hashed, or nothing is stored (422). The ETag a client
sent is checked against the proxy's md5 by each node, as before (422 when it differs).

How the two values travel depends on the body's framing. A body of known length keeps plain
``Content-Length`` framing, ``FOOTER_SIZE`` bytes longer than the object, and ends with the
footer line (``<md5> <crc32>\n``; ``OBJ_CONTENT_LENGTH`` says where the object ends): a node
then gets the body in the large socket reads it asks for. Chunked framing, which a body of
unknown length needs anyway, was tried for all and cost more than it saved: the nodes'
decoder hands the body on one piece per proxy chunk (64 KiB), a node's per-piece work
doubled, and 1 MiB PUTs got slower (docs/performance.rst). A chunked body carries them as
trailer fields (``BODY_MD5``, ``BODY_CRC32``).

Read and audited bodies are checked against the stored md5 as ever; a node that does not know
these headers ignores them and hashes the body itself, and a node asked without them does too.
"""

from __future__ import annotations

import hashlib
import re
import zlib

MD5_FOOTER = "X-Backend-Md5-Footer"  # PUT header: "crc32" (the md5 and CRC-32 follow as trailers)
MD5_FOOTER_KIND = "crc32"
BODY_MD5 = "X-Backend-Body-Md5"  # trailer: the md5 the proxy computed, 32 hex digits
BODY_CRC32 = "X-Backend-Body-Crc32"  # trailer: the CRC-32 the proxy computed, 8 hex digits
# A chunked PUT's length when the client gave one: the node reserves the space and checks it.
OBJ_CONTENT_LENGTH = "X-Backend-Obj-Content-Length"

_MD5 = re.compile(r"[0-9a-f]{32}")
_CRC32 = re.compile(r"[0-9a-f]{8}")
_FOOTER = re.compile(rb"([0-9a-f]{32}) ([0-9a-f]{8})\n")
FOOTER_SIZE = 42  # after a body of known length: 32 hex digits, a space, 8 hex digits, a newline


class BodyDigest:
    """The md5 and CRC-32 of a body, fed chunk by chunk as the proxy sends it."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._crc = 0

    def update(self, chunk: bytes) -> None:
        self._md5.update(chunk)
        self._crc = zlib.crc32(chunk, self._crc)

    def trailers(self) -> dict[str, str]:
        """The fields sent after a chunked body."""
        return {BODY_MD5: self._md5.hexdigest(), BODY_CRC32: f"{self._crc:08x}"}

    def footer(self) -> bytes:
        """The line sent after a body of known length (`FOOTER_SIZE` bytes)."""
        return f"{self._md5.hexdigest()} {self._crc:08x}\n".encode("ascii")


def footer_digest(line: bytes) -> tuple[str, str] | None:
    """The (md5, CRC-32) of a footer line; None when it is not one."""
    found = _FOOTER.fullmatch(line)
    return (found[1].decode("ascii"), found[2].decode("ascii")) if found else None


def sent_digest(trailers: dict[str, str]) -> tuple[str, str] | None:
    """
    The (md5, CRC-32) a node was sent after the body (trailer names in lower case, as parsed),
    each in lower-case hex; None when either is missing or not of its form.
    """
    md5 = trailers.get(BODY_MD5.lower(), "").strip().lower()
    crc = trailers.get(BODY_CRC32.lower(), "").strip().lower()
    if not _MD5.fullmatch(md5) or not _CRC32.fullmatch(crc):
        return None
    return md5, crc
