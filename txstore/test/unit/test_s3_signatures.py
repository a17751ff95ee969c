"""
Signature V4 and V2 against the examples AWS documents (the S3 API reference's "Signature
Calculations" examples and the general SigV4 test suite), and `txstore.s3.auth.signed_by` on
requests: header and query forms, dates, skew, expiry, malformed parts.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from twisted.trial.unittest import SynchronousTestCase

from txstore.proxy.messages import HeaderMap, SwiftRequest
from txstore.s3 import sigv2, sigv4
from txstore.s3.auth import signed_by
from txstore.s3.errors import S3Error

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # the S3 examples' key
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # the SigV4 test suite's
HOST = "examplebucket.s3.amazonaws.com"
S3_SCOPE = sigv4.scope("20130524", "us-east-1", "s3")
MAY_24_2013 = 1369353600.0  # 20130524T000000Z


def v4(secret: str, method: str, path: str, query: str, headers: dict, signed: tuple[str, ...], payload: str,
       date: str = "20130524T000000Z", region: str = "us-east-1", service: str = "s3") -> str:
    canonical = sigv4.canonical_request(method, path, query, HeaderMap(headers), signed, payload)
    to_sign = sigv4.string_to_sign(date, sigv4.scope(date[:8], region, service), canonical)
    return sigv4.signature(secret, date[:8], region, service, to_sign)


class AWSExamplesV4(SynchronousTestCase):
    def test_get_object_with_range(self) -> None:
        headers = {"Host": HOST, "Range": "bytes=0-9", "x-amz-content-sha256": sigv4.EMPTY_SHA256,
                   "x-amz-date": "20130524T000000Z"}
        self.assertEqual(v4(SECRET, "GET", "/test.txt", "", headers,
                            ("host", "range", "x-amz-content-sha256", "x-amz-date"), sigv4.EMPTY_SHA256),
                         "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")

    def test_put_object(self) -> None:
        payload = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
        headers = {"Date": "Fri, 24 May 2013 00:00:00 GMT", "Host": HOST, "x-amz-date": "20130524T000000Z",
                   "x-amz-storage-class": "REDUCED_REDUNDANCY", "x-amz-content-sha256": payload}
        self.assertEqual(v4(SECRET, "PUT", "/test$file.text", "", headers,
                            ("date", "host", "x-amz-content-sha256", "x-amz-date", "x-amz-storage-class"), payload),
                         "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
        # the same path with '$' already encoded by the client signs the same
        self.assertEqual(sigv4.canonical_uri("/test%24file.text"), sigv4.canonical_uri("/test$file.text"))

    def test_get_bucket_lifecycle(self) -> None:
        headers = {"Host": HOST, "x-amz-content-sha256": sigv4.EMPTY_SHA256, "x-amz-date": "20130524T000000Z"}
        self.assertEqual(v4(SECRET, "GET", "/", "lifecycle", headers,
                            ("host", "x-amz-content-sha256", "x-amz-date"), sigv4.EMPTY_SHA256),
                         "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")

    def test_presigned_get(self) -> None:
        query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2F"
                 "s3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host")
        self.assertEqual(v4(SECRET, "GET", "/test.txt", query, {"Host": HOST}, ("host",), sigv4.UNSIGNED_PAYLOAD),
                         "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")

    def test_suite_get_vanilla_and_query_order(self) -> None:
        headers = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
        for query, expected in (("", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
                                ("Param2=value2&Param1=value1",
                                 "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")):
            self.assertEqual(v4(SUITE_SECRET, "GET", "/", query, headers, ("host", "x-amz-date"),
                                sigv4.EMPTY_SHA256, "20150830T123600Z", "us-east-1", "service"), expected)

    def test_canonical_query_sorts_and_encodes(self) -> None:
        self.assertEqual(sigv4.canonical_query("b=2&a=1&acl&a%20b=c+d&x=%7E"), "a=1&a%20b=c%2Bd&acl=&b=2&x=~")
        self.assertEqual(sigv4.canonical_query("X-Amz-Signature=abc&a=1", frozenset({b"X-Amz-Signature"})), "a=1")

    def test_canonical_headers_trim_and_collapse(self) -> None:
        self.assertEqual(sigv4.canonical_headers(HeaderMap({"My-Header": "  a   b  c "}), ("my-header",)),
                         "my-header:a b c\n")

    def test_authorization_header_parsing(self) -> None:
        parsed = sigv4.parse_authorization(
            "AWS4-HMAC-SHA256 Credential=test:tester/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;x-amz-date,Signature=abc")
        self.assertEqual(parsed.credential, sigv4.Credential("test:tester", "20130524", "us-east-1", "s3"))
        self.assertEqual(parsed.signed_headers, ("host", "x-amz-date"))
        for bad in ("AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=host",
                    "AWS4-HMAC-SHA256 Credential=a/20130524/us-east-1/s3/wrong, SignedHeaders=host, Signature=x",
                    "AWS4-HMAC-SHA1 Credential=a/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x"):
            self.assertRaises(ValueError, sigv4.parse_authorization, bad)

    def test_authorization_parsed_once_but_each_signature_its_own(self) -> None:
        """The fields before the signature are parsed once (kept); the signature is each request's."""
        head = "AWS4-HMAC-SHA256 Credential=test:tester/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, "
        self.assertEqual([sigv4.parse_authorization(head + f"Signature={s}").signature for s in ("ab", "cd", " ef ")],
                         ["ab", "cd", "ef"])
        for value in (head + "Signature=", head + "Signature=ab, Extra=1", head + "Signature=ab, Signature=cd",
                      head.replace("SignedHeaders=host", "SignedHeaders=") + "Signature=ab"):
            try:
                expected = sigv4._parse_authorization(value)
            except ValueError as err:
                self.assertRaisesRegex(ValueError, str(err), sigv4.parse_authorization, value)
            else:
                self.assertEqual(sigv4.parse_authorization(value), expected)


class AWSExamplesV2(SynchronousTestCase):
    def sign(self, method: str, path: str, query: str, headers: dict, bucket: str | None = "johnsmith") -> str:
        headers = HeaderMap(headers)
        return sigv2.signature(SECRET, sigv2.string_to_sign(method, headers, path, query, headers.get("Date", ""),
                                                             bucket))

    def test_object_get_put_and_list(self) -> None:
        self.assertEqual(self.sign("GET", "/photos/puppy.jpg", "", {"Date": "Tue, 27 Mar 2007 19:36:42 +0000"}),
                         "bWq2s1WEIj+Ydj0vQ697zp+IXMU=")
        self.assertEqual(self.sign("PUT", "/photos/puppy.jpg", "", {"Date": "Tue, 27 Mar 2007 21:15:45 +0000",
                                                                     "Content-Type": "image/jpeg",
                                                                     "Content-Length": "94328"}),
                         "MyyxeRY7whkBe+bq8fHCL/2kKUg=")
        self.assertEqual(self.sign("GET", "/", "prefix=photos&max-keys=50&marker=puppy",
                                   {"Date": "Tue, 27 Mar 2007 19:42:41 +0000"}),
                         "htDYFYduRNen8P9ZfE/s9SuKy0U=")

    def test_sub_resources_and_amz_headers(self) -> None:
        self.assertEqual(sigv2.canonical_resource("/b/k", "versionId=3&acl&prefix=p&uploads"),
                         "/b/k?acl&uploads&versionId=3")
        self.assertEqual(sigv2.amz_headers(HeaderMap({"X-Amz-Meta-B": " x  y", "x-amz-acl": "private",
                                                      "Other": "no"})),
                         "x-amz-acl:private\nx-amz-meta-b:x y\n")


def request(method: str = "GET", path: str = "/bucket/key", query: str = "", **headers: str) -> SwiftRequest:
    return SwiftRequest(method, path, HeaderMap({"Host": HOST, **headers}), query)


class SignedByTests(SynchronousTestCase):
    """Reading the signature off a request, with the clock at the S3 examples' time."""

    def signed(self, req: SwiftRequest, now: float = MAY_24_2013, location: str = "us-east-1"):
        return signed_by(req, now=now, location=location, max_skew=900)

    def error(self, req: SwiftRequest, **kw) -> S3Error:
        try:
            self.signed(req, **kw)
        except S3Error as err:
            return err
        self.fail("no S3Error")

    def v4_header(self, **headers: str) -> SwiftRequest:
        headers = {"x-amz-content-sha256": sigv4.EMPTY_SHA256, "x-amz-date": "20130524T000000Z",
                   "Range": "bytes=0-9", **headers}
        headers.setdefault("Authorization",
                           "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                           "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                           "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        return request("GET", "/test.txt", **headers)

    def test_not_s3(self) -> None:
        self.assertIsNone(self.signed(request()))
        self.assertIsNone(self.signed(request(query="X-Amz-Foo=1")))
        self.assertIsNone(self.signed(request(Authorization="Bearer x")))

    def test_v4_header_checks_with_the_right_secret_only(self) -> None:
        signed = self.signed(self.v4_header())
        self.assertEqual((signed.access_key, signed.version, signed.payload_sha256),
                         ("AKIAIOSFODNN7EXAMPLE", 4, sigv4.EMPTY_SHA256))
        self.assertTrue(signed.check(SECRET))
        self.assertFalse(signed.check(SECRET + "x"))
        self.assertFalse(self.signed(self.v4_header(Range="bytes=0-10")).check(SECRET))

    def test_v4_header_skew_region_and_payload(self) -> None:
        self.assertEqual(self.error(self.v4_header(), now=MAY_24_2013 + 901).code, "RequestTimeTooSkewed")
        self.assertEqual(self.error(self.v4_header(), now=MAY_24_2013 - 901).code, "RequestTimeTooSkewed")
        self.assertTrue(self.signed(self.v4_header(), now=MAY_24_2013 + 899).check(SECRET))
        err = self.error(self.v4_header(), location="eu-west-1")
        self.assertEqual((err.code, err.status, err.fields["Region"]), ("AuthorizationHeaderMalformed", 400,
                                                                         "eu-west-1"))
        self.assertEqual(self.error(self.v4_header(**{"x-amz-date": "yesterday"})).code, "AccessDenied")
        self.assertEqual(self.error(self.v4_header(**{"x-amz-content-sha256": "nothex"})).code, "InvalidArgument")
        err = self.error(self.v4_header(**{"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}))
        self.assertEqual((err.code, err.status), ("NotImplemented", 501))
        streaming = self.signed(self.v4_header(**{"x-amz-content-sha256": sigv4.STREAMING_PAYLOAD}))
        self.assertEqual((streaming.payload_sha256, streaming.streaming[0]), (None, "20130524T000000Z"))
        self.assertIsNone(self.signed(self.v4_header(**{"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})).payload_sha256)
        req = self.v4_header()
        del req.headers["x-amz-content-sha256"]
        self.assertEqual(self.error(req).code, "InvalidRequest")
        self.assertEqual(self.error(self.v4_header(Authorization="AWS4-HMAC-SHA256 Credential=x")).code,
                         "AuthorizationHeaderMalformed")

    def presigned(self, expires: str = "86400", **extra: str) -> SwiftRequest:
        params = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                  "X-Amz-Credential": "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request",
                  "X-Amz-Date": "20130524T000000Z", "X-Amz-Expires": expires, "X-Amz-SignedHeaders": "host",
                  "X-Amz-Signature": "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404", **extra}
        return request("GET", "/test.txt", "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items()))

    def test_v4_query(self) -> None:
        signed = self.signed(self.presigned())
        self.assertTrue(signed.check(SECRET))
        self.assertIsNone(signed.payload_sha256)
        self.assertTrue(self.signed(self.presigned(), now=MAY_24_2013 + 86400).check(SECRET))
        err = self.error(self.presigned(), now=MAY_24_2013 + 86401)
        self.assertEqual((err.code, err.message), ("AccessDenied", "Request has expired"))
        self.assertEqual(self.error(self.presigned("604801")).code, "AuthorizationQueryParametersError")
        self.assertEqual(self.error(self.presigned("soon")).code, "AuthorizationQueryParametersError")
        self.assertEqual(self.error(self.presigned(), now=MAY_24_2013 - 1000).message, "Request is not valid yet")
        self.assertEqual(self.error(self.presigned(**{"X-Amz-Algorithm": "AWS4-HMAC-SHA1"})).code,
                         "AuthorizationQueryParametersError")
        self.assertFalse(self.signed(self.presigned(**{"X-Amz-Expires": "86400", "extra": "1"})).check(SECRET))

    def test_v2_header_and_query(self) -> None:
        headers = {"Date": "Tue, 27 Mar 2007 19:36:42 +0000",
                   "Authorization": "AWS AKIAIOSFODNN7EXAMPLE:bWq2s1WEIj+Ydj0vQ697zp+IXMU="}
        req = SwiftRequest("GET", "/johnsmith/photos/puppy.jpg", HeaderMap(headers))
        signed = signed_by(req, now=1175024202.0, location="us-east-1", max_skew=900)
        self.assertEqual((signed.access_key, signed.version), ("AKIAIOSFODNN7EXAMPLE", 2))
        self.assertTrue(signed.check(SECRET))
        self.assertFalse(signed.check("other"))
        with self.assertRaises(S3Error) as caught:
            signed_by(req, now=1175024202.0 + 1000, location="us-east-1", max_skew=900)
        self.assertEqual(caught.exception.code, "RequestTimeTooSkewed")
        # an access key holding ':' (tempauth's account:user) splits at the last colon
        req.headers["Authorization"] = "AWS test:tester:sig"
        self.assertEqual(signed_by(req, now=1175024202.0, location="us-east-1", max_skew=900).access_key,
                         "test:tester")
        to_sign = sigv2.string_to_sign("GET", HeaderMap(), "/b/k", "", "1175024202")
        query = f"AWSAccessKeyId=test%3Atester&Expires=1175024202&Signature={quote(sigv2.signature('k', to_sign))}"
        signed = signed_by(SwiftRequest("GET", "/b/k", HeaderMap(), query), now=1175024000.0, location="us-east-1",
                           max_skew=900)
        self.assertTrue(signed.check("k"))
        with self.assertRaises(S3Error) as caught:
            signed_by(SwiftRequest("GET", "/b/k", HeaderMap(), query), now=1175024203.0, location="us-east-1",
                      max_skew=900)
        self.assertEqual(caught.exception.message, "Request has expired")
