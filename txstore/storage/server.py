# -*- test-case-name: txstore.test.test_node_server -*-
"""
The storage node's backend HTTP front: ``/<device>/<partition>/<account>[/<c>[/<o>]]``.

It decodes and checks the path once, hands the request to the account, container or object
server by how deep the path goes, and turns their `HTTPError`s into short plain-text answers.
Each server is an object with ``async handle(request, path) -> bytes``.
"""

from __future__ import annotations

import time
from typing import Protocol

from attrs import frozen
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.resource import Resource

from txstore.common.paths import BackendPath, BadPath, parse_backend_path
from txstore.common.web import DispatchResource, healthcheck, log_access, plain_text
from txstore.storage.http_support import HTTPError


class BackendHandler(Protocol):
    async def handle(self, request: Request, path: BackendPath) -> bytes: ...


@frozen
class NodeServer:
    accounts: BackendHandler | None = None
    containers: BackendHandler | None = None
    objects: BackendHandler | None = None
    recon: object | None = None  # txstore.storage.recon.Recon
    log = Logger()
    access = Logger(namespace="txstore.storage.access")

    def resource(self) -> Resource:
        return DispatchResource(self.handle)

    def handle(self, request: Request):
        trans_id = request.getHeader(b"x-trans-id")
        log_access(self.access, request, trans_id.decode("latin-1") if trans_id else "-", time.monotonic())
        if request.path == b"/healthcheck":
            return healthcheck(request)
        if request.path.startswith(b"/recon/") and self.recon is not None:
            return self.recon.handle(request)
        try:
            path = parse_backend_path(request.path)
        except BadPath as err:
            return plain_text(request, err.status, err.reason)
        handle = self._route(request, path)
        if handle is None:
            return plain_text(request, 404, "Not Found")
        return self._serve(handle, request, path)

    def _route(self, request: Request, path: BackendPath):
        """
        Which server method answers. One port serves all three servers, so the two requests
        whose paths look like the next level down say where they go: an object row update (sent
        by object servers and the updater) carries ``X-Backend-Server-Type: container``, and a
        container report to an account carries ``X-Put-Timestamp``.
        """
        if path.obj is not None:
            if request.getHeader(b"x-backend-server-type") == b"container":
                return self.containers.handle_object_row if self.containers else None
            return self.objects.handle if self.objects else None
        if path.container is not None:
            if request.method == b"PUT" and request.getHeader(b"x-put-timestamp") is not None:
                return self.accounts.handle_container_report if self.accounts else None
            return self.containers.handle if self.containers else None
        return self.accounts.handle if self.accounts else None

    async def _serve(self, handle, request: Request, path: BackendPath) -> bytes:
        try:
            return await handle(request, path)
        except HTTPError as err:
            for name, value in err.headers.items():
                request.setHeader(name, value)
            return plain_text(request, err.status, err.reason)
