# -*- test-case-name: txstore.test.unit.test_pipeline -*-
"""What a middleware module exports: a `Middleware` naming how to build its `IApp`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen
from zope.interface import implementer

from txstore.interfaces import IMiddleware


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
