# -*- test-case-name: txstore.test.unit.test_backend_client -*-
"""
HTTP between txstore processes (proxy → node, node → node): one client (`IBackendClient`)
for the three kinds of exchange, owning every connection pool.

- `request`: small requests read whole (container and account updates, HEADs, listings);
  connect, send and the whole response together must finish within ``timeout`` seconds or
  the request fails with `BackendTimeout`.
- `stream`: an object GET or HEAD whose headers arrive within ``timeout``; the body is then
  delivered to a protocol that may pause the node's socket (the proxy's `ObjectBody`).
- `put`: an object PUT that asks first (``Expect: 100-continue``) and streams its body to the
  node with the node's backpressure (`txstore.common.put_connection`).
- `notify`: a body-less PUT or DELETE whose answer is a status and a few headers (an object
  server's container updates, one or three per object write), over the PUT connections'
  protocol and pool: twisted's Agent (request and response objects, its parser, a producer)
  was a fifth of a node's Python time under small PUTs.

Requests go to twisted's Agent as they are: no cookie jar, no redirect followed (a node's 3xx
is its answer), no gzip decoding, which a general HTTP client (treq, used here before) layers
on every request, with a URL parse and a paced body producer: about a tenth of a node's time
sending container updates.

A path that names a reserved name (one holding NUL, `txstore.common.paths`) was admitted by
whoever sends it (the proxy for a middleware's request, a node for its own updates), so the
client says so to the next node: ``X-Backend-Allow-Reserved-Names: true`` goes with it.

With the cluster's TLS credentials (`txstore.common.tls.Credentials`, docs/tls.rst) every
connection is TLS: the node's certificate must be the cluster CA's for the address dialled (its
ring IP, or host name), and ours is presented to it. Nothing falls back to plain HTTP.

Connections are persistent and pooled (a new TCP connection per request is where Swift loses
time): `request` and `stream` share twisted's pool, `put` keeps its own (a PUT connection is
reused only after a clean exchange). A cancelled `stream` (the client went away) fails with
`CancelledError`, not the Agent's wrapping of it, so callers stop instead of trying another
node.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred, DeferredList, TimeoutError as DeadlinePassed, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived, _HTTP11ClientFactory, readBody
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from txstore.common.paths import ALLOW_RESERVED, RESERVED
from txstore.common.put_connection import PutConnectionPool, PutRequest
from txstore.interfaces import IBackendClient


class BackendError(Exception):
    """A backend could not be reached or did not answer in full."""


class BackendTimeout(BackendError):
    """A backend did not answer within the deadline."""


@frozen
class BackendResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


def quote_path(path: str) -> str:
    """Percent-encode a path for the wire; ``/`` stays as the separator."""
    return quote(path.encode("utf-8"), safe="/")


def text_to_wire(value: str) -> str:
    """
    A storage node's header text as this client sends header values: a ``str`` holding the
    wire's bytes as Latin-1 (the proxy's convention, as WSGI's). Nodes read headers as UTF-8
    text (bytes that are not UTF-8 kept as surrogates); what a node passes on (a container
    update's ``X-Content-Type: text/é``) must go out as the bytes the client sent.
    """
    return value.encode("utf-8", "surrogateescape").decode("latin-1")


def with_reserved(path: str, headers: dict[str, str] | None) -> dict[str, str]:
    """``headers``, saying the path may name reserved names when it does."""
    if RESERVED not in path:
        return headers or {}
    return {**(headers or {}), ALLOW_RESERVED: "true"}


def listing_update_headers(kind: str, node: Any, partition: int) -> dict[str, str]:
    """
    The headers that tell a node which ``kind`` ("Container" or "Account") replica to report
    its change to: ``X-<Kind>-Host``, ``-Device`` and ``-Partition``.
    """
    return {
        f"X-{kind}-Host": f"{node.ip}:{node.port}",
        f"X-{kind}-Device": node.device_name,
        f"X-{kind}-Partition": str(partition),
    }


@frozen
class StreamedResponse:
    """
    A node's answer whose body is still to come. ``length`` is the body's (for a HEAD, the
    length its GET would have); ``headers`` are lower-cased, without Content-Length.
    """

    status: int
    headers: dict[str, str]
    length: int | None
    _response: Any  # twisted.web's IResponse

    @classmethod
    def of(cls, method: str, response: Any) -> StreamedResponse:
        headers: dict[str, str] = {}
        for name, values in response.headers.getAllRawHeaders():
            value = values[0] if len(values) == 1 else b",".join(values)
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        length = response.length if isinstance(response.length, int) else None
        declared = headers.pop("content-length", None)
        if method == "HEAD":  # the Agent leaves a HEAD's Content-Length in the headers
            length = int(declared) if declared and declared.isdigit() else None
        return cls(response.code, headers, length, response)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def deliver(self, protocol: Any) -> None:
        """Hand the body to ``protocol`` (twisted's ``deliverBody``); its transport pauses the node."""
        self._response.deliverBody(protocol)

    def abandon(self) -> None:
        """Close the answer without reading its body (its connection is not reused)."""
        self._response.deliverBody(_Abandon())

    async def discard(self, reactor: Any, timeout: float) -> bool:
        """Read and drop a small body within ``timeout``; False if the node stalled or broke off."""
        reading = readBody(self._response)
        reading.addTimeout(timeout, reactor)
        try:
            await reading
        except Exception:
            return False
        return True


class _Abandon(Protocol):
    def connectionMade(self) -> None:
        self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass


# What a request target may hold as it is: everything else (a raw space or a non-ASCII
# character in a query a client sent unencoded) goes as %XX of its UTF-8 bytes.
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


def _wire_url(url: str) -> bytes:
    """``url`` as the request line's bytes: unchanged when it is plain ASCII, else percent-encoded."""
    if url.isascii() and " " not in url:
        return url.encode("ascii")
    return quote(url.encode("utf-8", "surrogateescape"), safe=_URL_SAFE).encode("ascii")


class InertProducer:
    """The pause, resume and stop of a body that writes all it has at once: nothing to do."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IBodyProducer)
class _Body(InertProducer):
    """
    A small request body (an update's row, a listing's merge), written at once. treq's
    adapter made it a FileBodyProducer, paced through a cooperator, on every request.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred:
        consumer.write(self._data)
        return succeed(None)


@implementer(IAgentEndpointFactory)
class NodeEndpoints:
    """
    The Agent's endpoints, one per node made once: twisted's own factory makes a new one for
    every request (the host's IDNA encoding included, a few percent of a small GET's CPU), though
    a request on a pooled connection does not use it. HTTP, or HTTPS with the cluster's
    credentials (``tls``): one scheme, never the other.
    """

    def __init__(self, reactor: Any, connect_timeout: float, tls: Any = None) -> None:
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._tls = tls
        self.scheme = b"https" if tls is not None else b"http"
        self._made: dict[tuple[bytes, int], Any] = {}

    def endpointForURI(self, uri: Any) -> Any:
        if uri.scheme != self.scheme:
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        key = (uri.host, uri.port)
        endpoint = self._made.get(key)
        if endpoint is None:
            host = uri.host.decode("ascii")
            endpoint = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._connect_timeout)
            if self._tls is not None:
                endpoint = wrapClientTLS(self._tls.options_for(host.strip("[]")), endpoint)
            self._made[key] = endpoint
        return endpoint


class _QuietClientFactory(_HTTP11ClientFactory):
    """Twisted's per-connection HTTP client factory, without its "Starting/Stopping factory" lines
    (two per backend connection: most of an idle cluster's log)."""

    noisy = False


@implementer(IBackendClient)
class BackendClient:
    def __init__(
        self, reactor: Any, *, timeout: float = 10.0, connect_timeout: float = 2.0, max_per_host: int = 16,
        max_idle_puts_per_node: int = 16, tls: Any = None,
    ) -> None:
        """``tls``: the cluster's `Credentials` (every connection TLS), or None for plain HTTP."""
        self._reactor = reactor
        self.timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool._factory = _QuietClientFactory  # no two log lines per backend connection
        self._pool.maxPersistentPerHost = max_per_host
        self._pool.retryAutomatically = False  # a replayed PUT/DELETE must be our decision
        # A host that does not answer SYNs fails after connect_timeout, not the whole deadline.
        endpoints = NodeEndpoints(reactor, connect_timeout, tls)
        self._scheme = endpoints.scheme.decode("ascii")
        self._agent = Agent.usingEndpointFactory(reactor, endpoints, pool=self._pool)
        self.puts = PutConnectionPool(reactor, connect_timeout=connect_timeout,
                                      max_idle_per_node=max_idle_puts_per_node, tls=tls)

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
        query: str = "",
    ) -> BackendResponse:
        """``path`` is unencoded (it is quoted here); ``query`` is sent as given, with its "?"."""
        url = f"{self._scheme}://{_host(host)}:{port}{quote_path(path)}{query}"
        headers = with_reserved(path, headers)
        raw_headers = Headers({k.encode("latin-1"): [v.encode("latin-1")] for k, v in headers.items()})
        deadline = self.timeout if timeout is None else timeout

        async def exchange() -> BackendResponse:
            response = await self._agent.request(
                method.encode("ascii"), _wire_url(url), raw_headers, None if body is None else _Body(body)
            )
            content = await readBody(response)
            headers = {k.decode("latin-1").lower(): v[-1].decode("latin-1") for k, v in response.headers.getAllRawHeaders()}
            return BackendResponse(response.code, headers, content)

        timed_out: list[bool] = []

        def on_timeout(result: object, _timeout: float) -> object:
            timed_out.append(True)
            return result

        attempt = Deferred.fromCoroutine(exchange())
        attempt.addTimeout(deadline, self._reactor, onTimeoutCancel=on_timeout)
        try:
            return await attempt
        except Exception as err:
            if timed_out:
                raise BackendTimeout(f"{method} {host}:{port}{path}: no answer within {deadline}s") from None
            raise BackendError(f"{method} {host}:{port}{path}: {err}") from err

    async def stream(
        self, method: str, host: str, port: int, path: str, headers: dict[str, str], timeout: float | None = None,
    ) -> StreamedResponse:
        """``method`` (GET or HEAD) of ``path`` (unencoded): the answer once its headers are in."""
        url = f"{self._scheme}://{_host(host)}:{port}{quote_path(path)}".encode("ascii")
        headers = with_reserved(path, headers)
        raw_headers = Headers({k.encode("latin-1"): [v.encode("latin-1")] for k, v in headers.items()})
        attempt = self._agent.request(method.encode("ascii"), url, raw_headers)
        timed_out: list[bool] = []

        def on_timeout(result: object, _timeout: float) -> object:
            timed_out.append(True)
            return result

        deadline = self.timeout if timeout is None else timeout
        attempt.addTimeout(deadline, self._reactor, onTimeoutCancel=on_timeout)
        try:
            response = await attempt
        except ResponseNeverReceived as err:
            # The Agent wraps a cancellation; one that is not our deadline is the caller's.
            if not timed_out and any(reason.check(CancelledError) for reason in err.reasons):
                raise CancelledError() from None
            if timed_out:
                raise BackendTimeout(f"{method} {host}:{port}{path}: no answer within {deadline}s") from None
            raise BackendError(f"{method} {host}:{port}{path}: {err}") from err
        except CancelledError:
            raise
        except Exception as err:
            raise BackendError(f"{method} {host}:{port}{path}: {err}") from err
        return StreamedResponse.of(method, response)

    async def put(
        self, host: str, port: int, path: str, headers: dict[str, str], timeout: float | None = None,
    ):
        """
        Open an object PUT of ``path`` (unencoded) with ``Expect: 100-continue``: (the
        connection, None) when the node invites the body, or (the connection, its `NodeAnswer`)
        when it answered at once (507, 409, 412). Fails when the node cannot be reached or says
        nothing within ``timeout``.
        """
        request = PutRequest.of(quote_path(path), f"{_host(host)}:{port}", with_reserved(path, headers))
        return await self.puts.open(host, port, request, self.timeout if timeout is None else timeout)

    async def notify(
        self, method: str, host: str, port: int, path: str, headers: dict[str, str], timeout: float | None = None,
    ) -> BackendResponse:
        """
        A body-less ``method`` (PUT or DELETE) of ``path`` (unencoded), answered within
        ``timeout``: the answer (its body read whole, up to 64 KiB). Fails with `BackendError`
        (`BackendTimeout` when no answer came in time).
        """
        deadline = self.timeout if timeout is None else timeout
        request = PutRequest.of(quote_path(path), f"{_host(host)}:{port}",
                                {**with_reserved(path, headers), "Content-Length": "0"}, method)
        try:
            conn, answer = await self.puts.open(host, port, request, deadline)
        except (DeadlinePassed, CancelledError):
            raise BackendTimeout(f"{method} {host}:{port}{path}: no answer within {deadline}s") from None
        except Exception as err:
            raise BackendError(f"{method} {host}:{port}{path}: {err}") from err
        if answer is None:  # a 100 Continue nobody asked for
            conn.abort()
            raise BackendError(f"{method} {host}:{port}{path}: 100 Continue to a request without a body")
        return BackendResponse(answer.status, answer.headers, answer.body)

    def close(self) -> Deferred:
        """Close the pooled connections (tests, and at service stop)."""
        return DeferredList([self._pool.closeCachedConnections(), self.puts.close()])


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
