# -*- test-case-name: txstore.test.unit.test_small_middlewares -*-
"""
crossdomain: ``GET /crossdomain.xml`` answers the cross-domain policy that Flash and Silverlight
clients ask for before using another domain, Swift's: the configured
``<allow-access-from …/>`` lines inside a ``<cross-domain-policy>`` document. Any other request
passes untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import succeed
from zope.interface import implementer

from txstore.common import config as c
from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

PATH = "/crossdomain.xml"
DEFAULT_POLICY = '<allow-access-from domain="*" secure="false" />'
OPTIONS = (
    c.Option("cross_domain_policy", c.nonempty_string, DEFAULT_POLICY,
             doc="The policy's lines (XML elements; newlines as in a multi-line value)."),
)


def document(policy: str) -> bytes:
    return ('<?xml version="1.0"?>\n'
            '<!DOCTYPE cross-domain-policy SYSTEM "http://www.adobe.com/xml/dtds/cross-domain-policy.dtd" >\n'
            f"<cross-domain-policy>\n{policy}\n</cross-domain-policy>").encode("utf-8")


@implementer(IApp)
class CrossDomain:
    def __init__(self, app, settings: Mapping[str, Any]) -> None:
        self.app = app
        self.body = document(settings["cross_domain_policy"])

    def __call__(self, request: SwiftRequest):
        if request.path != PATH or request.method not in ("GET", "HEAD"):
            return self.app(request)
        request.discard_body()
        headers = HeaderMap({"Content-Type": "application/xml", "Content-Length": str(len(self.body))})
        return succeed(SwiftResponse(200, headers, b"" if request.method == "HEAD" else self.body))


def _build(app, settings: dict[str, Any], proxy) -> CrossDomain:
    proxy.info.register("crossdomain", cross_domain_policy=settings["cross_domain_policy"])
    return CrossDomain(app, settings)


middleware = Middleware("crossdomain", _build, options=OPTIONS)
