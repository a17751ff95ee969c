# -*- test-case-name: txstore.test.unit.test_object_body,txstore.test.unit.test_object_server -*-
"""
An object's bytes as a response body (`IResponseBody`): a push producer that reads the next
chunk through the device's I/O pool only while the client keeps up.

The node's edge registers the body as the producer of the client's connection and has it write
to the request (`ObjectBody.write_to`). twisted.web calls `pauseProducing` when the socket's send
buffer is full and `resumeProducing` when it drains (a `txstore.common.flow.DrainWaiter`); one chunk is read ahead meanwhile and then
no more, so a slow client holds at most two chunks in memory per request, and a disconnected
one stops the reads. A whole-object read is checked against its ETag *before* the last chunk
goes out. A read that fails (a body that fails its check or ends early, a disk error) is handed
to ``failed``, the object server's, which quarantines a damaged object and says what the
failure becomes: a 404 while nothing was sent, else an aborted connection; so no client ever
receives a complete but wrong object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from txstore.common.flow import DrainWaiter, DrainedProducer
from txstore.interfaces import IBlockingRunner, IResponseBody
from txstore.qos.scheduler import READ, Stream, StreamStopped
from txstore.storage.diskfile import DiskFileError, DiskFileReader

CHUNK_SIZE = 1024 * 1024

# (the read's error, whether any byte was written) -> the exception the body fails with
ReadFailed = Callable[[Exception, bool], Awaitable[Exception]]


class CorruptBody(Exception):
    """The bytes read do not match the stored ETag."""


@implementer(IResponseBody)
@define(eq=False)
class ObjectBody(DrainedProducer):
    """
    Bytes of an open object, as ``parts``: each ``(prefix, first, last)`` is the prefix bytes,
    then bytes first..last of the object; then ``trailer`` (a multipart answer's closing
    boundary). With ``whole``, the one part is the whole object and is checked against its
    ETag. The reader is closed once the body is written, or let go.
    """

    _runner: IBlockingRunner
    _device: str
    _reader: DiskFileReader
    _parts: Sequence[tuple[bytes, int, int]]
    _failed: ReadFailed
    _trailer: bytes = b""
    _whole: bool = False
    _io: Stream | None = None  # the request's IO class on its device (txstore.qos.scheduler), or straight to the pool
    _drain: DrainWaiter = field(factory=DrainWaiter, init=False)
    _stopped: bool = field(default=False, init=False)
    _started: bool = field(default=False, init=False)  # a byte was written

    def stopProducing(self) -> None:
        self._stopped = True
        if self._io is not None:
            self._io.stop()  # a chunk waiting for its cap waits no more
        self.resumeProducing()

    def write_to(self, consumer: IConsumer) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._write_to(consumer))

    async def _write_to(self, consumer: IConsumer) -> bool:
        try:
            with self._io if self._io is not None else nullcontext():
                return await self._send(consumer)
        except StreamStopped:
            return False  # the client went away while a chunk waited for its cap
        except (CorruptBody, DiskFileError) as err:
            raise await self._failed(err, self._started) from err
        finally:
            await self._runner.run(self._device, self._reader.close)

    async def _send(self, consumer: IConsumer) -> bool:
        """
        Write the parts and the trailer; False when stopped first. A body that fails its ETag
        check raises `CorruptBody` before its last chunk is written.

        One chunk is read ahead: while a chunk drains to the client, the next one is read (and
        fed to the ETag check) in the device's pool, so disk, md5 and socket work overlap
        instead of taking turns. At most two chunks are held per request, one in the transport's
        buffer and one being read.
        """
        pending: Deferred | None = None
        whole = self._whole
        try:
            for prefix, first, last in self._parts:
                if self._stopped:
                    return False
                if prefix:
                    self._started = True
                    consumer.write(prefix)
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
                    if self._drain.paused:
                        await self._drain.wait()
                    if self._stopped:
                        return False
                    if offset <= last:
                        pending = self._read(offset, last)
                    self._started = True
                    consumer.write(data)
            if self._trailer:
                consumer.write(self._trailer)
            return True
        finally:
            if pending is not None:
                # The reader is closed once this returns: let the read in flight end first.
                try:
                    await pending
                except Exception:
                    pass

    def _read(self, offset: int, last: int) -> Deferred:
        length = min(CHUNK_SIZE, last - offset + 1)
        if self._io is None:
            return self._runner.run(self._device, self._reader.read, offset, length)
        return Deferred.fromCoroutine(self._io.run(READ, length, self._reader.read, offset, length))
