# -*- test-case-name: txstore.test.unit.test_s3_xml -*-
"""
Pieces of S3's XML documents that several answers share: dates as S3 writes them, ETags in
quotes, the owner, the canned ``private`` ACL.
"""

from __future__ import annotations

from calendar import timegm
from email.utils import mktime_tz, parsedate_tz
from time import gmtime, strftime, strptime

from txstore.s3 import xmlio as xml

EPOCH_ISO = "1970-01-01T00:00:00.000Z"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def iso_from_swift(value: str | None) -> str:
    """
    A Swift listing's ``2024-05-01T12:34:56.123456`` as S3 writes it, ``2024-05-01T12:34:57.000Z``:
    rounded up to the second, so a listing agrees with the object's ``Last-Modified`` (whole
    seconds, rounded up by the proxy as Swift's is), which clients compare.
    """
    if not value:
        return EPOCH_ISO
    seconds, _, fraction = value.rstrip("Z").partition(".")
    try:
        whole = timegm(strptime(seconds, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return EPOCH_ISO
    if fraction.strip("0"):
        whole += 1
    return strftime("%Y-%m-%dT%H:%M:%S.000Z", gmtime(whole))


def iso_from_http(value: str | None) -> str:
    """An HTTP date (``Last-Modified``) as S3's ISO 8601 with milliseconds."""
    parsed = parsedate_tz(value) if value else None
    if parsed is None:
        return EPOCH_ISO
    return strftime("%Y-%m-%dT%H:%M:%S.000Z", gmtime(mktime_tz(parsed)))


def quoted_etag(value: str | None) -> str:
    value = (value or "").strip()
    return value if value.startswith('"') else f'"{value}"'


def owner(parent, user_name: str, tag: str = "Owner"):
    element = xml.sub(parent, tag)
    xml.sub(element, "ID", user_name)
    xml.sub(element, "DisplayName", user_name)
    return element


def private_acl(user_name: str, public_read: bool = False) -> bytes:
    """The owner's FULL_CONTROL; with ``public_read`` everyone's READ too (``public-read``)."""
    root = xml.Element("AccessControlPolicy")
    owner(root, user_name)
    grants = xml.sub(root, "AccessControlList")
    grant = xml.sub(grants, "Grant")
    grantee = xml.sub(grant, "Grantee")
    grantee.set("xmlns:xsi", XSI)
    grantee.set("xsi:type", "CanonicalUser")
    xml.sub(grantee, "ID", user_name)
    xml.sub(grantee, "DisplayName", user_name)
    xml.sub(grant, "Permission", "FULL_CONTROL")
    if public_read:
        grant = xml.sub(grants, "Grant")
        grantee = xml.sub(grant, "Grantee")
        grantee.set("xmlns:xsi", XSI)
        grantee.set("xsi:type", "Group")
        xml.sub(grantee, "URI", ALL_USERS)
        xml.sub(grant, "Permission", "READ")
    return xml.dumps(root)
