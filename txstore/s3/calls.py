# -*- test-case-name: txstore.test.unit.test_s3_middleware -*-
"""
An S3 request being answered: who signed it, which bucket and key it names, and its Swift
sub-requests (`S3Call.swift`) sent down the pipeline below s3api as that user, with the
credential source's authorizer (so tempauth's rules and the containers' ACLs apply to S3 as
to Swift) and ``swift.source`` ``S3`` in the access log.

`swift_error` turns a Swift answer that is not a success into the S3 error a client expects.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import define, field
from twisted.internet.defer import ensureDeferred

from txstore.proxy import subrequest
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.s3 import xmlio as xml
from txstore.s3.auth import expectations
from txstore.s3.errors import S3Error

SOURCE = "S3"
BODY_TIMEOUT = 60.0  # seconds a small request body (XML) may take to arrive
DRAIN_LIMIT = 256 * 1024 * 1024  # bytes of an oversized small body read and dropped before answering


@define
class S3Settings:
    location: str = "us-east-1"
    storage_domains: tuple[str, ...] = ()
    max_multi_delete_objects: int = 1000
    allowable_clock_skew: int = 900
    max_bucket_listing: int = 1000
    dns_compliant_bucket_names: bool = True
    max_xml_body: int = 1024 * 1024 + 64 * 1024
    max_object_name_length: int = 1024
    min_segment_size: int = 5 * 1024 * 1024


@define
class S3Call:
    """One client request: the parsed names, the user, and the way to the Swift API below."""

    request: SwiftRequest
    app: Any  # IApp: the pipeline below s3api
    credentials: Any  # ICredentialSource
    user: Any  # S3User
    bucket: str | None
    key: str | None
    settings: S3Settings
    reactor: Any = None
    checked: Any = None  # the CheckedBody of an upload with a promised digest
    chunks: Any = None  # the SignedChunks of an aws-chunked upload
    grants: Any = None  # what the credential source looked up for its authorizer (an account ACL)
    params: dict[str, str] = field(factory=dict)

    @property
    def account(self) -> str:
        return self.user.account

    @property
    def resource(self) -> str:
        """What the error XML names: /bucket/key as the client asked."""
        if self.bucket is None:
            return "/"
        return f"/{self.bucket}" + (f"/{self.key}" if self.key is not None else "")

    def authorize(self, request: SwiftRequest, account: str, container: str | None, obj: str | None, info):
        return self.credentials.authorize(self.user, request, account, container, obj, info, self.grants)

    def path(self, container: str | None = None, obj: str | None = None) -> str:
        path = f"/v1/{self.account}"
        if container is not None:
            path += f"/{container}"
            if obj is not None:
                path += f"/{obj}"
        return path

    async def swift(self, method: str, container: str | None = None, obj: str | None = None, *,
                    headers: dict[str, str] | HeaderMap | None = None, query: str = "", body: Any = None,
                    ) -> SwiftResponse:
        """A Swift request as this user: the answer, its body streamed unless it was small."""
        sub = subrequest.make(self.request, method, self.path(container, obj), source=SOURCE,
                              headers=dict(headers.items()) if isinstance(headers, HeaderMap) else headers,
                              query=query, body=body, system=True)
        # system=True sets swift.authorize_override, so tempauth installs none; ours judges this user,
        # and the identity tells the stages below (staticweb) that a user, not a browser, asks
        sub.environ[subrequest.AUTHORIZE] = self.authorize
        sub.identity = self.user.identity
        return await self.app(sub)

    async def read_body(self, limit: int | None = None) -> bytes:
        """
        The client's (small, XML) body, refused past ``limit`` bytes, within `BODY_TIMEOUT`, and
        checked against what the client promised of it (V4's sha256, Content-MD5, checksums).
        """
        limit = limit or self.settings.max_xml_body
        body = await read_whole(self.request.body, limit, self.reactor, S3Error("MalformedXML", "the body is too "
                                                                                "large"))
        signed = self.request.environ.get("s3api.signed")
        for expectation in expectations(self.request, signed) if signed is not None else ():
            hashed = expectation.factory()
            hashed.update(body)
            if hashed.digest() != expectation.digest:
                raise S3Error(expectation.error)
        return body


async def read_whole(source, limit: int, reactor=None, too_big: S3Error | None = None) -> bytes:
    """
    Every byte of ``source`` up to ``limit``, each read bounded in time. Past it, up to
    `DRAIN_LIMIT` more is read and dropped (so the client hears ``too_big`` rather than a
    broken pipe); beyond that the connection is let go.
    """
    data = bytearray()
    seen = 0
    while True:
        reading = ensureDeferred(_read(source))
        if reactor is not None:
            reading.addTimeout(BODY_TIMEOUT, reactor)
        chunk = await reading
        if not chunk:
            if seen > limit:
                raise too_big or S3Error("EntityTooLarge")
            return bytes(data)
        seen += len(chunk)
        if seen <= limit:
            data += chunk
        elif seen > limit + DRAIN_LIMIT:
            source.stop()
            raise too_big or S3Error("EntityTooLarge")
        else:
            data = bytearray()


async def _read(source) -> bytes:
    return await source.read()


async def body_of(response: SwiftResponse, limit: int = 64 * 1024 * 1024) -> bytes:
    """A sub-request's answer read whole (listings, small manifests)."""
    if not response.streamed:
        return response.body
    return await read_whole(response.body, limit)


async def json_of(response: SwiftResponse) -> Any:
    try:
        return json.loads(await body_of(response))
    except ValueError:
        raise S3Error("InternalError", "the listing below s3api was not JSON") from None


def swift_error(response: SwiftResponse, *, bucket: bool = False, key: bool = False) -> S3Error:
    """The S3 error for a Swift answer that is not a success (its body is let go)."""
    status = response.status
    reason = response.body.decode("utf-8", "replace").strip() if isinstance(response.body, bytes) else ""
    response.discard_body()
    if status in (401, 403):
        return S3Error("AccessDenied")
    if status == 404:
        if key:
            return S3Error("NoSuchKey")
        if bucket:
            return S3Error("NoSuchBucket")
        return S3Error("NoSuchKey")
    if status == 409:
        return S3Error("BucketNotEmpty") if bucket and not key else S3Error("InvalidRequest", reason or None,
                                                                            status=409)
    if status == 411:
        return S3Error("MissingContentLength")
    if status == 412:
        return S3Error("PreconditionFailed")
    if status == 413:
        return S3Error("EntityTooLarge")
    if status == 416:
        return S3Error("InvalidRange")
    if status == 422:
        return S3Error("BadDigest")
    if status == 499:
        return S3Error("IncompleteBody")
    if status == 400:
        lowered = reason.lower()
        if "name" in lowered and "too long" in lowered:
            return S3Error("KeyTooLongError")
        if "metadata" in lowered:
            return S3Error("MetadataTooLarge", reason or None)
        return S3Error("InvalidArgument", reason or None)
    if status == 503:
        return S3Error("ServiceUnavailable")
    return S3Error("InternalError", f"the Swift API answered {status}" + (f": {reason}" if reason else ""))


def xml_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> SwiftResponse:
    response = SwiftResponse(status, HeaderMap(headers or {}), body)
    response.headers["Content-Type"] = "application/xml"
    return response


def xml_body(body: bytes, root: str):
    """A request body's document (parsed safely, `xmlio.parse`) whose root is ``root``; MalformedXML otherwise."""
    try:
        document = xml.parse(body)
    except xml.UnsafeXML:
        raise S3Error("MalformedXML") from None
    if document.tag != root:
        raise S3Error("MalformedXML")
    return document


def empty_source() -> BytesSource:
    return BytesSource(b"")
