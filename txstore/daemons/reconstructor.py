# -*- test-case-name: txstore.test.unit.test_reconstructor -*-
"""
The object reconstructor: keeps the fragment archives of erasure-coded policies where the
rings put them, as the object replicator does for replicas (which leaves EC policies alone).

Each pass, every partition of every EC policy on every local device:

- A partition this device is a primary for, at index *i* of the ring's node list (so it holds
  archive *i*): its per-index suffix hashes (`get_hashes(ec=True)`) are compared with those of
  its two neighbours on that list (*i - 1* and *i + 1*, as Swift does: every primary is checked
  by two others, and no pass talks to all of them), each seen as its own archive. For the
  objects of differing suffixes, a missing check over the replication protocol
  (``frag_index`` in HELLO names the neighbour's archive) finds what the neighbour lacks: an
  archive deleted, quarantined by the auditor, or never made durable. That archive is rebuilt
  from ``k`` archives of the same durable version (this node's and other primaries', never
  mixing timestamps: `txstore.replication.rebuild`) and sent durable, with the object's
  metadata and the neighbour's ``X-Object-Sysmeta-Ec-Frag-Index``. Tombstones and .meta files
  travel as in replication.
- A partition this device is not a primary for (a handoff, or one a rebalance moved): each
  archive is sent as it is to the primary of its index (*revert*), and removed here once that
  primary confirmed it; a tombstone goes to every primary and is removed once all have it.
  A primary that fails leaves its archives here for the next pass. A primary reverts the
  archives of other indexes it holds the same way (the suffix hashes say where they are).

A peer that fails is logged and tried again next pass; it never stops the pass. `stop` (at node
stop) aborts the sessions under way and starts no further partition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from txstore.daemons.object_partitions import ObjectPartitionDaemon
from txstore.ec.codec import ECCodec
from txstore.ec.service import ECService
from txstore.replication.rebuild import ArchiveRebuilder
from txstore.replication.sender import ObjectSender
from txstore.ring.device import Device
from txstore.ring.ringset import RingSet
from txstore.storage.config import DEFAULT_DAEMONS, ReplicatorSettings
from txstore.storage.context import StorageContext
from txstore.storage.partitions import (
    ObjectFiles,
    ec_hashes_for,
    ec_object_files,
    get_hashes,
    list_object_dirs,
    list_suffixes,
    remove_ec_if_unchanged,
    remove_partition_if_empty,
)


class ObjectReconstructor(ObjectPartitionDaemon):
    log = Logger()
    name = "reconstructor"
    doing = "reconstructing"

    def __init__(
        self, context: StorageContext, rings: RingSet, is_local: Callable[[Device], bool], sender: ObjectSender,
        client: Any, reactor: Any, *, settings: ReplicatorSettings = DEFAULT_DAEMONS.object_reconstructor,
        node_timeout: float = 60.0,
    ) -> None:
        super().__init__(context, rings, is_local, sender, settings=settings)
        self.client = client  # the other primaries' GETs of their archives
        self.reactor = reactor
        self.node_timeout = node_timeout
        self._ec = ECService(reactor)  # its codecs; rebuilds run in the node's own pools

    def _codec(self, policy_index: int) -> ECCodec:
        return self._ec.codec(self.context.policies.by_index(policy_index))

    def _keeps(self, policy: Any) -> bool:
        return policy.index in self.context.diskfiles.ec_policies and policy.ec is not None

    async def _partition(
        self, device: str, policy_index: int, partition: int, nodes: list, mine: list, stats: Counter,
    ) -> None:
        if mine:
            await self._sync_neighbours(device, policy_index, partition, nodes, mine[0], stats)
        else:
            stats["handoff_partitions"] += 1
            partition_dir = self.context.diskfiles.partition_path(device, policy_index, partition)
            suffixes = await self.context.runner.run(device, list_suffixes, partition_dir)
            await self._revert(device, policy_index, partition, nodes, suffixes, stats)

    async def _sync_neighbours(
        self, device: str, policy_index: int, partition: int, nodes: list, me: Any, stats: Counter,
    ) -> None:
        stats["primary_partitions"] += 1
        partition_dir = self.context.diskfiles.partition_path(device, policy_index, partition)
        run = self.context.runner.run
        hashes = await run(device, lambda: get_hashes(partition_dir, self.reclaim_age, self.context.clock(), ec=True))
        if not hashes:
            await run(device, remove_partition_if_empty, partition_dir)
            return
        local = ec_hashes_for(hashes, me.index)
        for peer in _neighbours(nodes, me.index):
            if self._stopping:
                return
            rebuilder = ArchiveRebuilder(
                self.context, self.client, self.reactor, self._codec(policy_index), device, partition, policy_index,
                nodes, me.index, peer.index, self.node_timeout,
            )
            outcome = await self.sender.sync(
                peer, device, partition, policy_index, local_hashes=local, frag_index=peer.index,
                local_frag_index=me.index, put_source=rebuilder.send,
            )
            self._count(stats, outcome)
            for name, value in rebuilder.figures.items():
                if name == "peak_source_buffer":
                    stats[name] = max(stats[name], value)
                else:
                    stats[name] += value
        # Archives of other indexes held here (a rebalance moved this partition, or a PUT used
        # this node as a handoff for another index): each goes to its own primary. The hashes
        # say which suffixes hold any, so the partition is not listed for nothing.
        misplaced = sorted(s for s, h in hashes.items() if any(key not in ("", str(me.index)) for key in h))
        if misplaced and not self._stopping:
            await self._revert(device, policy_index, partition, nodes, misplaced, stats, own=me.index)
    async def _revert(
        self, device: str, policy_index: int, partition: int, nodes: list, suffixes: list[str], stats: Counter,
        own: int | None = None,
    ) -> None:
        """
        Send the archives of ``suffixes`` to the primaries of their indexes, and remove each one
        its primary confirmed. On a handoff (``own`` None) tombstones go to every primary and
        are removed once all have them, then the partition once empty; on primary ``own``, its
        own archives and tombstones stay (its neighbour sessions keep those).
        """
        partition_dir = self.context.diskfiles.partition_path(device, policy_index, partition)
        run = self.context.runner.run
        directories = await run(device, lambda: list(list_object_dirs(partition_dir, suffixes)))
        confirmed_by: dict[int, set] = {}  # primary index → (hash, names) it confirmed
        offered: dict[int, list[ObjectFiles]] = {}
        for peer in nodes:
            if self._stopping:
                return
            if peer.index == own:
                continue
            objects = await run(device, _as_archive, directories, peer.index)
            if own is not None:
                objects = [files for files in objects if files.data is not None]
            if not objects:
                confirmed_by[peer.index] = set()
                continue
            offered[peer.index] = objects
            outcome = await self.sender.sync(peer, device, partition, policy_index, objects=objects,
                                             frag_index=peer.index)
            self._count(stats, outcome)
            if outcome.ok:
                confirmed_by[peer.index] = {(f.name_hash, f.names) for f in outcome.confirmed}
        reverted = removed = 0
        tombstones: dict[tuple, list] = {}  # a tombstone goes once every primary has it
        for index, objects in offered.items():
            confirmed = confirmed_by.get(index)
            if confirmed is None:
                continue  # that primary failed: what it should hold waits here for the next pass
            for files in objects:
                key = (files.name_hash, files.names)
                if key not in confirmed:
                    continue
                if files.data is None:
                    tombstones.setdefault(key, [files, 0])[1] += 1
                elif await run(device, remove_ec_if_unchanged, files, index):
                    reverted += 1
        for files, confirmations in tombstones.values():
            if confirmations == len(nodes) and await run(device, remove_ec_if_unchanged, files, 0):
                removed += 1
        stats["reverted"] += reverted
        stats["tombstones_removed"] += removed
        if own is None and await run(device, remove_partition_if_empty, partition_dir):
            stats["handoff_partitions_removed"] += 1
            self.log.info("{device}/{partition} (policy {policy}) is home: reverted and removed",
                          device=device, partition=partition, policy=policy_index)


def _neighbours(nodes: list, index: int) -> list:
    """The primaries left and right of ``index`` on the ring's node list (once each, never itself)."""
    found = []
    for step in (-1, 1):
        peer = nodes[(index + step) % len(nodes)]
        if peer.index != index and peer not in found:
            found.append(peer)
    return found


def _as_archive(directories: list, frag_index: int) -> list[ObjectFiles]:
    """(blocking) The objects of ``directories`` as archive ``frag_index`` sees them."""
    return [found for found in (ec_object_files(d, frag_index) for d in directories) if found is not None]
