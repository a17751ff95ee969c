"""Tests for txstore.common.http_ranges."""

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.http_ranges import (
    Unsatisfiable,
    multipart_length,
    multipart_parts,
    multipart_trailer,
    parse_range,
)


class ParseRangeTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parse_range("bytes=0-4", 10), [(0, 4)])
        self.assertEqual(parse_range("bytes=5-", 10), [(5, 9)])
        self.assertEqual(parse_range("bytes=-3", 10), [(7, 9)])
        self.assertEqual(parse_range("bytes=-30", 10), [(0, 9)])
        self.assertEqual(parse_range("bytes=8-20", 10), [(8, 9)])
        self.assertEqual(parse_range("bytes=0-0, 2-3 ,-1", 10), [(0, 0), (2, 3), (9, 9)])

    def test_ignored(self) -> None:
        for header in (None, "", "bytes=", "items=0-1", "bytes=a-b", "bytes=3-1", "bytes=-", "bytes=1-2,x"):
            self.assertIsNone(parse_range(header, 10), header)
        self.assertIsNone(parse_range("bytes=" + ",".join(["0-1"] * 101), 10))

    def test_unsatisfiable(self) -> None:
        self.assertRaises(Unsatisfiable, parse_range, "bytes=10-", 10)
        self.assertRaises(Unsatisfiable, parse_range, "bytes=-0", 10)
        self.assertRaises(Unsatisfiable, parse_range, "bytes=0-", 0)
        self.assertEqual(parse_range("bytes=20-30,1-1", 10), [(1, 1)])


class MultipartTests(SynchronousTestCase):
    def test_length_matches_body(self) -> None:
        data = bytes(range(100))
        ranges = [(0, 9), (50, 50), (90, 99)]
        body = b""
        for header, first, last in multipart_parts(ranges, 100, "text/plain", "BOUND"):
            body += header + data[first : last + 1]
        body += multipart_trailer("BOUND")
        self.assertEqual(len(body), multipart_length(ranges, 100, "text/plain", "BOUND"))
        self.assertTrue(body.startswith(b"--BOUND\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-9/100\r\n\r\n"))
        self.assertTrue(body.endswith(b"\r\n--BOUND--\r\n"))
        self.assertIn(b"\r\n--BOUND\r\nContent-Type: text/plain\r\nContent-Range: bytes 50-50/100\r\n\r\n2", body)
