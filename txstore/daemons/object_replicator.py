# -*- test-case-name: txstore.test.unit.test_object_replicator -*-
"""
The object replicator: each pass, every partition of every local device is compared with the
other places the object ring names for it, and what differs is pushed over the replication
protocol (`txstore.replication.sender`).

- A partition this device is a primary for: local ``hashes.json`` (re-hashing only what
  changed) against each other primary's; only differing suffixes go through a missing check.
  The other primaries are asked at the start of the pass for a digest of their hashes of
  every partition they share with a local device, in one exchange per peer (``SURVEY``); a
  session is opened only for a partition whose digest differs from the local one. A peer
  whose survey failed (down, or a node that predates ``SURVEY``) gets a session per
  partition, which asks for the hashes itself, as before.
- A partition this device is *not* a primary for (a handoff, or a partition the ring moved
  away after a rebalance): every object is offered to every primary; when every primary ended
  its session cleanly, the objects confirmed by all (and unchanged since) are removed here, then
  the partition directory once empty.

Erasure-coded policies are not replicated here: their nodes hold different fragment archives,
so pushing one node's files to another would spread the wrong archive (the reconstructor,
`txstore.daemons.reconstructor`, keeps them). Their partitions are not even listed.

A peer that fails is logged and tried again next pass; it never stops the pass. `stop` (at
node stop) aborts the sessions under way (a peer stopping at the same time may never answer;
they would wait for their timeout) and starts no further partition, so a stopping node does
not first walk every remaining partition.
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
from txstore.storage.http_support import StorageContext
from txstore.storage.partitions import (
    get_hashes,
    hashes_digest,
    list_objects,
    list_partitions,
    list_suffixes,
    remove_if_unchanged,
    remove_partition_if_empty,
)


class ObjectReplicator:
    log = Logger()

    def __init__(
        self, context: StorageContext, rings: RingSet, is_local: Callable[[Device], bool], sender: ObjectSender,
        *, concurrency: int = 1, reclaim_age: float = 7 * 24 * 3600.0,
    ) -> None:
        self.context = context
        self.rings = rings
        self.is_local = is_local
        self.sender = sender
        self.concurrency = concurrency
        self.reclaim_age = reclaim_age
        self._stopping = False
        self._surveyed: dict[tuple, str] = {}

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
        self._surveyed = await self._survey_peers(jobs, stats)
        await run_jobs(jobs, self.concurrency, lambda *job: self._guarded(*job, stats), stats,
                       lambda: self._stopping)
        stats["partitions"] = len(jobs)
        if self._stopping:
            stats["stopped"] = True
        return dict(stats)

    async def _jobs(self) -> list[tuple[str, int, int]]:
        runner = self.context.runner
        jobs = []
        for device, path in await runner.run("replicator", self.context.mounted_devices):
            for policy in self.context.policies:
                if policy.index in self.context.diskfiles.ec_policies:
                    continue  # fragment archives: the reconstructor's
                for partition in await runner.run(device, list_partitions, path, policy.index):
                    jobs.append((device, policy.index, partition))
        return jobs

    async def _survey_peers(self, jobs: list[tuple[str, int, int]], stats: Counter) -> dict[tuple, str]:
        """
        ``(peer, device, policy, partition) → the peer's digest of its suffix hashes`` for
        every partition a local device is a primary for, one ``SURVEY`` per peer device, device
        and policy (32 bytes per partition and peer, whatever the partition holds). Missing keys
        mean "not surveyed": that partition gets its own session. An answer is used once, later
        in the same pass: a peer that loses data after answering is refilled by the next pass.
        """
        survey = getattr(self.sender, "survey", None)
        if survey is None:
            return {}
        wanted: dict[tuple, list[int]] = {}
        peers: dict[tuple, Any] = {}
        for device, policy_index, partition in jobs:
            try:
                placement = self._placement(device, policy_index, partition)
            except Exception:
                placement = None  # not surveyed; the partition's own job reports what is wrong
            if placement is None or not placement[1]:
                continue
            nodes, mine = placement
            for peer in nodes:
                if peer not in mine:
                    peers[_peer_key(peer)] = peer
                    wanted.setdefault((_peer_key(peer), device, policy_index), []).append(partition)
        surveyed: dict[tuple, str] = {}
        for (key, device, policy_index), partitions in wanted.items():
            if self._stopping:
                break
            found = await survey(peers[key], device, policy_index, partitions)
            stats["surveys"] += 1
            if found is None:
                stats["survey_failures"] += 1
                continue
            for partition in partitions:
                if partition in found:
                    surveyed[(key, device, policy_index, partition)] = found[partition]
        return surveyed

    async def _guarded(self, device: str, policy_index: int, partition: int, stats: Counter) -> None:
        try:
            await self._replicate(device, policy_index, partition, stats)
        except PoolsStopped:
            return
        except Exception:
            stats["errors"] += 1
            self.log.failure("replicating {device}/{partition} (policy {policy})", device=device,
                             partition=partition, policy=policy_index)

    def _placement(self, device: str, policy_index: int, partition: int) -> tuple[list, list] | None:
        """The partition's primaries, and those that are this local device; None beyond the ring."""
        ring = self.rings.object_ring(policy_index)
        if partition >= ring.partition_count:
            return None
        nodes = ring.get_part_nodes(partition)
        return nodes, [n for n in nodes if n.device_name == device and self.is_local(n.device)]

    async def _replicate(self, device: str, policy_index: int, partition: int, stats: Counter) -> None:
        placement = self._placement(device, policy_index, partition)
        if placement is None:
            self.log.warn("{device} holds partition {partition}, beyond the ring's {count}", device=device,
                          partition=partition, count=self.rings.object_ring(policy_index).partition_count)
            return
        nodes, mine = placement
        partition_dir = self.context.diskfiles.partition_path(device, policy_index, partition)
        run = self.context.runner.run
        if mine:
            hashes, digest = await run(device, _hashes_and_digest, partition_dir, self.reclaim_age, self.context.clock())
            if not hashes:
                await run(device, remove_partition_if_empty, partition_dir)
                return
            for peer in nodes:
                if peer in mine:
                    continue
                remote = self._surveyed.pop((_peer_key(peer), device, policy_index, partition), None)
                if remote == digest:
                    stats["in_sync"] += 1  # the same suffix hashes on both: no session
                    continue
                outcome = await self.sender.sync(peer, device, partition, policy_index, local_hashes=hashes)
                self._count(stats, outcome)
            return
        stats["handoff_partitions"] += 1
        objects = await run(device, lambda: list(list_objects(partition_dir, list_suffixes(partition_dir))))
        if not objects:
            await run(device, remove_partition_if_empty, partition_dir)
            return
        confirmed_by_all = None
        for peer in nodes:
            outcome = await self.sender.sync(peer, device, partition, policy_index, objects=objects)
            self._count(stats, outcome)
            if not outcome.ok:
                return  # keep everything for the next pass
            confirmed = {(f.name_hash, f.names) for f in outcome.confirmed}
            confirmed_by_all = confirmed if confirmed_by_all is None else confirmed_by_all & confirmed
        removed = 0
        for files in objects:
            if (files.name_hash, files.names) in (confirmed_by_all or set()):
                removed += await run(device, remove_if_unchanged, files)
        stats["handoff_objects_removed"] += removed
        if await run(device, remove_partition_if_empty, partition_dir):
            stats["handoff_partitions_removed"] += 1
            self.log.info("{device}/{partition} (policy {policy}) is home: handed off and removed",
                          device=device, partition=partition, policy=policy_index)

    @staticmethod
    def _count(stats: Counter, outcome: Any) -> None:
        stats["sessions"] += 1
        stats["failures"] += not outcome.ok
        stats["suffixes_synced"] += outcome.suffixes
        stats["objects_offered"] += outcome.offered
        stats["updates_sent"] += outcome.updates
        stats["bytes_sent"] += outcome.bytes_sent


def _hashes_and_digest(partition_dir, reclaim_age: float, now: float) -> tuple[dict[str, str], str]:
    """(blocking) A partition's suffix hashes and their digest, in one thread call."""
    hashes = get_hashes(partition_dir, reclaim_age, now)
    return hashes, hashes_digest(hashes)


def _peer_key(node: Any) -> tuple:
    return (node.replication_ip, node.replication_port, node.device_name)
