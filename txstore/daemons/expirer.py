# -*- test-case-name: txstore.test.unit.test_expirer -*-
"""
The object expirer: deletes objects whose ``X-Delete-At`` has passed, on every replica.

Each node works from its own expiry queue (`txstore.storage.expiring`), which the storage
layer fills whenever it installs a ``.data`` or ``.meta`` carrying ``X-Delete-At``: client
writes and replicated files alike. No central queue, no cross-node traffic: each replica
expires itself. For every entry that is due, the object is checked under its own rules:

- it exists and its ``X-Delete-At`` is the entry's: a tombstone is written *at the
  X-Delete-At time*, so every replica writes the same tombstone on its own and replication
  has nothing to reconcile; then a container update (DELETE at that timestamp) is saved as an
  async pending, and the object updater removes the row from the listing;
- it is already that tombstone (a crash after the delete, or the tombstone arrived by
  replication): the container update is saved again (harmless; rows are newest-wins);
- anything else (gone, overwritten, its X-Delete-At changed or removed by a POST, newer data
  from a skewed clock): the entry is stale and only removed.

Clients never see an expired object meanwhile: the object server answers 404 as soon as
``X-Delete-At`` has passed. Work is paced by ``objects_per_second`` (sleeps in the device's
thread, never on the reactor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.logger import Logger

from txstore.common.timestamps import Timestamp
from txstore.daemons.pacing import Pacer, PassStopped
from txstore.storage.diskfile import DiskFileConflict, DiskFileCorrupt, DiskFileManager
from txstore.storage.expiring import delete_at_of
from txstore.storage.config import DEFAULT_DAEMONS, ExpirerSettings
from txstore.storage.context import StorageContext

log = Logger()

OUTCOMES = ("expired", "stale", "errors")


def expire_entry(diskfiles: DiskFileManager, device: str, path: Path) -> str:
    """Handle one due entry: 'expired', 'stale' or 'errors' (blocking; the caller paces)."""
    try:
        entry = diskfiles.read_expiring(path)
    except FileNotFoundError:
        return "stale"  # removed meanwhile
    except DiskFileCorrupt as err:
        log.warn("removing an unreadable expiry entry {path}: {error}", path=str(path), error=err)
        diskfiles.remove_expiring(path)
        return "stale"
    diskfile = diskfiles.get_diskfile(
        device, entry.partition, entry.account, entry.container, entry.obj, entry.policy_index
    )
    if diskfile.name_hash != entry.name_hash:
        log.warn("expiry entry {path} names another object; removed", path=str(path))
        diskfiles.remove_expiring(path)
        return "stale"
    tombstone = Timestamp.from_seconds(entry.delete_at)
    state = diskfile.read_metadata()  # DiskFileCorrupt: kept for after the auditor's quarantine
    if state.exists and delete_at_of(state.metadata) == entry.delete_at:
        try:
            diskfile.delete(tombstone)
        except DiskFileConflict:
            # Data newer than its own expiry time (a skewed clock): leave it to the clients.
            diskfiles.remove_expiring(path)
            return "stale"
    elif state.tombstone_timestamp != tombstone:
        diskfiles.remove_expiring(path)
        return "stale"
    diskfiles.write_async_pending(
        device, entry.policy_index, "DELETE", entry.account, entry.container, entry.obj,
        {"X-Trans-Id": f"object-expirer-{entry.delete_at}"}, tombstone,
    )
    diskfiles.remove_expiring(path)
    return "expired"


class ObjectExpirer:
    def __init__(self, context: StorageContext, reactor: Any, *,
                 settings: ExpirerSettings = DEFAULT_DAEMONS.object_expirer) -> None:
        self._context = context
        self._reactor = reactor
        self._objects_per_second = settings.objects_per_second
        self._pacer: Pacer | None = None

    def stop(self) -> None:
        """End the pass under way at its next wait (the node is stopping)."""
        if self._pacer is not None:
            self._pacer.stop()

    async def run_pass(self) -> dict[str, Any]:
        figures = {"due": 0, **dict.fromkeys(OUTCOMES, 0)}
        context = self._context
        pacer = self._pacer = Pacer(self._reactor, self._objects_per_second, 0)
        try:
            for device, _path in await context.runner.run("expirer", context.mounted_devices):
                due = await context.runner.run(device, context.diskfiles.list_expiring, device, context.clock())
                figures["due"] += len(due)
                for path in due:
                    try:
                        outcome = await context.runner.run(device, expire_entry, context.diskfiles, device, path)
                    except Exception as err:
                        log.warn("expiring {path} failed: {error}", path=str(path), error=err)
                        outcome = "errors"
                    figures[outcome] += 1
                    await pacer.file_done()
        except PassStopped:
            figures["stopped"] = True
        finally:
            self._pacer = None
        if figures["expired"]:
            log.info("expired {count} objects", count=figures["expired"])
        return figures
