# -*- test-case-name: txstore.test.integration.test_s3_integration -*-
"""
Bucket versioning over Swift's object versioning (``X-Versions-Enabled``, the
``object_versioning`` part of the versioned_writes filter): S3's Enabled and Suspended are the
container's flag, a version id is Swift's (a timestamp), ``null`` the object written while
versioning was off or never on, a delete marker Swift's (``application/x-deleted;…``).

Objects carry their version ids both ways (``x-amz-version-id`` ⇄ ``X-Object-Version-Id``,
``?versionId=`` ⇄ ``?version-id=``: `version_query`); ListObjectVersions of a bucket that has
been versioned is Swift's ``?versions`` listing, and of one never versioned its objects, each
its one ``null`` version (`txstore.s3.bucket.list_versions`).
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from txstore.s3 import xmlio as xml
from txstore.s3.calls import S3Call, json_of, swift_error, xml_body, xml_response
from txstore.s3.errors import S3Error

ENABLED = "X-Versions-Enabled"
MARKER_TYPE = "application/x-deleted;swift_versions_deleted=1"
VERSION_ID = "X-Object-Version-Id"


def version_query(version: str | None) -> str:
    """Swift's query for S3's ``versionId`` (none: the current version)."""
    return "" if version is None else f"version-id={quote(version, safe='')}"


async def bucket_state(call: S3Call) -> str | None:
    """``Enabled``, ``Suspended``, or None for a bucket never versioned."""
    response = await call.swift("HEAD", call.bucket)
    response.discard_body()
    if response.status // 100 != 2:
        raise swift_error(response, bucket=True)
    value = response.headers.get(ENABLED)
    if value is None:
        return None
    return "Enabled" if value.strip().lower() in ("true", "1", "yes", "on") else "Suspended"


async def get_config(call: S3Call):
    root = xml.Element("VersioningConfiguration")
    state = await bucket_state(call)
    if state is not None:
        xml.sub(root, "Status", state)
    return xml_response(200, xml.dumps(root))


async def put_config(call: S3Call):
    body = await call.read_body()
    root = xml_body(body, "VersioningConfiguration")
    status = xml.text_of(root, "Status")
    if status not in ("Enabled", "Suspended"):
        raise S3Error("MalformedXML")
    if (xml.text_of(root, "MfaDelete") or "Disabled") != "Disabled":
        raise S3Error("NotImplemented", "MFA delete is not implemented")
    response = await call.swift("POST", call.bucket, headers={ENABLED: "true" if status == "Enabled" else "false"})
    reason = response.body.decode("utf-8", "replace").strip() if isinstance(response.body, bytes) else ""
    response.discard_body()
    if response.status // 100 == 2:
        return xml_response(200, b"")
    if response.status == 400:
        raise S3Error("InvalidBucketState", reason or "versioning cannot be enabled on this bucket", status=409)
    raise swift_error(response, bucket=True)


async def versions_page(call: S3Call, prefix: str, delimiter: str, key_marker: str, version_marker: str,
                        limit: int) -> tuple[list[dict], bool]:
    """Up to ``limit`` rows of Swift's ``?versions`` listing after the markers, and whether more follow."""
    query = {"format": "json", "versions": "", "prefix": prefix, "limit": str(limit + 1), "marker": key_marker}
    if version_marker and key_marker:
        query["version_marker"] = version_marker
    if delimiter:
        query["delimiter"] = delimiter
    response = await call.swift("GET", call.bucket, query=urlencode(query))
    if response.status != 200:
        if response.status == 204:
            response.discard_body()
            return [], False
        raise swift_error(response, bucket=True)
    rows = await json_of(response)
    return rows[:limit], len(rows) > limit
