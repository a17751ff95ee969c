# -*- test-case-name: txstore.test.unit.test_s3_middleware -*-
"""
Object operations over Swift objects: GET and HEAD (ranges, conditionals, ``response-*``
overrides), PUT (streamed; Content-MD5 and the V4 payload hash checked as the body passes),
DELETE, CopyObject (``x-amz-copy-source`` as Swift's ``X-Copy-From``), the canned ACL.
User metadata ``x-amz-meta-<name>`` is Swift's ``X-Object-Meta-<name>``, so either API sees
what the other wrote.
"""

from __future__ import annotations

from email.utils import formatdate
from urllib.parse import parse_qsl, quote, unquote

from txstore.proxy.messages import HeaderMap, SwiftResponse
from txstore.s3 import xmlio as xml
from txstore.s3.bucket import check_canned_acl
from txstore.s3.auth import BodyMismatch, decode_md5
from txstore.s3.calls import S3Call, swift_error, xml_response
from txstore.s3.errors import S3Error
from txstore.s3.listing import iso_from_http, private_acl, quoted_etag
from txstore.s3.versioning import MARKER_TYPE, VERSION_ID, version_query

# Headers a Swift object answer carries that S3 answers carry too, as they are.
RELAYED = ("content-type", "content-length", "content-range", "content-encoding", "content-disposition",
           "content-language", "cache-control", "expires", "last-modified", "accept-ranges", "x-robots-tag")
# What a PUT may set on the object besides its metadata (Swift stores these too); X-Delete-At and
# X-Delete-After are Swift's expiry, which Swift's s3api passes through too.
STORED = ("Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control",
          "Expires", "X-Robots-Tag")
EXPIRY = ("X-Delete-At", "X-Delete-After")
# HTTP token characters (RFC 9110): a metadata name with others cannot be a header name.
TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
CONDITIONALS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
OVERRIDES = {"response-content-type": "Content-Type", "response-content-language": "Content-Language",
             "response-expires": "Expires", "response-cache-control": "Cache-Control",
             "response-content-disposition": "Content-Disposition",
             "response-content-encoding": "Content-Encoding"}
META, AMZ_META = "x-object-meta-", "x-amz-meta-"
MULTIPART_ETAG = "x-object-sysmeta-s3api-etag"  # a completed multipart upload's (txstore.s3.multipart)
MULTIPART_ETAG_HEADER = "X-Object-Sysmeta-S3api-Etag"
ETAG_IS_AT = "X-Backend-Etag-Is-At"
COPY_CONDITIONALS = {"x-amz-copy-source-if-match": "If-Match", "x-amz-copy-source-if-none-match": "If-None-Match",
                     "x-amz-copy-source-if-modified-since": "If-Modified-Since",
                     "x-amz-copy-source-if-unmodified-since": "If-Unmodified-Since"}
REFUSED_HEADERS = {
    "x-amz-server-side-encryption": "server-side encryption",
    "x-amz-server-side-encryption-customer-algorithm": "server-side encryption",
    "x-amz-tagging": "object tagging",
    "x-amz-website-redirect-location": "website redirects",
    "x-amz-object-lock-mode": "object lock",
    "x-amz-object-lock-retain-until-date": "object lock",
    "x-amz-object-lock-legal-hold": "object lock",
}


def s3_headers(swift: HeaderMap) -> HeaderMap:
    """The S3 answer's headers from a Swift object answer's."""
    headers = HeaderMap()
    for name, value in swift.items():
        lowered = name.lower()
        if lowered in RELAYED:
            headers[name] = value
        elif lowered == "etag":
            headers.setdefault("ETag", quoted_etag(value))
        elif lowered == MULTIPART_ETAG:
            headers["ETag"] = quoted_etag(value)
        elif lowered.startswith(META):
            headers[AMZ_META + name[len(META):].lower()] = value
        elif lowered == "x-object-version-id":
            headers["x-amz-version-id"] = value
        elif lowered == "x-delete-at" and value.isdigit():
            expiry = formatdate(int(value), usegmt=True)
            headers["x-amz-expiration"] = f'expiry-date="{expiry}", rule-id="swift-object-expiration"'
    return headers


def _version(call: S3Call) -> str:
    """Swift's query for the request's ``versionId`` (object versioning), "" for the current one."""
    version = call.params.get("versionId")
    if version is not None and not version:
        raise S3Error("InvalidArgument", "Version id cannot be the empty string", ArgumentName="versionId",
                      ArgumentValue="")
    return version_query(version)


async def _missing(call: S3Call, response: SwiftResponse) -> S3Error:
    """A Swift 404 of an object: NoSuchBucket when the container is missing, else NoSuchKey."""
    response.discard_body()
    bucket = await call.swift("HEAD", call.bucket)
    bucket.discard_body()
    if bucket.status == 404:
        return S3Error("NoSuchBucket", BucketName=call.bucket)
    return S3Error("NoSuchKey", Key=call.key)


async def get(call: S3Call):
    version = _version(call)
    request = call.request
    headers = {name: request.header(name) for name in ("Range", *CONDITIONALS) if request.header(name) is not None}
    if any(name in headers for name in CONDITIONALS):  # a multipart upload's conditions are on S3's ETag
        headers[ETAG_IS_AT] = MULTIPART_ETAG_HEADER
    query = ""
    if "partNumber" in call.params:  # one part of a multipart upload: slo's ?part-number=
        number = call.params["partNumber"]
        if not number.isdigit() or not 1 <= int(number) <= 10000:
            raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                          ArgumentName="partNumber", ArgumentValue=number)
        if "Range" in headers:
            raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter")
        query = f"part-number={number}"
    query = "&".join(q for q in (query, version) if q)
    response = await call.swift(request.method, call.bucket, call.key, headers=headers, query=query)
    if response.status in (200, 206):
        answer = SwiftResponse(response.status, s3_headers(response.headers), response.body)
        if "X-Parts-Count" in response.headers:
            answer.headers["x-amz-mp-parts-count"] = response.headers["X-Parts-Count"]
        if request.method == "GET":
            for param, header in OVERRIDES.items():
                if param in call.params:
                    answer.headers[header] = call.params[param]
        return answer
    if response.status == 304:
        response.discard_body()
        return SwiftResponse(304, s3_headers(response.headers))
    if response.status == 404:
        if version and (response.headers.get("Content-Type") or "") == MARKER_TYPE:
            response.discard_body()  # a delete marker asked for by its id
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.",
                          headers={"x-amz-delete-marker": "true", "x-amz-version-id": call.params["versionId"]},
                          ResourceType="DeleteMarker", Method=request.method)
        if version:
            response.discard_body()
            raise S3Error("NoSuchVersion", VersionId=call.params["versionId"], Key=call.key)
        raise await _missing(call, response)
    if response.status == 400 and version:
        response.discard_body()
        raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName="versionId",
                      ArgumentValue=call.params["versionId"])
    raise swift_error(response, key=True)


def metadata(call: S3Call) -> dict[str, str]:
    found = {}
    for name, value in call.request.headers.items():
        if name.lower().startswith(AMZ_META) and TOKEN.issuperset(name):
            found["X-Object-Meta-" + name[len(AMZ_META):]] = value
    return found


def _refuse_unbuilt(call: S3Call) -> None:
    for name, what in REFUSED_HEADERS.items():
        if name in call.request.headers:
            raise S3Error("NotImplemented", f"{name}: {what} is not implemented")
    storage_class = call.request.header("x-amz-storage-class")
    if storage_class is not None and storage_class != "STANDARD":
        raise S3Error("InvalidStorageClass", "The storage class you specified is not valid", status=400,
                      StorageClassRequested=storage_class)
    check_canned_acl(call)


async def put(call: S3Call):
    if "x-amz-copy-source" in call.request.headers:
        return await copy(call)
    _refuse_unbuilt(call)
    request = call.request
    headers = {name: request.header(name) for name in (*STORED, *EXPIRY) if request.header(name) is not None}
    headers.update(metadata(call))
    headers.update(put_conditions(call))
    return await put_body(call, call.bucket, call.key, headers)


async def put_body(call: S3Call, container: str, obj: str, headers: dict[str, str]):
    """The client's body streamed to ``container/obj`` (an object or a part), its digests checked."""
    request = call.request
    chunked = (request.header("Transfer-Encoding") or "").lower() == "chunked"
    length = request.header("Content-Length")
    if length is None and not chunked:
        raise S3Error("MissingContentLength")
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = length
    md5 = request.header("Content-MD5")
    if md5 is not None:
        headers["ETag"] = decode_md5(md5).hex()
    body = call.checked if call.checked is not None else request.body
    try:
        response = await call.swift("PUT", container, obj, headers=headers, body=body)
    except BodyMismatch:  # a stage below let the failed read through: the same answer
        raise _body_failure(call) from None
    failure = _body_failure(call)
    if failure is not None:
        response.discard_body()  # the PUT failed (a cut-off body): nothing was stored
        raise failure
    if response.status == 201:
        response.discard_body()
        answer = xml_response(200, b"", {"ETag": quoted_etag(response.headers.get("ETag"))})
        answer.headers["Content-Type"] = "text/html; charset=UTF-8"  # as Swift's s3api answers it
        if VERSION_ID in response.headers:
            answer.headers["x-amz-version-id"] = response.headers[VERSION_ID]
        for name, value in request.headers.with_prefix("x-amz-checksum-").items():
            answer.headers[name] = value  # verified on the way in (auth.CheckedBody)
        return answer
    if response.status == 404:
        response.discard_body()
        raise S3Error("NoSuchBucket", BucketName=call.bucket)
    raise swift_error(response, key=True)


def _body_failure(call: S3Call) -> S3Error | None:
    """Why the upload's body was refused as it streamed (a digest, a chunk's signature), if it was."""
    for watcher in (call.chunks, call.checked):
        if watcher is not None and watcher.failed is not None:
            return watcher.failed
    return None


def put_conditions(call: S3Call) -> dict[str, str]:
    """A PUT may be conditional on nothing existing (``If-None-Match: *``) only, as in S3."""
    found = {}
    for name in CONDITIONALS:
        value = call.request.header(name)
        if value is None:
            continue
        if name == "If-None-Match" and value.strip() == "*":
            found[name] = "*"
        else:
            raise S3Error("NotImplemented", f"{name} on a PUT is not implemented (If-None-Match: * is)",
                          headers={"Allow": "GET, HEAD, PUT, DELETE"})
    return found


async def delete(call: S3Call):
    version = _version(call)
    query = version
    if not version:
        head = await call.swift("HEAD", call.bucket, call.key, query="multipart-manifest=get")
        head.discard_body()
        if (head.headers.get("X-Static-Large-Object") or "").lower() == "true" and VERSION_ID not in head.headers:
            query = "multipart-manifest=delete"  # a completed multipart upload: its parts go with it
    response = await call.swift("DELETE", call.bucket, call.key, query=query)
    answer = xml_response(204, b"")
    if version:
        answer.headers["x-amz-version-id"] = call.params["versionId"]
    elif VERSION_ID in response.headers:  # versioned: the delete marker written
        answer.headers["x-amz-version-id"] = response.headers[VERSION_ID]
        answer.headers["x-amz-delete-marker"] = "true"
    if response.status // 100 == 2:
        response.discard_body()
        return answer
    if response.status == 404:
        error = await _missing(call, response)
        if error.code == "NoSuchBucket":
            raise error
        return answer  # deleting what is not there succeeds, as in S3
    if response.status == 400 and version:
        response.discard_body()
        raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName="versionId",
                      ArgumentValue=call.params["versionId"])
    raise swift_error(response, key=True)


def copy_source(value: str) -> tuple[str, str, str | None]:
    """(bucket, key, versionId) of ``x-amz-copy-source`` (``[/]bucket/key[?versionId=…]``)."""
    path, _, query = value.partition("?")
    params = parse_qsl(query, keep_blank_values=True) if query else []
    if any(name != "versionId" for name, _ in params):
        raise S3Error("InvalidArgument", "Unsupported copy source parameter.", ArgumentName="x-amz-copy-source",
                      ArgumentValue=value)
    version = dict(params).get("versionId")
    path = unquote(path).lstrip("/")
    bucket, slash, key = path.partition("/")
    if not (bucket and slash and key):
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      ArgumentName="x-amz-copy-source", ArgumentValue=value)
    return bucket, key, version


async def copy(call: S3Call):
    request = call.request
    _refuse_unbuilt(call)
    if "x-amz-copy-source-range" in request.headers:
        raise S3Error("InvalidArgument", "x-amz-copy-source-range is only for UploadPartCopy",
                      ArgumentName="x-amz-copy-source-range")
    bucket, key, version = copy_source(request.header("x-amz-copy-source"))
    directive = (request.header("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.", ArgumentName="x-amz-metadata-directive",
                      ArgumentValue=directive)
    if (bucket, key) == (call.bucket, call.key) and directive == "COPY" and version is None:
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to "
                                        "itself without changing the object's metadata, storage class, website "
                                        "redirect location or encryption attributes.")
    request.discard_body()
    conditions = {header: request.header(name) for name, header in COPY_CONDITIONALS.items()
                  if request.header(name) is not None}
    if conditions:
        conditions[ETAG_IS_AT] = MULTIPART_ETAG_HEADER
    source = await call.swift("HEAD", bucket, key, headers=conditions, query=version_query(version))
    source.discard_body()
    if source.status in (304, 412):
        raise S3Error("PreconditionFailed")
    if source.status == 404:
        missing = await call.swift("HEAD", bucket)
        missing.discard_body()
        raise S3Error("NoSuchBucket", BucketName=bucket) if missing.status == 404 else S3Error("NoSuchKey", Key=key)
    if source.status // 100 != 2:
        raise swift_error(source, key=True)
    headers = {"X-Copy-From": quote(f"/{bucket}/{key}"), "Content-Length": "0"}
    if directive == "REPLACE":
        headers["X-Fresh-Metadata"] = "true"
        headers.update({name: request.header(name) for name in STORED if request.header(name) is not None})
        headers.update(metadata(call))
    response = await call.swift("PUT", call.bucket, call.key, headers=headers, query=version_query(version))
    response.discard_body()
    if response.status != 201:
        if response.status == 404:
            raise S3Error("NoSuchBucket", BucketName=call.bucket)
        raise swift_error(response, key=True)
    root = xml.Element("CopyObjectResult")
    copied_headers = {}
    if version is not None:
        copied_headers["x-amz-copy-source-version-id"] = version
    if VERSION_ID in response.headers:
        copied_headers["x-amz-version-id"] = response.headers[VERSION_ID]
    xml.sub(root, "LastModified", iso_from_http(response.headers.get("Last-Modified")))
    xml.sub(root, "ETag", quoted_etag(response.headers.get("ETag")))
    return xml_response(200, xml.dumps(root), copied_headers)


async def _require_object(call: S3Call) -> None:
    """The key exists (a HEAD of it); NoSuchKey (or the bucket's error) otherwise."""
    response = await call.swift("HEAD", call.bucket, call.key)
    if response.status // 100 != 2:
        if response.status == 404:
            raise await _missing(call, response)
        raise swift_error(response, key=True)
    response.discard_body()


async def acl(call: S3Call):
    await _require_object(call)
    return xml_response(200, private_acl(call.user.access_key))


async def put_acl(call: S3Call):
    check_canned_acl(call)
    body = await call.read_body()
    if body.strip():
        raise S3Error("NotImplemented", "ACL documents are not implemented (only the canned private ACL is)")
    await _require_object(call)
    return xml_response(200, b"")
