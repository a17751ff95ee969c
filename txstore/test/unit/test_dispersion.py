"""
The dispersion tool's pure parts and its node checks: which names populate chooses, the
report's arithmetic and wording, ``[dispersion]`` settings, and HEADs to the primaries against
the in-memory backend on a `Clock`. The whole command runs against a real cluster in
``test_dispersion_integration``.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from attrs import evolve
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from txstore.common.config import ConfigError
from txstore.common.hashing import PathHasher
from txstore.dispersion import names
from txstore.dispersion.cli import main, node_client
from txstore.dispersion.copies import CopyChecker, bounded
from txstore.dispersion.proxy_session import ProxyError, ProxySession
from txstore.dispersion.settings import load_cluster_view, load_settings
from txstore.dispersion.tally import Tally
from txstore.ring.builder import RingBuilder
from txstore.ring.ring import Ring
from txstore.test.backend_fake import FakeBackend, down, reply, slow
from txstore.test.pki import PKI
from txstore.test.support import CLUSTER_CONF, temp_dir, write_file

HASHER = PathHasher(b"", b"testsuffix")
AUTH = {"auth_url": "http://127.0.0.1:1/auth/v1.0", "auth_user": "a:u", "auth_key": "k"}


def part_of(part_power: int, container: str | None = None):
    """The partition of a name as populate computes it, for a ring of ``part_power``."""
    if container is None:
        return lambda name: HASHER.partition(part_power, "AUTH_d", name)
    return lambda name: HASHER.partition(part_power, "AUTH_d", container, name)


class NameTests(SynchronousTestCase):
    def test_wanted_is_the_coverage_rounded_up(self) -> None:
        self.assertEqual(names.wanted(1024, 1.0), 11)  # 10.24 -> 11, as Swift rounds
        self.assertEqual(names.wanted(64, 20), 13)
        self.assertEqual(names.wanted(64, 0.001), 1)  # never an empty sample
        self.assertEqual(names.wanted(64, 100), 64)
        for bad in (0, -1, 100.5):
            self.assertRaises(ValueError, names.wanted, 64, bad)

    def test_one_name_per_partition_covering_the_share(self) -> None:
        for power, coverage in ((6, 20), (8, 10), (10, 1)):
            chosen = names.choose(part_of(power), 2**power, coverage)
            self.assertEqual(len(chosen), names.wanted(2**power, coverage))
            parts = [part for _, part in chosen]
            self.assertEqual(len(set(parts)), len(parts))  # distinct partitions
            for name, part in chosen:  # each partition is the name's, as the ring computes it
                self.assertEqual(part_of(power)(name), part)
                self.assertTrue(names.is_sample_name(name))

    def test_names_are_tried_in_order_and_the_first_of_a_partition_kept(self) -> None:
        chosen = names.choose(part_of(4), 16, 50)
        numbers = [int(name.split("_")[1]) for name, _ in chosen]
        self.assertEqual(numbers, sorted(numbers))
        self.assertEqual(numbers[0], 0)
        for skipped in set(range(numbers[-1])) - set(numbers):  # every name skipped had a taken partition
            self.assertIn(part_of(4)(f"dispersion_{skipped}"), {part for _, part in chosen})

    def test_full_coverage_takes_every_partition_and_more_coverage_keeps_earlier_names(self) -> None:
        every = names.choose(part_of(6, "dispersion_objects"), 64, 100)
        self.assertEqual(sorted(part for _, part in every), list(range(64)))
        small = names.choose(part_of(6, "dispersion_objects"), 64, 10)
        self.assertEqual(every[:len(small)], small)  # a second populate rewrites the same names

    def test_names_that_cannot_cover_fail_clearly(self) -> None:
        self.assertRaises(names.CoverageError, names.choose, lambda name: 0, 64, 50)

    def test_container_names(self) -> None:
        self.assertEqual(names.objects_container(0), "dispersion_objects")
        self.assertEqual(names.objects_container(2), "dispersion_objects_2")
        self.assertFalse(names.is_sample_name("dispersion_objects"))
        self.assertFalse(names.is_sample_name("dispersion_objects_2"))
        self.assertFalse(names.is_sample_name("dispersion_1x"))
        self.assertTrue(names.is_sample_name("dispersion_17"))


def three_replica_tally() -> Tally:
    tally = Tally("object", partition_count=64, replicas=3, policy="gold")
    for n, copies in enumerate([3, 3, 3, 3, 2, 2, 1, 0]):
        tally.add(f"dispersion_{n}", n, copies)
    return tally


class TallyTests(SynchronousTestCase):
    def test_figures(self) -> None:
        tally = three_replica_tally()
        self.assertEqual(tally.missing_by_count(), {"0": 4, "1": 2, "2": 1, "3": 1})
        self.assertEqual((tally.copies_found, tally.copies_expected), (17, 24))
        self.assertEqual(tally.pct_found(), 70.83)
        self.assertEqual(tally.pct_complete(), 50.0)
        self.assertEqual(tally.missing_partitions(), [4, 5, 6, 7])
        self.assertEqual(tally.sample_pct(), 12.5)
        self.assertEqual(tally.overlapping, 0)

    def test_names_sharing_a_partition_are_overlapping(self) -> None:
        tally = Tally("container", 8, 2)
        tally.add("dispersion_0", 1, 2)
        tally.add("dispersion_1", 1, 2)
        tally.add("dispersion_2", 3, 1)
        self.assertEqual((tally.queried, tally.partitions, tally.overlapping), (3, 2, 1))
        self.assertEqual(tally.sample_pct(), 25.0)
        self.assertIn("There were 1 overlapping partitions", tally.lines())

    def test_impossible_counts_are_refused(self) -> None:
        tally = Tally("container", 8, 3)
        self.assertRaises(ValueError, tally.add, "dispersion_0", 1, 4)
        self.assertRaises(ValueError, tally.add, "dispersion_0", 1, -1)

    def test_lines_are_worded_as_swift_words_them(self) -> None:
        tally = three_replica_tally()
        tally.retries, tally.errors, tally.elapsed = 1, 2, 3.4
        self.assertEqual(tally.lines(), [
            "Using storage policy: gold",
            "Queried 8 objects for dispersion reporting, 3s, 1 retry",
            "There were 2 partitions missing 1 copy.",
            "There was 1 partition missing 2 copies.",
            "!!! There was 1 partition missing all copies.",
            "There were 2 errors (unreachable nodes, timeouts, unexpected answers)",
            "70.83% of object copies found (17 of 24)",
            "Sample represents 12.50% of the object partition space",
        ])

    def test_all_copies_found(self) -> None:
        tally = Tally("container", 64, 3)
        tally.add("dispersion_0", 5, 3)
        self.assertEqual(tally.lines(), [
            "Queried 1 containers for dispersion reporting, 0s, 0 retries",
            "100.00% of container copies found (3 of 3)",
            "Sample represents 1.56% of the container partition space",
        ])

    def test_the_json_form_keeps_its_keys(self) -> None:
        summary = json.loads(json.dumps(three_replica_tally().summary()))
        self.assertEqual(sorted(summary), sorted([
            "queried", "partitions", "partition_count", "overlapping", "replicas", "copies_expected",
            "copies_found", "pct_found", "pct_complete", "missing_by_count", "missing_partitions",
            "sample_pct", "retries", "errors", "elapsed", "policy"]))
        self.assertEqual(summary["missing_by_count"], {"0": 4, "1": 2, "2": 1, "3": 1})
        self.assertEqual(Tally("container", 64, 3).summary()["pct_found"], 0.0)  # nothing queried


class SettingsTests(SynchronousTestCase):
    def test_the_file_and_the_command_line(self) -> None:
        directory = temp_dir(self)
        conf = write_file(directory, "dispersion.conf", """\
            [dispersion]
            auth_url = http://proxy:8080/auth/v1.0
            auth_user = dpstats:dpstats
            auth_key = dpstats
            ring_dir = rings
            dispersion_coverage = 12.5
            concurrency = 7
            """)
        settings = load_settings(conf, {"concurrency": "3", "retries": None})
        self.assertEqual((settings.auth_user, settings.coverage, settings.concurrency, settings.retries),
                         ("dpstats:dpstats", 12.5, 3, 2))
        self.assertEqual(settings.ring_dir, directory / "rings")  # relative to the file
        self.assertEqual(settings.txstore_conf, directory / "rings" / "txstore.conf")  # beside the rings

    def test_the_sample_in_conf_loads(self) -> None:
        settings = load_settings(Path(__file__).parents[3] / "conf" / "dispersion.conf", {})
        self.assertEqual((settings.auth_user, settings.ring_dir, settings.txstore_conf, settings.coverage,
                          settings.concurrency, settings.retries, settings.node_timeout, settings.dump_json),
                         ("dispersion:dispersion", Path("/etc/txstore"), Path("/etc/txstore/txstore.conf"), 1.0,
                          25, 2, 10.0, False))

    def test_no_file_needed(self) -> None:
        settings = load_settings(None, {**AUTH, "ring_dir": "/srv/etc", "dispersion_coverage": "10"})
        self.assertEqual((settings.ring_dir, settings.txstore_conf, settings.coverage),
                         (Path("/srv/etc"), Path("/srv/etc/txstore.conf"), 10.0))

    def test_mistakes_are_named(self) -> None:
        directory = temp_dir(self)
        conf = write_file(directory, "d.conf", "[dispersion]\nendpoint_type = publicURL\n")
        error = self.assertRaises(ConfigError, load_settings, conf, {})
        self.assertIn("endpoint_type: unknown option", str(error))
        error = self.assertRaises(ConfigError, load_settings, None, {**AUTH, "concurrency": "0"})
        self.assertIn("--concurrency: 0 is below the minimum 1", str(error))
        error = self.assertRaises(ConfigError, load_settings, None, {**AUTH, "dispersion_coverage": "150"})
        self.assertIn("above the maximum 100", str(error))
        error = self.assertRaises(ConfigError, load_settings, None, {**AUTH, "auth_key": ""})
        self.assertIn("auth_key is needed", str(error))
        self.assertRaises(ConfigError, load_settings, directory / "missing.conf", AUTH)

    def test_the_cluster_and_its_rings(self) -> None:
        directory = temp_dir(self)
        write_file(directory, "txstore.conf", CLUSTER_CONF + "[storage-policy:0]\nname = gold\ndefault = yes\n"
                   "[storage-policy:1]\nname = silver\n")
        for name in ("container", "object-1"):
            build_ring(directory / f"{name}.ring.gz", 4)
        settings = load_settings(None, {**AUTH, "ring_dir": str(directory), "policy_name": "silver"})
        view = load_cluster_view(settings)
        self.assertEqual((view.policy.index, view.object_ring.part_power, view.is_ec), (1, 4, False))
        self.assertEqual(view.cluster.hasher, PathHasher(b"", b"testsuffix"))
        error = self.assertRaises(ConfigError, load_cluster_view,
                                  load_settings(None, {**AUTH, "ring_dir": str(directory)}))
        self.assertIn("cannot read the object ring", str(error))  # gold's ring is not there
        error = self.assertRaises(ConfigError, load_cluster_view,
                                  load_settings(None, {**AUTH, "ring_dir": str(directory), "policy_name": "x"}))
        self.assertIn("no storage policy 'x' (known: gold, silver)", str(error))

    def test_the_command_says_what_is_wrong_and_exits_2(self) -> None:
        directory = temp_dir(self)
        self.patch(sys, "stderr", io.StringIO())
        self.assertEqual(main(["report", "--auth-url", "http://x/auth/v1.0", "--auth-user", "a:b", "--auth-key",
                               "k", "--ring-dir", str(directory)]), 2)
        self.assertEqual(sys.stderr.getvalue(), f"txstore-dispersion: {directory}/txstore.conf: no such file\n")


def build_ring(path: Path, replicas: int, devices: int = 5) -> Ring:
    builder = RingBuilder(4, replicas, 1)
    for zone in range(1, devices + 1):
        builder.add_dev(region=1, zone=zone, ip=f"127.0.1.{zone}", port=6000, device=f"sd{zone}", weight=100)
    builder.rebalance(seed=1)
    builder.get_ring().save(path)
    return Ring(path, HASHER)


class CopyCheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ring = build_ring(temp_dir(self) / "object.ring.gz", 3)
        self.part, self.nodes = self.ring.get_nodes("AUTH_d", "dispersion_objects", "dispersion_0")
        self.backend = FakeBackend()
        self.clock = Clock()

    def node(self, index: int) -> str:
        node = self.nodes[index]
        return f"{node.ip}:{node.port}/{node.device_name}"

    def count(self, checker: CopyChecker, *names: str) -> int:
        d = Deferred.fromCoroutine(checker.copies(self.part, self.nodes, *names))
        for _ in range(20):  # the pauses before retries
            self.clock.advance(1)
        return self.successResultOf(d)

    def test_heads_every_primary_at_its_backend_path(self) -> None:
        self.backend.default = reply(200)
        checker = CopyChecker(self.backend, self.clock, "AUTH_d", retries=2, timeout=3, policy_index=1)
        self.assertEqual(self.count(checker, "dispersion_objects", "dispersion_0"), 3)
        self.assertEqual(sorted(self.backend.asked("HEAD")), sorted(self.node(i) for i in range(3)))
        call = self.backend.calls[0]
        self.assertEqual(call.path, f"/{call.node.split('/')[1]}/{self.part}/AUTH_d/dispersion_objects/dispersion_0")
        self.assertEqual(call.headers, {"X-Backend-Storage-Policy-Index": "1"})
        self.assertEqual((checker.retries_done, checker.errors), (0, 0))

    def test_missing_copies_unreachable_nodes_and_retries(self) -> None:
        answers = iter([reply(503)(None), reply(204)(None)])
        self.backend.nodes = {self.node(0): reply(404), self.node(1): down, self.node(2): lambda call: next(answers)}
        checker = CopyChecker(self.backend, self.clock, "AUTH_d", retries=2, timeout=3)
        self.assertEqual(self.count(checker, "dispersion_3"), 1)  # only the third, on its second try
        self.assertEqual(len(self.backend.to(self.node(0))), 1)  # a 404 is an answer: not retried
        self.assertEqual(len(self.backend.to(self.node(1))), 3)  # down: asked 1 + 2 times
        self.assertEqual((checker.retries_done, checker.errors), (3, 1))
        self.assertEqual(self.backend.calls[0].headers, {})  # a container: no policy
        self.assertEqual(len(checker.problems), 2)

    def test_a_gone_device_is_a_missing_copy_and_a_bad_answer_an_error(self) -> None:
        self.backend.nodes = {self.node(0): reply(507), self.node(1): reply(400), self.node(2): slow}
        checker = CopyChecker(self.backend, self.clock, "AUTH_d", retries=1, timeout=3)
        self.assertEqual(self.count(checker, "dispersion_3"), 0)
        self.assertEqual([len(self.backend.to(self.node(i))) for i in range(3)], [1, 1, 2])  # only the timeout again
        self.assertEqual((checker.retries_done, checker.errors), (1, 2))

    def test_an_erasure_coded_copy_is_the_primarys_own_fragment(self) -> None:
        def archive(call):
            return reply(200, X_Object_Sysmeta_Ec_Frag_Index=call.headers["X-Backend-Fragment-Index"])(call)

        self.backend.default = archive
        self.backend.nodes = {self.node(2): reply(200, X_Object_Sysmeta_Ec_Frag_Index="0")}  # not its own
        checker = CopyChecker(self.backend, self.clock, "AUTH_d", retries=0, timeout=3, policy_index=2, ec=True)
        self.assertEqual(self.count(checker, "dispersion_objects_2", "dispersion_0"), 2)
        asked = {call.node: call.headers["X-Backend-Fragment-Index"] for call in self.backend.calls}
        self.assertEqual(asked, {self.node(i): str(self.nodes[i].index) for i in range(3)})
        self.assertEqual(checker.errors, 0)


class BoundedTests(SynchronousTestCase):
    def test_at_most_so_many_at_once_and_results_in_order(self) -> None:
        waiting: list[Deferred] = []
        running = []

        async def work(item: int) -> int:
            running.append(item)
            gate = Deferred()
            waiting.append(gate)
            await gate
            return item * 10

        d = Deferred.fromCoroutine(bounded(2, range(5), work))
        self.assertEqual(running, [0, 1])
        waiting[1].callback(None)
        self.assertEqual(running, [0, 1, 2])
        while len(waiting) < 5 or not all(g.called for g in waiting):
            next(g for g in waiting if not g.called).callback(None)
        self.assertEqual(self.successResultOf(d), [0, 10, 20, 30, 40])


class FakeProxy(Resource):
    """A proxy as the tool sees it: tempauth, account and container listings (two names a page),
    and PUTs answered from a script."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.puts: list[tuple[str, str | None]] = []
        self.put_answers: list[int] = []
        self.names = {"/v1/AUTH_d": ["dispersion_0", "dispersion_1", "dispersion_objects", "dispersion_2"]}

    def render(self, request) -> bytes:
        path = request.path.decode()
        if path == "/auth/v1.0":
            if request.getHeader("x-auth-key") != "k":
                request.setResponseCode(401)
                return b"unknown user or wrong key"
            request.setHeader("X-Storage-Url", "http://proxy/v1/AUTH_d")
            request.setHeader("X-Auth-Token", "tk")
            return b""
        if request.getHeader("x-auth-token") != "tk":
            request.setResponseCode(401)
            return b""
        if request.method == b"PUT":
            self.puts.append((path, request.getHeader("x-storage-policy")))
            request.setResponseCode(self.put_answers.pop(0) if self.put_answers else 201)
            return b""
        if path not in self.names:
            request.setResponseCode(404)
            return b""
        marker = request.args.get(b"marker", [b""])[0].decode()
        prefix = request.args[b"prefix"][0].decode()
        page = [n for n in sorted(self.names[path]) if n > marker and n.startswith(prefix)][:2]
        return json.dumps([{"name": name} for name in page]).encode()


class ProxySessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.proxy = FakeProxy()
        self.http = StubTreq(self.proxy)
        self.clock = Clock()
        self.session = ProxySession(self.clock, timeout=5, retries=2, http=self.http)

    def drive(self, coroutine):
        d = Deferred.fromCoroutine(coroutine)
        for _ in range(10):
            self.http.flush()
            self.clock.advance(1)
        return d

    def test_login_listing_pages_and_puts(self) -> None:
        self.successResultOf(self.drive(self.session.login("http://proxy/auth/v1.0", "d:u", "k")))
        self.assertEqual((self.session.account, self.session.token), ("AUTH_d", "tk"))
        self.assertEqual(self.successResultOf(self.drive(self.session.listing(None, "dispersion_"))),
                         ["dispersion_0", "dispersion_1", "dispersion_2", "dispersion_objects"])
        self.assertIsNone(self.successResultOf(self.drive(self.session.listing("nothing", "dispersion_"))))
        self.proxy.put_answers = [503, 201]
        self.assertEqual(self.successResultOf(self.drive(self.session.put(("dispersion_objects_2",),
                                                                        {"X-Storage-Policy": "ec"}))), 201)
        self.assertEqual(self.proxy.puts, [("/v1/AUTH_d/dispersion_objects_2", "ec")] * 2)
        self.assertEqual(self.session.retries_done, 1)

    def test_failures_are_said(self) -> None:
        failure = self.failureResultOf(self.drive(self.session.login("http://proxy/auth/v1.0", "d:u", "bad")),
                                       ProxyError)
        self.assertIn("login as d:u at http://proxy/auth/v1.0 answered 401: unknown user or wrong key",
                      str(failure.value))
        self.successResultOf(self.drive(self.session.login("http://proxy/auth/v1.0", "d:u", "k")))
        self.proxy.put_answers = [409]  # a 4xx: not tried again
        self.failureResultOf(self.drive(self.session.put(("c",), {})), ProxyError)
        self.proxy.put_answers = [503, 503, 503, 503]  # tried 1 + 2 times
        failure = self.failureResultOf(self.drive(self.session.put(("c", "o"), {}, b"o")), ProxyError)
        self.assertIn("PUT c/o answered 503", str(failure.value))
        self.assertEqual((len(self.proxy.puts), self.session.retries_done), (4, 2))


class HeadAnswers(Resource):
    """A node holding every copy asked of it."""

    isLeaf = True

    def render_HEAD(self, request) -> bytes:
        return b""


class TLSNodeTests(TestCase):
    def test_nodes_are_dialled_with_the_cluster_tls_section(self):
        from twisted.internet import reactor

        directory = temp_dir(self)
        pki = PKI(directory)
        port = reactor.listenTCP(0, pki.credentials(pki.node).wrap_listening(Site(HeadAnswers())),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        builder = RingBuilder(4, 1, 1)
        builder.add_dev(region=1, zone=1, ip="127.0.0.1", port=port.getHost().port, device="sd1", weight=100)
        builder.rebalance(seed=1)
        builder.get_ring().save(directory / "container.ring.gz")
        part, nodes = Ring(directory / "container.ring.gz", HASHER).get_nodes("AUTH_d", "dispersion_0")
        conf = write_file(directory, "dispersion.conf", f"""\
            [dispersion]
            auth_url = https://proxy/auth/v1.0
            auth_user = d:u
            auth_key = k
            [cluster-tls]
            tls_certificate = {pki.peer[0]}
            tls_private_key = {pki.peer[1]}
            tls_ca = {pki.cluster_ca}
            """)
        settings = load_settings(conf, {"node_timeout": "5"})

        async def ask(settings) -> tuple[int, int]:
            client = node_client(reactor, settings)
            try:
                checker = CopyChecker(client, reactor, "AUTH_d", retries=0, timeout=5)
                return await checker.copies(part, nodes, "dispersion_0"), checker.errors
            finally:
                await client.close()

        async def both() -> None:
            self.assertEqual(await ask(settings), (1, 0))
            self.assertEqual(await ask(evolve(settings, tls=None)), (0, 1))  # plain HTTP to a TLS node: an error

        return Deferred.fromCoroutine(both())
