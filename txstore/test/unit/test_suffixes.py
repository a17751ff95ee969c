"""Tests for txstore.storage.suffixes: no change of an object goes unrecorded."""

from __future__ import annotations

import threading

from twisted.trial.unittest import SynchronousTestCase

from txstore.storage import suffixes
from txstore.test.support import temp_dir


class InvalidateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.part = temp_dir(self) / "objects" / "7"
        self.part.mkdir(parents=True)

    def test_appends_one_line_per_change(self) -> None:
        for suffix in ("abc", "00f", "abc"):
            self.assertTrue(suffixes.invalidate_suffix(self.part, suffix))
        self.assertEqual((self.part / "hashes.invalid").read_text(), "abc\n00f\nabc\n")
        self.assertEqual(suffixes.read_invalid_suffixes(self.part), {"abc", "00f"})

    def test_missing_partition_records_nothing(self) -> None:
        missing = self.part.parent / "8"
        self.assertFalse(suffixes.invalidate_suffix(missing, "abc"))
        self.assertFalse(missing.exists())
        self.assertEqual(suffixes.read_invalid_suffixes(missing), set())
        self.assertEqual(suffixes.consume_invalid_suffixes(missing), set())

    def test_only_suffixes(self) -> None:
        for bad in ("ABC", "ab", "abcd", "../", "a/b", "", 123):
            self.assertRaises(ValueError, suffixes.invalidate_suffix, self.part, bad)
        self.assertFalse((self.part / "hashes.invalid").exists())

    def test_consume_empties_in_place(self) -> None:
        suffixes.invalidate_suffix(self.part, "001")
        path = self.part / "hashes.invalid"
        inode = path.stat().st_ino
        self.assertEqual(suffixes.consume_invalid_suffixes(self.part), {"001"})
        self.assertEqual(path.read_bytes(), b"")
        self.assertEqual(path.stat().st_ino, inode)
        suffixes.invalidate_suffix(self.part, "002")
        self.assertEqual(suffixes.consume_invalid_suffixes(self.part), {"002"})

    def test_torn_line_ignored(self) -> None:
        (self.part / "hashes.invalid").write_bytes(b"abc\nzz\n\xff\x00\nde")
        self.assertEqual(suffixes.read_invalid_suffixes(self.part), {"abc"})

    def test_concurrent_appends_and_consumes_lose_nothing(self) -> None:
        seen: set[str] = set()
        expected = {f"{i:03x}" for i in range(400)}
        done = threading.Event()

        def writer(start: int) -> None:
            for i in range(start, 400, 4):
                suffixes.invalidate_suffix(self.part, f"{i:03x}")

        def consumer() -> None:
            while not done.is_set():
                seen.update(suffixes.consume_invalid_suffixes(self.part))

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        reader = threading.Thread(target=consumer)
        reader.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        reader.join()
        seen.update(suffixes.consume_invalid_suffixes(self.part))
        self.assertEqual(seen, expected)


