"""
`MemorySwift`: the object API of the pipeline's inner application, in memory, for testing the
middlewares that compose objects (large objects, symlinks, versions) on a `Clock`.

It answers as the proxy application and the storage nodes do together, for what those
middlewares rely on: PUT (with ETag checked), GET and HEAD (conditionals, a single Range, the
two ``X-Backend-*`` headers a middleware may set, the Range one naming one or several
metadata, comma-separated, as slo and dlo together send it; a 304, 412 or 416 carries the
object's headers, as a node's does), POST of metadata (which replaces what a POST replaces) and DELETE;
and container listings (GET of ``/v1/a/c`` with ``prefix``, ``marker``, ``end_marker`` and
``limit``, in JSON, sorted by name as Swift sorts them, by their UTF-8 bytes). A row lists what
a node's container update should carry: the object's stored
``X-Object-Sysmeta-Container-Update-Override-Etag`` as its ``hash`` (verbatim, parameters and
all) and ``-Override-Size`` as its ``bytes``, when it has them, and its Content-Type as a POST
left it. A container exists once it was PUT or holds an object. Every request it receives is
recorded in ``calls``.
"""

from __future__ import annotations

import json
from hashlib import md5

from attrs import define, field
from zope.interface import implementer

from txstore.common.conditionals import evaluate
from txstore.common.http_ranges import Unsatisfiable, content_range, parse_range
from txstore.common.paths import BadPath
from txstore.common.timestamps import Timestamp
from txstore.interfaces import IApp
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

KEPT = ("content-type", "x-object-meta-", "x-object-sysmeta-", "x-static-large-object", "x-object-manifest",
        "x-symlink-", "content-disposition", "content-encoding")
# What a POST replaces (the rest describes the bytes and stays); Content-Type only when given.
POSTED = ("x-object-meta-", "x-object-transient-sysmeta-", "x-object-manifest", "content-disposition",
          "content-encoding")
LISTING_LIMIT = 10000
OVERRIDE_ETAG = "X-Object-Sysmeta-Container-Update-Override-Etag"
OVERRIDE_SIZE = "X-Object-Sysmeta-Container-Update-Override-Size"


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
    containers: set[str] = field(factory=set)
    calls: list[Call] = field(factory=list)
    now: float = 1_700_000_000.0

    def put(self, path: str, body: bytes, **headers: str) -> str:
        """Store an object directly (test set-up); returns its ETag."""
        etag = md5(body).hexdigest()
        self.now += 1
        self.objects[path] = Stored(HeaderMap({"Content-Type": "application/octet-stream", **headers}), body, etag,
                                    Timestamp.from_seconds(self.now))
        return etag

    def _container_exists(self, path: str) -> bool:
        return path in self.containers or any(name.startswith(path + "/") for name in self.objects)

    def _container(self, request: SwiftRequest, path: str) -> SwiftResponse:
        if request.method == "PUT":
            created = path not in self.containers
            self.containers.add(path)
            return SwiftResponse.empty(201 if created else 202)
        if not self._container_exists(path):
            return SwiftResponse.text(404, "Not Found")
        if request.method not in ("GET", "HEAD"):
            return SwiftResponse.text(405, "Method Not Allowed")
        params = request.params
        prefix, marker, end = params.get("prefix", ""), params.get("marker", ""), params.get("end_marker")
        limit = min(int(params.get("limit") or LISTING_LIMIT), LISTING_LIMIT)
        delimiter = params.get("delimiter") or ""
        listed = []
        subdirs = set()
        for name in sorted((p[len(path) + 1:] for p in self.objects if p.startswith(path + "/")),
                           key=lambda n: n.encode("utf-8", "surrogatepass")):
            key = name.encode("utf-8", "surrogatepass")
            if not name.startswith(prefix) or key <= marker.encode("utf-8", "surrogatepass"):
                continue
            if end is not None and key >= end.encode("utf-8", "surrogatepass"):
                break
            if len(listed) == limit:
                break
            cut = name.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:  # rolled up into a subdir entry, once
                subdir = name[:cut + len(delimiter)]
                if subdir not in subdirs:
                    subdirs.add(subdir)
                    listed.append({"subdir": subdir})
                continue
            stored = self.objects[f"{path}/{name}"]
            listed.append({"name": name, "bytes": int(stored.headers.get(OVERRIDE_SIZE, len(stored.body))),
                           "hash": stored.headers.get(OVERRIDE_ETAG, stored.etag),
                           "content_type": stored.headers.get("Content-Type"),
                           "last_modified": stored.timestamp.isoformat})
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Container-Object-Count": str(len(listed))}
        if params.get("format") != "json":
            body = "".join(entry.get("name", entry.get("subdir")) + "\n" for entry in listed).encode("utf-8")
            headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            body = json.dumps(listed).encode("utf-8")
        headers["Content-Length"] = str(len(body))
        return SwiftResponse(200, HeaderMap(headers), b"" if request.method == "HEAD" else body)

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        path = request.decoded_path
        self.calls.append(Call(request.method, path, request.query, dict(request.headers.items()),
                               request.environ.get("swift.source")))
        body = b""
        while chunk := await request.body.read():
            body += chunk
        try:
            _version, account, container, obj = request.split(1, 4)
        except BadPath as err:
            return SwiftResponse.text(err.status, err.reason)
        if container is not None and obj is None:
            return self._container(request, f"/v1/{account}/{container}")
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
            posted = POSTED + (("content-type",) if "Content-Type" in request.headers else ())
            kept = HeaderMap({name: value for name, value in stored.headers.items()
                              if not name.lower().startswith(posted)})
            kept.update((n, v) for n, v in request.headers.items() if n.lower().startswith(posted))
            stored.headers = kept
            return SwiftResponse.empty(202)
        headers = stored.headers.copy()
        headers["ETag"] = stored.etag
        headers["Last-Modified"] = stored.timestamp.last_modified
        headers["X-Timestamp"] = stored.timestamp.normal
        compared = stored.etag
        for at in (request.header("X-Backend-Etag-Is-At") or "").split(","):  # the first the object has
            if at.strip() and at.strip() in stored.headers:
                compared = stored.headers[at.strip()]
                break
        status = evaluate(method, etag=compared, last_modified=int(stored.timestamp.seconds),
                          if_match=request.header("If-Match"), if_none_match=request.header("If-None-Match"))
        if status != 200:
            return SwiftResponse.empty(status, headers)
        data = stored.body
        ignore = (request.header("X-Backend-Ignore-Range-If-Metadata-Present") or "").split(",")
        ignored = any(name.strip() and name.strip() in stored.headers for name in ignore)
        try:
            ranges = parse_range(None if ignored else request.header("Range"), len(data))
        except Unsatisfiable:
            headers["Content-Range"] = f"bytes */{len(data)}"
            return SwiftResponse(416, headers, b"Requested Range Not Satisfiable\n")
        if ranges is not None and len(ranges) == 1:
            first, last = ranges[0]
            headers["Content-Range"] = content_range(first, last, len(data))
            headers["Content-Length"] = str(last - first + 1)
            return SwiftResponse(206, headers, b"" if method == "HEAD" else data[first:last + 1])
        headers["Content-Length"] = str(len(data))
        return SwiftResponse(200, headers, b"" if method == "HEAD" else data)


def read_body(case, response) -> bytes:
    """A middleware's answer read whole: bytes as they are, a streamed body read to its end."""
    if not response.streamed:
        return response.body
    data = []
    while piece := case.successResultOf(response.body.read()):
        data.append(piece)
    return b"".join(data)
