# -*- test-case-name: txstore.test.unit.test_proxy_controllers -*-
"""One Swift API request as the controllers see it: the decoded names and who is asking."""

from __future__ import annotations

from attrs import frozen

from txstore.common.web import HTTPError
from txstore.proxy.messages import SwiftRequest

APIError = HTTPError  # the controllers' name for it


@frozen
class APIRequest:
    request: SwiftRequest
    account: str
    container: str | None
    obj: str | None
    is_owner: bool = False  # Swift's swift_owner: may see and set the privileged headers

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def trans_id(self) -> str:
        return self.request.trans_id

    @property
    def query(self) -> str:
        """The raw query string with its leading "?" (or empty), as the nodes are sent it."""
        return "?" + self.request.query if self.request.query else ""

    @property
    def body(self):
        return self.request.body

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)

    def flag(self, name: str) -> bool:
        return self.request.flag(name)

    def headers(self) -> list[tuple[str, str]]:
        return self.request.headers.items()

    def text_headers(self) -> list[tuple[str, str]]:
        """The headers with their values read as UTF-8 (bytes that are not survive as surrogates)."""
        return [(name, value.encode("latin-1").decode("utf-8", "surrogateescape")) for name, value in self.headers()]

    def passthrough(self, *prefixes: str, names: tuple[str, ...] = ()) -> dict[str, str]:
        """The client's headers that start with one of ``prefixes`` or are in ``names``."""
        lowered = tuple(p.lower() for p in prefixes)
        wanted = {n.lower() for n in names}
        return {name: value for name, value in self.headers()
                if name.lower().startswith(lowered) or name.lower() in wanted}
