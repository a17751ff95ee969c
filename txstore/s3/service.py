# -*- test-case-name: txstore.test.unit.test_s3_middleware -*-
"""ListBuckets: the containers of the user's account, as S3 buckets."""

from __future__ import annotations

from urllib.parse import urlencode

from txstore.s3 import xmlio as xml
from txstore.s3.calls import S3Call, json_of, swift_error, xml_response
from txstore.s3.listing import iso_from_swift, owner

PAGE = 10000


async def list_buckets(call: S3Call):
    root = xml.Element("ListAllMyBucketsResult")
    owner(root, call.user.access_key)
    buckets = xml.sub(root, "Buckets")
    marker = ""
    while True:
        response = await call.swift("GET", query=urlencode({"format": "json", "limit": PAGE, "marker": marker}))
        if response.status == 404:  # the account is made by its first bucket
            response.discard_body()
            break
        if response.status == 204:
            response.discard_body()
            break
        if response.status != 200:
            raise swift_error(response)
        page = await json_of(response)
        for entry in page:
            if entry["name"].endswith("+segments"):  # multipart uploads' parts (txstore.s3.multipart)
                continue
            bucket = xml.sub(buckets, "Bucket")
            xml.sub(bucket, "Name", entry["name"])
            xml.sub(bucket, "CreationDate", iso_from_swift(entry.get("last_modified")))
        if len(page) < PAGE:
            break
        marker = page[-1]["name"]
    return xml_response(200, xml.dumps(root))
