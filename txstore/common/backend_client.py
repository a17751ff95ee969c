# -*- test-case-name: txstore.test.test_backend_client -*-
"""
HTTP between txstore processes (proxy → node, node → node) for small requests: container and
account updates, HEADs, listings.

Connections are persistent and pooled (a new TCP connection per request is where Swift loses
time), and every request has a deadline: connect, send and the whole response together must
finish within ``timeout`` seconds or the request fails with `BackendTimeout`. Bodies here are
small and read whole; object bodies stream through their own code paths.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import treq
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers


class BackendError(Exception):
    """A backend could not be reached or did not answer in full."""


class BackendTimeout(BackendError):
    """A backend did not answer within the deadline."""


@frozen
class BackendResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


def quote_path(path: str) -> str:
    """Percent-encode a path for the wire; ``/`` stays as the separator."""
    return quote(path.encode("utf-8"), safe="/")


def listing_update_headers(kind: str, node: Any, partition: int) -> dict[str, str]:
    """
    The headers that tell a node which ``kind`` ("Container" or "Account") replica to report
    its change to: ``X-<Kind>-Host``, ``-Device`` and ``-Partition``.
    """
    return {
        f"X-{kind}-Host": f"{node.ip}:{node.port}",
        f"X-{kind}-Device": node.device_name,
        f"X-{kind}-Partition": str(partition),
    }


class BackendClient:
    def __init__(
        self, reactor: Any, *, timeout: float = 10.0, connect_timeout: float = 2.0, max_per_host: int = 16
    ) -> None:
        self._reactor = reactor
        self.timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = max_per_host
        self._pool.retryAutomatically = False  # a replayed PUT/DELETE must be our decision
        # A host that does not answer SYNs fails after connect_timeout, not the whole deadline.
        self._agent = Agent(reactor, connectTimeout=connect_timeout, pool=self._pool)

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
        query: str = "",
    ) -> BackendResponse:
        """``path`` is unencoded (it is quoted here); ``query`` is sent as given, with its "?"."""
        url = f"http://{_host(host)}:{port}{quote_path(path)}{query}"
        raw_headers = Headers({k.encode("latin-1"): [v.encode("latin-1")] for k, v in (headers or {}).items()})
        deadline = self.timeout if timeout is None else timeout

        async def exchange() -> BackendResponse:
            response = await treq.request(
                method, url, headers=raw_headers, data=body, agent=self._agent, reactor=self._reactor
            )
            content = await treq.content(response)
            headers = {k.decode("latin-1").lower(): v[-1].decode("latin-1") for k, v in response.headers.getAllRawHeaders()}
            if not headers.get("content-encoding", "x"):
                del headers["content-encoding"]  # left empty by the client's content decoding
            return BackendResponse(response.code, headers, content)

        timed_out: list[bool] = []

        def on_timeout(result: object, _timeout: float) -> object:
            timed_out.append(True)
            return result

        attempt = Deferred.fromCoroutine(exchange())
        attempt.addTimeout(deadline, self._reactor, onTimeoutCancel=on_timeout)
        try:
            return await attempt
        except Exception as err:
            if timed_out:
                raise BackendTimeout(f"{method} {host}:{port}{path}: no answer within {deadline}s") from None
            raise BackendError(f"{method} {host}:{port}{path}: {err}") from err

    def close(self) -> Deferred:
        """Close the pooled connections (tests, and at service stop)."""
        return self._pool.closeCachedConnections()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
