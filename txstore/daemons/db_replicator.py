# -*- test-case-name: txstore.test.unit.test_db_replication -*-
"""
The container and account replicators: each pass pushes every local database of their kind to
the other places the ring names for it (`txstore.replication.databases`).

Per database: old deleted rows and metadata tombstones are reclaimed first (older than
``reclaim_age``, by which time they reached every replica); a database deleted and empty for
longer than that is removed. A primary pushes to the other primaries; a handoff (this device is
not a primary: a primary was down when the database was created, or a rebalance moved it)
pushes to every primary and is removed once all of them took it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from txstore.common.io import PoolsStopped
from txstore.daemons.periodic import run_jobs
from txstore.common.timestamps import Timestamp
from txstore.replication.databases import DatabaseSender, remove_database
from txstore.ring.device import Device
from txstore.ring.ring import Ring
from txstore.storage.db import DatabaseCorrupt
from txstore.storage.config import DEFAULT_DAEMONS, ReplicatorSettings
from txstore.storage.context import StorageContext
from txstore.storage.db.files import database_partition, find_databases


class DatabaseReplicator:
    log = Logger()

    def __init__(
        self, context: StorageContext, ring: Ring, is_local: Callable[[Device], bool], sender: DatabaseSender,
        *, settings: ReplicatorSettings = DEFAULT_DAEMONS.container_replicator,
    ) -> None:
        self.context = context
        self.ring = ring
        self.is_local = is_local
        self.sender = sender
        self.concurrency = settings.concurrency
        self.reclaim_age = settings.reclaim_age

    async def run_pass(self) -> dict[str, Any]:
        stats: Counter[str] = Counter()
        runner = self.context.runner
        jobs = []
        for device, path in await runner.run("replicator", self.context.mounted_devices):
            for db_path in await runner.run(device, find_databases, path, self.sender.access.kind):
                jobs.append((device, database_partition(db_path), db_path))
        await run_jobs(jobs, self.concurrency, lambda *job: self._guarded(*job, stats), stats)
        stats["databases"] = len(jobs)
        return dict(stats)

    async def _guarded(self, device: str, partition: int, db_path: Path, stats: Counter) -> None:
        try:
            await self._replicate(device, partition, db_path, stats)
        except PoolsStopped:
            return
        except DatabaseCorrupt as error:
            stats["errors"] += 1
            self.log.error("{db} is damaged ({reason}); the auditor or a request quarantines it",
                           db=str(db_path), reason=str(error))
        except Exception:
            stats["errors"] += 1
            self.log.failure("replicating {db}", db=str(db_path))

    async def _replicate(self, device: str, partition: int, db_path: Path, stats: Counter) -> None:
        run = self.context.runner.run
        broker = self.sender.access.broker_at(device, db_path)
        cutoff = Timestamp.from_seconds(max(0.0, self.context.clock() - self.reclaim_age))
        await run(device, broker.reclaim, cutoff)
        info = await run(device, broker.replication_info)
        deleted = info["delete_timestamp"] > info["put_timestamp"]
        if deleted and await run(device, broker.is_empty) and info["status_changed_at"] < cutoff.internal:
            await self._remove(device, db_path)
            stats["reclaimed_databases"] += 1
            return
        if partition >= self.ring.partition_count:
            return
        nodes = self.ring.get_part_nodes(partition)
        mine = [n for n in nodes if n.device_name == device and self.is_local(n.device)]
        peers = [n for n in nodes if n not in mine]
        all_ok = True
        for peer in peers:
            outcome = await self.sender.sync(peer, device, partition, db_path)
            stats["sessions"] += 1
            stats["failures"] += not outcome.ok
            stats["rows_sent"] += outcome.rows_sent
            stats["files_sent"] += bool(outcome.file_bytes)
            stats["in_sync"] += outcome.state == "in_sync"
            all_ok = all_ok and outcome.ok
        if not mine:
            stats["handoffs"] += 1
            if all_ok:
                await self._remove(device, db_path)
                stats["handoffs_removed"] += 1
                self.log.info("{db} is home: handed off and removed", db=str(db_path))

    async def _remove(self, device: str, db_path: Path) -> None:
        await self.sender.access.cache.discard(db_path)
        await self.context.runner.run(device, remove_database, db_path)
