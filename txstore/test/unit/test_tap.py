"""Tests for the twistd plugins' Options and makeService, in memory."""

import time

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from treq.testing import StubTreq

from txstore.proxy import tap as proxy_tap
from txstore.ring.reloader import RingReloader
from txstore.node import tap as node_tap
from txstore.test.support import small_cluster, temp_dir, write_file


class OptionsTests(SynchronousTestCase):
    def test_missing_config_is_a_usage_error(self) -> None:
        for tap in (proxy_tap, node_tap):
            options = tap.Options()
            err = self.assertRaises(usage.UsageError, options.parseOptions, ["--config", "/no/such.conf"])
            self.assertEqual(str(err), "/no/such.conf: no such file")

    def test_defaults(self) -> None:
        self.assertEqual(proxy_tap.Options().defaults["config"], "/etc/txstore/proxy.conf")
        self.assertEqual(node_tap.Options().defaults["config"], "/etc/txstore/objectnode.conf")

    def test_missing_ring_named(self) -> None:
        layout = small_cluster(self)
        (layout.etc / "container.ring.gz").unlink()
        err = self.assertRaises(usage.UsageError, proxy_tap.Options().parseOptions, ["-c", str(layout.proxy_config)])
        self.assertIn(f"{layout.etc / 'container.ring.gz'}: no container ring", str(err))

    def test_damaged_ring_named(self) -> None:
        layout = small_cluster(self)
        (layout.etc / "object.ring.gz").write_bytes(b"not a ring")
        err = self.assertRaises(
            usage.UsageError, node_tap.Options().parseOptions, ["-c", str(layout.node_config(1))]
        )
        self.assertIn(f"{layout.etc / 'object.ring.gz'}: cannot read the object ring", str(err))

    def test_bad_option_named(self) -> None:
        directory = temp_dir(self)
        conf = write_file(directory, "proxy.conf", "[proxy]\nbind_port = eighty\n")
        err = self.assertRaises(usage.UsageError, proxy_tap.Options().parseOptions, ["-c", str(conf)])
        self.assertEqual(str(err), f"{conf}: [proxy]: bind_port: 'eighty' is not a whole number")


class ThreadedMemoryReactor(MemoryReactorClock):
    """Accepts results from worker threads (and keeps them: nothing here waits for them)."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list = []

    def callFromThread(self, f, *args, **kwargs) -> None:
        self.from_threads.append((f, args, kwargs))

    def run_thread_results(self) -> None:
        while self.from_threads:
            f, args, kwargs = self.from_threads.pop(0)
            f(*args, **kwargs)


class MakeServiceTests(SynchronousTestCase):
    def check_service(self, tap, config, port: int, odd_path: str, odd_status: int, others: tuple = ()) -> None:
        options = tap.Options()
        options.parseOptions(["--config", str(config)])
        reactor = ThreadedMemoryReactor()
        service = tap.makeService(options, reactor=reactor)
        # The rings are reloaded by a service, off the reactor thread, never on access.
        (reloader,) = [child for child in service if isinstance(child, RingReloader)]
        self.assertEqual(len(reloader._rings), len(options.loaded.rings.all()))
        self.assertEqual({ring.auto_reload for ring in options.loaded.rings.all()}, {False})
        service.privilegedStartService()
        service.startService()
        (bound_port, factory, _backlog, interface), *rest = reactor.tcpServers
        self.assertEqual((bound_port, interface), (port, "127.0.0.1"))
        self.assertEqual([(p, i) for p, _f, _b, i in rest], [(o, "127.0.0.1") for o in others])
        client = StubTreq(factory.resource)
        response = self.successResultOf(client.get("http://127.0.0.1/healthcheck"))
        self.assertEqual(self.successResultOf(response.content()).strip(), b"OK")  # the proxy sends no newline
        response = self.successResultOf(client.get("http://127.0.0.1" + odd_path))
        self.assertEqual(response.code, odd_status)
        stopping = service.stopService()
        deadline = time.monotonic() + 10
        while not stopping.called and time.monotonic() < deadline:
            reactor.run_thread_results()
            time.sleep(0.01)
        self.successResultOf(stopping)

    def test_proxy(self) -> None:
        layout = small_cluster(self, proxy_port=8123)
        self.check_service(proxy_tap, layout.proxy_config, 8123, "/nothing/here", 400)  # not an API version

    def test_objectnode(self) -> None:
        layout = small_cluster(self, base_port=7000)
        self.check_service(node_tap, layout.node_config(2), 7020, "/d2/x/a", 400, others=(7021,))


class SortingMethodTests(SynchronousTestCase):
    def test_reads_by_load_unless_told_ring(self) -> None:
        layout = small_cluster(self)
        text = layout.proxy_config.read_text()
        options = proxy_tap.Options()
        options.parseOptions(["-c", str(layout.proxy_config)])
        server, _services = proxy_tap.build_proxy(options.loaded, MemoryReactorClock())
        self.assertIsNotNone(server.context.loads)
        layout.proxy_config.write_text(text.replace("[proxy]\n", "[proxy]\nsorting_method = ring\n", 1))
        options = proxy_tap.Options()
        options.parseOptions(["-c", str(layout.proxy_config)])
        server, _services = proxy_tap.build_proxy(options.loaded, MemoryReactorClock())
        self.assertIsNone(server.context.loads)
        layout.proxy_config.write_text(text.replace("[proxy]\n", "[proxy]\nsorting_method = shuffle\n", 1))
        err = self.assertRaises(usage.UsageError, proxy_tap.Options().parseOptions, ["-c", str(layout.proxy_config)])
        self.assertIn("sorting_method", str(err))


class TimeoutTests(SynchronousTestCase):
    def test_the_proxy_waits_as_configured(self) -> None:
        layout = small_cluster(self)
        text = layout.proxy_config.read_text()
        layout.proxy_config.write_text(text.replace(
            "[proxy]\n", "[proxy]\nnode_timeout = 4\nconn_timeout = 0.25\npost_quorum_timeout = 0.1\n", 1))
        options = proxy_tap.Options()
        options.parseOptions(["-c", str(layout.proxy_config)])
        server, _services = proxy_tap.build_proxy(options.loaded, MemoryReactorClock())
        context = server.context
        self.assertEqual((context.node_timeout, context.post_quorum_timeout, context.concurrency_timeout),
                         (4.0, 0.1, 0.25))
        self.assertEqual((context.client.timeout, context.client.puts.connect_timeout), (4.0, 0.25))
