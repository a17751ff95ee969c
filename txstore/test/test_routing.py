"""Klein routes that keep Swift's names: the cases werkzeug's defaults would merge or redirect."""

from __future__ import annotations

from klein import Klein
from twisted.trial.unittest import SynchronousTestCase
from werkzeug.exceptions import NotFound

from txstore.common.routing import swift_routes


class _Routes:
    app = swift_routes(Klein())

    @app.route("/v1/<name:account>", methods=None)
    @app.route("/v1/<name:account>/", methods=None)
    def account(self, request, account):
        return ("account", account)

    @app.route("/v1/<name:account>/<name:container>", methods=None)
    @app.route("/v1/<name:account>/<name:container>/", methods=None)
    def container(self, request, account, container):
        return ("container", account, container)

    @app.route("/v1/<name:account>/<name:container>/<objname:obj>", methods=None)
    def object(self, request, account, container, obj):
        return ("object", account, container, obj)


class SwiftRoutesTests(SynchronousTestCase):
    def route(self, path: str, method: str = "PUT"):
        routes = _Routes()
        endpoint, names = routes.app.url_map.bind("h").match(path, method=method)
        return routes.app.execute_endpoint(endpoint, None, **names)

    def test_names_as_swift_gives_them(self) -> None:
        cases = {
            "/v1/a": ("account", "a"),
            "/v1/a/": ("account", "a"),
            "/v1/a/c": ("container", "a", "c"),
            "/v1/a/c/": ("container", "a", "c"),
            "/v1/a/c//o": ("object", "a", "c", "/o"),
            "/v1/a/c/o/": ("object", "a", "c", "o/"),
            "/v1/a/c/x/y": ("object", "a", "c", "x/y"),  # what /v1/a/c/x%2Fy decodes to
            "/v1/a/c/ü b": ("object", "a", "c", "ü b"),
            "/v1/a/c//": ("object", "a", "c", "/"),
            "/v1/a/c///": ("object", "a", "c", "//"),
        }
        for path, expected in cases.items():
            for method in ("GET", "PUT", "COPY"):
                self.assertEqual(self.route(path, method), expected, path)

    def test_empty_names_match_nothing(self) -> None:
        for path in ("/v1/a//c", "/v1//c", "/v1"):
            self.assertRaises(NotFound, self.route, path)
