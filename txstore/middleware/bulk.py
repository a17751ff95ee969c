# -*- test-case-name: txstore.test.unit.test_bulk -*-
"""
bulk: Swift's bulk operations. ``PUT …?extract-archive=tar|tar.gz|tar.bz2`` stores every file
of an uploaded archive as an object; ``POST`` or ``DELETE /v1/<account>?bulk-delete`` deletes
the objects and containers listed in the body (one URL-encoded ``<container>[/<object>]`` a
line). Each object is written or deleted by a sub-request through the rest of the pipeline
(``swift.source`` ``EA`` / ``BD``) with the client's credentials, so auth, quotas and every
limit apply to each.

The answer is ``200`` with a result in the ``Accept`` format (text/plain, JSON, XML; 406 for
none of them), as Swift's: ``Response Status`` (``201 Created`` / ``200 OK``; ``400 Bad
Request`` with ``Response Body`` saying why; when some names failed ``400 Bad Request``, or
``502 Bad Gateway`` if one failed with a 5xx), ``Number Files Created`` or ``Number Deleted`` /
``Number Not Found``, and ``Errors`` (name, status). With ``?heartbeat=on`` the answer starts at once and a space goes out every
``yield_frequency`` seconds until the result, so proxies and clients do not time out.

Extraction streams: ``tarfile`` in stream mode (``r|``) runs in a thread of the filter's own
pool and reads the body through `ArchiveReader`, which asks the reactor for one piece of the
client's body at a time and decompresses gzip and bzip2 itself, ``CHUNK`` bytes of output at
most per call (a decompression bomb is read a chunk at a time like any other archive). Each
member's bytes are handed to the reactor one chunk at a time (`Handoff`), as the body of that
member's PUT: the thread waits until the PUT took the chunk, so what an extraction holds is
bounded by a couple of chunks whatever the archive's size. Containers are created as needed
(HEAD, then PUT), at most ``max_containers_per_extraction`` of them created (existing ones do
not count).

Deletion reads the list whole first (at most ``max_deletes_per_request`` names of at most
``max_container_name_length + max_object_name_length + 2`` bytes: bounded) so that a list that
is too long is refused (413) before anything is deleted; then ``delete_concurrency`` deletes at
a time, containers after the objects listed before them, stopping at ``max_failed_deletes``.
"""

from __future__ import annotations

import bz2
import json
import tarfile
import zlib
from collections.abc import Callable, Mapping
from functools import partial
from http.client import responses
from typing import Any
from urllib.parse import quote, unquote_to_bytes
from xml.etree.ElementTree import Element, SubElement, tostring

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, gatherResults, succeed
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from txstore.common import config as c
from txstore.common.listing_format import ListingError, negotiate_format
from txstore.common.paths import BadPath
from txstore.common.streaming import BodyIncomplete
from txstore.interfaces import IApp, IByteSource
from txstore.middleware.base import Middleware
from txstore.proxy import subrequest
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

log = Logger()

CHUNK = 1 << 20  # what the thread hands over at a time, and the most one decompression call gives
ARCHIVES = {"tar": "", "tar.gz": "gz", "tar.bz2": "bz2"}
EXTRACT_SOURCE, DELETE_SOURCE = "EA", "BD"
READ_TIMEOUT = 60.0  # a client that sends nothing of its archive for this long is given up on

OPTIONS = (
    c.Option("max_containers_per_extraction", c.integer(0), 10000,
             doc="Containers one archive may create."),
    c.Option("max_failed_extractions", c.integer(1), 1000,
             doc="Failed files after which an extraction stops."),
    c.Option("max_deletes_per_request", c.integer(1), 10000,
             doc="Names one bulk delete may list (413 beyond)."),
    c.Option("max_failed_deletes", c.integer(1), 1000,
             doc="Failed deletes after which a bulk delete stops."),
    c.Option("yield_frequency", c.number(0.1), 10.0,
             doc="Seconds between the spaces of a ?heartbeat=on answer."),
    c.Option("delete_concurrency", c.integer(1, 16), 2,
             doc="Deletes sent at once by a bulk delete."),
    c.Option("delete_container_retry_count", c.integer(0, 5), 0,
             doc="Retries of a container delete answered 409 (its objects' deletes not yet listed)."),
    c.Option("extract_threads", c.integer(1, 64), 4,
             doc="Archives extracted at once (each in a thread); more wait their turn."),
)


class Refused(Exception):
    """Stop the operation: the result's Response Status and Response Body."""

    def __init__(self, status: int, body: str = "") -> None:
        super().__init__(status, body)
        self.status, self.body = status, body


def status_line(status: int) -> str:
    return f"{status} {responses.get(status, 'Unknown')}"


def render(media_type: str, data: Mapping[str, Any], errors: list[list[str]], root: str) -> bytes:
    """A result as Swift writes it: JSON, XML (``root`` element) or ``Key: value`` lines."""
    if media_type == "application/json":
        return json.dumps({**data, "Errors": errors}).encode("ascii")
    if media_type.endswith("/xml"):
        # Swift's layout: each child of the root and of <errors> on a line of its own.
        document = Element(root)
        document.text = document.tail = "\n"
        for key in sorted(data):
            _line(document, key.replace(" ", "_").lower()).text = str(data[key])
        listed = _line(document, "errors")
        listed.text = "\n"
        for name, status in errors:
            failed = _line(listed, "object")
            SubElement(failed, "name").text = name
            SubElement(failed, "status").text = status
        return tostring(document, encoding="unicode", short_empty_elements=False).encode("utf-8")
    lines = [f"{key}: {data[key]}\n" for key in sorted(data)]
    lines.append("Errors:\n")
    lines.extend(f"{name}, {status}\n" for name, status in errors)
    return "".join(lines).encode("utf-8")


def _line(parent: Element, tag: str) -> Element:
    child = SubElement(parent, tag)
    child.tail = "\n"
    return child


@implementer(IByteSource)
class Heartbeats:
    """
    A ``?heartbeat=on`` answer's body: a space every ``every`` seconds while ``work`` runs (the
    XML declaration first for XML, as Swift), then ``\\r\\n\\r\\n`` and the result.

    Beats start once ``body_read`` fires (the client's body is all in): the HTTP edge takes an
    answer begun before the request's end for one that will not read the rest (it drops it).
    An archive is extracted while it arrives, so what remains after its end is short; a bulk
    delete's long part comes after its small body.
    """

    def __init__(self, reactor, every: float, work: Deferred, xml: bool, body_read: Deferred | None = None) -> None:
        self.reactor, self.every, self.work = reactor, every, work
        self._armed = body_read is None
        if body_read is not None:
            body_read.addCallback(self._arm)
        self._beat_text = b'<?xml version="1.0" encoding="UTF-8"?>\n' if xml else b" "
        self._beaten = False
        self._result: bytes | None = None
        self._ended = False
        self._waiting: Deferred | None = None
        self._timer = None
        work.addCallbacks(self._done, lambda failure: failure.trap(CancelledError))  # a stop's cancel

    def read(self) -> Deferred:
        if self._result is not None:
            data, self._result, self._ended = self._result, b"", True
            return succeed(data)
        if self._ended:
            return succeed(b"")
        self._waiting = Deferred()
        if self._armed:
            self._timer = self.reactor.callLater(self.every, self._beat)
        return self._waiting

    def _arm(self, _: object = None) -> None:
        if not self._armed:
            self._armed = True
            if self._waiting is not None and self._timer is None and not self._ended:
                self._timer = self.reactor.callLater(self.every, self._beat)

    def _beat(self) -> None:
        self._timer = None
        waiting, self._waiting = self._waiting, None
        data, self._beaten, self._beat_text = self._beat_text, True, b" "
        waiting.callback(data)

    def _done(self, body: bytes) -> None:
        result = (b"\r\n\r\n" if self._beaten else b"") + body
        if self._waiting is not None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            waiting, self._waiting = self._waiting, None
            self._result = b""
            waiting.callback(result)
        else:
            self._result = result

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ended = True
        self.work.cancel()


@implementer(IByteSource)
class Handoff:
    """
    One archive member as its PUT's body: the extraction thread gives a chunk (`give`, a Deferred
    firing once the PUT took it, False when the PUT wants no more) and the PUT reads it. So one
    chunk waits here at most.
    """

    def __init__(self) -> None:
        self._reader: Deferred | None = None
        self._pending: tuple[bytes, Deferred] | None = None
        self.closed = False

    def read(self) -> Deferred:
        if self._pending is not None:
            (chunk, given), self._pending = self._pending, None
            given.callback(True)
            return succeed(chunk)
        self._reader = Deferred()
        return self._reader

    def give(self, chunk: bytes) -> Deferred:
        if self.closed:
            return succeed(False)
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.callback(chunk)
            return succeed(True)
        given = Deferred()
        self._pending = (chunk, given)
        return given

    def stop(self) -> None:
        self.closed = True
        if self._pending is not None:
            (_, given), self._pending = self._pending, None
            given.callback(False)

    def fail(self, reason: Exception) -> None:
        """The archive broke inside this member: its PUT fails (nothing stored)."""
        self.closed = True
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.errback(reason)


class ArchiveReader:
    """
    The client's body as a file for ``tarfile`` in a worker thread: ``next_piece()`` (blocking,
    from the thread) gives the next piece of the body, ``b""`` at its end; gzip and bzip2 are
    decompressed here at most ``CHUNK`` bytes per call, concatenated streams included.
    """

    def __init__(self, next_piece: Callable[[], bytes], compression: str) -> None:
        self._next = next_piece
        self._compression = compression
        self._decompressor = self._new()
        self._input = b""
        self._input_ended = False
        self._out = b""
        self._at = 0  # what of _out was read (tarfile asks for 10 KiB at a time: no copying the rest)

    def _new(self):
        if self._compression == "gz":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._compression == "bz2":
            return bz2.BZ2Decompressor()
        return None

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = CHUNK
        while self._at >= len(self._out):
            self._at = 0
            if not self._fill():
                self._out = b""
                return b""
        data = self._out[self._at:self._at + size]
        self._at += len(data)
        return data

    def _piece(self) -> bytes:
        if self._input_ended:
            return b""
        piece = self._next()
        if not piece:
            self._input_ended = True
        return piece

    def _fill(self) -> bool:
        """Put more of the archive in ``_out``; False at its end."""
        if self._decompressor is None:
            self._out = self._piece()
            return bool(self._out)
        decompressor = self._decompressor
        try:
            if decompressor.eof:
                rest = decompressor.unused_data + self._input
                self._input = b""
                if not rest.strip(b"\0"):
                    rest = self._piece()
                    if not rest.strip(b"\0"):
                        return False
                self._decompressor = decompressor = self._new()
                self._input = rest
            if self._compression == "gz":
                data = self._input or self._piece()
                if not data:
                    raise tarfile.ReadError("the compressed archive ends too early")
                self._out = decompressor.decompress(data, CHUNK)
                self._input = decompressor.unconsumed_tail
            else:
                data = self._input
                self._input = b""
                if not data and decompressor.needs_input:
                    data = self._piece()
                    if not data:
                        raise tarfile.ReadError("the compressed archive ends too early")
                self._out = decompressor.decompress(data, CHUNK)
        except (zlib.error, OSError, EOFError) as err:
            raise tarfile.ReadError(f"not a {self._compression} archive: {err}") from None
        return True


def walk_archive(reader: ArchiveReader, extraction: Extraction, call: Callable[..., Any]) -> None:
    """In the worker thread: each regular file of the archive, handed to the reactor a chunk at a time."""
    with tarfile.open(mode="r|", fileobj=reader) as archive:
        for info in archive:
            if not info.isfile():
                continue
            handoff = call(extraction.start_member, info.name, info.size, dict(info.pax_headers))
            if handoff is not None:
                data = archive.extractfile(info)
                try:
                    while chunk := data.read(CHUNK):
                        if not call(handoff.give, chunk):
                            break
                    else:
                        call(handoff.give, b"")
                except Exception as err:
                    call(handoff.fail, BodyIncomplete(f"the archive broke: {err}"))
                    call(extraction.finish_member, handoff)
                    raise
                call(extraction.finish_member, handoff)
            if call(extraction.stopping):
                return


PAX_META = ("SCHILY.xattr.user.meta.", "LIBARCHIVE.xattr.user.meta.")
PAX_TYPE = ("SCHILY.xattr.user.mime_type", "LIBARCHIVE.xattr.user.mime_type")


def pax_headers(pax: Mapping[str, str]) -> dict[str, str]:
    """Object headers from a member's extended attributes, as Swift reads them."""
    found = {}
    for key, value in pax.items():
        if key in PAX_TYPE:
            found["Content-Type"] = value
        elif key.startswith(PAX_META):
            found["X-Object-Meta-" + key.split(".meta.", 1)[1]] = value
    return found


class Extraction:
    """One archive's members turned into PUTs (reactor side; the thread calls in through `call`)."""

    def __init__(self, bulk: Bulk, request: SwiftRequest, account: str, base: str) -> None:
        self.bulk, self.request, self.account, self.base = bulk, request, account, base
        self.created = 0
        self.errors: list[list[str]] = []
        self.server_failed = False  # a file's PUT failed with a 5xx: the result is 502, else 400 (Swift's)
        self.containers: set[str] = set()  # the ones known to exist (found or created)
        self.containers_created = 0
        self._puts: dict[Handoff, tuple[str, Deferred, list[str] | None]] = {}

    async def _start_member(self, name: str, size: int, pax: dict[str, str]) -> Handoff | None:
        limits = self.bulk.limits
        path = name[2:] if name.startswith("./") else name
        path = path.lstrip("/")
        if self.base:
            path = f"{self.base}/{path}"
        if "/" not in path:
            return None  # a file at the account's level: Swift ignores it
        container, obj = path.split("/", 1)
        destination = f"/v1/{self.account}/{path}"
        if not obj or any(0xDC80 <= ord(ch) <= 0xDCFF for ch in path):
            self.errors.append([quote(path[:self.bulk.max_path_length]), status_line(412)])
            return None
        if size > limits.max_file_size:
            self.errors.append([quote(path[:self.bulk.max_path_length]), status_line(413)])
            return None
        container_failure = None
        if container not in self.containers:
            status = await self._ensure_container(container)
            if status == 401:
                self.errors.append([quote(destination[:self.bulk.max_path_length]), status_line(401)])
                raise Refused(401)
            if status // 100 == 2:
                self.containers.add(container)
            else:
                container_failure = [quote(destination[:self.bulk.max_path_length]), status_line(status)]
        handoff = Handoff()
        headers = HeaderMap({"Content-Length": str(size), **pax_headers(pax),
                             "User-Agent": f"{self.request.headers.get('User-Agent') or ''} BulkExpand".strip()})
        put = subrequest.make(self.request, "PUT", destination, source=EXTRACT_SOURCE, headers=headers, body=handoff)
        done = Deferred.fromCoroutine(self._put(put, handoff))
        self._puts[handoff] = (path, done, container_failure)
        return handoff

    def start_member(self, name: str, size: int, pax: dict[str, str]) -> Deferred:
        return Deferred.fromCoroutine(self._start_member(name, size, pax))

    async def _put(self, put: SwiftRequest, handoff: Handoff) -> int:
        try:
            response = await self.bulk.app(put)
            response.discard_body()
            return response.status
        finally:
            handoff.stop()

    async def _finish_member(self, handoff: Handoff) -> None:
        path, done, container_failure = self._puts.pop(handoff)
        try:
            status = await done
        except BodyIncomplete:
            status = 499
        except Exception:
            log.failure("{trans_id}: extract-archive PUT of {path} failed", trans_id=self.request.trans_id, path=path)
            status = 500
        if status // 100 == 2:
            self.created += 1
            return
        self.errors.append([quote(path[:self.bulk.max_path_length]), status_line(status)])
        if status // 100 == 5:
            self.server_failed = True
        if container_failure:
            self.errors.append(container_failure)
        if status == 401:
            raise Refused(401)

    def finish_member(self, handoff: Handoff) -> Deferred:
        return Deferred.fromCoroutine(self._finish_member(handoff))

    def stopping(self) -> bool:
        return len(self.errors) >= self.bulk.max_failed_extractions

    async def _ensure_container(self, container: str) -> int:
        """
        HEAD, then PUT when missing. Only the containers this extraction creates count against
        ``max_containers_per_extraction``, as in Swift; the one past it is refused before its PUT
        (Swift creates it, then refuses).
        """
        path = f"/v1/{self.account}/{container}"
        head = await self.bulk.app(subrequest.make(self.request, "HEAD", path, source=EXTRACT_SOURCE))
        head.discard_body()
        if head.status != 404:
            return head.status
        if self.containers_created >= self.bulk.max_containers:
            raise Refused(400, f"More than {self.bulk.max_containers} containers to create from tar.")
        put = await self.bulk.app(subrequest.make(self.request, "PUT", path, source=EXTRACT_SOURCE,
                                                  headers={"Content-Length": "0"}))
        put.discard_body()
        if put.status // 100 == 2:
            self.containers_created += 1
        return put.status


@implementer(IApp)
class Bulk:
    def __init__(self, app, settings: Mapping[str, Any], limits, reactor,
                 in_thread: Callable[..., Deferred] | None = None) -> None:
        self.app = app
        self.limits = limits
        self.reactor = reactor
        self.max_containers = settings["max_containers_per_extraction"]
        self.max_failed_extractions = settings["max_failed_extractions"]
        self.max_deletes = settings["max_deletes_per_request"]
        self.max_failed_deletes = settings["max_failed_deletes"]
        self.yield_frequency = settings["yield_frequency"]
        self.delete_concurrency = settings["delete_concurrency"]
        self.retry_count = settings["delete_container_retry_count"]
        self.max_path_length = limits.max_container_name_length + limits.max_object_name_length + 2
        self.in_thread = in_thread

    def __call__(self, request: SwiftRequest):
        query = request.query
        if "extract-archive" not in query and "bulk-delete" not in query:
            return self.app(request)
        params = request.params
        if "extract-archive" in params:
            if request.method == "PUT":
                return self._operation(request, "extract", params)
            if request.method in ("POST", "DELETE"):  # never a plain write or delete by mistake
                request.discard_body()
                return succeed(SwiftResponse(405, HeaderMap({"Allow": "PUT", "Content-Type": "text/plain"}),
                                             b"extract-archive is a PUT"))
        elif "bulk-delete" in params:
            if request.method in ("POST", "DELETE"):
                return self._operation(request, "delete", params)
            if request.method == "PUT":
                request.discard_body()
                return succeed(SwiftResponse(405, HeaderMap({"Allow": "POST, DELETE", "Content-Type": "text/plain"}),
                                             b"bulk-delete is a POST or a DELETE"))
        return self.app(request)

    async def _operation(self, request: SwiftRequest, kind: str, params: dict[str, str]) -> SwiftResponse:
        try:
            fmt = negotiate_format(None, request.header("Accept"))
        except ListingError as err:
            request.discard_body()
            return _text(err.status, err.reason)
        try:
            version, account, container, obj = request.split(2, 4)
        except BadPath as err:
            request.discard_body()
            return _text(err.status, err.reason)
        if version != "v1":
            return await self.app(request)
        body_read: Deferred = Deferred()
        if kind == "extract":
            compression = ARCHIVES.get(params["extract-archive"].lower().strip("."))
            if compression is None:
                request.discard_body()
                return _text(400, "Unsupported archive format")
            chunked = (request.header("Transfer-Encoding") or "").lower() == "chunked"
            if request.header("Content-Length") is None and not chunked:
                request.discard_body()
                return _text(411, "Length Required")
            base = (container or "") + (f"/{obj}" if obj is not None else "")
            work = Deferred.fromCoroutine(self._extract(request, account, base.rstrip("/"), compression,
                                                         fmt.media_type, body_read))
        else:
            work = Deferred.fromCoroutine(self._delete(request, account, fmt.media_type, body_read))
        root = "extract" if kind == "extract" else "delete"
        work.addErrback(self._failed, request, fmt.media_type, root)
        headers = HeaderMap({"Content-Type": fmt.content_type})
        if params.get("heartbeat", "").lower() in ("on", "true", "1", "yes"):
            return SwiftResponse(200, headers, Heartbeats(self.reactor, self.yield_frequency, work,
                                                          fmt.media_type.endswith("/xml"), body_read))
        return SwiftResponse(200, headers, await work)

    def _failed(self, failure, request: SwiftRequest, media_type: str, root: str) -> bytes:
        """A failure nobody foresaw: said in the result (the 200 may have gone out already), logged."""
        failure.trap(Exception)
        if failure.check(CancelledError):
            return failure
        log.failure("{trans_id}: bulk {root} failed", failure, trans_id=request.trans_id, root=root)
        return render(media_type, {"Response Status": status_line(500), "Response Body": "Server Error"}, [], root)

    # --- extract-archive ------------------------------------------------------------------------

    async def _extract(self, request: SwiftRequest, account: str, base: str, compression: str,
                       media_type: str, body_read: Deferred) -> bytes:
        extraction = Extraction(self, request, account, base)
        data: dict[str, Any] = {"Response Status": status_line(201), "Response Body": "", "Number Files Created": 0}
        call = partial(blockingCallFromThread, self.reactor)
        reader = ArchiveReader(partial(call, self._read_body, request, body_read), compression)
        try:
            await self.in_thread(walk_archive, reader, extraction, call)
        except Refused as err:
            data["Response Status"], data["Response Body"] = status_line(err.status), err.body
        except tarfile.TarError as err:
            data["Response Status"], data["Response Body"] = status_line(400), f"Invalid Tar File: {err}"
        except BodyIncomplete as err:
            data["Response Status"], data["Response Body"] = status_line(499), f"Client Disconnect: {err}"
        except CancelledError:
            data["Response Status"], data["Response Body"] = status_line(499), "Client Disconnect"
        except Exception as err:  # a sub-request's own failure: said in the result, logged
            log.failure("{trans_id}: extract-archive failed", trans_id=request.trans_id)
            data["Response Status"], data["Response Body"] = status_line(500), f"Server Error: {err}"
        finally:
            request.discard_body()
            _fire(body_read)
        data["Number Files Created"] = extraction.created
        if data["Response Status"] == status_line(201):
            if extraction.errors:
                data["Response Status"] = status_line(502 if extraction.server_failed else 400)
            elif not extraction.created:
                data["Response Status"], data["Response Body"] = status_line(400), "Invalid Tar File: No Valid Files"
        return render(media_type, data, extraction.errors, "extract")

    def _read_body(self, request: SwiftRequest, body_read: Deferred) -> Deferred:
        reading = request.body.read()
        reading.addTimeout(READ_TIMEOUT, self.reactor)

        def ended(data: bytes) -> bytes:
            if not data:
                _fire(body_read)
            return data
        return reading.addCallback(ended)

    # --- bulk-delete ----------------------------------------------------------------------------

    async def _names(self, request: SwiftRequest) -> list[str]:
        """The body's names, refused (413, 400) before any is deleted."""
        names: list[str] = []
        line = b""
        while True:
            data = await request.body.read()
            line += data
            while b"\n" in line:
                name, line = line.split(b"\n", 1)
                name = name.strip()
                if name:
                    names.append(name.decode("latin-1"))
                if len(names) > self.max_deletes:
                    raise Refused(413, f"Maximum Bulk Deletes: {self.max_deletes} per request")
            if len(line) > self.max_path_length * 2:
                raise Refused(400, "Invalid File Name")
            if not data:
                break
        if line.strip():
            names.append(line.strip().decode("latin-1"))
        if len(names) > self.max_deletes:
            raise Refused(413, f"Maximum Bulk Deletes: {self.max_deletes} per request")
        return names

    async def _delete(self, request: SwiftRequest, account: str, media_type: str, body_read: Deferred) -> bytes:
        data: dict[str, Any] = {"Response Status": status_line(200), "Response Body": "", "Number Deleted": 0,
                                "Number Not Found": 0}
        errors: list[list[str]] = []
        try:
            try:
                names = await self._names(request)
            finally:
                _fire(body_read)
            await self._delete_all(request, account, names, data, errors)
        except Refused as err:
            data["Response Status"], data["Response Body"] = status_line(err.status), err.body
        except (BodyIncomplete, CancelledError) as err:
            data["Response Status"], data["Response Body"] = status_line(499), f"Client Disconnect: {err}"
        finally:
            request.discard_body()
        if data["Response Status"] == status_line(200):
            if errors:  # 502 when a delete failed with a 5xx, else 400 (Swift's)
                server_failed = any(status.startswith("5") for _, status in errors)
                data["Response Status"] = status_line(502 if server_failed else 400)
            elif not (data["Number Deleted"] or data["Number Not Found"]):
                data["Response Status"], data["Response Body"] = status_line(400), "Invalid bulk delete."
        return render(media_type, data, errors, "delete")

    async def _delete_all(self, request: SwiftRequest, account: str, names: list[str], data: dict[str, Any],
                          errors: list[list[str]]) -> None:
        semaphore = DeferredSemaphore(self.delete_concurrency)
        stop: list[Refused] = []

        async def one(raw: str) -> None:
            if stop:
                return
            if len(errors) >= self.max_failed_deletes:
                stop.append(Refused(400, "Max delete failures exceeded"))
                return
            try:
                name = unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                errors.append([raw, status_line(412)])
                return
            shown = quote(name)  # as listed, leading slash and all (Swift's)
            name = name.lstrip("/")
            container, _, obj = name.partition("/")
            if not container or "\x00" in name or len(name.encode("utf-8")) > self.max_path_length:
                errors.append([shown, status_line(412) if container else status_line(400)])
                return
            path = f"/v1/{account}/{container}" + (f"/{obj}" if obj else "")
            for attempt in range(1 + (self.retry_count if not obj else 0)):
                response = await self.app(subrequest.make(request, "DELETE", path, source=DELETE_SOURCE))
                response.discard_body()
                if response.status != 409:
                    break
                if attempt < self.retry_count:
                    await _sleep(self.reactor, 1.0)
            status = response.status
            if status // 100 == 2:
                data["Number Deleted"] += 1
            elif status == 404:
                data["Number Not Found"] += 1
            elif status == 401:
                errors.append([shown, status_line(401)])
                stop.append(Refused(401))
            else:
                errors.append([shown, status_line(status)])
            if len(errors) >= self.max_failed_deletes and not stop:  # the failure that reached it stops it
                stop.append(Refused(400, "Max delete failures exceeded"))

        # Objects before containers: a container named after its objects is deleted after them
        # (in its own round), so listing "c/o" then "c" works at any concurrency.
        rounds = [[n for n in names if "/" in unquote_to_bytes(n).decode("latin-1").strip("/")],
                  [n for n in names if "/" not in unquote_to_bytes(n).decode("latin-1").strip("/")]]
        for batch in rounds:
            await gatherResults([semaphore.run(lambda n=n: Deferred.fromCoroutine(one(n))) for n in batch],
                                consumeErrors=True)
            if stop:
                raise stop[0]


def _fire(once: Deferred) -> None:
    if not once.called:
        once.callback(None)


def _sleep(reactor, seconds: float) -> Deferred:
    waiting = Deferred()
    reactor.callLater(seconds, waiting.callback, None)
    return waiting


def _text(status: int, body: str) -> SwiftResponse:
    return SwiftResponse(status, HeaderMap({"Content-Type": "text/plain"}), body.encode("utf-8"))


def info_of(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What ``/info`` lists, as Swift: ``bulk_upload`` and ``bulk_delete`` with their limits."""
    return {"bulk_upload": {"max_containers_per_extraction": settings["max_containers_per_extraction"],
                            "max_failed_extractions": settings["max_failed_extractions"]},
            "bulk_delete": {"max_deletes_per_request": settings["max_deletes_per_request"],
                            "max_failed_deletes": settings["max_failed_deletes"]}}


class ExtractionThreads:
    """The filter's own thread pool, started by the first extraction (a pipeline built in a test starts none)."""

    def __init__(self, reactor, size: int) -> None:
        self.reactor, self.size = reactor, size
        self.pool: ThreadPool | None = None

    def __call__(self, function, *args) -> Deferred:
        if self.pool is None:
            self.pool = ThreadPool(minthreads=0, maxthreads=self.size, name="bulk-extract")
            self.pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)
        return deferToThreadPool(self.reactor, self.pool, function, *args)


def _build(app, settings: dict[str, Any], proxy) -> Bulk:
    for name, values in info_of(settings).items():
        proxy.info.register(name, **values)
    return Bulk(app, settings, proxy.context.constraints, proxy.reactor,
                in_thread=ExtractionThreads(proxy.reactor, settings["extract_threads"]))


middleware = Middleware("bulk", _build, options=OPTIONS)
