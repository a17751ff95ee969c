"""
`MemorySwift`: the object API of the pipeline's inner application, in memory, for testing the
middlewares that compose objects (large objects, symlinks, versions) on a `Clock`.

It answers as the proxy application and the storage nodes do together, for what those
middlewares rely on: PUT (with ETag checked), GET and HEAD (conditionals, a single Range, the
two ``X-Backend-*`` headers a middleware may set), POST of metadata and DELETE. Every request
it receives is recorded in ``calls``.
"""

from __future__ import annotations

from hashlib import md5

from attrs import define, field
from zope.interface import implementer

from txstore.common.conditionals import evaluate
from txstore.common.http_ranges import Unsatisfiable, content_range, parse_range
from txstore.common.timestamps import Timestamp
from txstore.interfaces import IApp
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

KEPT = ("content-type", "x-object-meta-", "x-object-sysmeta-", "x-static-large-object", "x-object-manifest",
        "x-symlink-", "content-disposition", "content-encoding")


@define
class Stored:
    headers: HeaderMap
    body: bytes
    etag: str
    timestamp: Timestamp


@define
class Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    source: str | None


@implementer(IApp)
@define
class MemorySwift:
    objects: dict[str, Stored] = field(factory=dict)
    calls: list[Call] = field(factory=list)
    now: float = 1_700_000_000.0

    def put(self, path: str, body: bytes, **headers: str) -> str:
        """Store an object directly (test set-up); returns its ETag."""
        etag = md5(body).hexdigest()
        self.now += 1
        self.objects[path] = Stored(HeaderMap({"Content-Type": "application/octet-stream", **headers}), body, etag,
                                    Timestamp.from_seconds(self.now))
        return etag

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        path = request.decoded_path
        self.calls.append(Call(request.method, path, request.query, dict(request.headers.items()),
                               request.environ.get("swift.source")))
        body = b""
        while chunk := await request.body.read():
            body += chunk
        method = request.method
        if method == "PUT":
            etag = md5(body).hexdigest()
            claimed = request.header("ETag")
            if claimed and claimed.strip('"') != etag:
                return SwiftResponse.text(422, "Unprocessable Entity")
            self.now += 1
            kept = HeaderMap({name: value for name, value in request.headers.items()
                              if name.lower().startswith(KEPT)})
            kept.setdefault("Content-Type", "application/octet-stream")
            self.objects[path] = Stored(kept, body, etag, Timestamp.from_seconds(self.now))
            return SwiftResponse.empty(201, {"ETag": etag, "Last-Modified": Timestamp.from_seconds(self.now).last_modified})
        stored = self.objects.get(path)
        if method == "DELETE":
            if stored is None:
                return SwiftResponse.text(404, "Not Found")
            del self.objects[path]
            return SwiftResponse.empty(204)
        if stored is None:
            return SwiftResponse.text(404, "Not Found")
        if method == "POST":
            kept = HeaderMap({name: value for name, value in stored.headers.items()
                              if not name.lower().startswith("x-object-meta-")})
            kept.update((n, v) for n, v in request.headers.items() if n.lower().startswith("x-object-meta-"))
            stored.headers = kept
            return SwiftResponse.empty(202)
        headers = stored.headers.copy()
        headers["ETag"] = stored.etag
        headers["Last-Modified"] = stored.timestamp.last_modified
        headers["X-Timestamp"] = stored.timestamp.normal
        compared = stored.etag
        at = request.header("X-Backend-Etag-Is-At")
        if at and at in stored.headers:
            compared = stored.headers[at]
        status = evaluate(method, etag=compared, last_modified=int(stored.timestamp.seconds),
                          if_match=request.header("If-Match"), if_none_match=request.header("If-None-Match"))
        if status != 200:
            return SwiftResponse.empty(status, {"ETag": stored.etag})
        data = stored.body
        ignore = request.header("X-Backend-Ignore-Range-If-Metadata-Present")
        ranged = request.header("Range") if not (ignore and ignore in stored.headers) else None
        try:
            ranges = parse_range(ranged, len(data))
        except Unsatisfiable:
            return SwiftResponse.text(416, "Requested Range Not Satisfiable")
        if ranges is not None and len(ranges) == 1:
            first, last = ranges[0]
            headers["Content-Range"] = content_range(first, last, len(data))
            headers["Content-Length"] = str(last - first + 1)
            return SwiftResponse(206, headers, b"" if method == "HEAD" else data[first:last + 1])
        headers["Content-Length"] = str(len(data))
        return SwiftResponse(200, headers, b"" if method == "HEAD" else data)
