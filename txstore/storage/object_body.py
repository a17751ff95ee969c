# -*- test-case-name: txstore.test.test_object_server -*-
"""
Streaming an object's bytes to a client: a push producer that reads the next chunk through the
device's I/O pool only while the client keeps up.

twisted.web calls `pauseProducing` when the socket's send buffer is full and `resumeProducing`
when it drains; one chunk is read ahead meanwhile and then no more, so a slow client holds at
most two chunks in memory per request, and a disconnected one stops the reads. A whole-object
read is checked against its ETag *before* the last chunk goes out: on a mismatch the
connection is aborted (or, when nothing was sent yet, the object server answers 404), so no
client ever receives a complete but wrong object.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http import Request
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from txstore.interfaces import IBlockingRunner
from txstore.storage.diskfile import DiskFileReader

CHUNK_SIZE = 1024 * 1024


class CorruptBody(Exception):
    """The bytes read do not match the stored ETag."""


@implementer(IPushProducer)
class ObjectBodyProducer:
    log = Logger()

    def __init__(self, request: Request, runner: IBlockingRunner, device: str, reader: DiskFileReader) -> None:
        self._request = request
        self._runner = runner
        self._device = device
        self._reader = reader
        self._paused: Deferred | None = None
        self._stopped = False

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self._stopped = True
        self.resumeProducing()

    async def send(self, parts: Iterable[tuple[bytes, int, int]], trailer: bytes = b"", whole: bool = False) -> bool:
        """
        Write each ``(prefix, first, last)`` part: the prefix bytes, then bytes first..last of
        the body; then ``trailer``. Returns False when the client went away. With ``whole``, a
        body that fails its ETag check raises `CorruptBody` before its last chunk is written.

        One chunk is read ahead: while a chunk drains to the client, the next one is read (and
        fed to the ETag check) in the device's pool, so disk, md5 and socket work overlap
        instead of taking turns. At most two chunks are held per request, one in the transport's
        buffer and one being read.
        """
        request = self._request
        request.registerProducer(self, True)
        pending: Deferred | None = None
        try:
            for prefix, first, last in parts:
                if prefix:
                    request.write(prefix)
                offset = first
                if offset <= last:
                    pending = self._read(offset, last)
                while pending is not None:
                    data = await pending
                    pending = None
                    if self._stopped:
                        return False
                    if not data:
                        raise CorruptBody(f"body ends at {offset}, before {last + 1}")
                    offset += len(data)
                    if whole and offset > last and self._reader.etag_verified() is False:
                        raise CorruptBody("md5 of the body differs from its ETag")
                    if self._paused is not None:
                        await self._paused
                    if self._stopped:
                        return False
                    if offset <= last:
                        pending = self._read(offset, last)
                    request.write(data)
            if trailer:
                request.write(trailer)
            return True
        finally:
            if pending is not None:
                # The caller closes the file once this returns: let the read in flight end first.
                try:
                    await pending
                except Exception:
                    pass
            request.unregisterProducer()

    def _read(self, offset: int, last: int) -> Deferred:
        return self._runner.run(self._device, self._reader.read, offset, min(CHUNK_SIZE, last - offset + 1))
