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

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import define, field, frozen

from txstore.common.timestamps import Timestamp, TimestampLike
from txstore.storage.db.broker import (
    ZERO_HASH,
    ZERO_TIMESTAMP,
    DatabaseBroker,
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
CREATE TABLE sync_point (
    remote_id TEXT NOT NULL,
    incoming INTEGER NOT NULL,
    sync_point INTEGER NOT NULL,
    PRIMARY KEY (remote_id, incoming)
) WITHOUT ROWID;
"""


@frozen
class ContainerRecord:
    """One container row of an account: the latest report about that container."""

    name: str
    put_timestamp: str  # internal timestamp form
    delete_timestamp: str
    object_count: int
    bytes_used: int
    deleted: bool = False
    storage_policy_index: int = 0
    row_id: int | None = field(default=None, eq=False)

    @property
    def newest(self) -> str:
        return max(self.put_timestamp, self.delete_timestamp)

    def to_dict(self) -> dict[str, Any]:
        """The replication wire form, which ``merge_items`` accepts back."""
        return {
            "name": self.name,
            "put_timestamp": self.put_timestamp,
            "delete_timestamp": self.delete_timestamp,
            "object_count": self.object_count,
            "bytes_used": self.bytes_used,
            "deleted": int(self.deleted),
            "storage_policy_index": self.storage_policy_index,
        }


@frozen
class AccountInfo:
    account: str
    created_at: Timestamp
    put_timestamp: Timestamp
    delete_timestamp: Timestamp
    status_changed_at: Timestamp
    id: str
    hash: str
    container_count: int
    object_count: int
    bytes_used: int
    max_row: int


@define
class AccountBroker(DatabaseBroker[ContainerRecord]):
    """The database of one account: container rows, totals, metadata, replication sync points."""

    _application_id = ACCOUNT_APPLICATION_ID
    _item_table = "container"
    _item_columns = (
        "name",
        "put_timestamp",
        "delete_timestamp",
        "object_count",
        "bytes_used",
        "deleted",
        "storage_policy_index",
    )
    _stat_columns = ("container_count", "object_count", "bytes_used")
    _reclaim_where = "deleted = 1 AND delete_timestamp < ?"
    _schema = _SCHEMA

    def initialize(
        self, account: str, put_timestamp: TimestampLike, created_at: TimestampLike | None = None
    ) -> None:
        """Create the database atomically; DatabaseAlreadyExists if one is there."""
        put = timestamp_string(put_timestamp)
        self._create(
            {
                "account": check_name(account),
                "created_at": timestamp_string(created_at if created_at is not None else Timestamp.now()),
                "put_timestamp": put,
                "delete_timestamp": ZERO_TIMESTAMP,
                "status_changed_at": put,
                "id": str(uuid.uuid4()),
                "hash": ZERO_HASH,
            }
        )

    # -- hooks -----------------------------------------------------------------------------

    def _record(self, row: Sequence[Any]) -> ContainerRecord:
        row_id, name, put, delete, objects, size, deleted, policy = row
        return ContainerRecord(name, put, delete, objects, size, bool(deleted), policy, row_id)

    def _values(self, record: ContainerRecord) -> tuple[Any, ...]:
        return (
            record.name,
            record.put_timestamp,
            record.delete_timestamp,
            record.object_count,
            record.bytes_used,
            int(record.deleted),
            record.storage_policy_index,
        )

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

    def _is_empty(self, info: Mapping[str, Any]) -> bool:
        return info["container_count"] == 0

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
        info = self._raw_info()
        parse = Timestamp.parse
        return AccountInfo(
            account=info["account"],
            created_at=parse(info["created_at"]),
            put_timestamp=parse(info["put_timestamp"]),
            delete_timestamp=parse(info["delete_timestamp"]),
            status_changed_at=parse(info["status_changed_at"]),
            id=info["id"],
            hash=info["hash"],
            container_count=info["container_count"],
            object_count=info["object_count"],
            bytes_used=info["bytes_used"],
            max_row=info["max_row"],
        )
