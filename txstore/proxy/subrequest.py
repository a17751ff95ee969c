# -*- test-case-name: txstore.test.unit.test_pipeline -*-
"""
Sub-requests: a middleware's own requests (fetch a copy's source, a large object's segments,
archive a version), sent down the pipeline below it and answered with a streamed response.

A sub-request carries its parent's transaction id (so every log line of the work is found
together), a ``swift.source`` tag saying which middleware made it (logged by the inner
proxy_logging), and either the parent's identity, credentials and authorizer (the default: the
client may only reach what it could ask for itself) or, with ``system=True``, none, with
``swift.authorize_override`` set so that no auth middleware below installs one (the
middleware's own bookkeeping, which no client's ACL should stop). It is awaited inside the parent's handler, so
a client that goes away cancels it with the rest of the parent's work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from txstore.common.backend_client import quote_path
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest
from txstore.qos.headers import ENVIRON as IO_SPEC

AUTHORIZE = "swift.authorize"
OVERRIDE = "swift.authorize_override"
# What a sub-request inherits from its parent: the credentials and the referrer (a container's
# ``.r:`` ACL), so an auth middleware below the caller judges it as it judged the parent.
CREDENTIALS = ("X-Auth-Token", "X-Storage-Token", "Referer")


def make(
    parent: SwiftRequest,
    method: str,
    path: str,
    *,
    source: str,
    headers: Mapping[str, str] | None = None,
    query: str = "",
    body: Any = None,
    system: bool = False,
) -> SwiftRequest:
    """
    A request built from ``parent``. ``path`` is decoded (``/v1/AUTH_a/c/o``) and quoted here;
    ``body`` is an `IByteSource` (none: empty).
    """
    environ: dict[str, Any] = {"swift.source": source}
    sent = HeaderMap(headers or {})
    if system:
        environ[OVERRIDE] = True  # no auth middleware below installs an authorizer
    else:
        if AUTHORIZE in parent.environ:
            environ[AUTHORIZE] = parent.environ[AUTHORIZE]
        for name in CREDENTIALS:
            value = parent.header(name)
            if value is not None:
                sent.setdefault(name, value)
    if IO_SPEC in parent.environ:
        environ[IO_SPEC] = parent.environ[IO_SPEC]  # the disk work of segments, versions: the parent's class
    return SwiftRequest(
        method=method,
        path=quote_path(path),
        headers=sent,
        query=query,
        body=body if body is not None else BytesSource(b""),
        environ=environ,
        trans_id=parent.trans_id,
        client_ip=parent.client_ip,
        host=parent.host,
        scheme=parent.scheme,
        identity=None if system else parent.identity,
    )
