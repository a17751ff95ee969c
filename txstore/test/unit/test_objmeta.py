"""Tests for txstore.storage.objmeta: metadata footers store what the API allows, and no less."""

from __future__ import annotations

import hashlib
import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txstore.storage import objmeta
from txstore.storage.objmeta import FooterError, encode_footer, merge_metadata, read_footer


def system_metadata() -> dict[str, str]:
    return {
        "name": "/AUTH_test/photos/2024/ünïcode ☃/😀.jpg",
        "X-Timestamp": "1700000000.12345_00000000000000ff",
        "Content-Length": "1048576",
        "Content-Type": "image/jpeg; charset=ünï",
        "ETag": "d41d8cd98f00b204e9800998ecf8427e",
        "X-Delete-At": "1800000000",
        "Content-Disposition": "attachment; filename*=UTF-8''%E2%98%83.jpg",
        "Content-Encoding": "gzip",
        "X-Object-Manifest": "segments/prefix",
        "X-Object-Sysmeta-Slo-Etag": "abc",
        "X-Object-Transient-Sysmeta-Crypto-Meta": "x" * 200,
    }


def at_limits(kind: str) -> dict[str, str]:
    """User metadata right at Swift's limits, several ways (names ≤ 128, values ≤ 256, ≤ 90)."""
    if kind == "many":  # 90 items whose names and values (prefix left out) total 4096 bytes
        items = {f"X-Object-Meta-K{i:02d}": "v" * 42 for i in range(90)}
        items["X-Object-Meta-K00"] += "v" * (4096 - 90 * 45)
        return items
    if kind == "long-values":  # 15 values of 256 bytes, the rest of the 4096 in a 16th
        items = {f"X-Object-Meta-{chr(0x41 + i)}": chr(0x61 + i) * 256 for i in range(15)}
        items["X-Object-Meta-Z"] = "z" * (4096 - 15 * 257 - 1)
        return items
    if kind == "unicode":  # names of 128 characters, values of 256 multi-byte characters
        return {
            "X-Object-Meta-" + "ñ" * 114: "☃" * 256,
            "X-Object-Meta-" + "k" * 114: "😀" * 256,
            "X-Object-Meta-Empty": "",
            "X-Object-Meta-Surrogate": "caf\udce9",  # a byte decoded with surrogateescape
        }
    # beyond Swift's limits: 90 names of 128 and values of 256, all non-ASCII (~100 KiB of JSON)
    return {"X-Object-Meta-" + f"{i:03d}" + "é" * 111: "日本語" * 85 + "x" for i in range(90)}


class FileTestMixin:
    def file_with(self, body: bytes, footer: bytes) -> int:
        handle, path = tempfile.mkstemp(dir=self.mktemp_dir())
        os.write(handle, body + footer)
        self.addCleanup(os.close, handle)
        return handle

    def mktemp_dir(self) -> str:
        path = self.mktemp()
        os.makedirs(path)
        return path


class FooterLayoutTests(FileTestMixin, SynchronousTestCase):
    def test_trailer_layout(self) -> None:
        """JSON, then magic, version, reserved, JSON length and md5 of the JSON, big-endian."""
        footer = encode_footer({"b": "2", "a": "1"})
        raw = b'{"a":"1","b":"2"}'
        self.assertEqual(footer[: len(raw)], raw)
        trailer = footer[len(raw) :]
        self.assertEqual(len(trailer), 32)
        self.assertEqual(objmeta.TRAILER_SIZE, 32)
        self.assertEqual(trailer[:8], b"TXSMETA\x00")
        self.assertEqual(trailer[8:10], b"\x00\x01")
        self.assertEqual(trailer[10:12], b"\x00\x00")
        self.assertEqual(int.from_bytes(trailer[12:16], "big"), len(raw))
        self.assertEqual(trailer[16:], hashlib.md5(raw).digest())

    def test_json_is_ascii(self) -> None:
        footer = encode_footer({"X-Object-Meta-Ü": "☃😀"})
        footer[: -objmeta.TRAILER_SIZE].decode("ascii")

    def test_round_trip_with_body(self) -> None:
        body = os.urandom(10000)
        metadata = {**system_metadata(), "Content-Length": str(len(body))}
        fd = self.file_with(body, encode_footer(metadata))
        footer = read_footer(fd)
        self.assertEqual(footer.metadata, metadata)
        self.assertEqual(footer.body_length, len(body))
        self.assertEqual(footer.body_length + footer.footer_length, os.fstat(fd).st_size)

    def test_footer_only(self) -> None:
        fd = self.file_with(b"", encode_footer({"X-Timestamp": "0000000001.00000"}))
        footer = read_footer(fd)
        self.assertEqual(footer.body_length, 0)
        self.assertEqual(footer.metadata, {"X-Timestamp": "0000000001.00000"})

    def test_metadata_at_swift_limits(self) -> None:
        for kind in ("many", "long-values", "unicode", "beyond"):
            metadata = {**system_metadata(), **at_limits(kind)}
            fd = self.file_with(b"body", encode_footer(metadata))
            footer = read_footer(fd)
            self.assertEqual(footer.metadata, metadata, kind)
            self.assertEqual(footer.body_length, 4, kind)

    def test_big_footer_needs_a_second_read(self) -> None:
        metadata = at_limits("beyond")
        footer = encode_footer(metadata)
        self.assertGreater(len(footer), 8192)
        fd = self.file_with(b"x" * 3, footer)
        self.assertEqual(read_footer(fd).metadata, metadata)

    def test_only_str(self) -> None:
        self.assertRaises(TypeError, encode_footer, {"Content-Length": 5})
        self.assertRaises(TypeError, encode_footer, {b"k": "v"})
        self.assertRaises(ValueError, encode_footer, {"": "v"})

    def test_too_large(self) -> None:
        self.assertRaises(ValueError, encode_footer, {"k": "v" * objmeta.MAX_JSON_SIZE})

    @settings(max_examples=50, deadline=None)
    @given(st.dictionaries(st.text(min_size=1, max_size=40), st.text(max_size=60), max_size=20),
           st.binary(max_size=300))
    def test_any_text_round_trips(self, metadata: dict[str, str], body: bytes) -> None:
        fd = self.file_with(body, encode_footer(metadata))
        footer = read_footer(fd)
        self.assertEqual(footer.metadata, metadata)
        self.assertEqual(footer.body_length, len(body))


class DamagedFooterTests(FileTestMixin, SynchronousTestCase):
    def good(self) -> bytes:
        return b"body" + encode_footer({"a": "1", "b": "☃"})

    def assert_damaged(self, raw: bytes, message: str) -> None:
        fd = self.file_with(raw, b"")
        error = self.assertRaises(FooterError, read_footer, fd)
        self.assertIn(message, str(error))

    def test_every_flipped_byte_of_the_footer_is_noticed(self) -> None:
        raw = self.good()
        for position in range(4, len(raw)):
            damaged = bytearray(raw)
            damaged[position] ^= 0x01
            if position in range(len(raw) - 22, len(raw) - 20):  # the reserved field
                continue
            fd = self.file_with(bytes(damaged), b"")
            self.assertRaises(FooterError, read_footer, fd)

    def test_reasons(self) -> None:
        raw = self.good()
        self.assert_damaged(b"", "too short")
        self.assert_damaged(raw[-31:], "too short")
        self.assert_damaged(raw[:-1], "bad magic")
        self.assert_damaged(raw[:-24] + b"\x00\x02" + raw[-22:], "version 2")
        too_long = raw[:-20] + (10**6).to_bytes(4, "big") + raw[-16:]
        self.assert_damaged(too_long, "exceeds the file")
        huge = raw[:-20] + (2**31).to_bytes(4, "big") + raw[-16:]
        self.assert_damaged(huge, "out of range")
        corrupted = raw[:6] + b"X" + raw[7:]
        self.assert_damaged(corrupted, "checksum")

    def test_valid_checksum_but_not_our_json(self) -> None:
        for blob, message in [(b"[1, 2]", "not a JSON object"), (b'{"a": 1}', "must be str"),
                              (b"{nope", "not JSON")]:
            trailer = objmeta.TRAILER.pack(objmeta.MAGIC, 1, 0, len(blob), hashlib.md5(blob).digest())
            self.assert_damaged(blob + trailer, message)


class MergeTests(SynchronousTestCase):
    data = {
        "name": "/a/c/o",
        "X-Timestamp": "0000000001.00000",
        "Content-Length": "5",
        "ETag": "etag",
        "Content-Type": "text/plain",
        "X-Object-Meta-Old": "gone after a POST",
        "X-Delete-At": "1800000000",
        "X-Object-Sysmeta-Kept": "sys",
        "Content-Encoding": "gzip",
        "X-Body-Checksum": "crc32:0a0b0c0d",
    }

    def test_post_replaces_mutable_metadata(self) -> None:
        meta = {"name": "/a/c/o", "X-Timestamp": "0000000002.00000", "X-Object-Meta-New": "1"}
        self.assertEqual(
            merge_metadata(self.data, meta),
            {
                "name": "/a/c/o",
                "X-Timestamp": "0000000002.00000",
                "Content-Length": "5",
                "ETag": "etag",
                "Content-Type": "text/plain",
                "X-Object-Sysmeta-Kept": "sys",
                "X-Body-Checksum": "crc32:0a0b0c0d",
                "X-Object-Meta-New": "1",
            },
        )

    def test_content_type_replaced_when_posted(self) -> None:
        merged = merge_metadata(self.data, {"content-type": "image/png", "X-Delete-At": "1900000000"})
        self.assertEqual(merged["content-type"], "image/png")
        self.assertNotIn("Content-Type", merged)
        self.assertEqual(merged["X-Delete-At"], "1900000000")

    def test_body_keys_never_come_from_a_post(self) -> None:
        meta = {"ETag": "forged", "content-length": "999", "X-Object-Sysmeta-Kept": "forged", "X-Body-Checksum": "forged",
                "X-Object-Sysmeta-New": "forged", "Name": "/x/y/z", "X-Static-Large-Object": "forged"}
        merged = merge_metadata(self.data, meta)
        self.assertEqual(merged["ETag"], "etag")
        self.assertEqual(merged["X-Body-Checksum"], "crc32:0a0b0c0d")
        self.assertEqual(merged["Content-Length"], "5")
        self.assertEqual(merged["X-Object-Sysmeta-Kept"], "sys")
        self.assertEqual(merged["name"], "/a/c/o")
        for key in merged:
            self.assertNotEqual(merged[key], "forged")
        self.assertNotIn("Name", merged)

    def test_data_bound(self) -> None:
        self.assertTrue(objmeta.is_data_bound("ETAG"))
        self.assertTrue(objmeta.is_data_bound("x-object-sysmeta-ec-frag-index"))
        self.assertTrue(objmeta.is_data_bound("X-Static-Large-Object"))  # a POST cannot unmake a manifest
        self.assertFalse(objmeta.is_data_bound("X-Object-Transient-Sysmeta-Crypto"))
        self.assertFalse(objmeta.is_data_bound("X-Object-Meta-Etag"))
        self.assertFalse(objmeta.is_data_bound("Content-Type"))
