# -*- test-case-name: txstore.test.unit.test_s3_signatures -*-
"""
AWS Signature Version 2 (``Authorization: AWS <access key>:<signature>`` and the query form
``AWSAccessKeyId``/``Signature``/``Expires``), still sent by older clients (boto 2, s3cmd):
base64 of an HMAC-SHA1 of::

    METHOD \\n Content-MD5 \\n Content-Type \\n Date (Expires for the query form) \\n
    x-amz-* headers (lower-case names, sorted, ``name:value\\n``) + resource

The resource is ``/<bucket>`` (when the bucket was in the Host) + the path as sent + the
sub-resources of the query S3 signs (``?acl``, ``?uploadId=…``, ``response-*``), sorted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import unquote

# The query parameters that are part of the signed resource (the S3 developer guide's list).
SUB_RESOURCES = frozenset({
    "acl", "cors", "delete", "lifecycle", "location", "logging", "notification", "partNumber", "policy",
    "requestPayment", "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires", "restore", "tagging", "torrent",
    "uploadId", "uploads", "versionId", "versioning", "versions", "website",
})


def canonical_resource(raw_path: str, raw_query: str, bucket_in_host: str | None = None) -> str:
    resource = (f"/{bucket_in_host}" if bucket_in_host else "") + (raw_path or "/")
    kept = []
    for part in raw_query.split("&"):
        name, eq, value = part.partition("=")
        name = unquote(name)
        if name in SUB_RESOURCES:
            kept.append((name, f"{name}={unquote(value)}" if eq else name))
    if kept:
        resource += "?" + "&".join(text for _name, text in sorted(kept))
    return resource


def amz_headers(headers) -> str:
    found: dict[str, list[str]] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("x-amz-"):
            found.setdefault(lowered, []).append(" ".join(value.split()))
    return "".join(f"{name}:{','.join(found[name])}\n" for name in sorted(found))


def string_to_sign(method: str, headers, raw_path: str, raw_query: str, date: str,
                   bucket_in_host: str | None = None) -> bytes:
    """``date`` is the Date header ("" when x-amz-date is sent) or the query form's Expires."""
    text = "\n".join((method, headers.get("Content-MD5") or "", headers.get("Content-Type") or "", date, ""))
    text += amz_headers(headers) + canonical_resource(raw_path, raw_query, bucket_in_host)
    return text.encode("latin-1", "replace")


def signature(secret: str, to_sign: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode("utf-8"), to_sign, hashlib.sha1).digest()).decode("ascii")
