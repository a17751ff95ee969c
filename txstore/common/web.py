# -*- test-case-name: txstore.test.unit.test_web -*-
"""
HTTP plumbing shared by the proxy and the storage node: the errors a handler raises to be
answered as short plain text that says why (never Twisted's HTML pages) or to have a begun
response aborted, and the access line. Each process's edge writes the answers
(``txstore.proxy.edge``, ``txstore.storage.edge``).
"""

from __future__ import annotations

import time

from twisted.logger import Logger
from twisted.web.http import Request


class HTTPError(Exception):
    """Raised by handlers to answer ``status`` with a one-line ``reason`` (and headers)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class ResponseAborted(Exception):
    """
    Raised when a response has begun and cannot be completed truthfully (a body that fails its
    checksum, a disk error mid-read): the connection is aborted, so the client sees a broken
    response, never a complete wrong one.
    """


def log_access(logger: Logger, request: Request, trans_id: str, started: float) -> None:
    """
    Write one access line (`access_line`) when ``request`` finishes (or its client goes away).
    ``started`` is a monotonic time.
    """
    request.notifyFinish().addBoth(lambda result: log_line(logger, access_line(request, trans_id, started, result)))


def access_line(request: Request, trans_id: str, started: float, result: object = None) -> str:
    """
    A finished request's access line: client, method, path, status, bytes sent, duration and
    transaction id, and ``(client gone)`` when ``result`` (what ``notifyFinish`` gave) is a
    failure. One f-string: twisted.logger's field formatting costs twice as much, on every
    request a node serves (docs/metrics.rst).
    """
    address = request.getClientAddress()
    return (
        f"{getattr(address, 'host', '-')} {request.method.decode('ascii', 'replace')} "
        f"{request.uri.decode('latin-1')} {request.code} {request.sentLength} "
        f"{time.monotonic() - started:.4f}s {trans_id}{'' if result is None else ' (client gone)'}"
    )


def log_line(logger: Logger, line: str, **fields: object) -> None:
    """
    Log the access line ``line`` as it is, at info level, ``fields`` kept in the event for
    observers that want them. The servers' own writer (`txstore.common.log_observer`) takes the
    line from the event's ``access_line``; for any other observer the line is its own format
    string (braces doubled): a format without fields costs twisted.logger's formatter one
    parse, where ``"{line}"`` costs a field lookup, a conversion and a call wrapper.
    """
    logger.info(line.replace("{", "{{").replace("}", "}}"), access_line=line, **fields)
