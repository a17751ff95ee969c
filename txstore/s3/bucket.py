# -*- test-case-name: txstore.test.unit.test_s3_middleware -*-
"""
Bucket operations over containers: create, head, delete, location, listings (v1, v2, versions
of an unversioned bucket, in-progress uploads: none yet), the canned ACL, and multi-delete.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote, urlencode

from twisted.internet.defer import DeferredSemaphore, ensureDeferred, gatherResults

from txstore.s3 import versioning, xmlio as xml
from txstore.s3.calls import S3Call, json_of, swift_error, xml_body, xml_response
from txstore.s3.errors import S3Error
from txstore.s3.listing import iso_from_swift, owner, private_acl, quoted_etag

DELETE_CONCURRENCY = 4
TRUE = ("true", "1")


async def require_bucket(call: S3Call) -> None:
    """NoSuchBucket (or AccessDenied) unless the bucket exists and the user may see it."""
    response = await call.swift("HEAD", call.bucket)
    response.discard_body()
    if response.status // 100 != 2:
        raise swift_error(response, bucket=True)


# The canned ACLs a bucket can have, as the container ACLs that grant the same (Swift's s3api
# without s3_acl does the same): private clears them, public-read lets anyone read and list.
BUCKET_ACLS = {"private": {"X-Container-Read": "", "X-Container-Write": ""},
               "public-read": {"X-Container-Read": ".r:*,.rlistings"}}
PUBLIC = ".r:*"


def check_canned_acl(call: S3Call, allowed: tuple[str, ...] = ("private",)) -> str | None:
    """The canned ACL asked for; any not built (grants, or a canned one not in ``allowed``) refused."""
    grants = [name for name in call.request.headers if name.lower().startswith("x-amz-grant-")]
    if grants:
        raise S3Error("NotImplemented", f"{grants[0]} is not implemented")
    acl = call.request.header("x-amz-acl")
    if acl is not None and acl.strip() not in allowed:
        raise S3Error("NotImplemented", f"x-amz-acl: {acl} is not implemented (only {', '.join(allowed)})")
    return acl.strip() if acl is not None else None


async def create(call: S3Call):
    canned = check_canned_acl(call, tuple(BUCKET_ACLS))
    body = await call.read_body()
    if body.strip():
        config = xml_body(body, "CreateBucketConfiguration")
        constraint = xml.text_of(config, "LocationConstraint")
        if constraint and constraint != call.settings.location:
            raise S3Error("InvalidLocationConstraint", LocationConstraint=constraint)
    headers = {name: value for name, value in BUCKET_ACLS.get(canned or "", {}).items() if value}
    response = await call.swift("PUT", call.bucket, headers=headers)
    response.discard_body()
    if response.status == 201:
        return xml_response(200, b"", {"Location": f"/{call.bucket}"})
    if response.status == 202:
        raise S3Error("BucketAlreadyOwnedByYou", BucketName=call.bucket)
    raise swift_error(response, bucket=True)


async def head(call: S3Call):
    await require_bucket(call)
    return xml_response(200, b"", {"x-amz-bucket-region": call.settings.location})


async def delete(call: S3Call):
    response = await call.swift("DELETE", call.bucket)
    response.discard_body()
    if response.status // 100 == 2:
        segments = await call.swift("DELETE", call.bucket + "+segments")  # multipart's, when empty
        segments.discard_body()
        return xml_response(204, b"")
    raise swift_error(response, bucket=True)


async def location(call: S3Call):
    await require_bucket(call)
    root = xml.Element("LocationConstraint")
    if call.settings.location != "us-east-1":  # AWS's answer for its first region is empty
        root.text = call.settings.location
    return xml_response(200, xml.dumps(root))


async def object_lock(call: S3Call):
    await require_bucket(call)
    raise S3Error("ObjectLockConfigurationNotFoundError", "Object Lock configuration does not exist for this bucket",
                  status=404, BucketName=call.bucket)


async def acl(call: S3Call):
    response = await call.swift("HEAD", call.bucket)
    response.discard_body()
    if response.status // 100 != 2:
        raise swift_error(response, bucket=True)
    readers = [e.strip() for e in (response.headers.get("X-Container-Read") or "").split(",")]
    return xml_response(200, private_acl(call.user.access_key, public_read=PUBLIC in readers))


async def put_acl(call: S3Call):
    await require_bucket(call)
    canned = check_canned_acl(call, tuple(BUCKET_ACLS))
    body = await call.read_body()
    if body.strip() or canned is None:
        raise S3Error("NotImplemented", "ACL documents are not implemented (only the canned ACLs "
                                        f"{', '.join(BUCKET_ACLS)} are)")
    response = await call.swift("POST", call.bucket, headers=BUCKET_ACLS[canned])
    response.discard_body()
    if response.status // 100 != 2:
        raise swift_error(response, bucket=True)
    return xml_response(200, b"")


# -- listings -------------------------------------------------------------------------------


def _max_keys(call: S3Call, name: str = "max-keys") -> int:
    value = call.params.get(name)
    if value is None:
        return call.settings.max_bucket_listing
    try:
        found = int(value)
    except ValueError:
        found = -1
    if found < 0 or found > 2**31 - 1:
        raise S3Error("InvalidArgument", "Provided max-keys not an integer or within integer range",
                      ArgumentName=name, ArgumentValue=value)
    return min(found, call.settings.max_bucket_listing)


def _swift_marker(marker: str, delimiter: str) -> str:
    """A marker that is a common prefix skips everything under it (Swift would list its keys)."""
    if delimiter and len(delimiter) == 1 and marker.endswith(delimiter):
        return marker[:-1] + chr(ord(delimiter) + 1)
    return marker


async def _entries(call: S3Call, marker: str, prefix: str, delimiter: str, limit: int) -> tuple[list, bool]:
    """Up to ``limit`` listing entries after ``marker`` and whether there are more."""
    if limit == 0:
        await require_bucket(call)
        return [], False
    query = {"format": "json", "limit": str(limit + 1), "marker": _swift_marker(marker, delimiter),
             "prefix": prefix}
    if delimiter:
        query["delimiter"] = delimiter
    response = await call.swift("GET", call.bucket, query=urlencode(query))
    if response.status == 204:
        response.discard_body()
        return [], False
    if response.status != 200:
        raise swift_error(response, bucket=True)
    entries = await json_of(response)
    return entries[:limit], len(entries) > limit


def listed_etag(entry: dict) -> str:
    """A listing row's ETag: S3's for a completed multipart upload (``; s3_etag=`` in its hash)."""
    etag, *params = (entry.get("hash") or "").split(";")
    for param in params:
        name, _, value = param.strip().partition("=")
        if name == "s3_etag":
            return quoted_etag(value)
    return quoted_etag(etag)


def _name(entry: dict) -> str:
    return entry.get("subdir") if "subdir" in entry else entry["name"]


def _key_encoder(params: dict[str, str]):
    """How a listing writes keys: as they are, or URL-encoded with ``encoding-type=url`` (else a 400)."""
    encoding = params.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      ArgumentName="encoding-type", ArgumentValue=encoding)
    return (lambda text: quote(text, safe="/")) if encoding else (lambda text: text)


async def list_objects(call: S3Call, version: int = 1):
    params = call.params
    encode = _key_encoder(params)
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
    limit = _max_keys(call)
    if version == 2:
        token = params.get("continuation-token")
        if token is not None:
            try:
                marker = base64.b64decode(token.encode("ascii"), validate=True).decode("utf-8")
            except (binascii.Error, ValueError, UnicodeError):
                raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                              ArgumentName="continuation-token") from None
        else:
            marker = params.get("start-after", "")
    else:
        marker = params.get("marker", "")
    entries, truncated = await _entries(call, marker, prefix, delimiter, limit)
    root = xml.Element("ListBucketResult")
    xml.sub(root, "Name", call.bucket)
    xml.sub(root, "Prefix", encode(prefix))
    if version == 2:
        if "continuation-token" in params:
            xml.sub(root, "ContinuationToken", params["continuation-token"])
        if "start-after" in params:
            xml.sub(root, "StartAfter", encode(params["start-after"]))
        xml.sub(root, "KeyCount", len(entries))
        if truncated and entries:
            xml.sub(root, "NextContinuationToken", base64.b64encode(_name(entries[-1]).encode("utf-8")).decode())
    else:
        xml.sub(root, "Marker", encode(marker))
        if truncated and entries and delimiter:
            xml.sub(root, "NextMarker", encode(_name(entries[-1])))
    xml.sub(root, "MaxKeys", limit)
    if delimiter:
        xml.sub(root, "Delimiter", encode(delimiter))
    if "encoding-type" in params:
        xml.sub(root, "EncodingType", "url")
    xml.sub(root, "IsTruncated", "true" if truncated else "false")
    with_owner = version == 1 or params.get("fetch-owner", "").lower() in TRUE
    for entry in entries:
        if "subdir" not in entry:
            contents = xml.sub(root, "Contents")
            xml.sub(contents, "Key", encode(entry["name"]))
            xml.sub(contents, "LastModified", iso_from_swift(entry.get("last_modified")))
            xml.sub(contents, "ETag", listed_etag(entry))
            xml.sub(contents, "Size", entry.get("bytes", 0))
            if with_owner:
                owner(contents, call.user.access_key)
            xml.sub(contents, "StorageClass", "STANDARD")
    for entry in entries:
        if "subdir" in entry:
            xml.sub(xml.sub(root, "CommonPrefixes"), "Prefix", encode(entry["subdir"]))
    return xml_response(200, xml.dumps(root))


async def list_objects_v2(call: S3Call):
    return await list_objects(call, 2)


async def list_versions(call: S3Call):
    """An unversioned bucket's objects, each its only version, ``null``, as AWS lists them."""
    params = call.params
    encode = _key_encoder(params)
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
    limit = _max_keys(call, "max-keys")
    marker = params.get("key-marker", "")
    versioned = await versioning.bucket_state(call) is not None
    if versioned and limit:
        entries, truncated = await versioning.versions_page(call, prefix, delimiter, marker,
                                                            params.get("version-id-marker", ""), limit)
    else:
        entries, truncated = await _entries(call, marker, prefix, delimiter, limit)
    root = xml.Element("ListVersionsResult")
    xml.sub(root, "Name", call.bucket)
    xml.sub(root, "Prefix", encode(prefix))
    xml.sub(root, "KeyMarker", encode(marker))
    xml.sub(root, "VersionIdMarker", params.get("version-id-marker", ""))
    if truncated and entries:
        xml.sub(root, "NextKeyMarker", encode(_name(entries[-1])))
        xml.sub(root, "NextVersionIdMarker", entries[-1].get("version_id") or "null")
    xml.sub(root, "MaxKeys", limit)
    if "delimiter" in params:
        xml.sub(root, "Delimiter", encode(delimiter))
    if "encoding-type" in params:
        xml.sub(root, "EncodingType", "url")
    xml.sub(root, "IsTruncated", "true" if truncated else "false")
    for entry in entries:
        if "subdir" in entry:
            continue
        marker_row = entry.get("content_type") == versioning.MARKER_TYPE
        version = xml.sub(root, "DeleteMarker" if marker_row else "Version")
        xml.sub(version, "Key", encode(entry["name"]))
        xml.sub(version, "VersionId", entry.get("version_id") or "null")
        xml.sub(version, "IsLatest", "true" if entry.get("is_latest", True) else "false")
        xml.sub(version, "LastModified", iso_from_swift(entry.get("last_modified")))
        if not marker_row:
            xml.sub(version, "ETag", listed_etag(entry))
            xml.sub(version, "Size", entry.get("bytes", 0))
        owner(version, call.user.access_key)
        if not marker_row:
            xml.sub(version, "StorageClass", "STANDARD")
    for entry in entries:
        if "subdir" in entry:
            xml.sub(xml.sub(root, "CommonPrefixes"), "Prefix", encode(entry["subdir"]))
    return xml_response(200, xml.dumps(root))


# -- multi-delete ---------------------------------------------------------------------------


def _check_digests(call: S3Call) -> None:
    """DeleteObjects must carry Content-MD5 (or a checksum); `S3Call.read_body` checks the body against it."""
    headers = call.request.headers
    if "Content-MD5" not in headers and not headers.with_prefix("x-amz-checksum-"):
        raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")


def _parse_delete(body: bytes, maximum: int) -> tuple[bool, list[tuple[str, str | None]]]:
    root = xml_body(body, "Delete")
    quiet = (xml.text_of(root, "Quiet") or "").strip().lower() == "true"
    objects = []
    for element in root.findall("Object"):
        key = xml.text_of(element, "Key")
        if key is None:
            raise S3Error("MalformedXML")
        if not key:
            raise S3Error("UserKeyMustBeSpecified")
        objects.append((key, xml.text_of(element, "VersionId")))
    if not objects or len(objects) > maximum:
        raise S3Error("MalformedXML")
    return quiet, objects


async def multi_delete(call: S3Call):
    maximum = call.settings.max_multi_delete_objects
    _check_digests(call)
    body = await call.read_body(max(call.settings.max_xml_body, maximum * 2200 + 1024))
    quiet, objects = _parse_delete(body, maximum)
    await require_bucket(call)
    gate = DeferredSemaphore(DELETE_CONCURRENCY)

    async def delete_one(key: str, version: str | None) -> tuple[str, str | None, S3Error | None]:
        if len(key.encode("utf-8")) > call.settings.max_object_name_length:
            return key, version, S3Error("KeyTooLongError")
        response = await call.swift("DELETE", call.bucket, key, query=versioning.version_query(version))
        response.discard_body()
        if response.status // 100 == 2 or response.status == 404:
            return key, version, None
        return key, version, swift_error(response, key=True)

    results = await gatherResults([gate.run(lambda k=k, v=v: ensureDeferred(delete_one(k, v)))
                                   for k, v in objects], consumeErrors=True)
    root = xml.Element("DeleteResult")
    for key, version, error in results:
        if error is None:
            if not quiet:
                deleted = xml.sub(root, "Deleted")
                xml.sub(deleted, "Key", key)
                if version is not None:
                    xml.sub(deleted, "VersionId", version)
        else:
            failed = xml.sub(root, "Error")
            xml.sub(failed, "Key", key)
            xml.sub(failed, "Code", error.code)
            xml.sub(failed, "Message", error.message)
    return xml_response(200, xml.dumps(root))
