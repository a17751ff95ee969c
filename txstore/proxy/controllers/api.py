# -*- test-case-name: txstore.test.test_proxy -*-
"""One client request as the controllers see it: the decoded names and who is asking."""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.web.http import Request

from txstore.common.web import HTTPError


APIError = HTTPError  # the controllers' name for it


@frozen
class APIRequest:
    request: Request
    method: str
    account: str
    container: str | None
    obj: str | None
    query: str  # the raw query string, with its leading "?" (or empty)
    trans_id: str
    identity: Any = None
    copy_from: tuple[str, str, str] | None = None  # (account, container, object) of a server-side copy

    def header(self, name: str) -> str | None:
        value = self.request.getHeader(name.encode("latin-1"))
        return None if value is None else value.decode("utf-8", "surrogateescape")

    def headers(self) -> list[tuple[str, str]]:
        items = []
        for name, values in self.request.requestHeaders.getAllRawHeaders():
            for value in values:
                items.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))
        return items

    def passthrough(self, *prefixes: str, names: tuple[str, ...] = ()) -> dict[str, str]:
        """The client's headers that start with one of ``prefixes`` or are in ``names``."""
        lowered = tuple(p.lower() for p in prefixes)
        wanted = {n.lower() for n in names}
        out = {}
        for name, value in self.headers():
            lower = name.lower()
            if lower.startswith(lowered) or lower in wanted:
                out[name] = value
        return out
