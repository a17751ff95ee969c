# -*- test-case-name: txstore.test.unit.test_s3_signatures -*-
"""
AWS Signature Version 4 (``AWS4-HMAC-SHA256``), as the S3 API reference documents it: pure
functions from a request's parts to the string to sign and the signature, no I/O.

    canonical request = METHOD \\n canonical URI \\n canonical query \\n canonical headers \\n
                        signed header names \\n payload hash
    string to sign    = AWS4-HMAC-SHA256 \\n <x-amz-date> \\n <date>/<region>/<service>/aws4_request \\n
                        hex(sha256(canonical request))
    signing key       = HMAC chain "AWS4"+secret -> date -> region -> service -> "aws4_request"

S3 encodes the path once (other services twice): each byte outside ``A-Za-z0-9-_.~`` (and the
``/`` separators) as ``%XX``, whatever encoding the client chose for the same byte.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

from attrs import frozen

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
TERMINATOR = "aws4_request"
UNRESERVED = "-_.~"
# A path or query made of these only is its own canonical form (what almost every SDK sends).
PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + UNRESERVED)
PLAIN_PATH = PLAIN | {"/"}


def _bytes(text: str) -> bytes:
    """Header, path and query values hold their bytes as Latin-1 (`txstore.proxy.messages`)."""
    return text.encode("latin-1", "replace")


def canonical_uri(raw_path: str, double_encode: bool = False) -> str:
    """The path as S3 signs it: decoded, then each byte encoded once (twice for other services)."""
    if raw_path and PLAIN_PATH.issuperset(raw_path):  # nothing to decode nor to encode
        return raw_path
    encoded = quote(unquote_to_bytes(_bytes(raw_path or "/")), safe="/" + UNRESERVED)
    if double_encode:
        encoded = quote(encoded, safe="/" + UNRESERVED)
    return encoded


def query_pairs(raw_query: str) -> list[tuple[bytes, bytes]]:
    """The query's (name, value) pairs decoded to bytes, in order; ``acl`` alone is (acl, "")."""
    pairs = []
    for part in raw_query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote_to_bytes(_bytes(name)), unquote_to_bytes(_bytes(value))))
    return pairs


def canonical_query(raw_query: str, leave_out: frozenset[bytes] = frozenset()) -> str:
    """Every parameter but ``leave_out``, each name and value encoded, sorted by name then value."""
    if not raw_query:
        return ""
    encoded = sorted((quote(name, safe=UNRESERVED), quote(value, safe=UNRESERVED))
                     for name, value in query_pairs(raw_query) if name not in leave_out)
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(headers, names: tuple[str, ...]) -> str:
    """``name:value\\n`` for each signed header, spaces trimmed and runs of them made one."""
    return "".join(f"{name}:{' '.join((headers.get(name) or '').split())}\n" for name in names)


def canonical_request(method: str, raw_path: str, raw_query: str, headers, signed_headers: tuple[str, ...],
                      payload_hash: str, leave_out: frozenset[bytes] = frozenset(),
                      double_encode: bool = False) -> bytes:
    text = "\n".join((
        method,
        canonical_uri(raw_path, double_encode),
        canonical_query(raw_query, leave_out),
        canonical_headers(headers, signed_headers),
        ";".join(signed_headers),
        payload_hash,
    ))
    return _bytes(text)


def scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/{TERMINATOR}"


def string_to_sign(amz_date: str, credential_scope: str, request: bytes) -> bytes:
    return "\n".join((ALGORITHM, amz_date, credential_scope, hashlib.sha256(request).hexdigest())).encode("ascii")


@lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The day's key (four HMACs): the same for every request a user signs that day, so kept."""
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, TERMINATOR):
        key = hmac.digest(key, part.encode("utf-8"), "sha256")
    return key


def signature(secret: str, date: str, region: str, service: str, to_sign: bytes) -> str:
    # hmac.digest: one call into OpenSSL, without the HMAC object hmac.new builds
    return hmac.digest(signing_key(secret, date, region, service), to_sign, "sha256").hex()


@frozen
class Credential:
    """``<access key>/<date>/<region>/<service>/aws4_request``."""

    access_key: str
    date: str
    region: str
    service: str

    @classmethod
    def parse(cls, value: str) -> Credential:
        """ValueError unless it has the five parts and ends with ``aws4_request``."""
        parts = value.split("/")
        if len(parts) < 5 or parts[-1] != TERMINATOR or not all(parts[-4:-1]):
            raise ValueError(f"malformed credential {value!r}")
        return cls("/".join(parts[:-4]), parts[-4], parts[-3], parts[-2])

    @property
    def scope(self) -> str:
        return scope(self.date, self.region, self.service)


@frozen
class AuthorizationHeader:
    credential: Credential
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> AuthorizationHeader:
    """
    ``AWS4-HMAC-SHA256 Credential=…, SignedHeaders=a;b, Signature=hex``; ValueError saying what
    is wrong otherwise.
    """
    head, mark, tail = value.rpartition("Signature=")
    given = tail.strip()
    if mark and given and "," not in tail:
        # All but a last Signature field is the same in every request a client signs that day:
        # parsed once, from the same text with a stand-in signature (so the same fields win).
        parsed = _parsed_head(head)
        return AuthorizationHeader(parsed.credential, parsed.signed_headers, given)
    return _parse_authorization(value)


@lru_cache(maxsize=256)
def _parsed_head(head: str) -> AuthorizationHeader:
    return _parse_authorization(head + "Signature=-")


def _parse_authorization(value: str) -> AuthorizationHeader:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, eq, field_value = item.strip().partition("=")
        if eq:
            fields[name.strip()] = field_value.strip()
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if not fields.get(name)]
    if missing:
        raise ValueError(f"the authorization header lacks {missing[0]}")
    return AuthorizationHeader(Credential.parse(fields["Credential"]), signed_header_names(fields["SignedHeaders"]),
                               fields["Signature"])


def signed_header_names(value: str) -> tuple[str, ...]:
    names = tuple(value.lower().split(";"))
    if not all(names):
        raise ValueError(f"malformed SignedHeaders {value!r}")
    return names
