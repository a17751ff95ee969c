# -*- test-case-name: txstore.test.test_pipeline -*-
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
