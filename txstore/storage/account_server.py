# -*- test-case-name: txstore.test.unit.test_account_server -*-
"""
The account server of a storage node: one replica of each account's database.

``/<device>/<partition>/<account>``: PUT creates the account, DELETE marks it deleted (the
reaper empties it later), POST sets metadata, HEAD reports totals and metadata, and GET also
lists containers. Container servers report each container's state with
``PUT /<device>/<partition>/<account>/<container>`` and ``X-Put-Timestamp``,
``X-Delete-Timestamp``, ``X-Object-Count``, ``X-Bytes-Used``. The node routes paths with a
container segment to the container server, so those reports reach
`AccountServer.handle_container_report` through it.

A deleted account answers 404 with ``X-Account-Status: Deleted`` until the reaper and the
replicator have removed its database. Until then a PUT cannot re-create it (403, as in
Swift), and container reports are refused unless they carry ``X-Account-Override-Deleted: yes``.
"""

from __future__ import annotations


from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http import Request

from txstore.common.listing_format import render_account_listing
from txstore.common.paths import BackendPath
from txstore.common.timestamps import Timestamp
from txstore.storage.broker_cache import DEFAULT_CAPACITY, BrokerCache
from txstore.storage.db import AccountBroker, AccountInfo, DatabaseAlreadyExists
from txstore.storage.db_server import (
    post_metadata,
    read_database,
    DatabaseAccess,
    MetadataCheck,
    MetadataRules,
    backend_timestamps,
    format_only,
    listing_request,
    respond,
    true_header,
    without_path,
)
from txstore.storage.context import StorageContext
from txstore.storage.http_support import (
    HTTPError,
    NodeResponse,
    header,
    integer_header,
    required_timestamp,
)
from txstore.storage.listing import ListingParams, container_entries

ACCOUNT_METADATA = MetadataRules("account")
_ALLOW = {"Allow": "DELETE, GET, HEAD, POST, PUT"}
_DELETED = {"X-Account-Status": "Deleted"}


def _is_deleted(info: AccountInfo) -> bool:
    """Deleted from the moment of its DELETE, however many containers the reaper has left."""
    return info.delete_timestamp > info.put_timestamp


@frozen
class _Outcome:
    status: int
    info: AccountInfo


@frozen
class _Report:
    """One container's state as its container server reported it."""

    name: str
    put_timestamp: Timestamp
    delete_timestamp: Timestamp
    object_count: int
    bytes_used: int
    policy_index: int


# -- broker work (runs in the device's I/O pool) -------------------------------------------------


def _put_account(
    broker: AccountBroker,
    account: str,
    timestamp: Timestamp,
    created_at: Timestamp,
    metadata: dict[str, tuple[str, str]],
    check: MetadataCheck | None = None,
) -> _Outcome:
    try:
        broker.initialize(account, timestamp, created_at=created_at)
        broker.close()  # idle connections from before would still point at a quarantined file
        status = 201
    except DatabaseAlreadyExists:
        info = broker.get_info()
        if _is_deleted(info):
            return _Outcome(403, info)
        broker.update_put_timestamp(timestamp)
        status = 202
    if metadata:
        broker.update_metadata(metadata, check)
    return _Outcome(status, broker.get_info())


def _delete_account(broker: AccountBroker, timestamp: Timestamp) -> _Outcome:
    info = broker.get_info()
    if _is_deleted(info):
        return _Outcome(404, info)
    broker.mark_deleted(timestamp)
    return _Outcome(204, broker.get_info())


def _record_report(
    broker: AccountBroker, report: _Report, create_as: tuple[str, Timestamp, Timestamp] | None, override: bool
) -> int:
    if create_as is not None:
        account, timestamp, created_at = create_as
        try:
            broker.initialize(account, timestamp, created_at=created_at)
            broker.close()  # as in _put_account
        except DatabaseAlreadyExists:
            pass
    info = broker.get_info()
    if _is_deleted(info) and not override:
        return 404
    broker.put_container(
        report.name,
        report.put_timestamp,
        report.delete_timestamp,
        report.object_count,
        report.bytes_used,
        report.policy_index,
    )
    return 204 if report.delete_timestamp > report.put_timestamp else 201


# -- the HTTP side -----------------------------------------------------------------------------------


def _report_count(request: Request, name: str) -> int:
    value = integer_header(request, name)
    if value is None:
        raise HTTPError(400, f"Missing {name} header")
    return value


@define
class AccountServer:
    """The account half of a storage node's backend API (see the module docstring)."""

    context: StorageContext
    cache_size: int = DEFAULT_CAPACITY
    _db: DatabaseAccess[AccountBroker] = field(init=False)
    log = Logger()

    def __attrs_post_init__(self) -> None:
        cache: BrokerCache[AccountBroker] = BrokerCache(self.context.runner, self.cache_size)
        self._db = DatabaseAccess(self.context, "accounts", lambda path, tmp: AccountBroker(path, tmp_dir=tmp), cache)

    def close(self) -> Deferred:
        """Close the cached brokers (when the node stops, before its I/O pools)."""
        return self._db.cache.close()

    @property
    def databases(self) -> DatabaseAccess[AccountBroker]:
        """How this server finds and opens its databases (shared with replication)."""
        return self._db

    async def handle(self, request: Request, path: BackendPath) -> NodeResponse:
        """``/<device>/<partition>/<account>``: PUT, DELETE, POST, HEAD, GET."""
        method = request.method
        if method == b"PUT":
            return await self._put(request, path)
        if method == b"DELETE":
            return await self._delete(request, path)
        if method == b"POST":
            return await self._post(request, path)
        if method in (b"GET", b"HEAD"):
            return await self._get(request, path)
        raise HTTPError(405, "Method Not Allowed", _ALLOW)

    async def handle_container_report(self, request: Request, path: BackendPath) -> NodeResponse:
        """
        ``PUT /<device>/<partition>/<account>/<container>`` from a container server or updater:
        record the container's state. 201 (204 when it reports a deletion); 404 when there is
        no account database here, unless ``X-Backend-Auto-Create: true`` asks to create it
        first, or when the account is deleted, unless ``X-Account-Override-Deleted: yes``.
        """
        assert path.container is not None
        if request.method != b"PUT":
            raise HTTPError(405, "Method Not Allowed", {"Allow": "PUT"})
        limit = self.context.constraints.max_container_name_length
        if len(path.container.encode("utf-8")) > limit:
            raise HTTPError(400, f"Container name longer than {limit} bytes")
        report = _Report(
            path.container,
            required_timestamp(request, "X-Put-Timestamp"),
            required_timestamp(request, "X-Delete-Timestamp"),
            _report_count(request, "X-Object-Count"),
            _report_count(request, "X-Bytes-Used"),
            integer_header(request, "X-Backend-Storage-Policy-Index") or 0,
        )
        create_as = None
        if true_header(request, "X-Backend-Auto-Create"):
            self._check_account_name(path)
            now = Timestamp.now(self.context.clock)
            given = header(request, "X-Timestamp")
            create_as = (path.account, required_timestamp(request) if given is not None else now, now)
        override = true_header(request, "X-Account-Override-Deleted")
        broker = await self._db.broker(path)
        status = await self._db.run(path, broker, _record_report, report, create_as, override)
        if status == 404:
            raise HTTPError(404, "Not Found")
        return respond(status)

    # -- account requests ------------------------------------------------------------------

    def _policy_name(self, index: int) -> str | None:
        policy = self.context.policies.by_index(index)
        return None if policy is None else policy.name

    def _check_account_name(self, path: BackendPath) -> None:
        limit = self.context.constraints.max_account_name_length
        if len(path.account.encode("utf-8")) > limit:
            raise HTTPError(400, f"Account name longer than {limit} bytes")

    async def _put(self, request: Request, path: BackendPath) -> NodeResponse:
        self._check_account_name(path)
        timestamp = required_timestamp(request)
        ACCOUNT_METADATA.check(request, self.context)
        metadata = ACCOUNT_METADATA.updates(request, timestamp)
        broker = await self._db.broker(path)
        outcome = await self._db.run(
            path, broker, _put_account, path.account, timestamp, Timestamp.now(self.context.clock), metadata,
            ACCOUNT_METADATA.stored_limits(self.context),
        )
        if outcome.status == 403:
            raise HTTPError(403, "Forbidden: recently deleted", {**_DELETED, **backend_timestamps(outcome.info)})
        return respond(outcome.status)

    async def _delete(self, request: Request, path: BackendPath) -> NodeResponse:
        timestamp = required_timestamp(request)
        broker = await self._db.broker(path)
        outcome = await self._db.run(path, broker, _delete_account, timestamp)
        if outcome.status == 404:
            raise HTTPError(404, "Not Found", {**_DELETED, **backend_timestamps(outcome.info)})
        # A DELETE older than the newest PUT changes nothing, and the account stays live.
        return respond(204, _DELETED if _is_deleted(outcome.info) else {})

    async def _post(self, request: Request, path: BackendPath) -> NodeResponse:
        timestamp = required_timestamp(request)
        ACCOUNT_METADATA.check(request, self.context)
        metadata = ACCOUNT_METADATA.updates(request, timestamp)
        broker = await self._db.broker(path)
        info = await self._db.run(path, broker, post_metadata, metadata, _is_deleted,
                                  ACCOUNT_METADATA.stored_limits(self.context))
        if _is_deleted(info):
            raise HTTPError(404, "Not Found", {**_DELETED, **backend_timestamps(info)})
        return respond(204)

    async def _get(self, request: Request, path: BackendPath) -> NodeResponse:
        listing: ListingParams | None = None
        if request.method == b"GET":
            params, fmt = listing_request(request, self.context.constraints.account_listing_limit)
            listing = without_path(params)
        else:
            fmt = format_only(request)
        broker = await self._db.broker(path)
        read = await self._db.run(
            path, broker, read_database, listing, _is_deleted,
            lambda items: render_account_listing(fmt, path.account, container_entries(items, self._policy_name)),
        )
        info = read.info
        headers = backend_timestamps(info)
        if _is_deleted(info):
            raise HTTPError(404, "Not Found", {**_DELETED, **headers})
        headers.update(
            {
                "X-Account-Container-Count": str(info.container_count),
                "X-Account-Object-Count": str(info.object_count),
                "X-Account-Bytes-Used": str(info.bytes_used),
                "X-Timestamp": info.created_at.normal,
                "X-Put-Timestamp": info.put_timestamp.normal,
            }
        )
        for name, (value, _ts) in read.metadata.items():
            headers[name] = value
        if read.body is None or (fmt.name == "plain" and not read.body):
            return respond(204, headers, content_type=fmt.content_type)
        return respond(200, headers, read.body, fmt.content_type)
