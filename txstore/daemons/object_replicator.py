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
from typing import Any

from twisted.logger import Logger

from txstore.daemons.object_partitions import Job, ObjectPartitionDaemon
from txstore.storage.partitions import (
    get_hashes,
    hashes_digest,
    list_objects,
    list_suffixes,
    remove_if_unchanged,
    remove_partition_if_empty,
)


class ObjectReplicator(ObjectPartitionDaemon):
    log = Logger()
    name = "replicator"
    doing = "replicating"

    _surveyed: dict[tuple, str]  # this pass's survey answers (`_survey_peers`), each used once

    def _keeps(self, policy: Any) -> bool:
        return policy.index not in self.context.diskfiles.ec_policies  # fragment archives: the reconstructor's

    async def _before_jobs(self, jobs: list[Job], stats: Counter) -> None:
        self._surveyed = await self._survey_peers(jobs, stats)

    async def _survey_peers(self, jobs: list[Job], stats: Counter) -> dict[tuple, str]:
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

    async def _partition(
        self, device: str, policy_index: int, partition: int, nodes: list, mine: list, stats: Counter,
    ) -> None:
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


def _hashes_and_digest(partition_dir, reclaim_age: float, now: float) -> tuple[dict[str, str], str]:
    """(blocking) A partition's suffix hashes and their digest, in one thread call."""
    hashes = get_hashes(partition_dir, reclaim_age, now)
    return hashes, hashes_digest(hashes)


def _peer_key(node: Any) -> tuple:
    return (node.replication_ip, node.replication_port, node.device_name)
