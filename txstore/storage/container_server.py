# -*- test-case-name: txstore.test.unit.test_container_server -*-
"""
The container server of a storage node: one replica of each container's database.

``/<device>/<partition>/<account>/<container>``: PUT creates (or re-creates) the container,
DELETE removes an empty one, POST sets metadata, HEAD reports stats and metadata, and GET also
lists. Object servers record each object PUT and DELETE as a row with
``PUT|DELETE /<device>/<partition>/<account>/<container>/<object>``. The node routes paths
with an object segment to the object server, so those requests reach `ContainerServer.handle_object_row`
through it.

After a container PUT or DELETE the container server tells the account server (named by the
proxy in ``X-Account-Host``/``-Device``/``-Partition``) about the container's new state. If that
fails it is only logged. The container updater reports every container whose account has not
seen its latest state, to every account replica, so this server never marks a report as done.
Object rows are never reported one by one; the updater reports the totals.
"""

from __future__ import annotations


from attrs import define, field
from twisted.internet.defer import Deferred, gatherResults
from twisted.web.http import Request

from txstore.common.backend_client import BackendError
from txstore.common.listing_format import ListingFormat, render_container_listing
from txstore.common.paths import BackendPath
from txstore.common.timestamps import Timestamp
from txstore.storage.db import (
    ContainerBroker, ContainerInfo, ContainerNotEmpty, ObjectRecord, StoragePolicyConflict,
)
from txstore.storage.db_server import (
    Change, DatabaseServer, MetadataCheck, MetadataRules, backend_timestamps, check_name_length, create_database,
    respond, true_header,
)
from txstore.storage.http_support import (
    HTTPError, NodeResponse, header, integer_header, required_integer_header, required_timestamp, storage_policy,
)
from txstore.storage.listing import object_entries
from txstore.storage.row_batches import RowBatcher

CONTAINER_METADATA = MetadataRules(
    "container",
    named=(
        "X-Container-Read",
        "X-Container-Write",
        "X-Container-Sync-Key",
        "X-Container-Sync-To",
        "X-Versions-Location",
        "X-History-Location",
    ),
)
_ALLOW_ROWS = {"Allow": "DELETE, PUT"}
# Passed on from the container request to the account server's container report.
_REPORT_PASS_THROUGH = ("X-Trans-Id", "X-Account-Override-Deleted", "X-Backend-Auto-Create")


def account_report_headers(info: ContainerInfo) -> dict[str, str]:
    """The container's state as the account server takes it (``PUT /<dev>/<part>/<a>/<c>``)."""
    return {
        "X-Put-Timestamp": info.put_timestamp.internal,
        "X-Delete-Timestamp": info.delete_timestamp.internal,
        "X-Object-Count": str(info.object_count),
        "X-Bytes-Used": str(info.bytes_used),
        "X-Backend-Storage-Policy-Index": str(info.storage_policy_index),
    }


def _is_deleted(info: ContainerInfo) -> bool:
    """Deleted: the newest status change is a DELETE and no object rows arrived since."""
    return info.delete_timestamp > info.put_timestamp and info.object_count == 0


# -- broker work (runs in the device's I/O pool) -------------------------------------------------


def _put_container(
    broker: ContainerBroker,
    account: str,
    container: str,
    timestamp: Timestamp,
    requested_policy: int | None,
    default_policy: int,
    created_at: Timestamp,
    metadata: dict[str, tuple[str, str]],
    check: MetadataCheck | None = None,
) -> Change:
    policy = default_policy if requested_policy is None else requested_policy
    if create_database(broker, account, container, timestamp, policy, created_at=created_at):
        status = 201
    else:
        try:
            revived = broker.update_put_timestamp(timestamp, requested_policy)
        except StoragePolicyConflict:
            return Change(409, broker.get_info())
        status = 201 if revived else 202
    info = broker.get_info()
    if _is_deleted(info):
        return Change(409, info)  # a DELETE newer than this PUT is stored
    if metadata:
        broker.update_metadata(metadata, check)
    return Change(status, info)


def _delete_container(broker: ContainerBroker, timestamp: Timestamp) -> Change:
    info = broker.get_info()
    was_live = not _is_deleted(info)
    if info.object_count:
        return Change(409, info)
    try:
        broker.mark_deleted(timestamp)
    except ContainerNotEmpty:  # an object row arrived in between
        return Change(409, broker.get_info())
    info = broker.get_info()
    if not _is_deleted(info):
        return Change(409, info)  # a PUT newer than this DELETE is stored
    return Change(204 if was_live else 404, info)


def _merge_rows(broker: ContainerBroker, records: list[ObjectRecord]) -> None:
    broker.merge_items(records)


# -- the HTTP side -----------------------------------------------------------------------------------


def _text_header(request: Request, name: str) -> str:
    """A required text header that SQLite can store (valid UTF-8); 400 otherwise."""
    values = request.requestHeaders.getRawHeaders(name.encode("latin-1"))
    if not values:
        raise HTTPError(400, f"Missing {name} header")
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, f"{name} is not valid UTF-8") from None


def _account_nodes(request: Request) -> tuple[str, list[tuple[str, str]]] | None:
    """The account partition and ``(host, device)`` pairs to report to, or None if not asked."""
    hosts = header(request, "X-Account-Host")
    devices = header(request, "X-Account-Device")
    partition = header(request, "X-Account-Partition")
    if not hosts or not devices or not partition:
        return None
    host_list = [h.strip() for h in hosts.split(",")]
    device_list = [d.strip() for d in devices.split(",")]
    if len(host_list) != len(device_list):
        raise ValueError(f"{len(host_list)} account hosts but {len(device_list)} devices")
    return partition.strip(), list(zip(host_list, device_list))


def _split_host(host: str) -> tuple[str, int]:
    """``ip:port`` or ``[ipv6]:port``; ValueError for anything else."""
    ip, colon, port = host.rpartition(":")
    if not colon or not ip or not port.isdigit():
        raise ValueError(f"not host:port: {host!r}")
    return ip.strip("[]"), int(port)


@define
class ContainerServer(DatabaseServer[ContainerBroker]):
    """The container half of a storage node's backend API (see the module docstring)."""

    _rows: RowBatcher = field(init=False)

    _kind = "containers"
    _broker_type = ContainerBroker
    _metadata = CONTAINER_METADATA

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rows = RowBatcher(self._commit_rows)

    async def handle_object_row(self, request: Request, path: BackendPath) -> NodeResponse:
        """
        ``PUT|DELETE /<device>/<partition>/<account>/<container>/<object>`` from an object
        server: record the object's new state (X-Timestamp, and for PUT X-Size, X-Content-Type,
        X-Etag; X-Backend-Storage-Policy-Index). 201 / 204, or 404 when this node has no
        database for the container.
        """
        assert path.container is not None and path.obj is not None
        if request.method not in (b"PUT", b"DELETE"):
            raise HTTPError(405, "Method Not Allowed", _ALLOW_ROWS)
        check_name_length("Object", path.obj, self.context.constraints.max_object_name_length)
        timestamp = required_timestamp(request)
        policy = integer_header(request, "X-Backend-Storage-Policy-Index") or 0
        if request.method == b"PUT":
            size = required_integer_header(request, "X-Size")
            content_type = _text_header(request, "X-Content-Type")
            etag = _text_header(request, "X-Etag")
            record = ObjectRecord(path.obj, timestamp.internal, size, content_type, etag, False, policy)
        else:
            record = ObjectRecord(path.obj, timestamp.internal, 0, "", "", True, policy)
        broker = await self._db.broker(path)
        await self._rows.add(broker.path, (path, broker, record))
        return respond(201 if request.method == b"PUT" else 204)

    def _commit_rows(self, _key: object, rows: list[tuple[BackendPath, ContainerBroker, ObjectRecord]]) -> Deferred:
        """One transaction for rows of one database (`RowBatcher`)."""
        path, broker, _ = rows[0]
        return Deferred.fromCoroutine(self._db.run(path, broker, _merge_rows, [record for _, _, record in rows]))

    # -- container requests ----------------------------------------------------------------

    _is_deleted = staticmethod(_is_deleted)

    async def _put(self, request: Request, path: BackendPath) -> NodeResponse:
        assert path.container is not None
        check_name_length("Container", path.container, self.context.constraints.max_container_name_length)
        timestamp = required_timestamp(request)
        requested = None
        if header(request, "X-Backend-Storage-Policy-Index") is not None:
            requested = storage_policy(request, self.context.policies).index
        CONTAINER_METADATA.check(request, self.context)
        metadata = CONTAINER_METADATA.updates(request, timestamp)
        change = await self._db.call(
            path,
            _put_container,
            path.account,
            path.container,
            timestamp,
            requested,
            self.context.policies.default.index,
            Timestamp.now(self.context.clock),
            metadata,
            CONTAINER_METADATA.stored_limits(self.context),
        )
        if change.status == 409:
            if requested is not None and requested != change.info.storage_policy_index:
                raise HTTPError(
                    409,
                    f"Conflict: the container has storage policy {change.info.storage_policy_index}",
                    {"X-Backend-Storage-Policy-Index": str(change.info.storage_policy_index)},
                )
            raise HTTPError(409, "Conflict: a newer DELETE is stored", backend_timestamps(change.info))
        await self._report_to_account(request, path, change.info)
        return respond(change.status)

    async def _delete(self, request: Request, path: BackendPath) -> NodeResponse:
        timestamp = required_timestamp(request)
        change = await self._db.call(path, _delete_container, timestamp)
        if change.status == 409:
            if change.info.object_count:
                raise HTTPError(409, "Conflict: the container is not empty")
            raise HTTPError(409, "Conflict: a newer PUT is stored", backend_timestamps(change.info))
        await self._report_to_account(request, path, change.info)
        if change.status == 404:
            raise HTTPError(404, "Not Found", backend_timestamps(change.info))
        return respond(204)

    def _touch(self, request: Request, timestamp: Timestamp) -> Timestamp | None:
        """A POST is the container's ``Last-Modified`` (as in Swift) unless asked not to be."""
        return None if true_header(request, "X-Backend-No-Timestamp-Update") else timestamp

    def _listing_limit(self) -> int:
        return self.context.constraints.container_listing_limit

    def _render(self, fmt: ListingFormat, path: BackendPath, items: list) -> bytes:
        return render_container_listing(fmt, path.container, object_entries(items))

    def _info_headers(self, info: ContainerInfo) -> dict[str, str]:
        return {**backend_timestamps(info), "X-Backend-Storage-Policy-Index": str(info.storage_policy_index)}

    def _stats_headers(self, info: ContainerInfo) -> dict[str, str]:
        headers = {
            "X-Container-Object-Count": str(info.object_count),
            "X-Container-Bytes-Used": str(info.bytes_used),
            "X-Timestamp": info.created_at.normal,
            "X-Put-Timestamp": info.put_timestamp.normal,
            "Last-Modified": info.put_timestamp.last_modified,
        }
        policy = self.context.policies.by_index(info.storage_policy_index)
        if policy is not None:
            headers["X-Storage-Policy"] = policy.name
        return headers

    # -- the account report ----------------------------------------------------------------

    async def _report_to_account(self, request: Request, path: BackendPath, info: ContainerInfo) -> None:
        """
        Tell the account server(s) the proxy named about the container's new state. Failures
        are logged, never answered: the container updater catches up.
        """
        try:
            nodes = _account_nodes(request)
        except ValueError as err:
            self.log.warn(
                "no account update for {account}/{container}: {problem}",
                account=path.account, container=path.container, problem=str(err),
            )
            return
        if nodes is None:
            return
        partition, targets = nodes
        headers = account_report_headers(info)
        for name in _REPORT_PASS_THROUGH:
            value = header(request, name)
            if value is not None:
                headers[name] = value
        await gatherResults(
            [
                Deferred.fromCoroutine(self._report_one(host, device, partition, path, headers))
                for host, device in targets
            ],
            consumeErrors=True,
        )

    async def _report_one(
        self, host: str, device: str, partition: str, path: BackendPath, headers: dict[str, str]
    ) -> bool:
        report_path = f"/{device}/{partition}/{path.account}/{path.container}"
        try:
            ip, port = _split_host(host)
            response = await self.context.client.request(
                "PUT", ip, port, report_path, headers, timeout=self.context.node_timeout
            )
        except (BackendError, ValueError) as err:
            problem = str(err)
        else:
            if 200 <= response.status < 300:
                return True
            if response.status == 404:
                problem = "the account does not exist there (404)"
            else:
                problem = f"status {response.status}"
        self.log.warn(
            "account update of {account}/{container} to {host}/{device} failed: {problem}; "
            "the container updater will retry",
            account=path.account, container=path.container, host=host, device=device, problem=problem,
        )
        return False
