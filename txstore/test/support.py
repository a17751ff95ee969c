"""Helpers shared by tests: temporary config files and small clusters on disk."""

from __future__ import annotations

import shutil

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from txstore.common.backend_client import InertProducer

CLUSTER_CONF = """\
[txstore-hash]
hash_path_suffix = testsuffix
"""


def write_file(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def temp_dir(case: SynchronousTestCase) -> Path:
    path = Path(case.mktemp()).absolute()
    path.mkdir(parents=True)
    return path


def clock_at(seconds: float):
    """A `twisted.internet.task.Clock` whose time is ``seconds``."""
    from twisted.internet.task import Clock

    clock = Clock()
    clock.advance(seconds)
    return clock


def storage_context(case: SynchronousTestCase, device: str = "d1", now: float = 1_600_000_100.0,
                    policies=None, runner=None):
    """
    One node's storage in a temp dir holding ``device``: synchronous I/O (unless ``runner``),
    no fsync, no backend client, a `Clock` at ``now`` as its reactor (what replication and
    daemon tests build their nodes from); ``policies`` (a PolicyCollection) for EC ones, whose
    objects are archives.
    """
    from txstore.common.hashing import PathHasher
    from txstore.common.io import SynchronousRunner
    from txstore.common.policies import DEFAULT_POLICIES
    from txstore.storage.diskfile import DiskFileManager
    from txstore.storage.context import StorageContext

    root = temp_dir(case)
    (root / device).mkdir()
    from txstore.common.policies import ERASURE_CODING

    policies = DEFAULT_POLICIES if policies is None else policies
    ec = frozenset(p.index for p in policies if p.policy_type == ERASURE_CODING)
    diskfiles = DiskFileManager(root, False, PathHasher(b"", b"s"), fsync=False, ec_policies=ec)
    return StorageContext(
        devices=root, mount_check=False, hasher=diskfiles.hasher, policies=policies,
        runner=SynchronousRunner() if runner is None else runner, client=None, reactor=clock_at(now),
        diskfiles=diskfiles,
    )


class ReplicationNode:
    """
    A node for replication tests: one device's storage (`storage_context`) and a replication
    listener on a free loopback port. ``backend_port`` is never listened on: it only names the
    node in a ring (and to ``local_device_matcher``). Subclasses add servers in
    `receiver_options`, which runs once the context exists.
    """

    backend_base = 16000

    def __init__(self, case: SynchronousTestCase, number: int, policies=None) -> None:
        from twisted.internet import reactor

        from txstore.replication.receiver import ReceiverFactory

        self.number = number
        self.device = f"d{number}"
        self.context = storage_context(case, self.device, policies=policies, runner=self.runner(case))
        self.root = self.context.devices
        self.factory = ReceiverFactory(self.context, reactor, timeout=5.0, **self.receiver_options(case))
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        case.addCleanup(self.port.stopListening)
        self.backend_port = self.backend_base + number

    def receiver_options(self, case: SynchronousTestCase) -> dict:
        return {}

    def runner(self, case: SynchronousTestCase):
        """The node's blocking runner: None for synchronous I/O."""
        return None


def replication_ring(case: SynchronousTestCase, nodes, name: str, seed: int, replicas: int = 3):
    """A ring (part power 3, 3 replicas unless told) over ``nodes`` (`ReplicationNode`), saved in a temp dir."""
    from txstore.ring.builder import RingBuilder
    from txstore.ring.ring import Ring

    builder = RingBuilder(3, replicas, 0)
    for node in nodes:
        builder.add_dev({"region": 1, "zone": node.number, "ip": "127.0.0.1", "port": node.backend_port,
                         "replication_ip": "127.0.0.1", "replication_port": node.port.getHost().port,
                         "device": node.device, "weight": 100.0})
    builder.rebalance(seed=seed)
    path = temp_dir(case) / f"{name}.ring.gz"
    builder.get_ring().save(path)
    return Ring(path, nodes[0].context.hasher)


def small_cluster(case: SynchronousTestCase, *, nodes: int = 3, replicas: int = 3, part_power: int = 6,
                  proxy_port: int = 0, base_port: int = 6200):
    """A prepared all-in-one root (configs, rings, device directories) in a temp dir."""
    from txstore.aio.layout import Topology, prepare

    return prepare(temp_dir(case) / "aio", Topology(nodes, replicas, part_power, base_port), proxy_port, seed=1)


def free_port_block(count: int, step: int = 1) -> int:
    """
    A base port such that base, base+step, … (count ports), and the port after each (a node's
    replication port), are free on 127.0.0.1 now. The block lies below the kernel's ephemeral
    range: a node stopped by a test must find its ports free again when it restarts, and an
    outgoing connection meanwhile can take any free port of that range (seen: a drill's node
    could not restart, "Address already in use").
    """
    import random
    import socket

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ports:
            ephemeral_low = int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    high = max(ephemeral_low, 12000 + count * step + 2) - count * step - 1
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, high)
        sockets = []
        try:
            for port in sorted({base + i * step + extra for i in range(count) for extra in (0, 1)}):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of ports found")


def console_script(name: str) -> str:
    """The path of one of this environment's console scripts (beside the interpreter)."""
    import sys

    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise RuntimeError(f"{name} is not installed beside {sys.executable}; pip install -e . first")
    return str(path)


# A headless Chromium from Debian's packages, for the tests that load a page (None: they skip).
BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")
NO_BROWSER = "no chromium-headless-shell or chromium (apt-get install chromium-headless-shell)"


def serve_pages(case, page_for) -> str:
    """
    An HTTP server on 127.0.0.1 (another origin than the proxy) answering each GET with the
    HTML ``page_for(path)`` returns; stopped at the test's end. Returns its origin.
    """
    import http.server
    import threading

    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page_for(self.path).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    case.addCleanup(server.server_close)
    case.addCleanup(server.shutdown)
    return f"http://127.0.0.1:{server.server_address[1]}"



def assert_table(case: SynchronousTestCase, function: Callable[[Any], Any], cases: dict) -> None:
    """A table-driven test: ``function`` of each key of ``cases`` is its value (the key names a failure)."""
    for given, expected in cases.items():
        case.assertEqual(function(given), expected, given)


@implementer(IBodyProducer)
class ChunkedBody(InertProducer):
    """A body of unknown length, so an HTTP client (treq) sends it chunked."""

    length = UNKNOWN_LENGTH

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def startProducing(self, consumer):
        for chunk in self.chunks:
            consumer.write(chunk)
        return succeed(None)


class RawClient(Protocol):
    """
    An HTTP client that sends exactly what it is given and keeps everything it gets (hanging
    up once it has ``hang_up_after`` bytes, if given).
    """

    def __init__(self, data: bytes, hang_up_after: int | None = None) -> None:
        self.data = data
        self.hang_up_after = hang_up_after
        self.got = b""
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.got += data
        if self.hang_up_after is not None and len(self.got) >= self.hang_up_after:
            self.hang_up_after = None
            self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        self.done.callback(self.got)
