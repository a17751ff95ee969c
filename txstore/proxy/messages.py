# -*- test-case-name: txstore.test.unit.test_proxy_messages -*-
"""
The proxy's request and response values: what every middleware and the proxy application
see instead of twisted's ``Request``.

Header names are matched without case and values are ``str`` holding the bytes as Latin-1
(one character per byte, as WSGI has them): nothing is lost between the client, the
middlewares and the storage nodes, and lengths count bytes as Swift's limits do. Bodies are
`IByteSource`\\ s: the request's is the client's upload, read with backpressure; a response's
is ``bytes`` or a source the HTTP edge pumps to the client only while the client keeps up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from txstore.common.paths import ALLOW_RESERVED, BadPath, decode_path, split_path
from txstore.interfaces import IByteSource

TRUE_VALUES = frozenset({"true", "yes", "1", "on", "t", "y"})


class HeaderMap:
    """Headers by name, without regard to case, keeping the spelling they were set with."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        self.update(items)

    def update(self, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        pairs = items.items() if type(items) is dict or isinstance(items, (Mapping, HeaderMap)) else items
        for name, value in pairs:
            self[name] = value

    def get(self, name: str, default: str | None = None) -> str | None:
        item = self._items.get(name.lower())
        return default if item is None else item[1]

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, str(value))

    def setdefault(self, name: str, value: str) -> str:
        if name.lower() not in self._items:
            self[name] = value
        return self[name]

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def pop(self, name: str, default: str | None = None) -> str | None:
        item = self._items.pop(name.lower(), None)
        return default if item is None else item[1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items.values())

    def with_prefix(self, *prefixes: str) -> dict[str, str]:
        """The headers whose names start with one of ``prefixes`` (lower case)."""
        return {name: value for key, (name, value) in self._items.items() if key.startswith(prefixes)}

    def remove_prefix(self, *prefixes: str) -> list[str]:
        """Drop the headers whose names start with one of ``prefixes`` (lower case)."""
        gone = [key for key in self._items if key.startswith(prefixes)]
        for key in gone:
            del self._items[key]
        return gone

    def copy(self) -> HeaderMap:
        copied = HeaderMap()
        copied._items = dict(self._items)
        return copied

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HeaderMap):
            return NotImplemented
        return {k: v for k, (_, v) in self._items.items()} == {k: v for k, (_, v) in other._items.items()}

    def __repr__(self) -> str:
        return f"HeaderMap({dict(self._items.values())!r})"


@implementer(IByteSource)
class BytesSource:
    """A body that is already in memory (a JSON manifest, a rendered listing)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self) -> Deferred:
        data, self._data = self._data, b""
        return succeed(data)

    def stop(self) -> None:
        self._data = b""


@implementer(IByteSource)
class WatchedSource:
    """
    A body passed on unchanged by a middleware that only watches it: how many bytes were read
    and how the reading ended (proxy_logging's access line, catch_errors' abort). A subclass
    says what it does in `ended`, `failed` and `stopped`.

    Any reader may read through it. The edge, the reader of every client's body, reads the
    innermost source directly instead (`unwatched`) and tells the watchers once at the end, so
    a chunk costs one read however many middlewares watch the body.
    """

    def __init__(self, source) -> None:
        self.source = source
        self._sent = 0

    def read(self) -> Deferred:
        return self.source.read().addCallbacks(self._read, self._failed)

    def _read(self, data: bytes) -> bytes:
        if data:
            self._sent += len(data)
        else:
            self.ended(self._sent)
        return data

    def _failed(self, failure):
        return self.failed(failure, self._sent)

    def stop(self) -> None:
        self.stopped(self._sent)
        self.source.stop()

    def ended(self, sent: int) -> None:
        """The whole body was read: ``sent`` bytes."""

    def failed(self, failure, sent: int):
        """A read failed after ``sent`` bytes: return the failure to pass on (or raise another)."""
        return failure

    def stopped(self, sent: int) -> None:
        """The reader stopped after ``sent`` bytes (the client went, or it needs no more)."""


def unwatched(source) -> tuple[Any, list[WatchedSource]]:
    """The source under every `WatchedSource` wrapping ``source``, and those, outermost first."""
    watchers = []
    while isinstance(source, WatchedSource):
        watchers.append(source)
        source = source.source
    return source, watchers


EMPTY_BODY = b""


@define
class SwiftRequest:
    """
    One request as the pipeline sees it. Middlewares may change any field on the way in
    (a rewritten path, a removed header); a sub-request is a new value (`subrequest.make`).

    ``path`` is the raw path as sent (still percent-encoded); ``query`` the raw query string
    without its ``?``. ``environ`` carries what middlewares tell each other, under Swift's
    names where Swift has one (``swift.source``, ``swift.authorize``).
    """

    method: str
    path: str
    headers: HeaderMap = field(factory=HeaderMap)
    query: str = ""
    body: Any = field(factory=lambda: BytesSource(b""))  # IByteSource
    environ: dict[str, Any] = field(factory=dict)
    trans_id: str = "-"
    client_ip: str = "-"
    host: str = "localhost"
    scheme: str = "http"
    identity: Any = None  # set by the auth middleware: who is asking (None: anonymous)
    # Every stage asks for the decoded path, its segments and the query's parameters; each is
    # worked out once per value of ``path`` (and of X-Backend-Allow-Reserved-Names) or ``query``:
    # (path, that header's value, the decoded path or its BadPath, splits by (minimum, maximum)).
    _decoded: tuple[str, str | None, str | BadPath, dict] | None = field(default=None, init=False, repr=False,
                                                                          eq=False)
    _params: tuple[str, dict[str, str]] | None = field(default=None, init=False, repr=False, eq=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def flag(self, name: str) -> bool:
        """A header whose value means yes (``X-Newest: true``)."""
        return (self.headers.get(name) or "").strip().lower() in TRUE_VALUES

    @property
    def params(self) -> dict[str, str]:
        """The query's parameters, decoded (the last one wins when a name repeats); a new dict each time."""
        cached = self._params
        if cached is None or cached[0] is not self.query:
            query = self.query
            cached = self._params = (query, dict(parse_qsl(query, keep_blank_values=True)) if query else {})
        return dict(cached[1])

    def split(self, minimum: int = 1, maximum: int = 4) -> list[str | None]:
        """The decoded path's segments (`split_path`); raises `BadPath` with Swift's status."""
        decoding = self._decoding()
        splits = decoding[3]
        segments = splits.get((minimum, maximum))
        if segments is None:
            path = decoding[2]
            if isinstance(path, BadPath):
                raise path
            try:
                segments = split_path(path, minimum, maximum)
            except BadPath as err:
                segments = err
            splits[minimum, maximum] = segments
        if isinstance(segments, BadPath):
            raise segments
        return list(segments)

    @property
    def allow_reserved(self) -> bool:
        """Whether this request may name reserved names (``X-Backend-Allow-Reserved-Names: true``)."""
        return self.flag(ALLOW_RESERVED)

    @property
    def decoded_path(self) -> str:
        """
        The path percent-decoded as UTF-8; `BadPath` (412) for invalid UTF-8, or for a NUL
        unless the request may name reserved names (`allow_reserved`).
        """
        path = self._decoding()[2]
        if isinstance(path, BadPath):
            raise path
        return path

    def _decoding(self) -> tuple[str, str | None, str | BadPath, dict]:
        cached = self._decoded
        allow = self.headers.get(ALLOW_RESERVED)
        # a middleware may have rewritten the path, or allowed reserved names
        if cached is None or cached[0] is not self.path or cached[1] != allow:
            allowed = (allow or "").strip().lower() in TRUE_VALUES
            cached = self._decoded = (self.path, allow, _decode_or_error(self.path, allowed), {})
        return cached

    @property
    def uri(self) -> str:
        return self.path + ("?" + self.query if self.query else "")

    def discard_body(self) -> None:
        """The answer does not need the body: drop whatever of it arrives."""
        self.body.stop()


@define
class SwiftResponse:
    """
    What the pipeline answers. ``body`` is bytes or an `IByteSource`; for a source the
    ``Content-Length`` header, when set, is what the client is promised (a HEAD sets it with an
    empty body). Twisted picks the reason phrase from the status.
    """

    status: int
    headers: HeaderMap = field(factory=HeaderMap)
    body: Any = EMPTY_BODY  # bytes | IByteSource

    @classmethod
    def text(cls, status: int, reason: str, headers: Mapping[str, str] | None = None) -> SwiftResponse:
        """
        A short plain-text answer that says why (never an HTML error page). The reason is the
        whole body, with no newline added: Swift's clients and tests compare bodies exactly.
        ``headers`` may label it otherwise where Swift does (``text/html``).
        """
        data = reason.encode("utf-8")
        response = cls(status, HeaderMap(headers or {}), data)
        response.headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return response

    @classmethod
    def empty(cls, status: int, headers: Mapping[str, str] | None = None) -> SwiftResponse:
        return cls(status, HeaderMap(headers or {}), b"")

    @property
    def streamed(self) -> bool:
        return not isinstance(self.body, bytes)

    def body_source(self):
        """The body as an `IByteSource`, whole or streamed (to feed it to another request)."""
        return self.body if self.streamed else BytesSource(self.body)

    def discard_body(self) -> None:
        """Nobody will read this body (a middleware replaced it): release what it holds."""
        if self.streamed:
            self.body.stop()
        self.body = b""


def _decode_or_error(path: str, allow_reserved: bool) -> str | BadPath:
    try:
        return decode_path(path.encode("latin-1"), allow_reserved)
    except BadPath as err:
        return err


def bad_path_response(err: BadPath) -> SwiftResponse:
    return SwiftResponse.text(err.status, err.reason)
