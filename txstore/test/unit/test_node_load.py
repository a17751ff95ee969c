"""
The proxy's view of the nodes' load (`txstore.proxy.node_load`) on a `Clock`: figures noted,
aged and forgotten, and the order they give; then the object controller against the in-memory
backend: a loaded primary is read last, error-limited nodes stay last, writes do not move.
"""

from __future__ import annotations

from attrs import evolve, frozen
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.backend_client import BackendResponse
from txstore.proxy.application import ProxyApplication
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.obj_get import _read_order
from txstore.proxy.info import InfoRegistry
from txstore.proxy.node_load import NodeLoad
from txstore.test.unit import test_proxy_controllers as controllers
from txstore.test.unit.test_middleware import Chunks


@frozen
class N:
    ip: str
    port: int = 6000
    device_name: str = "sda"


A, B, C, D = N("10.0.0.1"), N("10.0.0.2"), N("10.0.0.3"), N("10.0.0.4")


class NodeLoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.loads = NodeLoad(self.clock.seconds)

    def test_unknown_nodes_keep_the_ring_order(self) -> None:
        nodes = [A, B, C]
        self.assertIs(self.loads.order(nodes), nodes)
        self.assertIsNone(self.loads.load(A))
        self.loads.record(D, "3.0")  # another device's figure changes nothing here
        self.assertIs(self.loads.order(nodes), nodes)

    def test_a_loaded_node_goes_after_the_others_in_ring_order(self) -> None:
        self.loads.record(A, "1.50")
        self.loads.record(C, "0.10")
        self.assertEqual(self.loads.order([A, B, C]), [B, C, A])
        self.loads.record(B, "0.80")
        self.assertEqual(self.loads.order([A, B, C]), [C, B, A])

    def test_devices_of_one_node_are_told_apart(self) -> None:
        self.loads.record(N("10.0.0.1", 6000, "sdb"), "2.0")
        self.assertEqual(self.loads.order([N("10.0.0.1", 6000, "sdb"), A]), [A, N("10.0.0.1", 6000, "sdb")])
        self.assertIsNone(self.loads.load(N("10.0.0.1", 6010, "sdb")))

    def test_differences_within_a_band_keep_the_ring_order(self) -> None:
        self.loads.record(A, "0.20")
        self.loads.record(B, "0.01")
        self.assertEqual(self.loads.order([A, B, C]), [A, B, C])
        self.loads.record(A, "0.30")
        self.assertEqual(self.loads.order([A, B, C]), [B, C, A])

    def test_a_figure_counts_whole_then_halves_then_is_forgotten(self) -> None:
        self.loads.record(A, "2.0")
        self.clock.advance(1.0)
        self.assertEqual(self.loads.load(A), 2.0)
        self.clock.advance(2.0)  # one half-life past fresh
        self.assertAlmostEqual(self.loads.load(A), 1.0)
        self.assertEqual(self.loads.order([A, B]), [B, A])
        self.clock.advance(6.0)  # 2 * 2**-4: under a band, among the idle again (it is tried)
        self.assertAlmostEqual(self.loads.load(A), 0.125)
        self.assertEqual(self.loads.order([A, B]), [A, B])
        self.clock.advance(30.0)
        self.assertIsNone(self.loads.load(A))
        self.assertEqual(self.loads.known(), 0)

    def test_a_new_figure_replaces_the_old(self) -> None:
        self.loads.record(A, "3.0")
        self.loads.record(A, "0.0")
        self.assertEqual((self.loads.load(A), self.loads.order([A, B])), (0.0, [A, B]))

    def test_garbage_is_not_a_figure(self) -> None:
        for value in (None, "", "busy", "-1", "nan", "inf", "1e999"):
            self.loads.record(A, value)
        self.assertEqual(self.loads.known(), 0)
        self.assertEqual(self.loads.order([]), [])


class LoadedReadTests(controllers.ControllerCase):
    """The object controller with a view of the nodes' load, against the in-memory backend."""

    def setUp(self) -> None:
        super().setUp()
        self.loads = NodeLoad(self.clock.seconds)
        self.context = evolve(self.context, loads=self.loads)
        self.app = ProxyApplication(self.context, InfoRegistry())
        self.object_ring = self.rings.object_ring(0)
        self.opart = self.object_ring.get_part(controllers.ACCOUNT, "c", "o")
        self.nodes = {controllers.key(n): n for n in [*self.object_ring.get_part_nodes(self.opart),
                                                      *self.object_ring.get_more_nodes(self.opart)]}
        self.oprimary = [controllers.key(n) for n in self.object_ring.get_part_nodes(self.opart)]
        self.ohandoff = [controllers.key(n) for n in self.object_ring.get_more_nodes(self.opart)]

    # the object controller tests' helpers (their self.app is this one's, with the view)
    call = controllers.ObjectControllerTests.call
    read_all = controllers.ObjectControllerTests.read_all

    def node(self, name: str):
        return self.nodes[name]

    def answering(self, loads: dict[str, str]) -> None:
        """Every node answers its GET with the load given (none for the others)."""
        def answer(call):
            headers = {"etag": "e", "content-length": "5"}
            if call.node in loads:
                headers["x-backend-device-load"] = loads[call.node]
            return BackendResponse(200, headers, b"hello")
        self.backend.default = answer

    def test_a_loaded_primary_is_read_last(self) -> None:
        first, second, third = self.oprimary
        self.answering({first: "2.00", second: "0.05", third: "0.60"})
        self.assertEqual(self.read_all(self.call("GET")), b"hello")
        self.assertEqual(self.backend.asked("GET"), [first])  # nothing known yet: the ring's order
        self.backend.calls.clear()
        self.backend.nodes[second] = reply_404 = lambda call: BackendResponse(404, {"x-backend-device-load": "0.05"}, b"")
        self.backend.nodes[third] = reply_404
        self.assertEqual(self.call("GET").status, 200)
        # first is known to be busy: the others first (in ring order: third is not known yet)
        self.assertEqual(self.backend.asked("GET"), [second, third, first])
        self.backend.calls.clear()
        self.backend.nodes[third] = lambda call: BackendResponse(404, {"x-backend-device-load": "0.60"}, b"")
        self.call("GET")
        self.call("GET")
        self.assertEqual(self.backend.asked("GET")[-3:], [second, third, first])  # 0.05, 0.60, 2.00
        self.backend.calls.clear()
        self.call("HEAD")
        self.assertEqual(self.backend.asked("HEAD"), [second, third, first])

    def test_an_answer_from_a_busy_device_is_left_for_an_idler_primary(self) -> None:
        first, second, third = self.oprimary
        big = b"x" * (2 * 1024 * 1024)
        older = b"o" * (2 * 1024 * 1024)
        loads = {first: "2.00", second: "0.10", third: "0.10"}
        stamps = {}

        def answer(call):
            body = older if stamps.get(call.node) == "0000000001.00000" else big
            return BackendResponse(200, {"etag": "e", "content-length": str(len(body)),
                                         "x-backend-timestamp": stamps.get(call.node, "0000000002.00000"),
                                         "x-backend-device-load": loads.get(call.node, "0.10")}, body)
        self.backend.default = answer
        self.assertEqual(self.read_all(self.call("GET")), big)
        # nothing was known: first asked in ring order; its answer (headers only) showed it busy
        self.assertEqual(self.backend.asked("GET"), [first, second])
        # busy alike, or less than a round of the pool apart: read where answered
        self.backend.calls.clear()
        self.clock.advance(60)  # every figure forgotten
        loads.update({second: "1.50", third: "1.50"})
        self.loads.record(self.node(second), "1.50")
        self.loads.record(self.node(third), "1.50")
        self.assertEqual(self.read_all(self.call("GET")), big)
        self.assertEqual(self.backend.asked("GET"), [first])
        # the idler one has an older version, or none: the busy one's answer is read after all
        for idler_answers in ("old", "404", "503"):
            self.backend.calls.clear()
            self.clock.advance(60)
            loads.update({second: "0.10", third: "0.10"})
            self.backend.nodes.pop(second, None)
            stamps.pop(second, None)
            if idler_answers == "old":
                stamps[second] = "0000000001.00000"
            else:
                self.backend.nodes[second] = lambda call, status=int(idler_answers): BackendResponse(status, {}, b"")
            self.assertEqual(self.read_all(self.call("GET")), big, idler_answers)
            self.assertEqual(self.backend.asked("GET"), [first, second], idler_answers)
        # X-Newest: the newest copy is read wherever it is
        self.backend.nodes.pop(second, None)
        stamps.clear()
        self.backend.calls.clear()
        self.clock.advance(60)
        self.assertEqual(self.read_all(self.call("GET", headers={"X-Newest": "true"})), big)
        self.assertNotIn(second, [n for n in self.backend.asked("GET")])

    def test_small_answers_are_read_where_they_come_from(self) -> None:
        first, second, _third = self.oprimary
        self.answering({first: "3.00", second: "0.00"})
        self.assertEqual(self.read_all(self.call("GET")), b"hello")
        self.assertEqual(self.backend.asked("GET"), [first])

    def test_the_busy_node_is_tried_again_once_its_figure_is_old(self) -> None:
        first = self.oprimary[0]
        self.answering({first: "2.00"})
        self.call("GET")
        self.clock.advance(1)
        self.backend.calls.clear()
        self.call("GET")
        self.assertEqual(self.backend.asked("GET"), [self.oprimary[1]])
        self.clock.advance(8)  # 2.0 halved four times: among the idle again
        self.backend.calls.clear()
        self.call("GET")
        self.assertEqual(self.backend.asked("GET"), [first])

    def test_an_error_limited_node_stays_last_however_idle(self) -> None:
        first, second, third = self.oprimary
        for node in self.oprimary:
            self.loads.record(self.node(node), {first: "0.00", second: "0.00", third: "1.00"}[node])
        for _ in range(3):
            self.errors.error(self.node(first))
        self.backend.nodes = {node: (lambda call: BackendResponse(404, {}, b"")) for node in self.nodes}
        self.assertEqual(self.call("GET").status, 404)
        self.assertEqual(self.backend.asked("GET"), [second, third, *self.ohandoff, first])

    def test_writes_keep_to_the_primaries(self) -> None:
        for node in self.oprimary[:2]:
            self.loads.record(self.node(node), "5.0")
        response = self.call("PUT", {"Content-Length": "4"}, Chunks([b"data"]))
        self.assertEqual(response.status, 201)
        self.assertEqual([c.node for c in self.backend.calls if c.method == "PUT"], self.oprimary)

    def test_read_order_of_the_fragment_sources_too(self) -> None:
        """EC reads take their sources from the same order (ec_get imports _read_order)."""
        part = self.opart
        primaries = self.object_ring.get_part_nodes(part)
        self.loads.record(primaries[0], "1.0")
        order = list(_read_order(self.context, primaries, self.object_ring.get_more_nodes(part)))
        self.assertEqual(order[:3], [primaries[1], primaries[2], primaries[0]])
        context = ProxyContext(**{**{a: getattr(self.context, a) for a in ("reactor", "rings", "policies", "client",
                                                                           "cache")}})
        self.assertEqual(list(_read_order(context, primaries, iter(())))[:3], primaries)  # no view: ring order
