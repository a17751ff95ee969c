"""Tests for txstore.storage.db.account."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.timestamps import Timestamp
from txstore.storage.db import AccountBroker, ContainerBroker, ContainerRecord, DatabaseCorrupt
from txstore.test.support import temp_dir
from txstore.test.unit.test_container_broker import ListingBehaviourMixin, recomputed_hash, ts


def new_account(case: SynchronousTestCase) -> AccountBroker:
    broker = AccountBroker(temp_dir(case) / "accounts" / "1" / "abc" / "hash" / "hash.db")
    broker.initialize("AUTH_test", ts(100), created_at=ts(99))
    case.addCleanup(broker.close)
    return broker


class AccountListingTests(ListingBehaviourMixin, SynchronousTestCase):
    def broker_with(self, live: set[str], deleted: set[str] = frozenset()) -> AccountBroker:  # type: ignore[assignment]
        broker = new_account(self)
        rows: list[Any] = [ContainerRecord(n, ts(200), ts(0), 1, 10) for n in live | deleted]
        rows += [ContainerRecord(n, ts(200), ts(300), 0, 0) for n in deleted]
        broker.merge_items(rows)
        return broker

    def test_records_carry_the_row(self) -> None:
        broker = new_account(self)
        broker.put_container("c", ts(200), ts(0), 3, 30, policy_index=1)
        (record,) = broker.list()
        self.assertEqual(record, ContainerRecord("c", ts(200), ts(0), 3, 30, False, 1))


class AccountTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.broker = new_account(self)

    def stats(self) -> tuple[int, int, int]:
        info = self.broker.get_info()
        self.assertEqual(info.hash, recomputed_hash(self.broker))
        return info.container_count, info.object_count, info.bytes_used

    def row(self, name: str) -> ContainerRecord:
        (record,) = [r for r in self.broker.get_items_since(0, 100) if r.name == name]
        return record

    def test_info_after_creation(self) -> None:
        info = self.broker.get_info()
        self.assertEqual(info.account, "AUTH_test")
        self.assertEqual(info.created_at, Timestamp.parse(ts(99)))
        self.assertEqual(info.put_timestamp, Timestamp.parse(ts(100)))
        self.assertEqual((info.container_count, info.object_count, info.bytes_used, info.max_row), (0, 0, 0, 0))
        self.assertTrue(self.broker.is_empty())

    def test_wrong_kind_is_corrupt(self) -> None:
        self.assertRaises(DatabaseCorrupt, ContainerBroker(self.broker.path).get_info)

    def test_stats_after_every_kind_of_change(self) -> None:
        b = self.broker
        b.put_container("c1", ts(10), ts(0), 0, 0)
        self.assertEqual(self.stats(), (1, 0, 0))
        b.put_container("c1", ts(10), ts(0), 5, 500)  # same incarnation, new stats
        self.assertEqual(self.stats(), (1, 5, 500))
        b.put_container("c2", ts(11), ts(0), 2, 20)
        self.assertEqual(self.stats(), (2, 7, 520))
        b.put_container("c1", ts(10), ts(0), 3, 300)  # objects deleted: fewer
        self.assertEqual(self.stats(), (2, 5, 320))
        b.put_container("c2", ts(11), ts(12), 0, 0)  # container deleted
        self.assertEqual(self.stats(), (1, 3, 300))
        self.assertTrue(self.row("c2").deleted)
        b.put_container("c2", ts(11), ts(0), 2, 20)  # a late report from before the delete
        self.assertEqual(self.stats(), (1, 3, 300))
        self.assertEqual(self.row("c2").delete_timestamp, ts(12))
        b.put_container("c2", ts(13), ts(0), 0, 0)  # re-created
        self.assertEqual(self.stats(), (2, 3, 300))
        self.assertFalse(self.row("c2").deleted)
        self.assertEqual((self.row("c2").put_timestamp, self.row("c2").delete_timestamp), (ts(13), ts(12)))
        b.reclaim(ts(1000))
        self.assertEqual(self.stats(), (2, 3, 300))

    def test_newest_wins_whatever_the_order(self) -> None:
        reports = [
            ContainerRecord("c", ts(1), ts(0), 4, 40),
            ContainerRecord("c", ts(1), ts(2), 0, 0),
            ContainerRecord("c", ts(3), ts(0), 1, 10),
        ]
        for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]):
            broker = new_account(self)
            for i in order:
                broker.merge_items([reports[i]])
            (row,) = broker.list()
            self.assertEqual(
                (row.put_timestamp, row.delete_timestamp, row.object_count, row.deleted),
                (ts(3), ts(2), 1, False),
            )
            self.assertEqual(broker.get_info().object_count, 1)

    def test_repeat_report_changes_nothing(self) -> None:
        self.broker.put_container("c", ts(1), ts(0), 1, 1)
        before = self.broker.get_max_row()
        self.broker.put_container("c", ts(1), ts(0), 1, 1)
        self.assertEqual(self.broker.get_max_row(), before)
        self.broker.put_container("c", ts(1), ts(0), 2, 2)
        self.assertEqual(self.broker.get_max_row(), before + 1)

    def test_replica_from_items_since(self) -> None:
        b = self.broker
        for i in range(10):
            b.put_container(f"c{i}", ts(i + 1), ts(0), i, i * 10, policy_index=i % 2)
        b.put_container("c3", ts(4), ts(20), 0, 0)
        replica = new_account(self)
        replica.merge_items([r.to_dict() for r in b.get_items_since(0, 100)])
        self.assertEqual(replica.list(), b.list())
        self.assertEqual(replica.get_info().hash, b.get_info().hash)
        self.assertEqual(self.stats(), (9, 42, 420))

    def test_reclaim(self) -> None:
        b = self.broker
        b.put_container("gone", ts(1), ts(5), 0, 0)
        b.put_container("recent", ts(1), ts(50), 0, 0)
        b.put_container("live", ts(1), ts(0), 1, 1)
        self.assertEqual(b.reclaim(ts(10)), 1)
        self.assertEqual(sorted(r.name for r in b.get_items_since(0, 10)), ["live", "recent"])
        self.assertEqual(self.stats(), (1, 1, 1))

    def test_delete_and_recreate(self) -> None:
        b = self.broker
        b.put_container("c", ts(200), ts(0), 1, 1)
        b.update_metadata({"X-Account-Sysmeta-Core-Access-Control": ('{"admin":["x"]}', ts(250))})
        b.mark_deleted(ts(300))  # allowed while containers remain: the reaper empties it
        self.assertEqual(b.get_metadata(), {})  # an account made again does not inherit its ACL
        self.assertTrue(b.is_status_deleted())
        self.assertFalse(b.is_deleted())
        b.put_container("c", ts(200), ts(301), 0, 0)
        self.assertTrue(b.is_deleted())
        self.assertEqual(b.get_info().status_changed_at, Timestamp.parse(ts(300)))
        self.assertTrue(b.update_put_timestamp(ts(400)))
        self.assertFalse(b.is_deleted())

    def test_metadata(self) -> None:
        self.broker.update_metadata({"X-Account-Meta-Quota": ("10", ts(1))})
        self.broker.update_metadata({"X-Account-Meta-Quota": ("", ts(2))})
        self.assertEqual(self.broker.metadata, {})
        self.assertEqual(self.broker.get_metadata(True), {"X-Account-Meta-Quota": ("", ts(2))})

    def test_bad_reports_refused(self) -> None:
        self.assertRaises(ValueError, self.broker.put_container, "c", ts(1), ts(0), -1, 0)
        self.assertRaises(ValueError, self.broker.put_container, "", ts(1), ts(0), 0, 0)
        self.assertRaises(ValueError, self.broker.put_container, "c", "later", ts(0), 0, 0)
