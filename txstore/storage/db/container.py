# -*- test-case-name: txstore.test.unit.test_container_broker -*-
"""
The container database: one row per object name, the newest update winning.

Object servers report every PUT and DELETE here; a DELETE is a row with ``deleted=1`` that stays
until ``reclaim`` (replicas learn about deletions from it). ``object_count`` and ``bytes_used``
are kept up to date in the same transaction as the rows, so a HEAD never counts rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import define, field, frozen

from txstore.common.timestamps import Timestamp, TimestampLike
from txstore.storage.db.broker import (
    SYNC_POINT_SCHEMA,
    ZERO_TIMESTAMP,
    DatabaseBroker,
    DatabaseError,
    DatabaseInfo,
    Row,
    check_count,
    check_name,
    timestamp_string,
)

CONTAINER_APPLICATION_ID = 0x74784331  # "txC1": tells our container databases from any other file

_SCHEMA = """
CREATE TABLE info (
    account TEXT NOT NULL,
    container TEXT NOT NULL,
    created_at TEXT NOT NULL,
    put_timestamp TEXT NOT NULL,
    delete_timestamp TEXT NOT NULL,
    status_changed_at TEXT NOT NULL,
    storage_policy_index INTEGER NOT NULL,
    id TEXT NOT NULL,
    hash TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    object_count INTEGER NOT NULL DEFAULT 0,
    bytes_used INTEGER NOT NULL DEFAULT 0,
    reported_put_timestamp TEXT NOT NULL,
    reported_delete_timestamp TEXT NOT NULL,
    reported_object_count INTEGER NOT NULL DEFAULT 0,
    reported_bytes_used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE object (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    etag TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    storage_policy_index INTEGER NOT NULL
);
CREATE UNIQUE INDEX object_name ON object (name);
CREATE INDEX object_live_name ON object (name) WHERE deleted = 0;
CREATE INDEX object_tombstone_age ON object (created_at) WHERE deleted = 1;
"""


class ContainerNotEmpty(DatabaseError):
    """A container DELETE while objects remain (the server answers 409)."""


class StoragePolicyConflict(DatabaseError):
    """A PUT names another storage policy than the live container has (the server answers 409)."""


@frozen
class ObjectRecord(Row):
    """One object row: what a listing shows, and what replication ships (``row_id`` aside)."""

    name: str
    created_at: str  # internal timestamp form
    size: int
    content_type: str
    etag: str
    deleted: bool = field(default=False, converter=bool)
    storage_policy_index: int = 0
    row_id: int | None = field(default=None, eq=False)


@frozen
class ContainerInfo(DatabaseInfo):
    container: str
    storage_policy_index: int
    reported_put_timestamp: Timestamp
    reported_delete_timestamp: Timestamp
    reported_object_count: int
    reported_bytes_used: int


@define
class ContainerBroker(DatabaseBroker[ObjectRecord]):
    """The database of one container: object rows, stats, metadata, replication sync points."""

    _application_id = CONTAINER_APPLICATION_ID
    _row_type = ObjectRecord
    _item_table = "object"
    _stat_columns = ("object_count", "bytes_used")
    _reclaim_where = "deleted = 1 AND created_at < ?"
    _schema = _SCHEMA + SYNC_POINT_SCHEMA

    def initialize(
        self,
        account: str,
        container: str,
        put_timestamp: TimestampLike,
        policy_index: int = 0,
        created_at: TimestampLike | None = None,
    ) -> None:
        """Create the database atomically; DatabaseAlreadyExists if one is there."""
        self._initialize(
            put_timestamp,
            created_at,
            account=check_name(account),
            container=check_name(container),
            storage_policy_index=check_count(policy_index, "policy_index"),
            reported_put_timestamp=ZERO_TIMESTAMP,
            reported_delete_timestamp=ZERO_TIMESTAMP,
        )

    # -- hooks -----------------------------------------------------------------------------

    def _coerce(self, item: ObjectRecord | Mapping[str, Any]) -> ObjectRecord:
        if isinstance(item, ObjectRecord):
            name, created_at, size = item.name, item.created_at, item.size
            content_type, etag = item.content_type, item.etag
            deleted, policy = item.deleted, item.storage_policy_index
        else:
            name, created_at, size = item["name"], item["created_at"], item["size"]
            content_type, etag = item["content_type"], item["etag"]
            deleted, policy = item.get("deleted", False), item.get("storage_policy_index", 0)
        if not isinstance(content_type, str) or not isinstance(etag, str):
            raise ValueError("content_type and etag must be strings")
        return ObjectRecord(
            check_name(name),
            timestamp_string(created_at),
            check_count(size, "size"),
            content_type,
            etag,
            bool(deleted),
            check_count(policy, "storage_policy_index"),
        )

    def _resolve(self, old: ObjectRecord, new: ObjectRecord) -> ObjectRecord:
        # The newer timestamp wins. Equal timestamps (should not happen: the proxy gives each
        # request its own) fall back to comparing the rest, so that every replica picks the same
        # row whatever order the updates came in, and a repeated update changes nothing.
        return new if self._values(new)[1:] > self._values(old)[1:] else old

    def _contribution(self, record: ObjectRecord) -> tuple[int, ...]:
        return (0, 0) if record.deleted else (1, record.size)

    # -- object rows -----------------------------------------------------------------------

    def put_object(
        self,
        name: str,
        timestamp: TimestampLike,
        size: int,
        content_type: str,
        etag: str,
        deleted: bool = False,
        policy_index: int = 0,
    ) -> None:
        """Record one object update (an older one than the row holds is ignored)."""
        # merge_items checks and normalises the fields (the timestamp may be in any form).
        record = ObjectRecord(name, timestamp, size, content_type, etag, deleted, policy_index)  # type: ignore[arg-type]
        self.merge_items([record])

    def delete_object(self, name: str, timestamp: TimestampLike, policy_index: int = 0) -> None:
        """Record an object DELETE: a tombstone row."""
        self.put_object(name, timestamp, 0, "", "", deleted=True, policy_index=policy_index)

    # -- container state -------------------------------------------------------------------

    def get_info(self) -> ContainerInfo:
        return self._parsed_info(ContainerInfo)

    def update_put_timestamp(self, timestamp: TimestampLike, policy_index: int | None = None) -> bool:
        """
        Record a container PUT (newest wins). True when it revived a deleted container.

        A PUT that names a storage policy may change it only while re-creating a deleted
        container; for a live one a different policy is a StoragePolicyConflict.
        """
        ts = timestamp_string(timestamp)
        with self._write() as conn:
            info = self._info_row(conn)
            if policy_index is not None and policy_index != info["storage_policy_index"]:
                check_count(policy_index, "policy_index")
                deleted = info["delete_timestamp"] > info["put_timestamp"] and info["object_count"] == 0
                if not (deleted and ts > info["delete_timestamp"]):
                    raise StoragePolicyConflict(
                        f"container has storage policy {info['storage_policy_index']}, not {policy_index}"
                    )
                conn.execute("UPDATE info SET storage_policy_index = ?", (policy_index,))
            return self._set_status(conn, info, put_timestamp=ts)

    def mark_deleted(self, timestamp: TimestampLike) -> None:
        """Record a container DELETE; ContainerNotEmpty while live objects remain."""
        ts = timestamp_string(timestamp)
        with self._write() as conn:
            info = self._info_row(conn)
            if info["object_count"]:
                raise ContainerNotEmpty(f"{info['object_count']} objects remain")
            self._set_status(conn, info, delete_timestamp=ts)
            self._clear_metadata(conn, ts)

    def set_reported(
        self,
        put_timestamp: TimestampLike,
        delete_timestamp: TimestampLike,
        object_count: int,
        bytes_used: int,
    ) -> None:
        """What the container updater last told the account, so it reports only changes."""
        with self._write() as conn:
            conn.execute(
                "UPDATE info SET reported_put_timestamp = ?, reported_delete_timestamp = ?, "
                "reported_object_count = ?, reported_bytes_used = ?",
                (
                    timestamp_string(put_timestamp),
                    timestamp_string(delete_timestamp),
                    check_count(object_count, "object_count"),
                    check_count(bytes_used, "bytes_used"),
                ),
            )
