# -*- test-case-name: txstore.test.unit.test_cors -*-
"""
cors: cross-origin resource sharing, as Swift's proxy has it, so a web page from another origin
may use the API from a browser.

A container says which origins may (its owner sets them as metadata)::

    X-Container-Meta-Access-Control-Allow-Origin    origins, space-separated, or *
    X-Container-Meta-Access-Control-Max-Age         seconds a browser may keep a preflight's answer
    X-Container-Meta-Access-Control-Expose-Headers  more response headers a page may read

and the operator may allow origins everywhere (``cors_allow_origin``).

Preflight: ``OPTIONS`` is answered here, without a token. Without ``Origin`` it is ``200`` with
``Allow``. With one, the origin must be allowed for the container (or by ``cors_allow_origin``)
and ``Access-Control-Request-Method`` must be a method of that path, else ``401``; the ``200``
carries ``Access-Control-Allow-Origin`` (``*`` when the container allows any origin, else the
origin), ``-Allow-Methods``, ``-Allow-Headers`` (those the request asked for), ``-Max-Age`` and
``Vary: Origin``.

Actual requests with ``Origin``: the answer, whatever it is, gets ``Access-Control-Allow-Origin``
and ``Access-Control-Expose-Headers`` (the simple response headers Swift names, the
``X-Container-Meta-*`` / ``X-Object-Meta-*`` of the answer, the container's and the operator's
lists), unless something below set them. With ``strict_cors_mode`` (the default) only for an
allowed origin; without it, for any origin (Swift's older behaviour, the request having been
authorized as any other). Before tempurl and tempauth, so temporary URLs and anonymous reads
(staticweb) are usable from other origins too.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from txstore.common import config as c
from txstore.common.paths import BadPath
from txstore.interfaces import IApp
from txstore.middleware.base import CachedContainers, Middleware
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

# What a page may always read of an answer (Swift's list).
EXPOSED = ("cache-control", "content-language", "content-type", "expires", "last-modified", "pragma", "etag",
           "x-timestamp", "x-trans-id", "x-openstack-request-id")
METHODS = {
    "account": ("DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"),
    "container": ("DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"),
    "object": ("COPY", "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"),
    "other": ("GET", "HEAD", "OPTIONS"),
}


def names(raw: str, _base: Any) -> tuple[str, ...]:
    """A comma-separated list: blanks dropped."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


OPTIONS = (
    c.Option("strict_cors_mode", c.boolean, True,
             doc="Answer actual requests with CORS headers only for allowed origins (else for any)."),
    c.Option("cors_allow_origin", names, (),
             doc="Origins allowed for every container, comma-separated (a container adds its own)."),
    c.Option("cors_expose_headers", names, (),
             doc="Response headers every page may read, comma-separated, besides Swift's simple ones."),
)


class Rules:
    """A container's CORS metadata (names lower case, without the prefix); none for accounts."""

    def __init__(self, meta: dict[str, str] | None) -> None:
        meta = meta or {}
        self.allow_origin = (meta.get("access-control-allow-origin") or "").strip()
        self.max_age = (meta.get("access-control-max-age") or "").strip()
        self.expose = [h.lower() for h in (meta.get("access-control-expose-headers") or "").split() if h]

    @property
    def any_origin(self) -> bool:
        return self.allow_origin == "*"


@implementer(IApp)
class CORS:
    def __init__(self, app, settings, containers) -> None:
        self.app = app
        self.strict = settings["strict_cors_mode"]
        self.allow_origin = frozenset(settings["cors_allow_origin"])
        self.expose = tuple(h.lower() for h in settings["cors_expose_headers"])
        self.containers = containers  # (request, account, container) -> Awaitable[ContainerInfo]

    def __call__(self, request: SwiftRequest):
        # A request without Origin, but a preflight, is the next stage's call itself.
        if request.method == "OPTIONS":
            return self._preflight(request)
        origin = request.header("Origin")
        if not origin:
            return self.app(request)
        return self._actual(request, origin)

    def allowed(self, rules: Rules, origin: str) -> bool:
        found = set(rules.allow_origin.split()) | self.allow_origin
        return origin in found or "*" in found

    async def _rules(self, request: SwiftRequest) -> tuple[str, Rules]:
        """What the path is (account, container, object, other) and its container's rules."""
        try:
            version, account, container, obj = request.split(1, 4)
        except BadPath:
            return "other", Rules(None)
        if version != "v1" or account is None:
            return "other", Rules(None)
        if container is None:
            return "account", Rules(None)
        info = await self.containers(request, account, container)
        rules = Rules(info.meta if info.exists else None)
        return ("object" if obj else "container"), rules

    async def _preflight(self, request: SwiftRequest) -> SwiftResponse:
        request.discard_body()
        kind, rules = await self._rules(request)
        methods = METHODS[kind]
        headers = HeaderMap({"Allow": ", ".join(methods)})
        origin = request.header("Origin")
        if not origin:
            return SwiftResponse(200, headers, b"")
        asked = (request.header("Access-Control-Request-Method") or "").strip()
        if not self.allowed(rules, origin) or asked not in methods:
            return SwiftResponse.text(401, "Unauthorized: this origin or method is not allowed here")
        headers["Access-Control-Allow-Origin"] = "*" if rules.any_origin else origin
        headers["Vary"] = "Origin"
        headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        if rules.max_age:
            headers["Access-Control-Max-Age"] = rules.max_age
        wanted = [h.strip() for h in (request.header("Access-Control-Request-Headers") or "").split(",") if h.strip()]
        if wanted:
            headers["Access-Control-Allow-Headers"] = ", ".join(dict.fromkeys(wanted))
        return SwiftResponse(200, headers, b"")

    async def _actual(self, request: SwiftRequest, origin: str) -> SwiftResponse:
        _kind, rules = await self._rules(request)
        response = await self.app(request)
        if self.strict and not self.allowed(rules, origin):
            return response
        headers = response.headers
        if "Access-Control-Expose-Headers" not in headers:
            exposed = dict.fromkeys(EXPOSED)
            exposed.update(dict.fromkeys(name.lower() for name in headers
                                         if name.lower().startswith(("x-container-meta-", "x-object-meta-"))))
            exposed.update(dict.fromkeys(rules.expose))
            exposed.update(dict.fromkeys(self.expose))
            headers["Access-Control-Expose-Headers"] = ", ".join(exposed)
        if "Access-Control-Allow-Origin" not in headers:
            if rules.any_origin:
                headers["Access-Control-Allow-Origin"] = "*"
            else:
                headers["Access-Control-Allow-Origin"] = origin
                vary = headers.get("Vary")
                headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        return response


def _build(app, settings: dict[str, Any], proxy) -> CORS:
    proxy.info.register("swift", strict_cors_mode=settings["strict_cors_mode"])
    return CORS(app, settings, CachedContainers(proxy.context))


middleware = Middleware("cors", _build, options=OPTIONS)
