# -*- test-case-name: txstore.test.unit.test_container_broker -*-
"""
SQLite databases for containers and accounts (synchronous: servers call them through the I/O pool).

One file per container or account; see ``docs/databases.rst`` for the schema, the durability
choices and the listing algorithm.
"""

from txstore.storage.db.account import AccountBroker, AccountInfo, ContainerRecord
from txstore.storage.db.broker import (
    DatabaseAlreadyExists,
    DatabaseBroker,
    DatabaseBusy,
    DatabaseCorrupt,
    DatabaseError,
    DatabaseNotFound,
    LISTING_LIMIT,
    MetadataLimitExceeded,
    Subdir,
)
from txstore.storage.db.container import (
    ContainerBroker,
    ContainerInfo,
    ContainerNotEmpty,
    ObjectRecord,
    StoragePolicyConflict,
)

__all__ = [
    "AccountBroker",
    "AccountInfo",
    "ContainerBroker",
    "ContainerInfo",
    "ContainerNotEmpty",
    "ContainerRecord",
    "DatabaseAlreadyExists",
    "DatabaseBroker",
    "DatabaseBusy",
    "DatabaseCorrupt",
    "DatabaseError",
    "DatabaseNotFound",
    "LISTING_LIMIT",
    "MetadataLimitExceeded",
    "ObjectRecord",
    "StoragePolicyConflict",
    "Subdir",
]
