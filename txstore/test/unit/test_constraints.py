"""Tests for txstore.common.constraints: Swift's metadata limits, exactly at and past them."""

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.constraints import check_metadata


class CheckMetadataTests(SynchronousTestCase):
    def test_at_the_limits_is_fine(self) -> None:
        big = [(f"X-Object-Meta-{i}" + "n" * 127, "v" * 256) for i in range(10)]  # 10 x 384 = 3840
        self.assertIsNone(check_metadata(big + [("X-Object-Meta-x", "y" * 255)], "object"))  # 4096
        self.assertEqual(
            check_metadata(big + [("X-Object-Meta-x", "y" * 256)], "object"), "Total metadata too large; max 4096"
        )
        ninety = [(f"X-Object-Meta-{i:02d}", "v") for i in range(90)]
        self.assertIsNone(check_metadata(ninety, "object"))

    def test_each_limit(self) -> None:
        self.assertEqual(check_metadata([("X-Object-Meta-", "v")], "object"), "Metadata name cannot be empty")
        self.assertIn("Metadata name too long", check_metadata([("X-Object-Meta-" + "n" * 129, "v")], "object"))
        self.assertIn("Metadata value longer than 256", check_metadata([("X-Object-Meta-n", "v" * 257)], "object"))
        many = [(f"X-Object-Meta-{i}", "v") for i in range(91)]
        self.assertEqual(check_metadata(many, "object"), "Too many metadata items; max 90")

    def test_counts_utf8_bytes(self) -> None:
        self.assertIsNotNone(check_metadata([("X-Object-Meta-n", "\u00e9" * 129)], "object"))
        self.assertIsNone(check_metadata([("X-Object-Meta-n", "\u00e9" * 128)], "object"))

    def test_kinds_and_other_headers(self) -> None:
        self.assertIsNone(check_metadata([("X-Object-Meta-n", "v" * 300)], "container"))
        self.assertIsNotNone(check_metadata([("x-container-meta-n", "v" * 300)], "container"))
        self.assertIsNone(check_metadata([("X-Remove-Container-Meta-n", "v" * 300), ("Content-Type", "x" * 999)], "container"))

    def test_metadata_must_be_valid_utf8(self) -> None:
        """
        As Swift: for accounts and containers, bytes that are not UTF-8 (read as surrogates) or
        NUL, in a name or a value, are a 400; an object's metadata is any bytes.
        """
        truncated = "\u00e9".encode()[:1].decode("utf-8", "surrogateescape")  # a value cut mid-character
        for kind in ("account", "container"):
            prefix = f"X-{kind.title()}-Meta-"
            for name, value in [(prefix + "n", "ok" + truncated), (prefix + truncated, "v"), (prefix + "n", "a\x00b")]:
                self.assertEqual(check_metadata([(name, value)], kind), "Metadata must be valid UTF-8")
            self.assertIsNone(check_metadata([(prefix + "n", "\u00e9\u20ac\U0001f600")], kind))
            self.assertIsNone(check_metadata([("Content-Type", truncated)], kind))  # not metadata
        self.assertIsNone(check_metadata([("X-Object-Meta-n", "ok" + truncated)], "object"))
