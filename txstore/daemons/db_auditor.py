# -*- test-case-name: txstore.test.unit.test_db_auditor -*-
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from txstore.daemons.pacing import Pacer, PassStopped
from txstore.storage.db import DatabaseBroker, DatabaseBusy, DatabaseCorrupt, DatabaseNotFound
from txstore.storage.config import DEFAULT_DAEMONS, DatabaseAuditorSettings
from txstore.storage.context import StorageContext
from txstore.storage.db.files import find_databases

log = Logger()

Quarantine = Callable[[str, Path, str], Awaitable[Any]]  # (device, db path, reason)


def check_database(make_broker: Callable[[Path], DatabaseBroker], db_path: Path, full: bool) -> list[str]:
    """What is wrong with one database ([] for nothing); DatabaseNotFound if it went (blocking)."""
    broker = make_broker(db_path)
    try:
        return broker.check_integrity(full)
    except DatabaseCorrupt as err:
        return [str(err)]
    finally:
        broker.close()


class DatabaseAuditor:
    def __init__(
        self, context: StorageContext, reactor: Any, kind: str, make_broker: Callable[[Path], DatabaseBroker],
        quarantine: Quarantine, *, settings: DatabaseAuditorSettings = DEFAULT_DAEMONS.container_auditor,
    ) -> None:
        self._context = context
        self._reactor = reactor
        self._kind = kind  # "containers" or "accounts"
        self._make_broker = make_broker
        self._quarantine = quarantine
        self._rate = settings.databases_per_second
        self._full = settings.integrity_check
        self._pacer: Pacer | None = None

    def stop(self) -> None:
        """End the pass under way at its next wait (the node is stopping)."""
        if self._pacer is not None:
            self._pacer.stop()

    async def run_pass(self) -> dict[str, Any]:
        figures: dict[str, Any] = {"checked": 0, "passed": 0, "quarantined": 0, "errors": 0}
        self._pacer = Pacer(self._reactor, self._rate, 0)
        try:
            await self._audit(figures, self._pacer)
        except PassStopped:
            figures["stopped"] = True
        finally:
            self._pacer = None
        return figures

    async def _audit(self, figures: dict[str, Any], pacer: Pacer) -> None:
        context = self._context
        for device, device_path in await context.runner.run("auditor", context.mounted_devices):
            for db_path in await context.runner.run(device, find_databases, device_path, self._kind):
                try:
                    problems = await context.runner.run(device, check_database, self._make_broker, db_path, self._full)
                except DatabaseNotFound:
                    continue  # removed or quarantined meanwhile
                except (DatabaseBusy, sqlite3.Error, OSError) as err:
                    log.warn("auditing {db} failed: {error}", db=str(db_path), error=err)
                    figures["errors"] += 1
                    await pacer.file_done()
                    continue
                figures["checked"] += 1
                await pacer.file_done()
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
