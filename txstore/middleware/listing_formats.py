# -*- test-case-name: txstore.test.unit.test_middleware -*-
"""
listing_formats: account and container listings in the format the client asked for, as Swift's.

For GET and HEAD of ``/v1/<account>`` and ``/v1/<account>/<container>`` the format is decided
here, from ``format=`` then ``Accept`` (`negotiate_format`: an unknown ``format=`` value means
plain; 406 when ``Accept`` allows none of the formats, 400 for a malformed ``Accept`` or a
``format=`` that is not UTF-8), and the pipeline below is asked for JSON: the ``format=``
parameters give way to one ``format=json`` at the end of the query (every other parameter kept
byte for byte) and ``Accept`` becomes ``application/json``. The client's request value is left
as it came (the outer proxy_logging logs what the client asked); a copy goes down.

A 200 JSON answer is turned into the requested format: plain (one name or subdir per line; an
empty plain listing is a 204, as Swift answers it), XML (as the storage nodes render it) or the
JSON as it came, with ``Content-Type: <format>; charset=utf-8`` and its ``Content-Length``. A
HEAD, or a 204, only gets the requested format's ``Content-Type``. Without ``format=`` the
answer varies with ``Accept`` and says so (``Vary: Accept``). Anything else passes untouched:
a non-2xx answer, an answer that is not JSON, a JSON body that is not a listing (a list of
objects with the fields its format needs), and one larger than a listing can be or of unknown
length (something below answered with its own document, as Swift's staticweb does).

A listing is bounded (at most the listing limit of entries), so its JSON is read whole here,
from the body's `IByteSource` when it is streamed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from attrs import evolve
from zope.interface import implementer

from txstore.common.constraints import DEFAULT_CONSTRAINTS, Constraints
from txstore.common.listing_format import (
    JSON,
    ListingError,
    ListingFormat,
    listing_format,
    render_account_listing,
    render_container_listing,
)
from txstore.common.paths import BadPath
from txstore.interfaces import IApp
from txstore.middleware.base import Middleware, read_whole
from txstore.proxy.messages import SwiftRequest, SwiftResponse

FORMAT = "format"


def max_listing_bytes(limits: Constraints) -> int:
    """
    The largest JSON body taken for a listing: Swift's figure (twice the longest name per
    entry, for the other fields and escapes) from this proxy's limits. A larger body is not a
    listing and passes as it is.
    """
    entries = max(limits.container_listing_limit, limits.account_listing_limit)
    return entries * limits.max_object_name_length * 2


def etag_params(value: str) -> tuple[str, list[tuple[str, str]]]:
    """
    A listing row's ``hash`` as its md5 and its parameters in order: a node lists what a
    middleware asked it to (``<md5>; slo_etag=…; symlink_target=…``), and the middleware that
    wrote a parameter moves it into its own key of a JSON listing.
    """
    etag, *rest = value.split(";")
    params = []
    for piece in rest:
        key, _, item = piece.strip().partition("=")
        if key:
            params.append((key.strip().lower(), item.strip()))
    return etag.strip(), params


async def edit_json_listing(
    response: SwiftResponse, max_bytes: int, needle: bytes, edit: Callable[[dict[str, Any]], None]
) -> SwiftResponse:
    """
    ``response`` with ``edit`` applied to each row of its JSON container listing, when the body
    holds ``needle`` (most listings have no row to edit and pass unparsed). Anything that is
    not a JSON listing of at most ``max_bytes`` passes as it came.
    """
    length = response.headers.get("Content-Length") or ""
    if (response.status != 200 or media_type(response) != JSON.media_type
            or not (length.isascii() and length.isdigit()) or int(length) > max_bytes):
        return response
    data = await read_whole(response)
    response.body = data
    if needle not in data:
        return response
    try:
        listing = json.loads(data)
    except (ValueError, RecursionError):
        return response
    if not isinstance(listing, list):
        return response
    for entry in listing:
        if isinstance(entry, dict) and isinstance(entry.get("hash"), str):
            edit(entry)
    set_json_body(response, listing)
    return response


def set_json_body(response: SwiftResponse, value: Any) -> None:
    """``response``'s body becomes ``value`` as JSON (ASCII, as Swift's listings), with its length."""
    body = json.dumps(value).encode("ascii")
    response.body = body
    response.headers["Content-Length"] = str(len(body))


def _raw(query: str) -> bytes:
    """The query's bytes (the edge gives them as Latin-1; a middleware may have written UTF-8)."""
    try:
        return query.encode("latin-1")
    except UnicodeEncodeError:
        return query.encode("utf-8")


def _is_format(piece: str) -> bool:
    name = piece.partition("=")[0]
    return unquote_plus(name, encoding="latin-1") == FORMAT


def requested_format(request: SwiftRequest) -> ListingFormat:
    """The format the client asked for; `ListingError` (400, 406) when it cannot be served."""
    args: dict[bytes, list[bytes]] = {}
    # Latin-1 both ways: each percent-decoded byte stays one character, so no byte is lost.
    for name, value in parse_qsl(_raw(request.query).decode("latin-1"), keep_blank_values=True, encoding="latin-1"):
        args.setdefault(name.encode("latin-1"), []).append(value.encode("latin-1"))
    return listing_format(args, request.header("Accept"))


def json_query(query: str) -> str:
    """``query`` asking for JSON: ``format=json`` last, every other parameter as it was."""
    kept = [piece for piece in query.split("&") if not _is_format(piece)] if query else []
    return "&".join([*kept, f"{FORMAT}=json"])


@implementer(IApp)
class ListingFormats:
    """The `IApp`: listings below it are asked for in JSON, and answered in the client's format."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, request: SwiftRequest):
        # What is not a listing is the next stage's call itself: no coroutine of its own.
        if request.method not in ("GET", "HEAD"):
            return self.app(request)
        try:
            version, account, container, obj = request.split(2, 4)
        except BadPath:
            return self.app(request)  # the application answers a bad path
        if version != "v1" or obj is not None:
            return self.app(request)
        assert account is not None
        return self._listing(request, account, container)

    async def _listing(self, request: SwiftRequest, account: str, container: str | None) -> SwiftResponse:
        try:
            fmt = requested_format(request)
        except ListingError as err:
            request.discard_body()
            return SwiftResponse.text(err.status, err.reason)
        # What the client asked, for a middleware below that answers one format only (object_versioning)
        request.environ["swift.listing_asked"] = (request.query, request.header("Accept"))
        headers = request.headers.copy()
        headers["Accept"] = JSON.media_type
        varies = not any(_is_format(piece) for piece in request.query.split("&"))
        response = await self.app(evolve(request, query=json_query(request.query), headers=headers))
        if request.environ.get("swift.format_listing") is False:
            return response  # a middleware below answered in its own format (object_versioning's JSON)
        if response.status not in (200, 204) or media_type(response) != JSON.media_type:
            return response
        if varies:
            _add_vary(response)
        if fmt == JSON:
            response.headers["Content-Type"] = fmt.content_type
            return response
        if request.method == "HEAD" or response.status == 204:
            response.headers["Content-Type"] = fmt.content_type
            if response.status == 200:
                response.headers.pop("Content-Length")  # the JSON's, not this format's
            return response
        length = response.headers.get("Content-Length") or ""
        if not (length.isascii() and length.isdigit()) or int(length) > self.max_bytes:
            return response
        data = await read_whole(response)
        response.body = data
        try:
            listing = json.loads(data)
            if not isinstance(listing, list) or not all(isinstance(entry, dict) for entry in listing):
                return response
            if container is None:
                rendered = render_account_listing(fmt, account, listing)
            else:
                rendered = render_container_listing(fmt, container, listing)
        except (ValueError, KeyError, RecursionError):
            return response  # not a listing: as it came
        response.body = rendered
        response.status = 200 if rendered else 204
        response.headers["Content-Type"] = fmt.content_type
        response.headers["Content-Length"] = str(len(rendered))
        return response


def media_type(response: SwiftResponse) -> str:
    """The response's media type, lower case, without its parameters."""
    return (response.headers.get("Content-Type") or "").partition(";")[0].strip().lower()


def _add_vary(response: SwiftResponse) -> None:
    vary = response.headers.get("Vary")
    if not vary:
        response.headers["Vary"] = "Accept"
    elif "accept" not in (item.strip().lower() for item in vary.split(",")):
        response.headers["Vary"] = f"{vary}, Accept"


middleware = Middleware(
    "listing_formats",
    lambda app, settings, proxy: ListingFormats(
        app, max_listing_bytes(proxy.context.constraints if proxy is not None else DEFAULT_CONSTRAINTS)),
)
