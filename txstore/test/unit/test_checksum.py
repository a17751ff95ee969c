"""Tests for txstore.storage.checksum: which checksum a stored body is checked with."""

import hashlib
import zlib

from twisted.trial.unittest import SynchronousTestCase

from txstore.storage import checksum


class ChecksumTests(SynchronousTestCase):
    def test_a_replicated_body_is_summed_with_md5_an_archive_with_crc32(self) -> None:
        for frag_index, expected in ((None, hashlib.md5(b"hello world").hexdigest()),
                                     (0, f"crc32:{zlib.crc32(b'hello world'):08x}"),
                                     (5, f"crc32:{zlib.crc32(b'hello world'):08x}")):
            summed = checksum.for_body(frag_index)
            summed.update(b"hello ")
            summed.update(memoryview(b"world"))
            self.assertEqual(summed.value(), expected)

    def test_the_stored_form_says_which_checksum_checks_it(self) -> None:
        self.assertIsInstance(checksum.like(hashlib.md5(b"x").hexdigest()), checksum.Md5)
        self.assertIsInstance(checksum.like('"' + hashlib.md5(b"x").hexdigest().upper() + '"'), checksum.Md5)
        self.assertIsInstance(checksum.like("crc32:0000abcd"), checksum.Crc32)
        self.assertIsInstance(checksum.like('"CRC32:0000ABCD"'), checksum.Crc32)
        self.assertIsInstance(checksum.like(""), checksum.Md5)  # (nothing stored: md5, as before)

    def test_crc32_pads_to_eight_digits(self) -> None:
        summed = checksum.Crc32()
        self.assertEqual(summed.value(), "crc32:00000000")
        summed.update(b"a")
        self.assertEqual(summed.value(), f"crc32:{zlib.crc32(b'a'):08x}")
        self.assertEqual(len(summed.value()), len("crc32:") + 8)

    def test_normal_form(self) -> None:
        self.assertEqual(checksum.normal('"ABC"'), "abc")
        self.assertEqual(checksum.normal("crc32:00FF00FF"), "crc32:00ff00ff")
