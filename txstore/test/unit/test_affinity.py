"""
Read and write affinity (`txstore.proxy.affinity`): the options parsed strictly, and the nodes
the proxy's controllers choose over a ring of two regions, against the in-memory backend.
"""

from __future__ import annotations

from pathlib import Path

from attrs import evolve
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.backend_client import BackendResponse
from txstore.common.config import BadValue, ConfigError
from txstore.common.policies import ERASURE_CODING, ECParameters, PolicyCollection, StoragePolicy
from txstore.ec.headers import FRAG_INDEX
from txstore.ec.service import ECService
from txstore.proxy.affinity import (
    UNMATCHED, AffinityConfig, NodeCount, Placement, ReadAffinity, Selector, SlotNodes, WriteAffinity,
    parse_delete_count, parse_node_count, parse_places, parse_read_affinity, parse_sorting_method,
)
from txstore.proxy.application import ProxyApplication
from txstore.proxy.config import load_proxy_settings
from txstore.proxy.controllers.base import container_info
from txstore.proxy.controllers.obj_get import _read_order
from txstore.proxy.info import InfoRegistry
from txstore.ring.builder import RingBuilder
from txstore.ring.ring import Node, Ring
from txstore.ring.ringset import RingSet
from txstore.test.unit import test_proxy_controllers as controllers
from txstore.test.backend_fake import reply
from txstore.test.support import CLUSTER_CONF, temp_dir, write_file
from txstore.test.unit.test_middleware import Chunks


def two_regions(path: Path, port: int, replicas: int = 3) -> Ring:
    """Eight devices: four zones in region 1 (127.0.1.z), four in region 2 (127.0.2.z)."""
    builder = RingBuilder(4, replicas, 1)
    for region in (1, 2):
        for zone in range(1, 5):
            builder.add_dev(region=region, zone=zone, ip=f"127.0.{region}.{zone}", port=port,
                            device=f"r{region}z{zone}", weight=100)
    builder.rebalance(seed=7)
    builder.get_ring().save(path)
    return Ring(path, controllers.HASHER)


def regions(nodes) -> list[int]:
    return [node.region for node in nodes]


class ParsingTests(SynchronousTestCase):
    def test_read_affinity_by_priority_whatever_the_order_written(self) -> None:
        affinity = parse_read_affinity("r2=300, r1z1=100,r1=200")
        self.assertEqual(affinity.rules, ((Selector(1, 1), 100), (Selector(1), 200), (Selector(2), 300)))
        self.assertEqual(parse_read_affinity("  "), ReadAffinity())

    def test_malformed_read_affinity(self) -> None:
        for raw in ("r1", "r1=x", "z1=100", "r1z=100", "r1=100,,r2=200", "r1=100; r2=200", "R1=100", "r1 = 100",
                    "r1=-5"):
            self.assertRaises(BadValue, parse_read_affinity, raw)
        self.assertIn("r1 is given twice", str(self.assertRaises(BadValue, parse_read_affinity, "r1=1, r1=2")))

    def test_write_affinity_and_its_counts(self) -> None:
        self.assertEqual(parse_places("r1, r2z1"), (Selector(1), Selector(2, 1)))
        for raw in ("r1=100", "1", "r1,,r2", "r1 z1", "r1, r1"):
            self.assertRaises(BadValue, parse_places, raw)
        self.assertEqual(parse_node_count("2 * replicas"), NodeCount(2, True))
        self.assertEqual(parse_node_count("3*replicas").of(3), 9)
        self.assertEqual(parse_node_count("5").of(3), 5)
        for raw in ("0", "0 * replicas", "two", "2 * nodes", "-1", "2.5"):
            self.assertRaises(BadValue, parse_node_count, raw)
        self.assertEqual((parse_delete_count("auto"), parse_delete_count("2")), (None, 2))
        for raw in ("-1", "some", ""):
            self.assertRaises(BadValue, parse_delete_count, raw)

    def test_sorting_methods_not_built_are_refused_by_name(self) -> None:
        self.assertEqual([parse_sorting_method(m) for m in ("load", "ring", "affinity")], ["load", "ring", "affinity"])
        self.assertIn("timing", str(self.assertRaises(BadValue, parse_sorting_method, "timing")))
        self.assertIn("shuffle is not built", str(self.assertRaises(BadValue, parse_sorting_method, "shuffle")))
        self.assertRaises(BadValue, parse_sorting_method, "random")


class ConfigTests(SynchronousTestCase):
    """proxy.conf's options, and the one line a malformed one stops the proxy with."""

    def setUp(self) -> None:
        self.dir = temp_dir(self)
        write_file(self.dir, "txstore.conf", CLUSTER_CONF + "[storage-policy:0]\nname = gold\ndefault = yes\n"
                   "[storage-policy:1]\nname = silver\n")
        self.conf = str(self.dir / "proxy.conf")

    def load(self, text: str):
        return load_proxy_settings(write_file(self.dir, "proxy.conf", text))

    def error(self, text: str) -> str:
        return str(self.assertRaises(ConfigError, self.load, text))

    def test_defaults_change_nothing(self) -> None:
        self.assertEqual(self.load("[proxy]\n").affinity, AffinityConfig(Placement("load")))

    def test_values(self) -> None:
        settings = self.load("[proxy]\nsorting_method = affinity\nread_affinity = r1z1=100, r1=200\n"
                             "write_affinity = r1\nwrite_affinity_node_count = 4\n"
                             "write_affinity_handoff_delete_count = 1\n")
        self.assertEqual(settings.affinity.default, Placement(
            "affinity", ReadAffinity(((Selector(1, 1), 100), (Selector(1), 200))),
            WriteAffinity((Selector(1),), NodeCount(4), 1)))
        self.assertEqual(self.load("[proxy]\nwrite_affinity = r2z3\n").affinity.default.write,
                         WriteAffinity((Selector(2, 3),), NodeCount(2, True), None))

    def test_per_policy_sections_override_the_proxy(self) -> None:
        settings = self.load("[proxy]\nsorting_method = affinity\nread_affinity = r1=100\nwrite_affinity = r1\n"
                             "[proxy:policy:1]\nread_affinity = r2=100\nwrite_affinity =\n")
        self.assertEqual(settings.affinity.for_policy(None).read, ReadAffinity(((Selector(1), 100),)))
        self.assertEqual(settings.affinity.for_policy(0), settings.affinity.default)
        policy = settings.affinity.for_policy(1)
        self.assertEqual((policy.sorting_method, policy.read, policy.write), ("affinity", ReadAffinity(((Selector(2), 100),)), None))
        ring_only = self.load("[proxy]\nsorting_method = affinity\nread_affinity = r1=100\n"
                              "[proxy:policy:1]\nsorting_method = ring\n").affinity.for_policy(1)
        self.assertEqual(ring_only, Placement("ring"))

    def test_malformed_values_stop_the_start_naming_the_option(self) -> None:
        cases = [
            ("[proxy]\nsorting_method = affinity\nread_affinity = r1:100\n",
             f"{self.conf}: [proxy]: read_affinity: 'r1:100' is not r<region>=<priority> or"
             " r<region>z<zone>=<priority> (e.g. r1z1=100, r1=200)"),
            ("[proxy]\nread_affinity = r1=100\n",
             f"{self.conf}: [proxy]: read_affinity: needs sorting_method = affinity (it is load): it would be ignored"),
            ("[proxy]\nwrite_affinity = region1\n",
             f"{self.conf}: [proxy]: write_affinity: 'region1' is not r<region> or r<region>z<zone> (e.g. r1, r2z1)"),
            ("[proxy]\nwrite_affinity = r1\nwrite_affinity_node_count = 2 * devices\n",
             f"{self.conf}: [proxy]: write_affinity_node_count: '2 * devices' is neither a number of nodes nor"
             " '<N> * replicas' (e.g. 2 * replicas)"),
            ("[proxy]\nwrite_affinity_node_count = 3\n",
             f"{self.conf}: [proxy]: write_affinity_node_count: needs write_affinity: it would be ignored"),
            ("[proxy]\nsorting_method = timing\n", f"{self.conf}: [proxy]: sorting_method: timing (Swift's sort by"
             " response time) is not built here: load orders by the devices' own load figures; or ring, or affinity"),
            ("[proxy]\n[proxy:policy:7]\nsorting_method = ring\n",
             f"{self.conf}: [proxy:policy:7]: there is no storage policy 7 in the cluster file"),
            ("[proxy]\n[proxy:policy:1]\nbind_port = 1\n", f"{self.conf}: [proxy:policy:1]: bind_port: unknown option"),
        ]
        for text, message in cases:
            self.assertEqual(self.error(text), message)
            self.assertNotIn("\n", message)


class TwoRegionCase(controllers.ControllerCase):
    """The controllers over account, container and object rings of two regions."""

    def setUp(self) -> None:
        super().setUp()
        directory = temp_dir(self)
        self.ring = two_regions(directory / "object.ring.gz", 6000)
        self.rings = RingSet(account=two_regions(directory / "account.ring.gz", 6002),
                             container=two_regions(directory / "container.ring.gz", 6001), objects={0: self.ring})
        self.context = evolve(self.context, rings=self.rings)

    def use(self, **placement) -> None:
        self.context = evolve(self.context, affinity=AffinityConfig(Placement(**placement)))
        self.app = ProxyApplication(self.context, InfoRegistry())

    def named(self, local_primaries: int) -> tuple[str, list[Node], list[Node]]:
        """An object name whose partition has ``local_primaries`` primaries in region 1."""
        for number in range(1000):
            name = f"o{number}"
            part = self.ring.get_part(controllers.ACCOUNT, "c", name)
            primaries = self.ring.get_part_nodes(part)
            if regions(primaries).count(1) == local_primaries:
                return name, primaries, list(self.ring.get_more_nodes(part))
        raise AssertionError("no such partition")

    def call(self, method: str, name: str, headers: dict[str, str] | None = None, body=None):
        request = controllers.SwiftRequest(method, f"/v1/{controllers.ACCOUNT}/c/{name}",
                                           controllers.HeaderMap(headers or {}), trans_id="tx-aff",
                                           **({"body": body} if body is not None else {}))
        return self.successResultOf(Deferred.fromCoroutine(self.app(request)))

    def asked(self, method: str) -> list[str]:
        return [call.node for call in self.backend.calls if call.method == method and call.node.endswith(
            tuple(f"/r{r}z{z}" for r in (1, 2) for z in range(1, 5))) and ":6000/" in call.node]


class ReadOrderTests(TwoRegionCase):
    def test_get_asks_region_2_first_then_the_rest_in_ring_order(self) -> None:
        name, primaries, handoffs = self.named(2)  # one primary in region 2, rarely the first
        self.use(sorting_method="affinity", read=ReadAffinity(((Selector(2), 100),)))
        self.backend.default = lambda call: BackendResponse(404, {}, b"") if call.method == "GET" else \
            controllers.usual(call)
        self.assertEqual(self.call("GET", name).status, 404)
        window = handoffs[:3]
        expected = ([n for n in primaries if n.region == 2] + [n for n in primaries if n.region == 1]
                    + [n for n in window if n.region == 2] + [n for n in window if n.region == 1])
        self.assertEqual(self.asked("GET"), [controllers.key(n) for n in expected])

    def test_the_first_answer_comes_from_the_preferred_zone(self) -> None:
        name, primaries, _ = self.named(2)
        local = [n for n in primaries if n.region == 1]
        self.use(sorting_method="affinity",
                 read=ReadAffinity(((Selector(1, local[1].zone), 100), (Selector(1), 200))))
        self.backend.default = lambda call: BackendResponse(200, {"etag": "e", "content-length": "5"}, b"hello")
        self.assertEqual(self.call("GET", name).status, 200)
        self.assertEqual(self.asked("GET"), [controllers.key(local[1])])
        self.backend.calls.clear()
        self.assertEqual(self.call("HEAD", name).status, 200)
        self.assertEqual(self.asked("HEAD"), [controllers.key(local[1])])

    def test_ring_order_without_affinity(self) -> None:
        name, primaries, _ = self.named(2)
        self.use(sorting_method="ring")
        self.backend.default = lambda call: BackendResponse(200, {"etag": "e", "content-length": "5"}, b"hello")
        self.call("GET", name)
        self.assertEqual(self.asked("GET"), [controllers.key(primaries[0])])

    def test_unmatched_nodes_keep_their_ring_order_last(self) -> None:
        nodes = self.ring.get_part_nodes(3) + list(self.ring.get_more_nodes(3))
        affinity = ReadAffinity(((Selector(2, 4), 10),))
        ordered = affinity.order(nodes)
        self.assertEqual(ordered, [n for n in nodes if (n.region, n.zone) == (2, 4)]
                         + [n for n in nodes if (n.region, n.zone) != (2, 4)])
        self.assertEqual(affinity.priority(Node(self.ring.devices[0])), UNMATCHED)

    def test_per_policy_order_and_ec_sources(self) -> None:
        """EC GETs take their first k sources from the same order (ec_get uses _read_order)."""
        primaries = self.ring.get_part_nodes(5)
        self.context = evolve(self.context, affinity=AffinityConfig(
            Placement("ring"), {1: Placement("affinity", ReadAffinity(((Selector(2), 1),)))}))
        self.assertEqual(list(_read_order(self.context, primaries, iter(()), 0)), primaries)
        self.assertEqual(list(_read_order(self.context, primaries, iter(()), 1)),
                         [n for n in primaries if n.region == 2] + [n for n in primaries if n.region == 1])

    def test_handoffs_are_walked_only_when_wanted(self) -> None:
        walked = []

        def handoffs():
            walked.append(True)
            yield from self.ring.get_more_nodes(5)

        self.use(sorting_method="affinity", read=ReadAffinity(((Selector(2), 1),)))
        order = _read_order(self.context, self.ring.get_part_nodes(5), handoffs())
        first = [next(order) for _ in range(3)]
        self.assertEqual((walked, regions(first)[0]), ([], 2))
        self.assertEqual(len(list(order)), 3)
        self.assertEqual(walked, [True])

    def test_container_reads_follow_read_affinity(self) -> None:
        ring = self.rings.container
        for number in range(100):
            part = ring.get_part(controllers.ACCOUNT, f"c{number}")
            primaries = ring.get_part_nodes(part)
            if primaries[0].region == 1:
                break
        self.use(sorting_method="affinity", read=ReadAffinity(((Selector(2), 100),)))
        info = self.successResultOf(Deferred.fromCoroutine(container_info(self.context, controllers.ACCOUNT,
                                                                          f"c{number}")))
        self.assertTrue(info.exists)
        heads = [c.node for c in self.backend.calls if c.method == "HEAD"]
        self.assertEqual(heads, [controllers.key(next(n for n in primaries if n.region == 2))])


class WriteAffinityTests(TwoRegionCase):
    def put(self, name: str) -> int:
        return self.call("PUT", name, {"Content-Length": "4"}, Chunks([b"data"])).status

    def test_put_goes_to_the_local_primary_and_local_handoffs(self) -> None:
        name, primaries, handoffs = self.named(1)
        self.use(write=WriteAffinity((Selector(1),)))
        self.assertEqual(self.put(name), 201)
        expected = [n for n in primaries if n.region == 1] + [n for n in handoffs if n.region == 1][:2]
        self.assertEqual(sorted(self.asked("PUT")), sorted(controllers.key(n) for n in expected))
        stored = {c.node for c in self.backend.calls if c.method == "PUT" and bytes(c.received) == b"data"}
        self.assertEqual(stored, {controllers.key(n) for n in expected})

    def test_without_write_affinity_the_primaries(self) -> None:
        name, primaries, _ = self.named(1)
        self.use()
        self.assertEqual(self.put(name), 201)
        self.assertEqual(self.asked("PUT"), [controllers.key(n) for n in primaries])

    def test_the_node_count_bounds_the_local_nodes(self) -> None:
        name, primaries, handoffs = self.named(1)
        self.use(write=WriteAffinity((Selector(1),), NodeCount(2)))  # the local primary and one local handoff
        self.assertEqual(self.put(name), 201)
        local_primary = next(n for n in primaries if n.region == 1)
        expected = [local_primary, next(n for n in handoffs if n.region == 1),
                    next(n for n in primaries if n.region == 2)]
        self.assertEqual(sorted(self.asked("PUT")), sorted(controllers.key(n) for n in expected))

    def test_a_failed_local_node_is_replaced_by_the_next_local_one(self) -> None:
        name, primaries, handoffs = self.named(1)
        local_handoffs = [n for n in handoffs if n.region == 1]
        self.backend.nodes[controllers.key(local_handoffs[0])] = reply(507)
        self.use(write=WriteAffinity((Selector(1),)))
        self.assertEqual(self.put(name), 201)
        stored = {c.node for c in self.backend.calls if c.method == "PUT" and bytes(c.received) == b"data"}
        expected = [n for n in primaries if n.region == 1] + local_handoffs[1:3]
        self.assertEqual(stored, {controllers.key(n) for n in expected})

    def test_remote_nodes_when_the_local_ones_are_gone(self) -> None:
        name, primaries, handoffs = self.named(1)
        for node in [*primaries, *handoffs]:
            if node.region == 1:
                self.backend.nodes[controllers.key(node)] = controllers.down
        self.use(write=WriteAffinity((Selector(1),)))
        self.assertEqual(self.put(name), 201)
        stored = {c.node for c in self.backend.calls if c.method == "PUT" and bytes(c.received) == b"data"}
        remote = [n for n in primaries if n.region == 2] + [n for n in handoffs if n.region == 2]
        self.assertEqual(stored, {controllers.key(n) for n in remote[:3]})

    def test_delete_asks_the_local_handoffs_too(self) -> None:
        name, primaries, handoffs = self.named(1)
        local_handoffs = [n for n in handoffs if n.region == 1][:2]  # auto: 3 replicas - 1 local primary
        holders = {controllers.key(n) for n in primaries if n.region == 1} | {controllers.key(n) for n in local_handoffs}
        self.backend.default = lambda call: (
            BackendResponse(204 if call.node in holders else 404, {}, b"") if call.method == "DELETE"
            else controllers.usual(call))
        self.use()
        self.assertEqual(self.call("DELETE", name).status, 404)  # 1 of 3 primaries held it
        self.backend.calls.clear()
        self.use(write=WriteAffinity((Selector(1),)))
        self.assertEqual(self.call("DELETE", name).status, 204)  # 3 of the 5 nodes asked
        self.assertEqual(self.asked("DELETE"), [controllers.key(n) for n in [*primaries, *local_handoffs]])
        self.backend.calls.clear()
        self.use(write=WriteAffinity((Selector(1),), handoff_delete_count=0))
        self.assertEqual(self.call("DELETE", name).status, 404)
        self.assertEqual(self.asked("DELETE"), [controllers.key(n) for n in primaries])


class SlotNodesTests(TwoRegionCase):
    """The nodes a PUT's slots use, replicated and erasure-coded (slot i: fragment i)."""

    def test_fragments_keep_to_their_own_primary_or_handoffs(self) -> None:
        name, primaries, handoffs = self.named(1)
        part = self.ring.get_part(controllers.ACCOUNT, "c", name)
        nodes = SlotNodes(primaries, lambda: self.ring.get_more_nodes(part), WriteAffinity((Selector(1),)),
                          per_index=True)
        local_handoffs = [n for n in handoffs if n.region == 1]
        remote = [i for i, n in enumerate(primaries) if n.region == 2]
        starts = list(primaries)
        for index, handoff in zip(remote, local_handoffs):
            starts[index] = handoff
        self.assertEqual(nodes.starts, starts)
        # a remote slot falls back to the local handoffs left, then its own primary, then handoffs
        first, second = remote
        self.assertEqual(nodes.next(second), local_handoffs[2])
        self.assertEqual(nodes.next(second), primaries[second])
        self.assertEqual(nodes.next(first), primaries[first])
        local = primaries.index(next(n for n in primaries if n.region == 1))
        rest = [nodes.next(local) for _ in range(3)]
        self.assertEqual(rest, [n for n in handoffs if n.region == 2] + [None])
        self.assertIsNone(nodes.next(first))

    def test_replicated_slots_share_one_local_first_order(self) -> None:
        name, primaries, handoffs = self.named(2)
        part = self.ring.get_part(controllers.ACCOUNT, "c", name)
        nodes = SlotNodes(primaries, lambda: self.ring.get_more_nodes(part), WriteAffinity((Selector(1),)))
        local = [n for n in primaries if n.region == 1] + [n for n in handoffs if n.region == 1]
        self.assertEqual(nodes.starts, local[:3])
        rest = [nodes.next(0) for _ in range(len(primaries) + len(handoffs) - 3)]
        self.assertEqual(rest, local[3:6] + [n for n in primaries if n.region == 2]
                         + [n for n in handoffs if n not in local[:6]])
        self.assertIsNone(nodes.next(0))


class _InlineEC(ECService):
    """The EC codecs, run inline (a unit test on a Clock has no thread pool)."""

    def run(self, function, *args):
        return maybeDeferred(function, *args)


class ECWriteAffinityTests(TwoRegionCase):
    """An EC PUT (4+2 over the two regions) under write_affinity = r1, through the controller."""

    def setUp(self) -> None:
        super().setUp()
        self.ec_ring = two_regions(temp_dir(self) / "object-1.ring.gz", 6000, replicas=6)
        policy = StoragePolicy(1, "ec", ERASURE_CODING, ec=ECParameters("liberasurecode_rs_vand", 4, 2, 4096))
        self.context = evolve(
            self.context, ec=_InlineEC(self.clock),
            policies=PolicyCollection((StoragePolicy(0, "gold", is_default=True), policy)),
            rings=RingSet(account=self.rings.account, container=self.rings.container,
                          objects={0: self.ring, 1: self.ec_ring}))

        def answer(call):
            status = {"HEAD": 204, "PUT": 201, "POST": 202}.get(call.method, 200)
            return BackendResponse(status, {"x-backend-storage-policy-index": "1"}, b"")
        self.backend.default = answer

    def test_local_handoffs_take_the_remote_primaries_fragments(self) -> None:
        part = self.ec_ring.get_part(controllers.ACCOUNT, "c", "o")
        primaries = self.ec_ring.get_part_nodes(part)
        local_handoffs = [n for n in self.ec_ring.get_more_nodes(part) if n.region == 1]
        remote = [n.index for n in primaries if n.region == 2]
        self.assertTrue(remote and local_handoffs)  # the fixture: something to move
        self.use(write=WriteAffinity((Selector(1),)))
        body = bytes(range(256)) * 40
        self.assertEqual(self.call("PUT", "o", {"Content-Length": str(len(body))}, Chunks([body])).status, 201)
        expected = {controllers.key(n): str(n.index) for n in primaries}
        for index, handoff in zip(remote, local_handoffs):
            del expected[controllers.key(primaries[index])]
            expected[controllers.key(handoff)] = str(index)
        puts = {c.node: c.headers[FRAG_INDEX] for c in self.backend.calls if c.method == "PUT"}
        self.assertEqual(puts, expected)
        self.assertEqual(len(set(puts.values())), 6)

    def test_without_write_affinity_the_primaries(self) -> None:
        part = self.ec_ring.get_part(controllers.ACCOUNT, "c", "o")
        self.use()
        body = b"x" * 5000
        self.assertEqual(self.call("PUT", "o", {"Content-Length": str(len(body))}, Chunks([body])).status, 201)
        puts = {c.node: c.headers[FRAG_INDEX] for c in self.backend.calls if c.method == "PUT"}
        self.assertEqual(puts, {controllers.key(n): str(n.index) for n in self.ec_ring.get_part_nodes(part)})
