# -*- test-case-name: txstore.test.integration.test_s3_integration -*-
"""
Multipart uploads, as Swift's s3api stores them: parts are segments, completion is a static
large object.

- Create (``POST ?uploads``): a zero-byte marker ``<bucket>+segments/<key>/<upload id>`` holds
  what the object will carry (Content-Type, ``x-amz-meta-*``) until completion; the segments
  container is made on the way.
- UploadPart (``PUT ?partNumber=N&uploadId=…``): the body streams to
  ``<bucket>+segments/<key>/<upload id>/<N>`` as any PUT does (Content-MD5 and the payload hash
  checked while it passes); its ETag is the part's md5.
- ListParts, ListMultipartUploads: container listings of the segments container.
- Complete (``POST ?uploadId=…``): the listed parts, in ascending order, each matching an
  uploaded part's ETag and all but the last at least ``min_segment_size``, become an SLO
  manifest PUT at ``<bucket>/<key>`` (slo checks each segment again), with S3's ETag (the md5
  of the parts' binary md5s, ``-<count>``) kept as sysmeta and in the listing; the marker goes.
  The parts stay: they are the object's bytes. Deleting the object over S3 deletes them too.
- Abort (``DELETE ?uploadId=…``): the parts and the marker are deleted.

Upload ids always hold a letter, so a marker (``…/<id>``) is never mistaken for a part
(``…/<id>/<digits>``).
"""

from __future__ import annotations

import json
import secrets
from hashlib import md5
from urllib.parse import quote, urlencode

from txstore.proxy.messages import BytesSource
from txstore.s3 import xmlio as xml
from txstore.s3.bucket import check_canned_acl, require_bucket
from txstore.s3.calls import S3Call, json_of, swift_error, xml_body, xml_response
from txstore.s3.errors import S3Error
from txstore.s3.listing import iso_from_http, iso_from_swift, owner, quoted_etag
from txstore.s3.versioning import version_query
from txstore.s3.obj import (
    COPY_CONDITIONALS, ETAG_IS_AT, MULTIPART_ETAG_HEADER, STORED, copy_source, metadata, put_body, put_conditions,
)

SEGMENTS_SUFFIX = "+segments"
S3_ETAG = "X-Object-Sysmeta-S3api-Etag"
UPLOAD_ID = "X-Object-Sysmeta-S3api-Upload-Id"
LISTING_ETAG = "X-Object-Sysmeta-Container-Update-Override-Etag"
MAX_PART_NUMBER = 10000
PAGE = 10000


def segments_of(bucket: str) -> str:
    return bucket + SEGMENTS_SUFFIX


def new_upload_id() -> str:
    return "u" + secrets.token_urlsafe(24).replace("-", "A").replace("_", "B")


def _upload_id(call: S3Call) -> str:
    upload_id = call.params.get("uploadId", "")
    if not upload_id or "/" in upload_id or upload_id.isdigit():
        raise S3Error("NoSuchUpload", UploadId=upload_id)
    return upload_id


async def _marker(call: S3Call, upload_id: str):
    """The upload's marker (its headers); NoSuchUpload when it is gone (or NoSuchBucket)."""
    response = await call.swift("HEAD", segments_of(call.bucket), f"{call.key}/{upload_id}")
    response.discard_body()
    if response.status // 100 == 2:
        return response.headers
    if response.status == 404:
        await require_bucket(call)
        raise S3Error("NoSuchUpload", UploadId=upload_id)
    raise swift_error(response)


async def create(call: S3Call):
    check_canned_acl(call)
    await require_bucket(call)
    response = await call.swift("PUT", segments_of(call.bucket))
    response.discard_body()
    if response.status not in (201, 202):
        raise swift_error(response, bucket=True)
    upload_id = new_upload_id()
    headers = {name: call.request.header(name) for name in STORED if call.request.header(name) is not None}
    headers.update(metadata(call))
    headers.setdefault("Content-Type", "application/octet-stream")
    headers.update({"Content-Length": "0", UPLOAD_ID: upload_id})
    response = await call.swift("PUT", segments_of(call.bucket), f"{call.key}/{upload_id}", headers=headers)
    response.discard_body()
    if response.status != 201:
        raise swift_error(response, key=True)
    root = xml.Element("InitiateMultipartUploadResult")
    xml.sub(root, "Bucket", call.bucket)
    xml.sub(root, "Key", call.key)
    xml.sub(root, "UploadId", upload_id)
    return xml_response(200, xml.dumps(root))


def _part_number(call: S3Call) -> int:
    value = call.params.get("partNumber", "")
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, "
                                         "inclusive", ArgumentName="partNumber", ArgumentValue=value)
    return number


async def upload_part(call: S3Call):
    number = _part_number(call)
    upload_id = _upload_id(call)
    await _marker(call, upload_id)
    part = f"{call.key}/{upload_id}/{number}"
    if "x-amz-copy-source" in call.request.headers:
        return await copy_part(call, part)
    return await put_body(call, segments_of(call.bucket), part, {})


RANGE_FORM = ("The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are "
              "the zero-based offsets of the first and last bytes to copy")


def _copy_range(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    unit, _, span = value.strip().partition("=")
    first, dash, last = span.partition("-")
    if unit != "bytes" or not dash or not first.isdigit() or not last.isdigit() or int(first) > int(last):
        raise S3Error("InvalidArgument", RANGE_FORM, ArgumentName="x-amz-copy-source-range", ArgumentValue=value)
    return int(first), int(last)


async def copy_part(call: S3Call, part: str):
    """UploadPartCopy: the source (or its range) read by a GET and streamed into the part."""
    request = call.request
    bucket, key, version = copy_source(request.header("x-amz-copy-source"))
    span = _copy_range(request.header("x-amz-copy-source-range"))
    request.discard_body()
    headers = {header: request.header(name) for name, header in COPY_CONDITIONALS.items()
               if request.header(name) is not None}
    if headers:
        headers[ETAG_IS_AT] = MULTIPART_ETAG_HEADER  # a multipart source's conditions are on S3's ETag
    if span is not None:
        headers["Range"] = f"bytes={span[0]}-{span[1]}"
    source = await call.swift("GET", bucket, key, headers=headers, query=version_query(version))
    if source.status in (304, 412):
        source.discard_body()
        raise S3Error("PreconditionFailed")
    if source.status == 416:
        source.discard_body()
        raise S3Error("InvalidRequest", "Range specified is not valid for source object")
    if source.status == 404:
        source.discard_body()
        missing = await call.swift("HEAD", bucket)
        missing.discard_body()
        raise S3Error("NoSuchBucket", BucketName=bucket) if missing.status == 404 else S3Error("NoSuchKey", Key=key)
    if source.status not in (200, 206) or (span is not None and source.status != 206):
        raise swift_error(source, key=True)
    length = source.headers.get("Content-Length")
    put_headers = {"Content-Length": length} if length is not None else {"Transfer-Encoding": "chunked"}
    response = await call.swift("PUT", segments_of(call.bucket), part, headers=put_headers,
                                body=source.body_source())
    response.discard_body()
    if response.status != 201:
        source.discard_body()
        raise swift_error(response, key=True)
    root = xml.Element("CopyPartResult")
    xml.sub(root, "LastModified", iso_from_http(response.headers.get("Last-Modified")))
    xml.sub(root, "ETag", quoted_etag(response.headers.get("ETag")))
    return xml_response(200, xml.dumps(root))


async def _segment_rows(call: S3Call, prefix: str):
    """The bucket's segments container's listing rows under ``prefix``, page by page (none if it is missing)."""
    marker = ""
    while True:
        query = urlencode({"format": "json", "prefix": prefix, "marker": marker, "limit": PAGE})
        response = await call.swift("GET", segments_of(call.bucket), query=query)
        if response.status != 200:
            response.discard_body()
            return
        page = await json_of(response)
        for entry in page:
            yield entry
        if len(page) < PAGE:
            return
        marker = page[-1]["name"]


async def _parts(call: S3Call, upload_id: str, after: int = 0, limit: int | None = None) -> list[dict]:
    """The uploaded parts (listing rows with ``number``) after part ``after``, in order."""
    prefix = f"{call.key}/{upload_id}/"
    found: list[dict] = []
    async for entry in _segment_rows(call, prefix):
        tail = entry["name"][len(prefix):]
        if tail.isdigit() and int(tail) > after:
            found.append({**entry, "number": int(tail)})
    found.sort(key=lambda e: e["number"])
    return found if limit is None else found[:limit + 1]


async def list_parts(call: S3Call):
    upload_id = _upload_id(call)
    await _marker(call, upload_id)
    params = call.params
    try:
        after = int(params.get("part-number-marker", "0") or 0)
        maximum = int(params.get("max-parts", "1000"))
    except ValueError:
        raise S3Error("InvalidArgument", "max-parts and part-number-marker must be integers") from None
    if after < 0 or maximum < 0:
        raise S3Error("InvalidArgument", "max-parts and part-number-marker must not be negative")
    maximum = min(maximum, 1000)
    parts = await _parts(call, upload_id, after, maximum)
    truncated = len(parts) > maximum
    parts = parts[:maximum]
    root = xml.Element("ListPartsResult")
    xml.sub(root, "Bucket", call.bucket)
    xml.sub(root, "Key", call.key)
    xml.sub(root, "UploadId", upload_id)
    owner(root, call.user.access_key, "Initiator")
    owner(root, call.user.access_key)
    xml.sub(root, "StorageClass", "STANDARD")
    xml.sub(root, "PartNumberMarker", after)
    xml.sub(root, "NextPartNumberMarker", parts[-1]["number"] if parts else after)
    xml.sub(root, "MaxParts", maximum)
    xml.sub(root, "IsTruncated", "true" if truncated else "false")
    for part in parts:
        element = xml.sub(root, "Part")
        xml.sub(element, "PartNumber", part["number"])
        xml.sub(element, "LastModified", iso_from_swift(part.get("last_modified")))
        xml.sub(element, "ETag", quoted_etag(part.get("hash")))
        xml.sub(element, "Size", part.get("bytes", 0))
    return xml_response(200, xml.dumps(root))


async def abort(call: S3Call):
    upload_id = _upload_id(call)
    await _marker(call, upload_id)
    for part in await _parts(call, upload_id):
        response = await call.swift("DELETE", segments_of(call.bucket), part["name"])
        response.discard_body()
    response = await call.swift("DELETE", segments_of(call.bucket), f"{call.key}/{upload_id}")
    response.discard_body()
    answer = xml_response(204, b"")
    answer.headers["Content-Type"] = "text/html; charset=UTF-8"  # as Swift's s3api answers it
    return answer


def _parse_complete(body: bytes) -> list[tuple[int, str]]:
    root = xml_body(body, "CompleteMultipartUpload")
    listed = []
    for element in root.findall("Part"):
        number, etag = xml.text_of(element, "PartNumber"), xml.text_of(element, "ETag")
        if number is None or etag is None or not number.strip().isdigit():
            raise S3Error("MalformedXML")
        listed.append((int(number), etag.strip().strip('"')))
    if not listed:
        raise S3Error("MalformedXML")
    return listed


async def complete(call: S3Call):
    upload_id = _upload_id(call)
    marker = await _marker(call, upload_id)
    conditions = put_conditions(call)
    listed = _parse_complete(await call.read_body())
    numbers = [number for number, _etag in listed]
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. Parts must be ordered by "
                                          "part number.", status=400, UploadId=upload_id)
    uploaded = {part["number"]: part for part in await _parts(call, upload_id)}
    manifest, digests = [], []
    for index, (number, etag) in enumerate(listed):
        part = uploaded.get(number)
        if part is None or part.get("hash") != etag:
            raise S3Error("InvalidPart", "One or more of the specified parts could not be found. The part may not "
                                         "have been uploaded, or the specified entity tag may not match the part's "
                                         "entity tag.", status=400, UploadId=upload_id, PartNumber=number, ETag=etag)
        if index < len(listed) - 1 and part["bytes"] < call.settings.min_segment_size:
            raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.",
                          status=400, ProposedSize=part["bytes"], MinSizeAllowed=call.settings.min_segment_size,
                          PartNumber=number, ETag=etag)
        digests.append(bytes.fromhex(etag))
        if part["bytes"] == 0 and len(listed) > 1:
            continue  # a zero-byte last part adds nothing (slo takes no empty segment)
        manifest.append({"path": f"/{segments_of(call.bucket)}/{part['name']}", "etag": etag,
                         "size_bytes": part["bytes"]})
    s3_etag = f"{md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(listed)}"
    headers = {name: value for name, value in marker.items()
               if name.lower().startswith("x-object-meta-") or name.lower() in ("content-type", "content-encoding",
                                                                                "content-disposition",
                                                                                "content-language", "cache-control",
                                                                                "expires")}
    headers.update(conditions)
    if len(listed) == 1 and uploaded[listed[0][0]]["bytes"] == 0:
        # one empty part: an empty object (slo takes no empty segment), with S3's ETag still
        body, query = b"", ""
        headers[LISTING_ETAG] = f"{md5(b'', usedforsecurity=False).hexdigest()}; s3_etag={s3_etag}"
    else:
        body, query = json.dumps(manifest).encode("utf-8"), "multipart-manifest=put"
        headers[LISTING_ETAG] = f"{s3_etag}; s3_etag={s3_etag}"
    headers.update({S3_ETAG: s3_etag, "Content-Length": str(len(body))})
    response = await call.swift("PUT", call.bucket, call.key, headers=headers, query=query, body=BytesSource(body))
    reason = response.body.decode("utf-8", "replace") if isinstance(response.body, bytes) else ""
    response.discard_body()
    if response.status == 412:
        raise S3Error("PreconditionFailed")
    if response.status != 201:
        if response.status == 400:
            raise S3Error("InvalidPart", reason.strip() or None, UploadId=upload_id)
        raise swift_error(response, key=True)
    used = {entry["path"] for entry in manifest} if query else set()
    for number, _etag in listed:  # parts the object does not use (empty ones), then the marker
        name = uploaded[number]["name"]
        if f"/{segments_of(call.bucket)}/{name}" not in used:
            gone = await call.swift("DELETE", segments_of(call.bucket), name)
            gone.discard_body()
    gone = await call.swift("DELETE", segments_of(call.bucket), f"{call.key}/{upload_id}")
    gone.discard_body()
    root = xml.Element("CompleteMultipartUploadResult")
    xml.sub(root, "Location", f"{call.request.scheme}://{call.request.host}/{quote(call.bucket)}/{quote(call.key)}")
    xml.sub(root, "Bucket", call.bucket)
    xml.sub(root, "Key", call.key)
    xml.sub(root, "ETag", f'"{s3_etag}"')
    return xml_response(200, xml.dumps(root))


async def list_uploads(call: S3Call):
    """The markers of the segments container (not the parts), by key then upload id."""
    await require_bucket(call)
    params = call.params
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
    key_marker, id_marker = params.get("key-marker", ""), params.get("upload-id-marker", "")
    try:
        maximum = min(int(params.get("max-uploads", "1000")), 1000)
    except ValueError:
        raise S3Error("InvalidArgument", "max-uploads must be an integer", ArgumentName="max-uploads") from None
    if maximum < 0:
        raise S3Error("InvalidArgument", "max-uploads must not be negative", ArgumentName="max-uploads")
    uploads: list[tuple[str, str, dict]] = []
    prefixes: list[str] = []
    async for entry in _segment_rows(call, prefix):
        key, _, upload_id = entry["name"].rpartition("/")
        if not key or upload_id.isdigit() or not upload_id.startswith("u"):
            continue
        if key_marker and ((key, upload_id) <= (key_marker, id_marker) if id_marker else key <= key_marker):
            continue
        if delimiter and delimiter in key[len(prefix):]:
            common = key[:len(prefix) + key[len(prefix):].index(delimiter) + len(delimiter)]
            if common not in prefixes:
                prefixes.append(common)
            continue
        uploads.append((key, upload_id, entry))
    uploads.sort(key=lambda u: (u[0], u[2].get("last_modified", "")))
    truncated = len(uploads) > maximum
    uploads = uploads[:maximum]
    root = xml.Element("ListMultipartUploadsResult")
    xml.sub(root, "Bucket", call.bucket)
    xml.sub(root, "KeyMarker", key_marker)
    xml.sub(root, "UploadIdMarker", id_marker)
    xml.sub(root, "NextKeyMarker", uploads[-1][0] if uploads else "")
    xml.sub(root, "NextUploadIdMarker", uploads[-1][1] if uploads else "")
    if "prefix" in params:
        xml.sub(root, "Prefix", prefix)
    if "delimiter" in params:
        xml.sub(root, "Delimiter", delimiter)
    xml.sub(root, "MaxUploads", maximum)
    xml.sub(root, "IsTruncated", "true" if truncated else "false")
    for key, upload_id, entry in uploads:
        element = xml.sub(root, "Upload")
        xml.sub(element, "Key", key)
        xml.sub(element, "UploadId", upload_id)
        owner(element, call.user.access_key, "Initiator")
        owner(element, call.user.access_key)
        xml.sub(element, "StorageClass", "STANDARD")
        xml.sub(element, "Initiated", iso_from_swift(entry.get("last_modified")))
    for common in prefixes:
        xml.sub(xml.sub(root, "CommonPrefixes"), "Prefix", common)
    return xml_response(200, xml.dumps(root))
