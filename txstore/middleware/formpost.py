# -*- test-case-name: txstore.test.unit.test_formpost -*-
"""
formpost: uploads from an HTML form in a browser, without a token, Swift's API. The form is
signed with one of the temp-URL keys (the account's or the container's
``X-*-Meta-Temp-URL-Key``, ``-Key-2``) over::

    <path>\\n<redirect>\\n<max_file_size>\\n<max_file_count>\\n<expires>

(the form's decoded path, e.g. ``/v1/AUTH_a/c/prefix-``; missing values are empty, ``0``, ``0``
and ``0``), and the browser posts it as ``multipart/form-data`` to that path. The fields
``redirect``, ``max_file_size``, ``max_file_count``, ``expires``, ``signature`` (hex, or
``<digest>:<base64>``) and optionally ``x_delete_at`` / ``x_delete_after`` come before the
files; each file field becomes the object ``<path>[/]<filename>``, stored by a PUT sub-request
through the rest of the pipeline (``swift.source`` ``FP``), so quotas and the object's limits
apply as to any upload.

Streamed: the body is read as the file parts go to the nodes (`multipart.MultipartParser`
holds at most one read of the client's body plus a boundary), a field's value is kept up to
4096 bytes and only the fields formpost uses are kept, so a request costs a bounded amount of
memory whatever its size.

Answers, Swift's: ``401 FormPost: Invalid Signature`` / ``Form Expired``; ``400 FormPost: …``
for a value that is not a number, a file over ``max_file_size`` and a body that is not
multipart; after the files, the last upload's status as text (``201 Created``), or with
``redirect`` a ``303`` to ``<redirect>?status=<code>&message=<text>``; too many files is
``400 … max file count exceeded`` and a form without files ``400 … no files to process``
(through the redirect when there is one). A form refused part-way takes back the objects it
had already stored (DELETE sub-requests), so a refused form leaves nothing behind; Swift
keeps those (docs/access.rst).
"""

from __future__ import annotations

import binascii
import hmac
from collections.abc import Callable, Mapping
from html import escape
from http.client import responses
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from txstore.common import config as c
from txstore.common.paths import BadPath
from txstore.common.streaming import BodyIncomplete
from txstore.interfaces import IApp, IByteSource
from txstore.middleware import tempurl
from txstore.middleware.base import Middleware
from txstore.middleware.multipart import (
    END, NEED_DATA, PART_END, Data, MalformedMultipart, MultipartParser, PartStart, parse_parameters,
)
from txstore.proxy import subrequest
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

log = Logger()

MAX_VALUE_LENGTH = 4096  # of a field's value, as Swift's
# The fields formpost reads; others are skipped (never kept: a form of a million fields costs nothing).
FIELDS = frozenset({"redirect", "max_file_size", "max_file_count", "expires", "signature", "x_delete_at",
                    "x_delete_after", "content-type", "content-encoding"})
SOURCE = "FP"

OPTIONS = (
    c.Option("allowed_digests", tempurl.digests, tempurl.SUPPORTED_DIGESTS,
             doc="The HMAC digests honoured: sha1 (deprecated), sha256, sha512."),
)


class FormInvalid(Exception):
    """400 ``FormPost: <reason>``."""


class FormUnauthorized(Exception):
    """401 ``FormPost: <Reason>``."""


class FileTooLarge(BodyIncomplete):
    """A file part ran past max_file_size: its PUT fails (nothing stored) and the form is refused."""


class BadBody(BodyIncomplete):
    """The multipart body broke inside a file part: its PUT fails and the form is refused."""


class FormReader:
    """The parts of a form read from the client's body as they are asked for."""

    def __init__(self, source, parser: MultipartParser) -> None:
        self.source, self.parser = source, parser
        self._in_part = False
        self._ended = False

    async def _event(self):
        while True:
            event = self.parser.next_event()
            if event is not NEED_DATA:
                return event
            if self._ended:
                raise MalformedMultipart("the body ends too early")  # the parser said so already
            chunk = await self.source.read()
            if chunk:
                self.parser.feed(chunk)
            else:
                self._ended = True
                self.parser.feed_eof()

    async def next_part(self) -> dict[str, str] | None:
        """The headers of the next part (what is left of this one skipped), None after the last."""
        while self._in_part:
            await self.read()
        event = await self._event()
        if event is END:
            return None
        if not isinstance(event, PartStart):
            raise MalformedMultipart("unexpected data")
        self._in_part = True
        return event.headers

    async def read(self) -> bytes:
        """The next piece of the current part's data; ``b""`` at its end."""
        if not self._in_part:
            return b""
        event = await self._event()
        if event is PART_END:
            self._in_part = False
            return b""
        assert isinstance(event, Data)
        return event.data

    async def value(self) -> str:
        """The current part as a field's value: its first MAX_VALUE_LENGTH bytes, the rest skipped."""
        kept = bytearray()
        while data := await self.read():
            if len(kept) < MAX_VALUE_LENGTH:
                kept += data[:MAX_VALUE_LENGTH - len(kept)]
        return kept.decode("utf-8", "replace")


@implementer(IByteSource)
class FileBody:
    """One file part as a PUT's body: at most ``cap`` bytes, else the read fails (nothing stored)."""

    def __init__(self, reader: FormReader, cap: int) -> None:
        self.reader, self.cap = reader, cap
        self.read_bytes = 0
        self.error: Exception | None = None

    def read(self) -> Deferred:
        return Deferred.fromCoroutine(self._read())

    async def _read(self) -> bytes:
        try:
            data = await self.reader.read()
        except MalformedMultipart as err:
            self.error = err
            raise BadBody(str(err)) from None
        self.read_bytes += len(data)
        if self.read_bytes > self.cap:
            self.error = FormInvalid("max_file_size exceeded")
            raise FileTooLarge("max_file_size exceeded")
        return data

    def stop(self) -> None:
        """The PUT needs no more: the reader skips the rest of the part when asked for the next."""


def _text(status: int, body: str) -> SwiftResponse:
    """Swift's plain answers: the text as the whole body, as its clients and tests compare it."""
    return SwiftResponse(status, HeaderMap({"Content-Type": "text/plain"}), body.encode("utf-8"))


def form_signature(key: bytes, path: str, redirect: str, max_file_size: str, max_file_count: str,
                   expires: str, digest: str) -> str:
    """The hex HMAC a form carries (what ``swift-form-signature`` computes)."""
    message = f"{path}\n{redirect}\n{max_file_size}\n{max_file_count}\n{expires}"
    return hmac.new(key, message.encode("utf-8", "surrogateescape"), digest).hexdigest()


@implementer(IApp)
class FormPost:
    def __init__(self, app, settings: Mapping[str, Any], keys: tempurl.KeySource, clock: Callable[[], float]) -> None:
        self.app = app
        self.allowed_digests = frozenset(settings["allowed_digests"])
        self.keys = keys
        self.clock = clock

    def __call__(self, request: SwiftRequest):
        if request.method != "POST":
            return self.app(request)
        kind, params = parse_parameters(request.headers.get("Content-Type") or "")
        if kind != "multipart/form-data":
            return self.app(request)
        return self._form(request, params.get("boundary"))

    async def _form(self, request: SwiftRequest, boundary: str | None) -> SwiftResponse:
        try:
            version, account, container, _ = request.split(1, 4)
        except BadPath:
            return await self.app(request)
        if version != "v1":
            return await self.app(request)
        if container is None:
            request.discard_body()
            return _text(400, "FormPost: the form's URL must name a container")
        stored: list[str] = []
        refused = True
        try:
            if not boundary:
                raise MalformedMultipart("invalid starting boundary")
            try:
                parser = MultipartParser(boundary.encode("latin-1"))
            except UnicodeEncodeError:
                raise MalformedMultipart("invalid boundary") from None
            response, refused = await self._translate(request, FormReader(request.body, parser), account,
                                                      container, stored)
        except (MalformedMultipart, FormInvalid) as err:
            response = _text(400, f"FormPost: {err}")
        except FormUnauthorized as err:
            response = _text(401, f"FormPost: {str(err).title()}")
        except BodyIncomplete as err:
            response = _text(499, f"Client Disconnect: {err}")
        if refused:
            request.discard_body()
            await self._take_back(request, stored)
        return response

    async def _translate(self, request: SwiftRequest, reader: FormReader, account: str, container: str,
                         stored: list[str]) -> tuple[SwiftResponse, bool]:
        account_meta = await self.keys.account_meta(request, account)
        container_meta = await self.keys.container_meta(request, account, container)
        keys = ([(key, tempurl.ACCOUNT_SCOPE) for key in tempurl.keys_of(account_meta)]
                + [(key, tempurl.CONTAINER_SCOPE) for key in tempurl.keys_of(container_meta)])
        attributes: dict[str, str] = {}
        status, message = 0, ""
        file_count = 0
        while (headers := await reader.next_part()) is not None:
            disposition, params = parse_parameters(headers.get("content-disposition", ""))
            if not (disposition == "form-data" and params.get("filename")):
                value = await reader.value()
                name = params.get("name", "").lower()
                if name in FIELDS:
                    attributes[name] = value.rstrip("\r\n-")
                continue
            file_count += 1
            try:
                allowed = int(attributes.get("max_file_count") or 0)
            except ValueError:
                raise FormInvalid("max_file_count not an integer") from None
            if file_count > allowed:
                status, message = 400, "max file count exceeded"
                break
            file_attributes = dict(attributes, filename=params["filename"])
            if "content-type" not in attributes and "content-type" in headers:
                file_attributes["content-type"] = headers["content-type"] or "application/octet-stream"
            if "content-encoding" not in attributes and "content-encoding" in headers:
                file_attributes["content-encoding"] = headers["content-encoding"]
            status, path = await self._upload(request, reader, file_attributes, keys)
            if status // 100 != 2:
                break
            stored.append(path)
        if not status:
            status, message = 400, "no files to process"
        return self._answer(attributes.get("redirect"), status, message), status // 100 != 2

    def _answer(self, redirect: str | None, status: int, message: str) -> SwiftResponse:
        line = f"{status} {responses.get(status, 'Unknown')}"
        if not redirect:
            body = line + (f"\r\nFormPost: {message.title()}" if message else "")
            response = SwiftResponse(status, HeaderMap({"Content-Type": "text/plain"}), body.encode("utf-8"))
        else:
            location = redirect + ("&" if "?" in redirect else "?")
            location += f"status={quote(str(status))}&message={quote(message)}"
            body = f'<html><body><p><a href="{escape(location)}">Click to continue...</a></p></body></html>'
            response = SwiftResponse(303, HeaderMap({"Location": location, "Content-Type": "text/html"}),
                                     body.encode("utf-8"))
        return response

    def _check(self, request: SwiftRequest, attributes: Mapping[str, str], keys) -> tempurl.Scope:
        """The scope a file's PUT gets when the form's fields are valid and signed; else raise."""
        if not keys:
            raise FormUnauthorized("invalid signature")
        for name in ("max_file_size", "x_delete_at", "x_delete_after"):
            if name in attributes:
                try:
                    int(attributes[name] or ("0" if name == "max_file_size" else ""))
                except ValueError:
                    raise FormInvalid({"max_file_size": "max_file_size not an integer",
                                       "x_delete_at": "x_delete_at not an integer: Unix timestamp required.",
                                       "x_delete_after": "x_delete_after not an integer: Number of seconds required.",
                                       }[name]) from None
        try:
            expires = int(attributes.get("expires") or 0)
        except ValueError:
            raise FormInvalid("expired not an integer") from None
        if expires < self.clock():
            raise FormUnauthorized("form expired")
        try:
            digest, given = tempurl.parse_signature(attributes.get("signature", ""))
        except (ValueError, binascii.Error):
            raise FormUnauthorized("invalid signature") from None
        if digest not in self.allowed_digests:
            raise FormUnauthorized("invalid signature")
        path = request.decoded_path
        signed = (attributes.get("redirect") or "", attributes.get("max_file_size") or "0",
                  attributes.get("max_file_count") or "0", attributes.get("expires") or "0")
        account, container = request.split(3, 4)[1:3]
        for key, scope in keys:
            if hmac.compare_digest(given, form_signature(key, path, *signed, digest)):
                return tempurl.Scope(account, None if scope == tempurl.ACCOUNT_SCOPE else container)
        raise FormUnauthorized("invalid signature")

    async def _upload(self, request: SwiftRequest, reader: FormReader, attributes: Mapping[str, str],
                      keys) -> tuple[int, str]:
        """PUT the current file part; (the PUT's status, the object's path)."""
        scope = self._check(request, attributes, keys)
        path = request.decoded_path
        if not path.endswith("/") and path.count("/") < 4:
            path += "/"
        path += attributes["filename"]
        headers = HeaderMap({"Transfer-Encoding": "chunked",
                             "User-Agent": f"{request.headers.get('User-Agent') or ''} FormPost".strip()})
        if "x_delete_at" in attributes:
            headers["X-Delete-At"] = str(int(attributes["x_delete_at"]))
        if "x_delete_after" in attributes:
            headers["X-Delete-After"] = str(int(attributes["x_delete_after"]))
        if "content-type" in attributes:
            headers["Content-Type"] = attributes["content-type"] or "application/octet-stream"
        if "content-encoding" in attributes:
            headers["Content-Encoding"] = attributes["content-encoding"]
        body = FileBody(reader, int(attributes.get("max_file_size") or 0))
        put = subrequest.make(request, "PUT", path, source=SOURCE, headers=headers, body=body, system=True)
        put.environ[subrequest.AUTHORIZE] = scope
        try:
            response = await self.app(put)
        except BodyIncomplete:
            if body.error is not None:  # the stage below let the body's failure through
                raise body.error from None
            raise
        response.discard_body()
        if body.error is not None:
            raise body.error
        return response.status, path

    async def _take_back(self, request: SwiftRequest, stored: list[str]) -> None:
        """Delete what a refused form stored: a refused form leaves nothing behind."""
        for path in stored:
            gone = subrequest.make(request, "DELETE", path, source=SOURCE, system=True)
            try:
                response = await self.app(gone)
                response.discard_body()
            except Exception:
                log.failure("{trans_id}: formpost could not take back {path}", trans_id=request.trans_id, path=path)
                continue
            if response.status // 100 != 2 and response.status != 404:
                log.warn("{trans_id}: formpost could not take back {path}: {status}", trans_id=request.trans_id,
                         path=path, status=response.status)


def info_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What ``/info`` lists under ``formpost``, as Swift does."""
    found: dict[str, Any] = {"allowed_digests": sorted(settings["allowed_digests"])}
    deprecated = sorted(d for d in settings["allowed_digests"] if d in tempurl.DEPRECATED_DIGESTS)
    if deprecated:
        found["deprecated_digests"] = deprecated
    return found


def _build(app, settings: dict[str, Any], proxy) -> FormPost:
    proxy.info.register("formpost", **info_of(settings))
    return FormPost(app, settings, tempurl.CachedKeys(proxy.context), proxy.clock)


middleware = Middleware("formpost", _build, options=OPTIONS)
