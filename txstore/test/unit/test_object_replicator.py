"""The object replicator's pass: four nodes' storage, replication listeners on loopback."""

from __future__ import annotations

import shutil

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from txstore.daemons.object_replicator import ObjectReplicator
from txstore.replication.sender import BytePacer, Connector, ObjectSender
from txstore.ring.ringset import RingSet
from txstore.storage.local_devices import local_device_matcher
from txstore.storage.partitions import list_partitions
from txstore.test.support import ReplicationNode, replication_ring

NODES = 4


class FakeNode(ReplicationNode):
    """One node: its device, its replication listener, its replicator."""

    @property
    def diskfiles(self):
        return self.context.diskfiles

    def replicator(self, rings: RingSet) -> ObjectReplicator:
        sender = ObjectSender(self.context, Connector(reactor, 2.0, 5.0), BytePacer(reactor, 0))
        return ObjectReplicator(self.context, rings, local_device_matcher("127.0.0.1", self.backend_port), sender)

    def put(self, partition: int, name: str, ts: str, body: bytes = b"body"):
        diskfile = self.diskfiles.get_diskfile(self.device, partition, "AUTH_a", "c", name)
        writer = diskfile.create_writer()
        writer.write(body)
        writer.commit({"Content-Type": "t/t"}, ts)
        return diskfile

    def state(self, partition: int, name: str):
        return self.diskfiles.get_diskfile(self.device, partition, "AUTH_a", "c", name).read_metadata()


class ObjectReplicatorTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.nodes = [FakeNode(self, n) for n in range(1, NODES + 1)]
        self.ring = replication_ring(self, self.nodes, "object", seed=3)
        self.rings = RingSet(account=self.ring, container=self.ring, objects={0: self.ring})

    def node_of(self, device_name: str) -> FakeNode:
        return next(n for n in self.nodes if n.device == device_name)

    def placement(self, name: str):
        partition = self.ring.get_part("AUTH_a", "c", name)
        primaries = [self.node_of(n.device_name) for n in self.ring.get_part_nodes(partition)]
        others = [n for n in self.nodes if n not in primaries]
        return partition, primaries, others

    async def test_a_primary_pushes_to_the_other_primaries(self) -> None:
        partition, primaries, others = self.placement("obj")
        primaries[0].put(partition, "obj", "1600000000.00000", b"x" * 300000)
        gone = primaries[0].put(partition, "gone", "1600000000.00000")
        gone.delete("1600000001.00000")
        figures = await primaries[0].replicator(self.rings).run_pass()
        self.assertEqual(figures["sessions"], 2)
        self.assertEqual(figures["failures"], 0)
        for node in primaries:
            state = node.state(partition, "obj")
            self.assertEqual((state.exists, state.metadata["ETag"]), (True, primaries[0].state(partition, "obj").metadata["ETag"]))
            self.assertTrue(node.state(partition, "gone").deleted)
        self.assertEqual(list_partitions(others[0].root / others[0].device, 0), [])
        again = await primaries[0].replicator(self.rings).run_pass()
        # One survey per peer finds both in sync: no session at all.
        self.assertEqual((again["surveys"], again["in_sync"], again.get("sessions", 0)), (2, 2, 0))

    async def test_a_peer_that_cannot_be_surveyed_gets_a_session_per_partition(self) -> None:
        partition, primaries, _others = self.placement("obj")
        primaries[0].put(partition, "obj", "1600000000.00000")
        await primaries[2].port.stopListening()
        figures = await primaries[0].replicator(self.rings).run_pass()
        self.assertEqual((figures["surveys"], figures["survey_failures"]), (2, 1))
        self.assertEqual((figures["sessions"], figures["failures"]), (2, 1))  # tried anyway, and failed
        self.assertTrue(primaries[1].state(partition, "obj").exists)

    async def test_a_peer_that_lost_its_copy_is_refilled(self) -> None:
        """The survey asks every pass: a peer whose device was replaced empty gets everything back."""
        partition, primaries, _others = self.placement("obj")
        primaries[0].put(partition, "obj", "1600000000.00000", b"keep me")
        await primaries[0].replicator(self.rings).run_pass()
        for path in (primaries[1].root / primaries[1].device).iterdir():
            if path.name.startswith("objects"):
                shutil.rmtree(path)
        figures = await primaries[0].replicator(self.rings).run_pass()
        self.assertEqual((figures["in_sync"], figures["sessions"], figures["updates_sent"]), (1, 1, 1))
        self.assertTrue(primaries[1].state(partition, "obj").exists)

    async def test_a_handoff_goes_home_and_is_removed(self) -> None:
        partition, primaries, others = self.placement("lost")
        handoff = others[0]
        handoff.put(partition, "lost", "1600000000.00000", b"handed off")
        primaries[1].put(partition, "lost", "1600000000.00000", b"handed off")  # one already has it
        figures = await handoff.replicator(self.rings).run_pass()
        self.assertEqual((figures["handoff_partitions"], figures["handoff_partitions_removed"]), (1, 1))
        for node in primaries:
            self.assertTrue(node.state(partition, "lost").exists)
        self.assertEqual(list_partitions(handoff.root / handoff.device, 0), [])

    async def test_a_handoff_stays_while_a_primary_is_unreachable(self) -> None:
        partition, primaries, others = self.placement("lost")
        handoff = others[0]
        handoff.put(partition, "lost", "1600000000.00000")
        await primaries[2].port.stopListening()
        figures = await handoff.replicator(self.rings).run_pass()
        self.assertEqual(figures["failures"], 1)
        self.assertEqual(list_partitions(handoff.root / handoff.device, 0), [partition])
        self.assertTrue(handoff.state(partition, "lost").exists)

    async def test_a_newer_delete_on_a_peer_is_not_undone(self) -> None:
        partition, primaries, _others = self.placement("obj")
        for node in primaries:
            node.put(partition, "obj", "1600000000.00000")
        primaries[1].diskfiles.get_diskfile(primaries[1].device, partition, "AUTH_a", "c", "obj").delete(
            "1600000005.00000")
        await primaries[0].replicator(self.rings).run_pass()  # pushes its older copy: refused
        self.assertTrue(primaries[1].state(partition, "obj").deleted)
        await primaries[1].replicator(self.rings).run_pass()  # pushes the tombstone
        for node in primaries:
            self.assertTrue(node.state(partition, "obj").deleted)

    async def test_stop_starts_no_further_partition(self) -> None:
        partition, primaries, _others = self.placement("obj")
        primaries[0].put(partition, "obj", "1600000000.00000")
        other = next(p for p in range(8) if p != partition and primaries[0].device in
                     [n.device_name for n in self.ring.get_part_nodes(p)])
        primaries[0].put(other, "second", "1600000000.00000")
        replicator = primaries[0].replicator(self.rings)
        sender = replicator.sender
        synced: list[int] = []

        class Stopping:
            async def sync(self, peer, device, part, policy, **kwargs):
                synced.append(part)
                replicator.stop()  # the node stops during the first partition's first session
                return await sender.sync(peer, device, part, policy, **kwargs)

        replicator.sender = Stopping()
        figures = await replicator.run_pass()
        self.assertEqual((figures["partitions"], figures["skipped"], figures["stopped"]), (2, 1, True))
        self.assertEqual(len(set(synced)), 1)
        # The next pass (the node started again) does everything.
        replicator.sender = sender
        figures = await replicator.run_pass()
        self.assertNotIn("stopped", figures)
        # The first partition went to both peers before the stop: only the second needs sessions.
        self.assertEqual((figures["in_sync"], figures["sessions"]), (2, 2))


class ErasureCodedPoliciesTests(TestCase):
    """The replicator leaves an EC policy's partitions alone: its nodes hold different archives."""

    timeout = 60

    def setUp(self) -> None:
        from txstore.common.policies import ERASURE_CODING, ECParameters, PolicyCollection, StoragePolicy

        policies = PolicyCollection((
            StoragePolicy(0, "gold", is_default=True),
            StoragePolicy(2, "ec21", ERASURE_CODING, ec=ECParameters("liberasurecode_rs_vand", 2, 1)),
        ))
        self.nodes = [FakeNode(self, n, policies) for n in range(1, NODES + 1)]
        self.ring = replication_ring(self, self.nodes, "object", seed=3)
        self.rings = RingSet(account=self.ring, container=self.ring, objects={0: self.ring, 2: self.ring})

    async def test_an_ec_archive_is_not_replicated(self) -> None:
        partition = self.ring.get_part("AUTH_a", "c", "ec")
        primaries = [next(n for n in self.nodes if n.device == d.device_name)
                     for d in self.ring.get_part_nodes(partition)]
        diskfile = primaries[0].diskfiles.get_diskfile(primaries[0].device, partition, "AUTH_a", "c", "ec", 2)
        writer = diskfile.create_writer(frag_index=0)
        writer.write(b"archive 0")
        writer.commit({"Content-Type": "t/t", "X-Object-Sysmeta-Ec-Frag-Index": "0"}, "1600000000.00000")
        diskfile.mark_durable("1600000000.00000", 0)
        primaries[0].put(partition, "replica", "1600000000.00000")  # policy 0, for contrast
        figures = await primaries[0].replicator(self.rings).run_pass()
        self.assertEqual((figures["partitions"], figures["sessions"], figures["failures"]), (1, 2, 0))
        for node in primaries[1:]:
            self.assertTrue(node.state(partition, "replica").exists)
            self.assertEqual(list_partitions(node.root / node.device, 2), [])
        self.assertEqual(list_partitions(primaries[0].root / primaries[0].device, 2), [partition])


class LocalDevicesTests(TestCase):
    def device(self, ip: str, port: int = 6200):
        from txstore.ring.device import Device

        return Device(id=0, region=1, zone=1, ip=ip, port=port, device="sda", weight=1.0)

    def test_bound_address_and_port(self) -> None:
        mine = local_device_matcher("127.0.0.1", 6200)
        self.assertTrue(mine(self.device("127.0.0.1")))
        self.assertFalse(mine(self.device("127.0.0.1", 6210)))
        self.assertFalse(mine(self.device("127.0.0.2")))

    def test_a_wildcard_means_this_hosts_addresses_not_any(self) -> None:
        mine = local_device_matcher("0.0.0.0", 6200)
        self.assertTrue(mine(self.device("127.0.0.1")))
        self.assertFalse(mine(self.device("192.0.2.77")))  # another host (TEST-NET-1, never reached)
