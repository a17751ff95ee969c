# -*- test-case-name: txstore.test.unit.test_object_versioning -*-
"""
object_versioning: Swift's newer versioning API (``X-Versions-Enabled``), as Swift has it.

Enabling. A PUT or POST of a container with ``X-Versions-Enabled: true`` creates the hidden
container ``\\x00versions\\x00<container>`` (a reserved name, `txstore.common.paths`: no client
can name it) in the container's storage policy and records it in the container's system
metadata (``X-Container-Sysmeta-Versions-Container``, quoted, and ``-Versions-Enabled``);
``X-Versions-Enabled: false`` suspends versioning, the versions staying as they are. A
container versioned the legacy way (``X-Versions-Location``/``X-History-Location``) cannot be:
400. A HEAD or GET shows ``X-Versions-Enabled`` and counts the hidden container's bytes in
``X-Container-Bytes-Used``. A DELETE is refused (409) while the hidden container holds
anything (versions or delete markers), and deletes the hidden container first.

Writing. While enabled, a PUT's bytes go to ``\\x00versions\\x00<container>/\\x00<object>\\x00<inv>``,
where ``<inv>`` is the inverted version id (999999999999999 ticks minus the id's, as a
timestamp: newer versions sort first), and the object in the user's container becomes a
*static symlink* to it (the symlink middleware's system metadata, the target's ETag and size,
``X-Object-Sysmeta-Versions-Symlink: true``, and the permission to follow it into a reserved
name); the answer carries ``X-Object-Version-Id: <id>`` (a timestamp, ``1700000000.12345``).
An object written while versioning was off (version ``null``) is first copied into the hidden
container under its own timestamp. A DELETE writes a zero-byte *delete marker*
(``application/x-deleted;swift_versions_deleted=1``) as a new version and deletes the link; its
answer (204, or 404 when there was nothing) carries the marker's id. A POST goes to the link,
whose 307 (the symlink middleware's) is followed to the version, so metadata changes without a
new version. While suspended, requests pass as they are (version ``null``).

Reading. A GET or HEAD follows the link (the symlink middleware, below) and answers
``X-Object-Version-Id`` and ``Content-Location: /v1/<a>/<c>/<o>?version-id=<id>`` (``null`` for
an object that is not a link into the hidden container).

``?version-id=<id>``: GET, HEAD and DELETE act on that version (``null``: the object in the
user's container, if it is not a versioned link); a delete marker reads as 404. DELETE of the
current version deletes the link too, so the object is gone (404); of another version, only that
version. The answer says ``X-Object-Version-Id`` and ``X-Object-Current-Version-Id``. A PUT with
an empty body makes that version the current one (a new link to it); a POST is refused (400), as
is a version-id that is not a timestamp or an id on a container never versioned. COPY reads the
version (the copy middleware passes the parameter to its read).

``?versions`` container listings (JSON only: 406 otherwise) list every version of every object,
newest first for each name, with ``version_id`` and ``is_latest``, ``version_marker`` with
``marker`` to page; plain listings show the links as the objects they stand for
(``version_symlink: true``, the version's size and ETag).

Order: below slo and dlo and above symlink, as Swift's ``versioned_writes`` filter that holds
it; it reads its containers' system metadata through the proxy's container info cache.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from hashlib import md5
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from twisted.internet.defer import Deferred
from zope.interface import implementer

from txstore.common.listing_format import JSON
from txstore.common.paths import ALLOW_RESERVED, RESERVED, reserved_name, split_reserved_name
from txstore.common.timestamps import Timestamp
from txstore.interfaces import IByteSource
from txstore.middleware.base import ApiMiddleware, Middleware, read_whole
from txstore.middleware.listing_formats import media_type, set_json_body
from txstore.proxy import subrequest
from txstore.proxy.messages import TRUE_VALUES, BytesSource, HeaderMap, SwiftRequest, SwiftResponse

SOURCE = "OV"
DELETE_MARKER_CONTENT_TYPE = "application/x-deleted;swift_versions_deleted=1"
CLIENT_ENABLED = "X-Versions-Enabled"
SYSMETA_ENABLED = "X-Container-Sysmeta-Versions-Enabled"
SYSMETA_CONTAINER = "X-Container-Sysmeta-Versions-Container"
VERSIONS_SYMLINK = "X-Object-Sysmeta-Versions-Symlink"
VERSION_ID = "X-Object-Version-Id"
CURRENT_VERSION_ID = "X-Object-Current-Version-Id"
# The symlink middleware's system metadata (txstore.middleware.symlink), written directly: the
# link's target is known, so it is not checked again (and cannot be: a reserved name).
LINK_TARGET = "X-Object-Sysmeta-Symlink-Target"
LINK_ACCOUNT = "X-Object-Sysmeta-Symlink-Target-Account"
LINK_ETAG = "X-Object-Sysmeta-Symlink-Target-Etag"
LINK_BYTES = "X-Object-Sysmeta-Symlink-Target-Bytes"
LINK_SYMLOOP_EXTEND = "X-Object-Sysmeta-Symloop-Extend"  # this link does not count towards symloop_max
LINK_ALLOW_RESERVED = "X-Object-Sysmeta-Allow-Reserved-Names"  # it may be followed into a reserved name
LISTING_ETAG = "X-Object-Sysmeta-Container-Update-Override-Etag"
LISTING_SIZE = "X-Object-Sysmeta-Container-Update-Override-Size"
SLO_ETAG = "X-Object-Sysmeta-Slo-Etag"
SLO_SIZE = "X-Object-Sysmeta-Slo-Size"
EMPTY_ETAG = md5(b"", usedforsecurity=False).hexdigest()
# What the link does not take from the client's PUT: it is a zero-byte static link.
NOT_FOR_LINK = ("ETag", "X-If-Delete-At", "X-Symlink-Target", "X-Symlink-Target-Account", "X-Symlink-Target-Etag",
                "X-Object-Manifest", "X-Static-Large-Object", SLO_ETAG, SLO_SIZE, LISTING_SIZE,
                "X-Object-Sysmeta-Container-Update-Override-Content-Type", "Transfer-Encoding")
EXPIRY = ("x-delete-at", "x-delete-after")
# A version's copy from its source: not what describes the answer rather than the object.
NOT_COPIED = ("x-timestamp", "content-location", "x-trans-id", "x-openstack-request-id", "date", "accept-ranges",
              "last-modified", "connection", "transfer-encoding", "x-backend-", "x-symlink-")
INVERTED_TICKS = 999_999_999_999_999
NO_VERSIONS_CONTAINER = "The versions container does not exist. You may want to re-enable object versioning."
MAX_LISTING = 10_000

OPTIONS = ()


def inverted(version: Timestamp) -> str:
    """The internal form of a version's inverted timestamp: newer versions sort first."""
    if version.offset:
        raise ValueError("a version id has no offset")
    return Timestamp(INVERTED_TICKS - version.ticks).internal


def version_object(obj: str, version: Timestamp) -> str:
    """``\\x00<obj>\\x00<inverted id>``: where a version of ``obj`` is kept."""
    return reserved_name(obj, inverted(version))


def split_version(name: str) -> tuple[str, Timestamp | None]:
    """(object, version id) of a hidden container's object name; (name, None) for any other."""
    try:
        obj, inv = split_reserved_name(name)
        ticks = INVERTED_TICKS - Timestamp.parse(inv).ticks
        return obj, Timestamp(ticks)
    except (ValueError, TypeError):
        return name, None


def versions_container_name(container: str) -> str:
    return reserved_name("versions", container)


def parse_version(value: str) -> Timestamp:
    """A ``version-id`` that is a timestamp without offset; ValueError otherwise."""
    stamp = Timestamp.parse(value)
    if stamp.offset:
        raise ValueError("a version id has no offset")
    return stamp


def true(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_VALUES


def plain(status: int, text: str, headers: dict[str, str] | None = None) -> SwiftResponse:
    response = SwiftResponse(status, HeaderMap(headers or {}), text.encode("utf-8"))
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["Content-Length"] = str(len(response.body))
    return response


class Refused(Exception):
    """A step failed: ``response`` is the answer."""

    def __init__(self, response: SwiftResponse) -> None:
        super().__init__(response.status)
        self.response = response


async def _json_list(response: SwiftResponse) -> list | None:
    """The response's body read whole (and kept as its body) as a JSON list; None when it is not one."""
    data = await read_whole(response)
    response.body = data
    try:
        listing = json.loads(data)
    except ValueError:
        return None
    return listing if isinstance(listing, list) else None


def check(response: SwiftResponse) -> None:
    """Swift's rule for a step's answer: 2xx goes on; 404 → 412, other 4xx as they are, else 503."""
    if response.status // 100 == 2:
        return
    if response.status // 100 == 4:
        if response.status == 404:
            response.discard_body()
            raise Refused(plain(412, "Precondition Failed"))
        raise Refused(response)
    response.discard_body()
    raise Refused(plain(503, "Service Unavailable"))


@implementer(IByteSource)
class CountedSource:
    """A body source that counts what it hands on (a chunked PUT's size)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.count = 0

    def read(self) -> Deferred:
        def counted(data: bytes) -> bytes:
            self.count += len(data)
            return data

        return self.source.read().addCallback(counted)

    def stop(self) -> None:
        self.source.stop()


class VersioningInfo:
    """What a container's info says of its versioning (and the info, for the authorizer)."""

    def __init__(self, info: Any) -> None:
        self.info = info
        self.status: int = info.status
        sysmeta = getattr(info, "sysmeta", None) or {}
        location = sysmeta.get("versions-container") or ""
        self.versions_container = unquote(location).split("/")[0] if location else ""
        self.enabled = true(sysmeta.get("versions-enabled"))
        self.legacy = bool(sysmeta.get("versions-location") or getattr(info, "versions", None))
        self.policy_index: int = getattr(info, "policy_index", 0)

    @property
    def exists(self) -> bool:
        return 200 <= self.status < 300


ContainerLookup = Callable[[SwiftRequest, str, str], Awaitable[Any]]


class ObjectVersioning(ApiMiddleware):
    depth = 1

    def __init__(self, app, lookup: ContainerLookup, policy_name: Callable[[int], str | None],
                 clock: Callable[[], float]) -> None:
        self.app = app
        self.lookup = lookup
        self.policy_name = policy_name
        self.clock = clock

    async def handle(self, request: SwiftRequest, account: str, container: str | None,
                     obj: str | None) -> SwiftResponse:
        try:
            if container is None:
                if request.method == "GET":
                    return await self._account_listing(request, account)
                return await self.app(request)
            if obj is None:
                return await self._container(request, account, container)
            return await self._object(request, account, container, obj)
        except Refused as refused:
            request.discard_body()
            return refused.response

    async def _info(self, request: SwiftRequest, account: str, container: str) -> VersioningInfo:
        return VersioningInfo(await self.lookup(request, account, container))

    def _sub(self, parent: SwiftRequest, method: str, path: str, *, headers: dict[str, str] | None = None,
             query: str = "", body: Any = None, system: bool = True) -> SwiftRequest:
        sent = dict(headers or {})
        if RESERVED in path:
            sent[ALLOW_RESERVED] = "true"
        return subrequest.make(parent, method, path, source=SOURCE, headers=sent, query=query, body=body,
                               system=system)

    def _version_id(self) -> Timestamp:
        return Timestamp.from_seconds(self.clock())

    # --- containers ------------------------------------------------------------------------

    async def _container(self, request: SwiftRequest, account: str, container: str) -> SwiftResponse:
        if request.method in ("PUT", "POST") and CLIENT_ENABLED in request.headers:
            return await self._enable(request, account, container)
        if request.method == "DELETE":
            return await self._delete_container(request, account, container)
        response = await self.app(request)
        enabled = response.headers.get(SYSMETA_ENABLED)
        if enabled is not None:
            response.headers[CLIENT_ENABLED] = enabled
        location = unquote(response.headers.get(SYSMETA_CONTAINER) or "")
        if location and "X-Container-Bytes-Used" in response.headers and response.status // 100 == 2:
            head = await self.app(self._sub(request, "HEAD", f"/v1/{account}/{location}"))
            head.discard_body()
            if head.status // 100 == 2:
                used = int(response.headers.get("X-Container-Bytes-Used") or 0)
                used += int(head.headers.get("X-Container-Bytes-Used") or 0)
                response.headers["X-Container-Bytes-Used"] = str(used)
        elif response.status // 100 == 2 and not location:
            # never versioned, as far as the info says: a ?versions listing looks anyway
            location = versions_container_name(container) if RESERVED not in container else ""
        if request.method != "GET" or response.status not in (200, 204):
            return response
        if response.status == 204:
            if "versions" not in request.params:
                return response
            response.body = b"[]"
        return await self._edit_listing(request, response, account, container, location)

    async def _enable(self, request: SwiftRequest, account: str, container: str) -> SwiftResponse:
        info = await self._info(request, account, container)
        if info.legacy:
            raise Refused(plain(400, "Cannot enable object versioning on a container that is already using the "
                                     "legacy versioned writes feature."))
        self._authorize(request, info, account, container, None)
        enabled = true(request.headers.pop(CLIENT_ENABLED))
        request.headers[SYSMETA_ENABLED] = "True" if enabled else "False"
        created = None
        if enabled:
            headers = {}
            if info.exists:
                name = self.policy_name(info.policy_index)
                if name:
                    headers["X-Storage-Policy"] = name
            elif request.method == "PUT" and request.header("X-Storage-Policy"):
                headers["X-Storage-Policy"] = request.headers["X-Storage-Policy"]
            created = versions_container_name(container)
            made = await self.app(self._sub(request, "PUT", f"/v1/{account}/{created}", headers=headers))
            made.discard_body()
            if made.status // 100 != 2 and made.status != 409:
                raise Refused(plain(500, "Error enabling object versioning"))
            request.headers[SYSMETA_CONTAINER] = quote(created.encode("utf-8"))
        response = await self.app(request)
        if response.status // 100 != 2 and created and not info.versions_container:
            undone = await self.app(self._sub(request, "DELETE", f"/v1/{account}/{created}"))
            undone.discard_body()
        return response

    async def _delete_container(self, request: SwiftRequest, account: str, container: str) -> SwiftResponse:
        """
        Refused (409) while the hidden container holds anything; the hidden container goes once
        the container itself is gone (so a container that is not empty keeps its versioning).
        """
        info = await self._info(request, account, container)
        if not info.versions_container:
            return await self.app(request)
        self._authorize(request, info, account, container, None)
        path = f"/v1/{account}/{info.versions_container}"
        head = await self.app(self._sub(request, "HEAD", path))
        head.discard_body()
        if head.status // 100 == 2 and int(head.headers.get("X-Container-Object-Count") or 0) > 0:
            raise Refused(plain(409, "Delete all versions before deleting container."))
        if head.status // 100 != 2 and head.status != 404:
            raise Refused(plain(500, "Error deleting versioned container"))
        response = await self.app(request)
        if response.status // 100 == 2 and head.status != 404:
            gone = await self.app(self._sub(request, "DELETE", path))
            gone.discard_body()
            if gone.status // 100 != 2 and gone.status != 404:
                response.discard_body()
                raise Refused(plain(500, "Error deleting versioned container"))
        return response

    async def _edit_listing(self, request: SwiftRequest, response: SwiftResponse, account: str, container: str,
                            location: str) -> SwiftResponse:
        versions = "versions" in request.params
        if media_type(response) != JSON.media_type and not versions:
            return response
        listing = await _json_list(response)
        if listing is None:
            return response
        for item in listing:
            if not isinstance(item, dict) or not all(k in item for k in ("symlink_path", "symlink_etag",
                                                                             "symlink_bytes")):
                continue
            try:
                _v, target_account, target_container, target_obj = unquote(item["symlink_path"]).split("/", 4)[1:]
            except ValueError:
                continue
            if target_container != location:
                continue
            etag, _, params = str(item.get("hash", "")).partition(";")
            item["bytes"] = int(item.pop("symlink_bytes"))
            item["version_symlink"] = True
            item["hash"] = item.pop("symlink_etag") + (";" + params if params else "")
            name, version = split_version(target_obj)
            if version is not None and not versions:
                item["symlink_path"] = (quote(f"/v1/{target_account}/{container}/{name}".encode("utf-8"))
                                        + f"?version-id={version.internal}")
        if versions:
            return await self._list_versions(request, response, account, location, listing)
        set_json_body(response, listing)
        return response

    async def _list_versions(self, request: SwiftRequest, response: SwiftResponse, account: str, location: str,
                             primary: list[dict[str, Any]]) -> SwiftResponse:
        if not _wants_json(request):
            raise Refused(plain(406, "Not Acceptable"))
        request.environ["swift.format_listing"] = False  # JSON whatever listing_formats would make of it
        params = request.params
        marker = params.get("marker")
        version_marker = params.get("version_marker")
        if marker is not None and marker != "":
            if version_marker is None:
                marker = reserved_name(marker, "") + ":"  # past every version of that name
            elif version_marker == "null":
                marker = reserved_name(marker, "")  # before every version of that name
            else:
                try:
                    marker = version_object(marker, parse_version(version_marker))
                except ValueError:
                    raise Refused(plain(400, "invalid version_marker param")) from None
        elif version_marker is not None:
            raise Refused(plain(400, "version_marker param requires marker"))
        delimiter = params.get("delimiter", "")
        if set(delimiter) & set("0123456789." + RESERVED):
            raise Refused(plain(400, "invalid delimiter param"))
        try:
            limit = min(int(params.get("limit") or MAX_LISTING), MAX_LISTING)
        except ValueError:
            limit = MAX_LISTING
        reverse = true(params.get("reverse"))

        nulls: list[dict[str, Any]] = []
        subdirs: set[str] = set()
        current: dict[str, dict[str, Any]] = {}
        latest: set[str] = set()
        for item in primary:
            if "name" not in item:
                subdirs.add(item.get("subdir", ""))
            elif item.get("version_symlink"):
                current[unquote(item["symlink_path"])] = item
            else:
                nulls.append({**item, "version_id": "null", "is_latest": True})
                latest.add(item["name"])

        kept: list[dict[str, Any]] = []
        listed = None
        if location:
            query = {"format": "json", "prefix": reserved_name(params["prefix"]) if "prefix" in params else "",
                     "marker": marker or "", "limit": params.get("limit", ""), "delimiter": delimiter,
                     "reverse": params.get("reverse", "")}
            got = await self.app(self._sub(request, "GET", f"/v1/{account}/{location}",
                                           query="&".join(f"{k}={quote(v.encode('utf-8'), safe='')}"
                                                          for k, v in query.items())))
            if got.status == 200:
                try:
                    listed = json.loads(await read_whole(got))
                except ValueError:
                    listed = []
            elif got.status == 204:
                got.discard_body()
                listed = []
            elif got.status == 404:
                got.discard_body()
            else:
                return got
        for item in listed or []:
            if "name" not in item:
                try:
                    subdirs.add(split_reserved_name(item.get("subdir", ""))[0])
                except ValueError:
                    pass
                continue
            name, version = split_version(item["name"])
            if version is None:
                continue
            path = f"/v1/{account}/{location}/{item['name']}"
            if path in current:
                item["is_latest"] = True
                latest.add(name)
                del current[path]
            elif item.get("content_type") == DELETE_MARKER_CONTENT_TYPE and name not in latest:
                item["is_latest"] = True
                latest.add(name)
            else:
                item["is_latest"] = False
            item["name"] = name
            item["version_id"] = version.internal
            kept.append(item)
        broken = []
        for item in current.values():  # links whose version the listing did not show
            target = unquote(item["symlink_path"]).split("/", 4)[-1]
            name, version = split_version(target)
            if version is None:
                continue
            is_latest = listed is not None or name not in latest
            latest.add(name)
            broken.append({"name": name, "is_latest": is_latest, "version_id": version.internal,
                           "content_type": item["content_type"], "bytes": item["bytes"], "hash": item["hash"],
                           "last_modified": item["last_modified"]})
        merged = [*nulls, *kept, *({"subdir": s} for s in subdirs), *broken]
        merged.sort(key=lambda entry: entry.get("subdir", entry.get("name", "")), reverse=reverse)
        set_json_body(response, merged[:limit])
        response.status = 200
        response.headers["Content-Type"] = "application/json; charset=utf-8"
        return response

    async def _account_listing(self, request: SwiftRequest, account: str) -> SwiftResponse:
        """Each container's bytes with its hidden versions container's."""
        response = await self.app(request)
        if response.status != 200 or media_type(response) != JSON.media_type or request.allow_reserved:
            return response
        listing = await _json_list(response)
        if listing is None or not any(isinstance(i, dict) and "name" in i for i in listing):
            return response
        names = [item["name"] for item in listing if isinstance(item, dict) and "name" in item]
        # the hidden containers of this page's names: from just before the first one's to past the last's
        first = versions_container_name(min(names))
        query = "&".join(f"{k}={quote(v.encode('utf-8'), safe='')}" for k, v in {
            "format": "json", "prefix": versions_container_name(""), "marker": first[:-1] if len(first) > 1 else "",
            "end_marker": versions_container_name(max(names)) + "\x00"}.items())
        got = await self.app(self._sub(request, "GET", f"/v1/{account}", query=query,
                                       headers={ALLOW_RESERVED: "true"}))
        if got.status != 200:
            got.discard_body()
            return response
        try:
            hidden = json.loads(await read_whole(got))
        except ValueError:
            return response
        extra = {}
        for item in hidden if isinstance(hidden, list) else []:
            try:
                kind, name = split_reserved_name(item["name"])
            except (ValueError, KeyError, TypeError):
                continue
            if kind == "versions":
                extra[name] = int(item.get("bytes") or 0)
        if not extra:
            return response
        for item in listing:
            if isinstance(item, dict) and item.get("name") in extra:
                item["bytes"] = int(item.get("bytes") or 0) + extra[item["name"]]
        set_json_body(response, listing)
        return response

    # --- objects ---------------------------------------------------------------------------

    async def _object(self, request: SwiftRequest, account: str, container: str, obj: str) -> SwiftResponse:
        version = request.params.get("version-id")
        if not version and RESERVED in container:
            return await self.app(request)  # a hidden container's own objects: a middleware's request
        info = await self._info(request, account, container)
        if version:
            return await self._versioned_request(request, info, account, container, obj, version)
        if not info.versions_container:
            return await self.app(request)
        method = request.method
        if method == "PUT":
            return await self._put(request, info, account, container, obj)
        if method == "POST":
            return await self._post(request, info, account)
        if method == "DELETE":
            return await self._delete(request, info, account, container, obj)
        response = await self.app(request)
        self._show_version(response, info.versions_container, account, container, obj)
        return response

    def _show_version(self, response: SwiftResponse, versions: str, account: str, container: str,
                      obj: str) -> None:
        response.headers[VERSION_ID] = "null"
        location = unquote(response.headers.get("Content-Location") or "")
        if location:
            parts = location.split("/", 4)
            if len(parts) == 5 and parts[2] == account and parts[3] == versions:
                _name, version = split_version(parts[4])
                if version is not None:
                    response.headers[VERSION_ID] = version.internal
                    response.headers["Content-Location"] = (
                        quote(f"/v1/{account}/{container}/{obj}".encode("utf-8")) + f"?version-id={version.internal}")
        target = unquote(response.headers.get("X-Symlink-Target") or "")
        if target:
            target_container, _, target_obj = target.partition("/")
            if target_container == versions:
                _name, version = split_version(target_obj)
                if version is not None:
                    response.headers[VERSION_ID] = version.internal
                    response.headers["X-Symlink-Target"] = (
                        quote(f"{container}/{obj}".encode("utf-8")) + f"?version-id={version.internal}")

    def _authorize(self, request: SwiftRequest, info: VersioningInfo, account: str, container: str,
                   obj: str | None) -> None:
        """Whether the requester may do this, before the middleware does anything on its own behalf."""
        authorize = request.environ.get(subrequest.AUTHORIZE)
        if authorize is None or request.environ.get(subrequest.OVERRIDE):
            return
        decision = authorize(request, account, container, obj, info.info)
        if not decision.allowed:
            raise Refused(plain(decision.status or 403, "Unauthorized" if decision.status == 401 else "Forbidden"))

    async def _copy_current(self, request: SwiftRequest, info: VersioningInfo, account: str, container: str,
                            obj: str) -> None:
        """The object there now, if it is not a link to a version (written unversioned), kept as one."""
        self._authorize(request, info, account, container, obj)
        got = await self.app(self._sub(request, "GET", f"/v1/{account}/{container}/{obj}", query="symlink=get",
                                       headers={"X-Newest": "true"}))
        if got.status == 404:
            got.discard_body()
            return
        check(got)
        if true(got.headers.get(VERSIONS_SYMLINK)):
            got.discard_body()
            return
        stamp = got.headers.get("X-Timestamp")
        try:
            version = Timestamp.parse(stamp) if stamp else self._version_id()
            name = version_object(obj, Timestamp(version.ticks))
        except ValueError:
            name = version_object(obj, self._version_id())
        headers = {key: value for key, value in got.headers.items() if not key.lower().startswith(NOT_COPIED)}
        for key, value in got.headers.items():  # a link (read with ?symlink=get) kept as a version stays a link
            if key.lower().startswith("x-symlink-"):
                headers["X-Object-Sysmeta-Symlink-" + key[len("x-symlink-"):]] = value
        if "Content-Length" not in got.headers:
            headers["Transfer-Encoding"] = "chunked"
        put = await self.app(self._sub(request, "PUT", f"/v1/{account}/{info.versions_container}/{name}",
                                       headers=headers, body=got.body_source()))
        put.discard_body()
        if put.status == 404:
            raise Refused(plain(500, NO_VERSIONS_CONTAINER))
        check(put)

    async def _put(self, request: SwiftRequest, info: VersioningInfo, account: str, container: str,
                   obj: str) -> SwiftResponse:
        if not info.enabled:
            return await self.app(request)
        await self._copy_current(request, info, account, container, obj)
        version = self._version_id()
        name = version_object(obj, version)
        headers = {key: value for key, value in request.headers.items() if key.lower() not in EXPIRY}
        counted = CountedSource(request.body)
        put_request = self._sub(request, "PUT", f"/v1/{account}/{info.versions_container}/{name}",
                                headers=headers, body=counted)
        put = await self.app(put_request)
        put.discard_body()
        if put.status == 404:
            raise Refused(plain(500, NO_VERSIONS_CONTAINER))
        check(put)
        sent = put_request.headers  # as the middlewares below left them (a link's Content-Type)
        length = sent.get("Content-Length")
        size = sent.get(SLO_SIZE) or (length if length and length.isdigit() and "Transfer-Encoding" not in sent
                                      else str(counted.count))
        content_type = (sent.get("Content-Type") or "application/octet-stream").partition(";")[0].strip()
        # A static link kept as a version: the link to it records its target's ETag, which is
        # what the symlink middleware compares at each static link it follows.
        etag = (sent.get(LINK_ETAG) or put.headers.get("ETag") or "").strip('"')
        return await self._link(request, info, account, name, etag, size, content_type, version)

    async def _link(self, request: SwiftRequest, info: VersioningInfo, account: str, name: str, etag: str,
                    size: str, content_type: str, version: Timestamp) -> SwiftResponse:
        """The request becomes the PUT of the static link to version ``name``."""
        headers = request.headers
        override = headers.get(LISTING_ETAG)
        params = [piece.strip() for piece in override.split(";")[1:]] if override else []
        for header in NOT_FOR_LINK:
            headers.pop(header)
        headers.remove_prefix("x-object-sysmeta-symlink-")
        target = quote(f"{info.versions_container}/{name}".encode("utf-8"))
        headers[LINK_TARGET] = target
        headers[LINK_ETAG] = etag
        headers[LINK_BYTES] = size
        headers[LINK_SYMLOOP_EXTEND] = "true"
        headers[LINK_ALLOW_RESERVED] = "true"
        headers[VERSIONS_SYMLINK] = "true"
        headers["Content-Type"] = content_type
        headers["Content-Length"] = "0"
        params = [p for p in params if p and not p.startswith("symlink_")]
        headers[LISTING_ETAG] = "; ".join([EMPTY_ETAG, *params, f"symlink_target={target}",
                                           f"symlink_target_etag={etag}", f"symlink_target_bytes={size}"])
        request.body = BytesSource(b"")
        request.query = ""
        request.environ["swift.source"] = SOURCE
        response = await self.app(request)
        if response.status // 100 == 2:
            response.headers["ETag"] = etag
            response.headers[VERSION_ID] = version.internal
        return response

    async def _post(self, request: SwiftRequest, info: VersioningInfo, account: str) -> SwiftResponse:
        headers = {key: value for key, value in request.headers.items() if key.lower() not in EXPIRY}
        response = await self.app(request)
        if response.status != 307:
            return response
        location = unquote(response.headers.get("Location") or "")
        parts = location.split("/", 4)
        if len(parts) != 5 or parts[2] != account or parts[3] != info.versions_container:
            return response
        response.discard_body()
        return await self.app(self._sub(request, "POST", location, headers=headers))

    async def _delete(self, request: SwiftRequest, info: VersioningInfo, account: str, container: str,
                      obj: str) -> SwiftResponse:
        if not info.enabled:
            return await self.app(request)
        await self._copy_current(request, info, account, container, obj)
        version = self._version_id()
        marker = await self.app(self._sub(
            request, "PUT", f"/v1/{account}/{info.versions_container}/{version_object(obj, version)}",
            headers={"Content-Type": DELETE_MARKER_CONTENT_TYPE, "Content-Length": "0"}))
        marker.discard_body()
        check(marker)
        response = await self.app(request)
        if response.status // 100 == 2 or response.status == 404:
            response.headers[VERSION_ID] = version.internal
        return response

    async def _head_link(self, request: SwiftRequest, account: str, container: str,
                         obj: str) -> tuple[bool, str | None]:
        """(whether there is no current object, the version it links to if it is a version's link)."""
        head = await self.app(self._sub(request, "HEAD", f"/v1/{account}/{container}/{obj}", query="symlink=get",
                                        headers={"X-Newest": "true"}))
        head.discard_body()
        if head.status == 404:
            return True, None
        check(head)
        if true(head.headers.get(VERSIONS_SYMLINK)):
            return False, head.headers.get("X-Symlink-Target")
        return False, None

    async def _versioned_request(self, request: SwiftRequest, info: VersioningInfo, account: str, container: str,
                                 obj: str, version: str) -> SwiftResponse:
        method = request.method
        if method == "POST":
            raise Refused(plain(400, f"{method} to a specific version is not allowed"))
        if not info.versions_container and version != "null":
            raise Refused(plain(400, "version-aware operations require that the container is versioned"))
        stamp = None
        if version != "null":
            try:
                stamp = parse_version(version)
                version_object(obj, stamp)
            except ValueError:
                raise Refused(plain(400, "Invalid version parameter")) from None
        if method == "DELETE":
            return await self._delete_version(request, info, account, container, obj, version, stamp)
        if method == "PUT":
            if stamp is None:
                raise Refused(plain(400, "Invalid version parameter"))
            return await self._put_version(request, info, account, obj, stamp)
        if stamp is None:
            request.query = _without_version(request.query)
            response = await self.app(request)
            if response.status // 100 == 2:
                if versions_container_name("") in unquote(response.headers.get("Content-Location") or ""):
                    response.discard_body()  # the current object is a version's link, not version null
                    return plain(404, "Not Found")
                response.headers[VERSION_ID] = "null"
            return response
        request.path = quote(f"/v1/{account}/{info.versions_container}/{version_object(obj, stamp)}"
                             .encode("utf-8"))
        request.headers[ALLOW_RESERVED] = "true"
        request.query = _without_version(request.query)
        response = await self.app(request)
        if response.status // 100 == 2:
            response.headers[VERSION_ID] = stamp.internal
        marker = response.headers.get("X-Backend-Content-Type") or response.headers.get("Content-Type")
        if marker == DELETE_MARKER_CONTENT_TYPE:
            response.discard_body()
            answer = SwiftResponse(404, HeaderMap({VERSION_ID: stamp.internal,
                                                  "Content-Type": DELETE_MARKER_CONTENT_TYPE}), b"")
            answer.headers["Content-Length"] = "0"
            return answer
        return response

    async def _delete_version(self, request: SwiftRequest, info: VersioningInfo, account: str, container: str,
                              obj: str, version: str, stamp: Timestamp | None) -> SwiftResponse:
        if stamp is None:
            request.query = _without_version(request.query)
            return await self.app(request)  # the object itself, whatever it is
        gone, link = await self._head_link(request, account, container, obj)
        name = version_object(obj, stamp)
        wanted = f"{info.versions_container}/{name}"
        current = "null"
        if gone or not link or unquote(link) != wanted:
            if link and not gone:
                _name, linked = split_version(unquote(link).partition("/")[2])
                current = linked.internal if linked is not None else "null"
        else:
            # the current version: the link goes first, then its version
            unlink = self._sub(request, "DELETE", f"/v1/{account}/{container}/{obj}", system=False)
            unlinked = await self.app(unlink)
            check(unlinked)
            unlinked.discard_body()
        request.path = quote(f"/v1/{account}/{info.versions_container}/{name}".encode("utf-8"))
        request.headers[ALLOW_RESERVED] = "true"
        request.query = _without_version(request.query)
        response = await self.app(request)
        response.headers[VERSION_ID] = version
        response.headers[CURRENT_VERSION_ID] = current
        return response

    async def _put_version(self, request: SwiftRequest, info: VersioningInfo, account: str, obj: str,
                           stamp: Timestamp) -> SwiftResponse:
        length = request.header("Content-Length")
        if length is None:
            if request.header("Transfer-Encoding") is None:
                raise Refused(plain(411, "Length Required"))
            has_body = bool(await request.body.read())
        else:
            has_body = length.strip() != "0"
        if has_body:
            raise Refused(plain(400, "PUT version-id requests require a zero byte body"))
        name = version_object(obj, stamp)
        head = await self.app(self._sub(request, "HEAD", f"/v1/{account}/{info.versions_container}/{name}",
                                        query="symlink=get"))
        head.discard_body()
        if head.status == 404:
            there = await self.app(self._sub(request, "HEAD", f"/v1/{account}/{info.versions_container}"))
            there.discard_body()
            if there.status // 100 == 2:
                raise Refused(plain(404, "The specified version does not exist"))
            raise Refused(plain(500, NO_VERSIONS_CONTAINER))
        check(head)
        return await self._link(request, info, account, name, (head.headers.get("ETag") or "").strip('"'),
                                head.headers.get("Content-Length") or "0",
                                head.headers.get("Content-Type") or "application/octet-stream", stamp)


def _without_version(query: str) -> str:
    return "&".join(piece for piece in query.split("&") if piece and piece.partition("=")[0] != "version-id")


def _wants_json(request: SwiftRequest) -> bool:
    """
    Whether the client can take JSON: ``format=json``, or no format and an ``Accept`` that
    allows ``application/json`` (or none). listing_formats, above, says what the client asked.
    """
    query, accept = request.environ.get("swift.listing_asked", (request.query, request.header("Accept")))
    asked = dict(parse_qsl(query, keep_blank_values=True)).get("format")
    if asked:
        return asked.strip().lower() == "json"
    if not accept or not accept.strip():
        return True
    best: tuple[int, float] | None = None
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        kind, _, subtype = media.lower().partition("/")
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    return False
        specificity = {("*", "*"): 0, ("application", "*"): 1, ("application", "json"): 2}.get((kind, subtype))
        if specificity is not None and (best is None or (specificity, quality) > best):
            best = (specificity, quality)
    return best is not None and best[1] > 0


def _build(app, settings: dict[str, Any], proxy) -> ObjectVersioning:
    from txstore.proxy.controllers.base import container_info

    context = proxy.context

    async def lookup(request: SwiftRequest, account: str, container: str):
        return await container_info(context, account, container, request.trans_id)

    def policy_name(index: int) -> str | None:
        policy = context.policies.by_index(index) if hasattr(context.policies, "by_index") else None
        return policy.name if policy is not None else None

    proxy.info.register("object_versioning")
    return ObjectVersioning(app, lookup, policy_name, proxy.clock)


middleware = Middleware("object_versioning", _build, options=OPTIONS,
                        doc="Swift's X-Versions-Enabled versioning (within versioned_writes' filter).")
