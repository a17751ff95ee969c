"""Which bucket, key and operation an S3 request names (`txstore.s3.routing`)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txstore.s3.errors import S3Error
from txstore.s3.routing import bucket_in_host, locate, operation, valid_bucket


class RoutingTests(SynchronousTestCase):
    def code(self, *args) -> tuple[int, str]:
        with self.assertRaises(S3Error) as caught:
            operation(*args)
        return caught.exception.status, caught.exception.code

    def test_bucket_names(self) -> None:
        for name in ("abc", "a-b.c", "a" * 63, "0bucket"):
            self.assertTrue(valid_bucket(name), name)
        for name in ("ab", "a" * 64, "Abc", "a_b", "-ab", "ab-", "a..b", "a.-b", "10.0.0.1", ""):
            self.assertFalse(valid_bucket(name), name)
        self.assertTrue(valid_bucket("Swift_Name", dns_compliant=False))

    def test_virtual_hosted_buckets(self) -> None:
        domains = ("s3.example.com",)
        self.assertEqual(bucket_in_host("photos.s3.example.com", domains), "photos")
        self.assertEqual(bucket_in_host("Photos.S3.Example.com:8080", domains), "photos")
        self.assertIsNone(bucket_in_host("s3.example.com", domains))
        self.assertIsNone(bucket_in_host("127.0.0.1:8080", domains))

    def test_bucket_and_key_as_sent(self) -> None:
        self.assertEqual(locate("/", None), (None, None))
        self.assertEqual(locate("/b", None), ("b", None))
        self.assertEqual(locate("/b/", None), ("b", None))
        self.assertEqual(locate("/b/a//c/", None), ("b", "a//c/"))
        self.assertEqual(locate("/b/k%C3%A9%2Fx", None), ("b", "k\u00e9/x"))
        self.assertEqual(locate("/a//c", "b"), ("b", "a//c"))
        for bad in ("/b/%FF", "/b/a%00b"):
            with self.assertRaises(S3Error) as caught:
                locate(bad, None)
            self.assertEqual(caught.exception.code, "InvalidURI")

    def test_operations(self) -> None:
        self.assertEqual(operation("GET", None, None, {}), "service.list")
        self.assertEqual(operation("GET", "b", None, {}), "bucket.list")
        self.assertEqual(operation("GET", "b", None, {"list-type": "2"}), "bucket.list_v2")
        self.assertEqual(operation("GET", "b", None, {"uploads": ""}), "multipart.list_uploads")
        self.assertEqual(operation("GET", "b", None, {"versions": ""}), "bucket.versions")
        self.assertEqual(operation("PUT", "b", None, {"versioning": ""}), "bucket.put_versioning")
        self.assertEqual(operation("POST", "b", None, {"delete": ""}), "bucket.multi_delete")
        self.assertEqual(operation("POST", "b", "k", {"uploads": ""}), "multipart.create")
        self.assertEqual(operation("PUT", "b", "k", {"uploadId": "u1", "partNumber": "1"}), "multipart.upload_part")
        self.assertEqual(operation("POST", "b", "k", {"uploadId": "u1"}), "multipart.complete")
        self.assertEqual(operation("DELETE", "b", "k", {"uploadId": "u1"}), "multipart.abort")
        self.assertEqual(operation("GET", "b", "k", {"partNumber": "2"}), "object.get")
        self.assertEqual(operation("HEAD", "b", "k", {}), "object.get")

    def test_refusals(self) -> None:
        self.assertEqual(self.code("PUT", None, None, {}), (405, "MethodNotAllowed"))
        self.assertEqual(self.code("GET", "b", None, {"list-type": "3"}), (400, "InvalidArgument"))
        for params in ({"lifecycle": ""}, {"policy": ""}, {"cors": ""}, {"tagging": ""}, {"website": ""}):
            self.assertEqual(self.code("GET", "b", None, params), (501, "NotImplemented"))
        self.assertEqual(self.code("PUT", "b", "k", {"tagging": ""}), (501, "NotImplemented"))
        self.assertEqual(self.code("PUT", "b", "k", {"partNumber": "1"}), (501, "NotImplemented"))
        self.assertEqual(self.code("PUT", "b", None, {"object-lock": ""}), (501, "NotImplemented"))
        self.assertEqual(self.code("PATCH", "b", "k", {}), (405, "MethodNotAllowed"))
        self.assertEqual(self.code("GET", "b", "k", {"uploads": ""}), (405, "MethodNotAllowed"))
