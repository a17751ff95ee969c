# -*- test-case-name: txstore.test.unit.test_object_updater -*-
"""
The object updater: replays the container updates that object writes could not deliver.

When a PUT or DELETE could not reach a container server, the object server left an async
pending (``async_pending[-N]/<suffix>/<hash>-<timestamp>``). Each pass sends every pending
row to all the replicas of its container, as the container ring names them now, and removes
the record once every replica took it (rows are newest-wins, so sending one twice is
harmless, and no replica is left without it while container replication does not exist yet).
A record that cannot be sent is counted as failed and the pass goes on to the next: one bad
record never stops the pendings behind it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from txstore.common.backend_client import BackendError, text_to_wire
from txstore.ring.ring import Ring
from txstore.storage.context import StorageContext

log = Logger()

_NOT_FORWARDED = ("x-container-host", "x-container-device", "x-container-partition")


class ObjectUpdater:
    def __init__(self, context: StorageContext, container_ring: Ring) -> None:
        self._context = context
        self._ring = container_ring

    async def run_pass(self) -> dict[str, Any]:
        figures = {"pending": 0, "delivered": 0, "failed": 0}
        context = self._context
        for device, _path in await context.runner.run("updater", context.mounted_devices):
            pendings = await context.runner.run(device, context.diskfiles.list_async_pendings, device)
            for pending in pendings:
                figures["pending"] += 1
                try:
                    delivered = await self._deliver(device, pending)
                except Exception:
                    log.failure("replaying the async pending {path} failed", path=str(pending))
                    delivered = False
                figures["delivered" if delivered else "failed"] += 1
        return figures

    async def _deliver(self, device: str, pending: Path) -> bool:
        context = self._context
        try:
            record = await context.runner.run(device, context.diskfiles.read_async_pending, pending)
        except FileNotFoundError:
            return True  # delivered meanwhile
        except Exception as err:
            log.warn("unreadable async pending {path}: {error}", path=str(pending), error=err)
            return False
        part, nodes = self._ring.get_nodes(record.account, record.container)
        headers = {k: _replayed(v) for k, v in record.headers.items() if k.lower() not in _NOT_FORWARDED}
        headers.update({
            "X-Timestamp": record.timestamp.internal,
            "X-Backend-Storage-Policy-Index": str(record.policy_index),
            "X-Backend-Server-Type": "container",
        })

        async def one(node) -> bool:
            try:
                response = await context.client.request(
                    record.op, node.ip, node.port,
                    f"/{node.device_name}/{part}/{record.account}/{record.container}/{record.obj}",
                    headers, timeout=context.node_timeout,
                )
            except (BackendError, ValueError) as err:  # ValueError: a header the client cannot send
                log.warn("replaying {op} {name} to {node} failed: {error}", op=record.op, name=record.obj,
                         node=node.device_name, error=err)
                return False
            return 200 <= response.status < 300

        results = await gatherResults([Deferred.fromCoroutine(one(n)) for n in nodes], consumeErrors=True)
        if not all(results):
            return False
        await context.runner.run(device, context.diskfiles.remove_async_pending, pending)
        return True


def _replayed(value: str) -> str:
    """
    A pending's header value in wire form. Object servers now save them so (`text_to_wire`);
    records saved before kept the node's text (``text/é`` as U+00E9), which no container server
    takes: such a value (not Latin-1, or Latin-1 whose bytes are not UTF-8) is sent as its UTF-8.
    """
    try:
        value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text_to_wire(value)
    return value
