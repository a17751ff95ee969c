# -*- test-case-name: txstore.test.unit.test_tempurl -*-
"""
tempurl: temporary URLs, Swift's API: an object request signed with a secret key is let through
without a token, for the method, the object (or the objects under a prefix) and the time the
signature names.

A signed request carries ``temp_url_sig`` and ``temp_url_expires`` in its query (and
optionally ``temp_url_prefix``, ``temp_url_ip_range``, ``filename``, ``inline``). The
signature is an HMAC, keyed with one of the account's (``X-Account-Meta-Temp-URL-Key``,
``-Key-2``) or the container's (``X-Container-Meta-Temp-URL-Key``, ``-Key-2``) keys, of::

    [ip=<temp_url_ip_range>\\n]<METHOD>\\n<expires as Unix seconds>\\n<path>

where the path is the object's decoded path (``/v1/AUTH_a/c/o``), or for a prefix URL
``prefix:/v1/AUTH_a/c/<prefix>`` (the object's name must start with the prefix). The digest is
given in hex (40, 64 or 128 digits: sha1, sha256, sha512) or as ``<digest>:<base64>`` (standard
or URL-safe, padding optional); ``allowed_digests`` says which digests are honoured.
``temp_url_expires`` is Unix seconds or ISO 8601 UTC (``2030-01-02T03:04:05Z``). ``HEAD`` is
also allowed by a GET, PUT or POST signature. Only the ``methods`` configured are signed for.

Anything wrong (a bad or expired signature, a method or path it does not cover, a client
outside the range, no key set) is ``401`` with Swift's body ``401 Unauthorized: Temp URL
invalid`` (none for HEAD). A request without either parameter passes untouched.

A valid request goes on with ``swift.authorize_override`` (the auth middleware below installs
no authorizer and asks for no token) and an authorizer of its own that allows the account (an
account key) or the container (a container key) the signature covers, and nothing else: the
sub-requests made on its behalf (a large object's segments, a symlink's target) inherit it, so
a container key never reaches another container. Before it goes on: writes may not carry
``X-Object-Manifest``, ``X-Symlink-Target`` or ``X-Copy-From`` (400: a signature for one
object must not become a pointer to others); ``incoming_remove_headers`` (except
``incoming_allow_headers``) are taken out; the query is reduced to the temp URL's own
parameters. On the way out ``outgoing_remove_headers`` (except ``outgoing_allow_headers``) are
taken out, and a successful GET or HEAD gets ``Content-Disposition`` (``inline`` with
``inline``, an attachment named by ``filename``, else the object's own, else an attachment
named after the object) and ``Expires``.

Keys come from the proxy's cached account and container info (the same cache and invalidation
as every other middleware's info), read before the request goes on; an HMAC of a short string is
computed inline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from calendar import timegm
from collections.abc import Callable, Mapping
from email.utils import formatdate
from time import strptime
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlencode

from twisted.logger import Logger
from zope.interface import implementer

from txstore.common import config as c
from txstore.common.paths import BadPath
from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy import subrequest
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.tempauth import Decision

log = Logger()

SUPPORTED_DIGESTS = ("sha1", "sha256", "sha512")
DEPRECATED_DIGESTS = ("sha1",)
HEX_LENGTHS = {40: "sha1", 64: "sha256", 128: "sha512"}
KEY_NAMES = ("temp-url-key", "temp-url-key-2")
# What a signed write may not carry: it would make the object point at data the signature
# does not cover (Swift's list).
DISALLOWED_INCOMING = ("x-object-manifest", "x-symlink-target", "x-copy-from")
INVALID = b"401 Unauthorized: Temp URL invalid\n"
ISO8601 = "%Y-%m-%dT%H:%M:%SZ"
REMOTE_USER = ".wsgi.tempurl"
# What a signed request's URL held, for staticweb's listing links (they carry the same signature).
INFO = "txstore.tempurl_info"
ACCOUNT_SCOPE, CONTAINER_SCOPE = "account", "container"
B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
CONTENT_GENERATOR = "X-Backend-Content-Generator"


def words(raw: str, _base: Any) -> tuple[str, ...]:
    """A whitespace-separated list (empty: none)."""
    return tuple(raw.split())


def methods(raw: str, base: Any) -> tuple[str, ...]:
    found = tuple(m.upper() for m in words(raw, base))
    if not found:
        raise c.BadValue("name at least one method")
    return found


def digests(raw: str, base: Any) -> tuple[str, ...]:
    found = tuple(sorted({d.lower() for d in words(raw, base)}))
    unknown = [d for d in found if d not in SUPPORTED_DIGESTS]
    if unknown:
        raise c.BadValue(f"unsupported digest {unknown[0]!r} (supported: {' '.join(SUPPORTED_DIGESTS)})")
    if not found:
        raise c.BadValue("name at least one digest")
    return found


OPTIONS = (
    c.Option("methods", methods, ("GET", "HEAD", "PUT", "POST", "DELETE"),
             doc="The methods a temporary URL may be signed for."),
    c.Option("incoming_remove_headers", words, ("x-timestamp", "x-open-expired"),
             doc="Headers taken out of signed requests; a trailing * matches a prefix."),
    c.Option("incoming_allow_headers", words, (),
             doc="Exceptions to incoming_remove_headers; a trailing * matches a prefix."),
    c.Option("outgoing_remove_headers", words, ("x-object-meta-*",),
             doc="Headers taken out of the answers to signed requests; a trailing * matches a prefix."),
    c.Option("outgoing_allow_headers", words, ("x-object-meta-public-*",),
             doc="Exceptions to outgoing_remove_headers; a trailing * matches a prefix."),
    c.Option("allowed_digests", digests, SUPPORTED_DIGESTS,
             doc="The HMAC digests honoured: sha1 (deprecated), sha256, sha512."),
)


class KeySource(Protocol):
    """Where the keys are: the metadata of an account and of a container (names lower case, no prefix)."""

    async def account_meta(self, request: SwiftRequest, account: str) -> Mapping[str, str]: ...

    async def container_meta(self, request: SwiftRequest, account: str, container: str) -> Mapping[str, str]: ...


class HeaderRule:
    """Which header names a remove list (less its allow list) takes out, matched without case."""

    def __init__(self, remove: tuple[str, ...], allow: tuple[str, ...]) -> None:
        self.remove, self.remove_prefixes = _split(remove)
        self.allow, self.allow_prefixes = _split(allow)

    def removes(self, name: str) -> bool:
        lowered = name.lower()
        if lowered in self.allow or lowered.startswith(self.allow_prefixes):
            return False
        return lowered in self.remove or lowered.startswith(self.remove_prefixes)

    def clean(self, headers: HeaderMap) -> None:
        for name in [n for n in headers if self.removes(n)]:
            del headers[name]


def _split(names: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    lowered = [n.lower() for n in names]
    return (frozenset(n for n in lowered if not n.endswith("*")),
            tuple(n[:-1] for n in lowered if n.endswith("*")))


def parse_signature(value: str) -> tuple[str, str]:
    """(digest name, lower-case hex) of a ``temp_url_sig``; ValueError when it is neither form."""
    if ":" in value:
        digest, _, encoded = value.partition(":")
        if ("-" in encoded or "_" in encoded) and not ("+" in encoded or "/" in encoded):
            encoded = encoded.replace("-", "+").replace("_", "/")
        encoded = encoded.rstrip("=")
        if not encoded or any(ch not in B64_CHARS for ch in encoded) or len(encoded) % 4 == 1:
            raise ValueError("not base64")
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
        return digest, raw.hex()
    bytes.fromhex(value)  # ValueError unless hex
    digest = HEX_LENGTHS.get(len(value))
    if digest is None:
        raise ValueError("not the length of a known digest")
    return digest, value


def parse_expires(value: str) -> int:
    """Unix seconds of a ``temp_url_expires`` (integer or ISO 8601 UTC); 0 when it is neither."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return timegm(strptime(value, ISO8601))
    except ValueError:
        return 0


def signature(key: bytes, method: str, expires: int, path: str, digest: str, ip_range: str | None = None) -> str:
    """The hex HMAC a temporary URL carries (what ``swift tempurl`` computes)."""
    message = f"{method}\n{expires}\n{path}"
    if ip_range:
        message = f"ip={ip_range}\n{message}"
    return hmac.new(key, message.encode("utf-8", "surrogateescape"), getattr(hashlib, digest)).hexdigest()


def disposition(kind: str, filename: str) -> str:
    """``attachment``/``inline`` with a filename, plain and RFC 5987 encoded."""
    return f"{kind}; filename=\"{quote(filename, safe=' /')}\"; filename*=UTF-8''{quote(filename)}"


def keys_of(meta: Mapping[str, str]) -> list[bytes]:
    """The temp-URL keys among metadata (the bytes the client set)."""
    return [value.encode("latin-1") for name, value in meta.items() if name.lower() in KEY_NAMES and value]


class Scope:
    """The authorizer of a signed request: its account (an account key) or its container."""

    def __init__(self, account: str, container: str | None) -> None:
        self.account, self.container = account, container

    def __call__(self, request: SwiftRequest, account: str, container: str | None, obj: str | None,
                 info: Any) -> Decision:
        if account != self.account or (self.container is not None and container != self.container):
            return Decision(False, 401, "outside the temporary URL's scope")
        return Decision(True, reason="temporary URL")


@implementer(IApp)
class TempURL:
    def __init__(self, app, settings: Mapping[str, Any], keys: KeySource, clock: Callable[[], float]) -> None:
        self.app = app
        self.methods = frozenset(settings["methods"])
        self.allowed_digests = frozenset(settings["allowed_digests"])
        self.incoming = HeaderRule(settings["incoming_remove_headers"], settings["incoming_allow_headers"])
        self.outgoing = HeaderRule(settings["outgoing_remove_headers"], settings["outgoing_allow_headers"])
        self.keys = keys
        self.clock = clock

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if request.method == "OPTIONS":
            return await self.app(request)
        query = parse_qs(request.query, keep_blank_values=True) if "temp_url_" in request.query else {}
        sig, expires_text = _first(query, "temp_url_sig"), _first(query, "temp_url_expires")
        if sig is None and expires_text is None:
            return await self.app(request)
        prefix, ip_range = _first(query, "temp_url_prefix"), _first(query, "temp_url_ip_range")
        filename, inline = _first(query, "filename"), "inline" in query
        expires = parse_expires(expires_text) if expires_text is not None else 0
        if not sig or expires < self.clock():
            return self._invalid(request)
        given = sig
        try:
            digest, sig = parse_signature(sig)
        except (ValueError, binascii.Error):
            return self._invalid(request)
        if digest not in self.allowed_digests:
            return self._invalid(request)
        names = self._names(request, container_root=request.method in ("GET", "HEAD") and prefix == "")
        if names is None:
            return self._invalid(request)
        account, container, obj = names
        if ip_range and not _client_in(request.client_ip, ip_range):
            return self._invalid(request)
        keys = await self._scoped_keys(request, account, container)
        if not keys:
            return self._invalid(request)
        if prefix is None:
            path = f"/v1/{account}/{container}/{obj}"
        elif obj.startswith(prefix):
            path = f"prefix:/v1/{account}/{container}/{prefix}"
        else:
            return self._invalid(request)
        signed = ("HEAD", "GET", "POST", "PUT") if request.method == "HEAD" else (request.method,)
        scope = None
        for method in signed:
            for key, key_scope in keys:
                if hmac.compare_digest(sig, signature(key, method, expires, path, digest, ip_range)):
                    scope = key_scope
                    break
            if scope is not None:
                break
        if scope is None:
            return self._invalid(request)
        if request.method not in ("GET", "HEAD"):
            for name in DISALLOWED_INCOMING:
                if name in request.headers:
                    request.discard_body()
                    return SwiftResponse.text(400, f"The header {name.title()!r} is not allowed in this tempurl")
        self.incoming.clean(request.headers)
        request.environ[subrequest.OVERRIDE] = True
        request.environ[subrequest.AUTHORIZE] = Scope(account, container if scope == CONTAINER_SCOPE else None)
        request.environ["REMOTE_USER"] = REMOTE_USER
        request.environ[INFO] = {"sig": given, "expires": expires_text or "", "prefix": prefix,
                                 "ip_range": ip_range, "inline": inline}
        kept: dict[str, str] = {"temp_url_sig": sig, "temp_url_expires": expires_text or ""}
        if prefix is not None:
            kept["temp_url_prefix"] = prefix
        if filename:
            kept["filename"] = filename
        if inline:
            kept["inline"] = ""
        request.query = urlencode(kept)
        response = await self.app(request)
        self.outgoing.clean(response.headers)
        if request.method in ("GET", "HEAD") and 200 <= response.status < 300:
            generated = response.headers.get(CONTENT_GENERATOR)
            if generated == "staticweb":
                inline = True
            elif obj == "":  # a container's root is signed for only when staticweb answers it
                response.discard_body()
                return self._invalid(request)
            existing = response.headers.pop("Content-Disposition")
            if inline:
                value = disposition("inline", filename) if filename else "inline"
            elif filename:
                value = disposition("attachment", filename)
            elif existing:
                value = existing
            else:
                value = disposition("attachment", request.decoded_path.rstrip("/").rsplit("/", 1)[-1])
            response.headers["Content-Disposition"] = value.replace("\n", "%0A")
            response.headers["Expires"] = formatdate(expires, usegmt=True)
        return response

    def _names(self, request: SwiftRequest, container_root: bool) -> tuple[str, str, str] | None:
        """(account, container, object) of a request a temporary URL may sign, else None."""
        if request.method not in self.methods:
            return None
        try:
            version, account, container, obj = request.split(3 if container_root else 4, 4)
        except BadPath:
            return None
        if version != "v1" or account is None or container is None:
            return None
        if container_root:
            return account, container, obj or ""
        if obj is None or not obj.strip("/"):
            return None
        return account, container, obj

    async def _scoped_keys(self, request: SwiftRequest, account: str, container: str) -> list[tuple[bytes, str]]:
        account_meta = await self.keys.account_meta(request, account)
        container_meta = await self.keys.container_meta(request, account, container)
        return ([(key, ACCOUNT_SCOPE) for key in keys_of(account_meta)]
                + [(key, CONTAINER_SCOPE) for key in keys_of(container_meta)])

    def _invalid(self, request: SwiftRequest) -> SwiftResponse:
        request.discard_body()
        try:
            account = request.split(1, 4)[1]
        except BadPath:
            account = None
        realm = quote(account) if account else "unknown"
        response = SwiftResponse(401, HeaderMap({"WWW-Authenticate": f'Swift realm="{realm}"'}),
                                 b"" if request.method == "HEAD" else INVALID)
        response.headers["Content-Type"] = "text/plain; charset=utf-8"
        return response


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _client_in(client_ip: str, ip_range: str) -> bool:
    try:
        return ipaddress.ip_address(client_ip) in ipaddress.ip_network(ip_range)
    except ValueError:
        return False


class CachedKeys:
    """Keys from the proxy's cached account and container info (`txstore.proxy.controllers.base`)."""

    def __init__(self, context) -> None:
        self.context = context

    async def account_meta(self, request: SwiftRequest, account: str) -> Mapping[str, str]:
        from txstore.proxy.controllers.base import account_info

        info = await account_info(self.context, account, request.trans_id)
        return info.meta if info.exists else {}

    async def container_meta(self, request: SwiftRequest, account: str, container: str) -> Mapping[str, str]:
        from txstore.proxy.controllers.base import container_info

        info = await container_info(self.context, account, container, request.trans_id)
        return info.meta if info.exists else {}


def info_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What ``/info`` lists under ``tempurl``, as Swift does."""
    found = {name: list(settings[name]) for name in ("methods", "incoming_remove_headers", "incoming_allow_headers",
                                                     "outgoing_remove_headers", "outgoing_allow_headers")}
    found["allowed_digests"] = sorted(settings["allowed_digests"])
    deprecated = sorted(d for d in settings["allowed_digests"] if d in DEPRECATED_DIGESTS)
    if deprecated:
        found["deprecated_digests"] = deprecated
    return found


def _build(app, settings: dict[str, Any], proxy) -> TempURL:
    proxy.info.register("tempurl", **info_of(settings))
    deprecated = [d for d in settings["allowed_digests"] if d in DEPRECATED_DIGESTS]
    if deprecated:
        log.warn("tempurl: allowed_digests includes {digests}, deprecated (Swift will drop it)",
                 digests=" ".join(deprecated))
    return TempURL(app, settings, CachedKeys(proxy.context), proxy.clock)


middleware = Middleware("tempurl", _build, options=OPTIONS)
