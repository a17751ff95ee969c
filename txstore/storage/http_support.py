# -*- test-case-name: txstore.test.unit.test_object_server,txstore.test.unit.test_container_server,txstore.test.unit.test_node_routing -*-
"""
What the object, container and account servers of a node share: the small request helpers
that turn bad input into a clear 4xx, and what a handler answers (`NodeResponse`, which the
node's edge, ``txstore.storage.edge``, writes to the client). The context they run in is
``txstore.storage.context``.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import field, frozen
from twisted.web.http import Request

from txstore.common.policies import PolicyCollection, StoragePolicy
from txstore.common.timestamps import Timestamp
from txstore.common.web import HTTPError  # noqa: F401  (re-exported for the servers)
from txstore.interfaces import IResponseBody

ResponseHeaders = Mapping[str | bytes, str | bytes]
TEXT_PLAIN = b"text/plain; charset=utf-8"


@frozen
class NodeResponse:
    """
    A node handler's answer. ``headers`` go out as given, in their order (a name set twice,
    in any case, keeps its first place and its last value, as twisted's headers do), with
    ``Content-Length`` among them: the edge adds none, so a HEAD's is the GET's and a 204 may
    have none. ``body`` is bytes, or an `IResponseBody` the edge streams; a HEAD's body is
    never written.
    """

    status: int
    headers: ResponseHeaders = field(factory=dict)
    body: bytes | IResponseBody = b""


def plain_text(status: int, text: str | bytes, headers: ResponseHeaders | None = None) -> NodeResponse:
    """A short plain-text answer (one line, newline-terminated) after ``headers``, if any."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if data and not data.endswith(b"\n"):
        data += b"\n"
    first = headers if headers is not None else {}
    return NodeResponse(status, {**first, b"Content-Type": TEXT_PLAIN, b"Content-Length": b"%d" % len(data)}, data)


def header(request: Request, name: str) -> str | None:
    """A request header as text; bytes that are not UTF-8 survive as surrogates (no 500)."""
    value = request.getHeader(name.encode("latin-1"))
    if value is None:
        return None
    return value.decode("utf-8", "surrogateescape")


def request_headers(request: Request) -> list[tuple[str, str]]:
    """Every request header as text (UTF-8, as Swift's metadata is), in arrival order."""
    items = []
    for name, values in request.requestHeaders.getAllRawHeaders():
        key = name.decode("latin-1")
        for value in values:
            items.append((key, value.decode("utf-8", "surrogateescape")))
    return items


def required_timestamp(request: Request, name: str = "X-Timestamp") -> Timestamp:
    raw = header(request, name)
    if raw is None:
        raise HTTPError(400, f"Missing {name} header")
    try:
        return Timestamp.parse(raw)
    except ValueError:
        raise HTTPError(400, f"Invalid {name} header: {raw!r}") from None


def storage_policy(request: Request, policies: PolicyCollection) -> StoragePolicy:
    raw = header(request, "X-Backend-Storage-Policy-Index")
    if raw is None:
        return policies.by_index(0) or policies.default
    try:
        index = int(raw)
    except ValueError:
        raise HTTPError(400, f"Invalid X-Backend-Storage-Policy-Index: {raw!r}") from None
    policy = policies.by_index(index)
    if policy is None:
        raise HTTPError(503, f"No policy with index {index}")
    return policy


def integer_header(request: Request, name: str, minimum: int = 0) -> int | None:
    raw = header(request, name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"Invalid {name} header: {raw!r}") from None
    if value < minimum:
        raise HTTPError(400, f"Invalid {name} header: {raw!r}")
    return value


def required_integer_header(request: Request, name: str, minimum: int = 0) -> int:
    """`integer_header`, and 400 when the header is missing."""
    value = integer_header(request, name, minimum)
    if value is None:
        raise HTTPError(400, f"Missing {name} header")
    return value
