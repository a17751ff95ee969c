"""
The tempurl middleware over an in-memory store (`MemorySwift`): signatures of each digest in
hex and base64, expiry in both forms, methods (HEAD by a GET, PUT or POST signature), prefix
URLs, IP ranges, account and container keys and their scope (a large object's segments
included), the headers taken out on the way in and out, Content-Disposition, refusals and
``/info``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from time import gmtime, strftime
from urllib.parse import urlencode

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common import config as c
from txstore.middleware import tempurl
from txstore.middleware.dlo import DynamicLargeObjects
from txstore.middleware.tempurl import INVALID, OPTIONS, TempURL, info_of
from txstore.proxy import subrequest
from txstore.proxy.info import InfoRegistry
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.tempauth import Decision
from txstore.test.swift_fake import MemorySwift, read_body

NOW = 1_800_000_000
LATER = NOW + 3600
A = "/v1/AUTH_a"
OBJ = f"{A}/c/o"
KEY = b"account-secret"
KEY2 = b"account-secret-2"
CKEY = b"container-secret"


def settings(**overrides) -> dict:
    found = {option.name: option.default for option in OPTIONS}
    found.update(overrides)
    return found


def sign(key: bytes, method: str, expires: int, path: str, digest: str = "sha256", ip: str | None = None) -> str:
    """The signature as a client (``swift tempurl``) computes it, written out independently."""
    body = f"{method}\n{expires}\n{path}"
    if ip:
        body = f"ip={ip}\n" + body
    return hmac.new(key, body.encode("utf-8"), getattr(hashlib, digest)).hexdigest()


def b64(hexdigest: str, urlsafe: bool = False, strip: bool = False) -> str:
    raw = bytes.fromhex(hexdigest)
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text.rstrip("=") if strip else text


class FakeKeys:
    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, str]] = {"AUTH_a": {"temp-url-key": KEY.decode()}}
        self.containers: dict[tuple[str, str], dict[str, str]] = {}

    async def account_meta(self, request, account):
        return self.accounts.get(account, {})

    async def container_meta(self, request, account, container):
        return self.containers.get((account, container), {})


class AnonymousRefused:
    """tempauth's part: without an override, an authorizer that refuses anonymous requests."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if not request.environ.get(subrequest.OVERRIDE):
            request.environ[subrequest.AUTHORIZE] = (
                lambda req, a, c, o, info: Decision(req.identity is not None, None if req.identity else 401))
        return await self.app(request)


class Authorizing:
    """The application's part: the authorizer in the environ is asked before the store answers."""

    def __init__(self, app) -> None:
        self.app = app
        self.decided: list[tuple[str, bool]] = []

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        authorize = request.environ.get(subrequest.AUTHORIZE)
        if authorize is not None:
            _v, account, container, obj = request.split(1, 4)
            decision = authorize(request, account, container, obj, None)
            self.decided.append((request.decoded_path, decision.allowed))
            if not decision.allowed:
                request.discard_body()
                return SwiftResponse.text(decision.status, "Unauthorized")
        return await self.app(request)


class Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemorySwift()
        self.keys = FakeKeys()
        self.authorizing = Authorizing(self.store)
        self.build()
        self.store.put(OBJ, b"object body", **{"X-Object-Meta-Secret": "s", "X-Object-Meta-Public-Color": "blue"})
        self.store.put(f"{A}/c/pre/one", b"one")
        self.store.put(f"{A}/c/other", b"other")
        self.store.put(f"{A}/c2/o", b"in c2")

    def build(self, **overrides) -> None:
        self.tempurl = TempURL(
            AnonymousRefused(DynamicLargeObjects(self.authorizing, 100, 10)),
            settings(**overrides), self.keys, lambda: float(NOW))
        self.app = self.tempurl

    def call(self, method: str, path: str, params: dict | None = None, body: bytes = b"", query: str | None = None,
             client_ip: str = "127.0.0.1", **headers: str) -> SwiftResponse:
        if method == "PUT":
            headers.setdefault("Content-Length", str(len(body)))
        request = SwiftRequest(method, path, HeaderMap(headers), query if query is not None else urlencode(params or {}),
                               BytesSource(body), trans_id="tx", client_ip=client_ip)
        return self.successResultOf(ensureDeferred(self.app(request)))

    def read(self, response: SwiftResponse) -> bytes:
        return read_body(self, response)

    def params(self, method: str, path: str = OBJ, key: bytes = KEY, digest: str = "sha256",
               expires: int = LATER, **extra: str) -> dict:
        return {"temp_url_sig": sign(key, method, expires, path, digest), "temp_url_expires": str(expires), **extra}

    def assertInvalid(self, response: SwiftResponse, head: bool = False, realm: str = "AUTH_a") -> None:
        self.assertEqual(response.status, 401)
        self.assertEqual(response.body, b"" if head else INVALID)
        self.assertEqual(response.headers["WWW-Authenticate"], f'Swift realm="{realm}"')


class SignatureTests(Case):
    def test_hex_signatures_of_each_digest(self) -> None:
        for digest in ("sha1", "sha256", "sha512"):
            response = self.call("GET", OBJ, self.params("GET", digest=digest))
            self.assertEqual((response.status, self.read(response)), (200, b"object body"), digest)

    def test_base64_signatures_standard_urlsafe_and_unpadded(self) -> None:
        for digest in ("sha1", "sha256", "sha512"):
            hexsig = sign(KEY, "GET", LATER, OBJ, digest)
            for urlsafe in (False, True):
                for strip in (False, True):
                    sig = f"{digest}:{b64(hexsig, urlsafe, strip)}"
                    response = self.call("GET", OBJ, {"temp_url_sig": sig, "temp_url_expires": str(LATER)})
                    self.assertEqual(response.status, 200, sig)

    def test_only_allowed_digests(self) -> None:
        self.build(allowed_digests=("sha256", "sha512"))
        self.assertInvalid(self.call("GET", OBJ, self.params("GET", digest="sha1")))
        sig = "sha1:" + b64(sign(KEY, "GET", LATER, OBJ, "sha1"))
        self.assertInvalid(self.call("GET", OBJ, {"temp_url_sig": sig, "temp_url_expires": str(LATER)}))
        self.assertEqual(self.call("GET", OBJ, self.params("GET", digest="sha512")).status, 200)

    def test_bad_signatures(self) -> None:
        good = sign(KEY, "GET", LATER, OBJ)
        for sig in ("", "zz" * 32, good[:-1], good.upper(), "md5:" + b64(good), "sha256:!!!!", "sha256:",
                    "sha256:" + b64(sign(KEY2, "GET", LATER, OBJ)), good[:40] + "x" * 24):
            self.assertInvalid(self.call("GET", OBJ, {"temp_url_sig": sig, "temp_url_expires": str(LATER)}))

    def test_missing_parameter(self) -> None:
        self.assertInvalid(self.call("GET", OBJ, {"temp_url_sig": sign(KEY, "GET", LATER, OBJ)}))
        self.assertInvalid(self.call("GET", OBJ, {"temp_url_expires": str(LATER)}))

    def test_no_parameters_pass_untouched(self) -> None:
        response = self.call("GET", OBJ, {"filename": "x"})
        self.assertEqual(response.status, 401)
        self.assertEqual(response.body, b"Unauthorized")  # the auth below answered, not tempurl
        self.assertNotIn("Content-Disposition", response.headers)

    def test_expired_and_changed_expiry(self) -> None:
        past = NOW - 1
        self.assertInvalid(self.call("GET", OBJ, self.params("GET", expires=past)))
        params = self.params("GET")
        params["temp_url_expires"] = str(LATER + 1)
        self.assertInvalid(self.call("GET", OBJ, params))
        params["temp_url_expires"] = "tomorrow"
        self.assertInvalid(self.call("GET", OBJ, params))

    def test_iso8601_expiry(self) -> None:
        params = self.params("GET")
        params["temp_url_expires"] = strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(LATER))
        response = self.call("GET", OBJ, params)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["Expires"], strftime("%a, %d %b %Y %H:%M:%S GMT", gmtime(LATER)))
        params["temp_url_expires"] = strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(NOW - 10))
        self.assertInvalid(self.call("GET", OBJ, params))

    def test_refusal_of_a_head_has_no_body(self) -> None:
        self.assertInvalid(self.call("HEAD", OBJ, self.params("HEAD", expires=NOW - 5)), head=True)

    def test_changed_path_or_object(self) -> None:
        self.assertInvalid(self.call("GET", f"{A}/c/other", self.params("GET")))
        self.assertInvalid(self.call("GET", f"{A}/c2/o", self.params("GET")))


class MethodTests(Case):
    def test_signature_is_for_one_method(self) -> None:
        self.assertInvalid(self.call("PUT", OBJ, self.params("GET"), b"new"))
        self.assertInvalid(self.call("DELETE", OBJ, self.params("GET")))
        self.assertInvalid(self.call("GET", OBJ, self.params("PUT")))
        self.assertEqual(self.store.objects[OBJ].body, b"object body")

    def test_head_allowed_by_get_put_post_and_head(self) -> None:
        for method in ("GET", "PUT", "POST", "HEAD"):
            response = self.call("HEAD", OBJ, self.params(method))
            self.assertEqual(response.status, 200, method)
        self.assertInvalid(self.call("HEAD", OBJ, self.params("DELETE")), head=True)

    def test_head_signature_allows_only_head(self) -> None:
        self.assertInvalid(self.call("GET", OBJ, self.params("HEAD")))
        self.assertInvalid(self.call("PUT", OBJ, self.params("HEAD"), b"x"))

    def test_put_post_delete(self) -> None:
        new = f"{A}/c/new"
        self.assertEqual(self.call("PUT", new, self.params("PUT", new), b"uploaded").status, 201)
        self.assertEqual(self.store.objects[new].body, b"uploaded")
        response = self.call("POST", new, self.params("POST", new), **{"X-Object-Meta-Color": "red"})
        self.assertEqual(response.status, 202)
        self.assertEqual(self.store.objects[new].headers["X-Object-Meta-Color"], "red")
        self.assertEqual(self.call("DELETE", new, self.params("DELETE", new)).status, 204)
        self.assertNotIn(new, self.store.objects)

    def test_methods_setting(self) -> None:
        self.build(methods=("GET", "HEAD"))
        new = f"{A}/c/new"
        self.assertInvalid(self.call("PUT", new, self.params("PUT", new), b"x"))
        self.assertInvalid(self.call("DELETE", OBJ, self.params("DELETE")))
        self.assertEqual(self.call("GET", OBJ, self.params("GET")).status, 200)

    def test_options_passes(self) -> None:
        response = self.call("OPTIONS", OBJ, self.params("GET"))
        self.assertNotEqual(response.body, INVALID)

    def test_only_object_paths(self) -> None:
        for path in (A, f"{A}/c", f"{A}/c/", "/v2/AUTH_a/c/o"):
            self.assertInvalid(self.call("GET", path, self.params("GET", path)))


class PrefixTests(Case):
    def prefixed(self, method: str, prefix: str, **extra) -> dict:
        path = f"prefix:{A}/c/{prefix}"
        return {"temp_url_sig": sign(KEY, method, LATER, path), "temp_url_expires": str(LATER),
                "temp_url_prefix": prefix, **extra}

    def test_objects_under_the_prefix(self) -> None:
        params = self.prefixed("GET", "pre")
        self.assertEqual(self.read(self.call("GET", f"{A}/c/pre/one", params)), b"one")
        self.assertInvalid(self.call("GET", f"{A}/c/other", params))
        self.assertInvalid(self.call("GET", f"{A}/c2/pre/one", params))

    def test_changed_or_dropped_prefix(self) -> None:
        params = self.prefixed("GET", "pre")
        params["temp_url_prefix"] = "pr"
        self.assertInvalid(self.call("GET", f"{A}/c/pre/one", params))
        del params["temp_url_prefix"]
        self.assertInvalid(self.call("GET", f"{A}/c/pre/one", params))

    def test_empty_prefix_covers_the_container(self) -> None:
        params = self.prefixed("GET", "")
        self.assertEqual(self.call("GET", OBJ, params).status, 200)
        self.assertEqual(self.call("GET", f"{A}/c/other", params).status, 200)

    def test_container_root_needs_staticweb(self) -> None:
        # Swift signs a container's root only for staticweb's answers; without it, refused.
        self.assertInvalid(self.call("GET", f"{A}/c", self.prefixed("GET", "")))
        self.assertInvalid(self.call("PUT", f"{A}/c", self.prefixed("PUT", "")))

    def test_object_signature_is_not_a_prefix_one(self) -> None:
        params = self.params("GET")
        params["temp_url_prefix"] = "o"
        self.assertInvalid(self.call("GET", OBJ, params))


class IPRangeTests(Case):
    def ranged(self, ip: str) -> dict:
        return {"temp_url_sig": sign(KEY, "GET", LATER, OBJ, ip=ip), "temp_url_expires": str(LATER),
                "temp_url_ip_range": ip}

    def test_inside_and_outside(self) -> None:
        self.assertEqual(self.call("GET", OBJ, self.ranged("127.0.0.1")).status, 200)
        self.assertEqual(self.call("GET", OBJ, self.ranged("127.0.0.0/24"), client_ip="127.0.0.9").status, 200)
        self.assertInvalid(self.call("GET", OBJ, self.ranged("127.0.0.0/24"), client_ip="10.0.0.1"))
        self.assertEqual(self.call("GET", OBJ, self.ranged("::1"), client_ip="::1").status, 200)

    def test_bad_range_or_changed_range(self) -> None:
        self.assertInvalid(self.call("GET", OBJ, self.ranged("not-an-ip")))
        params = self.ranged("127.0.0.0/24")
        params["temp_url_ip_range"] = "0.0.0.0/0"
        self.assertInvalid(self.call("GET", OBJ, params))
        del params["temp_url_ip_range"]
        self.assertInvalid(self.call("GET", OBJ, params))

    def test_signed_without_a_range_ignores_the_range(self) -> None:
        # a range the client adds to an unranged signature changes what is signed
        params = self.params("GET", temp_url_ip_range="127.0.0.1")
        self.assertInvalid(self.call("GET", OBJ, params))


class KeyTests(Case):
    def test_second_account_key(self) -> None:
        self.keys.accounts["AUTH_a"]["temp-url-key-2"] = KEY2.decode()
        self.assertEqual(self.call("GET", OBJ, self.params("GET", key=KEY2)).status, 200)
        self.assertEqual(self.call("GET", OBJ, self.params("GET", key=KEY)).status, 200)

    def test_no_keys(self) -> None:
        self.keys.accounts.clear()
        self.assertInvalid(self.call("GET", OBJ, self.params("GET")))

    def test_container_keys_for_that_container_only(self) -> None:
        self.keys.accounts.clear()
        self.keys.containers[("AUTH_a", "c")] = {"Temp-URL-Key": CKEY.decode(), "temp-url-key-2": "k2"}
        self.assertEqual(self.call("GET", OBJ, self.params("GET", key=CKEY)).status, 200)
        self.assertEqual(self.call("GET", OBJ, self.params("GET", key=b"k2")).status, 200)
        path = f"{A}/c2/o"
        self.assertInvalid(self.call("GET", path, self.params("GET", path, key=CKEY)))

    def test_account_key_does_not_reach_another_account(self) -> None:
        path = "/v1/AUTH_b/c/o"
        self.store.put(path, b"b's")
        self.assertInvalid(self.call("GET", path, self.params("GET", path)), realm="AUTH_b")

    def test_non_ascii_key(self) -> None:
        key = "clé".encode("utf-8")
        self.keys.accounts["AUTH_a"]["temp-url-key"] = key.decode("latin-1")  # as a header value holds it
        self.assertEqual(self.call("GET", OBJ, self.params("GET", key=key)).status, 200)

    def test_non_ascii_object_name(self) -> None:
        name = f"{A}/c/\u00e9t\u00e9 \u2603"
        self.store.put(name, b"unicode")
        path = "/v1/AUTH_a/c/%C3%A9t%C3%A9%20%E2%98%83"
        response = self.call("GET", path, self.params("GET", name))
        self.assertEqual(self.read(response), b"unicode")
        self.assertEqual(response.headers["Content-Disposition"],
                         "attachment; filename=\"%C3%A9t%C3%A9 %E2%98%83\"; "
                         "filename*=UTF-8''%C3%A9t%C3%A9%20%E2%98%83")

    def manifest(self, segments_container: str) -> str:
        self.store.put(f"{A}/{segments_container}/seg1", b"one fish ")
        self.store.put(f"{A}/{segments_container}/seg2", b"two fish")
        self.store.put(f"{A}/c/manifest", b"", **{"X-Object-Manifest": f"{segments_container}/seg"})
        return f"{A}/c/manifest"

    def test_large_object_segments_within_an_account_key(self) -> None:
        path = self.manifest("segs")
        response = self.call("GET", path, self.params("GET", path))
        self.assertEqual(self.read(response), b"one fish two fish")

    def test_large_object_segments_outside_a_container_key(self) -> None:
        self.keys.accounts.clear()
        self.keys.containers[("AUTH_a", "c")] = {"temp-url-key": CKEY.decode()}
        path = self.manifest("segs")
        self.assertEqual(self.call("GET", path, self.params("GET", path, key=CKEY)).status, 401)
        self.assertIn((f"{A}/segs", False), self.authorizing.decided)
        inside = self.manifest("c")
        response = self.call("GET", inside, self.params("GET", inside, key=CKEY))
        self.assertEqual(self.read(response), b"one fish two fish")

    def test_a_token_request_is_not_affected(self) -> None:
        self.assertEqual(self.call("GET", OBJ).status, 401)  # anonymous, no temp URL
        self.assertEqual(self.authorizing.decided, [(OBJ, False)])


class HeaderTests(Case):
    def test_disallowed_headers_on_writes(self) -> None:
        new = f"{A}/c/new"
        for name in ("X-Object-Manifest", "X-Symlink-Target", "X-Copy-From"):
            response = self.call("PUT", new, self.params("PUT", new), b"", **{name: "c2/o"})
            self.assertEqual(response.status, 400)
            self.assertEqual(response.body, f"The header {name!r} is not allowed in this tempurl".encode())
        response = self.call("POST", OBJ, self.params("POST"), **{"X-Object-Manifest": "c2/o"})
        self.assertEqual(response.status, 400)
        self.assertNotIn(new, self.store.objects)
        # a read may carry them: nothing is written
        self.assertEqual(self.call("GET", OBJ, self.params("GET"), **{"X-Object-Manifest": "c2/o"}).status, 200)

    def test_incoming_headers_removed(self) -> None:
        new = f"{A}/c/new"
        self.call("PUT", new, self.params("PUT", new), b"x",
                  **{"X-Timestamp": "1", "X-Open-Expired": "true", "X-Object-Meta-Kept": "yes"})
        sent = {k.lower() for k in self.store.calls[-1].headers}
        self.assertNotIn("x-timestamp", sent)
        self.assertNotIn("x-open-expired", sent)
        self.assertIn("x-object-meta-kept", sent)

    def test_incoming_lists_with_prefixes_and_exceptions(self) -> None:
        self.build(incoming_remove_headers=("x-object-meta-*",), incoming_allow_headers=("x-object-meta-ok*",))
        new = f"{A}/c/new"
        self.call("PUT", new, self.params("PUT", new), b"x",
                  **{"X-Object-Meta-Gone": "1", "X-Object-Meta-Ok-Kept": "2", "X-Timestamp": "3"})
        sent = {k.lower() for k in self.store.calls[-1].headers}
        self.assertEqual({"x-object-meta-ok-kept", "x-timestamp"} & sent, {"x-object-meta-ok-kept", "x-timestamp"})
        self.assertNotIn("x-object-meta-gone", sent)

    def test_outgoing_headers_removed(self) -> None:
        response = self.call("GET", OBJ, self.params("GET"))
        self.assertNotIn("X-Object-Meta-Secret", response.headers)
        self.assertEqual(response.headers["X-Object-Meta-Public-Color"], "blue")

    def test_outgoing_lists(self) -> None:
        self.build(outgoing_remove_headers=("etag", "x-object-meta-public-*"), outgoing_allow_headers=())
        response = self.call("GET", OBJ, self.params("GET"))
        self.assertNotIn("ETag", response.headers)
        self.assertNotIn("X-Object-Meta-Public-Color", response.headers)
        self.assertEqual(response.headers["X-Object-Meta-Secret"], "s")

    def test_query_reduced_to_the_temp_url(self) -> None:
        params = self.params("GET", **{"multipart-manifest": "get", "symlink": "get", "filename": "f"})
        self.call("GET", OBJ, params)
        seen = dict(p.split("=", 1) for p in self.store.calls[-1].query.split("&"))
        self.assertEqual(set(seen), {"temp_url_sig", "temp_url_expires", "filename"})

    def test_environ_override(self) -> None:
        seen = []

        async def spy(request: SwiftRequest) -> SwiftResponse:
            seen.append(dict(request.environ))
            return SwiftResponse.empty(204)

        self.tempurl.app = spy
        self.call("DELETE", OBJ, self.params("DELETE"))
        self.assertIs(seen[0][subrequest.OVERRIDE], True)
        self.assertEqual(seen[0]["REMOTE_USER"], ".wsgi.tempurl")
        authorize = seen[0][subrequest.AUTHORIZE]  # an account key: the account, nothing else
        self.assertTrue(authorize(None, "AUTH_a", "other", "x", None).allowed)
        denied = authorize(None, "AUTH_b", "c", "o", None)
        self.assertEqual((denied.allowed, denied.status), (False, 401))


class DispositionTests(Case):
    def disposition(self, method: str = "GET", **extra: str) -> str | None:
        response = self.call(method, OBJ, self.params("GET", **extra))
        self.assertEqual(response.status, 200)
        return response.headers.get("Content-Disposition")

    def test_default_is_an_attachment_named_after_the_object(self) -> None:
        self.assertEqual(self.disposition(), "attachment; filename=\"o\"; filename*=UTF-8''o")
        self.assertEqual(self.disposition("HEAD"), "attachment; filename=\"o\"; filename*=UTF-8''o")

    def test_filename(self) -> None:
        self.assertEqual(self.disposition(filename="My Test File.pdf"),
                         "attachment; filename=\"My Test File.pdf\"; filename*=UTF-8''My%20Test%20File.pdf")
        self.assertEqual(self.disposition(filename="a\"b;\u00e9"),
                         "attachment; filename=\"a%22b%3B%C3%A9\"; filename*=UTF-8''a%22b%3B%C3%A9")

    def test_inline(self) -> None:
        self.assertEqual(self.disposition(inline=""), "inline")
        self.assertEqual(self.disposition(inline="", filename="x.pdf"),
                         "inline; filename=\"x.pdf\"; filename*=UTF-8''x.pdf")

    def test_the_objects_own(self) -> None:
        self.store.objects[OBJ].headers["Content-Disposition"] = "attachment; filename=stored.txt"
        self.assertEqual(self.disposition(), "attachment; filename=stored.txt")
        self.assertEqual(self.disposition(filename="f"), "attachment; filename=\"f\"; filename*=UTF-8''f")

    def test_not_on_failures_or_writes(self) -> None:
        response = self.call("GET", f"{A}/c/missing", self.params("GET", f"{A}/c/missing"))
        self.assertEqual(response.status, 404)
        self.assertNotIn("Content-Disposition", response.headers)
        self.assertNotIn("Expires", response.headers)
        new = f"{A}/c/new"
        response = self.call("PUT", new, self.params("PUT", new), b"x")
        self.assertEqual(response.status, 201)
        self.assertNotIn("Content-Disposition", response.headers)


class SettingsTests(SynchronousTestCase):
    def parse(self, **raw: str) -> dict:
        schema = c.Section("filter:tempurl", options=OPTIONS)
        return c.parse_section(__import__("pathlib").Path("/proxy.conf"), "filter:tempurl", schema, list(raw.items()))

    def test_defaults_and_info_as_swift(self) -> None:
        found = info_of(self.parse())
        self.assertEqual(found, {
            "methods": ["GET", "HEAD", "PUT", "POST", "DELETE"],
            "incoming_remove_headers": ["x-timestamp", "x-open-expired"],
            "incoming_allow_headers": [],
            "outgoing_remove_headers": ["x-object-meta-*"],
            "outgoing_allow_headers": ["x-object-meta-public-*"],
            "allowed_digests": ["sha1", "sha256", "sha512"],
            "deprecated_digests": ["sha1"],
        })

    def test_configured(self) -> None:
        found = info_of(self.parse(methods="get head", allowed_digests="SHA512 sha256",
                                   outgoing_allow_headers=""))
        self.assertEqual(found["methods"], ["GET", "HEAD"])
        self.assertEqual(found["allowed_digests"], ["sha256", "sha512"])
        self.assertNotIn("deprecated_digests", found)
        self.assertEqual(found["outgoing_allow_headers"], [])

    def test_bad_values(self) -> None:
        for raw in ({"allowed_digests": "md5"}, {"allowed_digests": ""}, {"methods": " "}):
            self.assertRaises(c.ConfigError, self.parse, **raw)

    def test_registered_in_info(self) -> None:
        registry = InfoRegistry()

        class Proxy:
            info = registry
            context = None
            clock = staticmethod(lambda: 0.0)

        tempurl.middleware.build(object(), self.parse(), Proxy())
        self.assertEqual(json.loads(json.dumps(registry.as_dict()))["tempurl"]["allowed_digests"],
                         ["sha1", "sha256", "sha512"])
