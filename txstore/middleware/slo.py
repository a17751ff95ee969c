# -*- test-case-name: txstore.test.unit.test_slo -*-
"""
slo: static large objects, as Swift's API has them.

``PUT ?multipart-manifest=put`` takes a JSON list of segments (``path``, ``etag``,
``size_bytes``, ``range``; or inline ``data``), checks each one with a HEAD as the requester
(it exists, is readable, has the ETag and size given, is not empty, the range fits), and stores
the manifest: the segments' names, sizes and ETags as Swift stores them, with
``X-Static-Large-Object: True`` and the large object's ETag (the md5 of the segments' ETags)
and size in system metadata. A GET of the object then streams its segments in order
(`txstore.middleware.segments`), each read with ``If-Match`` on the ETag the manifest pinned,
so a segment overwritten since cannot slip wrong bytes into the download.

The storage node helps with two headers Swift's object server also takes: conditional requests
are evaluated against the large object's ETag (``X-Backend-Etag-Is-At``), and a ``Range`` is
ignored for a manifest (``X-Backend-Ignore-Range-If-Metadata-Present``), so that the whole
manifest comes back and the range is applied to the assembled object here.

``?multipart-manifest=get`` returns the stored manifest (``&format=raw``: in the form a PUT
takes), ``?multipart-manifest=delete`` deletes the manifest and all its segments. A client
cannot set ``X-Static-Large-Object`` itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import AsyncIterator, Awaitable
from hashlib import md5
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.logger import Logger
from zope.interface import implementer

from txstore.common import config as c
from txstore.common.http_ranges import (
    Unsatisfiable, content_range, multipart_parts, multipart_trailer, new_boundary, parse_range,
)
from txstore.common.constraints import DEFAULT_CONSTRAINTS
from txstore.common.timestamps import parse_http_date
from txstore.interfaces import IByteSource
from txstore.middleware.base import ApiMiddleware, Middleware, read_source, read_whole
from txstore.middleware.listing_formats import edit_json_listing, etag_params, max_listing_bytes
from txstore.middleware.segments import Piece, SegmentError, SegmentRead, segmented_response
from txstore.proxy import subrequest
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse

log = Logger()

SOURCE = "SLO"
SLO = "X-Static-Large-Object"
SLO_ETAG = "X-Object-Sysmeta-Slo-Etag"
SLO_SIZE = "X-Object-Sysmeta-Slo-Size"
LISTING_ETAG = "X-Object-Sysmeta-Container-Update-Override-Etag"
LISTING_SIZE = "X-Object-Sysmeta-Container-Update-Override-Size"
ETAG_IS_AT = "X-Backend-Etag-Is-At"
IGNORE_RANGE = "X-Backend-Ignore-Range-If-Metadata-Present"
MAX_DEPTH = 10  # manifests one read may go through, the large object's own included (Swift's)
PUT_KEYS = frozenset({"path", "etag", "size_bytes", "range"})
BAD_REQUEST = "Bad Request\nThe server could not comply with the request since it is either malformed or otherwise incorrect."
TOO_SMALL = "Too small; each segment must be at least 1 byte."
RESERVED = ("X-Static-Large-Object is a reserved header. To create a static large object add query "
            "param multipart-manifest=put.")
BAD_PART = b"Part number must be an integer greater than 0"
UNSATISFIABLE_PART = b"The requested part number is not satisfiable"
HIDDEN = tuple(name.lower() for name in (SLO_ETAG, SLO_SIZE, LISTING_ETAG, LISTING_SIZE))

OPTIONS = (
    c.Option("max_manifest_segments", c.integer(1), 1000, doc="Segments one manifest may list."),
    c.Option("max_manifest_size", c.integer(1), 8 * 1024 * 1024, doc="Bytes of a manifest PUT's JSON."),
    c.Option("yield_frequency", c.integer(1), 10,
             doc="Seconds between the spaces a heartbeat manifest PUT sends while it checks segments."),
    c.Option("concurrency", c.integer(1, 10), 2, doc="Segments checked (HEAD) at once for a manifest PUT."),
)


class ManifestError(Exception):
    """A manifest PUT that cannot be stored: ``status`` and the problems, each (path, reason)."""

    def __init__(self, status: int, reason: str = "", problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.problems = problems or []


def is_slo(response: SwiftResponse) -> bool:
    return (response.headers.get(SLO) or "").lower() in ("true", "yes", "1", "on", "t", "y")


def segment_length(entry: dict) -> int:
    """The bytes a stored manifest entry adds to the large object."""
    if "data" in entry:
        return len(base64.b64decode(entry["data"]))
    if entry.get("range"):
        first, _, last = entry["range"].partition("-")
        return int(last) - int(first) + 1
    return int(entry["bytes"])


class StaticLargeObjects(ApiMiddleware):
    depth = 2

    def __init__(self, app, settings: dict[str, Any], reactor,
                 listing_bytes: int = max_listing_bytes(DEFAULT_CONSTRAINTS)) -> None:
        self.app = app
        self.listing_bytes = listing_bytes
        self.max_segments = settings["max_manifest_segments"]
        self.max_size = settings["max_manifest_size"]
        self.yield_frequency = settings["yield_frequency"]
        self.concurrency = settings["concurrency"]
        self.reactor = reactor

    async def handle(self, request: SwiftRequest, account: str, container: str, obj: str | None) -> SwiftResponse:
        if obj is None:
            if request.method == "GET":
                response = await self.app(request)
                return await edit_json_listing(response, self.listing_bytes, b"slo_etag=", _show_slo_etag)
            return await self.app(request)
        manifest = request.params.get("multipart-manifest")
        method = request.method
        if method == "PUT":
            if manifest == "put":
                return await self._put_manifest(request, account, container, obj)
            if SLO in request.headers:
                request.discard_body()
                return SwiftResponse.text(400, RESERVED)
        elif method == "POST":
            request.headers.pop(SLO)
        elif method == "DELETE" and manifest == "delete":
            return await self._delete_manifest(request, account, container, obj)
        elif method in ("GET", "HEAD"):
            if manifest == "get":
                return await self._get_manifest(request)
            return await self._get(request, account)
        return await self.app(request)

    # --- GET and HEAD of the large object -------------------------------------------------------

    async def _get(self, request: SwiftRequest, account: str) -> SwiftResponse:
        head = request.method == "HEAD"
        part = request.params.get("part-number")
        if part is not None and not (part.isdigit() and int(part) > 0):
            request.discard_body()
            return _bare(400, b"" if head else BAD_PART)
        # after the names a middleware above asked for (s3api's): the node takes the first the object has
        asked = request.headers.get(ETAG_IS_AT)
        request.headers[ETAG_IS_AT] = f"{asked}, {SLO_ETAG}" if asked else SLO_ETAG
        request.headers[IGNORE_RANGE] = SLO
        if part is not None and head:
            request.method = "GET"  # a part's place is in the manifest: read it, answer as a HEAD
            try:
                response = await self.app(request)
            finally:
                request.method = "HEAD"
        else:
            response = await self.app(request)
        if not is_slo(response):
            if part is not None and head:
                response.discard_body()  # the headers are the HEAD's; ?part-number is for SLOs
            return response
        etag = response.headers.get(SLO_ETAG)
        size = response.headers.get(SLO_SIZE)
        for name in HIDDEN:
            response.headers.pop(name)
        if "ETag" in response.headers:  # the manifest's own, as the client may ask for it by
            response.headers["X-Manifest-Etag"] = response.headers["ETag"].strip('"')
        if etag is not None:
            response.headers["ETag"] = f'"{etag}"'
        if response.status != 200:
            response.discard_body()
            return response  # 304 or 412, decided on the large object's ETag
        if head and part is None:
            if size is not None:
                response.headers["Content-Length"] = size
            return response
        try:
            entries = parse_stored(await read_whole(response, self.max_size))
        except (ValueError, OverflowError) as err:
            log.warn("{trans_id}: unreadable manifest {path}: {error}", trans_id=request.trans_id,
                     path=request.path, error=err)
            return SwiftResponse.text(500, "Internal Server Error: the manifest cannot be read")
        total = int(size) if size is not None else sum(segment_length(e) for e in entries)
        headers = response.headers
        headers["Accept-Ranges"] = "bytes"
        if part is not None:
            return await self._part(request, account, entries, int(part), total, headers, head)
        try:
            ranges = parse_range(request.header("Range"), total)
        except Unsatisfiable:
            return SwiftResponse.text(416, "Requested Range Not Satisfiable",
                                      {"Content-Range": f"bytes */{total}", "Accept-Ranges": "bytes"})
        status = 200
        if ranges is None:
            pieces = self._pieces(request, account, entries, 0, total - 1, 0)
            headers["Content-Length"] = str(total)
        elif len(ranges) == 1:
            status = 206
            first, last = ranges[0]
            pieces = self._pieces(request, account, entries, first, last, 0)
            headers["Content-Range"] = content_range(first, last, total)
            headers["Content-Length"] = str(last - first + 1)
        else:
            status = 206
            boundary = new_boundary()
            content_type = headers.get("Content-Type", "application/octet-stream")
            pieces = self._multipart(request, account, entries, ranges, total, content_type, boundary)
            headers["Content-Type"] = f"multipart/byteranges;boundary={boundary}"
            headers.pop("Content-Length")
            length = len(multipart_trailer(boundary))
            for part, first, last in multipart_parts(ranges, total, content_type, boundary):
                length += len(part) + last - first + 1
            headers["Content-Length"] = str(length)
        return await segmented_response(self.app, request, SOURCE, status, headers, pieces)

    async def _part(self, request: SwiftRequest, account: str, entries: list[dict], number: int, total: int,
              headers, head: bool) -> SwiftResponse:
        """``?part-number=N``: the bytes of the manifest's Nth segment, as a range of the whole."""
        headers["X-Parts-Count"] = str(len(entries))
        if number > len(entries):
            headers["Content-Range"] = f"bytes */{total}"
            return _bare(416, b"" if head else UNSATISFIABLE_PART, headers)
        first = sum(segment_length(entry) for entry in entries[:number - 1])
        last = first + segment_length(entries[number - 1]) - 1
        headers["Content-Range"] = content_range(first, last, total)
        headers["Content-Length"] = str(last - first + 1)
        if head:
            return SwiftResponse(206, headers, b"")
        return await segmented_response(self.app, request, SOURCE, 206, headers, self._pieces(request, account, entries, first, last, 0))

    async def _multipart(self, request, account, entries, ranges, total, content_type, boundary):
        for part, first, last in multipart_parts(ranges, total, content_type, boundary):
            yield part
            async for piece in self._pieces(request, account, entries, first, last, 0):
                yield piece
        yield multipart_trailer(boundary)

    async def _pieces(
        self, request: SwiftRequest, account: str, entries: list[dict], first: int, last: int, depth: int,
    ) -> AsyncIterator[Piece]:
        """The pieces of bytes ``first``..``last`` of the object these entries make up."""
        offset = 0
        for entry in entries:
            length = segment_length(entry)
            start, offset = offset, offset + length
            if offset <= first:
                continue
            if start > last:
                break
            low, high = max(first, start) - start, min(last, offset - 1) - start
            if "data" in entry:
                yield base64.b64decode(entry["data"])[low:high + 1]
                continue
            base = int(entry["range"].partition("-")[0]) if entry.get("range") else 0
            path = f"/v1/{account}{entry['name']}"
            if entry.get("sub_slo"):
                if depth + 1 >= MAX_DEPTH:
                    raise SegmentError(f"manifests nest more than {MAX_DEPTH} deep at {path}")
                inner = await self._sub_manifest(request, path, entry.get("hash"))
                async for piece in self._pieces(request, account, inner, base + low, base + high, depth + 1):
                    yield piece
            else:
                yield SegmentRead(path, base + low, base + high, int(entry["bytes"]), entry.get("hash"))

    async def _sub_manifest(self, request: SwiftRequest, path: str, etag: str | None) -> list[dict]:
        headers = {ETAG_IS_AT: SLO_ETAG}
        if etag:
            headers["If-Match"] = etag
        read = subrequest.make(request, "GET", path, source=SOURCE, headers=headers,
                               query="multipart-manifest=get")
        response = await self.app(read)
        if response.status != 200 or not is_slo(response):
            response.discard_body()
            raise SegmentError(f"manifest {path} answered {response.status}")
        try:
            return parse_stored(await read_whole(response, self.max_size))
        except (ValueError, OverflowError) as err:
            raise SegmentError(f"manifest {path} cannot be read: {err}") from None

    # --- the manifest itself -----------------------------------------------------------------

    async def _get_manifest(self, request: SwiftRequest) -> SwiftResponse:
        response = await self.app(request)
        if not is_slo(response):
            return response
        for name in HIDDEN:
            response.headers.pop(name)
        raw = request.params.get("format") == "raw"
        if not raw:  # the stored form, as JSON; raw keeps the object's own Content-Type
            response.headers["Content-Type"] = "application/json; charset=utf-8"
        if request.method == "HEAD" or response.status != 200 or not raw:
            return response
        try:
            entries = parse_stored(await read_whole(response, self.max_size))
        except (ValueError, OverflowError):
            return SwiftResponse.text(500, "Internal Server Error: the manifest cannot be read")
        body = json.dumps([as_put_entry(entry) for entry in entries]).encode("utf-8")
        response.body = body
        response.headers["Content-Length"] = str(len(body))
        response.headers["ETag"] = md5(body, usedforsecurity=False).hexdigest()
        return response

    async def _put_manifest(self, request: SwiftRequest, account: str, container: str, obj: str) -> SwiftResponse:
        length = request.header("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_size:
            request.discard_body()
            return SwiftResponse.text(413, f"Manifest File > {self.max_size} bytes")
        try:
            raw = await read_source(request.body, self.max_size)
        except OverflowError:
            request.discard_body()
            return SwiftResponse.text(413, f"Manifest File > {self.max_size} bytes")
        accept_json = "application/json" in (request.header("Accept") or "")
        if request.params.get("heartbeat", "").lower() in ("on", "true", "yes", "1"):
            return SwiftResponse(202, HeaderMap({"Content-Type": "application/json; charset=utf-8" if accept_json
                                                 else "text/plain; charset=utf-8"}),
                                 _Heartbeat(self.reactor, self.yield_frequency,
                                            self._store(request, account, container, obj, raw, accept_json)))
        try:
            stored = await self._validated_put(request, account, container, obj, raw)
        except ManifestError as err:
            return _refusal(err, accept_json)
        return stored

    async def _store(self, request, account, container, obj, raw: bytes, accept_json: bool) -> bytes:
        """The heartbeat PUT's result, as the body's last lines (Swift's format)."""
        try:
            response = await self._validated_put(request, account, container, obj, raw)
        except ManifestError as err:
            status, body, problems = err.status, err.reason, err.problems
            extra: dict[str, str] = {}
        else:
            status = response.status
            body = response.body.decode("utf-8", "replace") if isinstance(response.body, bytes) else ""
            response.discard_body()
            problems = []
            extra = {}
            if status // 100 == 2:
                body = ""
                extra = {"Etag": response.headers.get("ETag", ""),
                         "Last Modified": response.headers.get("Last-Modified", "")}
        result = {"Response Status": f"{status} {HTTPStatus(status).phrase}", "Response Body": body.strip(),
                  **extra, "Errors": [list(p) for p in problems]}
        return _result_text(result, accept_json)

    async def _validated_put(self, request: SwiftRequest, account: str, container: str, obj: str,
                             raw: bytes) -> SwiftResponse:
        entries = parse_put(raw, self.max_segments)
        own = f"/{container}/{obj}"
        checked = await self._check_segments(request, account, entries, own)
        stored, slo_etag, total = build_manifest(checked)
        claimed = request.header("ETag")
        if claimed is not None and claimed.strip('"') != slo_etag:
            raise ManifestError(422, "Unprocessable Entity\nUnable to process the contained instructions")
        body = json.dumps(stored).encode("utf-8")
        manifest_etag = md5(body, usedforsecurity=False).hexdigest()
        headers = request.headers
        headers["ETag"] = manifest_etag
        headers["Content-Length"] = str(len(body))
        headers.pop("Transfer-Encoding")
        headers[SLO] = "True"
        headers[SLO_ETAG] = slo_etag
        headers[SLO_SIZE] = str(total)
        # parameters a middleware above put on the listing's ETag (s3api's s3_etag) are kept
        kept = "".join(f"; {p.strip()}" for p in (headers.get(LISTING_ETAG) or "").split(";")[1:] if p.strip())
        headers[LISTING_ETAG] = f"{manifest_etag}; slo_etag={slo_etag}{kept}"
        headers[LISTING_SIZE] = str(total)
        request.body = BytesSource(body)
        response = await self.app(request)
        if response.status == 201:
            response.headers["ETag"] = f'"{slo_etag}"'
        return response

    async def _check_segments(self, request: SwiftRequest, account: str, entries: list[dict],
                              own: str) -> list[dict]:
        """Each entry HEADed as the requester (a few at once), in the stored form; or ManifestError."""
        problems: list[tuple[str, str] | None] = [None] * len(entries)
        limit = DeferredSemaphore(self.concurrency)

        async def check(index: int, entry: dict) -> dict | None:
            if "data" in entry:
                return {"data": entry["data"]}
            name = entry["path"]
            shown = quote(name.lstrip("/"))
            if name == own:
                problems[index] = (shown, "Segment cannot be the manifest itself")  # it would be overwritten
                return None
            head = subrequest.make(request, "HEAD", f"/v1/{account}{name}", source=SOURCE)
            response = await limit.run(lambda: Deferred.fromCoroutine(self.app(head)))
            response.discard_body()
            if response.status // 100 != 2:
                problems[index] = (shown, f"{response.status} {HTTPStatus(response.status).phrase}")
                return None
            sub_slo = is_slo(response)
            if sub_slo:
                size = int(response.headers.get(SLO_SIZE) or 0)
                etag = response.headers.get(SLO_ETAG) or ""
            else:
                size = int(response.headers.get("Content-Length") or 0)
                etag = (response.headers.get("ETag") or "").strip('"')
            if entry.get("etag") and entry["etag"].strip('"') != etag:
                problems[index] = (shown, "Etag Mismatch")
                return None
            if entry.get("size_bytes") is not None and int(entry["size_bytes"]) != size:
                problems[index] = (shown, "Size Mismatch")
                return None
            if size < 1:
                problems[index] = (shown, TOO_SMALL)
                return None
            stored = {"name": name, "bytes": size, "hash": etag,
                      "content_type": response.headers.get("Content-Type", "application/octet-stream"),
                      "last_modified": _iso(response.headers.get("Last-Modified"))}
            if entry.get("range"):
                try:
                    ranges = parse_range(f"bytes={entry['range']}", size)
                except Unsatisfiable:
                    problems[index] = (shown, "Unsatisfiable Range")
                    return None
                if ranges is None:
                    problems[index] = (shown, "Invalid Range")
                    return None
                if len(ranges) > 1:
                    problems[index] = (shown, "Multiple Ranges")
                    return None
                first, last = ranges[0]
                if (first, last) != (0, size - 1):
                    stored["range"] = f"{first}-{last}"
            if sub_slo:
                stored["sub_slo"] = True
            return stored

        checked = await gatherResults([Deferred.fromCoroutine(check(i, e)) for i, e in enumerate(entries)],
                                      consumeErrors=True)
        found = [p for p in problems if p is not None]
        if found:
            raise ManifestError(400, BAD_REQUEST, found)
        return checked

    # --- deleting the manifest and its segments ------------------------------------------------

    async def _delete_manifest(self, request: SwiftRequest, account: str, container: str,
                               obj: str) -> SwiftResponse:
        accept_json = "application/json" in (request.header("Accept") or "")
        request.discard_body()
        deleted = not_found = 0
        errors: list[list[str]] = []
        manifest_path = f"/v1/{account}/{container}/{obj}"
        version = request.params.get("version-id")  # object versioning: that version's manifest
        version_query = f"version-id={quote(version, safe='')}" if version else ""
        try:
            targets = await self._deletion_list(request, account, manifest_path, 0, version_query)
        except ManifestError as err:
            if err.status == 404:
                return SwiftResponse.text(404, "Not Found")
            errors.append([quote(f"{container}/{obj}"), err.reason])
            targets = []
        limit = DeferredSemaphore(self.concurrency)

        async def delete(path: str, query: str = "") -> int:
            gone = subrequest.make(request, "DELETE", path, source=SOURCE, query=query)
            response = await limit.run(lambda: Deferred.fromCoroutine(self.app(gone)))
            response.discard_body()
            return response.status

        if not errors:
            statuses = await gatherResults([Deferred.fromCoroutine(delete(p)) for p in targets[:-1]],
                                           consumeErrors=True)
            statuses.append(await delete(targets[-1], version_query))  # the manifest last: a failure leaves it to retry
            for path, status in zip(targets, statuses):
                if status // 100 == 2:
                    deleted += 1
                elif status == 404:
                    not_found += 1
                else:
                    errors.append([quote(path.split("/", 3)[3]), f"{status} {HTTPStatus(status).phrase}"])
        status = 400 if errors else 200
        result = {"Number Deleted": deleted, "Number Not Found": not_found,
                  "Response Body": "Bad Request" if errors else "",
                  "Response Status": f"{status} {HTTPStatus(status).phrase}", "Errors": errors}
        body = _result_text(result, accept_json)
        return SwiftResponse(200, HeaderMap({
            "Content-Type": "application/json; charset=utf-8" if accept_json else "text/plain; charset=utf-8",
            "Content-Length": str(len(body))}), body)

    async def _deletion_list(self, request: SwiftRequest, account: str, path: str, depth: int,
                             version_query: str = "") -> list[str]:
        """Every segment of the manifest at ``path`` (nested manifests' too), then the manifest."""
        query = "&".join(["multipart-manifest=get", *([version_query] if version_query else [])])
        read = subrequest.make(request, "GET", path, source=SOURCE, query=query)
        response = await self.app(read)
        if response.status == 404:
            response.discard_body()
            raise ManifestError(404)
        if response.status != 200 or not is_slo(response):
            response.discard_body()
            raise ManifestError(400, "Not an SLO manifest" if response.status == 200 else
                                f"{response.status} {HTTPStatus(response.status).phrase}")
        try:
            entries = parse_stored(await read_whole(response, self.max_size))
        except (ValueError, OverflowError):
            raise ManifestError(400, "Unreadable manifest") from None
        paths: list[str] = []
        for entry in entries:
            if "data" in entry:
                continue
            segment = f"/v1/{account}{entry['name']}"
            if entry.get("sub_slo") and depth + 1 < MAX_DEPTH:
                paths.extend(await self._deletion_list(request, account, segment, depth + 1))
            else:
                paths.append(segment)
        paths.append(path)
        return paths


# --- manifests ---------------------------------------------------------------------------------


def parse_put(raw: bytes, max_segments: int) -> list[dict]:
    """A manifest PUT's segments, checked for form (not yet against the store); or ManifestError."""
    try:
        entries = json.loads(raw)
    except ValueError:
        raise ManifestError(400, "Manifest must be valid JSON.") from None
    if not isinstance(entries, list):
        raise ManifestError(400, "Manifest must be a list.")
    if not entries:
        raise ManifestError(400, "Manifest must list at least one segment.")
    if len(entries) > max_segments:
        raise ManifestError(413, f"Number of segments must be <= {max_segments}")
    errors = []
    for index, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem:
            errors.append(f"Index {index}: {problem}")
    if errors:
        raise ManifestError(400, "\n".join(errors))
    return entries


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "not a JSON object"
    if "data" in entry:
        if set(entry) != {"data"}:
            return "data segments may not have other keys"
        try:
            data = base64.b64decode(entry["data"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            return "data must be valid base64"
        if not data:
            return "too small; each segment must be at least 1 byte."
        return None
    extra = set(entry) - PUT_KEYS
    if extra:
        return "extraneous keys " + ", ".join(f'"{key}"' for key in sorted(extra))
    path = entry.get("path")
    if not isinstance(path, str):
        return "expected keys to include path"
    container, _, obj = path.lstrip("/").partition("/")
    if not container or not obj:
        return "path does not refer to an object. Path must be of the form /container/object."
    entry["path"] = "/" + path.lstrip("/")
    etag = entry.get("etag")
    if etag is not None and not isinstance(etag, str):
        return "etag must be a string or null (if provided)"
    size = entry.get("size_bytes")
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, str))
                             or not str(size).isdigit()):
        return "size_bytes must be an integer or null (if provided)"
    if size is not None and int(size) < 1:
        return "too small; each segment must be at least 1 byte."
    rng = entry.get("range")
    if rng is not None and not isinstance(rng, str):
        return "range must be a string"
    return None


def build_manifest(checked: list[dict]) -> tuple[list[dict], str, int]:
    """(the stored entries, the large object's ETag, its size)."""
    etag = md5(usedforsecurity=False)
    total = 0
    for entry in checked:
        if "data" in entry:
            data = base64.b64decode(entry["data"])
            etag.update(md5(data, usedforsecurity=False).hexdigest().encode("ascii"))
            total += len(data)
        elif entry.get("range"):
            etag.update(f"{entry['hash']}:{entry['range']};".encode("ascii"))
            total += segment_length(entry)
        else:
            etag.update(entry["hash"].encode("ascii"))
            total += entry["bytes"]
    return checked, etag.hexdigest(), total


def parse_stored(raw: bytes) -> list[dict]:
    entries = json.loads(raw)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("not a list of segments")
    return entries


def as_put_entry(entry: dict) -> dict:
    """A stored entry in the form a manifest PUT takes (``format=raw``)."""
    if "data" in entry:
        return {"data": entry["data"]}
    put = {"path": entry["name"], "etag": entry["hash"], "size_bytes": entry["bytes"]}
    if entry.get("range"):
        put["range"] = entry["range"]
    return put


def _show_slo_etag(entry: dict[str, Any]) -> None:
    """A manifest's listing row: the large object's ETag out of ``hash`` into ``slo_etag``, quoted."""
    etag, params = etag_params(entry["hash"])
    slo_etag = next((value for key, value in params if key == "slo_etag"), None)
    if slo_etag is None:
        return
    entry["slo_etag"] = f'"{slo_etag}"'
    entry["hash"] = etag + "".join(f"; {key}={value}" for key, value in params if key != "slo_etag")


def _iso(http_date: str | None) -> str | None:
    """A Last-Modified date as a listing's ``last_modified`` (what Swift's manifests keep)."""
    seconds = parse_http_date(http_date) if http_date else None
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000", time.gmtime(seconds))


def _result_text(result: dict, accept_json: bool) -> bytes:
    if accept_json:
        return json.dumps(result).encode("utf-8")
    lines = []
    for key, value in result.items():
        if key == "Errors":
            continue
        lines.append(f"{key}: {value}")
    lines.append("Errors:")
    lines.extend(f"{path}, {reason}" for path, reason in result["Errors"])
    return ("\n".join(lines) + "\n").encode("utf-8")


def _bare(status: int, body: bytes, headers: HeaderMap | None = None) -> SwiftResponse:
    """An answer whose body is exactly ``body`` (Swift's part-number refusals have no newline)."""
    headers = headers if headers is not None else HeaderMap()
    headers["Content-Type"] = "text/plain; charset=utf-8"
    headers["Content-Length"] = str(len(body))
    return SwiftResponse(status, headers, body)


def _refusal(err: ManifestError, accept_json: bool) -> SwiftResponse:
    if not err.problems:
        return SwiftResponse.text(err.status, err.reason)
    if accept_json:
        body = json.dumps({"Errors": [list(p) for p in err.problems]}).encode("utf-8")
        return SwiftResponse(err.status, HeaderMap({"Content-Type": "application/json; charset=utf-8"}), body)
    lines = ["Errors:", *(f"{path}, {reason}" for path, reason in err.problems)]
    return SwiftResponse.text(err.status, "\n".join(lines))


@implementer(IByteSource)
class _Heartbeat:
    """
    A heartbeat manifest PUT's body: a space at once and every ``interval`` seconds while the
    segments are checked (so neither the client nor a load balancer gives up on a long check),
    then the result. The check goes on if the client leaves: its outcome is the same either way.
    """

    def __init__(self, reactor, interval: float, result: Awaitable[bytes]) -> None:
        self._reactor = reactor
        self._interval = interval
        self._outcome: bytes | None = None
        self._waiter: Deferred | None = None
        self._started = self._done = False
        Deferred.fromCoroutine(result).addErrback(self._failed).addCallback(self._finished)

    def _failed(self, failure) -> bytes:
        log.failure("heartbeat manifest PUT failed", failure)
        return b"Response Status: 500 Internal Server Error\nResponse Body: \nErrors:\n"

    def _finished(self, outcome: bytes) -> None:
        self._outcome = outcome
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    def read(self) -> Deferred:
        return Deferred.fromCoroutine(self._next())

    async def _next(self) -> bytes:
        if self._done:
            return b""
        if not self._started:
            self._started = True
            return b" "
        if self._outcome is None:
            self._waiter = Deferred()
            timer = self._reactor.callLater(self._interval, self._wake)
            await self._waiter
            if timer.active():
                timer.cancel()
        if self._outcome is None:
            return b" "
        self._done = True
        return b"\r\n\r\n" + self._outcome

    def stop(self) -> None:
        self._done = True
        self._wake()


def _build(app, settings, proxy) -> StaticLargeObjects:
    proxy.info.register("slo", max_manifest_segments=settings["max_manifest_segments"],
                        max_manifest_size=settings["max_manifest_size"],
                        yield_frequency=settings["yield_frequency"], min_segment_size=1)
    return StaticLargeObjects(app, settings, proxy.reactor, max_listing_bytes(proxy.context.constraints))


middleware = Middleware("slo", _build, options=OPTIONS)
