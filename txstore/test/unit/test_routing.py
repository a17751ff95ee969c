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


class APIEndpointTests(SynchronousTestCase):
    """The proxy application routes ``/v1`` paths from their segments: werkzeug must agree."""

    def test_agrees_with_the_routes(self) -> None:
        from txstore.common.paths import BadPath
        from txstore.proxy.application import ProxyApplication, api_endpoint
        from txstore.common.paths import split_api_path

        adapter = ProxyApplication.app.url_map.bind("h")
        names = ["a", "c", "o", "", "x y", "ü", "%", "?", "."]
        paths = {"/v1", "/v1/"}
        for first in names:
            for second in names + ["/"]:
                for third in names + ["/", "//", "o/", "/o"]:
                    paths.update({f"/v1/{first}", f"/v1/{first}/", f"/v1/{first}/{second}",
                                  f"/v1/{first}/{second}/", f"/v1/{first}/{second}/{third}"})
        routed = 0
        for path in sorted(paths):
            try:
                segments = list(split_api_path(path))
            except BadPath:
                continue  # answered 404/412 before any route (Swift's rule), whatever werkzeug says
            routed += 1
            for method in ("GET", "PUT", "COPY"):
                self.assertEqual(api_endpoint(segments), adapter.match(path, method=method), path)
        self.assertGreater(routed, 500)

    def test_routes_call_the_method_itself(self) -> None:
        """Not through Klein's executor (which would wrap a coroutine in a Deferred)."""
        import inspect

        from txstore.common.routing import Routes

        class App:
            app = swift_routes(Klein())

            @app.route("/x")
            async def x(self, request):
                return (self, request)

        app = App()
        result = Routes(app.app).call("x", "request")
        self.assertTrue(inspect.iscoroutine(result))
        with self.assertRaises(StopIteration) as done:
            result.send(None)
        self.assertEqual(done.exception.value, (app, "request"))
