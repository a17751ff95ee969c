# -*- test-case-name: txstore.test.test_node_server -*-
"""
The storage node's backend HTTP front: ``/<device>/<partition>/<account>[/<c>[/<o>]]``.

Today it serves the operational endpoints; the account, container and object servers plug in
here.
"""

from __future__ import annotations

from attrs import frozen
from twisted.web.http import Request
from twisted.web.resource import Resource

from txstore.common.web import DispatchResource, healthcheck, plain_text
from txstore.ring.ringset import RingSet
from txstore.storage.config import NodeSettings


@frozen
class NodeServer:
    settings: NodeSettings
    rings: RingSet

    def resource(self) -> Resource:
        return DispatchResource(self.handle)

    def handle(self, request: Request) -> bytes:
        if request.path == b"/healthcheck":
            return healthcheck(request)
        return plain_text(request, 404, "Not Found")
