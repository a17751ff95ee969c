"""
TLS with real processes and real clients (docs/tls.rst): an all-in-one whose proxy (two workers)
serves HTTPS and whose proxy -> node and node -> node traffic is mutual TLS, driven by curl and
python-swiftclient trusting the test's CA; a node whose certificate another CA issued is
never spoken to; a bad certificate file stops the start.
"""

from __future__ import annotations

import http.client
import os
import subprocess
from pathlib import Path

from swiftclient import client as swift
from twisted.trial.unittest import SynchronousTestCase

from txstore.test.pki import PKI
from txstore.test.support import CLUSTER_CONF, console_script, free_port_block, small_cluster, temp_dir, write_file
from txstore.test.integration.test_proxy_integration import Cluster
from txstore.test.tls_cluster import add_cluster_tls, all_tls, restart, start, stop

NODES = 4


class TLSClusterCase(SynchronousTestCase):
    """A fresh all-in-one, then every process restarted with TLS (~15 s on a busy machine)."""

    def setUp(self) -> None:
        self.pki = PKI(temp_dir(self))
        self.cluster = Cluster(Path(self.mktemp()).absolute() / "aio", "--workers", "2", "--daemons", "updaters",
                               nodes=NODES)
        self.addCleanup(self.cluster.stop)
        self.cluster.start()
        self.root = self.cluster.root
        all_tls(self.root, self.cluster.port, self.cluster.port, NODES, self.pki)
        self.auth_url = f"https://127.0.0.1:{self.cluster.port}/auth/v1.0"

    def nodes(self) -> list[str]:
        return [f"node{number}" for number in range(1, NODES + 1)]

    def node_port(self, name: str) -> int:
        return self.cluster.port + 10 * int(name[4:])

    def connection(self) -> swift.Connection:
        conn = swift.Connection(self.auth_url, "test:tester", "testing", cacert=str(self.pki.cluster_ca), retries=0)
        self.addCleanup(conn.close)
        return conn

    def curl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-sS", "--max-time", "60", "--cacert", str(self.pki.cluster_ca), *args],
                              capture_output=True, timeout=90)

    def data_files(self, name: str) -> list[Path]:
        return [path for path in (self.root / "srv" / name).rglob("*.data")]


class HTTPSAllTheWayTests(TLSClusterCase):
    def test_curl_and_swiftclient_round_trips(self) -> None:
        # curl: auth, then a 1.5 MiB object up and down, byte for byte.
        auth = self.curl("-D", "-", "-o", os.devnull, "-H", "X-Auth-User: test:tester", "-H", "X-Auth-Key: testing",
                         self.auth_url)
        self.assertEqual(auth.returncode, 0, auth.stderr)
        headers = dict(line.split(": ", 1) for line in auth.stdout.decode().splitlines()[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        storage_url, token = headers["x-storage-url"], headers["x-auth-token"]
        self.assertEqual(storage_url, f"https://127.0.0.1:{self.cluster.port}/v1/AUTH_test")
        work = Path(self.mktemp())
        work.mkdir()
        body = os.urandom(1536 * 1024)
        (work / "up").write_bytes(body)
        token_header = f"X-Auth-Token: {token}"
        made = self.curl("--fail", "-X", "PUT", "-H", token_header, f"{storage_url}/tls")
        self.assertEqual(made.returncode, 0, made.stderr)
        put = self.curl("--fail", "-T", str(work / "up"), "-H", token_header, f"{storage_url}/tls/curl-object")
        self.assertEqual(put.returncode, 0, put.stderr)
        got = self.curl("--fail", "-o", str(work / "down"), "-H", token_header, f"{storage_url}/tls/curl-object")
        self.assertEqual(got.returncode, 0, got.stderr)
        self.assertEqual((work / "down").read_bytes(), body)

        # python-swiftclient with its cacert option.
        conn = self.connection()
        small = os.urandom(300 * 1024)
        conn.put_object("tls", "swiftclient-object", small)
        _, downloaded = conn.get_object("tls", "swiftclient-object")
        self.assertEqual(downloaded, small)
        # The listing holds both: the object nodes' container updates went over TLS too.
        _, listing = conn.get_container("tls")
        self.assertEqual([entry["name"] for entry in listing], ["curl-object", "swiftclient-object"])
        self.assertEqual(sum(len(self.data_files(name)) for name in self.nodes()), 6)  # 3 replicas each

        # The swift CLI, trusting the CA.
        listed = subprocess.run([console_script("swift"), "--os-cacert", str(self.pki.cluster_ca), "-A", self.auth_url,
                                 "-U", "test:tester", "-K", "testing", "list", "tls"],
                                capture_output=True, text=True, timeout=120)
        self.assertEqual((listed.returncode, listed.stdout.split()), (0, ["curl-object", "swiftclient-object"]),
                         listed.stderr)

    def test_what_is_refused(self) -> None:
        # A client that does not trust the CA: curl's verification fails (60).
        untrusting = subprocess.run(["curl", "-sS", "--max-time", "20", f"https://127.0.0.1:{self.cluster.port}/info"],
                                    capture_output=True, timeout=60)
        self.assertEqual(untrusting.returncode, 60, untrusting.stderr)
        # Plain HTTP, to the proxy or to a node: no HTTP answer, the connection is closed.
        for port in (self.cluster.port, self.node_port("node1")):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            try:
                conn.request("GET", "/healthcheck")
                with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
                    conn.getresponse()
            finally:
                conn.close()
        # A TLS client trusting the CA but without a client certificate: the node refuses it.
        no_certificate = self.curl(f"https://127.0.0.1:{self.node_port('node1')}/healthcheck")
        self.assertNotEqual(no_certificate.returncode, 0)
        certificate, key = self.pki.issue("operator", "operator.internal")
        operator = self.curl("--fail", "--cert", str(certificate), "--key", str(key),
                             f"https://127.0.0.1:{self.node_port('node1')}/healthcheck")
        self.assertEqual((operator.returncode, operator.stdout), (0, b"OK\n"), operator.stderr)
        # txstore-recon: over TLS with the operator's certificate; without it, every node unreachable.
        recon = [console_script("txstore-recon"), "--ring-dir", str(self.root / "etc"), "--timeout", "10", "-l"]
        tls = ["--cacert", str(self.pki.cluster_ca), "--cert", str(certificate), "--key", str(key)]
        answered = subprocess.run([*recon, *tls], capture_output=True, text=True, timeout=60)
        self.assertEqual(answered.returncode, 0, answered.stdout + answered.stderr)
        self.assertNotIn("unreachable", answered.stdout)
        plain = subprocess.run(recon, capture_output=True, text=True, timeout=60)
        self.assertEqual((plain.returncode, plain.stdout.count("unreachable")), (1, NODES), plain.stdout)


class StrangerNodeTests(TLSClusterCase):
    def test_a_node_with_a_certificate_from_another_ca_is_never_spoken_to(self) -> None:
        config = self.root / "etc" / "node1.conf"
        stranger_certificate, stranger_key = self.pki.stranger
        text = config.read_text()
        head, _, _ = text.partition("\n[cluster-tls]\n")
        config.write_text(head)  # it trusts the cluster CA (it would take the proxy), but is not trusted
        add_cluster_tls(config, stranger_certificate, stranger_key, self.pki.cluster_ca)
        restart(self.root, "node1", self.node_port("node1"))
        before = (self.root / "log" / "node1.log").stat().st_size

        conn = self.connection()
        conn.put_container("refused")
        bodies = {f"o{number}": os.urandom(4096 + number) for number in range(12)}
        for name, body in bodies.items():
            conn.put_object("refused", name, body)  # node1's replicas go to a handoff
        for name, body in bodies.items():
            self.assertEqual(conn.get_object("refused", name)[1], body)
        self.assertEqual(self.data_files("node1"), [])
        with open(self.root / "log" / "node1.log", "rb") as log:
            log.seek(before)
            self.assertNotIn(b"/refused", log.read())  # not one request reached it
        self.assertEqual(sum(len(self.data_files(name)) for name in self.nodes()), 3 * len(bodies))


class StartTests(SynchronousTestCase):
    def test_a_bad_certificate_file_stops_the_start_with_one_line(self) -> None:
        directory = temp_dir(self)
        pki = PKI(directory)
        write_file(directory, "txstore.conf", CLUSTER_CONF)
        certificate, _ = pki.node
        _, other_key = pki.peer
        write_file(directory, "proxy.conf",
                   f"[proxy]\nbind_port = 0\ntls_certificate = {certificate}\ntls_private_key = {other_key}\n")
        result = subprocess.run([console_script("twistd"), "-n", "proxy", "--config", str(directory / "proxy.conf")],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        lines = [line for line in (result.stdout + result.stderr).splitlines() if "tls_private_key" in line]
        self.assertEqual(lines, [f"{console_script('twistd')} -n: {directory / 'proxy.conf'}: [proxy]: tls_private_key:"
                                 f" {other_key}: is not the private key of the certificate in {certificate}"])
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_a_proxy_on_an_endpoint_string(self) -> None:
        """``[proxy] endpoint = ssl:...``: twistd serves HTTPS there (curl trusting the CA)."""
        layout = small_cluster(self, proxy_port=0)
        pki = PKI(temp_dir(self))
        certificate, key = pki.node
        port = free_port_block(1)
        config = layout.proxy_config
        config.write_text(config.read_text().replace(
            "[proxy]\n", f"[proxy]\nendpoint = ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={certificate}\n", 1))
        self.addCleanup(stop, layout.root, "proxy")
        start(layout.root, "proxy", port)
        served = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", str(pki.cluster_ca),
                                 f"https://localhost:{port}/healthcheck"], capture_output=True, timeout=60)
        self.assertEqual((served.returncode, served.stdout), (0, b"OK"), served.stderr)
        self.assertIn(b"(ssl endpoint)", (layout.root / "log" / "proxy.log").read_bytes())
