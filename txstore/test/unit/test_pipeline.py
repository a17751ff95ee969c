"""
The proxy pipeline: proxy.conf's [pipeline:main] and [filter:NAME] sections, third-party
middlewares through entry points, the order stages run in, /info, and the seam itself: a
middleware that runs before auth, sees the response before the client, replaces its body and
makes sub-requests; and listing_formats over the application, as the default pipeline has it.
"""

from __future__ import annotations

import json
import sys
import textwrap

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.backend_client import BackendResponse
from zope.interface import implementer
from zope.interface.verify import verifyObject

from txstore.common.config import ConfigError
from txstore.interfaces import IApp
from txstore.proxy.application import ProxyApplication
from txstore.common.policies import DEFAULT_POLICIES
from txstore.middleware.base import Middleware, api_path, read_whole
from txstore.proxy import subrequest
from txstore.proxy.config import load_proxy_settings
from txstore.proxy.context import ProxyContext
from txstore.proxy.error_limiter import ErrorLimiter
from txstore.proxy.info_cache import InMemoryInfoCache
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.pipeline import DEFAULT_PIPELINE, Stage, build_pipeline
from txstore.proxy.server import ProxyServer, stages_from
from txstore.test.support import CLUSTER_CONF, temp_dir, write_file
from txstore.test.unit.test_proxy_controllers import ACCOUNT, NOW, FakeBackend, fake_rings


class PipelineConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        write_file(self.dir, "txstore.conf", CLUSTER_CONF)
        self.conf = str(self.dir / "proxy.conf")

    def load(self, text: str):
        return load_proxy_settings(write_file(self.dir, "proxy.conf", "[proxy]\n" + textwrap.dedent(text)))

    def names(self, settings) -> list[str]:
        return [stage.name for stage in settings.stages]

    def test_default_pipeline(self) -> None:
        settings = self.load("")
        # Swift's order: listing_formats right after the outer proxy_logging and cache
        self.assertEqual(self.names(settings), ["catch_errors", "gatekeeper", "healthcheck", "proxy_logging",
                                                "cache", "domain_remap", "cors", "etag_quoter", "listing_formats", "bulk",
                                                "tempurl", "formpost", "ratelimit", "crossdomain", "s3api", "tempauth",
                                                "console", "staticweb", "copy", "container_quotas", "account_quotas", "qos", "slo",
                                                "dlo",
                                                "versioned_writes", "symlink", "proxy_logging"])
        self.assertEqual(self.names(settings), list(DEFAULT_PIPELINE[:-1]))
        self.assertEqual(settings.users, ())

    def test_declared_pipeline_in_order_with_required_filters(self) -> None:
        settings = self.load("""
            [pipeline:main]
            pipeline = healthcheck copy proxy-server
            [filter:healthcheck]
            use = egg:txstore#healthcheck
            [filter:copy]
            use = egg:txstore#copy
            """)
        # as Swift's proxy, the required filters go in where Swift puts them when left out
        self.assertEqual(self.names(settings), ["catch_errors", "gatekeeper", "healthcheck", "listing_formats", "copy"])
        settings = self.load("""
            [pipeline:main]
            pipeline = proxy_logging tempauth proxy_logging proxy-server
            [filter:proxy_logging]
            use = egg:txstore#proxy_logging
            [filter:tempauth]
            use = egg:txstore#tempauth
            """)
        self.assertEqual(self.names(settings), ["catch_errors", "gatekeeper", "proxy_logging", "listing_formats",
                                                "tempauth", "copy", "proxy_logging"])

    def test_a_filter_section_names_its_middleware(self) -> None:
        settings = self.load("""
            [pipeline:main]
            pipeline = catch_errors gatekeeper auth proxy-server
            [filter:auth]
            use = egg:txstore#tempauth
            token_life = 60
            user_test_tester = testing .admin
            """)
        stage = settings.stages[self.names(settings).index("auth")]
        self.assertEqual((stage.name, stage.middleware.name, stage.settings["token_life"]), ("auth", "tempauth", 60))
        self.assertEqual([u.user for u in settings.users], ["tester"])

    def test_errors_name_file_section_and_option(self) -> None:
        conf = self.conf
        cases = [
            ("[pipeline:main]\npipeline = catch_errors\n",
             f"{conf}: [pipeline:main]: pipeline: must end with the application, proxy-server (it ends with 'catch_errors')"),
            ("[pipeline:main]\npipeline = proxy-server healthcheck proxy-server\n[filter:healthcheck]\nuse = egg:txstore#healthcheck\n",
             f"{conf}: [pipeline:main]: pipeline: proxy-server can only be last"),
            ("[pipeline:main]\npipeline = healthcheck proxy-server\n",
             f"{conf}: [pipeline:main]: pipeline: the pipeline names 'healthcheck' but there is no [filter:healthcheck] section"),
            ("[pipeline:main]\npipeline = x proxy-server\n[filter:x]\nuse = egg:txstore#nope\n",
             f"{conf}: [filter:x]: use: txstore has no middleware 'nope' (it has: account_quotas, "
             "bulk, cache, catch_errors, console, container_quotas, copy, cors, crossdomain, dlo, domain_remap, etag_quoter, "
             "formpost, gatekeeper, healthcheck, listing_formats, memcache, name_check, proxy_logging, qos, ratelimit, s3api, slo, "
             "staticweb, symlink, tempauth, tempurl, versioned_writes)"),
            ("[pipeline:main]\npipeline = x proxy-server\n[filter:x]\nuse = egg:elsewhere#nothing_here\n",
             f"{conf}: [filter:x]: use: no middleware 'egg:elsewhere#nothing_here': not txstore's and no entry point "
             "'nothing_here' in the txstore.proxy_middleware group"),
            ("[pipeline:main]\npipeline = x proxy-server\n[filter:x]\ntoken_life = 5\n",
             f"{conf}: [filter:x]: use: required option is missing"),
            ("[filter:tempauth]\nuse = egg:txstore#tempauth\ntoken_life = soon\n",
             f"{conf}: [filter:tempauth]: token_life: 'soon' is not a whole number"),
            ("[filter:copy]\nuse = egg:txstore#copy\nspeed = 5\n", f"{conf}: [filter:copy]: speed: unknown option"),
            ("[filter:unused]\nuse = egg:txstore#copy\n",
             f"{conf}: [filter:unused]: this filter is not in the pipeline (remove it or add it to [pipeline:main])"),
        ]
        for text, message in cases:
            with self.subTest(text=text):
                self.assertEqual(str(self.assertRaises(ConfigError, self.load, text)), message)

    def test_third_party_middleware_by_entry_point(self) -> None:
        """A package that txstore does not know adds a middleware through the entry-point group."""
        site = temp_dir(self)
        write_file(site, "stamp_middleware.py", textwrap.dedent("""
            from txstore.middleware.base import Middleware, api_path, read_whole
            from txstore.common import config as c

            class Stamp:
                def __init__(self, app, word):
                    self.app, self.word = app, word

                async def __call__(self, request):
                    response = await self.app(request)
                    response.headers["X-Stamp"] = self.word
                    return response

            middleware = Middleware("stamp", lambda app, settings, proxy: Stamp(app, settings["word"]),
                                    options=(c.Option("word", c.string, "hello"),))
            """))
        info = site / "stamp_middleware-1.0.dist-info"
        info.mkdir()
        write_file(info, "METADATA", "Metadata-Version: 2.1\nName: stamp-middleware\nVersion: 1.0\n")
        write_file(info, "entry_points.txt", "[txstore.proxy_middleware]\nstamp = stamp_middleware:middleware\n")
        sys.path.insert(0, str(site))
        self.addCleanup(sys.path.remove, str(site))
        self.addCleanup(sys.modules.pop, "stamp_middleware", None)
        settings = self.load("""
            [pipeline:main]
            pipeline = catch_errors gatekeeper stamp proxy-server
            [filter:stamp]
            use = egg:stamp_middleware#stamp
            word = howdy
            """)
        stage = settings.stages[self.names(settings).index("stamp")]
        self.assertEqual((stage.middleware.name, dict(stage.settings)), ("stamp", {"word": "howdy"}))

        async def app(request):
            return SwiftResponse.text(200, "inner")

        wrapped = build_pipeline((stage,), app, None)
        response = self.successResultOf(Deferred.fromCoroutine(wrapped(SwiftRequest("GET", "/"))))
        self.assertEqual(response.headers["X-Stamp"], "howdy")

    def test_stages_run_outermost_first(self) -> None:
        seen: list[str] = []

        def recorder(name: str) -> Middleware:
            def build(app, settings, proxy):
                async def stage(request):
                    seen.append(f"{name} in")
                    response = await app(request)
                    seen.append(f"{name} out")
                    return response

                return stage

            return Middleware(name, build)

        async def app(request):
            seen.append("app")
            return SwiftResponse.empty(204)

        stages = (Stage("a", recorder("a"), {}), Stage("b", recorder("b"), {}))
        wrapped = build_pipeline(stages, app, None)
        self.successResultOf(Deferred.fromCoroutine(wrapped(SwiftRequest("GET", "/"))))
        self.assertEqual(seen, ["a in", "b in", "app", "b out", "a out"])


class ApiPathTests(SynchronousTestCase):
    """`api_path`: what the middlewares take of a request's path before anything else."""

    def test_segments_of_a_v1_path(self) -> None:
        for path, depth, expected in (
            ("/v1/AUTH_a", 1, ("AUTH_a", None, None)),
            ("/v1/AUTH_a/", 1, ("AUTH_a", None, None)),
            ("/v1/AUTH_a/c", 1, ("AUTH_a", "c", None)),
            ("/v1/AUTH_a/c/", 2, ("AUTH_a", "c", None)),
            ("/v1/AUTH_a/c/o//p/", 3, ("AUTH_a", "c", "o//p/")),
            ("/v1/AUTH_%C3%A9/c/%3C%26%3E%2Fx", 3, ("AUTH_\u00e9", "c", "<&>/x")),
        ):
            self.assertEqual(api_path(SwiftRequest("GET", path), depth), expected, (path, depth))

    def test_anything_else_is_none(self) -> None:
        """Too short for ``depth``, another version, a path that is not one: the next stage answers."""
        for path, depth in (
            ("/v1", 1), ("/v1/", 1), ("/v1/AUTH_a", 2), ("/v1/AUTH_a/", 2), ("/v1/AUTH_a/c", 3),
            ("/v1/AUTH_a/c/", 3), ("/v1//c/o", 1), ("/v1/AUTH_a//o", 1), ("/v2/AUTH_a/c/o", 1),
            ("/info", 1), ("/auth/v1.0", 1), ("/v1/AUTH_a/c/%FF", 1), ("/v1/AUTH_a/c/%00", 1),
        ):
            self.assertIsNone(api_path(SwiftRequest("GET", path), depth), (path, depth))


class ReadWholeTests(SynchronousTestCase):
    """`read_whole`: a sub-request's body, streamed or not, bounded when asked."""

    def read(self, response: SwiftResponse, limit: int | None = None):
        return Deferred.fromCoroutine(read_whole(response, limit))

    def test_streamed_or_not(self) -> None:
        for body in (lambda: b"abc", lambda: BytesSource(b"abc")):
            self.assertEqual(self.successResultOf(self.read(SwiftResponse(200, HeaderMap(), body()))), b"abc")
            self.assertEqual(self.successResultOf(self.read(SwiftResponse(200, HeaderMap(), body()), 3)), b"abc")

    def test_past_the_limit_overflows_and_stops_the_stream(self) -> None:
        stopped = []

        class Chunks(BytesSource):
            def __init__(self) -> None:
                self.chunks = [b"ab", b"cd", b"ef"]

            def read(self):
                return Deferred.fromCoroutine(self._next())

            async def _next(self) -> bytes:
                return self.chunks.pop(0) if self.chunks else b""

            def stop(self) -> None:
                stopped.append(True)

        self.failureResultOf(self.read(SwiftResponse(200, HeaderMap(), Chunks()), 3), OverflowError)
        self.assertEqual(stopped, [True])
        self.failureResultOf(self.read(SwiftResponse(200, HeaderMap(), b"abcd"), 3), OverflowError)


# --- the seam, in memory ---------------------------------------------------------------------


@implementer(IApp)
class _Seam:
    """
    A test middleware that must sit before tempauth: on requests carrying ``X-Seam``, it makes
    a system sub-request (HEAD of the container) and a sub-request with the client's own
    credentials, lets the request go down, and replaces the answer with a report of all three.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if not request.header("X-Seam"):
            return await self.app(request)
        system = subrequest.make(request, "HEAD", f"/v1/{ACCOUNT}/c", source="SEAM", system=True)
        as_client = subrequest.make(request, "HEAD", f"/v1/{ACCOUNT}/c", source="SEAM")
        system_answer = await self.app(system)
        client_answer = await self.app(as_client)
        inner = await self.app(request)
        inner.discard_body()
        report = {"system": system_answer.status, "as_client": client_answer.status, "inner": inner.status,
                  "inner_trans_id": inner.headers.get("X-Trans-Id")}
        return SwiftResponse(200, HeaderMap({"Content-Type": "application/json"}), BytesSource(json.dumps(report).encode()))


SEAM = Middleware("seam", lambda app, settings, proxy: _Seam(app))


class SeamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.backend = FakeBackend()
        context = ProxyContext(
            reactor=self.clock, rings=fake_rings(temp_dir(self)), policies=DEFAULT_POLICIES, client=self.backend,
            cache=InMemoryInfoCache(self.clock.seconds),
            errors=ErrorLimiter(self.clock.seconds),
        )
        stages = list(stages_from({"tempauth": {"user_test_tester": "testing .admin", "user_test_other": "x"}}))
        names = [s.name for s in stages]
        stages.insert(names.index("tempauth"), Stage("seam", SEAM, {}))
        self.server = ProxyServer(context, tuple(stages))

    def call(self, method: str, path: str, headers: dict[str, str] | None = None) -> SwiftResponse:
        request = SwiftRequest(method, path, HeaderMap(headers or {}))
        return self.successResultOf(Deferred.fromCoroutine(self.server.pipeline(request)))

    def body(self, response: SwiftResponse) -> bytes:
        if not response.streamed:
            return response.body
        chunks = []
        while chunk := self.successResultOf(response.body.read()):
            chunks.append(chunk)
        return b"".join(chunks)

    def token(self, user: str, key: str) -> str:
        response = self.call("GET", "/auth/v1.0", {"X-Auth-User": user, "X-Auth-Key": key})
        self.assertEqual(response.status, 200)
        return response.headers["X-Auth-Token"]

    def test_runs_before_auth_sees_and_replaces_the_response(self) -> None:
        response = self.call("GET", f"/v1/{ACCOUNT}/c", {"X-Seam": "1"})
        report = json.loads(self.body(response))
        # tempauth (below the seam) refused the anonymous request and the anonymous sub-request;
        # the system sub-request went through; the client saw what the seam made of it all
        self.assertEqual((response.status, report["system"], report["as_client"], report["inner"]), (200, 204, 401, 401))
        # one transaction: the sub-request's backend call carries the client request's id
        trans_id = response.headers["X-Trans-Id"]
        self.assertEqual(report["inner_trans_id"], None)  # ids are added by catch_errors, above
        self.assertEqual({c.headers["X-Trans-Id"] for c in self.backend.calls}, {trans_id})

    def test_sub_requests_carry_the_clients_credentials(self) -> None:
        owner = self.token("test:tester", "testing")
        report = json.loads(self.body(self.call("GET", f"/v1/{ACCOUNT}/c", {"X-Seam": "1", "X-Auth-Token": owner})))
        self.assertEqual((report["system"], report["as_client"], report["inner"]), (204, 204, 200))
        stranger = self.token("test:other", "x")  # no ACL grants this user anything
        report = json.loads(self.body(self.call("GET", f"/v1/{ACCOUNT}/c", {"X-Seam": "1", "X-Auth-Token": stranger})))
        self.assertEqual((report["system"], report["as_client"], report["inner"]), (204, 403, 403))

    def test_a_sub_request_is_judged_as_its_parent(self) -> None:
        parent = SwiftRequest("GET", "/v1/AUTH_a/c/o", HeaderMap({
            "X-Auth-Token": "t", "Referer": "http://www.example.com/", "Range": "bytes=0-1"}), environ={})
        as_client = subrequest.make(parent, "GET", "/v1/AUTH_a/segs/1", source="SLO")
        self.assertEqual(dict(as_client.headers.items()), {"X-Auth-Token": "t", "Referer": "http://www.example.com/"})
        system = subrequest.make(parent, "GET", "/v1/AUTH_a/segs/1", source="SLO", system=True)
        self.assertEqual(dict(system.headers.items()), {})

    def test_every_stage_is_an_app(self) -> None:
        stage, names = self.server.pipeline, []
        while True:
            self.assertTrue(verifyObject(IApp, stage))
            names.append(type(stage).__name__)
            if not hasattr(stage, "app") or isinstance(stage, ProxyApplication):
                break
            stage = stage.app
        self.assertEqual(names[0], "CatchErrors")
        self.assertEqual(names[-1], "ProxyApplication")

    def test_paths_route_as_swift_routes_them(self) -> None:
        owner = {"X-Auth-Token": self.token("test:tester", "testing")}
        cases = [
            (f"//v1/{ACCOUNT}", 404),  # not the account: werkzeug alone would drop the slashes
            (f"/v1//{ACCOUNT}", 404),  # an empty name before the last, as Swift (76a9964)
            ("/v1", 412),  # no account: Swift's 412 Bad URL
            ("/nowhere", 412),
            (f"/v1/{ACCOUNT}/", 200),
            (f"/v1/{ACCOUNT}/%FF", 412),
        ]
        for path, status in cases:
            self.assertEqual(self.call("GET", path, owner).status, status, path)
        self.call("HEAD", f"/v1/{ACCOUNT}/c/", owner)
        self.assertEqual(self.backend.calls[-1].path.split("/", 3)[3], f"{ACCOUNT}/c")  # the container

    def test_info_lists_what_is_built_and_nothing_else(self) -> None:
        info = json.loads(self.call("GET", "/info").body)
        self.assertEqual(sorted(info), ["account_quotas", "bulk_delete", "bulk_upload", "container_quotas",
                                        "crossdomain", "dlo", "domain_remap", "etag_quoter", "formpost", "qos", "ratelimit",
                                        "s3api", "slo", "staticweb", "swift", "symlink", "tempauth", "tempurl"])
        self.assertEqual(info["bulk_delete"], {"max_deletes_per_request": 10000, "max_failed_deletes": 1000})
        self.assertEqual(info["etag_quoter"], {"enable_by_default": False})
        self.assertEqual(info["crossdomain"],
                         {"cross_domain_policy": '<allow-access-from domain="*" secure="false" />'})
        self.assertEqual(info["ratelimit"], {"account_ratelimit": 0.0, "max_sleep_time_seconds": 60.0,
                                             "container_ratelimits": [], "container_listing_ratelimits": []})
        self.assertEqual(info["formpost"], {"allowed_digests": ["sha1", "sha256", "sha512"],
                                            "deprecated_digests": ["sha1"]})
        self.assertEqual(info["s3api"], {"allow_multipart_uploads": True, "location": "us-east-1",
                                         "max_bucket_listing": 1000, "max_multi_delete_objects": 1000,
                                         "max_parts_listing": 1000, "max_upload_part_num": 10000,
                                         "min_segment_size": 5242880, "s3_acl": False})
        self.assertEqual(info["dlo"], {"max_segments": 10000})
        self.assertEqual(info["symlink"], {"symloop_max": 2, "static_links": True})
        self.assertEqual(info["tempauth"], {"account_acls": True})
        self.assertIs(info["swift"]["strict_cors_mode"], True)
        self.assertEqual(info["swift"]["policies"], [{"aliases": "Policy-0", "default": True, "name": "Policy-0"}])
        self.assertEqual(self.call("POST", "/info").status, 405)


class ListingFormatsInThePipelineTests(SynchronousTestCase):
    """listing_formats in the default pipeline, over the proxy application and scripted nodes."""

    def setUp(self) -> None:
        clock = Clock()
        clock.advance(NOW)
        self.backend = FakeBackend()
        context = ProxyContext(
            reactor=clock, rings=fake_rings(temp_dir(self)), policies=DEFAULT_POLICIES, client=self.backend,
            cache=InMemoryInfoCache(clock.seconds), errors=ErrorLimiter(clock.seconds),
        )
        self.server = ProxyServer(context, stages_from({"tempauth": {"user_test_tester": "testing .admin"}}))
        token = self.call("GET", "/auth/v1.0", {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
        self.token = token.headers["X-Auth-Token"]

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, query: str = "") -> SwiftResponse:
        request = SwiftRequest(method, path, HeaderMap(headers or {}), query=query)
        return self.successResultOf(Deferred.fromCoroutine(self.server.pipeline(request)))

    def test_an_autocreated_account_is_listed_in_the_clients_format(self) -> None:
        self.backend.default = lambda call: BackendResponse(404, {}, b"")  # no account database anywhere
        auth = {"X-Auth-Token": self.token}
        cases = [
            ("GET", {}, "", 204, "text/plain", b""),
            ("GET", {}, "format=json", 200, "application/json", b"[]"),
            ("GET", {"Accept": "text/xml"}, "", 200, "text/xml",
             b'<?xml version="1.0" encoding="UTF-8"?>\n<account name="AUTH_test"></account>'),
            ("HEAD", {"Accept": "application/xml"}, "", 204, "application/xml", b""),
        ]
        for method, headers, query, status, media_type, body in cases:
            response = self.call(method, f"/v1/{ACCOUNT}", {**auth, **headers}, query)
            self.assertEqual((response.status, response.headers["Content-Type"], response.body,
                              response.headers["X-Account-Container-Count"]),
                             (status, f"{media_type}; charset=utf-8", body, "0"), (method, headers, query))
            asked = self.backend.calls[-1]
            self.assertEqual((asked.query, asked.headers["Accept"]), ("?format=json", "application/json"))

    def test_the_nodes_are_asked_for_json(self) -> None:
        listing = json.dumps([{"name": "o", "hash": "h", "bytes": 1, "content_type": "text/plain",
                               "last_modified": "2023-11-14T22:13:20.000000"}, {"subdir": "d/"}]).encode()

        def node(call):
            if call.method == "GET" and call.path.endswith("/c"):
                return BackendResponse(200, {"content-type": "application/json; charset=utf-8",
                                             "content-length": str(len(listing))}, listing)
            return BackendResponse(204, {"x-backend-storage-policy-index": "0"}, b"")

        self.backend.default = node
        response = self.call("GET", f"/v1/{ACCOUNT}/c", {"X-Auth-Token": self.token}, "prefix=o&limit=5")
        self.assertEqual((response.status, response.headers["Content-Type"], response.body),
                         (200, "text/plain; charset=utf-8", b"o\nd/\n"))
        self.assertEqual(self.backend.calls[-1].query, "?prefix=o&limit=5&format=json")
