"""Container and account databases replicated over loopback sockets, and the replicator's pass."""

from __future__ import annotations

import attrs
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from txstore.common.hashing import PathHasher
from txstore.daemons.db_replicator import DatabaseReplicator
from txstore.replication import databases
from txstore.replication.databases import DatabaseReceiver, DatabaseSender
from txstore.replication.sender import Connector
from txstore.storage.account_server import AccountServer
from txstore.storage.config import DEFAULT_DAEMONS
from txstore.storage.container_server import ContainerServer
from txstore.storage.db import ContainerBroker
from txstore.storage.db.files import database_path, find_databases
from txstore.storage.local_devices import local_device_matcher
from txstore.test.support import ReplicationNode, replication_ring

HASHER = PathHasher(b"", b"s")


class FakeNode(ReplicationNode):
    """One node: container and account servers on its device, their replication receivers, a sender."""

    backend_base = 17000

    def receiver_options(self, case) -> dict:
        self.containers = ContainerServer(self.context)
        self.accounts = AccountServer(self.context)
        case.addCleanup(self.containers.close)
        self.sender = DatabaseSender("container", self.containers.databases, Connector(reactor, 2.0, 5.0))
        return {"db_handlers": {
            "container": DatabaseReceiver("container", self.containers.databases).serve,
            "account": DatabaseReceiver("account", self.accounts.databases).serve,
        }}

    def db_path(self, partition: int, name: str = "c"):
        return database_path(self.root / self.device, "containers", partition, HASHER.hash_path("AUTH_a", name))

    def broker(self, partition: int, name: str = "c") -> ContainerBroker:
        return self.containers.databases.broker_at(self.device, self.db_path(partition, name))

    def create(self, partition: int, name: str = "c", rows: int = 0) -> ContainerBroker:
        broker = self.broker(partition, name)
        broker.initialize("AUTH_a", name, "1600000000.00000")
        broker.merge_items([
            {"name": f"o{i}", "created_at": "1600000001.00000", "size": i, "content_type": "t/t",
             "etag": "e", "deleted": 0, "storage_policy_index": 0} for i in range(rows)
        ])
        return broker


class Peer:
    def __init__(self, node: FakeNode) -> None:
        self.replication_ip = "127.0.0.1"
        self.replication_port = node.port.getHost().port
        self.device_name = node.device


async def settle(*nodes) -> None:
    for _ in range(100):
        if not any(n.factory.sessions for n in nodes):
            return
        await deferLater(reactor, 0.02, lambda: None)


class DatabaseSessionTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.a, self.b = FakeNode(self, 1), FakeNode(self, 2)

    def sync(self, partition=3, name="c"):
        return ensureDeferred(self.a.sender.sync(Peer(self.b), self.a.device, partition, self.a.db_path(partition, name)))

    def rows(self, broker) -> list:
        return sorted((r.name, r.created_at, r.size, r.deleted) for r in broker.get_items_since(-1, 100000))

    async def test_missing_database_gets_the_whole_file_then_only_new_rows(self) -> None:
        mine = self.a.create(3, rows=120)
        mine.update_metadata({"X-Container-Meta-Color": ("blue", "1600000002.00000")})
        outcome = await self.sync()
        await settle(self.b)
        self.assertTrue(outcome.ok, outcome.reason)
        self.assertEqual(outcome.state, "missing")
        self.assertGreater(outcome.file_bytes, 0)
        theirs = self.b.broker(3)
        self.assertEqual(self.rows(theirs), self.rows(mine))
        info, their_info = mine.replication_info(), theirs.replication_info()
        self.assertEqual(their_info["hash"], info["hash"])
        self.assertNotEqual(their_info["id"], info["id"])  # a replica of its own
        self.assertEqual(theirs.get_metadata(), {"X-Container-Meta-Color": ("blue", "1600000002.00000")})
        self.assertEqual(theirs.get_sync(info["id"]), info["max_row"])
        self.assertEqual(list((self.b.root / "d2" / "tmp").iterdir()), [])
        self.assertEqual(list((self.a.root / "d1" / "tmp").iterdir()), [])

        mine.merge_items([{"name": "new", "created_at": "1600000003.00000", "size": 9, "content_type": "t/t",
                           "etag": "e", "deleted": 0, "storage_policy_index": 0}])
        mine.delete_object("o1", "1600000004.00000")
        outcome = await self.sync()
        await settle(self.b)
        self.assertTrue(outcome.ok, outcome.reason)
        self.assertEqual((outcome.state, outcome.rows_sent, outcome.file_bytes), ("behind", 2, 0))
        self.assertEqual(self.rows(theirs), self.rows(mine))
        self.assertEqual(theirs.get_info().object_count, 120)

        outcome = await self.sync()
        self.assertEqual((outcome.ok, outcome.state, outcome.rows_sent), (True, "in_sync", 0))

    async def test_rows_merge_newest_wins_both_ways(self) -> None:
        mine = self.a.create(3, rows=3)
        theirs = self.b.create(3, rows=0)
        theirs.merge_items([{"name": "o0", "created_at": "1600000009.00000", "size": 77, "content_type": "t/t",
                             "etag": "x", "deleted": 0, "storage_policy_index": 0}])
        theirs.update_metadata({"X-Container-Meta-K": ("theirs", "1600000009.00000")})
        mine.update_metadata({"X-Container-Meta-K": ("mine", "1600000005.00000")})
        mine.merge_status("1600000000.00000", "1600000008.00000")
        outcome = await self.sync()
        await settle(self.b)
        self.assertTrue(outcome.ok, outcome.reason)
        self.assertEqual(outcome.state, "behind")
        got = {r.name: r.size for r in theirs.get_items_since(-1, 100)}
        self.assertEqual(got, {"o0": 77, "o1": 1, "o2": 2})  # their newer o0 kept
        self.assertEqual(theirs.get_metadata()["X-Container-Meta-K"][0], "theirs")
        self.assertEqual(theirs.replication_info()["delete_timestamp"], "1600000008.00000")

    async def test_far_behind_gets_the_file_and_merges_it(self) -> None:
        self.patch(databases, "FILE_THRESHOLD", 10)
        mine = self.a.create(3, rows=50)
        theirs = self.b.create(3, rows=0)
        theirs.merge_items([{"name": "only-theirs", "created_at": "1600000001.00000", "size": 1,
                             "content_type": "t/t", "etag": "e", "deleted": 0, "storage_policy_index": 0}])
        outcome = await self.sync()
        await settle(self.b)
        self.assertTrue(outcome.ok, outcome.reason)
        self.assertGreater(outcome.file_bytes, 0)
        self.assertEqual(len(theirs.get_items_since(-1, 1000)), 51)
        self.assertEqual(theirs.get_sync(mine.replication_info()["id"]), mine.replication_info()["max_row"])

    async def test_unknown_kind_is_refused(self) -> None:
        self.a.create(3)
        sender = DatabaseSender("nonsense", self.a.containers.databases, Connector(reactor, 2.0, 5.0))
        outcome = await sender.sync(Peer(self.b), "d1", 3, self.a.db_path(3))
        self.assertFalse(outcome.ok)
        self.assertIn("unknown session kind", outcome.reason)


class DatabaseReplicatorTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.nodes = [FakeNode(self, n) for n in range(1, 5)]
        self.ring = replication_ring(self, self.nodes, "container", seed=5)

    def replicator(self, node: FakeNode) -> DatabaseReplicator:
        return DatabaseReplicator(node.context, self.ring, local_device_matcher("127.0.0.1", node.backend_port),
                                  node.sender)

    async def test_handoff_database_goes_home(self) -> None:
        partition = self.ring.get_part("AUTH_a", "c")
        primaries = {n.device_name for n in self.ring.get_part_nodes(partition)}
        handoff = next(n for n in self.nodes if n.device not in primaries)
        handoff.create(partition, rows=5)
        figures = await self.replicator(handoff).run_pass()
        await settle(*self.nodes)
        self.assertEqual((figures["sessions"], figures["failures"], figures["handoffs_removed"]), (3, 0, 1))
        self.assertEqual(find_databases(handoff.root / handoff.device, "containers"), [])
        for node in self.nodes:
            if node.device in primaries:
                self.assertEqual(node.broker(partition).get_info().object_count, 5)

    async def test_primaries_converge_and_deleted_databases_are_reclaimed(self) -> None:
        partition = self.ring.get_part("AUTH_a", "c")
        primaries = [n for n in self.nodes if n.device in {d.device_name for d in self.ring.get_part_nodes(partition)}]
        first = primaries[0].create(partition, rows=2)
        await self.replicator(primaries[0]).run_pass()
        await settle(*self.nodes)
        for node in primaries:
            self.assertEqual(node.broker(partition).get_info().object_count, 2)
        for name in ("o0", "o1"):
            first.delete_object(name, "1600000002.00000")
        first.mark_deleted("1600000003.00000")
        figures = await self.replicator(primaries[0]).run_pass()
        await settle(*self.nodes)
        self.assertEqual(figures["failures"], 0)
        for node in primaries:
            self.assertTrue(node.broker(partition).is_deleted())
        # Once reclaim_age has passed (0 here), each replica drops it on its own.
        later = DatabaseReplicator(
            primaries[1].context, self.ring, local_device_matcher("127.0.0.1", primaries[1].backend_port),
            primaries[1].sender, settings=attrs.evolve(DEFAULT_DAEMONS.container_replicator, reclaim_age=0.0),
        )
        figures = await later.run_pass()
        self.assertEqual(figures["reclaimed_databases"], 1)
        self.assertEqual(find_databases(primaries[1].root / primaries[1].device, "containers"), [])
