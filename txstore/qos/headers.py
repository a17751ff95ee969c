# -*- test-case-name: txstore.test.unit.test_qos_classes -*-
"""
How an `IOSpec` travels: set on a request by the proxy's qos middleware (``ENVIRON``, inherited
by sub-requests), sent to the object nodes as ``X-Backend-Io-*`` headers (which gatekeeper
strips from clients), read back by the node.
"""

from __future__ import annotations

from collections.abc import Callable

from txstore.qos.classes import BACKGROUND, IOSpec

ENVIRON = "txstore.io"
CLASS = "X-Backend-Io-Class"
TENANT = "X-Backend-Io-Tenant"
RATE = "X-Backend-Io-Rate"
# An object's own class, kept with it (set by the qos middleware on PUT, read by the node on GET)
OBJECT_SYSMETA = "X-Object-Sysmeta-Io-Class"


# What a node's own request to another node says when it is consistency work (a rebuild's reads)
BACKGROUND_IO = {CLASS: BACKGROUND, TENANT: "-"}


def backend_headers(environ: dict) -> dict[str, str]:
    """The headers that carry a request's IO spec to the nodes (none without one)."""
    spec = environ.get(ENVIRON)
    if spec is None:
        return {}
    headers = {CLASS: spec.io_class, TENANT: spec.tenant}
    if spec.rate:
        headers[RATE] = str(spec.rate)
    return headers


def from_backend(header: Callable[[str], str | None]) -> IOSpec | None:
    """The spec a node request carries (``header(name)`` reads one), or None."""
    io_class = (header(CLASS) or "").strip()
    if not io_class:
        return None
    rate = (header(RATE) or "").strip()
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses
    return IOSpec(io_class, (header(TENANT) or "").strip(), int(rate) if rate.isascii() and rate.isdigit() else 0)
