"""
The qos middleware (`txstore.middleware.qos`) over in-memory fakes: an account's IO class is
set and removed by a reseller admin only (kept as sysmeta, refused with nothing sent down for
anyone else or for an unknown class) and shown back in the account's HEAD and GET; a request
may ask for a class of no more weight than its account's and for a rate of its own; the
decision is left in the environ (tenant: the account) unless one is there already; containers
are let through. Then the object controllers: the nodes of a GET or PUT are sent the decision
as ``X-Backend-Io-*``, and nothing without one.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.backend_client import BackendResponse
from txstore.middleware.account_quotas import CachedAccounts
from txstore.middleware.qos import QoS
from txstore.proxy import subrequest
from txstore.proxy.application import ProxyApplication
from txstore.proxy.controllers.base import AccountInfo
from txstore.proxy.info import InfoRegistry
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.qos.classes import IOClass, IOClasses, IOSpec
from txstore.qos.headers import ENVIRON
from txstore.test.unit import test_proxy_controllers as controllers
from txstore.test.backend_fake import reply
from txstore.test.swift_fake import MemorySwift
from txstore.test.unit.test_middleware import Chunks
from txstore.test.unit.test_quotas import OWNER, READER, RESELLER, AccountServer, Usage

A = "/v1/AUTH_a"
CLASSES = IOClasses({
    "gold": IOClass("gold", 4.0),
    "silver": IOClass("silver", 2.0),
    "iron": IOClass("iron", 2.0),  # the same weight as silver
    "bronze": IOClass("bronze", 1.0),
    "background": IOClass("background", 0.5),
}, "silver")
SYSMETA = "X-Account-Sysmeta-Io-Class"


class Below:
    """What reaches the stage under qos: each request's method, path, headers and IO spec."""

    def __init__(self, app) -> None:
        self.app = app
        self.seen: list[tuple[str, str, HeaderMap, IOSpec | None]] = []

    def __call__(self, request: SwiftRequest):
        self.seen.append((request.method, request.path, request.headers.copy(), request.environ.get(ENVIRON)))
        return self.app(request)

    def specs(self) -> list[tuple[str, str, IOSpec | None]]:
        return [(method, path, spec) for method, path, _, spec in self.seen]


class Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemorySwift()
        self.usage = Usage(self.store)  # AUTH_a's sysmeta, as the account server keeps it
        self.below = Below(AccountServer(self.store, self.usage))
        self.asked: list[str] = []
        self.app = QoS(self.below, CLASSES, self.accounts)

    async def accounts(self, request: SwiftRequest, account: str) -> AccountInfo:
        self.asked.append(account)
        return AccountInfo(200, dict(self.usage.account_sysmeta) if account == "AUTH_a" else {})

    def call(self, method: str, path: str, identity=OWNER, body=None, environ=None, **headers: str) -> SwiftResponse:
        request = SwiftRequest(method, path, HeaderMap(headers), body=body if body is not None else BytesSource(b""),
                               environ=dict(environ or {}), identity=identity, trans_id="tx")
        return self.successResultOf(Deferred.fromCoroutine(self.app(request)))


class AccountClassTests(Case):
    def test_a_reseller_sets_and_removes_the_class(self) -> None:
        for method in ("POST", "PUT"):
            response = self.call(method, A, identity=RESELLER, **{"X-Account-Io-Class": " gold "})
            self.assertEqual(response.status, 204)
            sent = self.below.seen[-1][2]
            self.assertEqual(sent.get(SYSMETA), "gold")
            self.assertIsNone(sent.get("X-Account-Io-Class"))  # not passed down as it came
            self.assertEqual(self.usage.account_sysmeta, {"io-class": "gold"})
            self.call("POST", A, identity=RESELLER, **{"X-Account-Io-Class": ""})
            self.assertEqual(self.below.seen[-1][2].get(SYSMETA), "")
            self.assertEqual(self.usage.account_sysmeta, {})
        self.call("POST", A, identity=RESELLER, **{"X-Account-Io-Class": "bronze"})
        self.assertEqual(self.usage.account_sysmeta, {"io-class": "bronze"})
        self.call("POST", A, identity=RESELLER, **{"X-Remove-Account-Io-Class": "x"})
        sent = self.below.seen[-1][2]
        self.assertEqual((sent.get(SYSMETA), sent.get("X-Remove-Account-Io-Class")), ("", None))
        self.assertEqual(self.usage.account_sysmeta, {})

    def test_anyone_else_is_refused_with_nothing_sent_down(self) -> None:
        for identity in (OWNER, READER, None):
            for method in ("POST", "PUT"):
                for header, value in (("X-Account-Io-Class", "bronze"), ("X-Account-Io-Class", ""),
                                      ("X-Remove-Account-Io-Class", "yes")):
                    upload = Chunks([b"ignored"])
                    response = self.call(method, A, identity=identity, body=upload, **{header: value})
                    self.assertEqual(response.status, 403, (identity, method, header))
                    self.assertIn(b"only a reseller admin", response.body)
                    self.assertTrue(upload.stopped)
        self.assertEqual(self.below.seen, [])
        # the owner's other account writes go down as they are
        self.assertEqual(self.call("POST", A, **{"X-Account-Meta-Colour": "blue"}).status, 204)
        sent = self.below.seen[-1][2]
        self.assertEqual((sent.get("X-Account-Meta-Colour"), sent.get(SYSMETA)), ("blue", None))

    def test_an_unknown_class_is_refused(self) -> None:
        for value in ("platinum", "GOLD", "gold silver"):
            response = self.call("POST", A, identity=RESELLER, **{"X-Account-Io-Class": value})
            self.assertEqual(response.status, 400, value)
            self.assertIn(b"Unknown IO class", response.body)
            self.assertIn(b"background, bronze, gold, iron, silver", response.body)
        self.assertEqual(self.below.seen, [])
        self.assertEqual(self.usage.account_sysmeta, {})

    def test_head_and_get_show_the_class_not_the_sysmeta(self) -> None:
        for method in ("HEAD", "GET"):
            response = self.call(method, A)
            self.assertNotIn("X-Account-Io-Class", response.headers)
        self.usage.account_sysmeta["io-class"] = "gold"
        self.usage.account_sysmeta["other"] = "kept"
        for method in ("HEAD", "GET"):
            response = self.call(method, A)
            self.assertEqual(response.headers.get("X-Account-Io-Class"), "gold")
            self.assertNotIn(SYSMETA, response.headers)
            self.assertEqual(response.headers.get("X-Account-Sysmeta-Other"), "kept")  # only its own
        self.assertEqual(self.asked, [])  # the account's own info is not looked up for it


class RequestClassTests(Case):
    def put(self, path: str = f"{A}/c/o", **headers: str) -> SwiftResponse:
        return self.call("PUT", path, body=BytesSource(b"data"), **{"Content-Length": "4", **headers})

    def test_the_account_default_and_lower_or_equal_classes(self) -> None:
        self.assertEqual(self.put().status, 201)
        self.assertEqual(self.below.specs()[-1], ("PUT", f"{A}/c/o", IOSpec("silver", "AUTH_a", 0)))
        for asked in ("silver", "iron", "bronze", "background", " bronze "):
            self.assertEqual(self.put(**{"X-Io-Class": asked}).status, 201, asked)
            self.assertEqual(self.below.specs()[-1][2], IOSpec(asked.strip(), "AUTH_a", 0))
        self.assertEqual(self.asked, ["AUTH_a"] * 6)

    def test_a_higher_class_is_forbidden_and_nothing_stored(self) -> None:
        upload = Chunks([b"data"])
        response = self.call("PUT", f"{A}/c/o", body=upload, **{"X-Io-Class": "gold", "Content-Length": "4"})
        self.assertEqual(response.status, 403)
        self.assertIn(b"'gold' is above the account's 'silver'", response.body)
        self.assertTrue(upload.stopped)
        self.assertEqual(self.call("GET", f"{A}/c/o", **{"X-Io-Class": "gold"}).status, 403)
        self.assertEqual((self.below.seen, self.store.objects), ([], {}))

    def test_the_account_class_is_the_ceiling(self) -> None:
        self.usage.account_sysmeta["io-class"] = "gold"
        self.assertEqual(self.put(**{"X-Io-Class": "gold"}).status, 201)
        self.assertEqual(self.below.specs()[-1][2], IOSpec("gold", "AUTH_a", 0))
        self.assertEqual(self.put().status, 201)
        self.assertEqual(self.below.specs()[-1][2], IOSpec("gold", "AUTH_a", 0))
        # another account's is its own: the default
        self.assertEqual(self.put("/v1/AUTH_b/c/o", **{"X-Io-Class": "gold"}).status, 403)
        self.assertEqual(self.put("/v1/AUTH_b/c/o", **{"X-Io-Class": "iron"}).status, 201)
        self.assertEqual(self.below.specs()[-1][2], IOSpec("iron", "AUTH_b", 0))
        self.usage.account_sysmeta["io-class"] = "bronze"
        self.assertEqual(self.put(**{"X-Io-Class": "silver"}).status, 403)
        self.assertEqual(self.put().status, 201)
        self.assertEqual(self.below.specs()[-1][2], IOSpec("bronze", "AUTH_a", 0))

    def test_an_account_class_no_longer_defined_is_the_default(self) -> None:
        self.usage.account_sysmeta["io-class"] = "retired"
        self.assertEqual(self.put(**{"X-Io-Class": "gold"}).status, 403)
        self.assertEqual(self.put().status, 201)
        self.assertEqual(self.below.specs()[-1][2], IOSpec("silver", "AUTH_a", 0))

    def test_an_unknown_class_is_refused(self) -> None:
        for asked in ("platinum", "Gold", "gold,bronze"):
            response = self.put(**{"X-Io-Class": asked})
            self.assertEqual(response.status, 400, asked)
            self.assertIn(b"Unknown IO class", response.body)
        self.assertEqual(self.below.seen, [])

    def test_a_rate_of_its_own(self) -> None:
        for raw, rate in (("20MB", 20_000_000), ("512KiB", 524288), ("1000", 1000), (" 1k ", 1000), ("1GiB", 2**30)):
            self.assertEqual(self.call("GET", f"{A}/c/o", **{"X-Io-Rate": raw}).status, 404, raw)
            self.assertEqual(self.below.specs()[-1][2], IOSpec("silver", "AUTH_a", rate), raw)
        self.assertEqual(self.put(**{"X-Io-Rate": "2MB", "X-Io-Class": "bronze"}).status, 201)
        self.assertEqual(self.below.specs()[-1][2], IOSpec("bronze", "AUTH_a", 2_000_000))
        seen = len(self.below.seen)
        for bad in ("0", "0MB", "-5", "fast", "1.5MB", "", "20 MBps"):
            response = self.put(**{"X-Io-Rate": bad})
            self.assertEqual(response.status, 400, bad)
            self.assertIn(b"Invalid X-Io-Rate", response.body)
        self.assertEqual(len(self.below.seen), seen)

    def test_an_objects_own_class_is_kept_and_shown(self) -> None:
        self.assertEqual(self.put(**{"X-Object-Io-Class": "bronze"}).status, 201)
        method, path, headers, spec = self.below.seen[-1]
        # kept as sysmeta, the client's name gone; the upload itself in the lower class
        self.assertEqual((headers.get("X-Object-Sysmeta-Io-Class"), headers.get("X-Object-Io-Class"), spec),
                         ("bronze", None, IOSpec("bronze", "AUTH_a", 0)))
        for method in ("GET", "HEAD"):
            response = self.call(method, f"{A}/c/o")
            self.assertEqual((response.headers.get("X-Object-Io-Class"),
                              response.headers.get("X-Object-Sysmeta-Io-Class")), ("bronze", None))
        # an equal one is kept too; a request's own class below it still decides the upload
        self.assertEqual(self.put(**{"X-Object-Io-Class": "iron", "X-Io-Class": "bronze"}).status, 201)
        self.assertEqual(self.below.seen[-1][2].get("X-Object-Sysmeta-Io-Class"), "iron")
        self.assertEqual(self.below.seen[-1][3], IOSpec("bronze", "AUTH_a", 0))

    def test_no_way_out_of_the_accounts_caps(self) -> None:
        capped = IOClasses({**CLASSES.classes, "metered": IOClass("metered", 2.0, tenant_rate=1000),
                            "trickle": IOClass("trickle", 1.0, tenant_rate=500, stream_rate=100)}, "silver")
        self.app = QoS(self.below, capped, self.accounts)
        self.usage.account_sysmeta["io-class"] = "metered"
        for lighter in ("bronze", "background", "silver"):  # less weight, but no tenant cap
            response = self.put(**{"X-Io-Class": lighter})
            self.assertEqual(response.status, 403, lighter)
            self.assertIn(b"looser caps", response.body)
            self.assertEqual(self.put(**{"X-Object-Io-Class": lighter}).status, 403, lighter)
        self.assertEqual(self.put(**{"X-Io-Class": "trickle"}).status, 201)  # lighter and tighter
        self.assertEqual(self.below.specs()[-1][2], IOSpec("trickle", "AUTH_a", 0))

    def test_a_middlewares_own_read_keeps_the_sysmeta(self) -> None:
        self.assertEqual(self.put(**{"X-Object-Io-Class": "bronze"}).status, 201)
        response = self.call("GET", f"{A}/c/o", environ={"swift.source": "COPY"})
        self.assertEqual((response.headers.get("X-Object-Sysmeta-Io-Class"), response.headers.get("X-Object-Io-Class")),
                         ("bronze", None))  # a copy carries it to its destination as sysmeta

    def test_an_objects_own_class_follows_the_same_rules(self) -> None:
        seen = len(self.below.seen)
        for value, status, text in (("gold", 403, b"an object may only ask for less"),
                                    ("platinum", 400, b"Unknown IO class")):
            response = self.put(**{"X-Object-Io-Class": value})
            self.assertEqual(response.status, status, value)
            self.assertIn(text, response.body)
        self.store.put(f"{A}/c/o2", b"x")
        response = self.call("POST", f"{A}/c/o2", **{"X-Object-Io-Class": "bronze"})
        self.assertEqual(response.status, 400)
        self.assertIn(b"a POST cannot change it", response.body)
        self.assertEqual(len(self.below.seen), seen)
        self.assertNotIn(f"{A}/c/o", self.store.objects)

    def test_every_object_method_gets_a_spec(self) -> None:
        self.store.put(f"{A}/c/o", b"x")
        for method in ("GET", "HEAD", "POST", "DELETE"):
            self.call(method, f"{A}/c/o", **{"X-Io-Class": "bronze"})
            self.assertEqual(self.below.specs()[-1], (method, f"{A}/c/o", IOSpec("bronze", "AUTH_a", 0)))

    def test_a_spec_already_decided_is_left_alone(self) -> None:
        decided = IOSpec("background", "AUTH_other", 5)
        response = self.call("PUT", f"{A}/c/o", body=BytesSource(b""), environ={ENVIRON: decided},
                             **{"X-Io-Class": "gold", "X-Io-Rate": "bad", "Content-Length": "0"})
        self.assertEqual(response.status, 201)
        self.assertIs(self.below.seen[-1][3], decided)
        self.assertEqual(self.asked, [])

    def test_a_sub_request_inherits_the_spec(self) -> None:
        parent = SwiftRequest("GET", f"{A}/c/manifest", environ={ENVIRON: IOSpec("bronze", "AUTH_a", 7)})
        child = subrequest.make(parent, "GET", f"{A}/segments/1", source="SLO")
        self.assertEqual(child.environ[ENVIRON], IOSpec("bronze", "AUTH_a", 7))
        self.assertNotIn(ENVIRON, subrequest.make(SwiftRequest("GET", f"{A}/c/o"), "GET", f"{A}/c/p",
                                                  source="SLO").environ)

    def test_containers_and_other_paths_are_let_through(self) -> None:
        for method in ("PUT", "GET", "HEAD", "POST"):
            response = self.call(method, f"{A}/c", **{"X-Io-Class": "nonsense", "X-Io-Rate": "bad"})
            self.assertNotIn(response.status, (400, 403), method)
        self.assertEqual(self.call("GET", "/v2/AUTH_a/c/o", **{"X-Io-Class": "gold"}).status, 404)
        self.assertEqual([spec for _, _, _, spec in self.below.seen], [None] * 5)
        self.assertEqual(self.asked, [])


class BackendHeaderTests(controllers.ControllerCase):
    """What the object nodes are sent, through the replicated object controllers on the fake backend."""

    def setUp(self) -> None:
        super().setUp()
        self.app = ProxyApplication(self.context, InfoRegistry())
        ring = self.rings.object_ring(0)
        part = ring.get_part(controllers.ACCOUNT, "c", "o")
        self.object_nodes = [controllers.key(n) for n in ring.get_part_nodes(part)]

    def call(self, app, method: str, headers: dict[str, str], environ: dict) -> SwiftResponse:
        body = BytesSource(b"hello") if method == "PUT" else BytesSource(b"")
        request = SwiftRequest(method, f"/v1/{controllers.ACCOUNT}/c/o", HeaderMap(headers), body=body,
                               environ=environ, trans_id="tx-qos")
        return self.successResultOf(Deferred.fromCoroutine(app(request)))

    def object_calls(self, method: str):
        return [c for c in self.backend.calls if c.method == method and c.node in self.object_nodes
                and c.path.endswith("/c/o")]

    @staticmethod
    def io_headers(call) -> dict[str, str]:
        return {k: v for k, v in call.headers.items() if k.lower().startswith("x-backend-io-")}

    def answer_gets(self) -> None:
        self.backend.default = lambda call: BackendResponse(200, {"etag": "e", "content-length": "5"}, b"hello")

    def test_put_and_get_carry_the_spec(self) -> None:
        environ = {ENVIRON: IOSpec("gold", controllers.ACCOUNT, 5000)}
        expected = {"X-Backend-Io-Class": "gold", "X-Backend-Io-Tenant": controllers.ACCOUNT,
                    "X-Backend-Io-Rate": "5000"}
        self.assertEqual(self.call(self.app, "PUT", {"Content-Length": "5"}, environ).status, 201)
        puts = self.object_calls("PUT")
        self.assertEqual(len(puts), 3)
        self.assertEqual([self.io_headers(c) for c in puts], [expected] * 3)
        self.answer_gets()
        self.backend.nodes[self.object_nodes[0]] = reply(503)  # the next replica is asked alike
        self.assertEqual(self.call(self.app, "GET", {}, environ).status, 200)
        gets = self.object_calls("GET")
        self.assertEqual(len(gets), 2)
        self.assertEqual([self.io_headers(c) for c in gets], [expected] * 2)
        self.assertEqual(self.call(self.app, "HEAD", {}, {ENVIRON: IOSpec("bronze", "AUTH_x")}).status, 200)
        self.assertEqual(self.io_headers(self.object_calls("HEAD")[-1]),
                         {"X-Backend-Io-Class": "bronze", "X-Backend-Io-Tenant": "AUTH_x"})

    def test_no_spec_no_headers(self) -> None:
        self.assertEqual(self.call(self.app, "PUT", {"Content-Length": "5"}, {}).status, 201)
        self.answer_gets()
        self.assertEqual(self.call(self.app, "GET", {}, {}).status, 200)
        calls = self.object_calls("PUT") + self.object_calls("GET")
        self.assertEqual(len(calls), 4)
        self.assertEqual([self.io_headers(c) for c in calls], [{}] * 4)

    def test_through_the_middleware_and_the_cached_account(self) -> None:
        """The account's class as its nodes report it; the request asks for less, with a rate."""
        for node in self.aprimary:
            self.backend.nodes[node] = reply(204, x_account_sysmeta_io_class="gold")
        app = QoS(self.app, CLASSES, CachedAccounts(self.context))
        headers = {"Content-Length": "5", "X-Io-Class": "iron", "X-Io-Rate": "1MB"}
        self.assertEqual(self.call(app, "PUT", headers, {}).status, 201)
        self.assertEqual([self.io_headers(c) for c in self.object_calls("PUT")],
                         [{"X-Backend-Io-Class": "iron", "X-Backend-Io-Tenant": controllers.ACCOUNT,
                           "X-Backend-Io-Rate": "1000000"}] * 3)
        self.answer_gets()
        self.assertEqual(self.call(app, "GET", {}, {}).status, 200)
        self.assertEqual(self.io_headers(self.object_calls("GET")[0]),
                         {"X-Backend-Io-Class": "gold", "X-Backend-Io-Tenant": controllers.ACCOUNT})
        calls = len(self.backend.calls)
        self.assertEqual(self.call(app, "GET", {"X-Io-Class": "platinum"}, {}).status, 400)
        self.assertEqual(len(self.backend.calls), calls)  # the account is cached: nothing asked at all
