# -*- test-case-name: txstore.test.test_db_auditor -*-
"""
The container and account auditors: find damaged databases before a request does.

Each pass opens every database of its kind on the node's devices (in the device's thread) and
asks SQLite to check it (``PRAGMA quick_check``, or ``integrity_check`` when configured). A
database that fails, or that is not one of ours at all, is quarantined the way a request that
trips over it would do it (`DatabaseAccess.quarantine`: the server's cached broker is closed,
the directory moves to ``<device>/quarantined/<kind>/``), so the next PUT or replication
builds a good copy in its place. Paced by ``databases_per_second`` (sleeps in the device's
thread).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from txstore.daemons.thread_pacer import ThreadPacer as Pacer
from txstore.storage.db import DatabaseBroker, DatabaseBusy, DatabaseCorrupt, DatabaseNotFound
from txstore.storage.db_server import find_databases
from txstore.storage.http_support import StorageContext

log = Logger()

Quarantine = Callable[[str, Path, str], Awaitable[Any]]  # (device, db path, reason)


def check_database(make_broker: Callable[[Path], DatabaseBroker], db_path: Path, full: bool, pacer: Pacer) -> list[str]:
    """What is wrong with one database ([] for nothing); DatabaseNotFound if it went (blocking)."""
    broker = make_broker(db_path)
    try:
        return broker.check_integrity(full)
    except DatabaseCorrupt as err:
        return [str(err)]
    finally:
        broker.close()
        pacer.file_done()


class DatabaseAuditor:
    def __init__(
        self, context: StorageContext, kind: str, make_broker: Callable[[Path], DatabaseBroker],
        quarantine: Quarantine, *, databases_per_second: float = 50.0, full_check: bool = False,
        monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._context = context
        self._kind = kind  # "containers" or "accounts"
        self._make_broker = make_broker
        self._quarantine = quarantine
        self._rate = databases_per_second
        self._full = full_check
        self._monotonic = monotonic
        self._sleep = sleep

    async def run_pass(self) -> dict[str, Any]:
        figures = {"checked": 0, "passed": 0, "quarantined": 0, "errors": 0}
        context = self._context
        pacer = Pacer(self._rate, 0, clock=self._monotonic, sleep=self._sleep)
        for device, device_path in await context.runner.run("auditor", context.mounted_devices):
            for db_path in await context.runner.run(device, find_databases, device_path, self._kind):
                try:
                    problems = await context.runner.run(
                        device, check_database, self._make_broker, db_path, self._full, pacer
                    )
                except DatabaseNotFound:
                    continue  # removed or quarantined meanwhile
                except (DatabaseBusy, sqlite3.Error, OSError) as err:
                    log.warn("auditing {db} failed: {error}", db=str(db_path), error=err)
                    figures["errors"] += 1
                    continue
                figures["checked"] += 1
                if not problems:
                    figures["passed"] += 1
                    continue
                try:
                    await self._quarantine(device, db_path, "; ".join(problems[:5]))
                except Exception as err:
                    log.warn("quarantining {db} failed: {error}", db=str(db_path), error=err)
                    figures["errors"] += 1
                    continue
                figures["quarantined"] += 1
        return figures
