# -*- test-case-name: txstore.test.unit.test_auditor -*-
"""
The object auditor: finds bit rot before a client does.

Each pass walks every object directory of the node's devices and checks the file that counts
(the newest data): its metadata footer must check out, its length must match, and (unless in
zero-byte mode) the md5 of its body must equal its ETag. An object that fails is quarantined
(`DiskFile.quarantine`): its directory leaves service, its suffix is invalidated, and the
replicator copies a good replica back.

An erasure-coded object's directory may hold several fragment archives of its durable version
(a handoff does): each is checked in turn against its own ETag (the archive's md5), not only
the one `DiskFile.read_metadata` would serve, and one rotten archive quarantines the directory;
the reconstructor then rebuilds what this node should hold from the other nodes' archives.
Archives still waiting for their durable mark are never served, and not audited.

The walk is paced (files per second, bytes per second) so auditing never starves client
requests of the disk. The disk work runs in the device's thread pool in small steps (a batch
of directory names, one object's metadata, one chunk of a body), and the pacing waits happen
between those steps on the reactor, as cancellable delays: a waiting auditor holds no pool
thread, and `ObjectAuditor.stop` (called when the node stops) ends a pass at once instead of
leaving a sleeping thread for the pool's shutdown to wait for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from txstore.common.io import PoolsStopped
from txstore.daemons.pacing import Pacer, PassStopped
from txstore.storage.diskfile import DiskFile, DiskFileCorrupt, DiskFileError, DiskFileNotFound, DiskFileReader
from txstore.storage.config import DEFAULT_DAEMONS, ObjectAuditorSettings
from txstore.storage.context import StorageContext

log = Logger()

CHUNK = 1024 * 1024
BATCH = 256  # object directory names listed per thread call
_POLICY_DIR = re.compile(r"^objects(?:-(\d+))?$")
_HASH = re.compile(r"^[0-9a-f]{32}$")


def object_dirs(device_path: Path) -> Iterator[tuple[int, int, str]]:
    """(policy index, partition, hash) of every object directory on a device (blocking)."""
    for policy_entry in os.scandir(device_path):
        match = _POLICY_DIR.match(policy_entry.name)
        if not match or not policy_entry.is_dir():
            continue
        policy = int(match.group(1) or 0)
        for part in os.scandir(policy_entry.path):
            if not part.name.isdigit() or not part.is_dir():
                continue
            for suffix in os.scandir(part.path):
                if not suffix.is_dir():
                    continue
                for hashdir in os.scandir(suffix.path):
                    if _HASH.match(hashdir.name):
                        yield policy, int(part.name), hashdir.name


def _next_batch(walk: Iterator[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    return list(islice(walk, BATCH))


class ObjectCheck:
    """
    One object's audit as blocking steps, each for one thread call: `start` reads the metadata
    (and the first chunk), `step` the next chunk. Each returns the outcome ('ok', 'gone' for
    deleted meanwhile or a tombstone, 'quarantined'), or None while body remains to read;
    `last_read` is the size of the chunk just read. The reader is closed once there is an
    outcome or an error; `close` closes it when the caller gives up between steps. An EC
    directory's archives are checked one after the other (``_archives``: those still to check).
    """

    def __init__(self, diskfile: DiskFile, zero_byte: bool) -> None:
        self.diskfile = diskfile
        self.zero_byte = zero_byte
        self.reader: DiskFileReader | None = None
        self.offset = 0
        self.last_read = 0
        self._archives: list[int] = []

    def start(self) -> str | None:
        self.last_read = 0
        try:
            state = self.diskfile.read_metadata()
            if not state.exists:
                return "gone"
            self._archives = [i for i in state.fragments if i != state.frag_index]
            if self.zero_byte:
                for index in self._archives:
                    self.diskfile.read_metadata(index)  # each archive's footer and length check out
                return "ok"
            self.reader = self._open(state)
        except DiskFileNotFound:
            return "gone"
        except DiskFileCorrupt as err:
            return self._quarantine(err)
        return self.step()

    def _open(self, state) -> DiskFileReader:
        reader = self.diskfile.open_reader(state)
        reader.drop_cache = True  # read once a pass, never again soon: the cache is the clients' objects'
        return reader

    def step(self) -> str | None:
        reader = self.reader
        assert reader is not None
        self.last_read = 0
        try:
            if self.offset < reader.content_length:
                data = reader.read(self.offset, CHUNK)
                self.last_read = len(data)
                if not data:
                    raise DiskFileCorrupt(self.diskfile.hash_dir, "body shorter than its Content-Length")
                self.offset += len(data)
                if self.offset < reader.content_length:
                    return None
            if reader.etag_verified() is False:
                raise DiskFileCorrupt(reader.state.data_path or self.diskfile.hash_dir,
                                      "md5 of the body differs from its ETag")
            self.close()
            while self._archives:
                state = self.diskfile.read_metadata(self._archives.pop(0))
                if state.exists:  # (an archive removed meanwhile is not this pass's concern)
                    self.offset = 0
                    self.reader = self._open(state)
                    return None
            return "ok"
        except DiskFileNotFound:
            self.close()
            return "ok"  # the next archive went meanwhile (a newer version replaced this one)
        except DiskFileCorrupt as err:
            self.close()
            return self._quarantine(err)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.close()

    def _quarantine(self, err: DiskFileCorrupt) -> str:
        where = self.diskfile.quarantine()
        log.error("quarantined {hash} to {where}: {reason}", hash=self.diskfile.name_hash, where=str(where),
                  reason=err)
        return "quarantined"


class ObjectAuditor:
    def __init__(self, context: StorageContext, reactor: Any, *,
                 settings: ObjectAuditorSettings = DEFAULT_DAEMONS.object_auditor) -> None:
        self._context = context
        self._reactor = reactor
        self._zero_byte = settings.zero_byte_only
        self._files_per_second = settings.files_per_second
        self._bytes_per_second = settings.bytes_per_second
        self._pacer: Pacer | None = None

    def stop(self) -> None:
        """End the pass under way soon: its pacing wait is cancelled, no further step starts."""
        if self._pacer is not None:
            self._pacer.stop()

    async def run_pass(self) -> dict[str, Any]:
        totals: dict[str, Any] = {"checked": 0, "quarantined": 0, "errors": 0}
        context = self._context
        pacer = self._pacer = Pacer(self._reactor, self._files_per_second, self._bytes_per_second)
        try:
            for device, device_path in await context.runner.run("auditor", context.mounted_devices):
                await self._audit_device(device, device_path, pacer, totals)
        except (PassStopped, PoolsStopped):
            totals["stopped"] = True
        finally:
            if self._pacer is pacer:
                self._pacer = None
        return totals

    async def _audit_device(self, device: str, device_path: Path, pacer: Pacer, totals: dict[str, Any]) -> None:
        runner = self._context.runner
        walk = object_dirs(device_path)
        while True:
            if pacer.stopped:
                raise PassStopped()
            batch = await runner.run(device, _next_batch, walk)
            if not batch:
                return
            for policy, partition, name_hash in batch:
                if pacer.stopped:
                    raise PassStopped()
                diskfile = DiskFile(
                    manager=self._context.diskfiles, device=device, device_path=device_path, partition=partition,
                    policy_index=policy, account="?", container="?", obj="?", name_hash=name_hash,
                    ec=policy in self._context.diskfiles.ec_policies,
                )
                check = ObjectCheck(diskfile, self._zero_byte)
                try:
                    outcome = await runner.run(device, check.start)
                    await pacer.bytes_read(check.last_read)
                    while outcome is None:
                        outcome = await runner.run(device, check.step)
                        await pacer.bytes_read(check.last_read)
                except (DiskFileError, OSError) as err:
                    log.warn("auditing {hash} on {device} failed: {error}", hash=name_hash, device=device, error=err)
                    totals["errors"] += 1
                    continue
                finally:
                    if check.reader is not None:
                        # Stopped between steps, so no thread is using it; closing a file
                        # opened for reading does not wait for the disk.
                        check.close()
                totals["checked"] += outcome != "gone"
                totals["quarantined"] += outcome == "quarantined"
                await pacer.file_done()
