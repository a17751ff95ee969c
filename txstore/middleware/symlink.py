# -*- test-case-name: txstore.test.unit.test_symlink -*-
"""
symlink: objects that point at other objects, as Swift's API has them.

A link is a zero-byte object PUT with ``X-Symlink-Target: <container>/<object>`` (percent-encoded;
optionally ``X-Symlink-Target-Account``). The target is normalized (decoded, then quoted again,
so ``a%2Fb`` and ``a/b`` name the same object) and stored in system metadata,
``X-Object-Sysmeta-Symlink-Target`` and ``-Target-Account`` (the account only when the client
named one: a link without it points into whatever account it is in, so a copy of it into another
account points there, as in Swift). Stored values are the quoted forms: an object name may hold
any character but NUL, and a header value to a node must not. The link's Content-Type is the
client's, else ``application/symlink``. The link need not have a target yet.

With ``X-Symlink-Target-Etag`` the link is *static*: at PUT time the target is HEADed as the
requester and must exist (else 409 ``X-Symlink-Target does not exist``) with that ETag (else
409), and its ETag and size are stored too (``-Target-Etag``, ``-Target-Bytes``), its
Content-Type taken when the client gave none. The ETag compared is the one the object stores,
which for a static large object is its manifest's (as ``?multipart-manifest=get`` answers it),
not the large object's: Swift's API, and its functional tests, say so. A static target that is
itself a static link is checked through that link's own target ETag; a dynamic link as target
is checked as the zero-byte object it is.

A GET or HEAD of a link reads its target with a sub-request, as the requester, carrying the
request's headers (a Range, the conditionals and what middlewares above added apply to the
target), up to ``symloop_max`` links in a chain (409 beyond). The target's answer is the answer,
whatever its status (404, 403, 304...), with ``Content-Location: /v1/<account>/<container>/
<object>`` of the last path read. At each static link the next object's ETag must be the one the
link recorded, else 409 (with the Content-Location). The link itself is read with the request's
own conditionals and Range: a node answers a link's 304, 412 or 416 with its metadata, so the
link is recognized and followed whatever it answered (and the Range is asked to be ignored for
links, ``X-Backend-Ignore-Range-If-Metadata-Present``). ``?symlink=get`` reads the link itself,
with ``X-Symlink-Target`` (and ``-Account``, ``-Etag``, ``-Bytes`` when stored) in its answer.

Order: symlink is below slo and dlo (Swift's ``... slo dlo [versioned_writes] symlink
proxy_logging proxy-server``). A link whose target is a manifest answers the manifest as stored,
and slo or dlo above assemble it as they would the manifest itself; their segment reads come
back down through symlink, so a segment may be a link. A large object's segments are looked for
in the account of the request (the link's), as in Swift.

A POST is applied to the object it names (a node cannot know whether it is a link), and when
that is a link the answer is ``307 Temporary Redirect`` with ``Location`` of the target (and
``X-Symlink-Target-Etag`` of a static link). The POST's answer does not say what the object is
(a Swift object server answers a POST with the object's system metadata; ours does not, nor does
the proxy's POST relay it), so a successful POST is followed by a HEAD of the object by the
middleware itself (system, not the requester: Swift's 307 tells a POSTer as much), unless the
answer did carry the link's system metadata. A POST with ``X-Symlink-Target`` is a 400.

COPY and ``X-Copy-From`` of a link copy its target (copy reads the source with a GET, which is
followed); with ``?symlink=get`` copy reads the link itself and the copy is a link PUT with the
same ``X-Symlink-*`` headers, checked again (copy.py passes the parameter and those headers).

Container listings: a link's row must carry its target. The PUT sends, as stored system
metadata, ``X-Object-Sysmeta-Container-Update-Override-Etag: <md5 of ''>; symlink_target=<quoted
container/object>[; symlink_target_account=<quoted account>][; symlink_target_etag=<etag>;
symlink_target_bytes=<n>]`` (with ``; slo_etag=<etag>`` first for a static link to a static
large object). It is the header slo already sends for its manifests (``<md5>; slo_etag=...``)
and Swift's own: the ETag, unlike the Content-Type, is never changed by a POST, so it lasts as
long as the link. A node that sends this value as the container update's ``X-Etag`` (on PUT,
and on the POST that changes the Content-Type) makes the container list it as the row's
``hash``; a JSON listing through this middleware then shows the link's ``hash`` as the md5
alone, with ``symlink_path`` (``/v1/<account>/<container>/<object>``) and, for a static link,
``symlink_etag`` and ``symlink_bytes`` (and ``slo_etag``, quoted). Other parameters are left
in ``hash`` for whoever above knows them.
"""

from __future__ import annotations

from hashlib import md5
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, unquote

from twisted.logger import Logger

from txstore.common import config as c
from txstore.common.paths import ALLOW_RESERVED, BadPath, decode_path
from txstore.middleware.base import ApiMiddleware, Middleware
from txstore.middleware.listing_formats import edit_json_listing, etag_params, max_listing_bytes
from txstore.proxy import subrequest
from txstore.proxy.messages import TRUE_VALUES, BytesSource, HeaderMap, SwiftRequest, SwiftResponse

log = Logger()

SOURCE = "SYM"
TARGET = "X-Symlink-Target"
TARGET_ACCOUNT = "X-Symlink-Target-Account"
TARGET_ETAG = "X-Symlink-Target-Etag"
TARGET_BYTES = "X-Symlink-Target-Bytes"
SYSMETA_TARGET = "X-Object-Sysmeta-Symlink-Target"
SYSMETA_ACCOUNT = "X-Object-Sysmeta-Symlink-Target-Account"
SYSMETA_ETAG = "X-Object-Sysmeta-Symlink-Target-Etag"
SYSMETA_BYTES = "X-Object-Sysmeta-Symlink-Target-Bytes"
# Client header: system metadata, as stored and as shown with ?symlink=get.
SHOWN = ((TARGET, SYSMETA_TARGET), (TARGET_ACCOUNT, SYSMETA_ACCOUNT), (TARGET_ETAG, SYSMETA_ETAG),
         (TARGET_BYTES, SYSMETA_BYTES))
LISTING_ETAG = "X-Object-Sysmeta-Container-Update-Override-Etag"
LISTING_SIZE = "X-Object-Sysmeta-Container-Update-Override-Size"
LISTING_CONTENT_TYPE = "X-Object-Sysmeta-Container-Update-Override-Content-Type"
SLO = "X-Static-Large-Object"
SLO_ETAG = "X-Object-Sysmeta-Slo-Etag"
SLO_SIZE = "X-Object-Sysmeta-Slo-Size"
IGNORE_RANGE = "X-Backend-Ignore-Range-If-Metadata-Present"
# Set by a middleware that writes links itself (object versioning): the link does not count
# towards symloop_max, and it may be followed into a reserved name, as the middleware (system).
SYSMETA_SYMLOOP_EXTEND = "X-Object-Sysmeta-Symloop-Extend"
SYSMETA_ALLOW_RESERVED = "X-Object-Sysmeta-Allow-Reserved-Names"
EMPTY_ETAG = md5(b"", usedforsecurity=False).hexdigest()
DEFAULT_CONTENT_TYPE = "application/symlink"

ZERO_BODY = "Symlink requests require a zero byte body"
BAD_FORM = "X-Symlink-Target header must be of the form <container name>/<object name>"
ITSELF = "Symlink cannot target itself"
BAD_ETAG = "Bad X-Symlink-Target-Etag format"
MISSING = "X-Symlink-Target does not exist"
LINKS_DIFFER = "X-Symlink-Target-Etag headers do not match"
POST_TARGET = "A PUT request is required to set a symlink target"
REDIRECTED = "The requested POST was applied to a symlink. POST directly to the target to apply requested metadata."

OPTIONS = (
    c.Option("symloop_max", c.integer(1), 2,
             doc="Links followed in a chain (a link to a link ...) before a GET or HEAD answers 409."),
)


def plain(status: int, text: str, headers: dict[str, str] | None = None) -> SwiftResponse:
    """A short plain-text answer, its body exactly ``text`` (Swift's functional tests compare it)."""
    response = SwiftResponse(status, HeaderMap(headers or {}), text.encode("utf-8"))
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    return response


def normalize_etag(value: str | None) -> str | None:
    """An ETag without its quotes; None when there is none."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > 1 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    return value or None


def parse_target(value: str) -> tuple[str, str]:
    """(container, object), decoded, from an ``X-Symlink-Target``; `BadPath` (412) unless of that form."""
    text = decode_path(value.encode("latin-1"))
    container, _, obj = text.partition("/")
    if text.startswith("/") or not container or not obj:
        raise BadPath(412, BAD_FORM)
    return container, obj


def parse_account(value: str) -> str:
    """The decoded account of an ``X-Symlink-Target-Account``; `BadPath` (412) if empty or with a slash."""
    account = decode_path(value.encode("latin-1"))
    if not account:
        raise BadPath(412, "Account name cannot be empty")
    if "/" in account:
        raise BadPath(412, "Account name cannot contain slashes")
    return account


def quoted(name: str) -> str:
    return quote(name.encode("utf-8"), safe="/")


def add_ignore_range(headers: HeaderMap, name: str) -> None:
    """Ask the node not to apply a Range when the object has metadata ``name`` (besides others asked)."""
    named = headers.get(IGNORE_RANGE)
    present = [item.strip().lower() for item in (named or "").split(",")]
    if name.lower() not in present:
        headers[IGNORE_RANGE] = f"{named}, {name}" if named else name


class Symlinks(ApiMiddleware):
    depth = 2

    def __init__(self, app, symloop_max: int, max_listing_bytes: int) -> None:
        self.app = app
        self.symloop_max = symloop_max
        self.max_listing_bytes = max_listing_bytes

    async def handle(self, request: SwiftRequest, account: str, container: str, obj: str | None) -> SwiftResponse:
        method = request.method
        if obj is None:
            if method == "GET":
                return await self._listing(request, account)
            return await self.app(request)
        if method in ("GET", "HEAD"):
            if request.params.get("symlink") == "get":
                return await self._get_link(request)
            return await self._follow(request, account)
        if method == "PUT" and TARGET in request.headers:
            return await self._put(request, account, container, obj)
        if method == "POST":
            return await self._post(request, account)
        return await self.app(request)

    # --- reading -------------------------------------------------------------------------------

    async def _get_link(self, request: SwiftRequest) -> SwiftResponse:
        """``?symlink=get``: the object itself, a link's target shown as client headers."""
        response = await self.app(request)
        for shown, stored in SHOWN:
            value = response.headers.pop(stored)
            if value is not None:
                response.headers[shown] = value
        return response

    async def _follow(self, request: SwiftRequest, account: str) -> SwiftResponse:
        add_ignore_range(request.headers, SYSMETA_TARGET)  # a link's own (empty) body is not served
        response = await self.app(request)
        if SYSMETA_TARGET not in response.headers:
            return response
        return await self._walk(request, response, account, expected=None, follow_dynamic=True, location=None)

    async def _walk(self, request: SwiftRequest, response: SwiftResponse, account: str, *, expected: str | None,
                    follow_dynamic: bool, location: str | None) -> SwiftResponse:
        """
        From ``response`` (of the object at ``location``, in ``account``) through the links it
        leads to, each read as ``request`` was: the last object's answer with its
        Content-Location, or a 409. ``expected`` is the ETag a static link recorded for the
        object just read; a dynamic link is followed only with ``follow_dynamic`` (a static
        link's PUT checks a dynamic link as the object it is).
        """
        links = 0
        while True:
            headers = response.headers
            target = headers.get(SYSMETA_TARGET)
            static = normalize_etag(headers.get(SYSMETA_ETAG))
            if target is None or not (static or follow_dynamic):
                break
            response.discard_body()
            found = static or normalize_etag(headers.get("ETag"))
            if expected and expected != found:
                return plain(409, LINKS_DIFFER, _located(location))
            if links >= self.symloop_max:
                return plain(409, f"Too many levels of symbolic links, maximum allowed is {self.symloop_max}")
            if not _true(headers.get(SYSMETA_SYMLOOP_EXTEND)):
                links += 1
            stored_account = headers.get(SYSMETA_ACCOUNT)
            if stored_account:
                account = unquote(stored_account)
            path = f"/v1/{account}/{unquote(target)}"
            location = quoted(path)
            reserved = _true(headers.get(SYSMETA_ALLOW_RESERVED))
            read_headers = request.headers
            if reserved:  # a middleware's link into a reserved name: it checked the requester
                read_headers = read_headers.copy()
                read_headers[ALLOW_RESERVED] = "true"
            read = subrequest.make(request, request.method, path, source=SOURCE, headers=read_headers,
                                   system=reserved or bool(request.environ.get(subrequest.OVERRIDE)))
            response = await self.app(read)
            expected, follow_dynamic = static, True
        final = normalize_etag(response.headers.get("ETag"))
        if expected and final and final != expected:
            response.discard_body()
            return plain(409, f"Object Etag {final!r} does not match X-Symlink-Target-Etag header {expected!r}",
                         _located(location))
        if location is not None:
            response.headers["Content-Location"] = location
        return response

    # --- writing -------------------------------------------------------------------------------

    async def _put(self, request: SwiftRequest, account: str, container: str, obj: str) -> SwiftResponse:
        length = request.header("Content-Length")
        if length is None:
            if await request.body.read():  # chunked: a first byte is enough to refuse
                request.discard_body()
                return plain(400, ZERO_BODY)
        elif not (length.strip().isdigit() and int(length) == 0):
            request.discard_body()
            return plain(400, ZERO_BODY)
        headers = request.headers
        try:
            target_container, target_obj = parse_target(headers[TARGET])
            named_account = headers.get(TARGET_ACCOUNT)
            target_account = parse_account(named_account) if named_account is not None else None
        except BadPath as err:
            request.discard_body()
            return plain(err.status, err.reason)
        if (target_account or account, target_container, target_obj) == (account, container, obj):
            request.discard_body()
            return plain(400, ITSELF)
        etag = normalize_etag(headers.get(TARGET_ETAG))
        if etag and any(char in etag for char in ';"\\'):
            request.discard_body()
            return plain(400, BAD_ETAG)
        for shown, stored in SHOWN:
            headers.pop(shown)
            headers.pop(stored)
        for name in (LISTING_ETAG, LISTING_SIZE, LISTING_CONTENT_TYPE):
            headers.pop(name)
        target = quoted(f"{target_container}/{target_obj}")
        listing = [EMPTY_ETAG]
        headers[SYSMETA_TARGET] = target
        if target_account is not None:
            headers[SYSMETA_ACCOUNT] = quoted(target_account)
        if etag:
            checked = await self._check_target(request, target_account or account, target_container, target_obj,
                                               etag)
            if isinstance(checked, SwiftResponse):
                request.discard_body()
                return checked
            size, content_type, slo_etag = checked
            headers[SYSMETA_ETAG] = etag
            headers[SYSMETA_BYTES] = size
            if not headers.get("Content-Type"):
                headers["Content-Type"] = content_type
            if slo_etag:
                listing.append(f"slo_etag={slo_etag}")
        elif not headers.get("Content-Type"):
            headers["Content-Type"] = DEFAULT_CONTENT_TYPE
        listing.append(f"symlink_target={target}")
        if target_account is not None:
            listing.append(f"symlink_target_account={quoted(target_account)}")
        if etag:
            listing.extend((f"symlink_target_etag={etag}", f"symlink_target_bytes={headers[SYSMETA_BYTES]}"))
        headers[LISTING_ETAG] = "; ".join(listing)
        headers["Content-Length"] = "0"
        headers.pop("Transfer-Encoding")
        request.body = BytesSource(b"")
        return await self.app(request)

    async def _check_target(self, request: SwiftRequest, account: str, container: str, obj: str,
                            etag: str) -> SwiftResponse | tuple[str, str, str | None]:
        """
        A static link's target, HEADed as the requester: (its size, Content-Type, large
        object's ETag if it is one), or the refusal to answer.
        """
        path = f"/v1/{account}/{container}/{obj}"
        head = subrequest.make(request, "HEAD", path, source=SOURCE)
        response = await self._walk(head, await self.app(head), account, expected=etag, follow_dynamic=False,
                                    location=quoted(path))
        if response.status == 409:
            return response  # the ETags differ, or the links are too many
        response.discard_body()
        if response.status == 404:
            return plain(409, MISSING, {"Content-Location": response.headers.get("Content-Location", quoted(path))})
        if response.status // 100 != 2:
            return plain(response.status, HTTPStatus(response.status).phrase)
        found = response.headers
        size = found.get(SLO_SIZE) if found.get(SLO) else None
        return (size or found.get("Content-Length") or "0", found.get("Content-Type") or DEFAULT_CONTENT_TYPE,
                found.get(SLO_ETAG) if found.get(SLO) else None)

    async def _post(self, request: SwiftRequest, account: str) -> SwiftResponse:
        if TARGET in request.headers:
            request.discard_body()
            return plain(400, POST_TARGET)
        response = await self.app(request)
        if response.status // 100 != 2:
            return response
        found = response.headers
        if SYSMETA_TARGET not in found:
            # A node's POST answer does not say what the object is: ask, as the middleware.
            head = subrequest.make(request, "HEAD", request.decoded_path, source=SOURCE, system=True,
                                   headers={ALLOW_RESERVED: "true"} if request.allow_reserved else None)
            looked = await self.app(head)
            looked.discard_body()
            if looked.status // 100 != 2 or SYSMETA_TARGET not in looked.headers:
                return response
            found = looked.headers
        response.discard_body()
        stored_account = found.get(SYSMETA_ACCOUNT)
        location = f"/v1/{stored_account or quoted(account)}/{found[SYSMETA_TARGET]}"
        headers = {"Location": location}
        static = found.get(SYSMETA_ETAG)
        if static:
            headers[TARGET_ETAG] = static
        return plain(307, REDIRECTED, headers)

    # --- container listings --------------------------------------------------------------------

    async def _listing(self, request: SwiftRequest, account: str) -> SwiftResponse:
        """A JSON listing's link rows: the target out of ``hash`` into ``symlink_*`` keys."""
        response = await self.app(request)
        return await edit_json_listing(response, self.max_listing_bytes, b"symlink_target=",
                                       lambda entry: _show_target(entry, account))


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_VALUES


def _located(location: str | None) -> dict[str, str]:
    return {"Content-Location": location} if location is not None else {}


def _show_target(entry: dict[str, Any], account: str) -> None:
    """One listing row: a link's parameters out of its ``hash`` into their own keys."""
    etag, params = etag_params(entry["hash"])
    named = dict(params)
    target = named.get("symlink_target")
    if not target:
        return
    kept = []
    for key, value in params:
        if key == "symlink_target_etag":
            entry["symlink_etag"] = value
        elif key == "symlink_target_bytes":
            try:
                entry["symlink_bytes"] = int(value)
            except ValueError:
                kept.append((key, value))
        elif key == "slo_etag":
            entry["slo_etag"] = f'"{value}"'
        elif key not in ("symlink_target", "symlink_target_account"):
            kept.append((key, value))
    entry["hash"] = etag + "".join(f"; {key}={value}" for key, value in kept)
    entry["symlink_path"] = f"/v1/{named.get('symlink_target_account') or quoted(account)}/{target}"


def _build(app, settings: dict[str, Any], proxy) -> Symlinks:
    proxy.info.register("symlink", symloop_max=settings["symloop_max"], static_links=True)
    return Symlinks(app, settings["symloop_max"], max_listing_bytes(proxy.context.constraints))


middleware = Middleware("symlink", _build, options=OPTIONS)
