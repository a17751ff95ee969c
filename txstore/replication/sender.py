# -*- test-case-name: txstore.test.unit.test_replication -*-
"""
The sending side of replication: connect to a peer's replication port and push one partition.

`ObjectSender.sync` runs one session. Given the local suffix hashes (a primary syncing with
another primary) it asks for the peer's and offers only the objects of differing suffixes;
given a list of objects (a handoff going home) it offers all of them. It returns what the peer
confirmed holding afterwards (the same or newer), which is what a handoff may then remove.

Bodies are read in `CHUNK` pieces in the device's thread pool (where their checksum, md5 or an
EC archive's CRC-32, is computed too) and sent one frame at a time after
`FramedChannel.drained`, optionally paced to a byte rate shared by every session of the
replicator. A local copy whose checksum does not match its ETag
is quarantined and the session ends with an ERROR: corrupt bytes never complete a PUT.

For an erasure-coded policy (the reconstructor's sessions) ``frag_index`` names the peer's
archive in HELLO, the local objects are listed as archive ``local_frag_index`` sees them
(`list_ec_objects`), and ``put_source``, when given, produces the body of each ``data`` the
peer wants instead of the local file: the reconstructor's rebuild of the peer's archive.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from attrs import define, field, frozen
from twisted.internet.task import deferLater
from twisted.logger import Logger

from txstore.common.connect import connect

from txstore.replication.channel import FramedChannel, SessionFailed
from txstore.replication.frames import SURVEY_LIMIT, VERSION, FrameType, data_record, record
from txstore.replication.states import S
from txstore.storage import checksum
from txstore.storage.context import StorageContext
from txstore.storage.objmeta import FooterError
from txstore.storage.partitions import ObjectFiles, list_ec_objects, list_objects, read_footers

CHUNK = 256 * 1024
OFFER_BATCH = 1000


class BytePacer:
    """Spreads sends to at most ``rate`` bytes/s (0: no limit), shared by concurrent sessions."""

    def __init__(self, reactor: Any, rate: float) -> None:
        self._reactor = reactor
        self._rate = rate
        self._next = 0.0

    async def consume(self, size: int) -> None:
        if self._rate <= 0:
            return
        now = self._reactor.seconds()
        start = max(now, self._next)
        self._next = start + size / self._rate
        if start > now:
            await deferLater(self._reactor, start - now, lambda: None)


@define
class Connector:
    """Opens the sender's side of a session: TCP (or TLS) with a connect deadline."""

    reactor: Any
    conn_timeout: float = 2.0
    timeout: float = 60.0
    tls: Any = None  # txstore.common.tls.Credentials, or None for plain TCP

    async def open(self, host: str, port: int) -> FramedChannel:
        channel = FramedChannel(S, self.reactor, self.timeout)
        tls = self.tls.options_for(host) if self.tls is not None else None
        await connect(self.reactor, host, port, channel, self.conn_timeout, tls)
        return channel


@define
class SyncOutcome:
    """What one session achieved."""

    ok: bool = False
    reason: str = ""
    suffixes: int = 0
    offered: int = 0
    updates: int = 0
    bytes_sent: int = 0
    peer_newer: int = 0
    confirmed: list[ObjectFiles] = field(factory=list)


#: Sends one wanted ``data`` in place of the local file (PUT, DATA frames, PUT_END), given the
#: channel, the outcome to count in, the local files, their footers and the frame's ``hash`` and
#: ``name``; False when it could not (the object is then not confirmed).
PutSource = Callable[[FramedChannel, SyncOutcome, ObjectFiles, Any, dict], Awaitable[bool]]


@frozen
class _SessionOptions:
    """What an EC session changes (all None for replication)."""

    frag_index: int | None = None
    local_frag_index: int | None = None
    put_source: PutSource | None = None


@define
class ObjectSender:
    log = Logger()

    context: StorageContext
    connector: Connector
    pacer: BytePacer | None = None
    _open: set = field(factory=set, init=False)  # channels of the sessions under way

    def abort_all(self, reason: str = "the sender is stopping") -> None:
        """End every session under way now (at node stop: a peer that is stopping too may never answer)."""
        for channel in list(self._open):
            channel.abort(503, reason)

    async def sync(
        self, node: Any, device: str, partition: int, policy_index: int, *,
        local_hashes: dict[str, str] | None = None, objects: Sequence[ObjectFiles] | None = None,
        frag_index: int | None = None, local_frag_index: int | None = None, put_source: PutSource | None = None,
    ) -> SyncOutcome:
        """One session with ``node`` (a ring Node) for the local ``device``'s partition."""
        outcome = SyncOutcome()
        channel = None
        session = _SessionOptions(frag_index, local_frag_index, put_source)
        try:
            channel = await self.connector.open(node.replication_ip, node.replication_port)
            self._open.add(channel)
            await self._session(channel, outcome, node, device, partition, policy_index, local_hashes, objects,
                                session)
            outcome.ok = True
        except SessionFailed as failure:
            outcome.reason = f"{failure.code} {failure.reason}" + (" (from the peer)" if failure.from_peer else "")
            if channel is not None:
                channel.abort(failure.code, failure.reason)  # a no-op unless raised here without closing
        except Exception as error:  # connection refused, timeouts, local disk errors
            outcome.reason = f"{type(error).__name__}: {error}"
            if channel is not None:
                channel.abort(500, "sender failed")
        finally:
            self._open.discard(channel)
        if not outcome.ok:
            self.log.warn(
                "replication of {device}/{partition} (policy {policy}) to {peer} failed: {reason}",
                device=device, partition=partition, policy=policy_index,
                peer=f"{node.replication_ip}:{node.replication_port}/{node.device_name}", reason=outcome.reason,
            )
        return outcome

    async def survey(
        self, node: Any, device: str, policy_index: int, partitions: Sequence[int]
    ) -> dict[int, str] | None:
        """
        ``node``'s digest of its suffix hashes (`hashes_digest`) of each of ``partitions``, in
        one session (``SURVEY``); None when the session failed (the caller then falls back to a
        session per partition, which also covers a peer that predates ``SURVEY``).
        """
        if not partitions:
            return {}
        channel = None
        try:
            channel = await self.connector.open(node.replication_ip, node.replication_port)
            self._open.add(channel)
            channel.send(record(FrameType.HELLO, version=VERSION, kind="object", device=node.device_name,
                                partition=partitions[0], policy=policy_index, frag_index=None))
            await channel.expect(FrameType.READY)
            found: dict[int, str] = {}
            for start in range(0, len(partitions), SURVEY_LIMIT):
                asked = {str(p): p for p in partitions[start:start + SURVEY_LIMIT]}
                channel.send(record(FrameType.SURVEY, partitions=list(asked.values())))
                for _ in range(len(asked) + 1):  # a frame per partition at most, then SURVEY_END
                    answer = await channel.expect(FrameType.SURVEYED, FrameType.SURVEY_END)
                    if answer.type is FrameType.SURVEY_END:
                        break
                    for partition, digest in answer["digests"].items():
                        if partition in asked and isinstance(digest, str):
                            found[asked[partition]] = digest
                else:
                    raise SessionFailed(400, "SURVEYED frames without end")
            channel.end()
            return found
        except SessionFailed as failure:
            reason = f"{failure.code} {failure.reason}" + (" (from the peer)" if failure.from_peer else "")
            if channel is not None:
                channel.abort(failure.code, failure.reason)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if channel is not None:
                channel.abort(500, "sender failed")
        finally:
            self._open.discard(channel)
        self.log.info(
            "survey of {count} partitions of {peer} (policy {policy}) failed: {reason}; one session each instead",
            count=len(partitions), peer=f"{node.replication_ip}:{node.replication_port}/{node.device_name}",
            policy=policy_index, reason=reason,
        )
        return None

    async def _session(
        self, channel: FramedChannel, outcome: SyncOutcome, node: Any, device: str, partition: int,
        policy_index: int, local_hashes: dict[str, str] | None, objects: Sequence[ObjectFiles] | None,
        session: _SessionOptions,
    ) -> None:
        channel.send(record(FrameType.HELLO, version=VERSION, kind="object", device=node.device_name,
                            partition=partition, policy=policy_index, frag_index=session.frag_index))
        await channel.expect(FrameType.READY)
        if objects is None:
            channel.send(record(FrameType.GET_HASHES))
            remote = (await channel.expect(FrameType.HASHES))["hashes"]
            differing = sorted(s for s, h in (local_hashes or {}).items() if remote.get(s) != h)
            outcome.suffixes = len(differing)
            if not differing:
                channel.end()
                return
            partition_dir = self.context.diskfiles.partition_path(device, policy_index, partition)
            local_index = session.local_frag_index
            if local_index is not None:
                objects = await self.context.runner.run(
                    device, lambda: list(list_ec_objects(partition_dir, differing, local_index))
                )
            else:
                objects = await self.context.runner.run(
                    device, lambda: list(list_objects(partition_dir, differing))
                )
        wanted, newer = await self._missing_check(channel, objects)
        outcome.offered = len(objects)
        outcome.peer_newer = newer
        for files in objects:
            parts = wanted.get(files.name_hash)
            if not parts:
                outcome.confirmed.append(files)
                continue
            if await self._send_updates(channel, outcome, files, parts, device, partition, policy_index, session):
                outcome.confirmed.append(files)
        channel.send(record(FrameType.UPDATES_END))
        await channel.expect(FrameType.END)
        channel.end()

    async def _missing_check(self, channel: FramedChannel, objects: Sequence[ObjectFiles]) -> tuple[dict, int]:
        for start in range(0, len(objects), OFFER_BATCH):
            batch = [[f.name_hash, f.offer()] for f in objects[start:start + OFFER_BATCH]]
            await channel.drained()
            channel.send(record(FrameType.OFFER, objects=batch))
        channel.send(record(FrameType.OFFER_END))
        wanted: dict[str, list[str]] = {}
        newer = 0
        while True:
            answer = await channel.expect(FrameType.WANT, FrameType.WANT_END)
            if answer.type is FrameType.WANT_END:
                return wanted, newer
            for entry in answer["objects"]:
                if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list):
                    wanted[entry[0]] = entry[1]
            newer += len(answer["newer"])

    async def _send_updates(
        self, channel: FramedChannel, outcome: SyncOutcome, files: ObjectFiles, parts: list[str], device: str,
        partition: int, policy_index: int, session: _SessionOptions,
    ) -> bool:
        """Send what the peer wants of one object; False when the local copy changed meanwhile."""
        run = self.context.runner.run
        try:
            footers = await run(device, read_footers, files)
        except (FileNotFoundError, FooterError):
            return False  # replaced meanwhile, or damaged: the next pass (or the auditor) sees to it
        described = footers.data or footers.tombstone or {}
        name = described.get("name")
        if not name:
            return False
        common = {"hash": files.name_hash, "name": name}
        if "ts" in parts and files.tombstone is not None:
            channel.send(record(FrameType.DELETE, **common, timestamp=files.tombstone.timestamp.internal,
                                metadata=footers.tombstone))
            outcome.updates += 1
        if "data" in parts and files.data is not None:
            if session.put_source is not None:
                if not await session.put_source(channel, outcome, files, footers, common):
                    return False
            elif not await self._send_put(channel, outcome, files, footers, common, device, partition, policy_index):
                return False
        if "meta" in parts and files.meta is not None and footers.meta is not None:
            await channel.drained()
            channel.send(record(FrameType.POST, **common, timestamp=files.meta.timestamp.internal,
                                metadata=footers.meta))
            outcome.updates += 1
        return True

    async def _send_put(
        self, channel: FramedChannel, outcome: SyncOutcome, files: ObjectFiles, footers: Any, common: dict,
        device: str, partition: int, policy_index: int,
    ) -> bool:
        run = self.context.runner.run
        path = files.directory / files.data.name
        try:
            fd = await run(device, os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            length = footers.data_length
            channel.send(record(FrameType.PUT, **common, timestamp=files.data.timestamp.internal,
                                metadata=footers.data, length=length))
            stored = str(footers.data.get("ETag", ""))
            hashing = checksum.like(stored)  # md5, or an EC archive's CRC-32
            offset = 0
            while offset < length:
                chunk = await run(device, pread_hashing, fd, offset, min(CHUNK, length - offset), hashing)
                if not chunk:
                    channel.abort(500, f"{common['name']}: the sender's file ended early")
                    raise SessionFailed(500, "local data file shorter than its metadata says")
                await channel.drained()
                channel.send(data_record(chunk))
                offset += len(chunk)
                outcome.bytes_sent += len(chunk)
                if self.pacer is not None:
                    await self.pacer.consume(len(chunk))
            etag = hashing.value()
            if etag != checksum.normal(stored):
                await self._quarantine(common["name"], device, partition, policy_index)
                channel.abort(500, f"{common['name']}: the sender's copy failed its checksum (quarantined)")
                raise SessionFailed(500, f"local copy of {common['name']} failed its checksum; quarantined")
            channel.send(record(FrameType.PUT_END, etag=etag))
            outcome.updates += 1
            return True
        finally:
            await run(device, os.close, fd)

    async def _quarantine(self, name: str, device: str, partition: int, policy_index: int) -> None:
        _empty, account, container, obj = name.split("/", 3)

        def quarantine() -> None:
            diskfile = self.context.diskfiles.get_diskfile(device, partition, account, container, obj, policy_index)
            diskfile.quarantine()

        try:
            await self.context.runner.run(device, quarantine)
            self.log.warn("quarantined {name} on {device}: its checksum does not match its ETag", name=name,
                          device=device)
        except Exception:
            self.log.failure("quarantining {name} on {device}", name=name, device=device)


def pread_hashing(fd: int, offset: int, length: int, hashing: checksum.Checksum) -> bytes:
    """(blocking, in the device's pool) Up to ``length`` bytes at ``offset``, added to ``hashing``."""
    chunk = os.pread(fd, length, offset)
    hashing.update(chunk)
    return chunk


