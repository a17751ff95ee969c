# -*- test-case-name: txstore.test.unit.test_replication -*-
"""
The receiving side of replication: the node's replication listener and one session per
connection.

A session is checked before anything is touched (version, device present and mounted, a free
session slot on the device, a known policy), then driven frame by frame. Every file operation
runs in the device's thread pool, through the same `DiskFile` paths a client write uses, so a
replicated object becomes visible only by the final rename of a complete, fsynced file; a
failure or a disconnect in the middle of a body removes the temp file. Container and account
databases are served by handlers registered per kind (``db_handlers``).

An erasure-coded policy's session names in HELLO the ``frag_index`` of the archive this device
holds (or is to hold) for the partition: hashes are that archive's view (`ec_hashes_for`),
offers are weighed against that archive, and a PUT writes archive ``frag_index`` and marks it
durable at once (only durable versions are offered). A session of an EC policy without an
index, or of a replicated one with one, is refused (400): whole replicas must never land in an
EC partition, nor archives in a replicated one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from txstore.common.io import PoolsStopped
from txstore.common.timestamps import Timestamp
from txstore.replication.channel import FramedChannel, SessionFailed
from txstore.replication.frames import SURVEY_LIMIT, VERSION, FrameType, ProtocolError, Record, record
from txstore.replication.missing import decide, parse_offer
from txstore.replication.states import R
from txstore.storage.diskfile import (
    DiskFileConflict,
    DiskFileDeviceUnavailable,
    DiskFileNoSpace,
    DiskFileNotFound,
)
from txstore.storage import checksum
from txstore.storage.context import StorageContext
from txstore.storage.partitions import ec_hashes_for, ec_object_files, get_hashes, hashes_digest, object_files
from txstore.ec.headers import FRAG_INDEX

DEFAULT_SESSIONS_PER_DEVICE = 4
KINDS_OBJECT = "object"
SURVEY_CHUNK = 64  # partitions hashed per thread call, and answered per SURVEYED frame

DbHandler = Callable[["ReceiverSession", Record], Awaitable[None]]


class UpdateRefused(Exception):
    """An update the receiver cannot apply; ``code`` goes into the ERROR frame."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ReceiverFactory(Factory):
    """The replication listener's factory: shared limits and collaborators of every session."""

    def __init__(
        self, context: StorageContext, reactor: Any, *, timeout: float = 60.0,
        sessions_per_device: int = DEFAULT_SESSIONS_PER_DEVICE, reclaim_age: float = 7 * 24 * 3600.0,
        db_handlers: dict[str, DbHandler] | None = None,
    ) -> None:
        self.context = context
        self.reactor = reactor
        self.timeout = timeout
        self.sessions_per_device = sessions_per_device
        self.reclaim_age = reclaim_age
        self.db_handlers = dict(db_handlers or {})
        self.active: Counter[str] = Counter()
        self.sessions: set[Deferred] = set()
        self.stats: Counter[str] = Counter()

    def buildProtocol(self, addr: Any) -> ReceiverSession:
        return ReceiverSession(self)


class ReceiverSession(FramedChannel):
    log = Logger()

    def __init__(self, factory: ReceiverFactory) -> None:
        super().__init__(R, factory.reactor, factory.timeout)
        self.factory = factory
        self.device: str | None = None
        self.partition: int | None = None
        self.policy_index = 0
        self.frag_index: int | None = None  # an EC policy's session: the archive of this device
        self.applied = 0

    @property
    def context(self) -> StorageContext:
        return self.factory.context

    def connectionMade(self) -> None:
        super().connectionMade()
        done = Deferred.fromCoroutine(self._serve())
        self.factory.sessions.add(done)
        done.addBoth(lambda _: self.factory.sessions.discard(done))

    async def receive_body(
        self, length: int, end: FrameType, write: Callable[[bytes], Any], what: str
    ) -> tuple[int, Record]:
        """
        Take DATA frames up to the ``end`` frame, handing each chunk to ``write`` (blocking, in
        the device's pool); more than ``length`` bytes is refused (422) at once. Returns the
        bytes received and the end record.
        """
        received = 0
        while True:
            chunk = await self.receive()
            if chunk.type is end:
                return received, chunk
            received += len(chunk.data)
            if received > length:
                raise UpdateRefused(422, f"{what}: more than the {length} bytes announced")
            await self.run(write, chunk.data)

    async def dispatch(self, handlers: dict[FrameType, Callable[[Record], Awaitable[None]]], session: str) -> None:
        """
        Hand each frame to its handler, in order, until END (then the session closes); a frame
        no handler takes is a protocol error, named as out of place in ``session``.
        """
        while True:
            item = await self.receive()
            if item.type is FrameType.END:
                self.close()
                return
            handler = handlers.get(item.type)
            if handler is None:
                raise ProtocolError(f"{item.type.name} has no place in {session}")
            await handler(item)

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """Blocking work in this session's device pool."""
        assert self.device is not None
        return await self.context.runner.run(self.device, function, *args)

    async def _serve(self) -> None:
        holding = False
        try:
            hello = await self.expect(FrameType.HELLO)
            await self._open(hello)
            holding = True
            self.factory.active[self.device] += 1
            self.send(record(FrameType.READY, version=VERSION))
            kind = hello["kind"]
            if kind == KINDS_OBJECT:
                await self._serve_objects()
            else:
                await self.factory.db_handlers[kind](self, hello)
            self.factory.stats["sessions_ok"] += 1
        except SessionFailed as failure:
            self.factory.stats["sessions_failed"] += 1
            if failure.code:
                self.log.warn("replication session from {peer} for {device}/{partition}: {code} {reason}",
                              peer=self._peer(), device=self.device, partition=self.partition,
                              code=failure.code, reason=failure.reason)
        except ProtocolError as error:
            self.factory.stats["sessions_failed"] += 1
            self.abort(400, str(error))
        except UpdateRefused as refused:
            self.factory.stats["sessions_failed"] += 1
            self.abort(refused.code, refused.reason)
        except PoolsStopped:
            self.abort(503, "the node is stopping")
        except Exception:
            self.factory.stats["sessions_failed"] += 1
            self.log.failure("replication session from {peer} failed", peer=self._peer())
            self.abort(500, "internal error")
        finally:
            if holding:
                self.factory.active[self.device] -= 1

    def _peer(self) -> str:
        try:
            peer = self.transport.getPeer()
            return f"{peer.host}:{peer.port}"
        except Exception:
            return "?"

    async def _open(self, hello: Record) -> None:
        if hello["version"] != VERSION:
            raise UpdateRefused(400, f"protocol version {hello['version']} is not supported (this node: {VERSION})")
        kind = hello["kind"]
        if kind != KINDS_OBJECT and kind not in self.factory.db_handlers:
            raise UpdateRefused(400, f"unknown session kind {kind!r}")
        if hello["partition"] < 0 or hello["policy"] < 0:
            raise UpdateRefused(400, "partition and policy must not be negative")
        if kind == KINDS_OBJECT and self.context.policies.by_index(hello["policy"]) is None:
            raise UpdateRefused(400, f"unknown storage policy {hello['policy']}")
        frag_index = hello.get("frag_index")
        if kind == KINDS_OBJECT:
            frag_index = self._check_frag_index(hello["policy"], frag_index)
        device = hello["device"]
        try:
            path = await self.context.runner.run(device, self.context.diskfiles.device_path, device)
        except ValueError:
            raise UpdateRefused(400, f"not a device name: {device!r}") from None
        if path is None:
            raise UpdateRefused(507, f"device {device} is not available")
        if self.factory.active[device] >= self.factory.sessions_per_device:
            raise UpdateRefused(503, f"device {device} already runs {self.factory.sessions_per_device} sessions")
        self.device, self.partition, self.policy_index = device, hello["partition"], hello["policy"]
        self.frag_index = frag_index if kind == KINDS_OBJECT else None

    def _check_frag_index(self, policy_index: int, frag_index: Any) -> int | None:
        """HELLO's ``frag_index``: an archive of an EC policy, None for a replicated one."""
        policy = self.context.policies.by_index(policy_index)
        ec = policy_index in self.context.diskfiles.ec_policies
        if not ec:
            if frag_index is not None:
                raise UpdateRefused(400, f"a fragment index for the replicated policy {policy_index}")
            return None
        fragments = policy.ec.fragments if policy is not None and policy.ec is not None else 0
        if not isinstance(frag_index, int) or isinstance(frag_index, bool) or not 0 <= frag_index < fragments:
            raise UpdateRefused(400, f"policy {policy_index} is erasure-coded: a session names its fragment index"
                                     f" (0 to {fragments - 1}), not {frag_index!r}")
        return frag_index

    # --- objects ---------------------------------------------------------------------------

    @property
    def _partition_dir(self):
        return self.context.diskfiles.partition_path(self.device, self.policy_index, self.partition)

    async def _serve_objects(self) -> None:
        handlers = {
            FrameType.GET_HASHES: self._hashes,
            FrameType.SURVEY: self._survey,
            FrameType.OFFER: self._offer,
            FrameType.OFFER_END: self._offers_done,
            FrameType.PUT: self._put,
            FrameType.POST: self._post,
            FrameType.DELETE: self._delete,
            FrameType.UPDATES_END: self._updates_done,
        }
        await self.dispatch(handlers, "an object session")

    async def _updates_done(self, item: Record) -> None:
        self.send(record(FrameType.END, applied=self.applied))

    async def _hashes(self, item: Record) -> None:
        if self.frag_index is not None:
            found = await self.run(partial(
                get_hashes, self._partition_dir, self.factory.reclaim_age, self.context.clock(), ec=True,
            ))
            hashes = ec_hashes_for(found, self.frag_index)
        else:
            hashes = await self.run(get_hashes, self._partition_dir, self.factory.reclaim_age, self.context.clock())
        self.send(record(FrameType.HASHES, hashes=hashes))

    async def _survey(self, item: Record) -> None:
        """
        A digest of the suffix hashes of many partitions at once (of the session's device and
        policy), so a replicator finds the partitions that differ in one exchange instead of a
        session per partition. Hashed `SURVEY_CHUNK` partitions per thread call (a pool thread
        is never held for long) and answered a SURVEYED frame per chunk (the sender sees
        progress within its timeout), then SURVEY_END. A partition not held here has the digest
        of no suffixes; one that could not be hashed (a disk error) is left out.
        """
        partitions = item["partitions"]
        if self.frag_index is not None:
            raise ProtocolError("SURVEY is for replicated policies")
        if len(partitions) > SURVEY_LIMIT:
            raise ProtocolError(f"SURVEY of {len(partitions)} partitions (at most {SURVEY_LIMIT})")
        for partition in partitions:
            if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
                raise ProtocolError(f"not a partition: {partition!r}")
        diskfiles, device, policy = self.context.diskfiles, self.device, self.policy_index
        reclaim_age, now = self.factory.reclaim_age, self.context.clock()

        def digests(chunk: list[int]) -> dict[str, str]:
            answer = {}
            for p in chunk:
                try:
                    hashes = get_hashes(diskfiles.partition_path(device, policy, p), reclaim_age, now)
                except OSError:
                    continue  # left out: the sender gives that partition a session of its own
                answer[str(p)] = hashes_digest(hashes)
            return answer

        for start in range(0, len(partitions), SURVEY_CHUNK):
            answer = await self.run(digests, partitions[start:start + SURVEY_CHUNK])
            await self.drained()
            self.send(record(FrameType.SURVEYED, digests=answer))
        self.send(record(FrameType.SURVEY_END))

    async def _offer(self, item: Record) -> None:
        offers = []
        for entry in item["objects"]:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise ProtocolError(f"not an offer entry: {entry!r}")
            name_hash = entry[0]
            _check_hash(name_hash)
            offers.append((name_hash, parse_offer(entry[1])))
        answer = await self.run(self._decide_all, offers)
        self.send(record(FrameType.WANT, objects=answer[0], newer=answer[1]))

    def _decide_all(self, offers: list) -> tuple[list, list]:
        wanted, newer = [], []
        for name_hash, offered in offers:
            directory = self._partition_dir / name_hash[-3:] / name_hash
            if self.frag_index is not None:
                local = ec_object_files(directory, self.frag_index)
            else:
                local = object_files(directory)
            parts, holds_newer = decide(offered, local)
            if parts:
                wanted.append([name_hash, parts])
            if holds_newer:
                newer.append(name_hash)
        return wanted, newer

    async def _offers_done(self, item: Record) -> None:
        self.send(record(FrameType.WANT_END))

    def _diskfile(self, item: Record):
        name = item["name"]
        parts = name.split("/", 3)
        if len(parts) != 4 or parts[0] or not all(parts[1:]):
            raise ProtocolError(f"not an object name: {name!r}")
        _check_hash(item["hash"])
        try:
            diskfile = self.context.diskfiles.get_diskfile(
                self.device, self.partition, parts[1], parts[2], parts[3], self.policy_index
            )
        except DiskFileDeviceUnavailable:
            raise UpdateRefused(507, f"device {self.device} is not available") from None
        if diskfile.name_hash != item["hash"]:
            raise ProtocolError(f"{name!r} does not hash to {item['hash']}")
        return diskfile

    @staticmethod
    def _timestamp(item: Record) -> Timestamp:
        try:
            return Timestamp.parse(item["timestamp"])
        except ValueError:
            raise ProtocolError(f"bad timestamp {item['timestamp']!r}") from None

    async def _put(self, item: Record) -> None:
        timestamp = self._timestamp(item)
        length = item["length"]
        if length < 0:
            raise ProtocolError("negative length")
        metadata = dict(item["metadata"])
        if self.frag_index is not None and metadata.get(FRAG_INDEX) != str(self.frag_index):
            raise UpdateRefused(422, f"{item['name']}: archive {metadata.get(FRAG_INDEX)!r} sent for"
                                     f" archive {self.frag_index}")
        diskfile = await self.run(self._diskfile, item)
        try:
            # Summed as the sender's copy was (an md5, or an EC archive's CRC-32, which its ETag
            # says); a rebuilt archive comes without one and is summed as a new archive is.
            sent = next((value for name, value in metadata.items() if name.lower() == "etag"), None)
            writer = await self.run(partial(diskfile.create_writer, length, frag_index=self.frag_index,
                                            body_checksum=None if sent is None else checksum.like(sent)))
        except DiskFileNoSpace as error:
            raise UpdateRefused(507, str(error)) from None
        try:
            received, end = await self.receive_body(length, FrameType.PUT_END, writer.write, item["name"])
            if received != length:
                raise UpdateRefused(422, f"{item['name']}: {received} of {length} bytes")
            if end["etag"] != writer.etag:
                raise UpdateRefused(422, f"{item['name']}: checksum {writer.etag} is not the etag sent")
            try:
                await self.run(writer.commit, metadata, timestamp)
                self.applied += 1
            except DiskFileConflict:
                pass  # a newer write got here first (or, EC, this archive is held: marked below)
            except DiskFileNoSpace as error:
                raise UpdateRefused(507, str(error)) from None
            except (TypeError, ValueError) as error:
                raise UpdateRefused(422, f"{item['name']}: {error}") from None
        finally:
            await self.context.runner.run(self.device, writer.abort)
        if self.frag_index is not None:
            # Only durable versions are offered: the archive is durable here as soon as it is.
            try:
                await self.run(diskfile.mark_durable, timestamp, self.frag_index)
            except (DiskFileConflict, DiskFileNotFound):
                pass  # a newer version or a tombstone came meanwhile

    async def _post(self, item: Record) -> None:
        timestamp = self._timestamp(item)
        diskfile = await self.run(self._diskfile, item)
        try:
            await self.run(diskfile.write_metadata, dict(item["metadata"]), timestamp)
            self.applied += 1
        except (DiskFileConflict, DiskFileNotFound):
            pass  # newer data or a delete got here first: the .meta no longer applies
        except (TypeError, ValueError) as error:
            raise UpdateRefused(422, f"{item['name']}: {error}") from None

    async def _delete(self, item: Record) -> None:
        timestamp = self._timestamp(item)
        diskfile = await self.run(self._diskfile, item)
        try:
            await self.run(diskfile.delete, timestamp, dict(item["metadata"]))
            self.applied += 1
        except DiskFileConflict:
            pass
        except (TypeError, ValueError) as error:
            raise UpdateRefused(422, f"{item['name']}: {error}") from None


def _check_hash(name_hash: str) -> None:
    if len(name_hash) != 32 or any(c not in "0123456789abcdef" for c in name_hash):
        raise ProtocolError(f"not an object hash: {name_hash!r}")

