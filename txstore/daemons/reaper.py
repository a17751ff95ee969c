# -*- test-case-name: txstore.test.unit.test_reaper -*-
"""
The account reaper: empties accounts that a reseller admin deleted.

Deleting an account only marks its database deleted (clients get 404 at once); its containers
and objects stay on disk until this daemon removes them. Each pass walks the account
databases of the node; for one that is marked deleted (for at least ``delay_reaping``
seconds), and only on the device that is the *first primary* of the account's partition in
the account ring, it lists the account's containers from that database, and for each
container:

1. lists the objects from one container replica (the next one when a replica fails), page by
   page;
2. DELETEs every object on all its object replicas through the backend API, as a proxy would:
   ``X-Timestamp`` now, the policy index, and ``X-Container-Host/-Device/-Partition`` (one
   container replica per object replica), so the object servers remove the rows too;
3. once every object is gone, DELETEs the container on all its replicas, naming the account replicas
   (``X-Account-Host/-Device/-Partition``) with ``X-Account-Override-Deleted: yes`` so that the
   deleted account still records the container as gone.

Why the first primary: every account replica holds the same list, so one node is enough, and
the ring names the same one to every node without any coordination. If that device is down or
out of the ring, nobody reaps until the ring changes; a failed pass is simply retried by the
next one (everything here is idempotent: deleting a deleted object writes one more tombstone).
A node recognises its devices as every daemon does (`txstore.storage.local_devices`): its
``bind_ip`` (the host's addresses when it binds a wildcard), ``bind_port`` and the device name.

Objects go one at a time (their replicas in parallel), which is the reaper's pacing: the load
on the cluster is that of one client deleting serially. Progress and failures are logged per
container and per account, and the figures go to recon.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from txstore.common.backend_client import BackendError, listing_update_headers
from txstore.common.timestamps import Timestamp
from txstore.ring.device import Device
from txstore.ring.ring import Node
from txstore.ring.ringset import RingSet
from txstore.storage.db import AccountBroker, AccountInfo, ContainerRecord, DatabaseError
from txstore.storage.config import DEFAULT_DAEMONS, ReaperSettings
from txstore.storage.context import StorageContext
from txstore.storage.db.files import find_databases

log = Logger()

LISTING_LIMIT = 1000


def read_account(db_path: Path) -> AccountInfo:
    broker = AccountBroker(db_path)
    try:
        return broker.get_info()
    finally:
        broker.close()


def list_containers(db_path: Path, marker: str, limit: int) -> list[ContainerRecord]:
    broker = AccountBroker(db_path)
    try:
        return [row for row in broker.list(limit=limit, marker=marker) if isinstance(row, ContainerRecord)]
    finally:
        broker.close()


def _ok(status: int) -> bool:
    """A DELETE that did its job: done now (2xx), or nothing was there (404)."""
    return 200 <= status < 300 or status == 404


class AccountReaper:
    def __init__(
        self, context: StorageContext, rings: RingSet, is_local: Callable[[Device], bool], *,
        settings: ReaperSettings = DEFAULT_DAEMONS.account_reaper, listing_limit: int = LISTING_LIMIT,
    ) -> None:
        self._context = context
        self._rings = rings
        self._is_local = is_local
        self._delay = settings.delay_reaping
        self._limit = listing_limit

    def is_first_primary(self, device: str, account: str) -> bool:
        first = self._rings.account.get_part_nodes(self._rings.account.get_part(account))[0]
        return first.device_name == device and self._is_local(first.device)

    async def run_pass(self) -> dict[str, Any]:
        figures = {
            "accounts": 0, "containers_deleted": 0, "objects_deleted": 0,
            "container_failures": 0, "object_failures": 0,
        }
        context = self._context
        for device, device_path in await context.runner.run("reaper", context.mounted_devices):
            for db_path in await context.runner.run(device, find_databases, device_path, "accounts"):
                try:
                    info = await context.runner.run(device, read_account, db_path)
                except (DatabaseError, sqlite3.Error) as err:
                    log.warn("reaper cannot read {db}: {error}", db=str(db_path), error=err)
                    continue
                if info.delete_timestamp <= info.put_timestamp:
                    continue
                if context.clock() - info.delete_timestamp.seconds < self._delay:
                    continue
                if not self.is_first_primary(device, info.account):
                    continue
                figures["accounts"] += 1
                await self._reap_account(device, db_path, info.account, figures)
        return figures

    async def _reap_account(self, device: str, db_path: Path, account: str, figures: dict[str, int]) -> None:
        before = dict(figures)
        marker = ""
        while True:
            rows = await self._context.runner.run(device, list_containers, db_path, marker, self._limit)
            if not rows:
                break
            for row in rows:
                await self._reap_container(account, row.name, row.storage_policy_index, figures)
            marker = rows[-1].name
        done = {key: figures[key] - before[key] for key in figures}
        log.info(
            "reaped account {account}: {containers} containers and {objects} objects deleted, "
            "{container_failures} containers and {object_failures} objects failed",
            account=account, containers=done["containers_deleted"], objects=done["objects_deleted"],
            container_failures=done["container_failures"], object_failures=done["object_failures"],
        )

    async def _reap_container(self, account: str, container: str, policy_index: int, figures: dict[str, int]) -> None:
        part, nodes = self._rings.container.get_nodes(account, container)
        marker = ""
        deleted = failed = 0
        while True:
            page = await self._list_objects(part, nodes, account, container, marker)
            if page is None:
                log.warn("reaper: no replica of {account}/{container} could list it", account=account,
                         container=container)
                figures["container_failures"] += 1
                return
            names, policy_index = page[0], page[1] if page[1] is not None else policy_index
            if not names:
                break
            for name in names:
                if await self._delete_object(account, container, name, policy_index, part, nodes):
                    deleted += 1
                else:
                    failed += 1
            marker = names[-1]
        figures["objects_deleted"] += deleted
        figures["object_failures"] += failed
        # A container whose objects are not all gone stays, so the next pass lists them again.
        container_done = not failed and await self._delete_container(account, container, part, nodes)
        figures["containers_deleted" if container_done else "container_failures"] += 1
        log.info(
            "reaper: {account}/{container}: {deleted} objects deleted, {failed} failed; container {outcome}",
            account=account, container=container, deleted=deleted, failed=failed,
            outcome="deleted" if container_done else "kept (the next pass retries)",
        )

    async def _list_objects(
        self, part: int, nodes: list[Node], account: str, container: str, marker: str
    ) -> tuple[list[str], int | None] | None:
        """A page of object names and the container's policy; None when no replica answered."""
        query = f"?format=json&limit={self._limit}&marker={quote(marker.encode('utf-8'), safe='')}"
        answered = False
        for node in nodes:
            try:
                response = await self._context.client.request(
                    "GET", node.ip, node.port, f"/{node.device_name}/{part}/{account}/{container}",
                    {"X-Trans-Id": f"account-reaper-{account}"}, timeout=self._context.node_timeout,
                    query=query,
                )
            except BackendError as err:
                log.warn("reaper: listing {container} on {node} failed: {error}", container=container,
                         node=node.device_name, error=err)
                continue
            if response.status == 404:
                answered = True  # not on this replica; another may have it
                continue
            if response.status == 204:
                return [], None
            if response.status != 200:
                continue
            try:
                entries = json.loads(response.body)
                names = [entry["name"] for entry in entries if "name" in entry]
            except (ValueError, TypeError, KeyError):
                continue
            raw_policy = response.header("x-backend-storage-policy-index")
            return names, int(raw_policy) if raw_policy and raw_policy.isdigit() else None
        return ([], None) if answered else None

    async def _delete_object(
        self, account: str, container: str, obj: str, policy_index: int, container_part: int,
        container_nodes: list[Node],
    ) -> bool:
        try:
            ring = self._rings.object_ring(policy_index)
        except KeyError:
            log.warn("reaper: no object ring for policy {policy} of {account}/{container}", policy=policy_index,
                     account=account, container=container)
            return False
        part, nodes = ring.get_nodes(account, container, obj)
        timestamp = Timestamp.now(self._context.clock).internal

        def headers_for(index: int) -> dict[str, str]:
            return {
                "X-Timestamp": timestamp,
                "X-Trans-Id": f"account-reaper-{account}",
                "X-Backend-Storage-Policy-Index": str(policy_index),
                **listing_update_headers("Container", container_nodes[index % len(container_nodes)], container_part),
            }

        return await self._delete_everywhere(nodes, f"{part}/{account}/{container}/{obj}", headers_for)

    async def _delete_container(self, account: str, container: str, part: int, nodes: list[Node]) -> bool:
        account_part, account_nodes = self._rings.account.get_nodes(account)
        timestamp = Timestamp.now(self._context.clock).internal

        def headers_for(index: int) -> dict[str, str]:
            return {
                "X-Timestamp": timestamp,
                "X-Trans-Id": f"account-reaper-{account}",
                **listing_update_headers("Account", account_nodes[index % len(account_nodes)], account_part),
                "X-Account-Override-Deleted": "yes",
            }

        return await self._delete_everywhere(nodes, f"{part}/{account}/{container}", headers_for)

    async def _delete_everywhere(
        self, nodes: list[Node], path: str, headers_for: Callable[[int], dict[str, str]]
    ) -> bool:
        """DELETE ``/<device>/<path>`` on every node at once; True when every one succeeded."""
        results = await gatherResults(
            [Deferred.fromCoroutine(self._delete(n, f"/{n.device_name}/{path}", headers_for(i)))
             for i, n in enumerate(nodes)],
            consumeErrors=True,
        )
        return all(results)

    async def _delete(self, node: Node, path: str, headers: dict[str, str]) -> bool:
        try:
            response = await self._context.client.request(
                "DELETE", node.ip, node.port, path, headers, timeout=self._context.node_timeout
            )
        except BackendError as err:
            log.warn("reaper: DELETE {path} on {node} failed: {error}", path=path, node=node.device_name, error=err)
            return False
        if not _ok(response.status):
            log.warn("reaper: DELETE {path} on {node} answered {status}", path=path, node=node.device_name,
                     status=response.status)
            return False
        return True
