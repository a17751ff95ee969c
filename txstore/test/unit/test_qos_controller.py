"""
Tenants' cluster-wide caps (`txstore.qos.controller`, `txstore.qos.shares`): how a cap is split,
one round over fake nodes, the node's PUT /qos/shares, and three nodes with real schedulers and
meters on one Clock whose controller keeps a tenant reading everywhere at its cap.
"""

from __future__ import annotations

import json

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from txstore.common.backend_client import BackendResponse
from txstore.common.policies import DEFAULT_POLICIES
from txstore.common.streaming import StreamingSite
from txstore.proxy.context import ProxyContext
from txstore.proxy.info_cache import InMemoryInfoCache
from txstore.proxy.server import ProxyServer, stages_from
from txstore.qos.classes import IOClass, IOClasses, IOSpec
from txstore.qos.controller import RESERVE, TenantShareController, split
from txstore.qos.meter import BandwidthMeter
from txstore.qos.scheduler import READ, IOScheduler
from txstore.qos.shares import SharesReceiver
from txstore.node.server import NodeServer
from txstore.test.support import temp_dir
from txstore.test.unit.test_proxy_controllers import FakeBackend, fake_rings
from txstore.test.unit.test_qos_scheduler import HeldPool

MiB = 1024 * 1024
A, B, C = ("10.0.0.1", 6200), ("10.0.0.2", 6200), ("10.0.0.3", 6200)


class SplitTests(SynchronousTestCase):
    def test_max_min_fair_where_active_with_a_reserve_for_the_others(self) -> None:
        # B moved 10 without waiting: it is given 12.5; A waited: it takes the rest of 90
        shares = split(100.0, {A: {"bps": 30, "throttled": True}, B: {"bps": 10, "throttled": False}}, [A, B, C])
        self.assertEqual(shares, {A: 77.5, B: 12.5, C: 10.0})

    def test_nodes_that_waited_share_equally_whatever_they_had(self) -> None:
        shares = split(90.0, {A: {"bps": 80, "throttled": True}, B: {"bps": 10, "throttled": True}}, [A, B])
        self.assertEqual(shares, {A: 45.0, B: 45.0})

    def test_what_nobody_wants_is_room_to_grow(self) -> None:
        shares = split(100.0, {A: {"bps": 20, "throttled": False}, B: {"bps": 20, "throttled": False}}, [A, B])
        self.assertEqual(shares, {A: 50.0, B: 50.0})

    def test_no_demand_anywhere_is_an_even_split(self) -> None:
        self.assertEqual(split(30.0, {A: {"bps": 0, "throttled": False}}, [A, B, C]), {A: 10.0, B: 10.0, C: 10.0})


class FakeClient:
    """Nodes answering /recon/bandwidth with given reports and taking PUT /qos/shares."""

    def __init__(self, reports) -> None:
        self.reports = reports  # (ip, port) -> report dict, or an exception to raise
        self.sent: dict[tuple[str, int], dict] = {}

    def request(self, method, host, port, path, headers=None, body=None, timeout=None, query=""):
        assert timeout is not None and timeout <= 1.0
        node = (host, port)
        report = self.reports[node]
        if isinstance(report, Exception):
            return Deferred.fromCoroutine(self._fail(report))
        if method == "GET":
            assert path == "/recon/bandwidth"
            return succeed(BackendResponse(200, {}, json.dumps(report).encode()))
        assert (method, path) == ("PUT", "/qos/shares")
        self.sent[node] = json.loads(body)
        return succeed(BackendResponse(204, {}, b""))

    async def _fail(self, error):
        raise error


class RoundTests(SynchronousTestCase):
    def test_a_round_reads_every_node_and_sends_each_its_shares(self) -> None:
        tenants = {"AUTH_t": {"bps": 3.0 * MiB, "cap": 8.0 * MiB, "throttled": True},
                   "AUTH_free": {"bps": 5.0 * MiB, "cap": 0, "throttled": False}}
        client = FakeClient({A: {"tenants": tenants}, B: {"tenants": {"AUTH_t": {"bps": 2.0 * MiB, "cap": 8.0 * MiB,
                                                                               "throttled": False}}},
                             C: ConnectionRefusedError()})
        controller = TenantShareController(client, lambda: [A, B, C, A], interval=1.0)
        self.successResultOf(controller.round())
        self.assertEqual(set(client.sent), {A, B})  # C did not answer: nothing sent there
        self.assertEqual(client.sent[A]["ttl"], 5.0)
        a, b = client.sent[A]["shares"]["AUTH_t"], client.sent[B]["shares"]["AUTH_t"]
        self.assertAlmostEqual(b, 2.5 * MiB)  # B did not wait: what it moved, and a quarter more
        self.assertAlmostEqual(a + b, 8 * MiB * (1 - RESERVE))  # A waited: the rest
        self.assertAlmostEqual(controller.last_shares[C]["AUTH_t"], 8 * MiB * RESERVE)
        self.assertNotIn("AUTH_free", client.sent[A]["shares"])  # uncapped tenants are not the controller's


class MalformedReportTests(SynchronousTestCase):
    def test_answers_out_of_shape_are_left_out_and_the_loop_goes_on(self) -> None:
        good = {"tenants": {"AUTH_t": {"bps": 1.0 * MiB, "cap": 4.0 * MiB, "throttled": False}}}
        for bad in ([], {"tenants": []}, {"tenants": {"t": 5}}, {"tenants": {"t": {"cap": "x", "bps": 1}}},
                    {"tenants": {"t": {"cap": float("nan"), "bps": 1}}}, {"nothing": 1}):
            client = FakeClient({A: good, B: bad})
            controller = TenantShareController(client, lambda: [A, B], interval=1.0)
            self.successResultOf(controller.round())
            self.assertEqual(set(client.sent), {A, B}, bad)  # B still gets its share of AUTH_t
            self.assertNotIn("t", client.sent[A]["shares"], bad)
        # a round that fails for another reason is logged, and the loop is not stopped by it
        def broken():
            raise RuntimeError("rings unreadable")
        controller = TenantShareController(FakeClient({}), broken, interval=1.0)
        clock = Clock()
        loop = controller.service(clock)
        loop.startService()
        for _ in range(3):
            clock.advance(1)
        self.assertTrue(loop.running)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 4)
        loop.stopService()


class FakeBody:
    def __init__(self, data: bytes) -> None:
        self.parts = [data[:5], data[5:], b""]

    def read(self):
        return succeed(self.parts.pop(0))


class FakeRequest:
    def __init__(self, method: bytes, data: bytes) -> None:
        self.method = method
        self.body = FakeBody(data)


class ReceiverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.scheduler = IOScheduler(HeldPool(), IOClasses({"m": IOClass("m", tenant_rate=4 * MiB),
                                                            "background": IOClass("background")}, "m"), self.clock)
        self.receiver = SharesReceiver(self.scheduler)

    def put(self, body: bytes, method: bytes = b"PUT"):
        return self.successResultOf(Deferred.fromCoroutine(self.receiver.handle(FakeRequest(method, body))))

    def test_shares_are_set(self) -> None:
        response = self.put(json.dumps({"ttl": 5, "shares": {"AUTH_t": MiB}}).encode())
        self.assertEqual(response.status, 204)
        self.assertEqual(self.scheduler._shares, {"AUTH_t": MiB})

    def test_bad_bodies_change_nothing(self) -> None:
        for body in (b"not json", b"[]", json.dumps({"ttl": 5}).encode(), json.dumps({"ttl": 0, "shares": {}}).encode(),
                     json.dumps({"ttl": 3600, "shares": {}}).encode(),
                     json.dumps({"ttl": 5, "shares": {"t": -1}}).encode(),
                     json.dumps({"ttl": 5, "shares": {"t": "fast"}}).encode()):
            self.assertEqual(self.put(body).status, 400, body)
        self.assertEqual(self.put(b"{}", method=b"POST").status, 405)
        self.assertEqual(self.scheduler._shares, {})


class ConvergenceTests(SynchronousTestCase):
    """
    Three nodes, each a scheduler over a 'disk' that moves 8 MiB/s, and their meters, on one
    Clock; a tenant capped at 6 MiB/s keeps streams reading on two of them (on node A first,
    then on A and B, then on B alone); the controller runs every second.
    """

    def test_the_cap_holds_cluster_wide_as_demand_moves(self) -> None:
        clock = Clock()
        classes = IOClasses({"m": IOClass("m", tenant_rate=6 * MiB), "background": IOClass("background")}, "m")
        nodes = {}
        for node in (A, B, C):
            pool = HeldPool()
            scheduler = IOScheduler(pool, classes, clock, depth=4)
            meter = BandwidthMeter(scheduler, clock, depth=4)
            meter.startService()
            nodes[node] = (pool, scheduler, meter, SharesReceiver(scheduler))

        class Client:
            def request(self, method, host, port, path, headers=None, body=None, timeout=None, query=""):
                _pool, _scheduler, meter, receiver = nodes[(host, port)]
                if method == "GET":
                    return succeed(BackendResponse(200, {}, json.dumps(meter.report()).encode()))
                return Deferred.fromCoroutine(receiver.handle(FakeRequest(b"PUT", body)))

        controller = TenantShareController(Client(), lambda: list(nodes), interval=1.0)
        loop = controller.service(clock)
        loop.startService()
        readers: dict[tuple[str, int], bool] = {A: True, B: False, C: False}
        moved = {node: 0 for node in nodes}

        async def read(node):
            stream = nodes[node][1].stream("sda", IOSpec("m", "AUTH_t"))
            while readers[node]:
                await stream.run(READ, MiB // 4, lambda: None)
                moved[node] += MiB // 4

        for node in nodes:
            for _ in range(4):
                Deferred.fromCoroutine(read(node)) if readers[node] else None

        def run(seconds: float) -> dict:
            before = dict(moved)
            for _ in range(int(seconds * 100)):
                for pool, *_ in nodes.values():
                    for _ in range(min(len(pool.running), 2)):  # each disk: 2 quarter-MiB jobs per 10 ms
                        pool.finish_one()
                clock.advance(0.01)
            return {node: (moved[node] - before[node]) / seconds for node in nodes}

        run(5)
        alone = run(10)
        self.assertLessEqual(abs(alone[A] - 6 * MiB), 0.15 * 6 * MiB, alone)
        readers[B] = True
        for _ in range(4):
            Deferred.fromCoroutine(read(B))
        run(5)  # converging
        both = run(10)
        self.assertLessEqual(abs(both[A] + both[B] - 6 * MiB), 0.15 * 6 * MiB, both)
        self.assertGreater(min(both[A], both[B]), 1.5 * MiB, both)  # each gets a fair part
        readers[A] = False
        run(5)
        moved_on = run(10)
        self.assertLessEqual(abs(moved_on[B] - 6 * MiB), 0.15 * 6 * MiB, moved_on)
        loop.stopService()
        for _pool, _scheduler, meter, _receiver in nodes.values():
            meter.stopService()
        readers[B] = False
        for pool, *_ in nodes.values():
            while pool.running:
                pool.finish_one()


class OverHTTPTests(TestCase):
    """The node's /qos/shares route, and the proxy's qos filter starting the controller."""

    async def test_the_node_takes_shares_at_its_route(self) -> None:
        scheduler = IOScheduler(HeldPool(), IOClasses({"m": IOClass("m", tenant_rate=MiB),
                                                       "background": IOClass("background")}, "m"), reactor)
        site = StreamingSite(NodeServer(shares=SharesReceiver(scheduler)).resource())
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        base = f"http://127.0.0.1:{port.getHost().port}"
        response = await treq.put(base + "/qos/shares", data=json.dumps({"ttl": 5, "shares": {"AUTH_t": 1000}}).encode(),
                                  pool=pool)
        await treq.content(response)
        self.assertEqual((response.code, scheduler._shares), (204, {"AUTH_t": 1000.0}))
        response = await treq.put(base + "/qos/shares/x", data=b"{}", pool=pool)
        await treq.content(response)
        self.assertNotEqual(response.code, 204)

    def test_the_qos_filter_runs_the_controller_only_where_a_cap_needs_it(self) -> None:
        def built(classes, **options):
            clock = Clock()
            context = ProxyContext(reactor=clock, rings=fake_rings(temp_dir(self)), policies=DEFAULT_POLICIES,
                                   client=FakeBackend(), cache=InMemoryInfoCache(clock.seconds),
                                   io_classes=classes)
            server = ProxyServer(context, stages_from({"qos": {k: str(v) for k, v in options.items()}}))
            return server.background
        capped = IOClasses({"m": IOClass("m", tenant_rate=MiB), "background": IOClass("background")}, "m")
        self.assertEqual(len(built(capped)), 1)
        self.assertEqual(built(capped, controller_interval=0), [])
        self.assertEqual(built(IOClasses({"m": IOClass("m"), "background": IOClass("background")}, "m")), [])
