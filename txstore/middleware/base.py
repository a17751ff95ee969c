# -*- test-case-name: txstore.test.unit.test_pipeline -*-
"""
What a middleware module exports: a `Middleware` naming how to build its `IApp`; and what most
middlewares ask of a request first (`api_path`, `ApiMiddleware`) and how they read a body whole
(`read_whole`, `read_source`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen
from zope.interface import implementer

from txstore.common.paths import BadPath
from txstore.interfaces import IApp, IByteSource, IMiddleware
from txstore.proxy.messages import SwiftResponse


@implementer(IMiddleware)
@frozen
class Middleware:
    """
    ``build(app, settings, proxy)`` wraps ``app``; ``options`` and ``patterns`` declare the
    ``[filter:…]`` section's options (``txstore.common.config`` ``Option``/``Pattern``).
    """

    name: str
    factory: Callable[[Any, dict[str, Any], Any], Any]
    options: tuple = ()
    patterns: tuple = ()
    doc: str = ""

    def build(self, app, settings, proxy):
        return self.factory(app, dict(settings), proxy)


def api_path(request, depth: int) -> tuple[str, str | None, str | None] | None:
    """
    ``(account, container, obj)`` of a Swift API request, ``/v1/<account>[/<container>[/<object>]]``
    naming at least ``depth`` of them (1: an account, 2: a container, 3: an object), the absent
    ones None. None for any other path, a bad one included: the middleware passes the request on
    as it came, and the application answers a bad path.
    """
    try:
        version, account, container, obj = request.split(depth + 1, 4)
    except BadPath:
        return None
    if version != "v1":
        return None
    return account, container, obj


@implementer(IApp)
class ApiMiddleware:
    """
    A middleware of the Swift API: a request naming at least `depth` of account, container and
    object (`api_path`) is the subclass's `handle`; any other is the next stage's call itself
    (no coroutine of its own), the middleware's ``app``.
    """

    depth = 1
    app: Any

    def __call__(self, request):
        path = api_path(request, self.depth)
        if path is None:
            return self.app(request)
        return self.handle(request, *path)

    def handle(self, request, account: str, container: str | None, obj: str | None):
        """Answer a request for ``/v1/account[/container[/obj]]``, as `IApp.__call__` does."""
        raise NotImplementedError


async def read_source(source: IByteSource, limit: int | None = None) -> bytes:
    """
    A body source read whole; OverflowError past ``limit`` bytes. The source is stopped when the
    read fails (or overflows).
    """
    pieces, size = [], 0
    try:
        while chunk := await source.read():
            size += len(chunk)
            if limit is not None and size > limit:
                raise OverflowError(f"more than {limit} bytes")
            pieces.append(chunk)
    except BaseException:
        source.stop()
        raise
    return b"".join(pieces)


async def read_whole(response: SwiftResponse, limit: int | None = None) -> bytes:
    """A response's whole body, streamed or not; OverflowError past ``limit`` bytes."""
    if not response.streamed:
        if limit is not None and len(response.body) > limit:
            raise OverflowError(f"more than {limit} bytes")
        return response.body
    return await read_source(response.body, limit)


class CachedContainers:
    """
    The proxy's cached container info (`txstore.proxy.controllers.base.container_info`), as a
    callable ``(request, account, container) -> Awaitable[ContainerInfo]`` a middleware is given
    (tests give a fake).
    """

    def __init__(self, context) -> None:
        self.context = context

    async def __call__(self, request, account: str, container: str):
        from txstore.proxy.controllers.base import container_info  # the middlewares import the proxy late

        return await container_info(self.context, account, container, request.trans_id)
