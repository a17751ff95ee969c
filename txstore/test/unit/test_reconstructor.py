"""
The reconstructor: four nodes of an EC 2+1 policy on loopback (each its object server and its
replication listener on real sockets), objects written as a proxy would (encoded with
`ECCodec`, PUT and durable POST of archive *i* to node *i*), then damaged and repaired.
"""

from __future__ import annotations

import hashlib
import shutil
import zlib

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from txstore.common.backend_client import BackendClient
from txstore.common.io import DeviceThreadPools
from txstore.common.policies import ERASURE_CODING, ECParameters, PolicyCollection, StoragePolicy
from txstore.common.streaming import StreamingSite
from txstore.daemons.auditor import ObjectAuditor
from txstore.daemons.periodic import PeriodicDaemon
from txstore.daemons.reconstructor import ObjectReconstructor
from txstore.ec.codec import ECCodec
from txstore.replication.sender import BytePacer, Connector, ObjectSender
from txstore.ring.ringset import RingSet
from txstore.common.timestamps import Timestamp
from txstore.storage.checksum import Md5
from txstore.storage.local_devices import local_device_matcher
from txstore.storage.object_server import ObjectServer
from txstore.storage.partitions import list_partitions
from txstore.node.server import NodeServer
from txstore.test.support import ReplicationNode, replication_ring
from txstore.test.unit.test_auditor import auditor_settings

SEGMENT = 4096
EC = ECParameters("liberasurecode_rs_vand", 2, 1, segment_size=SEGMENT)
POLICIES = PolicyCollection((
    StoragePolicy(0, "gold", is_default=True),
    StoragePolicy(2, "ec21", ERASURE_CODING, ec=EC),
))
POLICY = {"X-Backend-Storage-Policy-Index": "2"}
NODES = 4


class ECNode(ReplicationNode):
    """One node: a device, its object server (HTTP) and replication listener, its reconstructor."""

    def __init__(self, case: TestCase, number: int, policies: PolicyCollection = POLICIES) -> None:
        super().__init__(case, number, policies)
        site = StreamingSite(NodeServer(objects=ObjectServer(self.context)).resource())
        self.http = reactor.listenTCP(0, site, interface="127.0.0.1")
        case.addCleanup(self.http.stopListening)
        self.backend_port = self.http.getHost().port

    def runner(self, case: TestCase):
        pools = DeviceThreadPools(reactor)
        case.addCleanup(pools.stop)
        return pools

    @property
    def diskfiles(self):
        return self.context.diskfiles

    def reconstructor(self, case: TestCase, rings: RingSet, client=None) -> ObjectReconstructor:
        if client is None:
            client = BackendClient(reactor, timeout=5.0)
            case.addCleanup(client.close)
        sender = ObjectSender(self.context, Connector(reactor, 2.0, 5.0), BytePacer(reactor, 0))
        return ObjectReconstructor(self.context, rings, local_device_matcher("127.0.0.1", self.backend_port), sender,
                                   client, reactor, node_timeout=5.0)

    def diskfile(self, partition: int, name: str):
        return self.diskfiles.get_diskfile(self.device, partition, "AUTH_a", "c", name, 2)

    def archive(self, partition: int, name: str, index: int) -> tuple[bytes, dict] | None:
        """The body and metadata of archive ``index`` held here durable, or None."""
        diskfile = self.diskfile(partition, name)
        state = diskfile.read_metadata(index)
        if not state.exists:
            return None
        with diskfile.open_reader(state) as reader:
            return reader.read(0, reader.content_length), dict(state.metadata)


class ECCluster(TestCase):
    """Nodes of one EC policy (2+1 on four unless told), and writing objects to them."""

    timeout = 60
    ec = EC
    policies = POLICIES
    node_count = NODES

    def setUp(self) -> None:
        self.nodes = [ECNode(self, n, self.policies) for n in range(1, self.node_count + 1)]
        self.ring = replication_ring(self, self.nodes, "object-2", seed=3, replicas=self.ec.fragments)
        self.rings = RingSet(account=self.ring, container=self.ring, objects={0: self.ring, 2: self.ring})
        self.codec = ECCodec(self.ec)
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)
        self.ts = 1_600_000_000

    def node_of(self, device_name: str) -> ECNode:
        return next(n for n in self.nodes if n.device == device_name)

    def placement(self, name: str) -> tuple[int, list[ECNode], ECNode]:
        """The partition, its primaries by index, and the node that is not one (a handoff)."""
        partition = self.ring.get_part("AUTH_a", "c", name)
        primaries = [self.node_of(n.device_name) for n in self.ring.get_part_nodes(partition)]
        [other] = [n for n in self.nodes if n not in primaries]
        return partition, primaries, other

    def encode(self, body: bytes) -> list[bytes]:
        """The object's archives, by index: fragment *i* of every segment, concatenated."""
        archives = [bytearray() for _ in range(self.codec.k + self.codec.m)]
        segments = [body[at:at + SEGMENT] for at in range(0, len(body), SEGMENT)] or [b""]
        for segment in segments:
            for index, fragment in enumerate(self.codec.encode(segment)):
                archives[index] += fragment
        return [bytes(a) for a in archives]

    async def call(self, node: ECNode, method: str, path: str, headers: dict, data: bytes | None = None):
        url = f"http://127.0.0.1:{node.backend_port}/{node.device}{path}"
        response = await treq.request(method, url, headers=headers, data=data, pool=self.pool)
        await treq.content(response)
        return response.code

    async def put_object(
        self, name: str, body: bytes, targets: dict[int, ECNode] | None = None, not_durable: tuple[int, ...] = (),
        **sysmeta: str,
    ) -> tuple[str, list]:
        """PUT and mark durable archive *i* on node *i* (or on ``targets[i]``; not marked if in ``not_durable``)."""
        self.ts += 1
        when = f"{self.ts}.00000"
        partition, primaries, _ = self.placement(name)
        archives = self.encode(body)
        for index, archive in enumerate(archives):
            node = (targets or {}).get(index, primaries[index])
            headers = {
                "X-Timestamp": when, "Content-Type": "application/x-test", **POLICY,
                "X-Object-Sysmeta-Ec-Frag-Index": str(index), "X-Object-Sysmeta-Ec-Content-Length": str(len(body)),
                "X-Object-Sysmeta-Ec-Etag": hashlib.md5(body).hexdigest(), "X-Object-Meta-Colour": "blue",
                **sysmeta,
            }
            self.assertEqual(await self.call(node, "PUT", f"/{partition}/AUTH_a/c/{name}", headers, archive), 201)
            if index in not_durable:
                continue  # the durable POST never reached this node
            durable = {"X-Backend-Ec-Durable": when, "X-Backend-Fragment-Index": str(index), **POLICY}
            self.assertEqual(await self.call(node, "POST", f"/{partition}/AUTH_a/c/{name}", durable), 202)
        return when, archives


class ReconstructorTests(ECCluster):
    async def test_a_deleted_archive_is_rebuilt_byte_for_byte(self) -> None:
        body = bytes(range(256)) * 200 + b"tail"  # 13 segments, the last one short
        when, archives = await self.put_object("obj", body)
        partition, primaries, other = self.placement("obj")
        original = primaries[1].archive(partition, "obj", 1)
        shutil.rmtree(primaries[1].diskfile(partition, "obj").hash_dir)
        figures = await primaries[0].reconstructor(self, self.rings).run_pass()
        self.assertEqual((figures["fragments_rebuilt"], figures["failures"]), (1, 0))
        self.assertEqual(figures["bytes_rebuilt"], len(archives[1]))
        rebuilt = primaries[1].archive(partition, "obj", 1)
        self.assertEqual(rebuilt[0], archives[1])
        self.assertEqual(rebuilt, original)  # the same bytes and the same metadata (its index, ETag, sysmeta)
        self.assertEqual(rebuilt[1]["X-Object-Sysmeta-Ec-Frag-Index"], "1")
        self.assertEqual(rebuilt[1]["X-Object-Meta-Colour"], "blue")
        self.assertEqual([f.name for f in primaries[1].diskfile(partition, "obj").list_files()], [f"{when}#1#d.data"])
        self.assertEqual(list_partitions(other.root / other.device, 2), [])
        # In sync now: the next pass finds no suffix to look into.
        again = await primaries[0].reconstructor(self, self.rings).run_pass()
        self.assertEqual((again.get("suffixes_synced", 0), again.get("fragments_rebuilt", 0)), (0, 0))

    async def test_sources_stored_with_an_md5_rebuild_an_archive_summed_with_crc32(self) -> None:
        """Archives written before CRC-32 sums (their ETag an md5) are checked with it as sources."""
        body = b"older archives " * 2000
        when, archives = await self.put_object("older", body)
        partition, primaries, _ = self.placement("older")
        for index in [i for i in range(len(primaries)) if i != 1]:  # the local source and the remote ones
            node = primaries[index]
            _data, metadata = node.archive(partition, "older", index)
            stored = {k: v for k, v in metadata.items() if k not in ("ETag", "Content-Length", "name", "X-Timestamp")}
            shutil.rmtree(node.diskfile(partition, "older").hash_dir)
            diskfile = node.diskfile(partition, "older")
            with diskfile.create_writer(len(archives[index]), frag_index=index, body_checksum=Md5()) as writer:
                writer.write(archives[index])
                writer.commit(stored, Timestamp.parse(when))
            diskfile.mark_durable(Timestamp.parse(when), index)
            self.assertEqual(node.archive(partition, "older", index)[1]["ETag"],
                             hashlib.md5(archives[index]).hexdigest())
        shutil.rmtree(primaries[1].diskfile(partition, "older").hash_dir)
        figures = await primaries[0].reconstructor(self, self.rings).run_pass()
        self.assertEqual((figures["fragments_rebuilt"], figures["failures"]), (1, 0))
        rebuilt, metadata = primaries[1].archive(partition, "older", 1)
        self.assertEqual(rebuilt, archives[1])
        self.assertEqual(metadata["ETag"], f"crc32:{zlib.crc32(archives[1]):08x}")

    async def test_archives_of_another_codec_are_not_rebuilt(self) -> None:
        """Rebuilt by another backend, the fragment would be wrong bytes, without an error."""
        await self.put_object("other", b"other codec " * 1000, **{"X-Object-Sysmeta-Ec-Scheme": "another_backend 2+1"})
        partition, primaries, _ = self.placement("other")
        shutil.rmtree(primaries[1].diskfile(partition, "other").hash_dir)
        figures = await primaries[0].reconstructor(self, self.rings).run_pass()
        self.assertEqual((figures.get("fragments_rebuilt", 0), figures["rebuild_failures"]), (0, 1))
        self.assertIsNone(primaries[1].archive(partition, "other", 1))
        # Stored as this policy's codec writes it, the same archive is rebuilt.
        await self.put_object("same", b"same codec " * 1000,
                              **{"X-Object-Sysmeta-Ec-Scheme": "liberasurecode_rs_vand 2+1"})
        partition, primaries, _ = self.placement("same")
        shutil.rmtree(primaries[1].diskfile(partition, "same").hash_dir)
        figures = await primaries[0].reconstructor(self, self.rings).run_pass()
        self.assertEqual(figures.get("fragments_rebuilt", 0), 1)

    async def test_an_archive_never_made_durable_is_sent_again_durable(self) -> None:
        when, archives = await self.put_object("late", b"late " * 3000, not_durable=(2,))
        partition, primaries, _ = self.placement("late")
        self.assertIsNone(primaries[2].archive(partition, "late", 2))  # held, not served
        figures = await primaries[0].reconstructor(self, self.rings).run_pass()
        self.assertEqual(figures["fragments_rebuilt"], 1)
        self.assertEqual(primaries[2].archive(partition, "late", 2)[0], archives[2])
        self.assertEqual([f.name for f in primaries[2].diskfile(partition, "late").list_files()], [f"{when}#2#d.data"])

    async def test_a_bit_flipped_archive_is_quarantined_by_the_auditor_and_rebuilt(self) -> None:
        body = b"rot me " * 5000
        _when, archives = await self.put_object("rot", body)
        partition, primaries, _ = self.placement("rot")
        victim = primaries[2]
        [path] = list(victim.diskfile(partition, "rot").hash_dir.glob("*.data"))
        raw = bytearray(path.read_bytes())
        raw[1234] ^= 0x04
        path.write_bytes(bytes(raw))
        auditor = ObjectAuditor(victim.context, reactor, settings=auditor_settings(files_per_second=0, bytes_per_second=0))
        self.assertEqual(await auditor.run_pass(), {"checked": 1, "quarantined": 1, "errors": 0})
        self.assertIsNone(victim.archive(partition, "rot", 2))
        figures = await primaries[1].reconstructor(self, self.rings).run_pass()
        self.assertEqual(figures["fragments_rebuilt"], 1)
        self.assertEqual(victim.archive(partition, "rot", 2)[0], archives[2])
        self.assertEqual(self.codec.decode([victim.archive(partition, "rot", 2)[0][:self.codec.fragment_size(SEGMENT)],
                                            archives[0][:self.codec.fragment_size(SEGMENT)]]), body[:SEGMENT])

    async def test_a_handoff_archive_reverts_to_its_primary_and_is_removed(self) -> None:
        body = b"handed off " * 3000
        partition, primaries, handoff = self.placement("lost")
        when, archives = await self.put_object("lost", body, targets={0: handoff})  # primary 0 was down
        self.assertIsNone(primaries[0].archive(partition, "lost", 0))
        figures = await handoff.reconstructor(self, self.rings).run_pass()
        self.assertEqual((figures["handoff_partitions"], figures["reverted"], figures["failures"]), (1, 1, 0))
        self.assertEqual(figures["handoff_partitions_removed"], 1)
        self.assertEqual(primaries[0].archive(partition, "lost", 0)[0], archives[0])
        self.assertEqual([f.name for f in primaries[0].diskfile(partition, "lost").list_files()],
                         [f"{when}#0#d.data"])
        self.assertEqual(list_partitions(handoff.root / handoff.device, 2), [])

    async def test_a_primary_reverts_the_archives_of_other_indexes_it_holds(self) -> None:
        partition, primaries, _ = self.placement("extra")
        when, archives = await self.put_object("extra", b"extra " * 3000, targets={1: primaries[0]})
        figures = await primaries[0].reconstructor(self, self.rings).run_pass()
        self.assertEqual(figures["reverted"], 1)
        self.assertEqual(primaries[1].archive(partition, "extra", 1)[0], archives[1])
        self.assertEqual([f.name for f in primaries[0].diskfile(partition, "extra").list_files()],
                         [f"{when}#0#d.data"])
        again = await primaries[0].reconstructor(self, self.rings).run_pass()
        self.assertEqual((again.get("reverted", 0), again.get("sessions")), (0, 2))  # the neighbours only

    async def test_a_handoff_keeps_its_archive_while_the_primary_is_down(self) -> None:
        partition, primaries, handoff = self.placement("lost")
        await self.put_object("lost", b"wait " * 2000, targets={0: handoff})
        await primaries[0].port.stopListening()
        figures = await handoff.reconstructor(self, self.rings).run_pass()
        self.assertEqual((figures["reverted"], figures["failures"]), (0, 1))
        self.assertIsNotNone(handoff.archive(partition, "lost", 0))

    async def test_a_tombstone_propagates(self) -> None:
        await self.put_object("gone", b"soon gone " * 1000)
        partition, primaries, _ = self.placement("gone")
        self.ts += 1
        deleted = f"{self.ts}.00000"
        primaries[0].diskfile(partition, "gone").delete(deleted)
        figures = await primaries[0].reconstructor(self, self.rings).run_pass()
        self.assertEqual((figures["sessions"], figures["failures"], figures["updates_sent"]), (2, 0, 2))
        for node in primaries:
            state = node.diskfile(partition, "gone").read_metadata()
            self.assertEqual(state.tombstone_timestamp.internal if state.deleted else None, deleted)
            self.assertEqual([f.name for f in node.diskfile(partition, "gone").list_files()], [f"{deleted}.ts"])

    async def test_a_post_propagates(self) -> None:
        await self.put_object("meta", b"meta " * 1000)
        partition, primaries, _ = self.placement("meta")
        self.ts += 1
        primaries[2].diskfile(partition, "meta").write_metadata({"X-Object-Meta-Colour": "red"}, f"{self.ts}.00000")
        figures = await primaries[2].reconstructor(self, self.rings).run_pass()
        self.assertEqual((figures["updates_sent"], figures.get("fragments_rebuilt", 0)), (2, 0))
        for index, node in enumerate(primaries):
            self.assertEqual(node.archive(partition, "meta", index)[1]["X-Object-Meta-Colour"], "red")

    async def test_archives_of_another_timestamp_are_never_mixed(self) -> None:
        """Archive 2 must come from 0 and 1 of one version: 1 holding only an older one, none is made."""
        partition, primaries, _ = self.placement("mixed")
        await self.put_object("mixed", b"old " * 3000)
        _when, archives = await self.put_object("mixed", b"new " * 3000, targets={1: primaries[0]})
        # Primary 1 still holds the old version; 0 holds the new archives 0 and 1; 2 the new 2.
        shutil.rmtree(primaries[2].diskfile(partition, "mixed").hash_dir)
        (primaries[0].diskfile(partition, "mixed").hash_dir / f"{_when}#1#d.data").unlink()
        figures = await primaries[0].reconstructor(self, self.rings).run_pass()
        # Archive 2 (from 0 and 1) and archive 1 (from 0 and 2): neither has two sources of the new version.
        self.assertEqual((figures["rebuild_failures"], figures.get("fragments_rebuilt", 0)), (2, 0))
        self.assertIsNone(primaries[2].archive(partition, "mixed", 2))
        self.assertEqual(len(primaries[1].archive(partition, "mixed", 1)[0]), len(archives[1]))  # still the old
        self.assertNotEqual(primaries[1].archive(partition, "mixed", 1)[0], archives[1])

    async def test_memory_stays_bounded(self) -> None:
        """A source buffers about one fragment (64 KiB at least), never the archive (here 2 MiB)."""
        body = hashlib.sha256(b"seed").digest() * (SEGMENT * 1024 // 32)
        _when, archives = await self.put_object("big", body)
        partition, primaries, _ = self.placement("big")
        shutil.rmtree(primaries[0].diskfile(partition, "big").hash_dir)
        figures = await primaries[1].reconstructor(self, self.rings).run_pass()
        self.assertEqual(figures["fragments_rebuilt"], 1)
        self.assertEqual(primaries[0].archive(partition, "big", 0)[0], archives[0])
        # The pause mark, plus what one read from the socket may add past it.
        self.assertLess(figures["peak_source_buffer"], 3 * 65536)
        self.assertGreater(len(archives[0]), 2 * 1024 * 1024)

    async def test_a_replicated_session_is_refused_by_an_ec_policy(self) -> None:
        partition, primaries, _ = self.placement("obj")
        await self.put_object("obj", b"x" * 100)
        sender = ObjectSender(primaries[0].context, Connector(reactor, 2.0, 5.0), BytePacer(reactor, 0))
        outcome = await sender.sync(self.ring.get_part_nodes(partition)[1], primaries[0].device, partition, 2,
                                    local_hashes={"abc": "x"})
        self.assertFalse(outcome.ok)
        self.assertIn("400", outcome.reason)

    def test_passes_run_on_the_daemons_timer(self) -> None:
        clock = Clock()
        reconstructor = self.nodes[0].reconstructor(self, self.rings)
        passes: list[dict] = []

        async def counted() -> dict:
            figures = await reconstructor.run_pass()
            passes.append(figures)
            return figures

        daemon = PeriodicDaemon("object-reconstructor", counted, 30.0, clock, jitter=lambda: 0.5)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        clock.advance(14)
        self.assertEqual(passes, [])
        clock.advance(1)
        done = Deferred()
        reactor.callLater(0.5, done.callback, None)  # the pass's thread calls finish on the reactor
        return done.addCallback(lambda _: self.assertEqual((len(passes), daemon.passes), (1, 1)))


class _CutBody(Protocol):
    """Passes a body on to ``inner`` until ``after`` bytes, then drops the connection (a node that died)."""

    def __init__(self, inner, after: int) -> None:
        self.inner = inner
        self.left = after

    def connectionMade(self) -> None:
        self.inner.makeConnection(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.left <= 0:
            return
        self.inner.dataReceived(data[:self.left])
        self.left -= len(data)
        if self.left <= 0:
            self.transport.stopProducing()

    def connectionLost(self, reason) -> None:
        self.inner.connectionLost(reason)


class CuttingClient:
    """A BackendClient whose first ``cuts`` archive GETs break off after ``after`` bytes."""

    def __init__(self, client: BackendClient, after: int, cuts: int = 1) -> None:
        self.client = client
        self.after = after
        self.cuts = cuts
        self.asked: list[tuple[str, str | None]] = []  # (path, Range)
        self.io: list[tuple[str | None, str | None]] = []  # (X-Backend-Io-Class, -Tenant)

    async def stream(self, method, host, port, path, headers, timeout=None):
        response = await self.client.stream(method, host, port, path, headers, timeout)
        self.asked.append((path, headers.get("Range")))
        self.io.append((headers.get("X-Backend-Io-Class"), headers.get("X-Backend-Io-Tenant")))
        if self.cuts and response.status == 200:
            self.cuts -= 1
            deliver = response.deliver
            after = self.after
            return _Cut(response, lambda protocol: deliver(_CutBody(protocol, after)))
        return response


class _Cut:
    def __init__(self, response, deliver) -> None:
        self._response = response
        self.deliver = deliver

    def __getattr__(self, name):
        return getattr(self._response, name)


class SourceReplacementTests(ECCluster):
    """2+2 on five nodes: a source that breaks off mid-archive is replaced by another from that byte."""

    ec = ECParameters("liberasurecode_rs_vand", 2, 2, segment_size=SEGMENT)
    policies = PolicyCollection((StoragePolicy(0, "gold", is_default=True),
                                 StoragePolicy(2, "ec22", ERASURE_CODING, ec=ec)))
    node_count = 5

    async def test_a_source_that_breaks_off_is_replaced_with_a_ranged_get(self) -> None:
        body = bytes(range(251)) * 400
        _when, archives = await self.put_object("cut", body)
        partition, primaries, _ = self.placement("cut")
        shutil.rmtree(primaries[1].diskfile(partition, "cut").hash_dir)
        client = BackendClient(reactor, timeout=5.0)
        self.addCleanup(client.close)
        cutting = CuttingClient(client, after=10_000)
        # Primary 0's neighbours are 3 (in sync) and 1 (rebuilt from 0's own archive and a remote one).
        figures = await primaries[0].reconstructor(self, self.rings, cutting).run_pass()
        self.assertEqual((figures["fragments_rebuilt"], figures.get("rebuild_failures", 0)), (1, 0))
        self.assertEqual(primaries[1].archive(partition, "cut", 1)[0], archives[1])
        fragment = self.codec.fragment_size(SEGMENT)
        [first, second] = cutting.asked
        self.assertEqual(first[1], None)
        self.assertEqual(second[1], f"bytes={10_000 // fragment * fragment}-")  # from the segment it broke in
        self.assertNotEqual(first[0].split("/")[1], second[0].split("/")[1])
        self.assertEqual(cutting.io, [("background", "-")] * 2)  # the daemons' disk work on the remote nodes


class NodeWiringTests(TestCase):
    """The node runs a reconstructor exactly when the cluster has an erasure-coded policy."""

    def build(self, policies: PolicyCollection, **reconstructor: object):
        from txstore.common.cluster import ClusterConfig
        from txstore.common.hashing import PathHasher
        from txstore.node.assembly import build_node
        from txstore.storage.config import DEFAULT_DAEMONS, NodeSettings
        from txstore.test.support import temp_dir

        root = temp_dir(self)
        daemons = attrs.evolve(
            DEFAULT_DAEMONS, object_reconstructor=attrs.evolve(DEFAULT_DAEMONS.object_reconstructor, **reconstructor),
        )
        settings = NodeSettings(
            path=root / "objectnode.conf", bind_ip="127.0.0.1", bind_port=23300, ring_dir=root, devices=root,
            mount_check=False, cluster=ClusterConfig(root / "txstore.conf", PathHasher(b"", b"s"), policies),
            daemons=daemons,
        )
        rings = RingSet(account=None, container=None, objects={})
        _server, services = build_node(settings, Clock(), rings=rings)
        return {service.name: service for service in services if isinstance(service, PeriodicDaemon)}

    def test_an_ec_policy_gets_a_reconstructor_with_its_section(self) -> None:
        daemons = self.build(POLICIES, interval=7.0)
        self.assertEqual(daemons["object-reconstructor"].interval, 7.0)
        self.assertIn("object-replicator", daemons)

    def test_none_without_an_ec_policy(self) -> None:
        daemons = self.build(PolicyCollection((StoragePolicy(0, "gold", is_default=True),)))
        self.assertNotIn("object-reconstructor", daemons)
        self.assertIn("object-replicator", daemons)

    def test_it_can_be_disabled(self) -> None:
        self.assertNotIn("object-reconstructor", self.build(POLICIES, enabled=False))

    async def test_recon_reports_its_passes(self) -> None:
        import json
        from types import SimpleNamespace

        from txstore.node.recon import Recon
        from txstore.test.support import storage_context

        daemon = self.build(POLICIES)["object-reconstructor"]
        daemon.last_pass = {"fragments_rebuilt": 3, "reverted": 1, "failures": 0, "duration": 0.5}
        daemon.passes = 2
        recon = Recon(storage_context(self), self.mktemp(), {"object-reconstructor": daemon})
        answer = await recon.handle(SimpleNamespace(method=b"GET", path=b"/recon/reconstruction"))
        reported = json.loads(answer.body)["object"]
        self.assertEqual((reported["passes"], reported["last_pass"]["fragments_rebuilt"]), (2, 3))
