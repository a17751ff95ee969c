# -*- test-case-name: txstore.test.unit.test_body_digest -*-
"""
A replicated PUT's md5 computed once, by the proxy, instead of once per replica.

A replicated object's ETag is the md5 of its body, and md5 is the dearest thing a node does to
a body it stores (1.24 ms per MiB on this machine's CPU against CRC-32's 0.18). Each of three
replicas used to compute it. Now, for a body of `PROXY_MD5_MIN` bytes or more (or of unknown
length), the proxy, which sees every byte once, computes the md5 and a CRC-32 of the body as it
streams it to the nodes (``MD5_FOOTER`` in the PUT's headers says so)
and sends both after the body as trailer fields of the chunked request. Each node computes only
the CRC-32 of what it received, and stores the proxy's md5 as the ETag only when the two CRCs
agree: what is stored is what the proxy hashed, or nothing is stored (422). The ETag a client
sent is checked against the proxy's md5 by each node, as before (422 when it differs).

The trailer fields are ``BODY_MD5`` and ``BODY_CRC32``. A body of known length goes as one chunk of that length (``OBJ_CONTENT_LENGTH`` says it), written as it
comes: the node's chunked decoder then hands the body on in the large socket reads the node
asks for, as with ``Content-Length`` framing. A chunk per proxy write (64 KiB) was tried first
and cost more than the md5 saved (docs/performance.rst). So was a footer line inside a
``Content-Length`` body, which was as fast; but a node that does not know ``MD5_FOOTER`` (an
older one, during a rolling upgrade) would store the footer as part of the object. Trailer
fields it ignores, and it hashes the body itself: the same object either way.

The node also keeps the CRC-32 it confirmed (``X-Body-Checksum`` in the object's metadata,
`txstore.storage.checksum.BODY_CHECKSUM`): reads and audits check the body against it instead
of the md5, at a sixth of the cost; a replica copied by replication, which the receiver hashes
with md5, is checked against the md5 as before. A node asked without ``MD5_FOOTER`` hashes the
body itself.
"""

from __future__ import annotations

import hashlib
import re
import zlib

MD5_FOOTER = "X-Backend-Md5-Footer"  # PUT header: "crc32" (the md5 and CRC-32 follow as trailers)
MD5_FOOTER_KIND = "crc32"
BODY_MD5 = "X-Backend-Body-Md5"  # trailer: the md5 the proxy computed, 32 hex digits
BODY_CRC32 = "X-Backend-Body-Crc32"  # trailer: the CRC-32 the proxy computed, 8 hex digits
# The body's length when the client gave one: it goes as one chunk of that size, the node
# reserves the space and checks it.
OBJ_CONTENT_LENGTH = "X-Backend-Obj-Content-Length"

# Bodies of at least this many bytes (and of unknown length) are hashed by the proxy; smaller
# ones by each node, as before. 16 MiB until the proxy's writes were sent at once: 1 MiB PUTs
# were slower with the framing then, and are faster now; their GETs, checked by CRC-32, much
# faster (docs/performance.rst, "Writes sent at once").
PROXY_MD5_MIN = 1024 * 1024

_MD5 = re.compile(r"[0-9a-f]{32}")
_CRC32 = re.compile(r"[0-9a-f]{8}")


class BodyDigest:
    """The md5 and CRC-32 of a body, fed chunk by chunk as the proxy sends it."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._crc = 0

    def update(self, chunk: bytes) -> None:
        self._md5.update(chunk)
        self._crc = zlib.crc32(chunk, self._crc)

    def trailers(self) -> dict[str, str]:
        """The fields sent after the body."""
        return {BODY_MD5: self._md5.hexdigest(), BODY_CRC32: f"{self._crc:08x}"}


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
