"""
crossdomain, etag_quoter and name_check over in-memory stages: the policy document and what
passes; ETags quoted by the container's or the account's choice (or the default), the client's
header kept as sysmeta and shown back; names refused with Swift's texts and what passes.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from txstore.middleware import crossdomain, etag_quoter, name_check
from txstore.middleware.crossdomain import CrossDomain
from txstore.middleware.etag_quoter import EtagQuoter
from txstore.middleware.name_check import NameCheck
from txstore.proxy.controllers.base import AccountInfo, ContainerInfo
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

A = "/v1/AUTH_a"


def settings(module, **overrides) -> dict:
    found = {option.name: option.default for option in module.OPTIONS}
    found.update(overrides)
    return found


class Below:
    """The stage below: records requests; answers objects with an ETag, others with what it holds."""

    def __init__(self) -> None:
        self.seen: list[SwiftRequest] = []
        self.headers: dict[str, str] = {}

    def __call__(self, request: SwiftRequest):
        self.seen.append(request)
        headers = HeaderMap(self.headers)
        if request.path.count("/") >= 4:
            headers.setdefault("ETag", "d41d8cd98f00b204e9800998ecf8427e")
        return succeed(SwiftResponse(200, headers, b"below"))


def answer(case: SynchronousTestCase, app, method: str, path: str, **headers: str) -> SwiftResponse:
    result = app(SwiftRequest(method, path, HeaderMap(headers)))
    if not isinstance(result, Deferred):
        result = Deferred.fromCoroutine(result)
    return case.successResultOf(result)


class CrossDomainTests(SynchronousTestCase):
    def test_the_policy(self) -> None:
        below = Below()
        app = CrossDomain(below, settings(crossdomain))
        response = answer(self, app, "GET", "/crossdomain.xml")
        self.assertEqual((response.status, response.headers["Content-Type"]), (200, "application/xml"))
        self.assertEqual(response.body, b'<?xml version="1.0"?>\n<!DOCTYPE cross-domain-policy SYSTEM '
                                        b'"http://www.adobe.com/xml/dtds/cross-domain-policy.dtd" >\n'
                                        b'<cross-domain-policy>\n<allow-access-from domain="*" secure="false" />\n'
                                        b'</cross-domain-policy>')
        policy = '<allow-access-from domain="x.example"/>'
        custom = CrossDomain(below, settings(crossdomain, cross_domain_policy=policy))
        self.assertIn(b'domain="x.example"', answer(self, custom, "GET", "/crossdomain.xml").body)
        self.assertEqual(answer(self, app, "HEAD", "/crossdomain.xml").body, b"")
        for method, path in (("PUT", "/crossdomain.xml"), ("GET", "/v1/AUTH_a/crossdomain.xml"), ("GET", "/info")):
            self.assertEqual(answer(self, app, method, path).body, b"below")
        self.assertEqual(len(below.seen), 3)


class EtagQuoterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.below = Below()
        self.container_sysmeta: dict[str, str] = {}
        self.account_sysmeta: dict[str, str] = {}
        self.build()

    def build(self, **overrides) -> None:
        async def containers(request, account, container):
            return ContainerInfo(204, sysmeta=dict(self.container_sysmeta))

        async def accounts(request, account):
            return AccountInfo(204, dict(self.account_sysmeta))

        self.app = EtagQuoter(self.below, settings(etag_quoter, **overrides), containers, accounts)

    def etag(self) -> str:
        return answer(self, self.app, "GET", f"{A}/c/o").headers["ETag"]

    def test_quoted_by_choice(self) -> None:
        bare = "d41d8cd98f00b204e9800998ecf8427e"
        self.assertEqual(self.etag(), bare)
        self.account_sysmeta["rfc-compliant-etags"] = "True"
        self.assertEqual(self.etag(), f'"{bare}"')
        self.container_sysmeta["rfc-compliant-etags"] = "False"  # the container's choice wins
        self.assertEqual(self.etag(), bare)
        self.container_sysmeta.clear()
        self.account_sysmeta.clear()
        self.build(enable_by_default=True)
        self.assertEqual(self.etag(), f'"{bare}"')
        self.below.headers["ETag"] = 'W/"weak"'
        self.assertEqual(answer(self, self.app, "HEAD", f"{A}/c/o").headers["ETag"], 'W/"weak"')  # as it is

    def test_the_setting_is_sysmeta_shown_under_the_clients_name(self) -> None:
        answer(self, self.app, "POST", f"{A}/c", **{"X-Container-Rfc-Compliant-Etags": "yes"})
        self.assertEqual(self.below.seen[-1].headers.get("X-Container-Sysmeta-Rfc-Compliant-Etags"), "True")
        self.assertNotIn("X-Container-Rfc-Compliant-Etags", self.below.seen[-1].headers)
        answer(self, self.app, "POST", A, **{"X-Remove-Account-Rfc-Compliant-Etags": "x"})
        self.assertEqual(self.below.seen[-1].headers.get("X-Account-Sysmeta-Rfc-Compliant-Etags"), "")
        self.below.headers["X-Container-Sysmeta-Rfc-Compliant-Etags"] = "True"
        response = answer(self, self.app, "HEAD", f"{A}/c")
        self.assertEqual(response.headers.get("X-Container-Rfc-Compliant-Etags"), "True")
        self.assertNotIn("X-Container-Sysmeta-Rfc-Compliant-Etags", response.headers)


class NameCheckTests(SynchronousTestCase):
    def test_refusals_and_passes(self) -> None:
        below = Below()
        app = NameCheck(below, settings(name_check))
        cases = [
            (f"{A}/c/a%3Cb", "Object/Container/Account name contains forbidden chars from '\"`<>"),
            (f"{A}/c/" + "n" * 250, "Object/Container/Account name longer than the allowed maximum 255"),
            (f"{A}/c/a/../b", "Object/Container/Account name contains a forbidden substring from regular "
                              "expression /\\./|/\\.\\./|/\\.$|/\\.\\.$"),
            (f"{A}/c/.", None),
        ]
        for path, reason in cases:
            response = answer(self, app, "PUT", path)
            if reason is None:
                self.assertEqual(response.status, 400, path)
            else:
                self.assertEqual((response.status, response.body.decode()), (400, reason), path)
        self.assertEqual(below.seen, [])
        for path in (f"{A}/c/a.b", f"{A}/c/..x", f"{A}/c/dir/", "/info"):
            self.assertEqual(answer(self, app, "GET", path).status, 200, path)
        relaxed = NameCheck(below, settings(name_check, forbidden_chars="", maximum_length=0, forbidden_regexp=""))
        self.assertEqual(answer(self, relaxed, "GET", f"{A}/c/a/../<" + "x" * 300).status, 200)
