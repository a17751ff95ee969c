# -*- test-case-name: txstore.test.unit.test_node_routing -*-
"""
The storage node's backend HTTP front: ``/<device>/<partition>/<account>[/<c>[/<o>]]``.

A Klein app routes ``/healthcheck``, ``/recon/...`` and the three backend path shapes to
methods. werkzeug's match is only a first sort: it sees the path after Twisted has
percent-decoded each segment, with leading slashes dropped, and takes ``/healthcheck/`` for
``/healthcheck``. So every route checks the raw path again, and the backend route takes the
level and the names from `parse_backend_path` (one decode of the raw path, Swift's error
statuses), then hands the request to the account, container or object server. A path no route
takes, or that Klein would refuse (not UTF-8 once decoded), is decided on the raw path alone,
as the routes would. Each server is an object with ``async handle(request, path) ->
NodeResponse``; the node's edge (``txstore.storage.edge``) writes what it answers, and its
errors (`HTTPError`) as short plain text.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Protocol

from attrs import frozen
from klein import Klein
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import HTTPException

from txstore.common.metrics import ServerMetrics
from txstore.common.paths import BackendPath, BadPath, parse_backend_path
from txstore.common.routing import Routes, klein_can_route, swift_routes
from txstore.common.web import access_line, log_line
from txstore.storage.edge import serve
from txstore.storage.http_support import NodeResponse, plain_text

Answer = NodeResponse | Awaitable[NodeResponse]

HEALTHY = plain_text(200, "OK")
HEALTHCHECK_METHODS = plain_text(405, "Method Not Allowed", {b"Allow": b"GET, HEAD"})
NOT_FOUND = plain_text(404, "Not Found")


def healthcheck(request: Request) -> NodeResponse:
    """``/healthcheck``: 200 ``OK`` while the process serves, for load balancers and launchers."""
    if request.method not in (b"GET", b"HEAD"):
        return HEALTHCHECK_METHODS
    return HEALTHY


class BackendHandler(Protocol):
    async def handle(self, request: Request, path: BackendPath) -> NodeResponse: ...


# A module's Logger, not a class attribute read through ``self``: Logger is a descriptor that
# makes a new Logger at each such read, on every request.
ACCESS_LOG = Logger(namespace="txstore.storage.access")


@frozen
class NodeServer:
    accounts: BackendHandler | None = None
    containers: BackendHandler | None = None
    objects: BackendHandler | None = None
    recon: object | None = None  # txstore.node.recon.Recon
    shares: object | None = None  # txstore.qos.shares.SharesReceiver: the tenant-cap controller's PUTs
    metrics: ServerMetrics | None = None  # served at /metrics, fed by every request's end
    log = Logger()
    app = swift_routes(Klein())

    def resource(self) -> Resource:
        return _NodeRoot(self)

    @app.route("/healthcheck")
    def serve_healthcheck(self, request: Request) -> Answer:
        if request.path != b"/healthcheck":  # werkzeug also takes //healthcheck, /healthcheck/
            return self.serve_backend(request)
        return healthcheck(request)

    @app.route("/recon/")
    @app.route("/recon/<objname:_check>")
    def serve_recon(self, request: Request, _check: str = "") -> Answer:
        if self.recon is None or not request.path.startswith(b"/recon/"):
            return self.serve_backend(request)
        return self.recon.handle(request)  # type: ignore[attr-defined]

    @app.route("/qos/shares")
    def serve_shares(self, request: Request) -> Answer:
        if self.shares is None or request.path != b"/qos/shares":
            return self.serve_backend(request)
        return self.shares.handle(request)  # type: ignore[attr-defined]

    @app.route("/<name:device>/<name:partition>/<name:account>", endpoint="account")
    @app.route("/<name:device>/<name:partition>/<name:account>/", endpoint="account/")
    @app.route("/<name:device>/<name:partition>/<name:account>/<name:container>", endpoint="container")
    @app.route("/<name:device>/<name:partition>/<name:account>/<name:container>/", endpoint="container/")
    @app.route("/<name:device>/<name:partition>/<name:account>/<name:container>/<objname:obj>", endpoint="object")
    def serve_backend(self, request: Request, **_segments: str) -> Answer:
        """The level and the names are `parse_backend_path`'s, not werkzeug's (see the module)."""
        return self._backend(request)

    def not_routed(self, request: Request) -> Answer:
        """What no route takes, or Klein cannot route: the raw path decides, in the routes' order."""
        if request.path == b"/healthcheck":
            return healthcheck(request)
        if request.path.startswith(b"/recon/"):
            return self.serve_recon(request)
        if request.path == b"/qos/shares":
            return self.serve_shares(request)
        return self.serve_backend(request)

    def _log_access(self, request: Request) -> None:
        """At the request's end, its access line and (with metrics) its figures: one callback for both."""
        trans_id = request.getHeader(b"x-trans-id")
        request.notifyFinish().addBoth(
            self._finished, request, trans_id.decode("latin-1") if trans_id else "-", time.monotonic()
        )

    def _finished(self, result: object, request: Request, trans_id: str, started: float) -> None:
        try:
            log_line(ACCESS_LOG, access_line(request, trans_id, started, result))
        finally:  # a line that could not be written still counts
            if self.metrics is not None:
                self._observe(result, request, started)

    def _observe(self, result: object, request: Request, started: float) -> None:
        body = getattr(request, "body", None)
        method = request.method.decode("ascii", "replace")
        status, seconds, server = request.code if result is None else None, time.monotonic() - started, _server_of(request)
        received = getattr(body, "received", 0)
        self.metrics.observe(  # type: ignore[union-attr]
            method, status, seconds, request.sentLength, received, server=server,
        )
        if self.metrics.statsd is not None and server != "other":  # type: ignore[union-attr]
            self.metrics.statsd.timing(f"{server}-server.{method}.timing", seconds * 1000)  # type: ignore[union-attr]
            if status is not None and status >= 500:
                self.metrics.statsd.increment(f"{server}-server.{method}.errors")  # type: ignore[union-attr]

    def _backend(self, request: Request) -> Answer:
        try:
            path = parse_backend_path(request.path, _allows_reserved(request))
        except BadPath as err:
            return plain_text(err.status, err.reason)
        handle = self._route(request, path)
        if handle is None:
            return NOT_FOUND
        return handle(request, path)

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


def _server_of(request: Request) -> str:
    """Which server a request went to, for the metrics (by its path's shape, as routed)."""
    path = request.path
    if not path.startswith(b"/") or path.startswith((b"/recon/", b"/healthcheck")):
        return "other"
    depth = path.rstrip(b"/").count(b"/")
    if depth >= 5:
        if request.getHeader(b"x-backend-server-type") == b"container":
            return "container"  # an object's row
        return "object"
    if depth == 4:
        return "account" if request.getHeader(b"x-put-timestamp") is not None else "container"
    return "account" if depth == 3 else "other"


def _allows_reserved(request: Request) -> bool:
    """``X-Backend-Allow-Reserved-Names: true``: the sender admitted the path's reserved names."""
    value = request.getHeader(b"x-backend-allow-reserved-names")
    return value is not None and value.strip().lower() in (b"true", b"1", b"yes", b"on", b"t", b"y")


class _NodeRoot(Resource):
    """
    The node's root: writes the access log, then serves the request on the Klein app's routes
    (`Routes`: the map matched directly, without ``KleinResource``, which cost the node about
    60 µs a request, as much as all the rest of a small request's routing), through the edge
    (`serve`: never cancelled, errors as plain text). A request no route takes, or that Klein's
    routing could not decode (a host or a decoded path that is not UTF-8), gets what the node
    answers without a route (a path's 412 from `parse_backend_path`).
    """

    isLeaf = True

    def __init__(self, node: NodeServer) -> None:
        super().__init__()
        self._node = node
        self._routes = Routes(node.app)
        self._log = node.log  # read once: a Logger read through an instance is a new Logger

    def render(self, request: Request) -> int | bytes:
        metrics = self._node.metrics
        if metrics is not None and request.path == b"/metrics":
            return metrics.resource().render(request)  # scrapes are neither logged nor counted
        self._node._log_access(request)
        serve(request, self._route, self._log)
        return NOT_DONE_YET

    def _route(self, request: Request) -> Answer:
        if not klein_can_route(request):
            return self._node.not_routed(request)
        # What Klein matches on: the path as twisted split and percent-decoded it, segment by segment.
        path = "/" + b"/".join(request.postpath).decode("utf-8")
        try:
            endpoint, names = self._routes.match(path, request.method.decode("latin-1"))
        except HTTPException:  # werkzeug's NotFound: the raw path decides
            return self._node.not_routed(request)
        return self._routes.call(endpoint, request, **names)
