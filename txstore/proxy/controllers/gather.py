# -*- test-case-name: txstore.test.unit.test_proxy_gather -*-
"""
Waiting for the nodes of one request as Swift's proxy does: every answer until they decide the
outcome (a quorum agrees), then at most ``post_quorum_timeout`` for the others.

A node that is slower still does not hold the client's answer back, but it is not abandoned
either: its request goes on in the background, under its own ``node_timeout``, and what it
answers (or its silence) still reaches the error limiter. Without this one silent node made
every write that was talking to it wait the whole ``node_timeout`` although two replicas had
long answered (docs/many-hosts.rst).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredQueue, TimeoutError
from twisted.python.failure import Failure

T = TypeVar("T")


async def until_decided(
    reactor: Any, attempts: Sequence[Deferred[T]], decided: Callable[[list[T]], bool], post_quorum_timeout: float,
) -> list[T | None]:
    """
    The attempts' results in their order, None for one that had not finished: all of them, or
    those in by ``post_quorum_timeout`` seconds after ``decided(the results so far, in the order
    they came)`` first said True. An attempt that fails fails this (attempts catch their own
    node errors).
    """
    arrived: DeferredQueue[tuple[int, Any]] = DeferredQueue()
    for index, attempt in enumerate(attempts):
        attempt.addBoth(lambda result, i=index: arrived.put((i, result)))
    results: list[T | None] = [None] * len(attempts)
    so_far: list[T] = []
    decided_at: float | None = None
    for _ in attempts:
        waiting = arrived.get()
        if decided_at is not None:
            waiting.addTimeout(max(0.0, post_quorum_timeout - (reactor.seconds() - decided_at)), reactor)
        try:
            index, result = await waiting
        except TimeoutError:
            break
        if isinstance(result, Failure):
            result.raiseException()
        results[index] = result
        so_far.append(result)
        if decided_at is None and decided(so_far):
            decided_at = reactor.seconds()
    return results
