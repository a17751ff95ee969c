# -*- test-case-name: txstore.test.unit.test_container_server,txstore.test.unit.test_db_replication -*-
"""
Where a container or account database file lives on a device, how to find them all, and how a
damaged one is moved aside (all blocking: callers run them in the device's I/O pool).
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

QUARANTINE_DIR = "quarantined"


def database_path(device_path: Path, kind: str, partition: int, db_hash: str) -> Path:
    """``<device>/<kind>/<partition>/<suffix>/<hash>/<hash>.db``; kind is containers or accounts."""
    return device_path / kind / str(partition) / db_hash[-3:] / db_hash / f"{db_hash}.db"


def database_partition(db_path: Path) -> int:
    """The partition of a path `database_path` built."""
    return int(db_path.parents[2].name)


def find_databases(device_path: Path, kind: str) -> list[Path]:
    """Every ``<kind>/<part>/<suffix>/<hash>/<hash>.db`` on a device (blocking)."""
    found: list[Path] = []
    root = device_path / kind
    if not root.is_dir():
        return found
    for part in os.scandir(root):
        if not part.is_dir() or not part.name.isdigit():
            continue
        for suffix in os.scandir(part.path):
            if not suffix.is_dir():
                continue
            for hashdir in os.scandir(suffix.path):
                db = Path(hashdir.path) / f"{hashdir.name}.db"
                if db.is_file():
                    found.append(db)
    return found


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine_database(device_path: Path, kind: str, db_path: Path) -> Path | None:
    """
    Move the directory of a damaged database (with its WAL) to
    ``<device>/quarantined/<kind>/<hash>``, so that the next PUT or replication builds a good
    copy in its place. If an earlier copy is already quarantined there, the new one gets a
    ``-<uuid>`` suffix. Returns the new place, or None when another request moved it first.
    """
    source = db_path.parent
    target_root = device_path / QUARANTINE_DIR / kind
    target_root.mkdir(parents=True, exist_ok=True)
    target = target_root / source.name
    try:
        try:
            os.rename(source, target)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            target = target_root / f"{source.name}-{uuid.uuid4().hex}"
            os.rename(source, target)
    except FileNotFoundError:
        return None
    _fsync_directory(target_root)
    _fsync_directory(source.parent)
    return target
