# -*- test-case-name: txstore.test.test_web -*-
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
    Write one access line when ``request`` finishes (or its client goes away): client, method,
    path, status, bytes sent, duration and transaction id. ``started`` is a monotonic time.
    """

    def write(result: object) -> None:
        address = request.getClientAddress()
        logger.info(
            "{client} {method} {path} {status} {sent} {duration:.4f}s {trans_id}{aborted}",
            client=getattr(address, "host", "-"),
            method=request.method.decode("ascii", "replace"),
            path=request.uri.decode("latin-1"),
            status=request.code,
            sent=request.sentLength,
            duration=time.monotonic() - started,
            trans_id=trans_id,
            aborted="" if result is None else " (client gone)",
        )

    request.notifyFinish().addBoth(write)
