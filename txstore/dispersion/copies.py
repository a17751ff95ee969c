# -*- test-case-name: txstore.test.unit.test_dispersion -*-
"""
Asking each primary node directly whether it holds its copy, as Swift's report does with
``direct_client``: a HEAD of the backend path (``/<device>/<partition>/<account>/...``, the
proxy's `backend_path`) through the cluster's own `BackendClient`, with its timeouts.

A 2xx is a copy. A 404 is a missing copy, and so is a 507 (the device is gone). No answer in
time, a refused connection or a 5xx is tried again ``retries`` times after a short pause
(counted as retries), and then counted as a missing copy *and* an error: the report cannot
tell a missing copy from an unreachable one, and says so. Any other answer (a 400, ...) is an
error at once. For an erasure-coded policy a primary's copy is the fragment archive of its own
index: the HEAD asks for that index (``X-Backend-Fragment-Index``) and the answer must name it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.task import deferLater

from txstore.common.backend_client import BackendError
from txstore.dispersion.proxy_session import pause_before
from txstore.ec.headers import BACKEND_FRAG_INDEX, FRAG_INDEX
from txstore.interfaces import IBackendClient
from txstore.proxy.controllers.base import backend_path
from txstore.ring.ring import Node

T = TypeVar("T")
R = TypeVar("R")


async def bounded(concurrency: int, items: Iterable[T], work: Callable[[T], Awaitable[R]]) -> list[R]:
    """``work(item)`` for every item, at most ``concurrency`` at once; the results in order."""
    semaphore = DeferredSemaphore(concurrency)
    runs = [semaphore.run(lambda item=item: Deferred.fromCoroutine(work(item))) for item in items]
    return await gatherResults(runs, consumeErrors=True)


@define
class CopyChecker:
    """HEADs one kind of name (containers, or one policy's objects) on its primaries."""

    client: IBackendClient
    reactor: Any
    account: str
    retries: int
    timeout: float
    policy_index: int | None = None  # objects only
    ec: bool = False
    retries_done: int = 0
    errors: int = 0
    problems: list[str] = field(factory=list)  # one line per 404, error or odd answer (--debug)

    def headers(self, node: Node) -> dict[str, str]:
        if self.policy_index is None:
            return {}
        headers = {"X-Backend-Storage-Policy-Index": str(self.policy_index)}
        if self.ec:
            headers[BACKEND_FRAG_INDEX] = str(node.index)
        return headers

    async def copies(self, part: int, nodes: list[Node], *names: str) -> int:
        """How many of ``nodes`` (the primaries of ``part``) hold ``names``' copy."""
        answers = await gatherResults(
            [Deferred.fromCoroutine(self.holds(node, part, names)) for node in nodes], consumeErrors=True)
        return sum(answers)

    async def holds(self, node: Node, part: int, names: tuple[str, ...]) -> bool:
        path = backend_path(node, part, self.account, *names)
        where = f"{node.ip}:{node.port}{path}"
        attempt = 0
        while True:
            try:
                answer = await self.client.request("HEAD", node.ip, node.port, path, self.headers(node),
                                                   timeout=self.timeout)
            except BackendError as err:
                problem = f"ERROR: {err}"
            else:
                if answer.status // 100 == 2:
                    if self.ec and answer.header(FRAG_INDEX) != str(node.index):
                        self.problems.append(f"{where}: holds fragment {answer.header(FRAG_INDEX)}, "
                                             f"not {node.index}")
                        return False
                    return True
                if answer.status in (404, 507):
                    self.problems.append(f"{where}: returned a {answer.status}")
                    return False
                problem = f"ERROR: {where}: returned a {answer.status}"
                if answer.status < 500:
                    break
            if attempt >= self.retries:
                break
            attempt += 1
            self.retries_done += 1
            await deferLater(self.reactor, pause_before(attempt), lambda: None)
        self.errors += 1
        self.problems.append(problem)
        return False
