# -*- test-case-name: txstore.test.unit.test_qos_controller -*-
"""
The node's end of the tenant-cap controller (`txstore.qos.controller`): ``PUT /qos/shares``
with ``{"ttl": seconds, "shares": {tenant: bytes per second}}`` sets this node's shares of
capped tenants' caps in its IO scheduler. Like the rest of the backend API it is for the
cluster's own network; a share can only lower a tenant's rate below its class's cap, never
raise it, and the scheduler keeps it at 1 % of the cap or more, so the worst a forged one does
is slow a tenant down on one node for ``ttl``.
"""

from __future__ import annotations

import json

from twisted.web.http import Request

from txstore.common.streaming import BodyIncomplete
from txstore.storage.http_support import NodeResponse, plain_text

MAX_BODY = 1024 * 1024
MAX_TTL = 60.0


class SharesReceiver:
    def __init__(self, scheduler) -> None:
        self._scheduler = scheduler

    async def handle(self, request: Request) -> NodeResponse:
        if request.method != b"PUT":
            return plain_text(405, "Method Not Allowed: PUT the shares")
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = await request.body.read()
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY:
                    return plain_text(413, f"Shares body over {MAX_BODY} bytes")
        except BodyIncomplete:
            return plain_text(499, "Client Disconnect")
        try:
            value = json.loads(b"".join(chunks))
            ttl = float(value["ttl"])
            shares = {str(tenant): float(rate) for tenant, rate in value["shares"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return plain_text(400, 'Shares must be JSON: {"ttl": seconds, "shares": {tenant: bytes per second}}')
        if not 0 < ttl <= MAX_TTL or any(not rate >= 0 for rate in shares.values()):
            return plain_text(400, f"ttl must be in (0, {MAX_TTL:g}] and shares not negative")
        self._scheduler.set_shares(shares, ttl)
        return plain_text(204, "")
