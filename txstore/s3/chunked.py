# -*- test-case-name: txstore.test.unit.test_s3_chunked -*-
"""
``aws-chunked`` uploads signed chunk by chunk (``x-amz-content-sha256:
STREAMING-AWS4-HMAC-SHA256-PAYLOAD``), as the S3 API reference documents them: the body is a
series of ``<hex size>;chunk-signature=<64 hex>\\r\\n<data>\\r\\n``, ending with a zero-size
chunk. Each chunk's signature chains from the previous one (the first from the
Authorization header's)::

    AWS4-HMAC-SHA256-PAYLOAD \\n <x-amz-date> \\n <scope> \\n <previous signature> \\n
    hex(sha256("")) \\n hex(sha256(chunk data))

`SignedChunks` is the decoded body as an `IByteSource`: a pure framer (`ChunkParser`, bytes
in, events out, any split of the input) under it, each chunk's data passed on as it arrives
and hashed on the way, its signature checked at its end. A bad signature or framing fails the
read (`BodyMismatch`, the upload is cut off); the caller's `CheckedBody` holds the last piece
back until the final chunk verified, so nothing unverified is ever stored whole.
"""

from __future__ import annotations

import hashlib
import hmac

from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from txstore.interfaces import IByteSource
from txstore.s3.auth import BodyMismatch
from txstore.s3.errors import S3Error
from txstore.s3.sigv4 import EMPTY_SHA256

ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
MAX_HEADER = 4096  # bytes a chunk header line may take
MAX_CHUNK = 64 * 1024 * 1024  # a chunk's declared size beyond this is refused


class ChunkParser:
    """
    The aws-chunked framing, without I/O: `feed` bytes, get back a list of events,
    ``("data", bytes)`` (part of the current chunk), ``("end", signature)`` (a chunk ended),
    ``("last", signature)`` (the zero-size chunk: the body is complete). ValueError on bad framing.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._remaining = 0  # data bytes of the current chunk still to come
        self._signature = ""
        self._state = "header"  # header | data | crlf | final | done

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, data: bytes) -> list[tuple[str, object]]:
        self._buffer += data
        events: list[tuple[str, object]] = []
        while True:
            if self._state == "header":
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEADER:
                        raise ValueError("chunk header too long")
                    return events
                line = bytes(self._buffer[:end]).decode("ascii", "replace")
                del self._buffer[:end + 2]
                size_text, _, extension = line.partition(";")
                name, _, signature = extension.partition("=")
                if name.strip() != "chunk-signature" or len(signature.strip()) != 64:
                    raise ValueError("chunk header without a chunk-signature")
                try:
                    size = int(size_text.strip(), 16)
                except ValueError:
                    raise ValueError("chunk size is not hexadecimal") from None
                if size < 0 or size > MAX_CHUNK:
                    raise ValueError("chunk size out of range")
                self._signature = signature.strip().lower()
                self._remaining = size
                self._state = "data" if size else "final"
            elif self._state == "data":
                if not self._buffer:
                    return events
                take = min(self._remaining, len(self._buffer))
                events.append(("data", bytes(self._buffer[:take])))
                del self._buffer[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "crlf"
            elif self._state in ("crlf", "final"):
                if len(self._buffer) < 2:
                    return events
                if bytes(self._buffer[:2]) != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
                del self._buffer[:2]
                if self._state == "final":
                    events.append(("last", self._signature))
                    self._state = "done"
                else:
                    events.append(("end", self._signature))
                    self._state = "header"
            else:  # done: nothing may follow
                if self._buffer:
                    raise ValueError("bytes after the final chunk")
                return events


def chunk_string_to_sign(amz_date: str, scope: str, previous: str, data_sha256: str) -> bytes:
    return "\n".join((ALGORITHM, amz_date, scope, previous, EMPTY_SHA256, data_sha256)).encode("ascii")


@implementer(IByteSource)
class SignedChunks:
    """The decoded body of an aws-chunked upload, each chunk's signature checked at its end."""

    def __init__(self, source, signing_key: bytes, amz_date: str, scope: str, seed_signature: str,
                 decoded_length: int) -> None:
        self.source = source
        self._key, self._date, self._scope = signing_key, amz_date, scope
        self._previous = seed_signature.lower()
        self._parser = ChunkParser()
        self._hash = hashlib.sha256()
        self._decoded = 0
        self._expected = decoded_length
        self.failed: S3Error | None = None

    def read(self) -> Deferred:
        return ensureDeferred(self._read())

    async def _read(self) -> bytes:
        while not self._parser.done:
            raw = await self.source.read()
            if not raw:
                self._fail(S3Error("IncompleteBody", "the aws-chunked body ended before its final chunk"))
            try:
                events = self._parser.feed(raw)
            except ValueError as err:
                self._fail(S3Error("InvalidRequest", f"aws-chunked body: {err}"))
            out = bytearray()
            for kind, value in events:
                if kind == "data":
                    self._hash.update(value)
                    out += value
                else:
                    self._verify(value)
            if out:
                self._decoded += len(out)
                return bytes(out)
        rest = await self.source.read()  # the end of the raw body, or bytes after the last chunk
        if rest:
            self._fail(S3Error("InvalidRequest", "aws-chunked body: bytes after the final chunk"))
        if self._decoded != self._expected:
            self._fail(S3Error("IncompleteBody", f"x-amz-decoded-content-length is {self._expected}, the chunks "
                                                 f"held {self._decoded} bytes"))
        return b""

    def _verify(self, given: str) -> None:
        to_sign = chunk_string_to_sign(self._date, self._scope, self._previous, self._hash.hexdigest())
        expected = hmac.new(self._key, to_sign, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, given):
            self._fail(S3Error("SignatureDoesNotMatch", "a chunk's signature does not match"))
        self._previous = given
        self._hash = hashlib.sha256()

    def _fail(self, error: S3Error) -> None:
        self.failed = error
        raise BodyMismatch(error.message)

    def stop(self) -> None:
        self.source.stop()
