# -*- test-case-name: txstore.test.unit.test_reconstructor -*-
"""
Rebuilding one fragment archive from ``k`` others of the same durable version, segment by
segment, straight into a replication session's PUT (the reconstructor's `PutSource`).

Where the bytes come from: this node's own archive (read from its file in the device's pool)
and the other primaries' archives of the same durable timestamp, each from a node's GET with
``X-Backend-Fragment-Index`` (and a ``Range`` when a source is replaced half-way). A node whose
archive is of another timestamp is not used: a segment is never rebuilt from a mix of
versions. Each segment's ``k`` fragments go to `ECCodec.reconstruct` in a thread pool (never
on the reactor) and the rebuilt fragment is sent as DATA frames.

Backpressure and memory: a remote source buffers at most about one fragment; past that its
node's socket is paused (`RemoteArchive`), and resumed once the rebuild has taken that
fragment. The rebuilt fragment is sent only when the channel has drained, so a slow receiver
pauses the rebuild, which pauses the sources. So a rebuild holds about ``2k + 1`` fragments of
one segment, whatever the archive's size. Every wait has the node timeout.

Checks: the sources' bytes are summed as they are read (with the checksum their ETag was
computed with: `txstore.storage.checksum`), and a source read whole is compared with its
archive's ETag at the end; one that differs (bit rot the auditor has not found yet)
ends the session with an ERROR before PUT_END, so the receiver drops the rebuilt archive.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from txstore.common.backend_client import BackendError
from txstore.ec.codec import ECCodec
from txstore.ec.layout import ArchiveLayout
from txstore.replication.channel import FramedChannel, SessionFailed
from txstore.replication.frames import FrameType, data_record, record
from txstore.replication.sender import CHUNK, SyncOutcome, pread_hashing
from txstore.qos.headers import BACKGROUND_IO
from txstore.storage import checksum
from txstore.storage.context import StorageContext
from txstore.storage.partitions import ObjectFiles
from txstore.ec.headers import BACKEND_FRAG_INDEX, EC_CONTENT_LENGTH, EC_SCHEME, EC_SEGMENT_SIZE, FRAG_INDEX

POLICY_INDEX = "X-Backend-Storage-Policy-Index"
# A source's node is paused once this much (or one fragment, if larger) waits to be used.
PAUSE_AT = 64 * 1024
# The writer fills these in for the rebuilt bytes; the source archive's would not match them.
_NOT_SENT = frozenset({"etag", "content-length"})


class SourceFailed(Exception):
    """A source archive could not give its next fragment (gone, short, stalled)."""


class RemoteArchive(Protocol):
    """
    One archive's body from a node's GET, read a fragment at a time. The node's socket is
    paused while ``limit`` bytes wait here, and resumed when the reader takes them.
    """

    def __init__(self, reactor: Any, timeout: float, limit: int, etag: str, whole: bool) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._limit = limit
        self._buffer = bytearray()
        self._paused = False
        self._ended: Any = None  # the reason the body ended, once it has
        self._waiting: Deferred | None = None
        self._wanted = 0
        self.etag = checksum.normal(etag)
        self._checksum = checksum.like(self.etag) if whole else None
        self.peak = 0  # the most bytes buffered at once
        self.index: int | None = None  # the archive's

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        self.peak = max(self.peak, len(self._buffer))
        if len(self._buffer) >= self._limit and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        if self._waiting is not None and len(self._buffer) >= self._wanted:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    def connectionLost(self, reason: Any) -> None:
        self._ended = reason
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    async def read(self, size: int) -> bytes:
        """The next ``size`` bytes; SourceFailed when the body ends first or stalls."""
        while len(self._buffer) < size:
            if self._ended is not None:
                raise SourceFailed(f"the archive ended {size - len(self._buffer)} bytes early")
            if self._paused:
                self._paused = False
                self.transport.resumeProducing()
            self._wanted = size
            self._waiting = Deferred()
            self._waiting.addTimeout(self._timeout, self._reactor)
            try:
                await self._waiting
            except DeferredTimeout:
                raise SourceFailed(f"no bytes for {self._timeout}s") from None
            finally:
                self._waiting = None
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        if self._checksum is not None:
            self._checksum.update(chunk)
        if self._paused and len(self._buffer) < self._limit:
            self._paused = False
            self.transport.resumeProducing()
        return chunk

    def verified(self) -> bool | None:
        """Whether the bytes read match the archive's ETag (None: not read whole from 0)."""
        return None if self._checksum is None else self._checksum.value() == self.etag

    def close(self) -> None:
        """Drop the rest (its connection is closed: it cannot go back to the pool half-read)."""
        if self._ended is None and self.transport is not None:
            self.transport.stopProducing()


class _Dropped(Protocol):
    """A body not wanted: its connection is closed at once instead of reading it."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()


@define
class LocalArchive:
    """This node's own archive, read from its file in the device's pool."""

    context: StorageContext
    device: str
    fd: int
    index: int
    etag: str
    offset: int = 0
    _checksum: checksum.Checksum = field(init=False)
    peak: int = 0  # nothing is buffered: each fragment is read when wanted

    def __attrs_post_init__(self) -> None:
        self._checksum = checksum.like(self.etag)

    @classmethod
    async def open(cls, context: StorageContext, device: str, files: ObjectFiles, etag: str) -> LocalArchive:
        assert files.data is not None and files.data.frag_index is not None
        fd = await context.runner.run(device, os.open, files.directory / files.data.name, os.O_RDONLY | os.O_CLOEXEC)
        return cls(context, device, fd, files.data.frag_index, checksum.normal(etag))

    async def read(self, size: int) -> bytes:
        try:
            chunk = await self.context.runner.run(self.device, pread_hashing, self.fd, self.offset, size,
                                                  self._checksum)
        except OSError as error:
            raise SourceFailed(f"reading the local archive: {error}") from None
        if len(chunk) != size:
            raise SourceFailed("the local archive is shorter than its layout")
        self.offset += size
        return chunk

    def verified(self) -> bool | None:
        return self._checksum.value() == self.etag

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)  # closing a file opened for reading does not wait for the disk


@define
class ArchiveRebuilder:
    """
    Rebuilds archive ``target`` (the peer's) of one partition's objects and sends it, as the
    `PutSource` of one session. ``nodes`` are the partition's primaries (node *i* holds
    archive *i*); ``local_index`` is this device's. Counts what it did in ``figures``.
    """

    log = Logger()

    context: StorageContext
    client: Any  # IBackendClient: the other primaries' GETs
    reactor: Any
    codec: ECCodec
    device: str
    partition: int
    policy_index: int
    nodes: Sequence[Any]
    local_index: int
    target: int
    timeout: float = 60.0
    figures: dict = field(factory=dict)

    def _count(self, name: str, amount: int = 1) -> None:
        self.figures[name] = self.figures.get(name, 0) + amount

    async def send(
        self, channel: FramedChannel, outcome: SyncOutcome, files: ObjectFiles, footers: Any, common: dict,
    ) -> bool:
        """Rebuild and send one object's archive ``target``; False (nothing sent) when it cannot be."""
        assert files.data is not None
        metadata = dict(footers.data or {})
        timestamp = files.data.timestamp
        try:
            # Cut as the object was stored (the policy's segment size may have changed since).
            layout = ArchiveLayout.of(self.codec, int(metadata[EC_CONTENT_LENGTH]),
                                      int(metadata.get(EC_SEGMENT_SIZE) or 0) or None)
        except (KeyError, ValueError):
            self.log.warn("{name}: no valid {header} in its archive; not rebuilt", name=common["name"],
                          header=EC_CONTENT_LENGTH)
            self._count("rebuild_failures")
            return False
        written = metadata.get(EC_SCHEME)
        if written is not None and written != self.codec.scheme:
            # Another backend would rebuild wrong bytes from these fragments, without an error.
            self.log.error("{name}: encoded as {written!r}, the policy now says {scheme!r}; not rebuilt (a"
                           " policy's ec_type must not change)", name=common["name"], written=written,
                           scheme=self.codec.scheme)
            self._count("rebuild_failures")
            return False
        if footers.data_length != layout.archive_length:
            self.log.warn("{name}: the local archive holds {held} bytes, its layout {expected}; not rebuilt",
                          name=common["name"], held=footers.data_length, expected=layout.archive_length)
            self._count("rebuild_failures")
            return False
        sources: list[Any] = []
        try:
            if not await self._open_sources(sources, files, metadata, common["name"], timestamp, layout):
                self._count("rebuild_failures")
                return False
            sent = {key: value for key, value in metadata.items() if key.lower() not in _NOT_SENT}
            sent[FRAG_INDEX] = str(self.target)
            channel.send(record(FrameType.PUT, **common, timestamp=timestamp.internal, metadata=sent,
                                length=layout.archive_length))
            rebuilt_checksum = checksum.for_body(self.target)  # as the proxy's PUT of it would be written
            for segment in range(layout.segments):
                size = layout.last_fragment_size if segment == layout.segments - 1 else layout.fragment_size
                fragments = []
                for position in range(len(sources)):
                    fragments.append(await self._read(sources, position, size, segment * layout.fragment_size,
                                                      common["name"], timestamp, layout))
                rebuilt = await self.context.runner.run("ec", _reconstruct_hashing, self.codec, fragments,
                                                        self.target, rebuilt_checksum)
                del fragments
                if len(rebuilt) != size:
                    raise SessionFailed(500, f"{common['name']}: rebuilt {len(rebuilt)} bytes of a {size}-byte fragment")
                for start in range(0, size, CHUNK):
                    await channel.drained()
                    channel.send(data_record(rebuilt[start:start + CHUNK]))
                outcome.bytes_sent += size
            if any(source.verified() is False for source in sources):
                channel.abort(500, f"{common['name']}: a source archive failed its checksum; the rebuild is dropped")
                raise SessionFailed(500, f"{common['name']}: a source archive failed its checksum")
            channel.send(record(FrameType.PUT_END, etag=rebuilt_checksum.value()))
            outcome.updates += 1
            self._count("fragments_rebuilt")
            self._count("bytes_rebuilt", layout.archive_length)
            return True
        except SessionFailed:
            self._count("rebuild_failures")
            raise
        finally:
            for source in sources:
                self.figures["peak_source_buffer"] = max(self.figures.get("peak_source_buffer", 0), source.peak)
                source.close()

    async def _read(
        self, sources: list[Any], position: int, size: int, offset: int, name: str, timestamp: Any,
        layout: ArchiveLayout,
    ) -> bytes:
        """The next fragment of source ``position``, from another node from ``offset`` if it fails."""
        while True:
            try:
                return await sources[position].read(size)
            except SourceFailed as why:
                self.log.info("{name}: a source of archive {target} failed at byte {offset}: {why}", name=name,
                              target=self.target, offset=offset, why=str(why))
                sources[position].close()
                used = {s.index for s in sources}
                replacement = await self._remote(name, timestamp, layout, offset, exclude=used)
                if replacement is None:
                    raise SessionFailed(500, f"{name}: fewer than {self.codec.k} sources of archive {self.target}"
                                             f" from byte {offset}") from None
                sources[position] = replacement

    async def _open_sources(
        self, sources: list[Any], files: ObjectFiles, metadata: dict, name: str, timestamp: Any,
        layout: ArchiveLayout,
    ) -> bool:
        """Fill ``sources`` with ``k`` archives of ``timestamp``, this node's first; False if too few."""
        try:
            sources.append(await LocalArchive.open(self.context, self.device, files, metadata.get("ETag", "")))
        except OSError:
            pass  # changed meanwhile: the other nodes may still have enough
        used = {self.local_index} if sources else set()
        while len(sources) < self.codec.k:
            source = await self._remote(name, timestamp, layout, 0, exclude=used)
            if source is None:
                self.log.warn("{name}: fewer than {k} archives of {ts} found to rebuild archive {target}", name=name,
                              k=self.codec.k, ts=timestamp.internal, target=self.target)
                return False
            used.add(source.index)
            sources.append(source)
        return True

    async def _remote(
        self, name: str, timestamp: Any, layout: ArchiveLayout, offset: int, exclude: set[int],
    ) -> RemoteArchive | None:
        """The first other primary that serves its archive of ``timestamp`` from ``offset``."""
        for node in self.nodes:
            if node.index in exclude or node.index in (self.target, self.local_index):
                continue
            exclude.add(node.index)
            headers = {POLICY_INDEX: str(self.policy_index), BACKEND_FRAG_INDEX: str(node.index),
                       **BACKGROUND_IO}  # a rebuild's reads are the daemons' disk work there too
            if offset:
                headers["Range"] = f"bytes={offset}-"
            path = f"/{node.device_name}/{self.partition}{name}"
            try:
                response = await self.client.stream("GET", node.ip, node.port, path, headers, timeout=self.timeout)
            except BackendError as error:
                self.log.info("{name}: archive {index} unavailable: {error}", name=name, index=node.index,
                              error=str(error))
                continue
            usable = (
                response.status == (206 if offset else 200)
                and response.header("X-Backend-Durable-Timestamp") == timestamp.internal
                and response.header(FRAG_INDEX) == str(node.index)
                and response.length == layout.archive_length - offset
            )
            if not usable:
                # Another version (never mixed with this one), a 404, or a short archive.
                if response.status in (200, 206):
                    response.deliver(_Dropped())  # not read: it may be a whole archive
                else:
                    await response.discard(self.reactor, self.timeout)
                continue
            source = RemoteArchive(self.reactor, self.timeout, max(layout.fragment_size, PAUSE_AT),
                                   response.header("ETag", ""), whole=not offset)
            source.index = node.index
            response.deliver(source)
            return source
        return None


def _reconstruct_hashing(codec: ECCodec, fragments: Sequence[bytes], target: int,
                         hashing: checksum.Checksum) -> bytes:
    """(blocking, in the pool) One fragment of archive ``target``, added to its running checksum."""
    rebuilt = codec.reconstruct(fragments, target)
    hashing.update(rebuilt)
    return rebuilt
