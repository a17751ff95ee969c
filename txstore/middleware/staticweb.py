# -*- test-case-name: txstore.test.unit.test_staticweb -*-
"""
staticweb: a container served as a web site, Swift's API.

The container's owner sets metadata (``swift post -m web-index:index.html c``)::

    X-Container-Meta-Web-Index           <name>   served for a directory: …/dir/ gives …/dir/<name>
    X-Container-Meta-Web-Error           <suffix> a 404 (or a listing's 401) serves …/404<suffix>
    X-Container-Meta-Web-Listings        true     an HTML listing for a directory without an index
    X-Container-Meta-Web-Listings-CSS    <name>   the listing's style sheet (relative, or absolute)
    X-Container-Meta-Web-Listings-Label  <label>  "Listing of <label>/<dir>" instead of the path
    X-Container-Meta-Web-Directory-Type  <type>   the Content-Type of directory markers
                                                  (default application/directory)

Only GET and HEAD of a container or object are acted on, and only for requests without a token
(anonymous ones and temporary URLs), or with ``X-Web-Mode: true``; an authenticated request
without it sees the plain API. What is served is read by sub-requests as the requester, so the
container's ACL decides as for any request: a site is public with ``X-Container-Read: .r:*``
(and ``.rlistings`` for listings), or reached through a prefix temporary URL, whose listings'
links carry the same signature.

A directory is a path ending in ``/`` (the container's root, or a prefix of object names); a
directory asked without its slash is redirected (301) to it, when it holds an index page or
objects (a 0-byte object of the directory type is a marker, never served itself). The page of an
error is served with the error's status. A listing is one page of the container listing (as
Swift's: at most the listing limit of entries at one level), read whole: bounded.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from zope.interface import implementer

from txstore.common import config as c
from txstore.common.paths import BadPath
from txstore.interfaces import IApp
from txstore.middleware import tempurl
from txstore.middleware.base import CachedContainers, Middleware, read_whole
from txstore.proxy import subrequest
from txstore.proxy.messages import TRUE_VALUES, HeaderMap, SwiftRequest, SwiftResponse

SOURCE = "SW"
GENERATOR = "X-Backend-Content-Generator"  # tempurl lets a signed container root through for these
DEFAULT_DIRECTORY_TYPE = "application/directory"
ERROR_PAGES = (401, 404)
HTML_TYPE = "text/html; charset=UTF-8"


def url_base(raw: str, _base: Any) -> tuple[str, str]:
    """Swift's ``url_base``: (scheme, host) for redirects, either may be empty (``https:``, ``//host``)."""
    raw = raw.strip()
    if not raw:
        return "", ""
    parts = urlsplit(raw if "//" in raw or raw.endswith(":") else "//" + raw)
    if parts.scheme not in ("", "http", "https"):
        raise c.BadValue(f"the scheme must be http or https, not {parts.scheme!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise c.BadValue("give a scheme and/or a host only (http://www.example.com, https:, //host:8080)")
    return parts.scheme, parts.netloc


OPTIONS = (
    c.Option("url_base", url_base, ("", ""),
             doc="The scheme and/or host of redirects when the proxy cannot see them (http://www.example.com, "
                 "https:, //www.example.com:8080). Default: the request's own."),
)


class ContainerSource(Protocol):
    """The container's info (meta and ACLs): the proxy's cached info in service, a fake in tests."""

    async def __call__(self, request: SwiftRequest, account: str, container: str) -> Any: ...


class Site:
    """A container's web settings, from its metadata (names lower case, without the prefix)."""

    def __init__(self, meta: Mapping[str, str]) -> None:
        # header values hold the bytes as Latin-1: names are the UTF-8 text the owner set
        meta = {name: value.encode("latin-1", "replace").decode("utf-8", "surrogateescape")
                for name, value in meta.items()}
        self.index = meta.get("web-index") or ""
        self.error = meta.get("web-error") or ""
        self.listings = (meta.get("web-listings") or "").strip().lower() in TRUE_VALUES
        self.css = meta.get("web-listings-css") or ""
        self.label = meta.get("web-listings-label") or ""
        self.directory_type = (meta.get("web-directory-type") or DEFAULT_DIRECTORY_TYPE).strip().lower()

    @property
    def active(self) -> bool:
        return bool(self.index or self.listings)


@implementer(IApp)
class StaticWeb:
    def __init__(self, app, containers: ContainerSource, scheme: str = "", host: str = "") -> None:
        self.app = app
        self.containers = containers
        self.scheme, self.host = scheme, host

    def __call__(self, request: SwiftRequest):
        # What is not for a web site is the next stage's call itself: no coroutine of its own.
        if request.method not in ("GET", "HEAD"):
            return self.app(request)
        if request.identity is not None and not request.flag("X-Web-Mode"):
            return self.app(request)
        try:
            version, account, container, obj = request.split(2, 4)
        except BadPath:
            return self.app(request)
        if version != "v1" or container is None:
            return self.app(request)
        return self._serve(request, account, container, obj or "")

    async def _serve(self, request: SwiftRequest, account: str, container: str, obj: str) -> SwiftResponse:
        info = await self.containers(request, account, container)
        site = Site(info.meta if info.exists else {})
        page = Page(self, request, site, account, container)
        if obj:
            return await page.serve_object(obj)
        return await page.serve_container(info)


class Page:
    """One request's work: what it asks, the container's settings, the sub-requests it needs."""

    def __init__(self, web: StaticWeb, request: SwiftRequest, site: Site, account: str, container: str) -> None:
        self.web, self.request, self.site = web, request, site
        self.account, self.container = account, container
        self.root = f"/v1/{account}/{container}"

    async def serve_container(self, info) -> SwiftResponse:
        request, site = self.request, self.site
        if not site.active:
            if request.flag("X-Web-Mode") and info.exists:
                request.discard_body()
                return SwiftResponse.text(404, "Not Found: the container is not a web site")
            return await self.web.app(request)
        request.discard_body()
        if not request.path.endswith("/"):
            refusal = self._authorize(info, site.index or None)
            if refusal is not None:
                return await self._error(refusal)
            return self._redirect()
        if site.index:
            found = await self._get(f"{self.root}/{site.index}", request.method)
            if _success(found.status):
                return found
            if found.status != 404 or not site.listings:
                return await self._error(found)
            found.discard_body()
        return await self._listing("")

    async def serve_object(self, obj: str) -> SwiftResponse:
        request, site = self.request, self.site
        if not (site.active or site.error):
            return await self.web.app(request)
        found = await self.web.app(request)
        if _success(found.status) or 300 <= found.status < 400:
            if not self._is_marker(found):
                return found
            found.discard_body()
            found = SwiftResponse.text(404, "Not Found")
        if found.status != 404:
            return found
        if not site.active:
            return await self._error(found)
        found.discard_body()
        slashed = request.path.endswith("/")
        base = obj.rstrip("/")
        if site.index:
            index = await self._get(f"{self.root}/{base}/{site.index}", request.method)
            if _success(index.status) or 300 <= index.status < 400:
                if not slashed:
                    index.discard_body()
                    return self._redirect()
                return index
            index.discard_body()
        if not slashed:
            if await self._has_objects(base + "/"):
                return self._redirect()
            return await self._error(SwiftResponse.text(404, "Not Found"))
        if site.listings:
            return await self._listing(obj)
        return await self._error(SwiftResponse.text(404, "Not Found"))

    def _is_marker(self, response: SwiftResponse) -> bool:
        """A directory marker: a 0-byte (or 1-byte, as Swift's) object of the directory type."""
        kind = (response.headers.get("Content-Type") or "").partition(";")[0].strip().lower()
        length = response.headers.get("Content-Length") or "0"
        return kind == self.site.directory_type and length.isdigit() and int(length) <= 1

    def _authorize(self, info, obj: str | None) -> SwiftResponse | None:
        """A redirect is given only to whom the page behind it would be: the authorizer's refusal, else None."""
        authorize = self.request.environ.get(subrequest.AUTHORIZE)
        if authorize is None:
            return None
        decision = authorize(self.request, self.account, self.container, obj, info)
        if decision.allowed:
            return None
        return SwiftResponse.text(decision.status or 401, decision.reason or "Unauthorized")

    def _redirect(self) -> SwiftResponse:
        """301 to the same path with a slash (temporary URL parameters are not carried, as in Swift)."""
        scheme = self.web.scheme or self.request.scheme
        host = self.web.host or self.request.host
        location = f"{scheme}://{host}{self.request.path}/"
        return SwiftResponse.text(301, f"Moved Permanently: {location}", {"Location": location})

    async def _get(self, path: str, method: str = "GET", query: str = "") -> SwiftResponse:
        sub = subrequest.make(self.request, method, path, source=SOURCE, query=query)
        return await self.web.app(sub)

    async def _has_objects(self, prefix: str) -> bool:
        listed = await self._get(self.root, query=urlencode({"limit": "1", "delimiter": "/", "prefix": prefix,
                                                             "format": "json"}))
        if not _success(listed.status):
            listed.discard_body()
            return False
        return bool(_entries(await read_whole(listed)))

    async def _error(self, response: SwiftResponse) -> SwiftResponse:
        """The container's page for this error (``<status><Web-Error>``) with the error's status, else the error."""
        if not self.site.error or response.status not in ERROR_PAGES:
            return response
        page = await self._get(f"{self.root}/{response.status}{self.site.error}")
        if not _success(page.status):
            page.discard_body()
            return response
        response.discard_body()
        headers = HeaderMap({name: value for name, value in page.headers.items()
                             if name.lower() in ("content-type", "content-length", "last-modified", "etag")})
        if self.request.method == "HEAD":
            page.discard_body()
            return SwiftResponse(response.status, headers, b"")
        return SwiftResponse(response.status, headers, page.body)

    async def _listing(self, prefix: str) -> SwiftResponse:
        if not self.site.listings:
            return await self._error(SwiftResponse.text(404, "Not Found: web listings are off"))
        query = {"delimiter": "/", "format": "json"}
        if prefix:
            query["prefix"] = prefix
        listed = await self._get(self.root, query=urlencode(query))
        if not _success(listed.status):
            return await self._error(listed)
        entries = _entries(await read_whole(listed))
        if prefix and not entries:
            return await self._error(SwiftResponse.text(404, "Not Found"))
        body = self._render(prefix, entries).encode("utf-8")
        headers = HeaderMap({"Content-Type": HTML_TYPE, "Content-Length": str(len(body)), GENERATOR: "staticweb"})
        return SwiftResponse(200, headers, b"" if self.request.method == "HEAD" else body)

    def _render(self, prefix: str, entries: list[dict]) -> str:
        signed = self.request.environ.get(tempurl.INFO) or {}
        link_query, signed_prefix = "", None
        if self.request.environ.get("REMOTE_USER") == tempurl.REMOTE_USER and signed.get("prefix") is not None:
            signed_prefix = signed["prefix"]
            parts = [f"temp_url_prefix={quote(signed_prefix)}", f"temp_url_expires={quote(signed['expires'])}",
                     f"temp_url_sig={quote(signed['sig'], safe='')}"]
            if signed.get("ip_range"):
                parts.append(f"temp_url_ip_range={quote(signed['ip_range'], safe='')}")
            if signed.get("inline"):
                parts.append("inline")
            link_query = "?" + "&amp;".join(parts)
        if self.site.label:
            title = f"{self.site.label}/{prefix}"
        else:
            title = self.request.decoded_path
        out = ['<!DOCTYPE html>\n<html>\n <head>\n', f'  <title>Listing of {html.escape(title, quote=False)}</title>\n']
        if self.site.css:
            out.append(f'  <link rel="stylesheet" type="text/css" href="{html.escape(self._css(prefix))}" />\n')
        else:
            out.append(STYLE)
        out.append(' </head>\n <body>\n')
        out.append(f'  <h1 id="title">Listing of {html.escape(title, quote=False)}</h1>\n')
        out.append('  <table id="listing">\n   <tr id="heading">\n    <th class="colname">Name</th>\n'
                   '    <th class="colsize">Size</th>\n    <th class="coldate">Date</th>\n   </tr>\n')
        parent = prefix.rstrip("/").rpartition("/")[0] + "/" if "/" in prefix.rstrip("/") else ""
        if prefix and (signed_prefix is None or parent.startswith(signed_prefix)):
            out.append(_row("parent", "../" + link_query, "../", "&nbsp;", "&nbsp;"))
        for entry in entries:
            if "subdir" in entry:
                name = entry["subdir"][len(prefix):]
                if name:
                    out.append(_row("item subdir", "./" + quote(name) + link_query, html.escape(name, quote=False),
                                    "&nbsp;", "&nbsp;"))
        for entry in entries:
            if "name" in entry:
                name = entry["name"][len(prefix):]
                if not name:
                    continue
                kind = " ".join("type-" + html.escape(part, quote=True)
                                for part in (entry.get("content_type") or "").partition(";")[0].strip().split("/")
                                if part)
                out.append(_row(f"item {kind}".strip(), "./" + quote(name) + link_query, html.escape(name, quote=False),
                                _size(entry.get("bytes", 0)), _date(entry.get("last_modified", ""))))
        out.append('  </table>\n </body>\n</html>\n')
        return "".join(out)

    def _css(self, prefix: str) -> str:
        """The style sheet's link: as given when absolute, else from the container's root."""
        css = self.site.css
        if css.startswith(("/", "http://", "https://")):
            return quote(css, safe=":/")
        return "../" * prefix.count("/") + quote(css)


STYLE = ('  <style type="text/css">\n'
         '   h1 {font-size: 1em; font-weight: bold;}\n'
         '   th {text-align: left; padding: 0 1em;}\n'
         '   td {padding: 0 1em;}\n'
         '   td.colsize {text-align: right;}\n'
         '  </style>\n')


def _row(kind: str, href: str, text: str, size: str, date: str) -> str:
    row_id = ' id="parent"' if kind == "parent" else ""
    kind = "item" if kind == "parent" else kind
    return (f'   <tr{row_id} class="{kind}">\n'
            f'    <td class="colname"><a href="{href}">{text}</a></td>\n'
            f'    <td class="colsize">{size}</td>\n'
            f'    <td class="coldate">{date}</td>\n'
            '   </tr>\n')


def _size(value: Any) -> str:
    """Bytes for people: 512, 1.5Ki, 20.0Mi."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return "&nbsp;"
    if size < 1024:
        return str(int(size))
    for unit in ("Ki", "Mi", "Gi", "Ti", "Pi"):
        size /= 1024
        if size < 1024:
            break
    return f"{size:.1f}{unit}"


def _date(value: str) -> str:
    """A listing's ``2026-12-05T07:51:45.123450`` as ``2026-12-05 07:51:45``."""
    day, _, time = str(value).partition("T")
    return html.escape(f"{day} {time[:8]}".strip()) or "&nbsp;"


def _success(status: int) -> bool:
    return 200 <= status < 300


def _entries(data: bytes) -> list[dict]:
    try:
        listing = json.loads(data) if data else []
    except ValueError:
        return []
    return [entry for entry in listing if isinstance(entry, dict)] if isinstance(listing, list) else []


def _build(app, settings: dict[str, Any], proxy) -> StaticWeb:
    proxy.info.register("staticweb")
    scheme, host = settings["url_base"]
    return StaticWeb(app, CachedContainers(proxy.context), scheme, host)


middleware = Middleware("staticweb", _build, options=OPTIONS)
