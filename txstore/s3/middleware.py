# -*- test-case-name: txstore.test.unit.test_s3_middleware -*-
"""
s3api: the S3 API in the proxy pipeline, before tempauth, as Swift's SAIO has it.

A request signed the S3 way (`txstore.s3.auth.signed_by`) is answered here: the signature is
checked with the secret the credential source (`txstore.s3.credentials`) gives for its access
key, the bucket and key are found (`routing`), and the operation's handler (`service`,
`bucket`, `obj`) makes Swift sub-requests down the pipeline below, as the signer, with
``swift.authorize_override`` and the credential source's authorizer, so tempauth's rules and
container ACLs decide as they do for Swift. Any other request is not ours: it is the next
stage's call, unchanged.

Every S3 answer carries ``x-amz-request-id`` and ``x-amz-id-2`` (the transaction id); every
error is S3's XML (`errors.S3Error`), never Swift's text, and a HEAD's error has no body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from zope.interface import implementer

from txstore.common import config as c
from txstore.interfaces import IApp
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse
from txstore.s3 import bucket, multipart, obj, service, sigv4, versioning
from txstore.s3.auth import CheckedBody, expectations, signed_by
from txstore.s3.calls import S3Call, S3Settings
from txstore.s3.chunked import SignedChunks
from txstore.s3.credentials import TempAuthCredentials
from txstore.s3.errors import S3Error
from txstore.s3.routing import bucket_in_host, locate, operation, valid_bucket

log = Logger()

HANDLERS: dict[str, Callable] = {
    "service.list": service.list_buckets,
    "bucket.create": bucket.create,
    "bucket.head": bucket.head,
    "bucket.delete": bucket.delete,
    "bucket.location": bucket.location,
    "bucket.versioning": versioning.get_config,
    "bucket.put_versioning": versioning.put_config,
    "bucket.object_lock": bucket.object_lock,
    "bucket.versions": bucket.list_versions,
    "bucket.acl": bucket.acl,
    "bucket.put_acl": bucket.put_acl,
    "multipart.list_uploads": multipart.list_uploads,
    "multipart.create": multipart.create,
    "multipart.upload_part": multipart.upload_part,
    "multipart.list_parts": multipart.list_parts,
    "multipart.complete": multipart.complete,
    "multipart.abort": multipart.abort,
    "bucket.list": bucket.list_objects,
    "bucket.list_v2": bucket.list_objects_v2,
    "bucket.multi_delete": bucket.multi_delete,
    "object.get": obj.get,
    "object.put": obj.put,
    "object.delete": obj.delete,
    "object.acl": obj.acl,
    "object.put_acl": obj.put_acl,
}
SIGNED = "s3api.signed"
ABSOLUTE_FORM = ("http://", "https://")


def _domains(raw: str, _base: Any) -> tuple[str, ...]:
    return tuple(d.strip().lstrip(".").lower() for d in raw.replace(",", " ").split() if d.strip())


OPTIONS = (
    c.Option("location", c.nonempty_string, "us-east-1",
             doc="The region clients sign for and GetBucketLocation names."),
    c.Option("storage_domain", _domains, (),
             doc="Domains under which a Host of <bucket>.<domain> names the bucket (virtual-hosted style)."),
    c.Option("max_multi_delete_objects", c.integer(1), 1000, doc="Most keys one DeleteObjects may name."),
    c.Option("allowable_clock_skew", c.integer(1), 900,
             doc="Seconds a request's signed time may be off the proxy's clock."),
    c.Option("max_bucket_listing", c.integer(1), 1000, doc="Most keys one ListObjects answer holds."),
    c.Option("dns_compliant_bucket_names", c.boolean, True,
             doc="Bucket names follow AWS's DNS rules (lower case, 3-63 characters)."),
    c.Option("min_segment_size", c.integer(1), 5 * 1024 * 1024,
             doc="Least size of a multipart upload's parts but the last (AWS: 5 MiB)."),
)


@implementer(IApp)
class S3Api:
    def __init__(self, app, settings: S3Settings, credentials, reactor) -> None:
        self.app = app
        self.settings = settings
        self.credentials = credentials
        self.reactor = reactor  # IReactorTime: the signed time's clock, and the body reads' timeouts

    def __call__(self, request: SwiftRequest):
        host_bucket = bucket_in_host(request.host, self.settings.storage_domains) \
            if self.settings.storage_domains else None
        sent_path = request.path
        if sent_path.startswith(ABSOLUTE_FORM):  # GET http://host/bucket/key HTTP/1.1: sign the path
            request.path = "/" + sent_path.split("/", 3)[3] if sent_path.count("/") >= 3 else "/"
        try:
            signed = signed_by(request, now=self.reactor.seconds(), location=self.settings.location,
                               max_skew=self.settings.allowable_clock_skew, bucket_in_host=host_bucket)
        except S3Error as err:
            return self._failed(request, err, host_bucket)
        if signed is None:
            request.path = sent_path
            return self.app(request)
        return self._serve(request, signed, host_bucket)

    async def _failed(self, request: SwiftRequest, err: S3Error, host_bucket: str | None) -> SwiftResponse:
        request.discard_body()
        return error_response(request, err, _resource(request, host_bucket))

    async def _serve(self, request: SwiftRequest, signed, host_bucket: str | None) -> SwiftResponse:
        try:
            call = self._call(request, signed, host_bucket)
            call.grants = await self.credentials.grants(call.user, request)
            response = await HANDLERS[operation(request.method, call.bucket, call.key, call.params)](call)
        except S3Error as err:
            request.discard_body()
            response = error_response(request, err, _resource(request, host_bucket))
        except CancelledError:
            raise  # the client went away: nothing to answer
        except Exception:
            log.failure("{trans_id}: S3 {method} {path} failed", trans_id=request.trans_id, method=request.method,
                        path=request.path)
            request.discard_body()
            response = error_response(request, S3Error("InternalError"), _resource(request, host_bucket))
        response.headers["x-amz-request-id"] = request.trans_id
        response.headers["x-amz-id-2"] = request.trans_id
        return response

    def _call(self, request: SwiftRequest, signed, host_bucket: str | None) -> S3Call:
        user = self.credentials.lookup(signed.access_key) if self.credentials is not None else None
        if user is None:
            raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=signed.access_key)
        if not signed.check(user.secret):
            raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=signed.access_key)
        name, key = locate(request.path, host_bucket)
        if name is not None and not valid_bucket(name, self.settings.dns_compliant_bucket_names):
            raise S3Error("InvalidBucketName", BucketName=name)
        if key is not None and len(key.encode("utf-8")) > self.settings.max_object_name_length:
            raise S3Error("KeyTooLongError")
        request.environ[SIGNED] = signed
        call = S3Call(request, self.app, self.credentials, user, name, key, self.settings, self.reactor,
                      params=request.params)
        if signed.streaming is not None:
            call.chunks = _decode_chunks(request, signed, user.secret, key)
        if request.method == "PUT" and key is not None and "x-amz-copy-source" not in request.headers:
            promised = expectations(request, signed)
            if promised or call.chunks is not None:
                call.checked = CheckedBody(request.body, promised)
        return call


def _decode_chunks(request: SwiftRequest, signed, secret: str, key: str | None) -> SignedChunks:
    """An aws-chunked upload: its body becomes the decoded, chunk-verified bytes."""
    if request.method != "PUT" or key is None:
        raise S3Error("InvalidRequest", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD is for object and part uploads")
    decoded = request.header("x-amz-decoded-content-length")
    if decoded is None or not decoded.isdigit():
        raise S3Error("MissingContentLength", "aws-chunked uploads need x-amz-decoded-content-length")
    amz_date, credential, seed = signed.streaming
    chunks = SignedChunks(request.body, sigv4.signing_key(secret, credential.date, credential.region,
                                                         credential.service),
                          amz_date, credential.scope, seed, int(decoded))
    request.body = chunks
    request.headers["Content-Length"] = decoded
    request.headers.pop("Transfer-Encoding")
    encodings = [e.strip() for e in (request.header("Content-Encoding") or "").split(",")
                 if e.strip() and e.strip().lower() != "aws-chunked"]
    if encodings:
        request.headers["Content-Encoding"] = ", ".join(encodings)
    else:
        request.headers.pop("Content-Encoding")
    return chunks


def _resource(request: SwiftRequest, host_bucket: str | None) -> str:
    try:
        name, key = locate(request.path, host_bucket)
    except S3Error:
        return request.path
    if name is None:
        return "/"
    return f"/{name}" + (f"/{key}" if key is not None else "")


def error_response(request: SwiftRequest, err: S3Error, resource: str) -> SwiftResponse:
    """The XML answer of an S3 error (no body for a HEAD: its status says it all)."""
    if err.status >= 500:
        log.warn("{trans_id}: S3 {method} {path}: {code} {message}", trans_id=request.trans_id,
                 method=request.method, path=request.path, code=err.code, message=err.message)
    body = b"" if request.method == "HEAD" else err.body(resource, request.trans_id)
    response = SwiftResponse(err.status, HeaderMap(err.headers), body)
    response.headers["Content-Type"] = "application/xml"
    response.headers["x-amz-request-id"] = request.trans_id
    response.headers["x-amz-id-2"] = request.trans_id
    return response


def settings_of(settings: dict[str, Any], max_object_name_length: int = 1024) -> S3Settings:
    return S3Settings(location=settings["location"], storage_domains=settings["storage_domain"],
                      max_multi_delete_objects=settings["max_multi_delete_objects"],
                      allowable_clock_skew=settings["allowable_clock_skew"],
                      max_bucket_listing=settings["max_bucket_listing"],
                      dns_compliant_bucket_names=settings["dns_compliant_bucket_names"],
                      min_segment_size=settings["min_segment_size"],
                      max_object_name_length=max_object_name_length)


def build(app, settings: dict[str, Any], proxy) -> S3Api:
    """The filter (`txstore.middleware.s3api`): tempauth's users as the credentials."""
    s3 = settings_of(settings, proxy.context.constraints.max_object_name_length)
    auth = getattr(proxy, "provided", {}).get("tempauth")
    if auth is None:
        log.warn("s3api: no tempauth below it in the pipeline: every S3 request is refused (InvalidAccessKeyId)")
    proxy.info.register("s3api", max_bucket_listing=s3.max_bucket_listing,
                        max_multi_delete_objects=s3.max_multi_delete_objects, s3_acl=False,
                        allow_multipart_uploads=True, min_segment_size=s3.min_segment_size,
                        max_upload_part_num=multipart.MAX_PART_NUMBER, max_parts_listing=1000,
                        location=s3.location)
    from txstore.proxy.controllers.base import account_info  # the proxy's cached account info

    def info(request: SwiftRequest, account: str):
        return account_info(proxy.context, account, request.trans_id)

    credentials = TempAuthCredentials(auth, info) if auth is not None else None
    return S3Api(app, s3, credentials, proxy.reactor)

