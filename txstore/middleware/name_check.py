# -*- test-case-name: txstore.test.unit.test_small_middlewares -*-
"""
name_check: Swift's filter that refuses names an operator does not want stored (off by default,
as in Swift: add it to the pipeline to use it). A request whose decoded path holds one of
``forbidden_chars``, is longer than ``maximum_length`` or matches ``forbidden_regexp`` (by
default ``.`` and ``..`` segments) is ``400`` with Swift's text, before anything else sees it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import succeed
from zope.interface import implementer

from txstore.common import config as c
from txstore.common.paths import BadPath
from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

FORBIDDEN_CHARS = "'\"`<>"
FORBIDDEN_REGEXP = r"/\./|/\.\./|/\.$|/\.\.$"


def regexp(raw: str, _base: Any) -> str:
    if raw:
        try:
            re.compile(raw)
        except re.error as err:
            raise c.BadValue(f"not a regular expression: {err}") from None
    return raw


OPTIONS = (
    c.Option("forbidden_chars", c.string, FORBIDDEN_CHARS, doc="Characters no name may hold."),
    c.Option("maximum_length", c.integer(0), 255, doc="The longest decoded path (0: any)."),
    c.Option("forbidden_regexp", regexp, FORBIDDEN_REGEXP, doc="A pattern no path may match (empty: none)."),
)


@implementer(IApp)
class NameCheck:
    def __init__(self, app, settings: Mapping[str, Any]) -> None:
        self.app = app
        self.chars = settings["forbidden_chars"]
        self.maximum = settings["maximum_length"]
        self.pattern = settings["forbidden_regexp"]
        self.compiled = re.compile(self.pattern) if self.pattern else None

    def __call__(self, request: SwiftRequest):
        try:
            path = request.decoded_path
        except BadPath:
            return self.app(request)  # the application answers Swift's 412
        if any(ch in path for ch in self.chars):
            reason = f"Object/Container/Account name contains forbidden chars from {self.chars}"
        elif self.maximum and len(path) > self.maximum:
            reason = f"Object/Container/Account name longer than the allowed maximum {self.maximum}"
        elif self.compiled is not None and self.compiled.search(path):
            reason = ("Object/Container/Account name contains a forbidden substring from regular expression "
                      f"{self.pattern}")
        else:
            return self.app(request)
        request.discard_body()
        return succeed(SwiftResponse(400, HeaderMap({"Content-Type": "text/plain"}), reason.encode("utf-8")))


def _build(app, settings: dict[str, Any], proxy) -> NameCheck:
    proxy.info.register("name_check", forbidden_chars=settings["forbidden_chars"],
                        maximum_length=settings["maximum_length"], forbidden_regexp=settings["forbidden_regexp"])
    return NameCheck(app, settings)


middleware = Middleware("name_check", _build, options=OPTIONS)
