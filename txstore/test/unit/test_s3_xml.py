"""S3's XML: error documents, built documents, and the refusing parser (XXE, entity bombs)."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

from twisted.trial.unittest import SynchronousTestCase

from txstore.s3 import xmlio as xml
from txstore.s3.errors import S3Error
from txstore.s3.listing import iso_from_http, iso_from_swift, quoted_etag

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<Delete><Object><Key>&xxe;</Key></Object></Delete>"""
BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Delete><Object><Key>&lol2;</Key></Object></Delete>"""


class ParseTests(SynchronousTestCase):
    def test_plain_documents_with_or_without_namespace(self) -> None:
        for body in (b"<Delete><Quiet>true</Quiet><Object><Key>a&amp;b</Key></Object></Delete>",
                     b'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                     b"<Quiet>true</Quiet><Object><Key>a&amp;b</Key></Object></Delete>"):
            root = xml.parse(body)
            self.assertEqual(root.tag, "Delete")
            self.assertEqual(xml.text_of(root, "Quiet"), "true")
            self.assertEqual([xml.text_of(o, "Key") for o in root.findall("Object")], ["a&b"])

    def test_refuses_doctypes_entities_and_processing_instructions(self) -> None:
        for body in (XXE, BOMB, b'<!DOCTYPE a><a/>', b"<a><?php echo 1; ?></a>", b"<a>&undefined;</a>",
                     b"<a>", b"", b"\xff\xfe"):
            self.assertRaises(xml.UnsafeXML, xml.parse, body)

    def test_text_of(self) -> None:
        root = xml.parse(b"<a><b/><c>x</c></a>")
        self.assertEqual((xml.text_of(root, "b"), xml.text_of(root, "c"), xml.text_of(root, "d")), ("", "x", None))


class BuildTests(SynchronousTestCase):
    def test_error_document(self) -> None:
        body = S3Error("NoSuchKey", Key="a<b").body("/bucket/a<b", "tx123")
        self.assertTrue(body.startswith(b"<?xml version='1.0' encoding='UTF-8'?>"))
        root = fromstring(body)
        self.assertEqual([(e.tag, e.text) for e in root],
                         [("Code", "NoSuchKey"), ("Message", "The specified key does not exist."), ("Key", "a<b"),
                          ("Resource", "/bucket/a<b"), ("RequestId", "tx123")])
        self.assertEqual(S3Error("NoSuchKey").status, 404)
        self.assertEqual(S3Error("BucketNotEmpty").status, 409)
        self.assertEqual(S3Error("NotImplemented").status, 501)
        self.assertEqual(S3Error("XAmzContentSHA256Mismatch").status, 400)

    def test_results_carry_the_namespace_and_escape_text(self) -> None:
        root = xml.Element("ListBucketResult")
        xml.sub(root, "Name", "b")
        xml.sub(root, "Key", "<&>\"")
        xml.sub(root, "MaxKeys", 5)
        parsed = fromstring(xml.dumps(root))
        self.assertEqual(parsed.tag, "{http://s3.amazonaws.com/doc/2006-03-01/}ListBucketResult")
        self.assertEqual([e.text for e in parsed], ["b", "<&>\"", "5"])

    def test_dates_and_etags(self) -> None:
        self.assertEqual(iso_from_swift("2024-05-01T12:34:56.123456"), "2024-05-01T12:34:57.000Z")
        self.assertEqual(iso_from_swift("2024-05-01T12:34:56"), "2024-05-01T12:34:56.000Z")
        self.assertEqual(iso_from_http("Wed, 01 May 2024 12:34:56 GMT"), "2024-05-01T12:34:56.000Z")
        self.assertEqual((quoted_etag("abc"), quoted_etag('"abc-2"')), ('"abc"', '"abc-2"'))
