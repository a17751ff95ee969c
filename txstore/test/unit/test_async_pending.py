"""Tests for txstore.storage.async_pending: names and records of owed container updates."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.timestamps import Timestamp
from txstore.storage import async_pending as ap
from txstore.test.support import temp_dir

HASH = "0123456789abcdef0123456789abcdef"


def pending(**changes: object) -> ap.AsyncPending:
    values = dict(
        op="PUT",
        account="AUTH_ü",
        container="c",
        obj="o/☃",
        timestamp=Timestamp.parse("1700000000.00001"),
        headers={"X-Size": "5", "X-Etag": "e", "X-Content-Type": "text/plain"},
        policy_index=2,
    )
    values.update(changes)
    return ap.AsyncPending(**values)


class NameTests(SynchronousTestCase):
    def test_names(self) -> None:
        ts = Timestamp.parse("1700000000.00001_000000000000000a")
        name = ap.pending_name(HASH, ts)
        self.assertEqual(name, HASH + "-1700000000.00001_000000000000000a")
        self.assertEqual(ap.parse_pending_name(name), (HASH, ts))
        for bad in ("x", HASH, HASH + "-1.0", HASH + "-1700000000.00001_0000000000000000",
                    "tmp-abc.tmp", HASH.upper() + "-1700000000.00001"):
            self.assertIsNone(ap.parse_pending_name(bad), bad)

    def test_dirs(self) -> None:
        self.assertEqual(ap.async_dir_name(0), "async_pending")
        self.assertEqual(ap.async_dir_name(3), "async_pending-3")
        self.assertRaises(ValueError, ap.async_dir_name, -1)
        self.assertRaises(ValueError, ap.async_dir_name, True)
        self.assertEqual(ap.policy_of_dir("async_pending"), 0)
        self.assertEqual(ap.policy_of_dir("async_pending-12"), 12)
        for bad in ("async_pending-0", "async_pending-", "async_pending-x", "objects", "tmp"):
            self.assertIsNone(ap.policy_of_dir(bad), bad)


class RecordTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        record = pending()
        raw = ap.encode_pending(record)
        raw.decode("ascii")
        self.assertEqual(ap.decode_pending(raw), record)
        self.assertIn(b'"version": 1', raw)

    def test_validation(self) -> None:
        self.assertRaises(ValueError, pending, op="POST")
        self.assertRaises(ValueError, pending, obj="")
        self.assertRaises(TypeError, pending, headers={"X-Size": 5})

    def test_corrupt(self) -> None:
        good = ap.encode_pending(pending())
        damaged = [
            (b'"version": 1', b'"version": 2'),
            (b'"op": "PUT"', b'"op": "GET"'),
            (b'"headers"', b'"h"'),
            (b'"1700000000.00001"', b'"soon"'),
            (b'"policy_index": 2', b'"policy_index": "2"'),
        ]
        for raw in (b"", b"\x80\x02}q.", b"[]", *(good.replace(a, b) for a, b in damaged)):
            self.assertRaises(ap.PendingCorrupt, ap.decode_pending, raw)


class ListTests(SynchronousTestCase):
    def test_order_and_junk(self) -> None:
        root = temp_dir(self) / "async_pending"
        other = "fedcba9876543210fedcba9876543def"
        names = {
            "def": [f"{other}-1700000000.00002", f"{other}-1700000000.00001"],
            "bcd": [HASH[:-3] + "bcd-1600000000.00000"],
        }
        for suffix, files in names.items():
            (root / suffix).mkdir(parents=True, exist_ok=True)
            for name in files:
                (root / suffix / name).write_bytes(b"{}")
        (root / "def" / "junk").write_bytes(b"")
        (root / "def" / (HASH[:-3] + "abc-1700000000.00001")).write_bytes(b"")  # wrong suffix
        (root / "xyz").mkdir()
        (root / "not-a-dir").write_bytes(b"")
        listed = ap.list_pendings(root)
        self.assertEqual(
            [p.relative_to(root).as_posix() for p in listed],
            ["bcd/" + HASH[:-3] + "bcd-1600000000.00000",
             f"def/{other}-1700000000.00001", f"def/{other}-1700000000.00002"],
        )
        self.assertEqual(ap.list_pendings(root / "missing"), [])
