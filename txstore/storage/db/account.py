# -*- test-case-name: txstore.test.unit.test_account_broker -*-
"""
The account database: one row per container, fed by the container servers' reports.

A report carries the container's put and delete timestamps and its current stats. Timestamps
merge by taking the newest of each; the stats come from the report about the newest event
(equal timestamps: the report that arrives last, since stats change without a new timestamp).
A container is deleted when its delete timestamp is newer than its put timestamp. The account's
totals (containers, objects, bytes over live containers) move in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import define, field, frozen

from txstore.common.timestamps import TimestampLike
from txstore.storage.db.broker import (
    SYNC_POINT_SCHEMA,
    ZERO_TIMESTAMP,
    DatabaseBroker,
    DatabaseInfo,
    Row,
    check_count,
    check_name,
    timestamp_string,
)

ACCOUNT_APPLICATION_ID = 0x74784131  # "txA1"

_SCHEMA = """
CREATE TABLE info (
    account TEXT NOT NULL,
    created_at TEXT NOT NULL,
    put_timestamp TEXT NOT NULL,
    delete_timestamp TEXT NOT NULL,
    status_changed_at TEXT NOT NULL,
    id TEXT NOT NULL,
    hash TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    container_count INTEGER NOT NULL DEFAULT 0,
    object_count INTEGER NOT NULL DEFAULT 0,
    bytes_used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE container (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    put_timestamp TEXT NOT NULL,
    delete_timestamp TEXT NOT NULL,
    object_count INTEGER NOT NULL,
    bytes_used INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    storage_policy_index INTEGER NOT NULL
);
CREATE UNIQUE INDEX container_name ON container (name);
CREATE INDEX container_live_name ON container (name) WHERE deleted = 0;
CREATE INDEX container_tombstone_age ON container (delete_timestamp) WHERE deleted = 1;
"""


@frozen
class ContainerRecord(Row):
    """One container row of an account: the latest report about that container."""

    name: str
    put_timestamp: str  # internal timestamp form
    delete_timestamp: str
    object_count: int
    bytes_used: int
    deleted: bool = field(default=False, converter=bool)
    storage_policy_index: int = 0
    row_id: int | None = field(default=None, eq=False)

    @property
    def newest(self) -> str:
        return max(self.put_timestamp, self.delete_timestamp)


@frozen
class AccountInfo(DatabaseInfo):
    container_count: int


@define
class AccountBroker(DatabaseBroker[ContainerRecord]):
    """The database of one account: container rows, totals, metadata, replication sync points."""

    _application_id = ACCOUNT_APPLICATION_ID
    _row_type = ContainerRecord
    _item_table = "container"
    _stat_columns = ("container_count", "object_count", "bytes_used")
    _reclaim_where = "deleted = 1 AND delete_timestamp < ?"
    _schema = _SCHEMA + SYNC_POINT_SCHEMA

    def initialize(
        self, account: str, put_timestamp: TimestampLike, created_at: TimestampLike | None = None
    ) -> None:
        """Create the database atomically; DatabaseAlreadyExists if one is there."""
        self._initialize(put_timestamp, created_at, account=check_name(account))

    # -- hooks -----------------------------------------------------------------------------

    def _coerce(self, item: ContainerRecord | Mapping[str, Any]) -> ContainerRecord:
        if isinstance(item, ContainerRecord):
            item = item.to_dict()
        put = timestamp_string(item["put_timestamp"])
        delete = timestamp_string(item.get("delete_timestamp") or ZERO_TIMESTAMP)
        return ContainerRecord(
            check_name(item["name"]),
            put,
            delete,
            check_count(item["object_count"], "object_count"),
            check_count(item["bytes_used"], "bytes_used"),
            delete > put,
            check_count(item.get("storage_policy_index", 0), "storage_policy_index"),
        )

    def _resolve(self, old: ContainerRecord, new: ContainerRecord) -> ContainerRecord:
        put = max(old.put_timestamp, new.put_timestamp)
        delete = max(old.delete_timestamp, new.delete_timestamp)
        stats = new if new.newest >= old.newest else old
        return ContainerRecord(
            old.name,
            put,
            delete,
            stats.object_count,
            stats.bytes_used,
            delete > put,
            stats.storage_policy_index,
            old.row_id,
        )

    def _contribution(self, record: ContainerRecord) -> tuple[int, ...]:
        return (0, 0, 0) if record.deleted else (1, record.object_count, record.bytes_used)

    # -- container rows --------------------------------------------------------------------

    def put_container(
        self,
        name: str,
        put_timestamp: TimestampLike,
        delete_timestamp: TimestampLike,
        object_count: int,
        bytes_used: int,
        policy_index: int = 0,
    ) -> None:
        """Merge one container report (see the module docstring for who wins)."""
        self.merge_items(
            [
                {
                    "name": name,
                    "put_timestamp": put_timestamp,
                    "delete_timestamp": delete_timestamp,
                    "object_count": object_count,
                    "bytes_used": bytes_used,
                    "storage_policy_index": policy_index,
                }
            ]
        )

    # -- account state ---------------------------------------------------------------------

    def get_info(self) -> AccountInfo:
        return self._parsed_info(AccountInfo)
