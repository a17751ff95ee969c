# -*- test-case-name: txstore.test.unit.test_versioned_writes -*-
"""
versioned_writes: Swift's legacy object versioning (``X-Versions-Location``,
``X-History-Location``), as Swift's ``versioned_writes`` middleware has it.

A container is versioned when it names an archive container, in one of two modes:

``X-Versions-Location: <archive>`` (stack)
    A PUT (or COPY, or PUT with ``X-Copy-From``) over an existing object first copies that
    object to the archive container; a DELETE removes the current object and puts the newest
    archived version back in its place (deleting it from the archive), so an object with five
    versions takes five DELETEs to be gone.
``X-History-Location: <archive>`` (history)
    A PUT archives as above; a DELETE archives the current object, writes a zero-byte *delete
    marker* (``Content-Type: application/x-deleted;swift_versions_deleted=1``) in the archive,
    then deletes the object: it answers 404 from then on, its history stays in the archive.

An archived version is ``<archive>/<len><name>/<timestamp>``: ``len`` is the length of the
object's name in UTF-8 bytes as three lower-case hex digits, ``timestamp`` the archived
object's ``X-Timestamp`` (internal form), so an object's versions list together, oldest first.
A POST changes the current object's metadata and makes no version.

The container's setting. On a container PUT or POST the client header becomes container
system metadata, ``X-Container-Sysmeta-Versions-Location`` (the value as given, percent-encoded
or not; it may not contain ``/``: 412) and ``X-Container-Sysmeta-Versions-Mode`` (``stack`` or
``history``); both at once are a 400 (``Only one of x-versions-location or x-history-location may
be specified``) unless one is empty. An empty value, ``X-Remove-Versions-Location`` or
``X-Remove-History-Location`` turns versioning off (setting wins over removing in one request).
A container's GET or HEAD shows the setting as the header of its mode. The plain
``X-Versions-Location`` and ``X-History-Location`` metadata that containers stored before this
middleware (the node still keeps what it is sent) is cleared whenever the setting changes; a
location stored that way is still honoured in stack mode, as Swift honours it, and an old
plain ``X-History-Location`` (which nothing ever acted on) is not shown.

With ``allow_versioned_writes = false`` (the default) setting a location is refused (412
``Versioned Writes is disabled``), removing one still works, and no object is versioned. When
the filter is not in the pipeline at all the proxy refuses the headers the same way
(``txstore.proxy.controllers.container``): they are never accepted and ignored.

Who may do what (Swift's rules). The container's own ACLs decide: a PUT or DELETE that would
touch the archive is first authorized as the requester against the *versioned* container (its
``X-Container-Write``), before any other request is made. The work itself (reading the current
object, writing the archive, the delete marker, restoring, listing the archive) is done with
the middleware's own sub-requests (system, as Swift's pre-authorized ones), so a user with
write access to a versioned container versions into an archive that they cannot read or write
directly; who can set a location is decided by container POST/PUT's usual rules (owners only).
Failures: a sub-request answered 4xx makes the client's request a 412, anything else a 503; a
failing archive leaves the current object untouched.

Objects are read and written below this filter (Swift's order: ``... slo dlo versioned_writes
symlink ...``): a large object's manifest is archived and restored as the manifest (its segments
are not copied), and a symlink is read with ``?symlink=get`` and written back as the link.
The archive of a large object holds the whole current object only when it is a plain one.

``allow_object_versioning = true`` builds, as in Swift, the newer object_versioning middleware
(``X-Versions-Enabled``, `txstore.middleware.object_versioning`) inside this same filter, below
this one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import quote

from attrs import define, field

from txstore.common import config as c
from txstore.common.paths import BadPath, decode_path
from txstore.common.timestamps import Timestamp, parse_http_date
from txstore.middleware.base import ApiMiddleware, Middleware, read_whole
from txstore.middleware.listing_formats import max_listing_bytes
from txstore.proxy import subrequest
from txstore.proxy.controllers.base import ContainerInfo, container_info
from txstore.proxy.controllers.obj import OBJECT_HEADERS, STORED
from txstore.proxy.messages import SwiftRequest, SwiftResponse

SOURCE = "VW"
VERSIONS = "X-Versions-Location"
HISTORY = "X-History-Location"
REMOVE_VERSIONS = "X-Remove-Versions-Location"
REMOVE_HISTORY = "X-Remove-History-Location"
SYSMETA_LOCATION = "X-Container-Sysmeta-Versions-Location"
SYSMETA_MODE = "X-Container-Sysmeta-Versions-Mode"
DELETE_MARKER = "application/x-deleted;swift_versions_deleted=1"
# /info's allowed_flags: Swift's lower-case names of the two client headers.
ALLOWED_FLAGS = (VERSIONS.lower(), HISTORY.lower())

BOTH = f"Only one of {VERSIONS.lower()} or {HISTORY.lower()} may be specified"
DISABLED = "Versioned Writes is disabled"
PRECONDITION = "A precondition for this request was not met."
UNAVAILABLE = "The server is currently unavailable. Please try again at a later time."
LISTING_FAILED = "The server has either erred or is incapable of performing the requested operation."

# What an archived (or restored) version keeps of the object it copies: what a PUT stores, and
# a link's X-Symlink-* headers (read with ?symlink=get; symlink, below, stores them again).
KEPT = ("content-type", "content-length", "etag", *STORED)
KEPT_PREFIXES = (*OBJECT_HEADERS, "x-symlink-")

ContainerInfoSource = Callable[[SwiftRequest, str, str], Awaitable[ContainerInfo]]


class Refused(Exception):
    """Stops a versioned request with ``response`` (a 412, 503, 401 or 403)."""

    def __init__(self, response: SwiftResponse) -> None:
        super().__init__(response.status)
        self.response = response


def archive_prefix(obj: str) -> str:
    """``<len><name>/``: where an object's versions are listed in its archive container."""
    return f"{len(obj.encode('utf-8')):03x}{obj}/"


def archive_name(obj: str, timestamp: Timestamp) -> str:
    """The archived version of ``obj`` written at ``timestamp``: ``<len><name>/<timestamp>``."""
    return archive_prefix(obj) + timestamp.internal


def _checked(response: SwiftResponse) -> None:
    """A sub-request's failure as the client's answer: 4xx is a 412, anything else a 503."""
    if 200 <= response.status < 300:
        return
    response.discard_body()
    if 400 <= response.status < 500:
        raise Refused(SwiftResponse.text(412, PRECONDITION))
    raise Refused(SwiftResponse.text(503, UNAVAILABLE))


def _version_timestamp(response: SwiftResponse) -> Timestamp:
    stamp = response.headers.get("X-Timestamp")
    if stamp:
        try:
            return Timestamp.parse(stamp)
        except ValueError:
            pass
    seconds = parse_http_date(response.headers.get("Last-Modified") or "")
    if seconds is None:
        raise Refused(SwiftResponse.text(503, UNAVAILABLE))
    return Timestamp.from_seconds(seconds)


@define(eq=False)
class VersionedWrites(ApiMiddleware):
    depth = 2

    app: Any
    enabled: bool = field(kw_only=True)
    container_info: ContainerInfoSource = field(kw_only=True)
    clock: Callable[[], float] = field(kw_only=True)
    max_file_size: int = field(kw_only=True)
    max_listing_bytes: int = field(kw_only=True)

    async def handle(self, request: SwiftRequest, account: str, container: str, obj: str | None) -> SwiftResponse:
        if obj is None:
            return await self._container(request, account, container)
        if self.enabled and request.method in ("PUT", "DELETE"):
            try:
                return await self._object(request, account, container, obj)
            except Refused as refused:
                request.discard_body()
                return refused.response
        return await self.app(request)

    # --- the container's setting ---------------------------------------------------------------

    async def _container(self, request: SwiftRequest, account: str, container: str) -> SwiftResponse:
        if request.method in ("PUT", "POST"):
            refusal = self._translate(request)
            if refusal is None and request.headers.get(SYSMETA_LOCATION):
                refusal = await self._not_versioned_already(request, account, container)
            if refusal is not None:
                request.discard_body()
                return refusal
        response = await self.app(request)
        headers = response.headers
        headers.pop(HISTORY)  # never stored by Swift; an old txstore's plain metadata, not acted on
        location = headers.get(SYSMETA_LOCATION)
        if location:
            headers.pop(VERSIONS)
            headers[HISTORY if headers.get(SYSMETA_MODE) == "history" else VERSIONS] = location
        return response

    async def _not_versioned_already(self, request: SwiftRequest, account: str,
                                     container: str) -> SwiftResponse | None:
        """A container with object versioning (X-Versions-Enabled) takes no location (Swift's 400)."""
        info = await self.container_info(request, account, container)
        if info.exists and info.sysmeta.get("versions-container"):
            return SwiftResponse.text(400, "Cannot set a versions location on a container that is already using "
                                           "object versioning (X-Versions-Enabled).")
        return None

    def _translate(self, request: SwiftRequest) -> SwiftResponse | None:
        """The client's headers as the container's sysmeta (Swift's ``container_request``)."""
        headers = request.headers
        versions, history = headers.get(VERSIONS), headers.get(HISTORY)
        if versions is not None and history is not None:
            if not history:
                history = None  # defer to X-Versions-Location
            elif versions:
                return SwiftResponse.text(400, BOTH)
            else:
                versions = None
        removing = any(headers.get(name) for name in (REMOVE_VERSIONS, REMOVE_HISTORY))
        for name in (VERSIONS, HISTORY, REMOVE_VERSIONS, REMOVE_HISTORY):
            headers.pop(name)
        if versions is not None or history is not None:
            value, mode = (versions, "stack") if versions is not None else (history, "history")
            if not value:
                removing = True  # an empty value is X-Remove-…
            elif not self.enabled:
                return SwiftResponse.text(412, DISABLED)
            elif "/" in value:
                return SwiftResponse.text(412, "Container name cannot contain slashes")
            else:
                headers[SYSMETA_LOCATION] = value
                headers[SYSMETA_MODE] = mode
                removing = False  # setting wins over removing
        if removing:
            headers[SYSMETA_LOCATION] = ""
            headers[SYSMETA_MODE] = ""
        if SYSMETA_LOCATION in headers:
            # Only sysmeta says where versions go: clear what older proxies stored plainly.
            headers[VERSIONS] = ""
            headers[HISTORY] = ""
        return None

    # --- objects -------------------------------------------------------------------------------

    async def _object(self, request: SwiftRequest, account: str, container: str, obj: str) -> SwiftResponse:
        info = await self.container_info(request, account, container)
        location = info.sysmeta.get("versions-location") or info.versions
        if not info.exists or not location:
            return await self.app(request)
        try:
            archive = decode_path(location.encode("latin-1")).split("/")[0]
        except (BadPath, UnicodeEncodeError):
            archive = ""
        if not archive:
            raise Refused(SwiftResponse.text(412, PRECONDITION))
        if request.method == "PUT":
            await self._archive_current(request, info, account, container, obj, archive)
            return await self.app(request)
        if info.sysmeta.get("versions-mode", "stack") == "history":
            await self._archive_current(request, info, account, container, obj, archive)
            marker = subrequest.make(
                request, "PUT", f"/v1/{account}/{archive}/{archive_name(obj, Timestamp.now(self.clock))}",
                source=SOURCE, headers={"Content-Type": DELETE_MARKER, "Content-Length": "0"}, system=True)
            answer = await self.app(marker)
            _checked(answer)
            answer.discard_body()
            return await self.app(request)
        return await self._pop(request, info, account, container, obj, archive)

    def _authorize(self, request: SwiftRequest, account: str, container: str, obj: str,
                   info: ContainerInfo) -> None:
        """
        The requester must be allowed this request on the versioned container before any
        sub-request is made (they are the middleware's own: nothing below asks again).
        """
        authorize = request.environ.get(subrequest.AUTHORIZE)
        if authorize is None:
            return
        decision = authorize(request, account, container, obj, info)
        if not decision.allowed:
            raise Refused(SwiftResponse.text(decision.status, "Unauthorized" if decision.status == 401 else "Forbidden"))

    async def _read(self, request: SwiftRequest, path: str) -> SwiftResponse:
        """An object as it is stored (a link as the link), newest replica: the system's read."""
        got = await self.app(subrequest.make(request, "GET", path, source=SOURCE, query="symlink=get",
                                             headers={"X-Newest": "true"}, system=True))
        if got.status == 404:
            return got
        _checked(got)
        length = got.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > self.max_file_size:
            got.discard_body()
            raise Refused(SwiftResponse.text(412, PRECONDITION))  # Swift: its 413, a client error
        return got

    async def _write(self, request: SwiftRequest, path: str, got: SwiftResponse) -> None:
        """PUT what ``got`` read at ``path``: its bytes and what its PUT had stored."""
        headers = {name: value for name, value in got.headers.items()
                   if name.lower() in KEPT or name.lower().startswith(KEPT_PREFIXES)}
        answer = await self.app(subrequest.make(request, "PUT", path, source=SOURCE, headers=headers,
                                                body=got.body_source(), system=True))
        if not 200 <= answer.status < 300:
            got.discard_body()
        _checked(answer)
        answer.discard_body()

    async def _archive_current(self, request: SwiftRequest, info: ContainerInfo, account: str, container: str,
                               obj: str, archive: str) -> None:
        """Copy the current object, if there is one, to the archive (Swift's ``_copy_current``)."""
        self._authorize(request, account, container, obj, info)
        got = await self._read(request, f"/v1/{account}/{container}/{obj}")
        if got.status == 404:
            got.discard_body()
            return
        name = archive_name(obj, _version_timestamp(got))
        await self._write(request, f"/v1/{account}/{archive}/{name}", got)

    async def _restore(self, request: SwiftRequest, account: str, container: str, obj: str, archive: str,
                       name: str) -> str | None:
        """Copy an archived version over the object: the version's path, None if it is gone."""
        path = f"/v1/{account}/{archive}/{name}"
        got = await self._read(request, path)
        if got.status == 404:
            got.discard_body()
            return None
        await self._write(request, f"/v1/{account}/{container}/{obj}", got)
        return path

    async def _pop(self, request: SwiftRequest, info: ContainerInfo, account: str, container: str, obj: str,
                   archive: str) -> SwiftResponse:
        """
        Stack mode's DELETE (Swift's ``handle_obj_versions_delete_pop``): the newest archived
        version replaces the object and the DELETE removes that version from the archive. When
        the newest is a delete marker (history mode was on before) and the object is gone, the
        version before the marker, if any, is restored and the DELETE removes the marker.
        """
        versions = self._newest_first(request, account, archive, archive_prefix(obj))
        try:
            deleted = await self._popped(request, info, account, container, obj, archive, versions)
        finally:
            await versions.aclose()
        if deleted is not request:
            request.discard_body()
        return await self.app(deleted)

    async def _popped(self, request: SwiftRequest, info: ContainerInfo, account: str, container: str, obj: str,
                      archive: str, versions: AsyncGenerator[dict[str, Any], None]) -> SwiftRequest:
        """What the DELETE removes once the version before it is back: the object, or a version."""
        deleted = request
        authorized = False
        async for previous in versions:
            if not authorized:
                self._authorize(request, account, container, obj, info)
                authorized = True
            if previous.get("content_type") == DELETE_MARKER:
                head = await self.app(subrequest.make(request, "HEAD", f"/v1/{account}/{container}/{obj}",
                                                      source=SOURCE, headers={"X-Newest": "true"}, system=True))
                head.discard_body()
                if head.status != 404:
                    _checked(head)
                    break  # the object is back since the marker: delete it, the marker stays
                async for older in versions:
                    if older.get("content_type") == DELETE_MARKER:
                        break
                    restored = await self._restore(request, account, container, obj, archive, older["name"])
                    if restored is None:
                        continue
                    removed = await self.app(subrequest.make(request, "DELETE", restored, source=SOURCE, system=True))
                    removed.discard_body()
                    if removed.status != 404:
                        _checked(removed)
                    break
                deleted = subrequest.make(request, "DELETE", f"/v1/{account}/{archive}/{previous['name']}",
                                          source=SOURCE, system=True)
            else:
                restored = await self._restore(request, account, container, obj, archive, previous["name"])
                if restored is None:
                    continue
                deleted = subrequest.make(request, "DELETE", restored, source=SOURCE, system=True)
            break
        return deleted

    async def _newest_first(self, request: SwiftRequest, account: str, archive: str,
                            prefix: str) -> AsyncIterator[dict[str, Any]]:
        """The archive's rows under ``prefix``, newest first, a page at a time."""
        marker = ""
        while True:
            query = "&".join(f"{key}={value}" for key, value in (
                ("format", "json"), ("reverse", "on"), ("prefix", _quoted(prefix)), ("marker", _quoted(marker))))
            listing = await self.app(subrequest.make(request, "GET", f"/v1/{account}/{archive}", source=SOURCE,
                                                     query=query, system=True))
            if listing.status == 404:
                listing.discard_body()
                return
            if not 200 <= listing.status < 300:
                listing.discard_body()
                status, text = (412, PRECONDITION) if 400 <= listing.status < 500 else (500, LISTING_FAILED)
                raise Refused(SwiftResponse.text(status, text))
            try:
                rows = json.loads(await read_whole(listing, self.max_listing_bytes) or b"[]")
            except (OverflowError, ValueError):
                raise Refused(SwiftResponse.text(500, LISTING_FAILED)) from None
            if not rows:
                return
            for row in rows:
                yield row
            marker = rows[-1]["name"]


def _quoted(value: str) -> str:
    return quote(value.encode("utf-8"), safe="")


# --- the filter -----------------------------------------------------------------------------------

OBJECT_VERSIONING_MODULE = "txstore.middleware.object_versioning"
NOT_BUILT = ("true is refused: object_versioning is not built yet in txstore (only the legacy "
             "X-Versions-Location/X-History-Location versioning is; set allow_versioned_writes)")


def _allow_object_versioning(raw: str, base: Path) -> bool:
    allowed = c.boolean(raw, base)
    if allowed and find_spec(OBJECT_VERSIONING_MODULE) is None:
        raise c.BadValue(NOT_BUILT)
    return allowed


OPTIONS = (
    c.Option("allow_versioned_writes", c.boolean, False,
             doc="Containers may name an archive (X-Versions-Location, X-History-Location); /info says so."),
    c.Option("allow_object_versioning", _allow_object_versioning, False,
             doc="Swift's newer object versioning (X-Versions-Enabled), inside this filter."),
)


def with_object_versioning(app, settings: dict[str, Any], proxy) -> Any:
    """
    The hook for ``allow_object_versioning = true``: as in Swift, the object_versioning
    middleware is built inside this filter, below versioned_writes (Swift's filter returns
    ``VersionedWritesMiddleware(ObjectVersioningMiddleware(app, conf), conf)``), it needs
    symlinks (Swift refuses to start without them). The option's parser refuses ``true`` while
    the module does not exist; whoever builds it wires it here (this body assumes the module
    exports ``middleware``, as every middleware module does, and registers its /info itself).
    """
    from txstore.middleware import object_versioning  # type: ignore[attr-defined]

    if "symlink" not in proxy.info:
        raise c.ConfigError("object versioning requires symlinks (symlink after versioned_writes in the pipeline)",
                            section="filter:versioned_writes", option="allow_object_versioning")
    return object_versioning.middleware.build(app, settings, proxy)


def _build(app, settings: dict[str, Any], proxy) -> VersionedWrites:
    if settings["allow_versioned_writes"]:
        proxy.info.register("versioned_writes", allowed_flags=list(ALLOWED_FLAGS))
    if settings["allow_object_versioning"]:
        app = with_object_versioning(app, settings, proxy)
    context = proxy.context

    def info(request: SwiftRequest, account: str, container: str) -> Awaitable[ContainerInfo]:
        return container_info(context, account, container, request.trans_id)

    return VersionedWrites(app, enabled=settings["allow_versioned_writes"], container_info=info, clock=proxy.clock,
                           max_file_size=context.constraints.max_file_size,
                           max_listing_bytes=max_listing_bytes(context.constraints))


middleware = Middleware("versioned_writes", _build, options=OPTIONS)
