"""
container_quotas and account_quotas over an in-memory store (`MemorySwift`) whose usage the
fake info sources count: quotas checked when set (400, nothing goes down), uploads and copies
refused past them (413, nothing stored), refusals to who may not write, versions counted,
reseller-only account quotas kept as sysmeta and shown back, per-policy quotas refused.
"""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.middleware.account_quotas import AccountQuotas
from txstore.middleware.container_quotas import ContainerQuotas
from txstore.middleware.copy import Copy
from txstore.proxy import subrequest
from txstore.proxy.controllers.base import AccountInfo, ContainerInfo
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.tempauth import Decision, Identity
from txstore.test.swift_fake import MemorySwift

A = "/v1/AUTH_a"
OWNER = Identity("AUTH_a", "a:owner", ("a", "a:owner", ".admin"))
RESELLER = Identity("AUTH_admin", "admin:admin", ("admin", "admin:admin", ".admin", ".reseller_admin"))
READER = Identity("AUTH_a", "a:reader", ("a", "a:reader"))


class Usage:
    """Container and account info as the databases would report the store's contents."""

    def __init__(self, store: MemorySwift) -> None:
        self.store = store
        self.container_meta: dict[str, dict[str, str]] = {}
        self.container_sysmeta: dict[str, dict[str, str]] = {}
        self.account_meta: dict[str, str] = {}
        self.account_sysmeta: dict[str, str] = {}

    def _usage(self, prefix: str) -> tuple[int, int]:
        held = [stored for path, stored in self.store.objects.items() if path.startswith(prefix)]
        return sum(len(s.body) for s in held), len(held)

    async def container(self, request, account: str, container: str) -> ContainerInfo:
        if f"/v1/{account}/{container}" not in self.store.containers:
            return ContainerInfo(404)
        used, count = self._usage(f"/v1/{account}/{container}/")
        return ContainerInfo(200, object_count=count, bytes_used=used, meta=self.container_meta.get(container, {}),
                             sysmeta=self.container_sysmeta.get(container, {}))

    async def account(self, request, account: str) -> AccountInfo:
        used, count = self._usage(f"/v1/{account}/")
        return AccountInfo(200, dict(self.account_sysmeta), dict(self.account_meta), used, count)


def authorize(request: SwiftRequest, account, container, obj, info) -> Decision:
    """Owners and reseller admins write; a reader reads; anonymous requests are refused."""
    identity = request.identity
    if identity is None:
        return Decision(False, 401)
    if identity.is_admin or request.method in ("GET", "HEAD"):
        return Decision(True)
    return Decision(False, 403)


class AccountServer:
    """What the account server keeps of an account POST: metadata and sysmeta (empty removes)."""

    def __init__(self, app, usage: Usage) -> None:
        self.app, self.usage = app, usage
        self.seen: list[HeaderMap] = []

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if request.split(2, 4)[2] is not None:
            return await self.app(request)
        self.seen.append(request.headers.copy())
        if request.method in ("POST", "PUT"):
            for name, value in request.headers.items():
                lower = name.lower()
                for prefix, kept in (("x-account-meta-", self.usage.account_meta),
                                     ("x-account-sysmeta-", self.usage.account_sysmeta)):
                    if lower.startswith(prefix):
                        if value:
                            kept[lower[len(prefix):]] = value
                        else:
                            kept.pop(lower[len(prefix):], None)
                    elif lower.startswith("x-remove-" + prefix[2:]):
                        kept.pop(lower[len("x-remove-") + len(prefix) - 2:], None)
            return SwiftResponse.empty(204)
        headers = {f"X-Account-Meta-{k}": v for k, v in self.usage.account_meta.items()}
        headers.update({f"X-Account-Sysmeta-{k}": v for k, v in self.usage.account_sysmeta.items()})
        return SwiftResponse.empty(204, headers)


class Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemorySwift()
        self.usage = Usage(self.store)
        self.account_server = AccountServer(self.store, self.usage)
        below = AccountQuotas(self.account_server, self.usage.account, self.usage.container)
        self.app = Copy(ContainerQuotas(below, self.usage.container))
        self.store.containers.add(f"{A}/c")
        self.store.containers.add(f"{A}/other")

    def call(self, method: str, path: str, body: bytes = b"", identity=OWNER, chunked: bool = False,
             **headers: str) -> SwiftResponse:
        if method == "PUT" and "/" in path[len(A) + 1:] and not chunked:
            headers.setdefault("Content-Length", str(len(body)))
        environ = {subrequest.AUTHORIZE: authorize}
        request = SwiftRequest(method, path, HeaderMap(headers), body=BytesSource(body), environ=environ,
                               identity=identity, trans_id="tx")
        return self.successResultOf(ensureDeferred(self.app(request)))


class ContainerQuotaTests(Case):
    def test_bad_values_are_refused_and_nothing_goes_down(self) -> None:
        for method in ("POST", "PUT"):
            for value in ("ten", "-1", "1.5", "0x10"):
                response = self.call(method, f"{A}/c", **{"X-Container-Meta-Quota-Bytes": value})
                self.assertEqual((response.status, response.body), (400, b"Invalid bytes quota."))
                response = self.call(method, f"{A}/c", **{"X-Container-Meta-Quota-Count": value})
                self.assertEqual((response.status, response.body), (400, b"Invalid count quota."))
        self.assertEqual(self.store.calls, [])

    def test_good_values_and_removal_go_down(self) -> None:
        for value in ("0", "10", ""):
            self.assertEqual(self.call("POST", f"{A}/c", **{"X-Container-Meta-Quota-Bytes": value}).status, 405)
        self.assertEqual(len(self.store.calls), 3)  # MemorySwift does not POST containers: it got them

    def test_bytes_quota(self) -> None:
        self.usage.container_meta["c"] = {"quota-bytes": "10"}
        response = self.call("PUT", f"{A}/c/o", b"01234567890")
        self.assertEqual((response.status, response.body), (413, b"Upload exceeds quota."))
        self.assertNotIn(f"{A}/c/o", self.store.objects)
        self.assertEqual(self.call("PUT", f"{A}/c/o", b"0123456789").status, 201)
        self.assertEqual(self.call("PUT", f"{A}/c/p", b"x").status, 413)
        self.assertEqual(self.call("PUT", f"{A}/other/p", b"x").status, 201)  # another container
        self.assertEqual(self.call("POST", f"{A}/c/o", **{"X-Object-Meta-A": "b"}).status, 202)
        self.assertEqual(self.call("DELETE", f"{A}/c/o").status, 204)
        self.assertEqual(self.call("PUT", f"{A}/c/p", b"x").status, 201)

    def test_count_quota(self) -> None:
        self.usage.container_meta["c"] = {"quota-count": "2"}
        self.assertEqual(self.call("PUT", f"{A}/c/1", b"a").status, 201)
        self.assertEqual(self.call("PUT", f"{A}/c/2", b"b").status, 201)
        self.assertEqual(self.call("PUT", f"{A}/c/3", b"c").status, 413)
        self.usage.container_meta["c"] = {"quota-count": "0"}
        self.assertEqual(self.call("PUT", f"{A}/c/3", b"").status, 413)

    def test_unknown_length_is_let_in_only_within_the_quota(self) -> None:
        self.usage.container_meta["c"] = {"quota-bytes": "5"}
        self.assertEqual(self.call("PUT", f"{A}/c/o", b"0123", chunked=True,
                                   **{"Transfer-Encoding": "chunked"}).status, 201)
        self.store.put(f"{A}/c/big", b"x" * 6)
        self.assertEqual(self.call("PUT", f"{A}/c/p", b"", chunked=True,
                                   **{"Transfer-Encoding": "chunked"}).status, 413)

    def test_who_may_not_write_is_refused_as_such(self) -> None:
        self.usage.container_meta["c"] = {"quota-count": "0"}
        self.assertEqual(self.call("PUT", f"{A}/c/o", b"x", identity=None).status, 401)
        response = self.call("PUT", f"{A}/c/o", b"x", identity=READER)
        self.assertEqual((response.status, response.body), (403, b"Forbidden"))

    def test_copies_are_uploads(self) -> None:
        self.store.put(f"{A}/other/src", b"0123456789AB")
        self.usage.container_meta["c"] = {"quota-bytes": "10"}
        response = self.call("PUT", f"{A}/c/dst", **{"X-Copy-From": "other/src", "Content-Length": "0"})
        self.assertEqual(response.status, 413)
        response = self.call("COPY", f"{A}/other/src", Destination="c/dst")
        self.assertEqual(response.status, 413)
        self.assertNotIn(f"{A}/c/dst", self.store.objects)
        self.usage.container_meta["c"] = {"quota-bytes": "12"}
        self.assertEqual(self.call("COPY", f"{A}/other/src", Destination="c/dst").status, 201)
        self.assertEqual(self.store.objects[f"{A}/c/dst"].body, b"0123456789AB")

    def test_versions_count_toward_the_bytes(self) -> None:
        # object_versioning below reports a versioned container's bytes with its versions'
        heads = []

        async def versioning(request: SwiftRequest) -> SwiftResponse:
            if request.method == "HEAD" and request.decoded_path == f"{A}/c":
                heads.append(request.environ.get("swift.source"))
                return SwiftResponse.empty(204, {"X-Container-Bytes-Used": "10"})
            return await self.store(request)

        self.app = Copy(ContainerQuotas(versioning, self.usage.container))
        self.usage.container_sysmeta["c"] = {"versions-container": "%00versions%00c"}
        self.usage.container_meta["c"] = {"quota-bytes": "10"}
        self.store.put(f"{A}/c/o", b"abcde")
        self.assertEqual(self.call("PUT", f"{A}/c/o", b"x").status, 413)
        self.assertEqual(heads, ["CQ"])
        self.usage.container_meta["c"] = {"quota-bytes": "11"}
        self.assertEqual(self.call("PUT", f"{A}/c/o", b"x").status, 201)

    def test_a_missing_container_is_left_to_the_application(self) -> None:
        self.assertEqual(self.call("PUT", f"{A}/nowhere/o", b"x").status, 201)  # MemorySwift has no 404 here


class AccountQuotaTests(Case):
    def test_users_may_not_set_or_remove_quotas(self) -> None:
        for header in ("X-Account-Meta-Quota-Bytes", "X-Account-Quota-Bytes", "X-Account-Quota-Count",
                       "X-Account-Quota-Bytes-Policy-gold", "X-Remove-Account-Meta-Quota-Bytes",
                       "X-Remove-Account-Quota-Bytes", "X-Remove-Account-Quota-Count-Policy-gold"):
            for method in ("POST", "PUT"):
                response = self.call(method, A, **{header: "0"})
                self.assertEqual(response.status, 403, header)
        self.assertEqual(self.account_server.seen, [])
        self.assertEqual(self.call("POST", A, **{"X-Account-Meta-Color": "blue"}).status, 204)

    def test_reseller_sets_checks_and_removes(self) -> None:
        response = self.call("POST", A, identity=RESELLER, **{"X-Account-Quota-Bytes": "12x"})
        self.assertEqual(response.status, 400)
        self.assertIn(b"X-Account-Quota-Bytes", response.body)
        self.assertEqual(self.call("POST", A, identity=RESELLER, **{"X-Account-Meta-Quota-Bytes": "-5"}).status, 400)
        self.assertEqual(self.account_server.seen, [])
        self.assertEqual(self.call("POST", A, identity=RESELLER, **{"X-Account-Quota-Bytes": "100",
                                                                   "X-Account-Quota-Count": "7"}).status, 204)
        sent = self.account_server.seen[-1]
        self.assertEqual((sent.get("X-Account-Sysmeta-Quota-Bytes"), sent.get("X-Account-Quota-Bytes")), ("100", None))
        self.assertEqual(self.usage.account_sysmeta, {"quota-bytes": "100", "quota-count": "7"})
        head = self.call("HEAD", A)
        self.assertEqual((head.headers.get("X-Account-Quota-Bytes"), head.headers.get("X-Account-Quota-Count")),
                         ("100", "7"))
        self.assertNotIn("X-Account-Sysmeta-Quota-Bytes", head.headers)
        self.call("POST", A, identity=RESELLER, **{"X-Remove-Account-Quota-Bytes": "t", "X-Account-Quota-Count": ""})
        self.assertEqual(self.usage.account_sysmeta, {})
        self.assertNotIn("X-Account-Quota-Bytes", self.call("HEAD", A).headers)

    def test_per_policy_quotas_are_refused(self) -> None:
        response = self.call("POST", A, identity=RESELLER, **{"X-Account-Quota-Bytes-Policy-gold": "10"})
        self.assertEqual(response.status, 501)
        self.assertIn(b"per storage policy", response.body)
        self.assertEqual(self.account_server.seen, [])

    def test_bytes_quota_new_and_legacy(self) -> None:
        self.store.put(f"{A}/other/x", b"12345")
        self.usage.account_meta["quota-bytes"] = "8"
        self.assertEqual(self.call("PUT", f"{A}/c/o", b"1234").status, 413)
        self.assertEqual(self.call("PUT", f"{A}/c/o", b"123").status, 201)
        self.usage.account_sysmeta["quota-bytes"] = "20"  # the newer header wins over the older one
        self.assertEqual(self.call("PUT", f"{A}/c/p", b"1234").status, 201)
        response = self.call("PUT", f"{A}/c/q", b"123456789")
        self.assertEqual((response.status, response.body), (413, b"Upload exceeds quota."))
        self.assertNotIn(f"{A}/c/q", self.store.objects)

    def test_count_quota(self) -> None:
        self.usage.account_sysmeta["quota-count"] = "1"
        self.assertEqual(self.call("PUT", f"{A}/c/o", b"1").status, 201)
        self.assertEqual(self.call("PUT", f"{A}/other/o", b"1").status, 413)

    def test_resellers_are_not_limited_and_readers_are_refused_as_such(self) -> None:
        self.usage.account_sysmeta["quota-bytes"] = "0"
        self.assertEqual(self.call("PUT", f"{A}/c/o", b"1", identity=RESELLER).status, 201)
        self.assertEqual(self.call("PUT", f"{A}/c/p", b"1", identity=READER).status, 403)
        self.assertEqual(self.call("PUT", f"{A}/c/p", b"1", identity=None).status, 401)
        self.assertEqual(self.call("PUT", f"{A}/c/p", b"1").status, 413)

    def test_copy_past_the_account_quota(self) -> None:
        self.store.put(f"{A}/other/src", b"0123456789")
        self.usage.account_sysmeta["quota-bytes"] = "15"
        self.assertEqual(self.call("COPY", f"{A}/other/src", Destination="c/dst").status, 413)
        self.assertNotIn(f"{A}/c/dst", self.store.objects)
