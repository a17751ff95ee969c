# -*- test-case-name: txstore.test.unit.test_db_replication -*-
"""
Container and account databases over the replication protocol.

A session carries one database (see docs/replication.rst, *Database sessions*). The sender
describes its copy (``DB_SYNC``: replica id, content hash, max row id, status times, metadata
with its tombstones); the receiver merges status and metadata at once and answers how it
stands:

- ``in_sync``: same content hash (rows are hashed order-independently, so equal content
  means equal hash whatever order the rows arrived in): nothing more to send;
- ``behind``: with the row id up to which it already took this sender's rows (its incoming
  sync point for the sender's replica id); the sender sends the rows after it in batches, which
  the receiver merges newest-wins per name, moving the sync point as it goes;
- ``missing``: no database here; the sender sends a consistent snapshot of its whole file
  (SQLite online backup), which the receiver checks (ours, intact), gives an id of its own
  and links into place. A receiver far behind (more than `FILE_THRESHOLD` rows) also gets the
  file, and merges its rows.

Both sides open databases through the container or account server's broker cache, so a
replicated change and client requests always go through the same open broker.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from attrs import define
from twisted.logger import Logger

from txstore.replication.channel import FramedChannel, SessionFailed
from txstore.replication.frames import VERSION, FrameType, ProtocolError, Record, data_record, record
from txstore.replication.receiver import ReceiverSession, UpdateRefused
from txstore.replication.sender import CHUNK, BytePacer, Connector
from txstore.storage.db import DatabaseAlreadyExists, DatabaseCorrupt
from txstore.storage.db_server import DatabaseAccess
from txstore.storage.db.files import database_path, quarantine_database

ROWS_PER_FRAME = 500
FILE_THRESHOLD = 50_000
_HASH = re.compile(r"^[0-9a-f]{32}$")
IN_SYNC, BEHIND, MISSING = "in_sync", "behind", "missing"


def _wire_info(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "hash", "max_row", "put_timestamp", "delete_timestamp", "metadata")
    return {key: info[key] for key in keys}


def _check_info(info: Any) -> dict[str, Any]:
    types = {"id": str, "hash": str, "max_row": int, "put_timestamp": str, "delete_timestamp": str, "metadata": dict}
    if not isinstance(info, dict):
        raise ProtocolError("DB_SYNC info is not an object")
    for key, kind in types.items():
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise ProtocolError(f"DB_SYNC info: {key!r} missing or not a {kind.__name__}")
    return info


def _merge_metadata(broker: Any, metadata: dict) -> None:
    items = {}
    for name, item in metadata.items():
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)):
            raise ValueError(f"bad metadata item {name!r}")
        items[name] = (item[0], item[1])
    if items:
        broker.update_metadata(items)


def _merge_copy(broker: Any, copy: Any, peer_id: str, peer_max_row: int) -> int:
    """Merge every row of ``copy`` (a received whole database) into ``broker``; closes ``copy``."""
    merged, point = 0, -1
    try:
        while rows := copy.get_items_since(point, ROWS_PER_FRAME):
            merged += broker.merge_items(rows)
            point = rows[-1].row_id
        info = copy.replication_info()
    finally:
        copy.close()
    broker.merge_status(info["put_timestamp"], info["delete_timestamp"])
    _merge_metadata(broker, info["metadata"])
    broker.set_sync(peer_id, peer_max_row)
    return merged


def remove_database(db_path: Path) -> None:
    """Remove a database's directory, then its suffix and partition directories if empty (blocks)."""
    shutil.rmtree(db_path.parent, ignore_errors=True)
    for directory in (db_path.parent.parent, db_path.parent.parent.parent):
        try:
            directory.rmdir()
        except OSError:
            break


@define
class DatabaseReceiver:
    """Serves ``container`` or ``account`` sessions for the replication listener."""

    log = Logger()

    kind: str
    access: DatabaseAccess

    async def serve(self, session: ReceiverSession, hello: Record) -> None:
        sync = await session.expect(FrameType.DB_SYNC)
        db_hash = sync["hash"]
        if not _HASH.match(db_hash):
            raise ProtocolError(f"not a database hash: {db_hash!r}")
        info = _check_info(sync["info"])
        device = session.device
        device_path = await session.run(session.context.device_path, device)
        db_path = database_path(device_path, self.access.kind, session.partition, db_hash)
        tmp_dir = device_path / "tmp"
        broker = self.access.broker_at(device, db_path)
        state, point = await self._state(session, broker, db_path, info)
        session.send(record(FrameType.DB_STATE, state=state, sync_point=point))
        last_row = None

        async def rows(item: Record) -> None:
            nonlocal last_row
            try:
                session.applied += await session.run(broker.merge_items, item["rows"])
            except (TypeError, ValueError, KeyError) as error:
                raise UpdateRefused(422, f"bad rows: {error}") from None
            if isinstance(item.get("max_row"), int):
                last_row = item["max_row"]

        async def whole_file(item: Record) -> None:
            await self._receive_file(session, item, broker, db_path, tmp_dir, info)
            session.applied += 1

        async def updates_done(item: Record) -> None:
            if last_row is not None:
                await session.run(broker.set_sync, info["id"], last_row)
            session.send(record(FrameType.END, applied=session.applied))

        handlers = {FrameType.DB_ROWS: rows, FrameType.DB_FILE: whole_file, FrameType.UPDATES_END: updates_done}
        await session.dispatch(handlers, "a database session")

    async def _state(self, session: ReceiverSession, broker: Any, db_path: Path, info: dict) -> tuple[str, int]:
        if not await session.run(db_path.exists):
            return MISSING, -1

        def merge_and_compare() -> tuple[str, int]:
            broker.merge_status(info["put_timestamp"], info["delete_timestamp"])
            _merge_metadata(broker, info["metadata"])
            mine = broker.replication_info()
            if mine["hash"] == info["hash"]:
                return IN_SYNC, info["max_row"]
            return BEHIND, broker.get_sync(info["id"])

        try:
            return await session.run(merge_and_compare)
        except DatabaseCorrupt as error:
            await self.access.cache.discard(db_path)
            device_path = db_path.parents[4]
            await session.run(quarantine_database, device_path, self.access.kind, db_path)
            self.log.error("quarantined the damaged database {db}: {reason}", db=str(db_path), reason=str(error))
            return MISSING, -1
        except ValueError as error:
            raise UpdateRefused(422, str(error)) from None

    async def _receive_file(
        self, session: ReceiverSession, item: Record, broker: Any, db_path: Path, tmp_dir: Path, info: dict,
    ) -> None:
        if item["hash"] != db_path.parent.name:
            raise ProtocolError("DB_FILE names another database")
        length = item["length"]
        temp = tmp_dir / f"replicated-{uuid.uuid4().hex}.db"
        md5 = hashlib.md5(usedforsecurity=False)
        fd = await session.run(_open_new, temp)
        try:

            def write(data: bytes) -> None:
                md5.update(data)
                _write_all(fd, data)

            received, end = await session.receive_body(length, FrameType.DB_FILE_END, write, "database file")
            if received != length or end["md5"] != md5.hexdigest():
                raise UpdateRefused(422, f"database file: {received} of {length} bytes, or md5 mismatch")
            await session.run(os.fsync, fd)
            await session.run(os.close, fd)
            fd = None
            broker_class = type(broker)
            try:
                await session.run(broker_class.adopt_copy, temp, db_path, info["id"], info["max_row"])
                await self.access.cache.discard(db_path)
            except DatabaseAlreadyExists:
                copy = broker_class(temp, tmp_dir=tmp_dir)
                await session.run(_merge_copy, broker, copy, info["id"], info["max_row"])
            except DatabaseCorrupt as error:
                raise UpdateRefused(422, str(error)) from None
        finally:
            if fd is not None:
                await session.run(os.close, fd)
            await session.run(_remove_files, temp)


def _read_hashed(fd: int, md5: Any, length: int, offset: int) -> bytes:
    """(blocking) ``length`` bytes at ``offset``, added to ``md5`` in the same thread call."""
    chunk = os.pread(fd, length, offset)
    md5.update(chunk)
    return chunk


def _open_new(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _remove_files(temp: Path) -> None:
    for path in (temp, Path(f"{temp}-wal"), Path(f"{temp}-shm")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@define
class DatabaseOutcome:
    ok: bool = False
    reason: str = ""
    state: str = ""
    rows_sent: int = 0
    file_bytes: int = 0


@define
class DatabaseSender:
    """Pushes one local database to one peer."""

    log = Logger()

    kind: str
    access: DatabaseAccess
    connector: Connector
    pacer: BytePacer | None = None

    async def sync(self, node: Any, device: str, partition: int, db_path: Path) -> DatabaseOutcome:
        outcome = DatabaseOutcome()
        channel = None
        try:
            channel = await self.connector.open(node.replication_ip, node.replication_port)
            await self._session(channel, outcome, node, device, partition, db_path)
            outcome.ok = True
        except SessionFailed as failure:
            outcome.reason = f"{failure.code} {failure.reason}" + (" (from the peer)" if failure.from_peer else "")
            if channel is not None:
                channel.abort(failure.code, failure.reason)  # a no-op unless raised here without closing
        except Exception as error:
            outcome.reason = f"{type(error).__name__}: {error}"
            if channel is not None:
                channel.abort(500, "sender failed")
        if not outcome.ok:
            self.log.warn("replication of {kind} database {db} to {peer} failed: {reason}", kind=self.kind,
                          db=db_path.name, peer=f"{node.replication_ip}:{node.replication_port}/{node.device_name}",
                          reason=outcome.reason)
        return outcome

    async def _session(
        self, channel: FramedChannel, outcome: DatabaseOutcome, node: Any, device: str, partition: int, db_path: Path,
    ) -> None:
        run = self.access.context.runner.run
        broker = self.access.broker_at(device, db_path)
        info = await run(device, broker.replication_info)
        channel.send(record(FrameType.HELLO, version=VERSION, kind=self.kind, device=node.device_name,
                            partition=partition, policy=0, frag_index=None))
        await channel.expect(FrameType.READY)
        channel.send(record(FrameType.DB_SYNC, hash=db_path.parent.name, info=_wire_info(info)))
        answer = await channel.expect(FrameType.DB_STATE)
        outcome.state = answer["state"]
        point = answer.get("sync_point", -1)
        if not isinstance(point, int):
            raise SessionFailed(400, "bad sync point from the peer")
        if outcome.state == IN_SYNC:
            channel.end()
            return
        if outcome.state == MISSING or info["max_row"] - point > FILE_THRESHOLD:
            await self._send_file(channel, outcome, broker, device, db_path)
        else:
            while True:
                rows = await run(device, broker.get_items_since, point, ROWS_PER_FRAME)
                if not rows:
                    break
                point = rows[-1].row_id
                await channel.drained()
                channel.send(record(FrameType.DB_ROWS, rows=[r.to_dict() for r in rows], max_row=point))
                outcome.rows_sent += len(rows)
        channel.send(record(FrameType.UPDATES_END))
        await channel.expect(FrameType.END)
        channel.end()

    async def _send_file(
        self, channel: FramedChannel, outcome: DatabaseOutcome, broker: Any, device: str, db_path: Path,
    ) -> None:
        run = self.access.context.runner.run
        snapshot = db_path.parents[4] / "tmp" / f"snapshot-{uuid.uuid4().hex}.db"
        try:
            await run(device, lambda: snapshot.parent.mkdir(parents=True, exist_ok=True))
            await run(device, broker.backup_to, snapshot)
            length = await run(device, lambda: snapshot.stat().st_size)
            fd = await run(device, os.open, snapshot, os.O_RDONLY | os.O_CLOEXEC)
            try:
                channel.send(record(FrameType.DB_FILE, hash=db_path.parent.name, length=length))
                md5 = hashlib.md5(usedforsecurity=False)
                offset = 0
                while offset < length:
                    chunk = await run(device, _read_hashed, fd, md5, min(CHUNK, length - offset), offset)
                    if not chunk:
                        raise SessionFailed(500, "the snapshot ended early")
                    await channel.drained()
                    channel.send(data_record(chunk))
                    offset += len(chunk)
                    if self.pacer is not None:
                        await self.pacer.consume(len(chunk))
                outcome.file_bytes = length
                channel.send(record(FrameType.DB_FILE_END, md5=md5.hexdigest()))
            finally:
                await run(device, os.close, fd)
        finally:
            await run(device, _remove_files, snapshot)
