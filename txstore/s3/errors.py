# -*- test-case-name: txstore.test.unit.test_s3_xml -*-
"""
S3's errors: a code, the HTTP status AWS gives it, and the XML body clients parse
(``<Error><Code/><Message/><Resource/><RequestId/>…</Error>``).

Handlers raise `S3Error`; the middleware turns it into a response once, with the request's
resource and transaction id, so no handler builds error XML itself.
"""

from __future__ import annotations

from typing import Any

from txstore.s3 import xmlio as xml

# code -> (status, default message), as AWS documents them ("Error responses", S3 API reference)
CODES: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied."),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (400, "The authorization query parameters are malformed."),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (409, "The requested bucket name is not available. The bucket namespace is shared by "
                                 "all users of the system. Please select a different name and try again."),
    "BucketAlreadyOwnedByYou": (409, "Your previous request to create the named bucket succeeded and you already "
                                     "own it."),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP header."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidAccessKeyId": (403, "The AWS Access Key Id you provided does not exist in our records."),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidBucketState": (409, "The request is not valid with the current state of the bucket."),
    "InvalidDigest": (400, "The Content-MD5 you specified was invalid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidPart": (400, "One or more of the specified parts could not be found. The part may not have been "
                         "uploaded, or the specified entity tag may not match the part's entity tag."),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order. Parts must be ordered by part "
                              "number."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidStorageClass": (400, "The storage class you specified is not valid."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "KeyTooLongError": (400, "Your key is too long."),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against our published "
                          "schema."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingSecurityHeader": (400, "Your request was missing a required header."),
    "NoSuchBucket": (404, "The specified bucket does not exist."),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (404, "The specified multipart upload does not exist."),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "ObjectLockConfigurationNotFoundError": (404, "Object Lock configuration does not exist for this bucket"),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented."),
    "PreconditionFailed": (412, "At least one of the preconditions you specified did not hold."),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the current time is too large."),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match the signature you "
                                   "provided. Check your key and signing method."),
    "SlowDown": (503, "Please reduce your request rate."),
    "UserKeyMustBeSpecified": (400, "The bucket POST must contain the specified field name. If it is specified, "
                                    "please check the order of the fields."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was "
                                       "computed."),
}


class S3Error(Exception):
    """An S3 error to answer with: ``code`` from `CODES`, its message, and extra elements."""

    def __init__(self, code: str, message: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None, **fields: Any) -> None:
        default_status, default_message = CODES.get(code, (500, code))
        self.code = code
        self.status = status or default_status
        self.message = message or default_message
        self.headers = dict(headers or {})
        self.fields = {name: value for name, value in fields.items() if value is not None}
        super().__init__(f"{code}: {self.message}")

    def body(self, resource: str, request_id: str) -> bytes:
        """The ``<Error>`` document; extra fields after the standard ones, in the order given."""
        root = xml.Element("Error")
        xml.sub(root, "Code", self.code)
        xml.sub(root, "Message", self.message)
        for name, value in self.fields.items():
            xml.sub(root, name, value)
        if resource:
            xml.sub(root, "Resource", resource)
        xml.sub(root, "RequestId", request_id)
        return xml.dumps(root, namespace=False)
