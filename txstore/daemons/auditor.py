# -*- test-case-name: txstore.test.test_auditor -*-
"""
The object auditor: finds bit rot before a client does.

Each pass walks every object directory of the node's devices and checks the file that counts
(the newest data): its metadata footer must check out, its length must match, and (unless in
zero-byte mode) the md5 of its body must equal its ETag. An object that fails is quarantined
(`DiskFile.quarantine`): its directory leaves service, its suffix is invalidated, and the
replicator copies a good replica back. The walk is paced (files per second, bytes per second)
so auditing never starves client requests of the disk; the pacing sleeps happen in the
device's thread, never on the reactor.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from txstore.storage.diskfile import DiskFile, DiskFileCorrupt, DiskFileError, DiskFileNotFound
from txstore.storage.http_support import StorageContext

log = Logger()

CHUNK = 1024 * 1024
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


class Pacer:
    """Sleeps (in the calling thread) so that files and bytes stay under their rates."""

    def __init__(self, files_per_second: float, bytes_per_second: float, clock=time.monotonic, sleep=time.sleep):
        self._files_rate = files_per_second
        self._bytes_rate = bytes_per_second
        self._clock = clock
        self._sleep = sleep
        self._started = clock()
        self._files = 0
        self._bytes = 0

    def file_done(self) -> None:
        self._files += 1
        self._wait(self._files / self._files_rate if self._files_rate else 0)

    def bytes_read(self, count: int) -> None:
        self._bytes += count
        self._wait(self._bytes / self._bytes_rate if self._bytes_rate else 0)

    def _wait(self, due: float) -> None:
        ahead = due - (self._clock() - self._started)
        if ahead > 0:
            self._sleep(ahead)


def audit_object(diskfile: DiskFile, zero_byte: bool, pacer: Pacer) -> str:
    """'ok', 'gone' (deleted meanwhile or a tombstone) or 'quarantined' (blocking)."""
    try:
        state = diskfile.read_metadata()
        if not state.exists:
            return "gone"
        if zero_byte:
            return "ok"
        reader = diskfile.open_reader(state)
        try:
            offset = 0
            while offset < reader.content_length:
                data = reader.read(offset, CHUNK)
                if not data:
                    raise DiskFileCorrupt(diskfile.hash_dir, "body shorter than its Content-Length")
                offset += len(data)
                pacer.bytes_read(len(data))
            if reader.etag_verified() is False:
                raise DiskFileCorrupt(diskfile.hash_dir, "md5 of the body differs from its ETag")
        finally:
            reader.close()
        return "ok"
    except DiskFileNotFound:
        return "gone"
    except DiskFileCorrupt as err:
        where = diskfile.quarantine()
        log.error("quarantined {hash} to {where}: {reason}", hash=diskfile.name_hash, where=str(where), reason=err)
        return "quarantined"


def audit_device(context: StorageContext, device: str, device_path: Path, zero_byte: bool,
                 files_per_second: float, bytes_per_second: float) -> dict[str, int]:
    """A whole device, in one pool thread (blocking; paced)."""
    figures = {"checked": 0, "quarantined": 0, "errors": 0}
    pacer = Pacer(files_per_second, bytes_per_second)
    for policy, partition, name_hash in object_dirs(device_path):
        diskfile = DiskFile(
            manager=context.diskfiles, device=device, device_path=device_path, partition=partition,
            policy_index=policy, account="?", container="?", obj="?", name_hash=name_hash,
        )
        try:
            outcome = audit_object(diskfile, zero_byte, pacer)
        except (DiskFileError, OSError) as err:
            log.warn("auditing {hash} on {device} failed: {error}", hash=name_hash, device=device, error=err)
            figures["errors"] += 1
            continue
        figures["checked"] += outcome != "gone"
        figures["quarantined"] += outcome == "quarantined"
        pacer.file_done()
    return figures


class ObjectAuditor:
    def __init__(self, context: StorageContext, *, zero_byte: bool = False, files_per_second: float = 20.0,
                 bytes_per_second: float = 10 * 1024 * 1024) -> None:
        self._context = context
        self._zero_byte = zero_byte
        self._files_per_second = files_per_second
        self._bytes_per_second = bytes_per_second

    async def run_pass(self) -> dict[str, Any]:
        totals = {"checked": 0, "quarantined": 0, "errors": 0}
        context = self._context
        for device, device_path in await context.runner.run("auditor", context.mounted_devices):
            figures = await context.runner.run(
                device, audit_device, context, device, device_path, self._zero_byte,
                self._files_per_second, self._bytes_per_second,
            )
            for key, value in figures.items():
                totals[key] += value
        return totals
