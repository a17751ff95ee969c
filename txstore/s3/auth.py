# -*- test-case-name: txstore.test.unit.test_s3_signatures,txstore.test.unit.test_s3_middleware -*-
"""
Who signed an S3 request, and how to check it: `signed_by` reads the request's Authorization
header or query (Signature V4 or V2), checks the dates against the clock, and returns a
`Signed` whose ``check(secret)`` recomputes the signature with the secret of the access key
(the credential source, `txstore.s3.credentials`, finds it). A request signed neither way is
not an S3 request (None): the pipeline serves it as a Swift request.

The body is not read here. With Signature V4 a hex ``x-amz-content-sha256`` is a promise about
the body: `CheckedBody` hashes the upload as it streams through, and holds back its last chunk
until the digest is known, so a PUT whose body does not match fails before the storage nodes
have the whole object (nothing is stored) and the client gets ``XAmzContentSHA256Mismatch``.
Chunks are hashed on the reactor: they are at most the edge's read size (64 KiB), about 0.1 ms
of sha256 each, less than moving them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import zlib
from calendar import timegm
from collections.abc import Callable
from email.utils import parsedate_tz, mktime_tz
from functools import lru_cache
from time import gmtime, strftime

from attrs import define, frozen
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from txstore.common.streaming import BodyIncomplete
from txstore.interfaces import IByteSource
from txstore.s3 import sigv2, sigv4
from txstore.s3.errors import S3Error

AMZ_DATE = "%Y%m%dT%H%M%SZ"
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600
HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
NEEDS_DATE = "AWS authentication requires a valid Date or x-amz-date header"
V4_QUERY = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature")


@frozen
class Signed:
    """What a request's signature claims: who, and a way to check it with that key's secret."""

    access_key: str
    check: Callable[[str], bool]
    version: int  # 2 or 4
    payload_sha256: str | None = None  # hex the body must hash to (V4 only); None: not signed
    # an aws-chunked upload (STREAMING-AWS4-HMAC-SHA256-PAYLOAD): (x-amz-date, credential, seed signature)
    streaming: tuple[str, sigv4.Credential, str] | None = None


def signed_by(request, *, now: float, location: str, max_skew: float,
              bucket_in_host: str | None = None) -> Signed | None:
    """The request's `Signed`, None when it is not signed the S3 way; `S3Error` when it is badly."""
    authorization = request.header("Authorization") or ""
    query = request.query
    if authorization.startswith(sigv4.ALGORITHM + " ") or authorization == sigv4.ALGORITHM:
        return _v4_header(request, authorization, now, location, max_skew)
    if authorization.startswith("AWS "):
        return _v2_header(request, authorization, now, max_skew, bucket_in_host)
    if "X-Amz-" in query or "x-amz-" in query:
        params = request.params
        if "X-Amz-Algorithm" in params or "X-Amz-Signature" in params or "X-Amz-Credential" in params:
            return _v4_query(request, params, now, location, max_skew)
    if "Signature" in query and "AWSAccessKeyId" in query:
        params = request.params
        if "Signature" in params and "AWSAccessKeyId" in params:
            return _v2_query(request, params, now, bucket_in_host)
    return None


# -- Signature V4 ---------------------------------------------------------------------------


def _check_scope(credential: sigv4.Credential, amz_date: str, location: str, error: str) -> None:
    if credential.date != amz_date[:8]:
        raise S3Error(error, "Invalid credential date. Date is not the same as X-Amz-Date.")
    if credential.region != location:
        raise S3Error(error, f"the region '{credential.region}' is wrong; expecting '{location}'", Region=location)
    if credential.service != "s3":
        raise S3Error(error, f"The authorization header is malformed; incorrect service \"{credential.service}\". "
                             "This endpoint belongs to \"s3\".")


def _payload_hash(request, streaming: bool = False) -> str:
    value = request.header("x-amz-content-sha256")
    if value is None:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    if value == sigv4.STREAMING_PAYLOAD and streaming:
        return value
    if value.startswith("STREAMING-"):
        raise S3Error("NotImplemented", f"x-amz-content-sha256: {value} is not implemented (aws-chunked uploads "
                                        "with trailers); send STREAMING-AWS4-HMAC-SHA256-PAYLOAD, the payload's "
                                        "sha256 or UNSIGNED-PAYLOAD", headers={"x-amz-content-sha256": value})
    if value != sigv4.UNSIGNED_PAYLOAD and not HEX64.match(value):
        raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                                         "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or a valid sha256 value.",
                      ArgumentName="x-amz-content-sha256", ArgumentValue=value)
    return value


def _v4_checker(request, credential: sigv4.Credential, amz_date: str, signed_headers: tuple[str, ...],
                payload: str, given: str, leave_out: frozenset[bytes] = frozenset()) -> Callable[[str], bool]:
    if "host" not in signed_headers:
        raise S3Error("AccessDenied", "the host header must be signed")
    canonical = sigv4.canonical_request(request.method, request.path, request.query, request.headers,
                                        signed_headers, payload, leave_out)
    to_sign = sigv4.string_to_sign(amz_date, credential.scope, canonical)

    def check(secret: str) -> bool:
        expected = sigv4.signature(secret, credential.date, credential.region, credential.service, to_sign)
        return hmac.compare_digest(expected, given.lower())

    return check


def _v4_header(request, authorization: str, now: float, location: str, max_skew: float) -> Signed:
    try:
        parsed = sigv4.parse_authorization(authorization)
    except ValueError as err:
        raise S3Error("AuthorizationHeaderMalformed", f"The authorization header is malformed; {err}") from None
    amz_date = request.header("x-amz-date")
    if amz_date is None:
        date = _http_date(request.header("Date"))
        if date is None:
            raise S3Error("AccessDenied", NEEDS_DATE)
        amz_date = strftime(AMZ_DATE, gmtime(date))
    signed_at = _amz_date(amz_date)
    if signed_at is None:
        raise S3Error("AccessDenied", NEEDS_DATE)
    _check_skew(signed_at, now, max_skew)
    _check_scope(parsed.credential, amz_date, location, "AuthorizationHeaderMalformed")
    payload = _payload_hash(request, streaming=True)
    check = _v4_checker(request, parsed.credential, amz_date, parsed.signed_headers, payload, parsed.signature)
    if payload == sigv4.STREAMING_PAYLOAD:
        return Signed(parsed.credential.access_key, check, 4,
                      streaming=(amz_date, parsed.credential, parsed.signature.lower()))
    return Signed(parsed.credential.access_key, check, 4, None if payload == sigv4.UNSIGNED_PAYLOAD else payload.lower())


def _v4_query(request, params: dict[str, str], now: float, location: str, max_skew: float) -> Signed:
    error = "AuthorizationQueryParametersError"
    if params.get("X-Amz-Algorithm") != sigv4.ALGORITHM:
        raise S3Error(error, "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
    missing = [name for name in V4_QUERY if not params.get(name)]
    if missing:
        raise S3Error(error, "Query-string authentication version 4 requires the X-Amz-Algorithm, "
                             "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires "
                             "parameters.")
    try:
        credential = sigv4.Credential.parse(params["X-Amz-Credential"])
        signed_headers = sigv4.signed_header_names(params["X-Amz-SignedHeaders"])
    except ValueError as err:
        raise S3Error(error, f"Error parsing the X-Amz-Credential parameter; {err}") from None
    amz_date = params["X-Amz-Date"]
    signed_at = _amz_date(amz_date)
    if signed_at is None:
        raise S3Error(error, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        expires = 2**63
    if expires >= 2**63:  # beyond a signed 64-bit number, as AWS's parser
        raise S3Error(error, "X-Amz-Expires should be a number")
    if expires < 0:
        raise S3Error(error, "X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGNED_EXPIRES:
        raise S3Error(error, "X-Amz-Expires must be less than 604800 seconds")
    if now > signed_at + expires:
        raise S3Error("AccessDenied", "Request has expired", XAmzExpires=expires,
                      Expires=strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(signed_at + expires)),
                      ServerTime=strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(now)))
    if signed_at > now + max_skew:
        raise S3Error("AccessDenied", "Request is not valid yet")
    _check_scope(credential, amz_date, location, error)
    payload = request.header("x-amz-content-sha256") or sigv4.UNSIGNED_PAYLOAD
    if payload != sigv4.UNSIGNED_PAYLOAD:
        payload = _payload_hash(request)
    check = _v4_checker(request, credential, amz_date, signed_headers, payload, params["X-Amz-Signature"],
                        frozenset({b"X-Amz-Signature"}))
    return Signed(credential.access_key, check, 4, None if payload == sigv4.UNSIGNED_PAYLOAD else payload.lower())


# -- Signature V2 ---------------------------------------------------------------------------


def _v2_checker(to_sign: bytes, given: str) -> Callable[[str], bool]:
    def check(secret: str) -> bool:
        return hmac.compare_digest(sigv2.signature(secret, to_sign), given)

    return check


def _v2_header(request, authorization: str, now: float, max_skew: float, bucket_in_host: str | None) -> Signed:
    access_key, colon, given = authorization[len("AWS "):].strip().rpartition(":")
    if not (access_key and colon and given):
        raise S3Error("AccessDenied", "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature")
    amz_date = request.header("x-amz-date")
    signed_at = _http_date(amz_date if amz_date is not None else request.header("Date"))
    if signed_at is None:
        raise S3Error("AccessDenied", NEEDS_DATE)
    _check_skew(signed_at, now, max_skew)
    date = "" if amz_date is not None else request.header("Date") or ""
    to_sign = sigv2.string_to_sign(request.method, request.headers, request.path, request.query, date,
                                   bucket_in_host)
    return Signed(access_key, _v2_checker(to_sign, given), 2)


def _v2_query(request, params: dict[str, str], now: float, bucket_in_host: str | None) -> Signed:
    expires_text = params.get("Expires", "")
    try:
        expires = int(expires_text)
    except ValueError:
        expires = -1
    if not 0 <= expires < 2**32:
        raise S3Error("AccessDenied", f"Invalid date (should be seconds since epoch): {expires_text}")
    if now > expires:
        raise S3Error("AccessDenied", "Request has expired", Expires=strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(expires)),
                      ServerTime=strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(now)))
    query = "&".join(part for part in request.query.split("&")
                     if part.partition("=")[0] not in ("Signature", "AWSAccessKeyId", "Expires"))
    to_sign = sigv2.string_to_sign(request.method, request.headers, request.path, query, expires_text, bucket_in_host)
    return Signed(params["AWSAccessKeyId"], _v2_checker(to_sign, params["Signature"]), 2)


# -- dates ----------------------------------------------------------------------------------


@lru_cache(maxsize=64)  # a client's requests within one second carry the same date
def _amz_date(value: str | None) -> float | None:
    """``20130524T000000Z`` (by hand: strptime costs a quarter of a request's checks), else an HTTP date."""
    if not value:
        return None
    if len(value) == 16 and value[8] == "T" and value[15] == "Z" and value[:8].isdigit() and value[9:15].isdigit():
        try:
            moment = (int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]), int(value[11:13]),
                      int(value[13:15]))
            if not (1 <= moment[1] <= 12 and 1 <= moment[2] <= 31 and moment[3] < 24 and moment[4] < 60
                    and moment[5] < 61):
                return None
            return float(timegm((*moment, 0, 0, 0)))
        except (ValueError, OverflowError):
            return None
    return _http_date(value)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        return float(mktime_tz(parsed))
    except (OverflowError, ValueError):
        return None


def _check_skew(signed_at: float, now: float, max_skew: float) -> None:
    if abs(now - signed_at) > max_skew:
        raise S3Error("RequestTimeTooSkewed", RequestTime=strftime("%Y%m%dT%H%M%SZ", gmtime(signed_at)),
                      ServerTime=strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(now)),
                      MaxAllowedSkewMilliseconds=int(max_skew * 1000))


# -- the body -------------------------------------------------------------------------------


class _CRC32:
    """zlib's CRC-32 behind hashlib's update/digest, for ``x-amz-checksum-crc32``."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


CHECKSUMS: dict[str, Callable[[], object]] = {"crc32": _CRC32, "sha1": hashlib.sha1, "sha256": hashlib.sha256}
UNCHECKED = ("crc32c", "crc64nvme")


@frozen
class Expectation:
    """One digest the body must have: ``error`` names the S3 error when it does not."""

    name: str
    digest: bytes
    error: str
    factory: Callable[[], object]


def expectations(request, signed: Signed) -> list[Expectation]:
    """What the client promised about the body: V4's sha256, a Content-MD5, x-amz-checksum-*."""
    found = []
    if signed.payload_sha256 is not None:
        found.append(Expectation("sha256", bytes.fromhex(signed.payload_sha256), "XAmzContentSHA256Mismatch",
                                 hashlib.sha256))
    md5 = request.header("Content-MD5")
    if md5 is not None:
        found.append(Expectation("md5", decode_md5(md5), "BadDigest", hashlib.md5))
    for name, value in request.headers.with_prefix("x-amz-checksum-").items():
        algorithm = name.lower()[len("x-amz-checksum-"):]
        if algorithm == "type":
            continue
        if algorithm in UNCHECKED:
            raise S3Error("NotImplemented", f"x-amz-checksum-{algorithm} is not implemented (crc32, sha1 and "
                                            "sha256 are)")
        factory = CHECKSUMS.get(algorithm)
        if factory is None:
            raise S3Error("InvalidRequest", f"unknown checksum algorithm {algorithm!r}")
        try:
            digest = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise S3Error("InvalidRequest", f"Value for x-amz-checksum-{algorithm} header is invalid.") from None
        found.append(Expectation(algorithm, digest, "BadDigest", factory))
    return found


def decode_md5(value: str) -> bytes:
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise S3Error("InvalidDigest") from None
    if len(digest) != 16:
        raise S3Error("InvalidDigest")
    return digest


class BodyMismatch(BodyIncomplete):
    """The body did not hash to what the client promised: the write fails as a cut-off body."""


@implementer(IByteSource)
@define
class CheckedBody:
    """
    The client's upload, hashed as it passes; the last chunk is held back until the source
    ends and every digest matched, so a node never receives the whole of a bad body. After a
    mismatch ``failed`` names the S3 error for the handler to answer with.
    """

    source: object  # IByteSource
    expected: list[Expectation]
    failed: S3Error | None = None
    _hashes: list | None = None
    _held: bytes | None = None
    _done: bool = False

    def __attrs_post_init__(self) -> None:
        self._hashes = [e.factory() for e in self.expected]

    def read(self) -> Deferred:
        # Deferred callbacks, not a coroutine: a 1 MiB upload is read in 16 or more pieces, and a
        # coroutine frame and its Deferred for each cost more than the work done on the piece.
        if self._done:
            return succeed(b"")
        if self._held is None:
            return self._next().addCallback(self._first)
        return self._next().addCallback(self._then)

    def _next(self) -> Deferred:
        return self.source.read().addCallback(self._hashed)

    def _hashed(self, chunk: bytes) -> bytes:
        for hashed in self._hashes:
            hashed.update(chunk)
        return chunk

    def _first(self, chunk: bytes):
        self._held = chunk
        if not chunk:
            return self._end(b"")
        return self._next().addCallback(self._then)

    def _then(self, chunk: bytes) -> bytes:
        if not chunk:
            return self._end(self._held)
        held, self._held = self._held, chunk
        return held

    def _end(self, last: bytes) -> bytes:
        for expectation, hashed in zip(self.expected, self._hashes):
            if hashed.digest() != expectation.digest:
                self.failed = S3Error(expectation.error)
                raise BodyMismatch(f"the body's {expectation.name} is not what the client sent")
        self._done, self._held = True, None
        return last

    def stop(self) -> None:
        self._held = None
        self.source.stop()
