"""
How long the proxy waits for its nodes (txstore.proxy.controllers.gather and its users): a
write answered once a quorum decided it plus ``post_quorum_timeout``, a slower node's answer
still taken in the background, a silent node error-limited, and concurrent account and
container reads. All on a Clock against the in-memory backend.
"""

from __future__ import annotations

from attrs import evolve
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.backend_client import BackendResponse
from txstore.proxy.controllers.base import read_from_replicas, write_to_replicas
from txstore.proxy.controllers.gather import until_decided
from txstore.proxy.controllers.put_slots import Slot, final_answers, put_decided
from txstore.common.put_connection import NodeAnswer
from txstore.test.backend_fake import Held, reply
from txstore.test.unit.test_proxy_controllers import ACCOUNT, ControllerCase, key


class UntilDecidedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.attempts = [Deferred() for _ in range(3)]

    def gather(self, post_quorum: float = 0.5) -> Deferred:
        return Deferred.fromCoroutine(until_decided(
            self.clock, self.attempts, lambda got: sum(1 for r in got if r == "ok") >= 2, post_quorum))

    def test_everything_when_all_answer_in_time(self) -> None:
        gathered = self.gather()
        for index, attempt in enumerate(self.attempts):
            attempt.callback(f"r{index}")
        self.assertEqual(self.successResultOf(gathered), ["r0", "r1", "r2"])

    def test_the_rest_waited_for_post_quorum_timeout_once_decided(self) -> None:
        gathered = self.gather()
        self.attempts[2].callback("ok")
        self.clock.advance(30)  # undecided: no limit of its own
        self.assertNoResult(gathered)
        self.attempts[0].callback("ok")
        self.clock.advance(0.4)
        self.assertNoResult(gathered)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(gathered), ["ok", None, "ok"])
        self.attempts[1].callback("late")  # a late answer has nowhere to go, and is no error

    def test_a_late_answer_within_the_window_is_kept(self) -> None:
        gathered = self.gather()
        self.attempts[0].callback("ok")
        self.attempts[1].callback("ok")
        self.clock.advance(0.3)
        self.attempts[2].callback("no")
        self.assertEqual(self.successResultOf(gathered), ["ok", "ok", "no"])

    def test_no_wait_at_all_with_a_zero_timeout_but_answers_already_in_are_kept(self) -> None:
        self.attempts[0].callback("ok")
        self.attempts[1].callback("ok")
        gathered = self.gather(post_quorum=0.0)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(gathered), ["ok", "ok", None])

    def test_a_failed_attempt_fails_the_gathering(self) -> None:
        gathered = self.gather()
        self.attempts[1].errback(ValueError("a bug"))
        self.failureResultOf(gathered, ValueError)


class SlowReplicaTests(ControllerCase):
    """A write answered without the slowest replica; reads that do not wait on a silent node."""

    def test_a_write_is_answered_post_quorum_timeout_after_two_replicas(self) -> None:
        silent = Held(BackendResponse(201, {}, b""))
        self.backend.nodes[self.cprimary[1]] = lambda call: silent
        self.context = evolve(self.context, post_quorum_timeout=0.5)
        writing = Deferred.fromCoroutine(write_to_replicas(
            self.context, self.rings.container, self.cpart, "PUT", (ACCOUNT, "c"),
            lambda i, n: {"X-Timestamp": "0000000002.00000"}))
        self.assertNoResult(writing)
        self.clock.advance(0.5)
        status, answers = self.successResultOf(writing)
        self.assertEqual((status, [a.status for a in answers]), (201, [201, 201]))
        silent.release.callback(None)  # its answer comes later, to nobody

    def test_a_write_without_a_quorum_yet_waits_for_the_slow_replica(self) -> None:
        late = Held(BackendResponse(201, {}, b""))
        self.backend.nodes[self.cprimary[0]] = reply(503)
        self.backend.nodes[self.cprimary[1]] = lambda call: late
        for handoff in self.chandoff:
            self.backend.nodes[handoff] = reply(503)
        writing = Deferred.fromCoroutine(write_to_replicas(
            self.context, self.rings.container, self.cpart, "PUT", (ACCOUNT, "c"),
            lambda i, n: {"X-Timestamp": "0000000002.00000"}))
        self.clock.advance(5)
        self.assertNoResult(writing)
        late.release.callback(None)
        status, answers = self.successResultOf(writing)
        self.assertEqual((status, sorted(a.status for a in answers)), (201, [201, 201]))

    def read(self) -> Deferred:
        return Deferred.fromCoroutine(read_from_replicas(
            self.context, self.rings.container, self.cpart, "HEAD", (ACCOUNT, "c"), {"X-Trans-Id": "tx"}))

    def test_concurrent_gets_ask_the_next_node_when_one_is_silent(self) -> None:
        silent = Held(BackendResponse(204, {}, b""))
        self.backend.nodes[self.cprimary[0]] = lambda call: silent
        self.context = evolve(self.context, concurrency_timeout=0.5)
        reading = self.read()
        self.assertEqual(self.backend.asked(), self.cprimary[:1])
        self.clock.advance(0.5)
        self.assertEqual(self.backend.asked(), self.cprimary[:2])
        self.assertEqual(self.successResultOf(reading).response.status, 204)
        silent.release.callback(None)  # answered at last: nobody waits for it

    def test_concurrent_gets_take_whichever_answers_first(self) -> None:
        held = [Held(BackendResponse(204, {"x-which": str(index)}, b"")) for index in range(3)]
        for node, answer in zip(self.cprimary, held):
            self.backend.nodes[node] = lambda call, answer=answer: answer
        self.context = evolve(self.context, concurrency_timeout=0.5)
        reading = self.read()
        self.clock.advance(0.5)
        self.assertNoResult(reading)
        self.clock.advance(0.5)
        self.assertEqual(self.backend.asked(), self.cprimary)
        held[1].release.callback(None)
        self.assertEqual(self.successResultOf(reading).response.header("x-which"), "1")

    def test_a_failure_asks_the_next_node_at_once(self) -> None:
        silent = Held(BackendResponse(204, {}, b""))
        self.backend.nodes[self.cprimary[0]] = lambda call: silent
        self.backend.nodes[self.cprimary[1]] = reply(503)
        self.context = evolve(self.context, concurrency_timeout=0.5)
        reading = self.read()
        self.clock.advance(0.5)  # the second asked, fails: the third at once
        self.assertEqual(self.backend.asked(), self.cprimary)
        self.assertEqual(self.successResultOf(reading).response.status, 204)

    def test_one_node_at_a_time_without_concurrent_gets(self) -> None:
        silent = Held(BackendResponse(204, {}, b""))
        self.backend.nodes[self.cprimary[0]] = lambda call: silent
        reading = self.read()
        self.clock.advance(5)
        self.assertEqual(self.backend.asked(), self.cprimary[:1])
        silent.release.callback(None)
        self.assertEqual(self.successResultOf(reading).response.status, 204)


class FinalAnswerTests(ControllerCase):
    """An object PUT's final answers: the quorum rule, a silent node error-limited."""

    def slots(self, *behaviours) -> list[Slot]:
        ring = self.rings.object_ring(0)
        part = ring.get_part(ACCOUNT, "c", "o")
        slots = []
        for index, (node, behaviour) in enumerate(zip(ring.get_part_nodes(part), behaviours)):
            self.backend.nodes[key(node)] = behaviour
            conn, early = self.successResultOf(Deferred.fromCoroutine(
                self.backend.put(node.ip, node.port, f"/{node.device_name}/{part}/{ACCOUNT}/c/o", {})))
            self.assertIsNone(early)
            conn.write(b"data")
            conn.finish()
            slots.append(Slot(index, node, conn))
        return slots

    def answers(self, slots: list[Slot], quorum: int | None) -> Deferred:
        api = self.api("PUT")
        return Deferred.fromCoroutine(final_answers(self.context, api, slots, quorum))

    def test_a_silent_node_is_not_waited_for_past_the_quorum(self) -> None:
        silent = Held(BackendResponse(201, {}, b""))
        slots = self.slots(reply(201), lambda call: silent, reply(201))
        answering = self.answers(slots, quorum=2)
        self.clock.advance(0.5)
        self.assertEqual([a and a.status for a in self.successResultOf(answering)], [201, None, 201])
        self.assertFalse(self.errors.is_limited(slots[1].node))
        self.clock.advance(self.context.node_timeout)  # still awaited in the background: then limited
        self.assertTrue(self.errors.is_limited(slots[1].node))
        self.assertTrue(slots[1].conn.aborted)

    def test_without_a_quorum_every_answer_is_waited_for_node_timeout(self) -> None:
        silent = Held(BackendResponse(201, {}, b""))
        slots = self.slots(reply(201), lambda call: silent, reply(201))
        answering = self.answers(slots, quorum=None)
        self.clock.advance(self.context.node_timeout - 0.1)
        self.assertNoResult(answering)
        self.clock.advance(0.1)
        self.assertEqual([a and a.status for a in self.successResultOf(answering)], [201, None, 201])
        self.assertTrue(self.errors.is_limited(slots[1].node))

    def test_a_failing_final_answer_counts_as_the_nodes_error(self) -> None:
        for _ in range(self.errors.limit):
            self.assertFalse(self.errors.is_limited(self.object_nodes()[1]))
            slots = self.slots(reply(201), lambda call: Held(BackendResponse(503, {}, b""), succeed(None)), reply(201))
            self.successResultOf(self.answers(slots, quorum=2))
        self.assertTrue(self.errors.is_limited(self.object_nodes()[1]))

    def object_nodes(self):
        ring = self.rings.object_ring(0)
        return ring.get_part_nodes(ring.get_part(ACCOUNT, "c", "o"))

    def test_decided_by_a_quorum_of_one_etag_or_of_another_class(self) -> None:
        def created(etag: str) -> NodeAnswer:
            return NodeAnswer(201, {"etag": etag}, b"")

        self.assertTrue(put_decided([created("a"), created("a")], 2))
        self.assertFalse(put_decided([created("a"), created("b")], 2))
        self.assertFalse(put_decided([created("a"), None], 2))
        self.assertTrue(put_decided([NodeAnswer(503, {}, b""), NodeAnswer(507, {}, b"")], 2))
        self.assertFalse(put_decided([NodeAnswer(503, {}, b""), NodeAnswer(409, {}, b"")], 2))
