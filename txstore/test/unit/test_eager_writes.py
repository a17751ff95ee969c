"""
Writes sent at once (txstore.common.eager_writes), over real loopback connections: what the
kernel takes is not queued, the rest is queued in order, and connections that keep Nagle on
keep Twisted's queue.
"""

from __future__ import annotations

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from txstore.common import eager_writes
from txstore.common.connect import connect


class _Collect(Protocol):
    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.got: list[bytes] = []
        self.size = 0
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.got.append(data)
        self.size += len(data)
        if self.size >= self.expect and not self.done.called:
            self.done.callback(b"".join(self.got))


def _install_for_test(case: TestCase) -> None:
    """Install for this test only: the other tests of the process keep Twisted's own writes."""
    if eager_writes._installed:
        return
    saved = {name: tcp.Connection.__dict__.get(name) for name in ("write", "writeSequence", "setTcpNoDelay")}
    eager_writes.install()

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                delattr(tcp.Connection, name)  # inherited again
            else:
                setattr(tcp.Connection, name, value)
        eager_writes._installed = False

    case.addCleanup(restore)


class _Loopback(TestCase):
    """A listening port whose connections collect what they receive; eager writes installed."""

    timeout = 30

    def setUp(self) -> None:
        _install_for_test(self)
        self.received: list[_Collect] = []
        self.expect = 0

        def build(addr):
            collect = _Collect(self.expect)
            self.received.append(collect)
            return collect

        self.port = reactor.listenTCP(0, Factory.forProtocol(lambda: build(None)), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    @inlineCallbacks
    def _connect(self, expect: int, nodelay: bool = True):
        self.expect = expect
        client = Protocol()
        yield connect(reactor, "127.0.0.1", self.port.getHost().port, client, timeout=5)
        self.addCleanup(client.transport.abortConnection)
        if nodelay:
            eager_writes.no_delay(client.transport)
        while not self.received:
            yield deferLater(reactor, 0.01)
        return client.transport

    def _queued(self, transport) -> bool:
        return transport in reactor.getWriters() or bool(transport._tempDataLen)


class EagerWritesTests(_Loopback):
    def test_install_is_once(self) -> None:
        write = tcp.Connection.write
        self.assertNotEqual(write.__module__, "twisted.internet._newtls")
        eager_writes.install()
        self.assertIs(tcp.Connection.write, write)

    @inlineCallbacks
    def test_small_write_sent_without_queueing(self):
        transport = yield self._connect(expect=5)
        transport.write(b"hello")
        self.assertFalse(self._queued(transport))
        got = yield self.received[0].done
        self.assertEqual(got, b"hello")

    @inlineCallbacks
    def test_sequence_sent_without_queueing(self):
        transport = yield self._connect(expect=11)
        transport.writeSequence([b"hello", b" ", b"world"])
        self.assertFalse(self._queued(transport))
        got = yield self.received[0].done
        self.assertEqual(got, b"hello world")

    @inlineCallbacks
    def test_nagle_on_keeps_twisteds_queue(self):
        transport = yield self._connect(expect=5, nodelay=False)
        transport.write(b"hello")
        self.assertTrue(self._queued(transport))
        got = yield self.received[0].done
        self.assertEqual(got, b"hello")

    @inlineCallbacks
    def test_what_the_kernel_does_not_take_is_queued_in_order(self):
        """Writes far past the socket buffers: the rest queued, every later write after it."""
        pieces = [bytes([n]) * (4 << 20) for n in range(1, 5)]
        total = sum(map(len, pieces)) + 11
        transport = yield self._connect(expect=total)
        for piece in pieces:
            transport.write(piece)
        self.assertTrue(self._queued(transport))
        transport.writeSequence([b"tail", b"-", b"end!!!"])
        got = yield self.received[0].done
        self.assertEqual(len(got), total)
        self.assertEqual(got, b"".join(pieces) + b"tail-end!!!")

    @inlineCallbacks
    def test_partial_sequence_rest_queued(self):
        big = b"x" * (16 << 20)
        transport = yield self._connect(expect=len(big) + 6)
        transport.writeSequence([b"abc", big, b"def"])
        self.assertTrue(self._queued(transport))
        got = yield self.received[0].done
        self.assertEqual(got, b"abc" + big + b"def")

    @inlineCallbacks
    def test_text_refused_as_twisted_does(self):
        transport = yield self._connect(expect=1)
        self.assertRaises(TypeError, transport.write, "text")

    @inlineCallbacks
    def test_pull_producer_keeps_twisteds_queue(self):
        """A pull producer is asked for more from doWrite only: its writes must reach it."""
        transport = yield self._connect(expect=5)

        class Pull:
            asked = 0

            def resumeProducing(self):
                self.asked += 1

            def stopProducing(self):
                pass

        pull = Pull()
        transport.registerProducer(pull, False)
        transport.write(b"hello")
        self.assertTrue(self._queued(transport))
        got = yield self.received[0].done
        self.assertEqual(got, b"hello")
        transport.unregisterProducer()


class _CountingSocket:
    """A socket whose sends are counted (with the number of buffers each ``sendmsg`` took)."""

    def __init__(self, real) -> None:
        self._real = real
        self.sends: list[int] = []

    def send(self, data, *args):
        self.sends.append(1)
        return self._real.send(data, *args)

    def sendmsg(self, buffers, *args):
        buffers = list(buffers)
        self.sends.append(len(buffers))
        return self._real.sendmsg(buffers, *args)

    def __getattr__(self, name):
        return getattr(self._real, name)


class CorkTests(_Loopback):
    """`cork` and `uncork`: an answer's head and first body piece in one send."""

    @inlineCallbacks
    def _counted(self, expect: int, nodelay: bool = True):
        transport = yield self._connect(expect=expect, nodelay=nodelay)
        counting = transport.socket = _CountingSocket(transport.socket)
        return transport, counting

    @inlineCallbacks
    def test_held_writes_go_in_one_send(self):
        transport, counting = yield self._counted(expect=29)
        self.assertTrue(eager_writes.cork(transport))
        transport.writeSequence([b"HTTP/1.1 200 OK\r\n", b"A: b\r\n", b"\r\n"])
        transport.write(b"body")
        transport.write(b"")
        self.assertEqual((counting.sends, self._queued(transport)), ([], False))
        eager_writes.uncork(transport)
        self.assertEqual(counting.sends, [1])
        got = yield self.received[0].done
        self.assertEqual(got, b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody")
        transport.write(b"!")  # no longer held
        self.assertEqual(counting.sends, [1, 1])

    @inlineCallbacks
    def test_large_pieces_are_not_joined(self):
        """Only the small pieces are copied together; a large one is sent as it is."""
        big = b"x" * (64 * 1024)
        transport, counting = yield self._counted(expect=len(big) + 9)
        eager_writes.cork(transport)
        transport.writeSequence([b"head", b"\r\n"])
        transport.write(big)
        transport.write(b"end")
        eager_writes.uncork(transport)
        self.assertEqual(counting.sends[0], 3)  # [head\r\n, big, end]
        got = yield self.received[0].done
        self.assertEqual(got, b"head\r\n" + big + b"end")

    @inlineCallbacks
    def test_only_the_outer_cork_sends(self):
        transport, counting = yield self._counted(expect=2)
        self.assertTrue(eager_writes.cork(transport))
        self.assertFalse(eager_writes.cork(transport))
        transport.write(b"a")
        transport.write(b"b")
        self.assertEqual(counting.sends, [])
        eager_writes.uncork(transport)
        self.assertEqual(counting.sends, [1])
        got = yield self.received[0].done
        self.assertEqual(got, b"ab")

    @inlineCallbacks
    def test_nagle_on_is_not_held(self):
        transport, counting = yield self._counted(expect=5, nodelay=False)
        self.assertFalse(eager_writes.cork(transport))
        transport.write(b"hello")
        self.assertTrue(self._queued(transport))
        got = yield self.received[0].done
        self.assertEqual(got, b"hello")

    @inlineCallbacks
    def test_an_answer_in_one_send(self):
        """A StreamingRequest's head and body leave the server in one send."""
        from twisted.web.resource import Resource

        from txstore.common.streaming import StreamingSite

        class Small(Resource):
            isLeaf = True

            def render_GET(self, request):
                request.setHeader(b"Content-Type", b"text/plain")
                return b"x" * 4096

        channels = []

        class Recording(StreamingSite):
            def buildProtocol(self, addr):
                channel = super().buildProtocol(addr)
                channels.append(channel)
                return channel

        port = reactor.listenTCP(0, Recording(Small()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = _Collect(1)
        yield connect(reactor, "127.0.0.1", port.getHost().port, client, timeout=5)
        self.addCleanup(client.transport.abortConnection)
        while not channels or channels[0].transport is None:
            yield deferLater(reactor, 0.01)
        server = channels[0].transport
        counting = server.socket = _CountingSocket(server.socket)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        yield client.done
        while not b"".join(client.got).endswith(b"x" * 4096):
            yield deferLater(reactor, 0.01)
        self.assertEqual(len(counting.sends), 1)
