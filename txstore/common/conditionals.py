# -*- test-case-name: txstore.test.unit.test_conditionals -*-
"""
Conditional requests (RFC 9110 §13): which of 200, 304 or 412 an existing object answers.

Every condition sent is checked, as Swift checks them (RFC 9110 lets If-Match silence
If-Unmodified-Since and If-None-Match silence If-Modified-Since; Swift's clients and functional
tests expect a 412 for a matching ETag modified since): If-Match, If-Unmodified-Since,
If-None-Match, then If-Modified-Since (only for GET/HEAD); the first that fails answers.
ETags compare strongly, quotes ignored, as Swift's ETags are plain md5 hex.
"""

from __future__ import annotations

from txstore.common.timestamps import parse_http_date


def _etags(header: str) -> list[str]:
    return [tag.strip().removeprefix("W/").strip('"') for tag in header.split(",") if tag.strip()]


def _matches(header: str, etag: str | None) -> bool:
    tags = _etags(header)
    if "*" in tags:
        return etag is not None
    return etag is not None and etag.strip('"') in tags


def evaluate(
    method: str,
    *,
    etag: str | None,
    last_modified: int | None,
    if_match: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
    if_unmodified_since: str | None = None,
) -> int:
    """
    200 to go on, or 304/412. ``etag`` None means the object does not exist (so ``If-Match``
    fails and ``If-None-Match: *`` passes); ``last_modified`` is whole seconds since the epoch.
    """
    if if_match is not None and not _matches(if_match, etag):
        return 412
    if if_unmodified_since is not None and last_modified is not None:
        since = parse_http_date(if_unmodified_since)
        if since is not None and last_modified > since:
            return 412
    if if_none_match is not None and _matches(if_none_match, etag):
        return 304 if method in ("GET", "HEAD") else 412
    if if_modified_since is not None and last_modified is not None and method in ("GET", "HEAD"):
        since = parse_http_date(if_modified_since)
        if since is not None and last_modified <= since:
            return 304
    return 200
