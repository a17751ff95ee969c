# -*- test-case-name: txstore.test.unit.test_middleware -*-
"""
proxy_logging: one access line per request, written when its response body has gone out (or
stopped): client, method, path, status, bytes sent, duration, transaction id, and for a
sub-request the middleware that made it (``swift.source``).

As in Swift it appears twice in the pipeline: the outer one logs what clients asked, the inner
one (just before the application) the sub-requests that middlewares make; a request the outer
one logs is not logged again by the inner one.
"""

from __future__ import annotations

import json
import time
from inspect import getattr_static
from urllib.parse import quote

from twisted.logger import Logger
from zope.interface import implementer

from txstore.common import config as c
from txstore.common.web import log_line
from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.messages import SwiftRequest, SwiftResponse, WatchedSource

LOGGED = "swift.proxy_access_log_made"
# Query parameters that are credentials: only their first 16 characters are logged, as Swift
# logs them, so an access log cannot be replayed as a temp URL (tokens alike).
SENSITIVE = ("temp_url_sig",)
REVEALED = 16


@implementer(IApp)
class ProxyLogging:
    access = Logger(namespace="txstore.proxy.access")

    def __init__(self, app, metrics=None, template: str | None = None, as_json: bool = False,
                 reveal: int = REVEALED) -> None:
        self.app = app
        self.metrics = metrics  # a ServerMetrics (the proxy's /metrics), or None
        self.template = template  # Swift's log_msg_template; None: txstore's compact line
        self.as_json = as_json  # one JSON object of every field per line
        self.reveal = reveal  # characters of a token or a signature that are logged
        # The class's Logger itself: read through self, a Logger is a descriptor that makes a
        # new one at each read, named after the class instead of txstore.proxy.access.
        self._access = getattr_static(self, "access")

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if request.environ.get(LOGGED):
            return await self.app(request)
        request.environ[LOGGED] = True
        started = time.monotonic()
        try:
            response = await self.app(request)
        except BaseException:
            self._write(request, None, 0, started, " (failed)")
            raise
        ttfb = time.monotonic() - started
        if self.metrics is not None:  # the answer's head is ready: its time to first byte
            self.metrics.first_byte(request.method, response.status, ttfb,
                                    source=request.environ.get("swift.source") or "")
        if response.streamed:
            response.body = _Counted(response.body, lambda sent, note: self._write(
                request, response.status, sent, started, note, ttfb))
        else:
            sent = 0 if request.method == "HEAD" else len(response.body)
            self._write(request, response.status, sent, started, "", ttfb)
        return response

    def _write(self, request: SwiftRequest, status: int | None, sent: int, started: float, note: str,
               ttfb: float | None = None) -> None:
        source = request.environ.get("swift.source")
        duration = time.monotonic() - started
        if self.template is not None or self.as_json:
            fields = access_fields(request, status, sent, duration, ttfb, note, self.reveal)
            line = json.dumps(fields, sort_keys=True) if self.as_json else self.template.format_map(fields)
            log_line(self._access, line)
        else:
            # The line is rendered here, in one f-string: twisted's formatter would take the nine
            # fields one by one through string.Formatter, about half of what a line costs (a
            # request with a sub-request, S3's, writes two). The fields stay in the event.
            client, path, shown = request.client_ip, _revealed(request.uri, self.reveal), "-" if status is None else status
            source_note = f" {source}" if source else ""
            log_line(
                self._access,
                f"{client} {request.method} {path} {shown} {sent} {duration:.4f}s {request.trans_id}{source_note}{note}",
                client=client, method=request.method, path=path, status=shown, sent=sent, duration=duration,
                trans_id=request.trans_id, source=source_note, note=note,
            )
        if self.metrics is not None:
            length = request.header("Content-Length")
            received = int(length) if length is not None and length.isdigit() else 0
            self.metrics.observe(request.method, status, duration, sent, received, source=source or "")
            if self.metrics.statsd is not None and not source:
                self.metrics.statsd_request(f"proxy-server.{_kind(request)}", request.method, status, duration,
                                            ttfb, sent + received)


# The fields a log_msg_template may name, Swift's proxy_logging names (a subset).
FIELDS = (
    "client_ip", "remote_addr", "datetime", "start_time", "end_time", "method", "path", "protocol",
    "status_int", "referer", "user_agent", "auth_token", "bytes_recvd", "bytes_sent", "client_etag",
    "transaction_id", "request_time", "ttfb", "source", "log_info",
)


def access_fields(request: SwiftRequest, status: int | None, sent: int, duration: float, ttfb: float | None,
                  note: str, reveal: int = REVEALED) -> dict[str, str]:
    """One request's access-log fields, as text ('-' for what is not known), Swift's names."""
    now = time.time()
    forwarded = (request.header("X-Forwarded-For") or "").split(",")[0].strip()
    length = request.header("Content-Length")
    token = request.header("X-Auth-Token") or request.header("X-Storage-Token") or ""

    def text(value: str | None) -> str:
        return quote(value, safe="/:@=,;!$&'()*+~") if value else "-"

    return {
        "client_ip": forwarded or request.client_ip,
        "remote_addr": request.client_ip,
        "datetime": time.strftime("%d/%b/%Y/%H/%M/%S", time.gmtime(now)),
        "start_time": f"{now - duration:.9f}",
        "end_time": f"{now:.9f}",
        "method": request.method,
        "path": text(_revealed(request.uri, reveal)),
        "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        "status_int": "-" if status is None else str(status),
        "referer": text(request.header("Referer")),
        "user_agent": text(request.header("User-Agent")),
        "auth_token": f"{token[:reveal]}..." if len(token) > reveal else token or "-",
        "bytes_recvd": length if length is not None and length.isdigit() else "0",
        "bytes_sent": str(sent),
        "client_etag": text(request.header("ETag")),
        "transaction_id": request.trans_id,
        "request_time": f"{duration:.4f}",
        "ttfb": "-" if ttfb is None else f"{ttfb:.4f}",
        "source": request.environ.get("swift.source") or "-",
        "log_info": note.strip(" ()") or "-",
    }


def template(raw: str, base) -> str:
    """A log_msg_template: Swift's field names in braces, checked when the config is loaded."""
    sample = dict.fromkeys(FIELDS, "-")
    try:
        raw.format_map(sample)
    except KeyError as error:
        raise c.BadValue(f"unknown field {{{error.args[0]}}} (known: {' '.join(FIELDS)})") from None
    except (ValueError, IndexError) as error:
        raise c.BadValue(f"not a template: {error}") from None
    return raw


OPTIONS = (
    c.Option("log_msg_template", template, None,
             doc="The access line, Swift's field names in braces (default: txstore's compact line)."),
    c.Option("access_log_format", c.choice("text", "json"), "text",
             doc="json: one JSON object of every field per line instead."),
    c.Option("reveal_sensitive_prefix", c.integer(0, 64), REVEALED,
             doc="Characters of a token or a temp URL signature that are logged."),
)


def _kind(request: SwiftRequest) -> str:
    """Swift's StatsD type of a request: account, container or object (else the path's first name)."""
    parts = request.path.split("/")  # "", "v1", account, container, object...
    if len(parts) > 2 and parts[1] in ("v1", "v1.0") and parts[2]:
        if len(parts) > 4 and "/".join(parts[4:]):
            return "object"
        return "container" if len(parts) > 3 and parts[3] else "account"
    return (parts[1] if len(parts) > 1 else "") or "root"


def _revealed(uri: str, reveal: int = REVEALED) -> str:
    path, mark, query = uri.partition("?")
    if not mark or not any(name in query for name in SENSITIVE):
        return uri
    params = []
    for param in query.split("&"):
        name, equals, value = param.partition("=")
        if equals and name in SENSITIVE and len(value) > reveal:
            param = f"{name}={value[:reveal]}..."
        params.append(param)
    return f"{path}?{'&'.join(params)}"


class _Counted(WatchedSource):
    """Reports the bytes read from a body once, at its end or when it stops."""

    def __init__(self, source, report) -> None:
        super().__init__(source)
        self._report = report
        self._done = False

    def ended(self, sent: int) -> None:
        self._finish(sent, "")

    def failed(self, failure, sent: int):
        self._finish(sent, " (body broke off)")
        return failure

    def stopped(self, sent: int) -> None:
        self._finish(sent, " (client gone)")

    def _finish(self, sent: int, note: str) -> None:
        if not self._done:
            self._done = True
            self._report(sent, note)


def _build(app, settings, proxy) -> ProxyLogging:
    return ProxyLogging(app, proxy.context.metrics, settings["log_msg_template"],
                        settings["access_log_format"] == "json", settings["reveal_sensitive_prefix"])


middleware = Middleware("proxy_logging", _build, options=OPTIONS)
