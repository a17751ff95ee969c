# -*- test-case-name: txstore.test.unit.test_routing -*-
"""
Klein (werkzeug) routing that keeps Swift's names as Swift gives them.

By default werkzeug merges ``//`` and redirects a missing or extra trailing ``/``; in an object
store both are parts of names (``a//b``, ``dir/``). `swift_routes` turns that off on a Klein
app's map and registers two converters: ``<name:...>`` for one path segment (an account, a
container, a device) and ``<objname:...>`` for the rest of the path, slashes included, at least
one character (so ``/v1/a/c/`` stays the container and ``/v1/a/c//`` is the object ``/``).

Call it right after ``app = Klein()`` in the class body, before the first ``@app.route``:
werkzeug reads the map's settings when each rule is added.
"""

from __future__ import annotations

from klein import Klein
from werkzeug.routing import BaseConverter


class SegmentConverter(BaseConverter):
    """One path segment, never empty."""

    regex = "[^/]+"


class ObjectNameConverter(BaseConverter):
    """The rest of the path, ``/`` included; not empty."""

    regex = ".+"
    part_isolating = False


def swift_routes(app: Klein) -> Klein:
    url_map = app.url_map
    url_map.merge_slashes = False
    url_map.strict_slashes = False
    url_map.redirect_defaults = False
    url_map.converters["name"] = SegmentConverter
    url_map.converters["objname"] = ObjectNameConverter
    return app


class Routes:
    """
    A Klein app's routes matched on a path directly (its map bound once) and its endpoints called
    on whatever the routes take: a request value (the proxy application) or a twisted request
    served without ``KleinResource``, whose own work per request costs more than the match.

    An endpoint is called as the method it decorates (Klein keeps it as ``__original__``), not
    through Klein's executor, which wraps every coroutine in a Deferred of its own: the proxy
    application awaits its routes' coroutines itself (8 µs of a 4 KiB GET's 220 in memory).
    """

    def __init__(self, bound: Klein) -> None:
        self._adapter = bound.url_map.bind("localhost")
        instance = bound._instance  # noqa: SLF001  (Klein's binding; no public name for it)
        self._endpoints = {
            name: getattr(handler, "__original__", handler).__get__(instance)
            for name, handler in bound.endpoints.items()
        }

    def match(self, path: str, method: str) -> tuple[str, dict]:
        """(endpoint, names) for a decoded path; werkzeug's NotFound when no route takes it."""
        return self._adapter.match(path, method=method)

    def call(self, endpoint: str, request, **names):
        return self._endpoints[endpoint](request, **names)


def klein_can_route(request) -> bool:
    """Whether Klein routes a twisted request: it decodes the Host and the unquoted path as UTF-8."""
    try:
        request.getRequestHostname().decode("utf-8")
        b"/".join(request.postpath).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
