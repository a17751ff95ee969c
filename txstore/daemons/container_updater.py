# -*- test-case-name: txstore.test.unit.test_container_updater -*-
"""
The container updater: brings the account databases up to date with their containers'
object counts and bytes.

Object PUTs change a container's stats many times a second; telling the account each time
would make the account database the bottleneck of every write. So the container server
reports only when a container is created or deleted, and this daemon walks the node's
container databases, and for each whose stats differ from what it last reported, sends the
report to every replica of the account (from the account ring). When a majority took it, the
database records what was reported; otherwise the next pass tries again. The report of a
deleted container carries ``X-Account-Override-Deleted: yes``, so that an account deleted
meanwhile (and being reaped) still takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from txstore.common.backend_client import BackendError
from txstore.common.quorum import quorum_size
from txstore.ring.ring import Ring
from txstore.storage.container_server import account_report_headers
from txstore.storage.db import ContainerBroker
from txstore.storage.db.files import find_databases
from txstore.storage.context import StorageContext

log = Logger()


def find_container_dbs(device_path: Path) -> list[Path]:
    """Every container database on a device (blocking)."""
    return find_databases(device_path, "containers")


def read_info(db_path: Path):
    broker = ContainerBroker(db_path)
    try:
        return broker.get_info()
    finally:
        broker.close()


def mark_reported(db_path: Path, info) -> None:
    broker = ContainerBroker(db_path)
    try:
        broker.set_reported(info.put_timestamp, info.delete_timestamp, info.object_count, info.bytes_used)
    finally:
        broker.close()


def needs_report(info) -> bool:
    return (
        info.put_timestamp != info.reported_put_timestamp
        or info.delete_timestamp != info.reported_delete_timestamp
        or info.object_count != info.reported_object_count
        or info.bytes_used != info.reported_bytes_used
    )


class ContainerUpdater:
    def __init__(self, context: StorageContext, account_ring: Ring, devices: list[str] | None = None) -> None:
        self._context = context
        self._ring = account_ring
        self._devices = devices

    async def _devices_now(self) -> list[tuple[str, Path]]:
        devices = await self._context.runner.run("updater", self._context.mounted_devices)
        if self._devices is not None:
            devices = [(name, path) for name, path in devices if name in self._devices]
        return devices

    async def run_pass(self) -> dict[str, Any]:
        figures = {"checked": 0, "reported": 0, "failed": 0}
        for device, device_path in await self._devices_now():
            for db_path in await self._context.runner.run(device, find_container_dbs, device_path):
                figures["checked"] += 1
                try:
                    info = await self._context.runner.run(device, read_info, db_path)
                except Exception as err:
                    log.warn("cannot read {db}: {error}", db=str(db_path), error=err)
                    figures["failed"] += 1
                    continue
                if not needs_report(info):
                    continue
                if await self._report(info):
                    await self._context.runner.run(device, mark_reported, db_path, info)
                    figures["reported"] += 1
                else:
                    figures["failed"] += 1
        return figures

    async def _report(self, info) -> bool:
        part, nodes = self._ring.get_nodes(info.account)
        headers = {**account_report_headers(info), "X-Trans-Id": f"container-updater-{info.id}"}
        if info.delete_timestamp > info.put_timestamp:
            # A container deleted in a deleted account (the reaper's work): the account must
            # still record it, or this report would be refused on every pass.
            headers["X-Account-Override-Deleted"] = "yes"

        async def one(node) -> bool:
            try:
                response = await self._context.client.request(
                    "PUT", node.ip, node.port, f"/{node.device_name}/{part}/{info.account}/{info.container}",
                    headers, timeout=self._context.node_timeout,
                )
            except BackendError as err:
                log.warn("report of {account}/{container} to {node} failed: {error}", account=info.account,
                         container=info.container, node=node.device_name, error=err)
                return False
            return 200 <= response.status < 300

        results = await gatherResults([Deferred.fromCoroutine(one(n)) for n in nodes], consumeErrors=True)
        return sum(results) >= quorum_size(len(nodes))
