"""
TLS (docs/tls.rst): certificate and key files, the config sections that name them, and backend
HTTP (request, stream, PUT) over mutual TLS against a real loopback server, with certificates
made by the test.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.defer import TimeoutError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site

from txstore.common.backend_client import BackendClient, BackendError, BackendTimeout
from txstore.common.config import ConfigError
from txstore.common.listener import TCPListener
from txstore.common.put_connection import NodeGone
from txstore.common.tls import Credentials, ServerCertificate, TLSFileError, wrap_listening
from txstore.proxy.config import load_proxy_settings
from txstore.storage.config import load_node_settings
from txstore.storage.edge import DispatchResource
from txstore.storage.http_support import plain_text
from txstore.test.pki import PKI, make_ca, make_node, write_pem
from txstore.test.support import CLUSTER_CONF, temp_dir, write_file


class FileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.pki = PKI(self.dir)

    def test_certificate_with_its_chain(self) -> None:
        certificate, key = self.pki.node
        bundle = self.dir / "bundle.crt"
        bundle.write_bytes(certificate.read_bytes() + self.pki.cluster_ca.read_bytes())
        loaded = ServerCertificate.from_files(bundle, key)
        self.assertEqual(len(loaded.chain), 1)
        self.assertEqual(loaded.chain[0].subject, self.pki.cluster.certificate.subject)
        options = loaded.options()
        self.assertEqual(len(options.extraCertChain), 1)

    def test_errors_are_one_line_naming_the_file(self) -> None:
        certificate, key = self.pki.node
        _, other_key = self.pki.peer
        garbage = write_file(self.dir, "garbage.pem", "not a certificate\n")
        locked = self.dir / "locked.key"
        issued = make_node(self.pki.cluster, "127.0.0.1")
        locked.write_bytes(issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.BestAvailableEncryption(b"secret")))
        cases = [
            ((self.dir / "missing.crt", key), f"{self.dir / 'missing.crt'}: no such file"),
            ((garbage, key), f"{garbage}: holds no PEM certificate"),
            ((certificate, garbage), f"{garbage}: holds no PEM private key"),
            ((certificate, self.dir), f"{self.dir}: is a directory"),
            ((certificate, locked), f"{locked}: the private key is protected by a passphrase"),
            ((certificate, other_key), f"{other_key}: is not the private key of the certificate in {certificate}"),
        ]
        for arguments, message in cases:
            error = self.assertRaises(TLSFileError, ServerCertificate.from_files, *arguments)
            self.assertTrue(str(error).startswith(message), str(error))
            self.assertNotIn("\n", str(error))
        error = self.assertRaises(TLSFileError, Credentials.from_files, certificate, key, garbage)
        self.assertEqual(error.path, garbage)


class ConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.pki = PKI(self.dir)
        write_file(self.dir, "txstore.conf", CLUSTER_CONF)
        (self.dir / "devs").mkdir()

    def proxy(self, text: str):
        return load_proxy_settings(write_file(self.dir, "proxy.conf", "[proxy]\nbind_port = 0\n" + text))

    def node(self, text: str):
        return load_node_settings(write_file(self.dir, "objectnode.conf", "[objectnode]\ndevices = devs\n" + text))

    def test_plain_by_default(self) -> None:
        settings = self.proxy("")
        self.assertEqual((settings.tls, settings.cluster_tls), (None, None))
        self.assertIsNone(self.node("").cluster_tls)

    def test_proxy_listener(self) -> None:
        certificate, key = self.pki.node
        settings = self.proxy(f"tls_certificate = {certificate}\ntls_private_key = {key.name}\n")
        self.assertIsInstance(settings.tls, ServerCertificate)
        error = self.assertRaises(ConfigError, self.proxy, f"tls_certificate = {certificate}\n")
        self.assertIn("[proxy]: tls_private_key: TLS needs tls_certificate and tls_private_key together", str(error))
        error = self.assertRaises(ConfigError, self.proxy,
                                  f"tls_certificate = {certificate}\ntls_private_key = {self.pki.peer[1]}\n")
        self.assertIn("[proxy]: tls_private_key: ", str(error))
        self.assertIn("is not the private key of the certificate", str(error))

    def test_cluster_tls_is_the_same_section_in_both_files(self) -> None:
        certificate, key = self.pki.node
        section = f"[cluster-tls]\ntls_certificate = {certificate}\ntls_private_key = {key}\ntls_ca = cluster-ca.crt\n"
        for settings in (self.proxy(section), self.node(section)):
            self.assertIsInstance(settings.cluster_tls, Credentials)
            self.assertEqual(settings.cluster_tls.authorities, (self.pki.cluster.certificate,))
        error = self.assertRaises(ConfigError, self.node, section.replace("cluster-ca.crt", "nowhere.crt"))
        self.assertEqual(
            str(error), f"{self.dir / 'objectnode.conf'}: [cluster-tls]: tls_ca: {self.dir / 'nowhere.crt'}: no such file"
        )
        error = self.assertRaises(ConfigError, self.proxy, "[cluster-tls]\ntls_ca = cluster-ca.crt\n")
        self.assertIn("[cluster-tls]: tls_certificate: TLS needs tls_certificate, tls_private_key and tls_ca", str(error))


    def test_endpoint_string(self) -> None:
        certificate, key = self.pki.node
        text = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
        self.assertEqual(self.proxy(f"endpoint = {text}\n").endpoint, text)
        self.assertEqual(self.proxy("").endpoint, "")
        for extra, message in [
            ("endpoint = bogus:1\n", "[proxy]: endpoint: 'bogus:1' is not a server endpoint string: Unknown endpoint type"),
            (f"endpoint = ssl:0:privateKey={self.dir / 'none.key'}\n", "is not a server endpoint string: [Errno 2]"),
            (f"endpoint = {text}\nworkers = 2\n", "[proxy]: endpoint: an endpoint string is listened on by one process"),
            (f"endpoint = {text}\ntls_certificate = {certificate}\ntls_private_key = {key}\n",
             "[proxy]: endpoint: give the certificate in the endpoint string or in tls_certificate"),
        ]:
            self.assertIn(message, str(self.assertRaises(ConfigError, self.proxy, extra)))


class BackendTLSTests(TestCase):
    """The backend client against a node-like HTTPS server requiring a client certificate."""

    timeout = 30

    def setUp(self) -> None:
        self.pki = PKI(temp_dir(self))
        self.seen: list = []

        def handler(request):
            self.seen.append((request.method, request.path, request.content.read(), request.isSecure()))
            return plain_text(201, "made", {b"X-Echo": b"yes"})

        self.site = Site(DispatchResource(handler))

    def serve(self, credentials: Credentials | None, factory=None) -> int:
        factory = factory or self.site
        wrapped = credentials.wrap_listening(factory) if credentials is not None else factory
        port = reactor.listenTCP(0, wrapped, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def client(self, credentials: Credentials | None, timeout: float = 5.0) -> BackendClient:
        client = BackendClient(reactor, timeout=timeout, connect_timeout=1.0, tls=credentials)
        self.addCleanup(client.close)
        return client

    async def put(self, client: BackendClient, port: int, body: bytes, timeout: float | None = None):
        headers = {"Content-Length": str(len(body)), "Expect": "100-continue", "X-Timestamp": "1.00000"}
        conn, answer = await client.put("127.0.0.1", port, "/d1/1/a/c/o", headers, timeout=timeout)
        self.assertIsNone(answer)
        conn.write(body)
        conn.finish()
        return await conn.answer

    async def test_request_stream_and_put_over_mutual_tls(self) -> None:
        port = self.serve(self.pki.credentials(self.pki.peer))
        client = self.client(self.pki.credentials(self.pki.node))
        response = await client.request("POST", "127.0.0.1", port, "/d1/1/a/c", {"X-Timestamp": "1.0"}, b"meta")
        self.assertEqual((response.status, response.body, response.header("x-echo")), (201, b"made\n", "yes"))
        streamed = await client.stream("GET", "127.0.0.1", port, "/d1/1/a/c/o", {})
        self.assertEqual(streamed.status, 201)
        self.assertTrue(await streamed.discard(reactor, 5.0))
        body = bytes(range(256)) * 1024
        answer = await self.put(client, port, body)
        self.assertEqual(answer.status, 201)
        await deferLater(reactor, 0, lambda: None)  # the connection goes back to the pool after its answer
        again = await self.put(client, port, b"second")  # on the pooled TLS connection
        self.assertEqual(again.status, 201)
        self.assertEqual(client.puts.connects, 1)
        self.assertEqual([(m, p, len(b), s) for m, p, b, s in self.seen], [
            (b"POST", b"/d1/1/a/c", 4, True), (b"GET", b"/d1/1/a/c/o", 0, True),
            (b"PUT", b"/d1/1/a/c/o", len(body), True), (b"PUT", b"/d1/1/a/c/o", 6, True),
        ])
        self.assertEqual(self.seen[2][2], body)

    async def assertRefused(self, client: BackendClient, port: int) -> None:
        started = time.monotonic()
        with self.assertRaises(BackendError):
            await client.request("GET", "127.0.0.1", port, "/d1/1/a")
        with self.assertRaises(BackendError):
            await client.stream("GET", "127.0.0.1", port, "/d1/1/a/c/o", {})
        with self.assertRaises(NodeGone):
            await self.put(client, port, b"x")
        self.assertLess(time.monotonic() - started, 4.0)  # refused at once, not timed out
        self.assertEqual(self.seen, [])

    async def test_node_certificate_from_another_ca_is_refused(self) -> None:
        port = self.serve(Credentials.from_files(*self.pki.stranger, self.pki.other_ca))
        await self.assertRefused(self.client(self.pki.credentials(self.pki.node)), port)

    async def test_node_certificate_for_another_address_is_refused(self) -> None:
        port = self.serve(self.pki.credentials(self.pki.elsewhere))
        await self.assertRefused(self.client(self.pki.credentials(self.pki.node)), port)

    async def test_client_certificate_from_another_ca_is_refused_by_the_node(self) -> None:
        port = self.serve(self.pki.credentials(self.pki.peer))
        await self.assertRefused(self.client(self.pki.credentials(self.pki.stranger, ca=self.pki.cluster_ca)), port)

    async def test_plain_client_is_refused_by_a_tls_node(self) -> None:
        port = self.serve(self.pki.credentials(self.pki.peer))
        await self.assertRefused(self.client(None), port)

    async def test_tls_client_never_speaks_plain_to_a_plain_node(self) -> None:
        """What reaches a plain node is a TLS hello on every connection, never a request.

        The node here records bytes and never answers: a real plain HTTP node answers a hello
        that happens to hold a newline byte with a 400, and one that holds none with nothing,
        so only the bytes sent, not the kind of failure, say the client stayed on TLS.
        """
        received: list[bytearray] = []

        class Recording(Protocol):
            def connectionMade(self) -> None:
                self.data = bytearray()
                received.append(self.data)

            def dataReceived(self, data: bytes) -> None:
                self.data += data

        await self.assertTimesOut(self.serve(None, Factory.forProtocol(Recording)))
        self.assertTrue(received)
        for data in received:
            self.assertEqual(data[:1], b"\x16", "every connection opens with a TLS handshake record")
            self.assertNotIn(b"HTTP/1.1", bytes(data))
            self.assertNotIn(b"/d1/1/a", bytes(data))

    async def assertTimesOut(self, port: int) -> None:
        """Each kind of exchange with the node at ``port`` ends at its own deadline (0.5 s)."""
        client = self.client(self.pki.credentials(self.pki.node), timeout=0.5)
        started = time.monotonic()
        with self.assertRaises(BackendTimeout):
            await client.request("GET", "127.0.0.1", port, "/d1/1/a")
        with self.assertRaises(BackendTimeout):
            await client.stream("GET", "127.0.0.1", port, "/d1/1/a/c/o", {})
        with self.assertRaises(TimeoutError):
            await self.put(client, port, b"x", timeout=0.5)
        self.assertLess(time.monotonic() - started, 3.0)

    async def test_a_node_that_never_shakes_hands_times_out(self) -> None:
        """TCP accepted, TLS never answered: no exchange waits longer than its deadline."""

        class Silent(Protocol):
            pass

        await self.assertTimesOut(self.serve(None, Factory.forProtocol(Silent)))


async def https_get(context: ssl.SSLContext, port: int) -> bytes:
    """GET /x from localhost:``port`` with the standard library's HTTPS client, in a thread."""
    import http.client

    from twisted.internet.threads import deferToThread

    def get() -> bytes:
        conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=5)
        try:
            conn.request("GET", "/x")
            return conn.getresponse().read()
        finally:
            conn.close()

    return await deferToThread(get)


class ListenerTests(TestCase):
    """The client-facing listener's options: a stock client verifying against the CA gets the page."""

    timeout = 30

    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.pki = PKI(self.dir)

    async def test_https_with_the_chain(self) -> None:
        intermediate_ca = make_ca("an intermediate")  # stands in for a chain: the client trusts only the root
        certificate, key = write_pem(self.dir, "web", make_node(self.pki.cluster, "localhost"))
        bundle = self.dir / "web-bundle.crt"
        bundle.write_bytes(certificate.read_bytes() + write_pem(self.dir, "inter", intermediate_ca)[0].read_bytes())
        site = Site(DispatchResource(lambda request: plain_text(200, "secure" if request.isSecure() else "plain")))
        port = reactor.listenTCP(0, wrap_listening(ServerCertificate.from_files(bundle, key).options(), site),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        context = ssl.create_default_context(cafile=str(self.pki.cluster_ca))
        self.assertEqual(await https_get(context, port.getHost().port), b"secure\n")
        old = ssl.create_default_context(cafile=str(self.pki.cluster_ca))
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        try:
            old.minimum_version = ssl.TLSVersion.TLSv1_1
        except ValueError:
            return
        with self.assertRaises(ssl.SSLError):  # below TLS 1.2: refused (Twisted's default minimum)
            await https_get(old, port.getHost().port)



class EndpointListenerTests(TestCase):
    """``[proxy] endpoint``: a Twisted server endpoint string, here ``ssl:``, served as given."""

    timeout = 30

    async def test_ssl_endpoint(self) -> None:
        pki = PKI(temp_dir(self))
        certificate, key = pki.node
        site = Site(DispatchResource(lambda request: plain_text(200, "secure" if request.isSecure() else "plain")))
        listener = TCPListener(reactor, "", 0, site, label="proxy",
                               endpoint=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}")
        listener.privilegedStartService()
        self.addCleanup(listener.stopService)
        context = ssl.create_default_context(cafile=str(pki.cluster_ca))
        self.assertEqual(await https_get(context, listener.bound_port), b"secure\n")
        taken = TCPListener(reactor, "", 0, site, label="proxy",
                            endpoint=f"tcp:{listener.bound_port}:interface=127.0.0.1")
        error = self.assertRaises(SystemExit, taken.privilegedStartService)
        self.assertEqual(str(error), f"proxy: cannot listen on tcp:{listener.bound_port}:interface=127.0.0.1:"
                                     " Address already in use")


class WiringTests(SynchronousTestCase):
    """What ``[cluster-tls]`` and ``[proxy] tls_*`` turn on in the services twistd starts."""

    def setUp(self) -> None:
        from txstore.test.support import small_cluster

        self.layout = small_cluster(self, proxy_port=7100, base_port=7200)
        self.pki = PKI(temp_dir(self))
        certificate, key = self.pki.node
        self.cluster_tls = (f"\n[cluster-tls]\ntls_certificate = {certificate}\ntls_private_key = {key}\n"
                            f"tls_ca = {self.pki.cluster_ca}\n")

    def listeners(self, tap, config: Path) -> tuple[dict[int, object], object]:
        options = tap.Options()
        options.parseOptions(["--config", str(config)])
        reactor = MemoryReactorClock()
        service = tap.makeService(options, reactor=reactor)
        service.privilegedStartService()  # listens; starts nothing else
        return {port: factory for port, factory, _backlog, _interface in reactor.tcpServers}, options

    def test_node_serves_backend_http_and_replication_over_tls_and_dials_tls(self) -> None:
        from txstore.node import tap as node_tap
        from txstore.node.assembly import build_node

        config = self.layout.node_config(1)
        plain, _ = self.listeners(node_tap, config)
        self.assertEqual([type(f) for f in plain.values()].count(TLSMemoryBIOFactory), 0)
        config.write_text(config.read_text() + self.cluster_tls)
        tls, options = self.listeners(node_tap, config)
        self.assertEqual(sorted(tls), [7210, 7211])
        for factory in tls.values():
            self.assertIsInstance(factory, TLSMemoryBIOFactory)
        server, _ = build_node(options.loaded.settings, MemoryReactorClock())
        self.assertEqual(server.objects.context.client._scheme, "https")  # container updates, daemons

    def test_proxy_serves_https_and_dials_nodes_over_tls(self) -> None:
        from txstore.proxy import tap as proxy_tap

        config = self.layout.proxy_config
        certificate, key = self.pki.node
        add = f"[proxy]\ntls_certificate = {certificate}\ntls_private_key = {key}\n"
        config.write_text(config.read_text().replace("[proxy]\n", add, 1))
        listening, options = self.listeners(proxy_tap, config)
        self.assertEqual(list(listening), [7100])
        self.assertIsInstance(listening[7100], TLSMemoryBIOFactory)
        server, _ = proxy_tap.build_proxy(options.loaded, MemoryReactorClock())
        self.assertEqual(server.context.client._scheme, "http")  # no [cluster-tls]: plain to the nodes
        config.write_text(config.read_text() + self.cluster_tls)
        options = proxy_tap.Options()
        options.parseOptions(["--config", str(config)])
        server, _ = proxy_tap.build_proxy(options.loaded, MemoryReactorClock())
        self.assertEqual(server.context.client._scheme, "https")
        self.assertIsNotNone(server.context.client.puts._tls)
