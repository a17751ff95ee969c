# -*- test-case-name: txstore.test.unit.test_object_replicator,txstore.test.unit.test_reconstructor -*-
"""
What the object replicator and the object reconstructor share: a pass over every partition of
the policies each keeps on every local device, each partition guarded (an error is counted and
logged, it never stops the pass), `stop` (start no further partition and abort the sessions under
way), and the figures a replication session adds to the pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from txstore.common.io import PoolsStopped
from txstore.daemons.periodic import run_jobs
from txstore.replication.sender import ObjectSender
from txstore.ring.device import Device
from txstore.ring.ringset import RingSet
from txstore.storage.config import DEFAULT_DAEMONS, ReplicatorSettings
from txstore.storage.context import StorageContext
from txstore.storage.partitions import list_partitions

Job = tuple[str, int, int]  # (device, policy index, partition)


class ObjectPartitionDaemon:
    """A subclass names itself (``name``, ``doing``), the policies it keeps and its partition's work."""

    log = Logger()
    name = ""  # also the thread pool that lists the devices
    doing = ""  # the partition's work, in its failure log: "replicating"

    def __init__(
        self, context: StorageContext, rings: RingSet, is_local: Callable[[Device], bool], sender: ObjectSender,
        *, settings: ReplicatorSettings = DEFAULT_DAEMONS.object_replicator,
    ) -> None:
        self.context = context
        self.rings = rings
        self.is_local = is_local
        self.sender = sender
        self.concurrency = settings.concurrency
        self.reclaim_age = settings.reclaim_age
        self._stopping = False

    def stop(self) -> None:
        """Start no further partition in the pass under way, and end the sessions under way."""
        self._stopping = True
        abort_all = getattr(self.sender, "abort_all", None)
        if abort_all is not None:
            abort_all("the node is stopping")

    async def run_pass(self) -> dict[str, Any]:
        self._stopping = False
        stats: Counter[str] = Counter()
        jobs = await self._jobs()
        await self._before_jobs(jobs, stats)
        await run_jobs(jobs, self.concurrency, lambda *job: self._guarded(*job, stats), stats,
                       lambda: self._stopping)
        stats["partitions"] = len(jobs)
        if self._stopping:
            stats["stopped"] = True
        return dict(stats)

    def _keeps(self, policy: Any) -> bool:
        """Whether this daemon keeps the partitions of ``policy``."""
        raise NotImplementedError

    async def _before_jobs(self, jobs: list[Job], stats: Counter) -> None:
        """What a pass does once it knows its partitions, before the first one."""

    async def _partition(
        self, device: str, policy_index: int, partition: int, nodes: list, mine: list, stats: Counter,
    ) -> None:
        """One partition's work: ``nodes`` its primaries, ``mine`` those that are this local device."""
        raise NotImplementedError

    async def _jobs(self) -> list[Job]:
        runner = self.context.runner
        jobs = []
        for device, path in await runner.run(self.name, self.context.mounted_devices):
            for policy in self.context.policies:
                if not self._keeps(policy):
                    continue
                for partition in await runner.run(device, list_partitions, path, policy.index):
                    jobs.append((device, policy.index, partition))
        return jobs

    async def _guarded(self, device: str, policy_index: int, partition: int, stats: Counter) -> None:
        try:
            placement = self._placement(device, policy_index, partition)
            if placement is None:
                self.log.warn("{device} holds partition {partition}, beyond the ring's {count}", device=device,
                              partition=partition, count=self.rings.object_ring(policy_index).partition_count)
                return
            await self._partition(device, policy_index, partition, *placement, stats)
        except PoolsStopped:
            return
        except Exception:
            stats["errors"] += 1
            self.log.failure("{doing} {device}/{partition} (policy {policy})", doing=self.doing, device=device,
                             partition=partition, policy=policy_index)

    def _placement(self, device: str, policy_index: int, partition: int) -> tuple[list, list] | None:
        """The partition's primaries, and those that are this local device; None beyond the ring."""
        ring = self.rings.object_ring(policy_index)
        if partition >= ring.partition_count:
            return None
        nodes = ring.get_part_nodes(partition)
        return nodes, [n for n in nodes if n.device_name == device and self.is_local(n.device)]

    @staticmethod
    def _count(stats: Counter, outcome: Any) -> None:
        stats["sessions"] += 1
        stats["failures"] += not outcome.ok
        stats["suffixes_synced"] += outcome.suffixes
        stats["objects_offered"] += outcome.offered
        stats["updates_sent"] += outcome.updates
        stats["bytes_sent"] += outcome.bytes_sent
