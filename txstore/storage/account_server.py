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


from attrs import define, frozen
from twisted.web.http import Request

from txstore.common.listing_format import ListingFormat, render_account_listing
from txstore.common.paths import BackendPath
from txstore.common.timestamps import Timestamp
from txstore.storage.db import AccountBroker, AccountInfo
from txstore.storage.db_server import (
    Change, DatabaseServer, MetadataCheck, MetadataRules, backend_timestamps, check_name_length, create_database,
    respond, true_header,
)
from txstore.storage.http_support import (
    HTTPError, NodeResponse, header, integer_header, required_integer_header, required_timestamp,
)
from txstore.storage.listing import container_entries

ACCOUNT_METADATA = MetadataRules("account")
_DELETED = {"X-Account-Status": "Deleted"}


def _is_deleted(info: AccountInfo) -> bool:
    """Deleted from the moment of its DELETE, however many containers the reaper has left."""
    return info.delete_timestamp > info.put_timestamp


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
) -> Change:
    if create_database(broker, account, timestamp, created_at=created_at):
        status = 201
    else:
        info = broker.get_info()
        if _is_deleted(info):
            return Change(403, info)
        broker.update_put_timestamp(timestamp)
        status = 202
    if metadata:
        broker.update_metadata(metadata, check)
    return Change(status, broker.get_info())


def _delete_account(broker: AccountBroker, timestamp: Timestamp) -> Change:
    info = broker.get_info()
    if _is_deleted(info):
        return Change(404, info)
    broker.mark_deleted(timestamp)
    return Change(204, broker.get_info())


def _record_report(
    broker: AccountBroker, report: _Report, create_as: tuple[str, Timestamp, Timestamp] | None, override: bool
) -> int:
    if create_as is not None:
        account, timestamp, created_at = create_as
        create_database(broker, account, timestamp, created_at=created_at)
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


@define
class AccountServer(DatabaseServer[AccountBroker]):
    """The account half of a storage node's backend API (see the module docstring)."""

    _kind = "accounts"
    _broker_type = AccountBroker
    _metadata = ACCOUNT_METADATA
    _deleted_headers = _DELETED
    _listing_by_path = False  # as in Swift

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
        check_name_length("Container", path.container, self.context.constraints.max_container_name_length)
        report = _Report(
            path.container,
            required_timestamp(request, "X-Put-Timestamp"),
            required_timestamp(request, "X-Delete-Timestamp"),
            required_integer_header(request, "X-Object-Count"),
            required_integer_header(request, "X-Bytes-Used"),
            integer_header(request, "X-Backend-Storage-Policy-Index") or 0,
        )
        create_as = None
        if true_header(request, "X-Backend-Auto-Create"):
            self._check_account_name(path)
            now = Timestamp.now(self.context.clock)
            given = header(request, "X-Timestamp")
            create_as = (path.account, required_timestamp(request) if given is not None else now, now)
        override = true_header(request, "X-Account-Override-Deleted")
        status = await self._db.call(path, _record_report, report, create_as, override)
        if status == 404:
            raise HTTPError(404, "Not Found")
        return respond(status)

    # -- account requests ------------------------------------------------------------------

    _is_deleted = staticmethod(_is_deleted)

    def _policy_name(self, index: int) -> str | None:
        policy = self.context.policies.by_index(index)
        return None if policy is None else policy.name

    def _check_account_name(self, path: BackendPath) -> None:
        check_name_length("Account", path.account, self.context.constraints.max_account_name_length)

    async def _put(self, request: Request, path: BackendPath) -> NodeResponse:
        self._check_account_name(path)
        timestamp, metadata = self._metadata_updates(request)
        outcome = await self._db.call(
            path, _put_account, path.account, timestamp, Timestamp.now(self.context.clock), metadata,
            ACCOUNT_METADATA.stored_limits(self.context),
        )
        if outcome.status == 403:
            raise HTTPError(403, "Forbidden: recently deleted", {**_DELETED, **backend_timestamps(outcome.info)})
        return respond(outcome.status)

    async def _delete(self, request: Request, path: BackendPath) -> NodeResponse:
        timestamp = required_timestamp(request)
        outcome = await self._db.call(path, _delete_account, timestamp)
        if outcome.status == 404:
            raise HTTPError(404, "Not Found", {**_DELETED, **backend_timestamps(outcome.info)})
        # A DELETE older than the newest PUT changes nothing, and the account stays live.
        return respond(204, _DELETED if _is_deleted(outcome.info) else {})

    def _listing_limit(self) -> int:
        return self.context.constraints.account_listing_limit

    def _render(self, fmt: ListingFormat, path: BackendPath, items: list) -> bytes:
        return render_account_listing(fmt, path.account, container_entries(items, self._policy_name))

    def _stats_headers(self, info: AccountInfo) -> dict[str, str]:
        return {
            "X-Account-Container-Count": str(info.container_count),
            "X-Account-Object-Count": str(info.object_count),
            "X-Account-Bytes-Used": str(info.bytes_used),
            "X-Timestamp": info.created_at.normal,
            "X-Put-Timestamp": info.put_timestamp.normal,
        }
