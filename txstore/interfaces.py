# -*- test-case-name: txstore.test.unit.test_io -*-
"""
Every seam of txstore as a zope Interface, in one place.

An implementation states what it provides with ``@implementer``; tests check conformance with
``zope.interface.verify.verifyObject`` and shared test mixins.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from zope.interface import Attribute, Interface


class IBlockingRunner(Interface):
    """
    Runs blocking work (disk I/O, fsync, SQLite, big hashes) away from the reactor thread.

    Production runners use a bounded thread pool per device, so a slow disk only holds up the
    requests for that disk; unit tests use a synchronous runner.
    """

    def run(key: str, function, *args, **kwargs):
        """
        Call ``function(*args, **kwargs)`` in the pool of ``key`` (a device name); return a
        Deferred that fires with its result or fails with its exception. A cancelled Deferred
        does not stop the call already under way: commit steps (fsync, rename) finish.
        """


class IRing(Interface):
    """Which devices hold a name; reloads itself when its file changes."""

    part_power = Attribute("Bits of the md5 used for the partition.")
    replica_count = Attribute("How many primaries each partition has.")

    def get_part(account, container=None, obj=None):
        """The partition of a name."""

    def get_nodes(account, container=None, obj=None):
        """``(partition, [primary Node, ...])``."""

    def get_part_nodes(part):
        """The primaries of a partition."""

    def get_more_nodes(part):
        """Handoff nodes for a partition, farthest from the primaries first."""


class ITokenStore(Interface):
    """
    Where the proxy's auth keeps the tokens it has handed out.

    Tokens are bearer secrets: whoever holds one is its identity until it expires. The methods
    are synchronous: the store answers from the proxy's memory (tokens in a dict) or from the
    token itself (signed tokens). A store kept elsewhere is an `ISharedTokenStore`.
    """

    def issue(identity, expires_at):
        """Remember ``identity`` under a new, unguessable token until ``expires_at``; return it."""

    def lookup(token, now):
        """
        The identity of ``token``, or None when it is unknown or expired at ``now`` (an expired
        token is forgotten on the way).
        """

    def revoke(token):
        """Forget ``token`` at once; unknown tokens are ignored."""


class ISharedTokenStore(Interface):
    """
    A token store several proxies share (tokens in memcached): `ITokenStore`'s methods, each
    returning a Deferred, and the user's current token so that a login through any proxy
    hands back the one already out.
    """

    def issue(identity, expires_at):
        """A Deferred of a new token for ``identity`` until ``expires_at``, remembered as its user's current one."""

    def lookup(token, now):
        """A Deferred of the identity of ``token``, or None when unknown or expired at ``now``."""

    def revoke(token):
        """A Deferred that fires once ``token`` is forgotten by every proxy."""

    def current(user, now):
        """A Deferred of ``(token, expires_at)`` last issued to ``user`` and still valid at ``now``, or None."""


class IMemcache(Interface):
    """
    memcached as the proxies use it (`txstore.common.memcache.MemcacheClient`): values as JSON,
    each call a Deferred. Reads and writes never fail: a server that cannot be reached is a
    miss (``get``) or a write not done (``set``, ``delete`` answer False), so a proxy whose
    memcached is gone goes on, slower. Counters fail with ``MemcacheUnavailable`` instead, so
    their caller knows nothing was counted.
    """

    def get(key, unreachable=None):
        """The value of ``key``; None when absent, ``unreachable`` when no server answered."""

    def set(key, value, ttl):
        """Keep ``value`` (JSON-able) under ``key`` for ``ttl`` seconds: True when stored."""

    def delete(key):
        """Forget ``key``: True when it was there."""

    def incr(key, delta, ttl, initial=None):
        """Add ``delta`` to a counter (created at ``initial``, else ``delta``, for ``ttl`` s): the new value."""

    def decr(key, delta, ttl):
        """Take ``delta`` from a counter, not below 0 (a missing one is 0): the new value."""

    def close():
        """Drop the connections; a Deferred that fires once they are closed."""


class IAuthorizer(Interface):
    """
    The proxy's auth system: hands out tokens, says whose a token is, and decides whether an
    identity may make a request. Pure decisions: the HTTP layer fetches the container ACLs and
    turns the answers into responses.
    """

    def authenticate(headers, request_host, scheme, method="GET"):
        """
        Answer a ``GET /auth/v1.0`` request: an awaitable of an ``AuthResult`` (status,
        headers, body); awaited, as a shared token store answers through the network.
        """

    def identify(token):
        """An awaitable of the ``Identity`` behind an ``X-Auth-Token`` value, or None."""

    def authorize(
        identity, method, account, container, obj, container_read_acl, container_write_acl, referer
    ):
        """A ``Decision``: allowed, or denied with 401 (no identity) or 403 (not permitted)."""


class IByteSource(Interface):
    """
    A body read chunk by chunk with backpressure: the reader asks for the next chunk only when
    it can take it, and the source holds back its own producer (a client's upload, a storage
    node's response) while nobody asks.
    """

    def read():
        """
        A Deferred firing with the next bytes (at least one), or ``b""`` at the end. Fails when
        the body cannot be completed (a client that went away, a node that broke off and no
        replica could resume). One read at a time.
        """

    def stop():
        """Nobody will read further: release the connection or drop what still arrives."""


class IResponseBody(IPushProducer):
    """
    A storage node's response body too big to hold (an object's bytes): written to the client
    as it is read. The node's HTTP edge registers it as the push producer of the client's
    connection, so it reads on only while the client keeps up.
    """

    def write_to(consumer):
        """
        Write the body to ``consumer`` (an ``IConsumer`` this body is the producer of). A
        Deferred firing with True once all of it went out, or False when ``stopProducing``
        ended it (the client went away; stopped before ``write_to``, nothing is written and
        what the body holds is let go). It fails with ``HTTPError`` only while nothing was
        written (the edge answers that instead), and with ``ResponseAborted`` once the body
        has begun and cannot complete truthfully.
        """


class IApp(Interface):
    """
    One stage of the proxy's pipeline: the proxy application (the controllers) innermost, each
    middleware wrapping the next stage.
    """

    def __call__(request):
        """Answer a ``SwiftRequest``: a Deferred (or coroutine) firing with a ``SwiftResponse``."""


class IMiddleware(Interface):
    """
    A middleware as ``proxy.conf`` names it in ``[filter:NAME]`` (``use = egg:txstore#NAME``
    or the name of an entry point in the ``txstore.proxy_middleware`` group).
    """

    name = Attribute("The name proxy.conf uses for it (``tempauth``).")
    options = Attribute("The ``txstore.common.config.Option``\\ s its filter section accepts.")

    def build(app, settings, proxy):
        """
        Wrap ``app`` (the next ``IApp``): ``settings`` are the filter section's parsed options
        (every declared one, defaults filled in); ``proxy`` is the ``ProxyServices`` (rings,
        backend clients, clock, the ``/info`` registry). Returns the new ``IApp``.
        """


class IBackendClient(Interface):
    """
    How a txstore process talks to storage nodes: one owner of the connection pools for the
    three kinds of exchange. Paths are unencoded (``/<device>/<partition>/<account>/…``);
    header values hold bytes as Latin-1. ``txstore.common.backend_client.BackendClient`` is the
    real one; the tests' ``FakeBackend`` the in-memory one.
    """

    def request(method, host, port, path, headers=None, body=None, timeout=None, query=""):
        """A small exchange read whole: a ``BackendResponse``; fails with ``BackendError``."""

    def stream(method, host, port, path, headers, timeout=None):
        """
        An object GET or HEAD: a ``StreamedResponse`` once the headers are in (its body is
        delivered later, with backpressure). Fails with ``BackendError``, or ``CancelledError``
        when the caller cancelled it.
        """

    def put(host, port, path, headers, timeout=None):
        """
        An object PUT asked with ``Expect: 100-continue``: (connection, None) when the node
        invites the body, (connection, ``NodeAnswer``) when it answered at once. The
        connection has ``write``, ``finish``, ``abort``, ``writable``, ``wait_writable`` and
        the ``answer`` Deferred.
        """

    def notify(method, host, port, path, headers, timeout=None):
        """
        A body-less PUT or DELETE (a container update) answered within ``timeout``: a
        ``BackendResponse``; fails with ``BackendError`` (``BackendTimeout`` past the deadline).
        """

    def close():
        """Close every pooled connection; a Deferred that fires once they are closed."""


class IRateCounters(Interface):
    """
    The rate limiter's shared state: integer counters by key (ratelimit's running times), held
    in the proxy's memory or in memcached so that several proxies limit together. Every method
    returns a Deferred; an implementation that cannot reach its store fails it (the limiter
    then lets the request through, as Swift's does).
    """

    def incr(key, delta, ttl, initial=None):
        """
        Add ``delta`` to ``key``: the new value. A missing key is created (atomically, whoever
        else asks at once) at ``initial``, or ``delta`` when None, and kept ``ttl`` seconds.
        """

    def decr(key, delta, ttl):
        """Take ``delta`` from ``key`` (not below 0): the new value."""

    def set(key, value, ttl):
        """Set ``key`` to ``value`` for ``ttl`` seconds."""
