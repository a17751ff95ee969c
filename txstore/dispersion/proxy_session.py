# -*- test-case-name: txstore.test.unit.test_dispersion -*-
"""
The tool's side of the Swift API: a tempauth v1.0 login, then PUTs and listings through the
proxy, as the ``swift`` CLI does them.

Every exchange (connect, send, the whole answer) must end within ``timeout`` seconds. Writes
that fail for a reason worth trying again (no answer, a 5xx) are tried ``retries`` more times
after a short, growing pause; each retry is counted, as Swift's tools count them.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import treq
from attrs import define, field
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool

from txstore.common.backend_client import BackendResponse


class ProxyError(Exception):
    """The proxy could not be reached, or refused what was asked; the message says which."""


def pause_before(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): 0.1, 0.2, 0.4 ... at most 2."""
    return min(2.0, 0.1 * 2 ** (attempt - 1))


@define
class ProxySession:
    """One login's storage URL and token, and a connection pool closed by `close`."""

    reactor: Any
    timeout: float
    retries: int = 0
    storage_url: str = ""
    token: str = ""
    retries_done: int = 0
    http: Any = None  # a treq HTTPClient (tests: a StubTreq); one of its own by default
    _pool: HTTPConnectionPool | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.http is None:
            self._pool = HTTPConnectionPool(self.reactor, persistent=True)
            self.http = HTTPClient(Agent(self.reactor, pool=self._pool))

    @property
    def account(self) -> str:
        """The account the storage URL names (its last path segment): what the ring hashes."""
        return unquote(urlsplit(self.storage_url).path.rstrip("/").rsplit("/", 1)[-1])

    async def exchange(self, method: str, url: str, headers: dict[str, str] | None = None,
                       body: bytes | None = None) -> BackendResponse:
        """One request, its whole answer read within ``timeout`` (`ProxyError` otherwise)."""

        async def run() -> BackendResponse:
            response = await self.http.request(method, url, headers=headers or {}, data=body)
            content = await treq.content(response)
            got = {k.decode("latin-1").lower(): v[-1].decode("latin-1") for k, v in response.headers.getAllRawHeaders()}
            return BackendResponse(response.code, got, content)

        attempt = Deferred.fromCoroutine(run())
        attempt.addTimeout(self.timeout, self.reactor)
        try:
            return await attempt
        except Exception as err:
            raise ProxyError(f"{method} {url}: {err or type(err).__name__}") from None

    async def login(self, auth_url: str, user: str, key: str) -> None:
        """tempauth v1.0: ``X-Auth-User`` / ``X-Auth-Key`` for ``X-Storage-Url`` and a token."""
        answer = await self.exchange("GET", auth_url, {"X-Auth-User": user, "X-Auth-Key": key})
        if answer.status // 100 != 2:
            raise ProxyError(f"login as {user} at {auth_url} answered {answer.status}: "
                             f"{answer.body[:200].decode('utf-8', 'replace').strip()}")
        self.storage_url = answer.headers.get("x-storage-url", "")
        self.token = answer.headers.get("x-auth-token", "")
        if not self.storage_url or not self.token:
            raise ProxyError(f"login at {auth_url} gave no X-Storage-Url or X-Auth-Token")

    def url(self, *names: str, query: dict[str, str] | None = None) -> str:
        path = "".join("/" + quote(name.encode("utf-8"), safe="") for name in names)
        return self.storage_url.rstrip("/") + path + ("?" + urlencode(query) if query else "")

    async def put(self, names: tuple[str, ...], headers: dict[str, str], body: bytes | None = None) -> int:
        """PUT a container (one name) or an object (two), retried; the final status (2xx)."""
        headers = {**headers, "X-Auth-Token": self.token}
        attempt = 0
        while True:
            problem: str
            try:
                answer = await self.exchange("PUT", self.url(*names), headers, body if body is not None else b"")
            except ProxyError as err:
                problem = str(err)
            else:
                if answer.status // 100 == 2:
                    return answer.status
                problem = f"PUT {'/'.join(names)} answered {answer.status}: " \
                          f"{answer.body[:200].decode('utf-8', 'replace').strip()}"
                if answer.status < 500:
                    raise ProxyError(problem)
            if attempt >= self.retries:
                raise ProxyError(problem)
            attempt += 1
            self.retries_done += 1
            await deferLater(self.reactor, pause_before(attempt), lambda: None)

    async def listing(self, container: str | None, prefix: str) -> list[str] | None:
        """
        Every name under ``prefix`` in the account (``container`` None) or a container, page by
        page; None when that container does not exist.
        """
        names: list[str] = []
        marker = ""
        while True:
            query = {"format": "json", "prefix": prefix, **({"marker": marker} if marker else {})}
            target = () if container is None else (container,)
            answer = await self.exchange("GET", self.url(*target, query=query), {"X-Auth-Token": self.token})
            if answer.status == 404 and container is not None:
                return None
            if answer.status == 204:
                return names
            if answer.status != 200:
                raise ProxyError(f"listing {container or 'the account'} answered {answer.status}")
            try:
                page = [entry["name"] for entry in json.loads(answer.body)]
            except (ValueError, KeyError, TypeError) as err:
                raise ProxyError(f"listing {container or 'the account'}: not a JSON listing ({err})") from None
            if not page:
                return names
            names.extend(page)
            marker = page[-1]

    def close(self) -> Deferred:
        return succeed(None) if self._pool is None else self._pool.closeCachedConnections()
