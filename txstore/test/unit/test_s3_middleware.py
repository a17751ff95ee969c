"""
The s3api middleware over an in-memory Swift (`MemorySwift`), requests signed by botocore's own
signers (an implementation independent of ours): what passes through untouched, credential
and signature refusals, bucket and object operations, the checked upload (a body that does not
hash to its promise stores nothing), refusals of what is not built, error XML.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import quote, urlsplit
from xml.etree.ElementTree import fromstring

from botocore.auth import HmacV1Auth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.proxy import subrequest
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.tempauth import TempAuth
from txstore.s3.calls import S3Settings
from txstore.s3.credentials import TempAuthCredentials
from txstore.s3.middleware import S3Api
from txstore.test.support import clock_at
from txstore.test.swift_fake import MemorySwift, read_body

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
USERS = {"user_test_tester": ("testing", (".admin",), None), "user_test_tester3": ("testing3", (), None)}


class Store(MemorySwift):
    """MemorySwift plus what buckets need: account listings, container HEAD and DELETE."""

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        _v, account, container, obj = request.split(1, 4)
        path = f"/v1/{account}/{container}"
        if container is None and request.method == "GET":
            names = sorted({p.split("/")[3] for p in self.containers | set(self.objects)})
            return SwiftResponse(200, HeaderMap({"Content-Type": "application/json"}),
                                 json.dumps([{"name": n, "count": 0, "bytes": 0} for n in names]).encode())
        if obj is None and request.method == "HEAD":
            return SwiftResponse.empty(204 if self._container_exists(path) else 404)
        if obj is None and request.method == "DELETE":
            if not self._container_exists(path):
                return SwiftResponse.text(404, "Not Found")
            if any(name.startswith(path + "/") for name in self.objects):
                return SwiftResponse.text(409, "Conflict")
            self.containers.discard(path)
            return SwiftResponse.empty(204)
        if obj is not None and request.method in ("PUT", "GET", "HEAD", "DELETE") \
                and not self._container_exists(path):
            request.discard_body()
            return SwiftResponse.text(404, "Not Found")
        return await super().__call__(request)


class Authorizing:
    """The application's part: the authorizer in the environ is asked before the store answers."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        authorize = request.environ.get(subrequest.AUTHORIZE)
        if authorize is not None:
            _v, account, container, obj = request.split(1, 4)
            decision = authorize(request, account, container, obj, None)
            if not decision.allowed:
                request.discard_body()
                return SwiftResponse.text(decision.status, "Forbidden")
        return await self.app(request)


class Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = Store()
        self.passed: list[str] = []
        auth = TempAuth.from_filter({"token_life": 86400, "reseller_prefix": "AUTH", **USERS}, time.time)
        below = Authorizing(self.store)

        def swift(request):
            self.passed.append(request.path)
            return below(request)

        self.clock = clock_at(time.time())  # requests are signed with the time now
        self.app = S3Api(swift, S3Settings(storage_domains=("s3.example.com",)), TempAuthCredentials(auth),
                         self.clock)

    def call(self, method: str, path: str, body: bytes = b"", headers: dict | None = None, key: str = "testing",
             access: str = "test:tester", version: int = 4, host: str = "127.0.0.1:8080",
             presign: bool = False) -> SwiftResponse:
        url = f"http://{host}{path}"
        aws = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
        credentials = Credentials(access, key)
        if presign:
            S3SigV4QueryAuth(credentials, "s3", "us-east-1", expires=60).add_auth(aws)
        elif version == 4:
            S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(aws)
        elif version == 2:
            HmacV1Auth(credentials).add_auth(aws)
        parts = urlsplit(aws.url)
        sent = HeaderMap({"Host": host, **{k: v for k, v in aws.headers.items()}})
        if method == "PUT" and not presign:
            sent.setdefault("Content-Length", str(len(body)))
        request = SwiftRequest(method, parts.path, sent, parts.query, BytesSource(body), trans_id="txabc", host=host)
        return self.successResultOf(ensureDeferred(_call(self.app, request)))

    def read(self, response: SwiftResponse) -> bytes:
        return read_body(self, response)

    def error(self, response: SwiftResponse) -> tuple[int, str]:
        root = fromstring(self.read(response))
        self.assertEqual(root.find("RequestId").text, "txabc")
        return response.status, root.find("Code").text

    def put_bucket(self, name: str = "bucket") -> None:
        self.assertEqual(self.call("PUT", f"/{name}").status, 200)


async def _call(app, request):
    return await app(request)


class AuthTests(Case):
    def test_unsigned_requests_pass_untouched(self) -> None:
        request = SwiftRequest("GET", "/v1/AUTH_test", HeaderMap({"X-Auth-Token": "t"}), trans_id="tx")
        self.successResultOf(ensureDeferred(self.app(request)))
        self.assertEqual(self.passed, ["/v1/AUTH_test"])

    def test_each_signature_form(self) -> None:
        self.put_bucket()
        for kwargs in ({"version": 4}, {"version": 2}, {"presign": True}):
            response = self.call("GET", "/bucket", **kwargs)
            self.assertEqual(response.status, 200, kwargs)
            self.assertEqual(response.headers["x-amz-request-id"], "txabc")
        # the Swift requests went to the user's account
        self.assertIn("/v1/AUTH_test/bucket", self.passed)

    def test_wrong_secret_unknown_key_and_skew(self) -> None:
        self.assertEqual(self.error(self.call("GET", "/", key="wrong")), (403, "SignatureDoesNotMatch"))
        self.assertEqual(self.error(self.call("GET", "/", key="wrong", version=2)), (403, "SignatureDoesNotMatch"))
        self.assertEqual(self.error(self.call("GET", "/", access="no:one")), (403, "InvalidAccessKeyId"))
        self.assertEqual(self.passed, [])
        self.clock.advance(3600)
        self.assertEqual(self.error(self.call("GET", "/")), (403, "RequestTimeTooSkewed"))

    def test_tempauth_rules_apply(self) -> None:
        # tester3 has no rights of its own in AUTH_test
        self.assertEqual(self.error(self.call("PUT", "/mine", access="test:tester3", key="testing3")),
                         (403, "AccessDenied"))
        self.assertEqual(self.store.containers, set())

    def test_the_accounts_acl_grants_as_for_swift(self) -> None:
        from types import SimpleNamespace

        self.put_bucket()
        self.store.put("/v1/AUTH_test/bucket/o", b"shared")
        acl = json.dumps({"read-only": ["test:tester3"]})

        async def account_info(request, account):
            return SimpleNamespace(sysmeta={"core-access-control": acl})

        self.app.credentials.account_info = account_info
        as_tester3 = {"access": "test:tester3", "key": "testing3"}
        self.assertEqual(self.read(self.call("GET", "/bucket/o", **as_tester3)), b"shared")
        self.assertEqual(self.error(self.call("PUT", "/bucket/p", b"x", **as_tester3)), (403, "AccessDenied"))
        acl = json.dumps({"read-write": ["test:tester3"]})
        self.assertEqual(self.call("PUT", "/bucket/p", b"x", **as_tester3).status, 200)

    def test_head_errors_have_no_body(self) -> None:
        response = self.call("HEAD", "/nothing")
        self.assertEqual((response.status, response.body), (404, b""))


class BucketTests(Case):
    def test_create_list_head_delete(self) -> None:
        self.put_bucket("one")
        self.assertEqual(self.error(self.call("PUT", "/one")), (409, "BucketAlreadyOwnedByYou"))
        self.assertEqual(self.call("HEAD", "/one").status, 200)
        root = fromstring(self.read(self.call("GET", "/")))
        self.assertEqual([b.find(f"{NS}Name").text for b in root.iter(f"{NS}Bucket")], ["one"])
        self.assertEqual(root.find(f"{NS}Owner/{NS}ID").text, "test:tester")
        self.store.put("/v1/AUTH_test/one/o", b"x")
        self.assertEqual(self.error(self.call("DELETE", "/one")), (409, "BucketNotEmpty"))
        self.store.objects.clear()
        self.assertEqual(self.call("DELETE", "/one").status, 204)
        self.assertEqual(self.error(self.call("DELETE", "/one")), (404, "NoSuchBucket"))

    def test_bucket_names(self) -> None:
        for name in ("UPPER", "ab", "a_b", "-ab", "192.168.1.1", "a..b"):
            self.assertEqual(self.error(self.call("PUT", f"/{name}")), (400, "InvalidBucketName"), name)

    def test_location_constraint(self) -> None:
        body = (b"<CreateBucketConfiguration><LocationConstraint>mars-1</LocationConstraint>"
                b"</CreateBucketConfiguration>")
        self.assertEqual(self.error(self.call("PUT", "/b-1", body)), (400, "InvalidLocationConstraint"))
        xxe = b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><CreateBucketConfiguration/>'
        self.assertEqual(self.error(self.call("PUT", "/b-1", xxe)), (400, "MalformedXML"))
        self.assertEqual(self.store.containers, set())
        body = body.replace(b"mars-1", b"us-east-1")
        self.assertEqual(self.call("PUT", "/b-1", body).status, 200)
        root = fromstring(self.read(self.call("GET", "/b-1?location")))
        self.assertEqual((root.tag, root.text), (f"{NS}LocationConstraint", None))

    def test_listing_v1_and_v2(self) -> None:
        self.put_bucket()
        for name in ("a", "b", "c", "d"):
            self.store.put(f"/v1/AUTH_test/bucket/{name}", name.encode())
        root = fromstring(self.read(self.call("GET", "/bucket?max-keys=2")))
        self.assertEqual([k.text for k in root.iter(f"{NS}Key")], ["a", "b"])
        self.assertEqual(root.find(f"{NS}IsTruncated").text, "true")
        self.assertEqual(root.find(f"{NS}Contents/{NS}ETag").text, '"%s"' % hashlib.md5(b"a").hexdigest())
        self.assertIsNotNone(root.find(f"{NS}Contents/{NS}Owner"))
        root = fromstring(self.read(self.call("GET", "/bucket?marker=b")))
        self.assertEqual([k.text for k in root.iter(f"{NS}Key")], ["c", "d"])
        root = fromstring(self.read(self.call("GET", "/bucket?list-type=2&max-keys=3")))
        token = root.find(f"{NS}NextContinuationToken").text
        self.assertEqual((root.find(f"{NS}KeyCount").text, root.find(f"{NS}Contents/{NS}Owner")), ("3", None))
        root = fromstring(self.read(self.call("GET", f"/bucket?list-type=2&continuation-token={quote(token)}")))
        self.assertEqual([k.text for k in root.iter(f"{NS}Key")], ["d"])
        self.assertEqual(self.error(self.call("GET", "/bucket?max-keys=-1")), (400, "InvalidArgument"))
        self.assertEqual(self.error(self.call("GET", "/nothing")), (404, "NoSuchBucket"))

    def test_multi_delete(self) -> None:
        self.put_bucket()
        self.store.put("/v1/AUTH_test/bucket/a", b"a")
        body = b"<Delete><Object><Key>a</Key></Object><Object><Key>missing</Key></Object></Delete>"
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        root = fromstring(self.read(self.call("POST", "/bucket?delete", body, {"Content-MD5": md5})))
        self.assertEqual(sorted(d.find(f"{NS}Key").text for d in root.iter(f"{NS}Deleted")), ["a", "missing"])
        self.assertEqual(self.store.objects, {})
        quiet = b"<Delete><Quiet>true</Quiet><Object><Key>a</Key></Object></Delete>"
        md5 = base64.b64encode(hashlib.md5(quiet).digest()).decode()
        root = fromstring(self.read(self.call("POST", "/bucket?delete", quiet, {"Content-MD5": md5})))
        self.assertEqual(list(root), [])
        self.assertEqual(self.error(self.call("POST", "/bucket?delete", body, {"Content-MD5": md5})),
                         (400, "BadDigest"))
        self.assertEqual(self.error(self.call("POST", "/bucket?delete", body)), (400, "InvalidRequest"))

    def test_xml_bodies_are_checked_against_their_promises(self) -> None:
        body = b"<CreateBucketConfiguration><LocationConstraint>us-east-1</LocationConstraint>" \
               b"</CreateBucketConfiguration>"
        bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        self.assertEqual(self.error(self.call("PUT", "/checked", body, {"Content-MD5": bad})), (400, "BadDigest"))
        self.assertEqual(self.store.containers, set())

    def test_a_failure_below_is_an_s3_internal_error(self) -> None:
        def broken(request):
            raise RuntimeError("boom")

        self.app.app = broken
        self.assertEqual(self.error(self.call("GET", "/")), (500, "InternalError"))
        self.flushLoggedErrors(RuntimeError)

    def test_not_built_is_refused(self) -> None:
        self.put_bucket()
        for method, path in (("PUT", "/bucket?replication"), ("GET", "/bucket?lifecycle"),
                             ("PUT", "/bucket?policy"), ("PUT", "/bucket/k?partNumber=1"),
                             ("PUT", "/bucket/k?tagging")):
            self.assertEqual(self.error(self.call(method, path)), (501, "NotImplemented"), path)
        response = self.call("PUT", "/bucket/k", b"x", {"x-amz-acl": "public-read"})
        self.assertEqual(self.error(response), (501, "NotImplemented"))
        self.assertEqual(self.store.objects, {})


class ObjectTests(Case):
    def setUp(self) -> None:
        super().setUp()
        self.put_bucket()

    def test_put_get_head_delete_with_metadata(self) -> None:
        body = b"hello s3"
        response = self.call("PUT", "/bucket/dir/k%C3%A9y", body, {"x-amz-meta-color": "blue",
                                                                  "Content-Type": "text/plain"})
        self.assertEqual((response.status, response.headers["ETag"]), (200, '"%s"' % hashlib.md5(body).hexdigest()))
        stored = self.store.objects["/v1/AUTH_test/bucket/dir/k\u00e9y"]
        self.assertEqual((stored.body, stored.headers["X-Object-Meta-color"]), (body, "blue"))
        response = self.call("GET", "/bucket/dir/k%C3%A9y?response-content-type=x%2Fy", headers={"Range": "bytes=1-3"})
        self.assertEqual((response.status, self.read(response)), (206, b"ell"))
        self.assertEqual((response.headers["x-amz-meta-color"], response.headers["Content-Type"]), ("blue", "x/y"))
        self.assertEqual(self.call("HEAD", "/bucket/dir/k%C3%A9y").headers["Content-Length"], "8")
        self.assertEqual(self.call("DELETE", "/bucket/dir/k%C3%A9y").status, 204)
        self.assertEqual(self.error(self.call("GET", "/bucket/dir/k%C3%A9y")), (404, "NoSuchKey"))
        self.assertEqual(self.call("DELETE", "/bucket/dir/k%C3%A9y").status, 204)
        self.assertEqual(self.error(self.call("GET", "/nothing/k")), (404, "NoSuchBucket"))
        self.assertEqual(self.error(self.call("PUT", "/nothing/k", b"x")), (404, "NoSuchBucket"))

    def test_virtual_hosted_style(self) -> None:
        response = self.call("PUT", "/k", b"v", host="bucket.s3.example.com")
        self.assertEqual(response.status, 200, self.read(response))
        self.assertIn("/v1/AUTH_test/bucket/k", self.store.objects)
        self.assertEqual(self.read(self.call("GET", "/k", host="bucket.s3.example.com:8080")), b"v")

    def test_content_md5(self) -> None:
        good = base64.b64encode(hashlib.md5(b"data").digest()).decode()
        self.assertEqual(self.call("PUT", "/bucket/k", b"data", {"Content-MD5": good}).status, 200)
        bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        self.assertEqual(self.error(self.call("PUT", "/bucket/j", b"data", {"Content-MD5": bad})), (400, "BadDigest"))
        self.assertEqual(self.error(self.call("PUT", "/bucket/j", b"data", {"Content-MD5": "nope"})),
                         (400, "InvalidDigest"))
        self.assertNotIn("/v1/AUTH_test/bucket/j", self.store.objects)

    def test_payload_hash_mismatch_stores_nothing(self) -> None:
        request = SwiftRequest("PUT", "/bucket/k", HeaderMap(), "", BytesSource(b"x"))
        aws = AWSRequest(method="PUT", url="http://127.0.0.1:8080/bucket/k", data=b"the real body")
        S3SigV4Auth(Credentials("test:tester", "testing"), "s3", "us-east-1").add_auth(aws)
        request = SwiftRequest("PUT", "/bucket/k", HeaderMap({"Host": "127.0.0.1:8080", **dict(aws.headers.items()),
                                                              "Content-Length": "13"}),
                               "", BytesSource(b"not the body!"), trans_id="txabc")
        response = self.successResultOf(ensureDeferred(_call(self.app, request)))
        self.assertEqual(self.error(response), (400, "XAmzContentSHA256Mismatch"))
        self.assertEqual(self.store.objects, {})

    def test_copy(self) -> None:
        self.store.put("/v1/AUTH_test/bucket/src", b"source", **{"X-Object-Meta-A": "1"})
        response = self.call("PUT", "/bucket/dst", headers={"x-amz-copy-source": "/bucket/src"})
        self.assertEqual(response.status, 200)
        self.assertEqual(fromstring(self.read(response)).tag, f"{NS}CopyObjectResult")
        self.assertEqual(self.store.calls[-1].headers["X-Copy-From"], "/bucket/src")
        response = self.call("PUT", "/bucket/src", headers={"x-amz-copy-source": "bucket/src"})
        self.assertEqual(self.error(response), (400, "InvalidRequest"))
        response = self.call("PUT", "/bucket/dst", headers={"x-amz-copy-source": "bucket/missing"})
        self.assertEqual(self.error(response), (404, "NoSuchKey"))
        response = self.call("PUT", "/bucket/dst", headers={"x-amz-copy-source": "bucket/src",
                                                            "x-amz-copy-source-if-match": '"nope"'})
        self.assertEqual(self.error(response), (412, "PreconditionFailed"))
        response = self.call("PUT", "/bucket/dst", headers={"x-amz-copy-source": "bucket/src",
                                                            "x-amz-metadata-directive": "REPLACE",
                                                            "x-amz-meta-b": "2"})
        self.assertEqual(response.status, 200)
        sent = self.store.calls[-1].headers
        self.assertEqual((sent["X-Fresh-Metadata"], sent["X-Object-Meta-b"]), ("true", "2"))

    def test_key_too_long(self) -> None:
        self.assertEqual(self.error(self.call("PUT", "/bucket/" + "k" * 1025, b"x")), (400, "KeyTooLongError"))


class ChunkedUploadTests(Case):
    """aws-chunked uploads through the middleware, signed with the chunk signature chain."""

    def setUp(self) -> None:
        super().setUp()
        self.put_bucket()

    def request(self, data: bytes, tamper: bool = False, chunk: int = 4) -> SwiftRequest:
        from time import gmtime, strftime

        from txstore.s3 import sigv4
        from txstore.s3.chunked import chunk_string_to_sign

        amz_date = strftime("%Y%m%dT%H%M%SZ", gmtime())
        scope = sigv4.scope(amz_date[:8], "us-east-1", "s3")
        pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
        encoded_length = sum(len(b"%x;chunk-signature=" % len(p)) + 64 + 4 + len(p) for p in pieces)
        headers = HeaderMap({"Host": "127.0.0.1:8080", "x-amz-date": amz_date, "Content-Encoding": "aws-chunked",
                             "x-amz-content-sha256": sigv4.STREAMING_PAYLOAD, "Content-Length": str(encoded_length),
                             "x-amz-decoded-content-length": str(len(data))})
        signed = ("content-encoding", "content-length", "host", "x-amz-content-sha256", "x-amz-date",
                  "x-amz-decoded-content-length")
        canonical = sigv4.canonical_request("PUT", "/bucket/chunked", "", headers, signed, sigv4.STREAMING_PAYLOAD)
        seed = sigv4.signature("testing", amz_date[:8], "us-east-1", "s3",
                               sigv4.string_to_sign(amz_date, scope, canonical))
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential=test:tester/{scope}, "
                                    f"SignedHeaders={';'.join(signed)}, Signature={seed}")
        key = sigv4.signing_key("testing", amz_date[:8], "us-east-1", "s3")
        body, previous = b"", seed
        for piece in pieces:
            sent = piece.replace(b"x", b"y") if tamper else piece
            signature = hmac.new(key, chunk_string_to_sign(amz_date, scope, previous,
                                                           hashlib.sha256(piece).hexdigest()),
                                 hashlib.sha256).hexdigest()
            body += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(piece), signature.encode(), sent)
            previous = signature
        return SwiftRequest("PUT", "/bucket/chunked", headers, "", BytesSource(body), trans_id="txabc",
                            host="127.0.0.1:8080")

    def test_chunks_are_decoded_and_verified(self) -> None:
        response = self.successResultOf(ensureDeferred(_call(self.app, self.request(b"x" * 10 + b"end"))))
        self.assertEqual(response.status, 200, self.read(response))
        stored = self.store.objects["/v1/AUTH_test/bucket/chunked"]
        self.assertEqual(stored.body, b"x" * 10 + b"end")
        self.assertNotIn("Content-Encoding", stored.headers)

    def test_a_tampered_chunk_stores_nothing(self) -> None:
        response = self.successResultOf(ensureDeferred(_call(self.app, self.request(b"x" * 10, tamper=True))))
        self.assertEqual(self.error(response), (403, "SignatureDoesNotMatch"))
        self.assertEqual(self.store.objects, {})


class MultipartTests(Case):
    """Multipart uploads over MemorySwift behind the real slo middleware (parts of 5 bytes and up)."""

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from txstore.middleware.slo import StaticLargeObjects

        super().setUp()
        settings = {"max_manifest_segments": 10, "max_manifest_size": 4096, "yield_frequency": 10,
                    "concurrency": 2}
        below = Authorizing(StaticLargeObjects(self.store, settings, Clock()))
        self.app.app = below
        self.app.settings.min_segment_size = 5
        self.put_bucket()

    def create(self, key: str = "big") -> str:
        response = self.call("POST", f"/bucket/{key}?uploads", headers={"x-amz-meta-kind": "mpu",
                                                                        "Content-Type": "text/x-parts"})
        self.assertEqual(response.status, 200)
        return fromstring(self.read(response)).find(f"{NS}UploadId").text

    def part(self, upload: str, number: int, data: bytes, key: str = "big") -> str:
        response = self.call("PUT", f"/bucket/{key}?partNumber={number}&uploadId={upload}", data)
        self.assertEqual(response.status, 200, self.read(response))
        return response.headers["ETag"]

    def complete(self, upload: str, parts: list[tuple[int, str]], key: str = "big") -> SwiftResponse:
        body = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts) + \
            "</CompleteMultipartUpload>"
        return self.call("POST", f"/bucket/{key}?uploadId={upload}", body.encode())

    def test_upload_list_complete_read_delete(self) -> None:
        upload = self.create()
        first, second = self.part(upload, 1, b"hello"), self.part(upload, 2, b" world")
        root = fromstring(self.read(self.call("GET", f"/bucket/big?uploadId={upload}")))
        self.assertEqual([(p.find(f"{NS}PartNumber").text, p.find(f"{NS}ETag").text)
                          for p in root.iter(f"{NS}Part")], [("1", first), ("2", second)])
        root = fromstring(self.read(self.call("GET", "/bucket?uploads")))
        self.assertEqual([u.find(f"{NS}UploadId").text for u in root.iter(f"{NS}Upload")], [upload])
        self.assertEqual(self.error(self.complete(upload, [(2, second), (1, first)])), (400, "InvalidPartOrder"))
        self.assertEqual(self.error(self.complete(upload, [(1, first), (2, '"0000"')])), (400, "InvalidPart"))
        response = self.complete(upload, [(1, first), (2, second)])
        self.assertEqual(response.status, 200, self.read(response))
        digests = hashlib.md5(b"hello").digest() + hashlib.md5(b" world").digest()
        etag = '"%s-2"' % hashlib.md5(digests).hexdigest()
        self.assertEqual(fromstring(self.read(response)).find(f"{NS}ETag").text, etag)
        got = self.call("GET", "/bucket/big")
        self.assertEqual((self.read(got), got.headers["ETag"], got.headers["x-amz-meta-kind"]),
                         (b"hello world", etag, "mpu"))
        self.assertEqual(got.headers["Content-Type"], "text/x-parts")
        # conditions compare S3's ETag (what a client got from HEAD), as a ranged download's If-Match
        self.assertEqual(self.read(self.call("GET", "/bucket/big", headers={"If-Match": etag,
                                                                           "Range": "bytes=0-4"})), b"hello")
        self.assertEqual(self.error(self.call("GET", "/bucket/big", headers={"If-Match": first})),
                         (412, "PreconditionFailed"))
        self.assertEqual(self.call("HEAD", "/bucket/big", headers={"If-None-Match": etag}).status, 304)
        self.assertEqual(self.read(self.call("GET", "/bucket/big?partNumber=2")), b" world")
        self.assertEqual(self.error(self.call("GET", f"/bucket/big?uploadId={upload}")), (404, "NoSuchUpload"))
        self.assertEqual(self.call("DELETE", "/bucket/big").status, 204)
        self.assertEqual(sorted(self.store.objects), [])

    def test_small_parts_and_abort(self) -> None:
        upload = self.create()
        small, last = self.part(upload, 1, b"abc"), self.part(upload, 2, b"defgh")
        self.assertEqual(self.error(self.complete(upload, [(1, small), (2, last)])), (400, "EntityTooSmall"))
        self.assertEqual(self.call("DELETE", f"/bucket/big?uploadId={upload}").status, 204)
        self.assertEqual(sorted(self.store.objects), [])
        self.assertEqual(self.error(self.call("PUT", f"/bucket/big?partNumber=1&uploadId={upload}", b"x")),
                         (404, "NoSuchUpload"))
        self.assertEqual(self.error(self.call("PUT", "/bucket/big?partNumber=10001&uploadId=u1", b"x")),
                         (400, "InvalidArgument"))
