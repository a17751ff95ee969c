# -*- test-case-name: txstore.test.unit.test_object_server -*-
"""
The object server of a storage node: PUT, GET, HEAD, POST and DELETE of one object replica.

Translation only: HTTP in, `DiskFile` calls (through the device's I/O pool) out, and a
`NodeResponse` back for the node's edge to write (a large GET's body as an `ObjectBody`, which
the edge streams). The body of a PUT streams from the socket into the temp file in batches,
never held whole; the commit steps (fsync, rename, container update) run to the end even if the
client goes away after sending the body. After a PUT or DELETE the container server named by
the caller (``X-Container-Host``, ``-Device``, ``-Partition``) gets the new row; when it cannot
be reached the update is written to ``async_pending`` for the updater to replay.

An erasure-coded policy's PUT stores fragment archive ``X-Object-Sysmeta-Ec-Frag-Index``, not
durable and not in the container yet; a POST with ``X-Backend-Ec-Durable: <timestamp>`` and
``X-Backend-Fragment-Index`` marks it durable and sends the container update (the object's
length and ETag from its EC sysmeta). GET and HEAD serve a durable archive only
(docs/backend-api.rst, docs/erasure-coding.rst).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import nullcontext
from functools import partial

from attrs import define
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.web.http import Request

from txstore.common.backend_client import BackendError, text_to_wire
from txstore.common.body_digest import MD5_FOOTER, MD5_FOOTER_KIND, OBJ_CONTENT_LENGTH, sent_digest
from txstore.common.conditionals import evaluate
from txstore.common.constraints import check_metadata
from txstore.common.http_ranges import (
    Unsatisfiable,
    content_range,
    multipart_length,
    multipart_parts,
    multipart_trailer,
    new_boundary,
    parse_range,
)
from txstore.common.paths import BackendPath
from txstore.common.policies import ERASURE_CODING, StoragePolicy
from txstore.common.streaming import BodyIncomplete
from txstore.common.timestamps import Timestamp
from txstore.common.web import ResponseAborted
from txstore.storage.diskfile import (
    DIRECT_READ_MIN,
    DiskFile,
    DiskFileConflict,
    DiskFileCorrupt,
    DiskFileDeviceUnavailable,
    DiskFileLockTimeout,
    DiskFileNoSpace,
    DiskFileNotFound,
    ObjectState,
)
from txstore.storage.checksum import SentMd5
from txstore.storage.context import StorageContext
from txstore.storage.http_support import (
    HTTPError,
    NodeResponse,
    header,
    integer_header,
    request_headers,
    required_timestamp,
    storage_policy,
)
from txstore.qos.headers import OBJECT_SYSMETA as OBJECT_IO_CLASS, from_backend as io_spec
from txstore.qos.meter import LOAD_HEADER, BandwidthMeter
from txstore.qos.scheduler import WRITE, Stream
from txstore.storage.object_body import CorruptBody, ObjectBody
from txstore.ec.headers import (
    BACKEND_FRAG_INDEX, COMMIT_LINE, COMMIT_ON_CONNECTION, EC_ARCHIVE_LENGTH, EC_COMMIT, EC_COMMITTED, EC_CONTENT_LENGTH,
    EC_DURABLE, EC_ETAG, FRAG_INDEX,
)

WRITE_BATCH = 1024 * 1024

# Headers a PUT stores with the object, besides X-Object-Meta-* and sysmeta.
STORED_HEADERS = (
    "Content-Type",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Cache-Control",
    "Expires",
    "X-Delete-At",
    "X-Object-Manifest",
    "X-Static-Large-Object",
    "X-Robots-Tag",  # Swift's object servers keep it too (for staticweb and S3 sites)
)
_STORED_LOWER = {name.lower(): name for name in STORED_HEADERS}
_META_PREFIXES = ("x-object-meta-", "x-object-sysmeta-", "x-object-transient-sysmeta-")
# What a POST may replace (Content-Type included when given).
_POST_STORED = tuple(name for name in STORED_HEADERS if name not in ("X-Static-Large-Object",))


def _canonical(name: str) -> str:
    return "-".join(word.capitalize() for word in name.split("-"))


def _stored_metadata(request: Request, allowed: tuple[str, ...] = STORED_HEADERS) -> dict[str, str]:
    allowed_lower = {name.lower(): name for name in allowed}
    metadata: dict[str, str] = {}
    for name, value in request_headers(request):
        lower = name.lower()
        if lower in allowed_lower:
            metadata[allowed_lower[lower]] = value
        elif lower.startswith(_META_PREFIXES):
            metadata[_canonical(name)] = value
    return metadata


def _delete_at(request: Request, now: float) -> int | None:
    raw = header(request, "X-Delete-At")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, "Non-integer X-Delete-At") from None
    if value <= now:
        raise HTTPError(400, "X-Delete-At in past")
    return value


def _expired(state: ObjectState, now: float) -> bool:
    raw = state.metadata.get("X-Delete-At")
    if raw is None:
        return False
    try:
        return int(raw) <= now
    except ValueError:
        return False


class _EtagMismatch(Exception):
    pass


class _TransferMismatch(Exception):
    """The CRC-32 of the body received differs from the one the proxy sent after it."""


# Stored with a PUT by a proxy middleware (an SLO's size, a symlink's target) to say what the
# container's row shows instead of the stored bytes' own: ``…-Override-Etag`` becomes the row's
# X-Etag, ``…-Size`` its X-Size, ``…-Content-Type`` its X-Content-Type (as Swift's do).
_OVERRIDE_PREFIX = "x-object-sysmeta-container-update-override-"


def _row_headers(metadata: Mapping[str, str], size: int, etag: str) -> dict[str, str]:
    """What a container row says about the object whose stored ``metadata`` this is."""
    row = {"X-Size": str(size), "X-Content-Type": metadata.get("Content-Type", ""), "X-Etag": etag}
    for name, value in metadata.items():
        lower = name.lower()
        if lower.startswith(_OVERRIDE_PREFIX) and len(lower) > len(_OVERRIDE_PREFIX):
            row["X-" + _canonical(lower[len(_OVERRIDE_PREFIX):])] = value
    return row


def _metadata_value(metadata: Mapping[str, str], name: str) -> str | None:
    """The stored value of metadata ``name``, whatever its case."""
    value = metadata.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, value in metadata.items():
        if key.lower() == lower:
            return value
    return None


def _named_list(raw: str | None) -> list[str]:
    return [name.strip() for name in (raw or "").split(",") if name.strip()]


# EC: the fragment archive a PUT stores (and GET/HEAD answer), the archive a request asks for,
# and the whole object's length and ETag, which a container row shows instead of the archive's.


def _is_ec(policy: StoragePolicy) -> bool:
    return policy.policy_type == ERASURE_CODING


def _footer_metadata(request: Request) -> dict[str, str]:
    """
    An EC PUT's EC sysmeta sent as trailer fields after the archive (the object's ETag and
    length, which the proxy knows only once the whole body has passed); nothing else is taken
    from trailers.
    """
    fields = getattr(request, "trailers", {})
    return {_canonical(name): value for name, value in fields.items() if name.startswith("x-object-sysmeta-ec-")}


MAX_CONTROL_LINE = 8 * 1024  # a footer line: a few EC sysmeta fields


def _commit_on_connection(request: Request) -> int | None:
    """
    The archive's length when the proxy asks for the durable mark on this PUT's connection
    (and the node says yes on its 100 Continue); None for a two-phase PUT.
    """
    if (header(request, EC_COMMIT) or "").strip().lower() != COMMIT_ON_CONNECTION:
        return None
    length = integer_header(request, EC_ARCHIVE_LENGTH)
    if length is None:
        raise HTTPError(400, f"{EC_COMMIT} needs {EC_ARCHIVE_LENGTH}")
    if (header(request, "Transfer-Encoding") or "").lower() != "chunked":
        raise HTTPError(400, f"{EC_COMMIT} needs a chunked body")
    request.continue_headers[EC_COMMIT] = COMMIT_ON_CONNECTION
    return length


def _proxy_md5(request: Request) -> SentMd5 | None:
    """
    The checksum a replicated body is written with when the proxy computes its md5 and sends
    it after the body (`txstore.common.body_digest`); None when the node hashes it itself.
    """
    kind = header(request, MD5_FOOTER)
    if kind is None:
        return None
    if kind.strip().lower() != MD5_FOOTER_KIND:
        raise HTTPError(400, f"{MD5_FOOTER} must be {MD5_FOOTER_KIND}")
    if (header(request, "Transfer-Encoding") or "").lower() != "chunked":
        raise HTTPError(400, f"{MD5_FOOTER} needs a chunked body")
    return SentMd5()


async def _body_read(request: Request) -> bytes:
    try:
        return await request.body.read()
    except BodyIncomplete as err:
        raise HTTPError(499, f"Client Disconnect: {err}") from None


async def _read_line(request: Request, buffered: bytes) -> tuple[bytes, bytes]:
    """
    One control line of the body (``\n`` included) and what followed it; ``b""`` when the
    body ended first, with nothing of a line begun (a line cut off is a 400).
    """
    while b"\n" not in buffered:
        if len(buffered) > MAX_CONTROL_LINE:
            raise HTTPError(400, "A control line of the body is too long")
        chunk = await _body_read(request)
        if not chunk:
            if buffered:
                raise HTTPError(400, "The body ended inside a control line")
            return b"", b""
        buffered += chunk
    end = buffered.index(b"\n") + 1
    return buffered[:end], buffered[end:]


def _footer_line(line: bytes) -> dict[str, str]:
    """The archive's footer (the EC sysmeta known once the body has passed) from its JSON line."""
    try:
        fields = json.loads(line)
    except ValueError:
        fields = None
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise HTTPError(400, "The archive's footer is not a JSON object of strings")
    return {_canonical(name): value for name, value in fields.items()
            if name.lower().startswith("x-object-sysmeta-ec-")}


def _frag_index(request: Request, policy: StoragePolicy, name: str, required: bool) -> int | None:
    """Header ``name`` as a fragment index of ``policy`` (0 to k+m-1); 400 when it is not one."""
    raw = header(request, name)
    if raw is None:
        if required:
            raise HTTPError(400, f"Missing {name} header (the policy is erasure-coded)")
        return None
    try:
        index = int(raw)
    except ValueError:
        index = -1
    limit = policy.ec.fragments if policy.ec is not None else None
    if index < 0 or str(index) != raw.strip() or (limit is not None and index >= limit):
        raise HTTPError(400, f"Invalid {name} header: {raw!r}")
    return index


def _object_size_etag(metadata: Mapping[str, str], size: int, etag: str) -> tuple[int, str]:
    """The object's length and ETag: an EC archive's metadata says the whole object's."""
    ec_length = _metadata_value(metadata, EC_CONTENT_LENGTH)
    ec_etag = _metadata_value(metadata, EC_ETAG)
    if ec_length is not None and ec_length.isdigit():
        size = int(ec_length)
    if ec_etag is not None:
        etag = ec_etag
    return size, etag


def _put_refusal(
    state: ObjectState, timestamp: Timestamp, if_none_match: bool, now: float, frag_index: int | None = None
) -> tuple[int, str, Timestamp | None] | None:
    """
    Why the object's current state refuses a PUT at ``timestamp`` (status, reason, its time), if
    it does. An EC archive of the durable version, of an index not held yet, is not refused.
    """
    current = state.timestamp or state.tombstone_timestamp
    if frag_index is not None and current == timestamp and state.exists and frag_index not in state.fragments:
        return None
    if frag_index is None and state.exists and state.timestamp == timestamp:
        return None  # maybe this very write, copied here by replication first: the commit compares ETags
    if current is not None and timestamp <= current:
        return 409, f"Conflict: {current.internal} is newer or the same", current
    if if_none_match and state.exists and not _expired(state, now):
        return 412, "Precondition Failed: the object exists", None
    return None


def _already_stored(previous: ObjectState, timestamp: Timestamp, frag_index: int | None, etag: str) -> bool:
    """
    Whether a replicated PUT that lost its commit to ``previous`` finds itself there: the same
    timestamp (one write: the proxy stamps each) and the same body. Under a slow link the
    replicators of the nodes that stored it first can bring it here before its own body ends;
    that PUT is stored, not superseded (Swift's object server never checks again at commit).
    """
    stored = _metadata_value(previous.metadata, "ETag")
    return (frag_index is None and previous.exists and previous.timestamp == timestamp
            and stored is not None and stored.strip('"').lower() == etag)


def _open_with_state(diskfiles, path: BackendPath, policy_index: int, frag_index: int | None = None):
    """
    (blocking) The DiskFile and its state (for an EC policy, of archive ``frag_index`` or of
    the one held), or the DiskFileCorrupt that reading it raised.
    """
    diskfile = diskfiles.get_diskfile(path.device, path.partition, path.account, path.container, path.obj,
                                      policy_index)
    try:
        return diskfile, diskfile.read_metadata(frag_index)
    except DiskFileCorrupt as err:
        return diskfile, err


def _open_for_put(diskfiles, path: BackendPath, policy_index: int, length: int | None, admits,
                  frag_index: int | None = None, body_checksum: SentMd5 | None = None):
    """
    (blocking) The DiskFile, its state (or the DiskFileCorrupt that reading it raised), and a
    writer (of archive ``frag_index`` for an EC policy; hashing with ``body_checksum`` when
    given) when the state ``admits`` the PUT (else None).
    """
    diskfile, state = _open_with_state(diskfiles, path, policy_index)
    if isinstance(state, DiskFileCorrupt):
        return diskfile, state, None
    if not admits(state):
        return diskfile, state, None
    return diskfile, state, diskfile.create_writer(length, frag_index=frag_index, body_checksum=body_checksum)


# A GET of a body this small reads it with the metadata, in the same thread call.
SMALL_BODY = 64 * 1024


def _open_for_get(diskfiles, path: BackendPath, policy_index: int, small: int, frag_index: int | None = None):
    """
    (blocking) The DiskFile, its state (or the DiskFileCorrupt that reading it raised), and,
    when the object's body is at most ``small`` bytes, the whole body checked against its ETag
    (a `CorruptBody` in place of the state when it fails), else None. One thread call for a
    small GET instead of five (open, metadata, open the data file, read, close).
    """
    diskfile, state = _open_with_state(diskfiles, path, policy_index, frag_index)
    if isinstance(state, DiskFileCorrupt):
        return diskfile, state, None
    length = state.content_length
    if not state.exists or length is None or not 0 < length <= small:
        return diskfile, state, None
    try:
        with diskfile.open_reader(state) as reader:
            body = reader.read(0, length)
            verified = reader.etag_verified()
    except DiskFileNotFound:  # replaced or deleted since the metadata was read: stream as usual
        return diskfile, state, None
    except DiskFileCorrupt as err:
        return diskfile, err, None
    if len(body) != length:
        return diskfile, CorruptBody(f"body ends at {len(body)}, before {length}"), None
    if verified is False:
        return diskfile, CorruptBody("md5 of the body differs from its ETag"), None
    return diskfile, state, body


def _finish_put(writer, rest: list[bytes], expected_etag: str | None, metadata: dict[str, str], timestamp: Timestamp,
                sent: tuple[SentMd5, tuple[str, str]] | None = None):
    """
    (blocking) Write the body's last batch; with ``sent`` (the writer's checksum, and the md5
    and CRC-32 the proxy sent), take the proxy's md5 if its CRC-32 is the body's; check the
    ETag the client gave; commit.
    """
    if rest:
        writer.write_many(rest)
    if sent is not None:
        body_checksum, (md5, crc32) = sent
        if not body_checksum.confirm(md5, crc32):
            raise _TransferMismatch()
    if expected_etag is not None and expected_etag.strip('"').lower() != writer.etag:
        raise _EtagMismatch()
    return writer.commit(metadata, timestamp)


@define
class ObjectServer:
    context: StorageContext
    meter: BandwidthMeter | None = None  # the devices' load, told on each GET and HEAD
    log = Logger()

    async def handle(self, request: Request, path: BackendPath) -> NodeResponse:
        method = request.method.decode("ascii", "replace")
        handler = {
            "PUT": self.put,
            "GET": self.get,
            "HEAD": self.get,
            "POST": self.post,
            "DELETE": self.delete,
        }.get(method)
        if handler is None:
            raise HTTPError(405, "Method Not Allowed", {"Allow": "DELETE, GET, HEAD, POST, PUT"})
        assert path.obj is not None and path.container is not None
        if len(path.obj.encode("utf-8")) > self.context.constraints.max_object_name_length:
            raise HTTPError(400, f"Object name longer than {self.context.constraints.max_object_name_length} bytes")
        try:
            return await handler(request, path)
        except DiskFileNoSpace as err:
            raise HTTPError(507, f"Insufficient Storage: {err}") from None
        except DiskFileLockTimeout as err:
            raise HTTPError(503, f"Object busy: {err}") from None

    # --- helpers ---------------------------------------------------------------------------

    def _run(self, path: BackendPath, function, *args):
        return self.context.runner.run(path.device, function, *args)

    def _io_stream(self, request: Request, path: BackendPath, metadata: Mapping[str, str] | None = None) -> Stream | None:
        """
        The request's body work on its device, in its IO class (the proxy's X-Backend-Io-*, else
        the default class with the account as tenant; the object's own class when lower); None
        without a scheduler.
        """
        scheduler = self.context.scheduler
        if scheduler is None:
            return None
        own = metadata.get(OBJECT_IO_CLASS) if metadata is not None else None  # (canonical case)
        return scheduler.stream(path.device, io_spec(lambda name: header(request, name)), path.account, own)

    def _body_work(self, io: Stream | None, path: BackendPath, kind: str, nbytes: int, function, *args) -> Deferred:
        """``function(*args)``, moving ``nbytes`` of a body, through the stream's queue (or the pool)."""
        if io is None:
            return self._run(path, function, *args)
        return Deferred.fromCoroutine(io.run(kind, nbytes, function, *args))

    async def _at_device(self, path: BackendPath, function, *args):
        """``function(*args)`` in the device's pool; a missing device is a 507, a bad name a 400."""
        try:
            return await self._run(path, function, *args)
        except DiskFileDeviceUnavailable:
            raise HTTPError(507, f"Insufficient Storage: device {path.device} is not available") from None
        except ValueError:
            raise HTTPError(400, "Invalid device") from None

    async def _diskfile(self, request: Request, path: BackendPath) -> DiskFile:
        """The object's DiskFile; its device is checked (a stat) in the device's pool."""
        policy = storage_policy(request, self.context.policies)
        return await self._at_device(
            path, self.context.diskfiles.get_diskfile,
            path.device, path.partition, path.account, path.container, path.obj, policy.index,
        )

    async def _state(self, path: BackendPath, diskfile: DiskFile) -> ObjectState:
        try:
            return await self._run(path, diskfile.read_metadata)
        except DiskFileCorrupt as err:
            await self._quarantine(path, diskfile, err)
            return ObjectState()

    async def _quarantine(self, path: BackendPath, diskfile: DiskFile, reason: object) -> None:
        """Take a damaged object out of service; replication brings a good replica back."""
        try:
            where = await self._run(path, diskfile.quarantine)
        except Exception as err:
            self.log.error("could not quarantine {name}: {error}", name=diskfile.name, error=err)
            return
        self.log.error("quarantined {name} to {where}: {reason}", name=diskfile.name, where=str(where),
                       reason=str(reason))

    @staticmethod
    def _backend_timestamps(state: ObjectState) -> dict[str, str]:
        """The headers that let a proxy pick the newest replica, a 404's included."""
        headers = {}
        newest = state.newest_timestamp
        if newest is not None:
            headers["X-Backend-Timestamp"] = newest.internal
        if state.timestamp is not None:
            headers["X-Backend-Data-Timestamp"] = state.timestamp.internal
        if state.deleted and not state.exists:
            headers["X-Backend-Delete-Timestamp"] = state.tombstone_timestamp.internal
        return headers

    # --- PUT -------------------------------------------------------------------------------

    async def put(self, request: Request, path: BackendPath) -> NodeResponse:
        """
        Two thread calls for a body that fits one write batch: the first opens the object,
        reads its state and (when the state admits this PUT) creates the temp file, before
        any byte of the body is invited, so a full device still answers 507 before ``100
        Continue``; the last writes the rest of the body and commits (fsyncs included).
        """
        context = self.context
        timestamp = required_timestamp(request)
        length = integer_header(request, "Content-Length")
        chunked = (header(request, "Transfer-Encoding") or "").lower() == "chunked"
        if length is None and not chunked:
            raise HTTPError(411, "Length Required: send Content-Length or Transfer-Encoding: chunked")
        # The proxy's md5 of the body follows it as trailer fields (txstore.common.body_digest).
        body_checksum = _proxy_md5(request)
        if chunked:
            length = integer_header(request, OBJ_CONTENT_LENGTH)
        if length is not None and length > context.constraints.max_file_size:
            raise HTTPError(413, f"Your request is too large: over {context.constraints.max_file_size} bytes")
        if header(request, "Content-Type") is None:
            raise HTTPError(400, "No content type")
        reason = check_metadata(request_headers(request), "object", context.constraints)
        if reason:
            raise HTTPError(400, reason)
        _delete_at(request, context.clock())
        expected_etag = header(request, "ETag")
        if_none_match = header(request, "If-None-Match")
        if if_none_match is not None and if_none_match.strip() != "*":
            raise HTTPError(400, "If-None-Match only supports *")
        now = context.clock()

        policy = storage_policy(request, context.policies)
        # EC: this node stores one fragment archive, not durable until the proxy says so.
        frag_index = _frag_index(request, policy, FRAG_INDEX, required=True) if _is_ec(policy) else None
        archive_length = _commit_on_connection(request) if frag_index is not None else None
        if frag_index is not None and body_checksum is not None:
            raise HTTPError(400, f"{MD5_FOOTER} is for replicated objects")

        def admits(state: ObjectState) -> bool:
            return _put_refusal(state, timestamp, if_none_match is not None, now, frag_index) is None
        diskfile, state, writer = await self._at_device(
            path, _open_for_put, context.diskfiles, path, policy.index, length, admits, frag_index, body_checksum
        )
        committed = False
        try:
            if isinstance(state, DiskFileCorrupt):
                await self._quarantine(path, diskfile, state)
                state = ObjectState()
            refusal = _put_refusal(state, timestamp, if_none_match is not None, now, frag_index)
            if refusal is not None:
                status, why, current = refusal
                raise HTTPError(status, why, {"X-Backend-Timestamp": current.internal} if current is not None else {})
            if writer is None:
                writer = await self._run(path, partial(diskfile.create_writer, length, frag_index=frag_index,
                                                       body_checksum=body_checksum))
            io = self._io_stream(request, path)
            with io if io is not None else nullcontext():
                rest, control = await self._receive(request, path, writer, length, io, archive_length)
                metadata = _stored_metadata(request)
                if archive_length is not None:
                    line, control = await _read_line(request, control)
                    metadata.update(_footer_line(line))
                elif frag_index is not None:
                    metadata.update(_footer_metadata(request))
                sent = None
                if body_checksum is not None:
                    digest = sent_digest(getattr(request, "trailers", {}))
                    if digest is None:
                        raise HTTPError(400, f"{MD5_FOOTER} needs the body's md5 and CRC-32 as trailer fields")
                    sent = (body_checksum, digest)
                try:
                    await self._body_work(io, path, WRITE, sum(map(len, rest)), _finish_put, writer, rest,
                                          expected_etag, metadata, timestamp, sent)
                    committed = True
                except _EtagMismatch:
                    raise HTTPError(422, "Unprocessable Entity: the body's md5 differs from its ETag") from None
                except _TransferMismatch:
                    raise HTTPError(422, "Unprocessable Entity: the body's CRC-32 differs from the proxy's") from None
                except DiskFileConflict as err:
                    if not _already_stored(err.previous, timestamp, frag_index, writer.etag):
                        raise _conflict("a version as new or newer was stored meanwhile",
                                        err.previous.timestamp or err.previous.tombstone_timestamp) from None
                    # This very write is here already (a replica's replicator copied it while the
                    # body streamed): stored, as asked; the temp file goes, the container hears.
        finally:
            if writer is not None and not committed:
                await self._run(path, writer.abort)
        if archive_length is not None:
            return await self._commit_here(request, path, diskfile, timestamp, frag_index, writer.etag, control)
        if frag_index is not None:
            # Not in listings before it is durable: the container hears of it then.
            return _empty(201, {"ETag": writer.etag, "Last-Modified": timestamp.last_modified})
        await self._update_container(
            request, path, "PUT", timestamp, _row_headers(metadata, writer.bytes_written, writer.etag)
        )
        return _empty(201, {"ETag": writer.etag, "Last-Modified": timestamp.last_modified})

    async def _receive(
        self, request: Request, path: BackendPath, writer, length: int | None, io: Stream | None,
        archive_length: int | None = None,
    ) -> tuple[list[bytes], bytes]:
        """
        Copy the request body into ``writer`` in batches of the chunks as received (not joined:
        the writer takes them as they are), off the reactor; one batch is written while the
        next arrives. The last batch is returned unwritten, for the commit's thread call, with
        what came after ``archive_length`` bytes when that is given (the body goes on then:
        the footer and commit lines), and nothing after them is read.
        """
        limit = self.context.constraints.max_file_size if archive_length is None else archive_length
        after = b""
        batch: list[bytes] = []
        batched = 0
        received = 0
        writing: Deferred | None = None
        try:
            while True:
                try:
                    chunk = await request.body.read()
                except BodyIncomplete as err:
                    raise HTTPError(499, f"Client Disconnect: {err}") from None
                if not chunk:
                    break
                received += len(chunk)
                if received > limit:
                    if archive_length is None:
                        raise HTTPError(413, f"Your request is too large: over {limit} bytes")
                    cut = len(chunk) - (received - limit)
                    chunk, after, received = chunk[:cut], chunk[cut:], limit
                batch.append(chunk)
                batched += len(chunk)
                if received == archive_length:
                    break
                if batched >= WRITE_BATCH:
                    if writing is not None:
                        await writing  # one batch in the pool at a time, in order
                    writing = self._body_work(io, path, WRITE, batched, writer.write_many, batch)
                    batch, batched = [], 0
            if writing is not None:
                await writing
        except BaseException:
            if writing is not None and not writing.called:
                # The writer is aborted after this: never while its thread still writes.
                await writing.addErrback(lambda _: None)
            raise
        if length is not None and received != length:
            raise HTTPError(499, f"Client Disconnect: {received} of {length} bytes")
        if archive_length is not None and received != archive_length:
            raise HTTPError(499, f"Client Disconnect: {received} of the archive's {archive_length} bytes")
        return batch, after

    async def _commit_here(self, request: Request, path: BackendPath, diskfile: DiskFile, timestamp: Timestamp,
                           frag_index: int, etag: str, control: bytes) -> NodeResponse:
        """
        The rest of an EC PUT made durable on its own connection, once its archive is stored:
        tell the proxy (a second ``100 Continue``), then mark it durable if the next line is
        the commit, and tell the container. A body that ends instead leaves the archive as a
        two-phase PUT leaves it before its POST: stored, not durable (201 without
        ``X-Backend-Ec-Committed``).
        """
        answer = {"ETag": etag, "Last-Modified": timestamp.last_modified}
        request.send_interim()
        line, control = await _read_line(request, control)
        if not line:
            return _empty(201, answer)
        if line != COMMIT_LINE:
            raise HTTPError(400, f"Expected the commit line after the archive's footer, got {line[:40]!r}")
        if control or await _body_read(request):
            raise HTTPError(400, "Nothing may follow the commit line")
        await self._mark_durable(request, path, diskfile, timestamp, frag_index)
        return _empty(201, {**answer, EC_COMMITTED: "yes"})

    # --- container updates -----------------------------------------------------------------

    async def _update_container(
        self, request: Request, path: BackendPath, op: str, timestamp: Timestamp, extra: Mapping[str, str]
    ) -> None:
        hosts = header(request, "X-Container-Host")
        devices = header(request, "X-Container-Device")
        partition = header(request, "X-Container-Partition")
        if not hosts or not devices or partition is None:
            return
        policy = storage_policy(request, self.context.policies)
        headers = {
            "X-Timestamp": timestamp.internal,
            "X-Backend-Storage-Policy-Index": str(policy.index),
            "X-Backend-Server-Type": "container",
            **extra,
        }
        trans_id = header(request, "X-Trans-Id")
        if trans_id:
            headers["X-Trans-Id"] = trans_id
        # In wire form, as the backend client sends values and as the async pending keeps
        # them: a content type of "text/é" reaches the container as the client's bytes.
        headers = {name: text_to_wire(value) for name, value in headers.items()}
        async def update(host: str, device: str) -> bool:
            ip, _, port = host.rpartition(":")
            row_path = f"/{device}/{partition}/{path.account}/{path.container}/{path.obj}"
            try:
                response = await self.context.client.notify(
                    op, ip.strip("[]"), int(port), row_path, headers, timeout=self.context.container_update_timeout
                )
                if 200 <= response.status < 300:
                    return True
                problem = f"status {response.status}"
            except (BackendError, ValueError) as err:
                problem = str(err)
            self.log.warn(
                "container update {op} {name} to {host}/{device} failed: {problem}",
                op=op, name=row_path, host=host, device=device, problem=problem,
            )
            return False

        # All at once, each bounded by container_update_timeout: a slow container replica
        # delays the object's answer by that much at most; the async pending below covers it.
        results = await gatherResults(
            [Deferred.fromCoroutine(update(h.strip(), d.strip())) for h, d in zip(hosts.split(","), devices.split(","))]
        )
        if not all(results):
            # One record per change: the updater finds every container replica in the ring.
            await self._run(
                path,
                self.context.diskfiles.write_async_pending,
                path.device, policy.index, op, path.account, path.container, path.obj, headers, timestamp,
            )

    # --- GET / HEAD ------------------------------------------------------------------------

    async def get(self, request: Request, path: BackendPath) -> NodeResponse:
        policy = storage_policy(request, self.context.policies)
        frag_index = _frag_index(request, policy, BACKEND_FRAG_INDEX, required=False) if _is_ec(policy) else None
        small = SMALL_BODY if request.method == b"GET" else 0
        diskfile, state, body = await self._at_device(
            path, _open_for_get, self.context.diskfiles, path, policy.index, small, frag_index
        )
        if isinstance(state, (DiskFileCorrupt, CorruptBody)):
            # Out of service; the proxy reads another replica and replication restores this one.
            await self._quarantine(path, diskfile, state)
            state = ObjectState()
        headers = self._backend_timestamps(state)
        if self.meter is not None:
            # How busy the device is, so the proxies' view stays fresh without polling.
            headers[LOAD_HEADER] = self.meter.header(path.device)
        if not state.exists or _expired(state, self.context.clock()):
            raise HTTPError(404, "Not Found", headers)
        metadata = state.metadata
        etag = metadata.get("ETag", "")
        assert state.timestamp is not None and state.content_length is not None
        newest = state.meta_timestamp or state.timestamp
        for name, value in metadata.items():
            if name in _STORED_LOWER.values() or name.lower().startswith(_META_PREFIXES):
                headers[name] = value
        headers["ETag"] = etag
        if state.frag_index is not None:
            # The archive served (a handoff may hold several), of a durable version.
            headers[FRAG_INDEX] = str(state.frag_index)
            headers["X-Backend-Durable-Timestamp"] = state.timestamp.internal
        headers["Last-Modified"] = newest.last_modified
        headers["X-Timestamp"] = newest.normal
        headers["Accept-Ranges"] = "bytes"
        method = request.method.decode("ascii")
        # A proxy middleware may ask for conditionals against another stored value (an SLO's
        # own ETag in its sysmeta): the first of the names the object has, else the ETag.
        compared = etag
        for name in _named_list(header(request, "X-Backend-Etag-Is-At")):
            value = _metadata_value(metadata, name)
            if value is not None:
                compared = value
                break
        status = evaluate(
            method,
            etag=compared,
            last_modified=newest.ceil_seconds,
            if_match=header(request, "If-Match"),
            if_none_match=header(request, "If-None-Match"),
            if_modified_since=header(request, "If-Modified-Since"),
            if_unmodified_since=header(request, "If-Unmodified-Since"),
        )
        if status != 200:
            return _empty(status, headers)
        length = state.content_length
        wanted = header(request, "Range")
        # A manifest's range means the large object's bytes, not the manifest's: the proxy
        # middleware asks for the whole manifest when the object is one.
        ignore = _named_list(header(request, "X-Backend-Ignore-Range-If-Metadata-Present"))
        if wanted is not None and any(_metadata_value(metadata, name) is not None for name in ignore):
            wanted = None
        try:
            ranges = parse_range(wanted, length)
        except Unsatisfiable:
            headers["Content-Range"] = f"bytes */{length}"
            raise HTTPError(416, "Requested Range Not Satisfiable", headers) from None
        content_type = metadata.get("Content-Type", "application/octet-stream")
        if ranges is None:
            status = 200
            headers["Content-Length"] = str(length)
            parts, trailer = [(b"", 0, length - 1)], b""
        elif len(ranges) == 1:
            first, last = ranges[0]
            status = 206
            headers["Content-Range"] = content_range(first, last, length)
            headers["Content-Length"] = str(last - first + 1)
            parts, trailer = [(b"", first, last)], b""
        else:
            boundary = new_boundary()
            status = 206
            headers["Content-Type"] = f"multipart/byteranges;boundary={boundary}"
            headers["Content-Length"] = str(multipart_length(ranges, length, content_type, boundary))
            parts = list(multipart_parts(ranges, length, content_type, boundary))
            trailer = multipart_trailer(boundary)
        if request.method == b"HEAD" or length == 0:
            return NodeResponse(status, headers)
        if body is not None:
            return NodeResponse(
                status, headers, b"".join(prefix + body[first:last + 1] for prefix, first, last in parts) + trailer
            )
        try:
            reader = await self._run(path, diskfile.open_reader, state)
        except (DiskFileNotFound, DiskFileCorrupt) as err:
            raise HTTPError(404, f"Not Found: {err}", headers) from None
        failed = partial(self._read_failed, path, diskfile)
        reader.drop_cache = length >= self.context.keep_cache_size
        reader.direct = reader.drop_cache and length >= DIRECT_READ_MIN and self.context.diskfiles.direct_reads
        stream = ObjectBody(self.context.runner, path.device, reader, parts, failed, trailer, whole=ranges is None,
                            io=self._io_stream(request, path, metadata))
        return NodeResponse(status, headers, stream)

    async def _read_failed(self, path: BackendPath, diskfile: DiskFile, err: Exception, started: bool) -> Exception:
        """
        What a streamed body's failed read becomes (`ObjectBody`): a damaged object is
        quarantined, and answered 404 when no byte went out yet (a body of one chunk); else the
        response is aborted.
        """
        damaged = isinstance(err, (CorruptBody, DiskFileCorrupt))
        self.log.error("reading {name} failed ({reason}); {outcome}", name=diskfile.name, reason=err,
                       outcome="answered 404" if damaged and not started else "response aborted")
        if damaged:
            await self._quarantine(path, diskfile, err)
            if not started:
                # Rot found before a byte went out: a plain 404 with none of the object's
                # headers (no timestamps a proxy could take for a tombstone's), so the proxy
                # reads another replica, as for a small body.
                return HTTPError(404, f"Not Found: {err}")
        return ResponseAborted(str(err))

    # --- POST ------------------------------------------------------------------------------

    async def post(self, request: Request, path: BackendPath) -> NodeResponse:
        if header(request, EC_DURABLE) is not None:
            return await self.mark_durable(request, path)
        timestamp = required_timestamp(request)
        reason = check_metadata(request_headers(request), "object", self.context.constraints)
        if reason:
            raise HTTPError(400, reason)
        _delete_at(request, self.context.clock())
        diskfile = await self._diskfile(request, path)
        state = await self._state(path, diskfile)
        if not state.exists or _expired(state, self.context.clock()):
            raise HTTPError(404, "Not Found", self._backend_timestamps(state))
        metadata = _stored_metadata(request, _POST_STORED)
        retyped = "Content-Type" in metadata
        if not retyped and (kept := _metadata_value(state.metadata, "Content-Type")) is not None:
            metadata["Content-Type"] = kept  # a POST without one keeps the type a POST before set
        try:
            await self._run(path, diskfile.write_metadata, metadata, timestamp)
        except DiskFileNotFound:
            raise HTTPError(404, "Not Found") from None
        except DiskFileConflict as err:
            raise _conflict("a newer change is stored", err.previous.meta_timestamp or err.previous.timestamp) from None
        if retyped:
            # The container's row shows the content type: it changes with it (at the POST's
            # time, so a replica's older row loses), the rest of the row as the PUT made it.
            size, etag = _object_size_etag(state.metadata, state.content_length or 0, state.metadata.get("ETag", ""))
            row = _row_headers(state.metadata, size, etag)
            row["X-Content-Type"] = metadata["Content-Type"]
            await self._update_container(request, path, "PUT", timestamp, row)
        return _empty(202)

    async def mark_durable(self, request: Request, path: BackendPath) -> NodeResponse:
        """
        The second phase of an EC PUT: ``X-Backend-Ec-Durable: <timestamp>`` and
        ``X-Backend-Fragment-Index: N`` mark archive N of that PUT durable (202), and only then
        the container hears of the object (its own length and ETag, from the EC sysmeta). 404
        when this node does not hold the archive, 409 when a newer version or a tombstone is
        there (it never will be served), 400 for a replicated policy.
        """
        policy = storage_policy(request, self.context.policies)
        if not _is_ec(policy):
            raise HTTPError(400, f"{EC_DURABLE} for a policy that is not erasure-coded")
        timestamp = required_timestamp(request, EC_DURABLE)
        frag_index = _frag_index(request, policy, BACKEND_FRAG_INDEX, required=True)
        diskfile = await self._diskfile(request, path)
        await self._mark_durable(request, path, diskfile, timestamp, frag_index)
        return _empty(202)

    async def _mark_durable(self, request: Request, path: BackendPath, diskfile: DiskFile, timestamp: Timestamp,
                            frag_index: int) -> None:
        """Archive ``frag_index`` of the PUT at ``timestamp`` made durable, then the container told."""
        try:
            state = await self._run(path, diskfile.mark_durable, timestamp, frag_index)
        except DiskFileNotFound:
            raise HTTPError(404, "Not Found: no such fragment archive") from None
        except DiskFileConflict as err:
            raise _conflict("a newer version or tombstone is stored",
                            err.previous.tombstone_timestamp or err.previous.timestamp) from None
        except DiskFileCorrupt as err:
            await self._quarantine(path, diskfile, err)
            raise HTTPError(404, "Not Found: the fragment archive was damaged") from None
        size, etag = _object_size_etag(state.metadata, state.content_length or 0, state.metadata.get("ETag", ""))
        await self._update_container(request, path, "PUT", timestamp, _row_headers(state.metadata, size, etag))

    # --- DELETE ----------------------------------------------------------------------------

    async def delete(self, request: Request, path: BackendPath) -> NodeResponse:
        timestamp = required_timestamp(request)
        if_delete_at = _if_delete_at(request)
        diskfile = await self._diskfile(request, path)
        if if_delete_at is not None:
            await self._check_if_delete_at(path, diskfile, timestamp, if_delete_at)
        try:
            previous = await self._run(path, diskfile.delete, timestamp)
        except DiskFileConflict as err:
            raise _conflict("a newer version is stored", err.previous.timestamp or err.previous.tombstone_timestamp) from None
        await self._update_container(request, path, "DELETE", timestamp, {})
        if not previous.exists or _expired(previous, self.context.clock()):
            raise HTTPError(404, "Not Found", self._backend_timestamps(previous))
        return _empty(204)


    async def _check_if_delete_at(self, path: BackendPath, diskfile: DiskFile, timestamp: Timestamp,
                                  expected: int) -> None:
        """
        ``X-If-Delete-At``, as Swift's object server: delete only the object whose
        ``X-Delete-At`` is that (404 when there is no object, 409 when a newer one is stored,
        412 when its ``X-Delete-At`` is another or none). Checked before the tombstone, not
        under it, as in Swift.
        """
        state = await self._state(path, diskfile)
        current = state.timestamp or state.tombstone_timestamp
        if current is None:
            raise HTTPError(404, "Not Found")
        if current >= timestamp:
            raise _conflict("a newer version is stored", current)
        stored = state.metadata.get("X-Delete-At") if state.exists else None
        try:
            matches = stored is not None and int(stored) == expected
        except ValueError:
            matches = False
        if not matches:
            raise HTTPError(412, "X-If-Delete-At and X-Delete-At do not match")


def _if_delete_at(request: Request) -> int | None:
    raw = header(request, "X-If-Delete-At")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise HTTPError(400, "Bad X-If-Delete-At header value") from None


def _conflict(reason: str, current: Timestamp | None) -> HTTPError:
    """A 409, with the timestamp of what is stored so the proxy can tell the newest replica."""
    return HTTPError(409, f"Conflict: {reason}", {"X-Backend-Timestamp": current.internal} if current is not None else {})


def _empty(status: int, headers: dict[str, str] | None = None) -> NodeResponse:
    """An answer without a body (its ``Content-Length: 0`` after ``headers``)."""
    headers = headers if headers is not None else {}
    headers["Content-Length"] = "0"
    return NodeResponse(status, headers)


