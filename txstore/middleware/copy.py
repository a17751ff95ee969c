# -*- test-case-name: txstore.test.unit.test_middleware -*-
"""
copy: server-side copy, ``COPY`` with ``Destination`` (and ``Destination-Account``) and ``PUT``
with ``X-Copy-From`` (and ``X-Copy-From-Account``).

The source is read with a sub-request GET down the pipeline (so the requester must be allowed
to read it, and the read has the GET path's error limiting and resume), and the request becomes
a PUT of the destination whose body is the source's body, streamed: the copy holds no more of
the object than a GET or a PUT does. The destination gets the source's metadata unless
``X-Fresh-Metadata: true``, with the request's own headers on top; the response says where the
copy came from (``X-Copied-From``, ``-Account``, ``-Last-Modified``).

A large object's source is read as a client reads it: its bytes, which the copy stores as a
plain object (the source's ``X-Object-Manifest`` and ``X-Static-Large-Object`` are not copied,
nor its ETag, which is not the md5 of those bytes). With ``?multipart-manifest=get`` the source
is read with it, so a dynamic large object's manifest is copied, ``X-Object-Manifest`` included,
and a static one's is read in its raw form and stored with ``?multipart-manifest=put`` (its
segments checked again, as the requester).

A symlink's source is read through it (the target's bytes are copied); with ``?symlink=get``
the link itself is read, and its ``X-Symlink-*`` headers make the copy a link to the same target
(the symlink middleware checks it as any link PUT; the request's own headers, such as
``X-Symlink-Target-Account``, on top).

``?version-id=`` (object versioning) reads that version of the source, ``?part-number=`` that
segment of a static large object; the copy is a new, whole object (the destination's PUT goes
without either).

A ``Range`` and the conditional headers (``If-Match``, ``If-None-Match``,
``If-Modified-Since``, ``If-Unmodified-Since``) apply to the source, as in Swift: a copy with
``Range: bytes=100-200`` stores those 101 bytes (without the source's ETag, which is not
theirs), and a source that fails a condition is that answer (304, 412, 416). The destination's
PUT goes without them.
"""

from __future__ import annotations

from urllib.parse import quote

from zope.interface import implementer

from txstore.common.backend_client import quote_path
from txstore.common.paths import BadPath, decode_path
from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy import subrequest
from txstore.proxy.controllers.obj import OBJECT_HEADERS, STORED
from txstore.proxy.messages import SwiftRequest, SwiftResponse

SOURCE = "COPY"
# The headers that ask about the source: sent with its GET, not with the destination's PUT.
SOURCE_CONDITIONS = ("Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
CONSUMED = ("destination", "destination-account", "x-copy-from", "x-copy-from-account", "transfer-encoding",
            *(name.lower() for name in SOURCE_CONDITIONS))
# What makes a source a large object: a copy of its bytes is a plain object.
LARGE = ("x-object-manifest", "x-static-large-object")
# What a link read with ?symlink=get says of its target (the symlink middleware's headers).
LINK = "x-symlink-"


@implementer(IApp)
class Copy:
    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, request: SwiftRequest):
        # Reads and plain writes are the next stage's call itself: no coroutine of their own.
        if request.method not in ("COPY", "PUT"):
            return self.app(request)
        if request.method == "PUT" and not request.header("X-Copy-From"):
            return self.app(request)
        return self._copy_request(request)

    async def _copy_request(self, request: SwiftRequest) -> SwiftResponse:
        try:
            version, account, container, obj = request.split(1, 4)
        except BadPath:
            return await self.app(request)  # the application answers a bad path
        if version != "v1" or obj is None:
            return await self.app(request)
        try:
            source, destination = _endpoints(request, account, container, obj)
        except BadPath as err:
            request.discard_body()
            return SwiftResponse.text(err.status, err.reason)
        request.discard_body()  # a copy's own body, if any, is not used
        return await self._copy(request, source, destination)

    async def _copy(self, request: SwiftRequest, source: tuple[str, str, str],
                    destination: tuple[str, str, str]) -> SwiftResponse:
        source_path = "/v1/" + "/".join(source)
        manifest = request.params.get("multipart-manifest") == "get"
        link = request.params.get("symlink") == "get"
        # A static manifest is read in the form a manifest PUT takes, and stored with one; a
        # link with ?symlink=get is read itself (X-Symlink-* headers) and stored as a link.
        version = request.params.get("version-id")
        part = request.params.get("part-number")
        query = "&".join([*(["multipart-manifest=get&format=raw"] if manifest else []),
                          *(["symlink=get"] if link else []),
                          *([f"version-id={quote(version, safe='')}"] if version else []),
                          *([f"part-number={quote(part, safe='')}"] if part is not None else [])])
        conditions = {name: value for name in SOURCE_CONDITIONS if (value := request.header(name)) is not None}
        read = subrequest.make(request, "GET", source_path, source=SOURCE, query=query, headers=conditions)
        got = await self.app(read)
        if got.status != 200 and not ((part is not None or "Range" in conditions) and got.status == 206):
            got.discard_body()
            if got.status == 404:
                return SwiftResponse.text(404, "Not Found: the copy source does not exist")
            return SwiftResponse.text(got.status, f"Copy source: {got.status}")
        headers = request.headers
        for name in list(headers):
            if name.lower() in CONSUMED:
                del headers[name]
        if not request.flag("X-Fresh-Metadata"):
            for name, value in got.headers.items():
                lower = name.lower()
                if ((lower.startswith(OBJECT_HEADERS) or lower in STORED or (link and lower.startswith(LINK)))
                        and lower not in ("x-delete-at", *LARGE)):
                    headers.setdefault(name, value)
        if manifest and "X-Object-Manifest" in got.headers:  # a DLO's manifest copied is a manifest
            headers.setdefault("X-Object-Manifest", got.headers["X-Object-Manifest"])
        if not headers.get("Content-Type"):
            headers["Content-Type"] = got.headers.get("Content-Type", "application/octet-stream")
        headers.pop("X-Detect-Content-Type")
        static_manifest = manifest and "X-Static-Large-Object" in got.headers
        if static_manifest:
            request.query = "multipart-manifest=put"  # slo checks the segments and stores it again
            headers.pop("ETag")  # a manifest PUT's ETag would be the large object's
        elif got.status == 200 and (manifest or not any(name in got.headers for name in LARGE)):
            headers["ETag"] = got.headers.get("ETag", "")  # a part's (206) is not its bytes' md5
        length = got.headers.get("Content-Length")
        if length is None:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = length
        request.method = "PUT"
        request.path = quote_path("/v1/" + "/".join(destination))
        # the version and the part read are the source's; the copy is a new, whole object
        request.query = "&".join(p for p in request.query.split("&")
                                 if p.partition("=")[0] not in ("version-id", "part-number"))
        request.body = got.body_source()  # small sources arrive whole, as bytes
        response = await self.app(request)
        if response.status == 201:
            response.headers["X-Copied-From"] = quote_path("/".join(source[1:]))
            response.headers["X-Copied-From-Account"] = quote_path(source[0])
            modified = got.headers.get("Last-Modified")
            if modified:
                response.headers["X-Copied-From-Last-Modified"] = modified
        else:
            got.discard_body()
        return response


def _target(value: str, what: str) -> tuple[str, str]:
    """``/container/object`` (percent-encoded) from a Destination or X-Copy-From header."""
    text = decode_path(value.encode("latin-1"))
    container, _, obj = text.lstrip("/").partition("/")
    if not container or not obj:
        raise BadPath(412, f"{what} header must be of the form <container name>/<object name>")
    return container, obj


def _account(request: SwiftRequest, name: str, default: str) -> str:
    value = request.header(name)
    return decode_path(value.encode("latin-1")) if value else default


def _endpoints(request: SwiftRequest, account: str, container: str, obj: str):
    """(source, destination) as (account, container, object), from the request's headers."""
    if request.method == "COPY":
        destination = request.header("Destination")
        if not destination:
            raise BadPath(412, "Destination header required")
        dest_container, dest_obj = _target(destination, "Destination")
        dest_account = _account(request, "Destination-Account", account)
        return (account, container, obj), (dest_account, dest_container, dest_obj)
    source_container, source_obj = _target(request.header("X-Copy-From") or "", "X-Copy-From")
    source_account = _account(request, "X-Copy-From-Account", account)
    return (source_account, source_container, source_obj), (account, container, obj)


middleware = Middleware("copy", lambda app, settings, proxy: Copy(app))
