# -*- test-case-name: txstore.test.unit.test_container_server,txstore.test.unit.test_account_server -*-
"""
What the container and account servers share: how a broker call runs and how its errors
become HTTP answers, which headers are stored as metadata, and listings (where a database file
lives and how a damaged one is quarantined: ``txstore.storage.db.files``).

Each request makes a single trip to the device's I/O pool. The server checks the request on the
reactor thread, then one plain function makes all the broker calls in a pool thread and
renders the listing there too: a 10,000-row JSON page is as costly to render as to read. The
reactor then writes the answer. The function returns an HTTP status instead of raising for
the outcomes a client must see (404, 409). Errors of the database itself are turned into
HTTP errors here, the same way for both servers. Answers are `NodeResponse` values (`respond`),
which the node's edge writes.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from attrs import define, evolve, field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http import Request

from txstore.common.constraints import check_metadata, check_stored_metadata
from txstore.common.listing_format import ListingError, ListingFormat, listing_format
from txstore.common.paths import ALLOW_RESERVED, BackendPath
from txstore.common.timestamps import Timestamp
from txstore.storage.broker_cache import DEFAULT_CAPACITY, BrokerCache
from txstore.storage.db.files import database_path, quarantine_database
from txstore.storage.db import (
    AccountInfo,
    ContainerInfo,
    DatabaseAlreadyExists,
    DatabaseBroker,
    DatabaseBusy,
    DatabaseCorrupt,
    DatabaseNotFound,
    MetadataLimitExceeded,
)
from txstore.storage.context import StorageContext
from txstore.storage.http_support import HTTPError, NodeResponse, header, request_headers, required_timestamp
from txstore.storage.listing import ListingParams, parse_listing_params

MetadataCheck = Callable[[dict[str, str]], str | None]  # the merged live items → a refusal's reason

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})

B = TypeVar("B", bound=DatabaseBroker)
T = TypeVar("T")


def check_name_length(what: str, name: str, limit: int) -> None:
    """400 when ``name`` (of an account, container or object) is longer than ``limit`` bytes."""
    if len(name.encode("utf-8")) > limit:
        raise HTTPError(400, f"{what} name longer than {limit} bytes")


def true_header(request: Request, name: str) -> bool:
    value = header(request, name)
    return value is not None and value.strip().lower() in _TRUE


def canonical_header(name: str) -> str:
    """``x-container-meta-color`` → ``X-Container-Meta-Color``: the form metadata is stored in."""
    return "-".join(word.capitalize() for word in name.split("-"))


@frozen
class MetadataRules:
    """
    Which request headers a container or account stores, and how they are removed.

    User metadata (``X-<Kind>-Meta-*``) and system metadata (``X-<Kind>-Sysmeta-*``, set by
    middleware) are stored along with a few named headers (ACLs, sync and versioning targets)
    that the proxy reads back from a HEAD. An empty value or ``X-Remove-<name>`` removes an item.
    A value sent in the same request overrides a removal.
    """

    kind: str  # "container" or "account"
    named: tuple[str, ...] = ()

    @property
    def _prefixes(self) -> tuple[str, str]:
        return (f"x-{self.kind}-meta-", f"x-{self.kind}-sysmeta-")

    def _stored_name(self, lowered: str) -> str | None:
        if lowered.startswith(self._prefixes) and lowered not in self._prefixes:
            return canonical_header(lowered)
        for name in self.named:
            if lowered == name.lower():
                return name
        return None

    def updates(self, request: Request, timestamp: Timestamp) -> dict[str, tuple[str, str]]:
        """The broker's ``update_metadata`` argument for this request's headers."""
        removals: dict[str, tuple[str, str]] = {}
        values: dict[str, tuple[str, str]] = {}
        for name, value in request_headers(request):
            lowered = name.lower()
            if lowered.startswith("x-remove-"):
                stored = self._stored_name("x-" + lowered[len("x-remove-"):])
                if stored is not None and not stored.lower().startswith(f"x-{self.kind}-sysmeta-"):
                    removals[stored] = ("", timestamp.internal)
                continue
            stored = self._stored_name(lowered)
            if stored is not None:
                values[stored] = (value.strip(), timestamp.internal)
        return {**removals, **values}

    def stored_limits(self, context: StorageContext) -> MetadataCheck:
        """What ``update_metadata`` checks a client's merged metadata with (Swift's totals)."""
        return partial(check_stored_metadata, kind=self.kind, limits=context.constraints)

    def check(self, request: Request, context: StorageContext) -> None:
        """
        HTTPError 400 with the reason when the user metadata breaks the limits, or when a
        value to store is not valid UTF-8 (SQLite text cannot hold it).
        """
        headers = request_headers(request)
        for name, value in headers:
            if self._stored_name(name.lower()) is None:
                continue
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise HTTPError(400, f"{name} is not valid UTF-8") from None
        reason = check_metadata(headers, self.kind, context.constraints)
        if reason is not None:
            raise HTTPError(400, reason)


def backend_timestamps(info: ContainerInfo | AccountInfo) -> dict[str, str]:
    """
    The headers that let a proxy tell a newer replica from an older one, even when the answer
    is a 404 for a deleted database.
    """
    return {
        "X-Backend-Timestamp": info.created_at.internal,
        "X-Backend-Put-Timestamp": info.put_timestamp.internal,
        "X-Backend-Delete-Timestamp": info.delete_timestamp.internal,
        "X-Backend-Status-Changed-At": info.status_changed_at.internal,
    }


def listing_request(request: Request, max_limit: int) -> tuple[ListingParams, ListingFormat]:
    """The checked listing parameters and output format of a GET."""
    try:
        params = parse_listing_params(request.args, max_limit=max_limit,
                                      allow_reserved=true_header(request, ALLOW_RESERVED))
        fmt = listing_format(request.args, header(request, "Accept"))
    except ListingError as err:
        raise HTTPError(err.status, err.reason) from None
    return params, fmt


def format_only(request: Request) -> ListingFormat:
    """The negotiated format of a HEAD (its Content-Type); 406 or 400 as for a GET."""
    try:
        return listing_format(request.args, header(request, "Accept"))
    except ListingError as err:
        raise HTTPError(err.status, err.reason) from None


def without_path(params: ListingParams) -> ListingParams:
    """Account listings ignore ``path``, as Swift's do."""
    return evolve(params, path=None)


def respond(
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> NodeResponse:
    """An answer with ``headers``, then its type and length; a 204 carries neither body nor length."""
    items = dict(headers.items() if isinstance(headers, Mapping) else headers)
    if content_type is not None:
        items["Content-Type"] = content_type
    if status == 204:
        return NodeResponse(status, items)
    items["Content-Length"] = str(len(body))
    return NodeResponse(status, items, body)


def _no_space(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in _NO_SPACE
    return isinstance(err, sqlite3.OperationalError) and "full" in str(err).lower()


@define
class DatabaseAccess(Generic[B]):
    """
    Finds and opens the databases of one kind on this node's devices, and runs broker work in
    the device's pool, turning the database's own errors into HTTP errors:

    - ``DatabaseNotFound`` → 404; ``DatabaseBusy`` → 503; a full disk → 507; ``ValueError``
      (a name or value the database refuses) → 400;
    - ``DatabaseCorrupt`` → the database is quarantined, its broker closed, and the answer is
      404, as if the database were missing. Replication brings back a good copy.
    """

    context: StorageContext
    kind: str  # "containers" or "accounts"
    make_broker: Callable[[Path, Path], B]  # (db path, tmp dir)
    cache: BrokerCache[B]
    log = Logger()

    async def broker(self, path: BackendPath) -> B:
        """The (cached) broker of the database that ``path`` names; 507 if the device is not there."""
        device_path = await self.context.checked_device(path.device)
        if path.container is not None and self.kind == "containers":
            db_hash = self.context.hasher.hash_path(path.account, path.container)
        else:
            db_hash = self.context.hasher.hash_path(path.account)
        assert isinstance(db_hash, str)
        return self.broker_at(path.device, database_path(device_path, self.kind, path.partition, db_hash))

    def broker_at(self, device: str, db_path: Path) -> B:
        """The (cached) broker of the database file ``db_path`` (as `database_path` builds it)."""
        device_path = db_path.parents[4]
        return self.cache.get(device, db_path, lambda p: self.make_broker(p, device_path / "tmp"))

    async def call(self, path: BackendPath, function: Callable[..., T], *args: Any) -> T:
        """``function(broker, *args)`` for the database ``path`` names, as `run` runs it."""
        return await self.run(path, await self.broker(path), function, *args)

    async def run(self, path: BackendPath, broker: B, function: Callable[..., T], *args: Any) -> T:
        """``function(broker, *args)`` in the device's pool, with the errors above translated."""
        try:
            return await self.context.runner.run(path.device, function, broker, *args)
        except DatabaseNotFound:
            raise HTTPError(404, "Not Found") from None
        except DatabaseBusy:
            raise HTTPError(503, "Service Unavailable: the database is busy") from None
        except DatabaseCorrupt as err:
            await self.quarantine(path.device, broker.path, str(err))
            raise HTTPError(404, "Not Found") from None
        except (OSError, sqlite3.OperationalError) as err:
            if _no_space(err):
                raise HTTPError(507, f"Insufficient Storage: {err}") from None
            raise
        except MetadataLimitExceeded as err:
            raise HTTPError(400, err.reason) from None
        except ValueError as err:
            raise HTTPError(400, str(err)) from None

    async def quarantine(self, device: str, db_path: Path, reason: str) -> Path | None:
        """
        Take a damaged database out of service (a request found it, or an auditor): close its
        cached broker first, so no pooled connection keeps serving the moved file.
        """
        await self.cache.discard(db_path)
        device_path = await self.context.checked_device(device)
        moved = await self.context.runner.run(device, quarantine_database, device_path, self.kind, db_path)
        self.log.error(
            "quarantined the damaged database {db} to {target}: {reason}",
            db=str(db_path), target=str(moved), reason=reason,
        )
        return moved


# -- broker work both servers share (runs in the device's I/O pool) ------------------------------


@frozen
class Change:
    """What a PUT or DELETE did: the answer's status, and the database's info after it."""

    status: int
    info: Any


@frozen
class DatabaseRead:
    """What a HEAD or GET needs, read in one call: info, live metadata, the rendered listing."""

    info: Any
    metadata: dict[str, tuple[str, str]]
    body: bytes | None


def create_database(broker: Any, *identity: Any, **columns: Any) -> bool:
    """
    ``broker.initialize(*identity, **columns)``: True when this created the database, False
    when one was there already (or another request created it a moment ago).
    """
    try:
        broker.initialize(*identity, **columns)
    except DatabaseAlreadyExists:
        return False
    broker.close()  # idle connections from before would still point at a quarantined file
    return True


def read_database(
    broker: Any, listing: ListingParams | None, is_deleted: Callable[[Any], bool],
    render: Callable[[list], bytes],
) -> DatabaseRead:
    info = broker.get_info()
    if is_deleted(info):
        return DatabaseRead(info, {}, None)
    body = render(broker.list(**listing.as_kwargs())) if listing is not None else None
    return DatabaseRead(info, broker.metadata, body)


def post_metadata(broker: Any, metadata: dict[str, tuple[str, str]], is_deleted: Callable[[Any], bool],
                  check: MetadataCheck | None = None, touch: Timestamp | None = None) -> Any:
    """
    A POST: merge the metadata unless the database is deleted (metadata that ``check``
    refuses changes nothing), and with ``touch`` take it as the put timestamp (a container's
    ``Last-Modified``, as in Swift). The info before it.
    """
    info = broker.get_info()
    if not is_deleted(info):
        if metadata:
            broker.update_metadata(metadata, check)
        if touch is not None:
            broker.update_put_timestamp(touch)
    return info


# -- the HTTP side both servers share ---------------------------------------------------------------


@define
class DatabaseServer(Generic[B]):
    """
    What the account and container servers share: their brokers (cached, run in the device's
    pool), the methods they answer, POST, and HEAD/GET with its listing. Subclasses say what
    kind of database they serve, when it counts as deleted, and what its headers say.
    """

    context: StorageContext
    cache_size: int = DEFAULT_CAPACITY
    _db: DatabaseAccess[B] = field(init=False)
    log = Logger()

    _kind: ClassVar[str]  # "accounts" or "containers"
    _broker_type: ClassVar[Callable[..., Any]]  # B, built with (path, tmp_dir=...)
    _metadata: ClassVar[MetadataRules]
    _deleted_headers: ClassVar[dict[str, str]] = {}  # what the 404 of a deleted database adds
    _listing_by_path: ClassVar[bool] = True  # False: ``path`` is ignored (account listings)

    def __attrs_post_init__(self) -> None:
        cache: BrokerCache[B] = BrokerCache(self.context.runner, self.cache_size)
        broker_type = self._broker_type
        self._db = DatabaseAccess(self.context, self._kind, lambda path, tmp: broker_type(path, tmp_dir=tmp), cache)

    def close(self) -> Deferred:
        """Close the cached brokers (when the node stops, before its I/O pools)."""
        return self._db.cache.close()

    @property
    def databases(self) -> DatabaseAccess[B]:
        """How this server finds and opens its databases (shared with replication)."""
        return self._db

    async def handle(self, request: Request, path: BackendPath) -> NodeResponse:
        """``/<device>/<partition>/<account>[/<container>]``: PUT, DELETE, POST, HEAD, GET."""
        method = request.method
        if method == b"PUT":
            return await self._put(request, path)
        if method == b"DELETE":
            return await self._delete(request, path)
        if method == b"POST":
            return await self._post(request, path)
        if method in (b"GET", b"HEAD"):
            return await self._get(request, path)
        raise HTTPError(405, "Method Not Allowed", {"Allow": "DELETE, GET, HEAD, POST, PUT"})

    # -- what subclasses say ---------------------------------------------------------------

    @staticmethod
    def _is_deleted(info: Any) -> bool:
        raise NotImplementedError

    async def _put(self, request: Request, path: BackendPath) -> NodeResponse:
        raise NotImplementedError

    async def _delete(self, request: Request, path: BackendPath) -> NodeResponse:
        raise NotImplementedError

    def _touch(self, request: Request, timestamp: Timestamp) -> Timestamp | None:
        """The put timestamp a POST sets (None: none)."""
        return None

    def _listing_limit(self) -> int:
        raise NotImplementedError

    def _render(self, fmt: ListingFormat, path: BackendPath, items: list) -> bytes:
        """A listing page's body (in the pool thread)."""
        raise NotImplementedError

    def _info_headers(self, info: Any) -> dict[str, str]:
        """What a HEAD or GET says of the database, deleted or not."""
        return backend_timestamps(info)

    def _stats_headers(self, info: Any) -> dict[str, str]:
        """What a HEAD or GET says of a live database: its stats and times."""
        raise NotImplementedError

    # -- requests --------------------------------------------------------------------------

    def _metadata_updates(self, request: Request) -> tuple[Timestamp, dict[str, tuple[str, str]]]:
        """A PUT's or POST's timestamp and the metadata it stores (400 when it breaks the limits)."""
        timestamp = required_timestamp(request)
        self._metadata.check(request, self.context)
        return timestamp, self._metadata.updates(request, timestamp)

    async def _post(self, request: Request, path: BackendPath) -> NodeResponse:
        timestamp, metadata = self._metadata_updates(request)
        touch = self._touch(request, timestamp)
        info = await self._db.call(path, post_metadata, metadata, self._is_deleted,
                                   self._metadata.stored_limits(self.context), touch)
        if self._is_deleted(info):
            raise HTTPError(404, "Not Found", {**backend_timestamps(info), **self._deleted_headers})
        return respond(204)

    async def _get(self, request: Request, path: BackendPath) -> NodeResponse:
        listing: ListingParams | None = None
        if request.method == b"GET":
            listing, fmt = listing_request(request, self._listing_limit())
            if not self._listing_by_path:
                listing = without_path(listing)
        else:
            fmt = format_only(request)
        read = await self._db.call(path, read_database, listing, self._is_deleted,
                                   partial(self._render, fmt, path))
        headers = self._info_headers(read.info)
        if self._is_deleted(read.info):
            raise HTTPError(404, "Not Found", {**headers, **self._deleted_headers})
        headers.update(self._stats_headers(read.info))
        for name, (value, _ts) in read.metadata.items():
            headers[name] = value
        if read.body is None or (fmt.name == "plain" and not read.body):
            return respond(204, headers, content_type=fmt.content_type)
        return respond(200, headers, read.body, fmt.content_type)
