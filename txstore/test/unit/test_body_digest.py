"""The proxy's md5 and CRC-32 of a replicated body, and a node's reading of them."""

from __future__ import annotations

import hashlib
import zlib

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.body_digest import BodyDigest, sent_digest
from txstore.storage.checksum import SentMd5


class BodyDigestTests(SynchronousTestCase):
    def test_trailers_are_the_md5_and_crc32_of_the_chunks_in_order(self) -> None:
        digest = BodyDigest()
        for chunk in (b"one ", b"", b"two " * 5000, b"three"):
            digest.update(chunk)
        body = b"one " + b"two " * 5000 + b"three"
        self.assertEqual(digest.trailers(), {"X-Backend-Body-Md5": hashlib.md5(body).hexdigest(),
                                             "X-Backend-Body-Crc32": f"{zlib.crc32(body):08x}"})
        self.assertEqual(BodyDigest().trailers()["X-Backend-Body-Crc32"], "00000000")

    def test_sent_digest_reads_the_parsed_trailers(self) -> None:
        md5 = "ABCDEF0123456789abcdef0123456789"
        self.assertEqual(sent_digest({"x-backend-body-md5": md5, "x-backend-body-crc32": " 0A0b0C0d "}),
                         (md5.lower(), "0a0b0c0d"))
        for fields in ({}, {"x-backend-body-md5": md5}, {"x-backend-body-crc32": "0a0b0c0d"},
                       {"x-backend-body-md5": md5[:-1], "x-backend-body-crc32": "0a0b0c0d"},
                       {"x-backend-body-md5": md5, "x-backend-body-crc32": "0a0b0c0g"},
                       {"x-backend-body-md5": md5, "x-backend-body-crc32": "0a0b0c0d0"}):
            self.assertIsNone(sent_digest(fields), fields)


class SentMd5Tests(SynchronousTestCase):
    def test_the_md5_is_taken_only_when_the_crc32_agrees(self) -> None:
        body = b"what arrived" * 100
        checksum = SentMd5()
        checksum.update(body[:7])
        checksum.update(memoryview(body)[7:])
        self.assertRaises(ValueError, checksum.value)  # nothing to say before the proxy's word
        self.assertFalse(checksum.confirm("a" * 32, f"{zlib.crc32(body) ^ 0x80:08x}"))
        self.assertRaises(ValueError, checksum.value)
        self.assertRaises(ValueError, checksum.body_checksum)
        self.assertTrue(checksum.confirm("B" * 32, f"{zlib.crc32(body):08X}"))
        self.assertEqual(checksum.value(), "b" * 32)
        self.assertEqual(checksum.body_checksum(), f"crc32:{zlib.crc32(body):08x}")
