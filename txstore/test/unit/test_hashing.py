"""Tests for txstore.common.hashing: the partition of a name must never change."""

import hashlib

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.hashing import PathHasher, hash_path, partition_for_hash


class PartitionTests(SynchronousTestCase):
    def test_worked_example(self) -> None:
        """The issue's worked example: this digest at part power 16 is partition 12440."""
        self.assertEqual(partition_for_hash("3098f203544d22b361d6ee1cfc7406e1", 16), 12440)
        self.assertEqual(partition_for_hash(bytes.fromhex("3098f203544d22b361d6ee1cfc7406e1"), 16), 12440)

    def test_extreme_powers(self) -> None:
        digest = "ffffffff" + "0" * 24
        self.assertEqual(partition_for_hash(digest, 0), 0)
        self.assertEqual(partition_for_hash(digest, 32), 2**32 - 1)
        self.assertEqual(partition_for_hash(digest, 1), 1)

    def test_bad_power(self) -> None:
        self.assertRaises(ValueError, partition_for_hash, "00" * 16, 33)
        self.assertRaises(ValueError, partition_for_hash, "00" * 16, -1)

    @given(st.binary(min_size=16, max_size=16), st.integers(0, 32))
    def test_partition_in_range_and_top_bits(self, digest: bytes, power: int) -> None:
        part = partition_for_hash(digest, power)
        self.assertTrue(0 <= part < 2**power)
        self.assertEqual(part, int.from_bytes(digest[:4], "big") >> (32 - power))


class HashPathTests(SynchronousTestCase):
    def test_md5_of_salted_path(self) -> None:
        expected = hashlib.md5(b"pre/AUTH_test/c/o/bjsuf").hexdigest()
        self.assertEqual(hash_path("AUTH_test", "c", "o/bj", prefix=b"pre", suffix=b"suf"), expected)

    def test_levels(self) -> None:
        self.assertEqual(hash_path("a"), hashlib.md5(b"/a").hexdigest())
        self.assertEqual(hash_path("a", "c"), hashlib.md5(b"/a/c").hexdigest())
        self.assertEqual(hash_path("a", "c", raw_digest=True), hashlib.md5(b"/a/c").digest())

    def test_unicode_names_are_utf8(self) -> None:
        self.assertEqual(hash_path("a", "c", "\u00e9"), hashlib.md5("/a/c/\u00e9".encode()).hexdigest())
        self.assertEqual(hash_path("a", "c", "\u00e9"), hash_path(b"a", b"c", "\u00e9".encode()))

    def test_object_needs_container(self) -> None:
        self.assertRaises(ValueError, hash_path, "a", None, "o")

    def test_secret_changes_everything(self) -> None:
        self.assertNotEqual(hash_path("a", "c", "o", suffix=b"x"), hash_path("a", "c", "o", suffix=b"y"))

    def test_hasher_binds_secret(self) -> None:
        hasher = PathHasher(b"p", b"s")
        self.assertEqual(hasher.hash_path("a", "c", "o"), hash_path("a", "c", "o", prefix=b"p", suffix=b"s"))
        digest = hash_path("a", "c", "o", prefix=b"p", suffix=b"s")
        self.assertEqual(hasher.partition(10, "a", "c", "o"), partition_for_hash(digest, 10))
