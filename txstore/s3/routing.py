# -*- test-case-name: txstore.test.unit.test_s3_routing -*-
"""
Which bucket and key an S3 request names, and which operation it is.

Path style (``/bucket/key``) and virtual-hosted style (``bucket.<storage_domain>/key``, with
``storage_domain`` set) both name them; the key is everything after the bucket's slash, as sent
(``a//b``, ``dir/``), percent-decoded as UTF-8. Bucket names follow AWS's DNS-compatible rules
(3 to 63 characters of lower-case letters, digits, ``.`` and ``-``, starting and ending with a
letter or digit, not an IP address).

An operation is picked by method, by whether a bucket and a key are named, and by the
sub-resource in the query (``?acl``, ``?uploads``, ``?delete``…). What is not built is
`NOT_IMPLEMENTED`'s 501, never passed on as a plain request that would do something else.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from txstore.s3.errors import S3Error

BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
LOOSE_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")
IP_LIKE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# Sub-resources of buckets and objects that are not built: refused, not treated as plain requests.
NOT_IMPLEMENTED = frozenset({
    "accelerate", "analytics", "cors", "encryption", "intelligent-tiering", "inventory", "lifecycle", "logging",
    "metrics", "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
    "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "legal-hold", "select",
    "tagging", "torrent", "website", "attributes", "uploadId", "uploads", "partNumber",
})


def valid_bucket(name: str, dns_compliant: bool = True) -> bool:
    if dns_compliant:
        return bool(BUCKET.match(name)) and ".." not in name and ".-" not in name and "-." not in name \
            and not IP_LIKE.match(name)
    return bool(LOOSE_BUCKET.match(name))


def bucket_in_host(host: str, storage_domains: tuple[str, ...]) -> str | None:
    """The bucket a virtual-hosted request names in its Host (``b.s3.example.com``), else None."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.lower()
    for domain in storage_domains:
        suffix = "." + domain.lower().lstrip(".")
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return None


def locate(raw_path: str, host_bucket: str | None) -> tuple[str | None, str | None]:
    """(bucket, key) of a request; `S3Error` InvalidURI when the path is not UTF-8."""
    try:
        path = unquote_to_bytes(raw_path.encode("latin-1")).decode("utf-8")
    except (UnicodeError, ValueError):
        raise S3Error("InvalidURI") from None
    if "\x00" in path:
        raise S3Error("InvalidURI")
    if not path.startswith("/"):
        raise S3Error("InvalidURI")
    if host_bucket is not None:
        key = path[1:]
        return host_bucket, key or None
    rest = path[1:]
    if not rest:
        return None, None
    bucket, slash, key = rest.partition("/")
    return bucket, key if slash and key else None


def operation(method: str, bucket: str | None, key: str | None, params: dict[str, str]) -> str:
    """The handler's name (``bucket.list``, ``object.put``…); `S3Error` for what is not served."""
    if bucket is None:
        if method in ("GET", "HEAD"):
            return "service.list"
        raise S3Error("MethodNotAllowed", ResourceType="SERVICE", Method=method,
                      headers={"Allow": "GET, HEAD"})
    if key is None:
        return _bucket_operation(method, params)
    return _object_operation(method, params)


def _refuse(params: dict[str, str], allowed: frozenset[str] = frozenset()) -> None:
    for name in params:
        if name in NOT_IMPLEMENTED and name not in allowed:
            raise S3Error("NotImplemented", f"the {name!r} sub-resource is not implemented")


def _bucket_operation(method: str, params: dict[str, str]) -> str:
    if method == "GET" and "uploads" in params:
        return "multipart.list_uploads"
    if "object-lock" in params:
        if method == "GET":
            return "bucket.object_lock"
        raise S3Error("NotImplemented", "The requested resource is not implemented")
    _refuse(params)
    if method == "GET":
        for name in ("location", "versioning", "versions", "acl"):
            if name in params:
                return f"bucket.{name}"
        if params.get("list-type") == "2":
            return "bucket.list_v2"
        if "list-type" in params:
            raise S3Error("InvalidArgument", "Invalid list type", ArgumentName="list-type",
                          ArgumentValue=params["list-type"])
        return "bucket.list"
    if method == "HEAD":
        return "bucket.head"
    if method == "PUT":
        if "acl" in params:
            return "bucket.put_acl"
        if "versioning" in params:
            return "bucket.put_versioning"
        return "bucket.create"
    if method == "DELETE":
        return "bucket.delete"
    if method == "POST" and "delete" in params:
        return "bucket.multi_delete"
    raise S3Error("MethodNotAllowed", ResourceType="BUCKET", Method=method)


MULTIPART = {("POST", "uploads"): "multipart.create", ("PUT", "uploadId"): "multipart.upload_part",
             ("GET", "uploadId"): "multipart.list_parts", ("POST", "uploadId"): "multipart.complete",
             ("DELETE", "uploadId"): "multipart.abort"}


def _object_operation(method: str, params: dict[str, str]) -> str:
    for name in ("uploadId", "uploads"):
        if name in params:
            found = MULTIPART.get((method, name))
            if found is None:
                raise S3Error("MethodNotAllowed", ResourceType="UPLOAD", Method=method)
            return found
    _refuse(params, frozenset({"partNumber"}) if method in ("GET", "HEAD") else frozenset())
    if "acl" in params:
        if method == "GET":
            return "object.acl"
        if method == "PUT":
            return "object.put_acl"
    if method in ("GET", "HEAD"):
        return "object.get"
    if method == "PUT":
        return "object.put"
    if method == "DELETE":
        return "object.delete"
    raise S3Error("MethodNotAllowed", ResourceType="OBJECT", Method=method)
