# -*- test-case-name: txstore.test.unit.test_quorum -*-
"""
Quorum arithmetic: when enough replicas agree for the proxy to answer.

A write succeeds when a majority of the replicas (``n // 2 + 1``: 2 of 3, 3 of 4, 3 of 5)
answered success; otherwise the best answer a majority gives, and 503 when no class of
answer has a majority. Reads take the first good answer, or the newest with X-Newest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def quorum_size(replicas: int) -> int:
    return replicas // 2 + 1


def status_class(status: int) -> int:
    return status // 100 * 100


def best_status(statuses: Sequence[int], replicas: int) -> int:
    """
    The status to answer with: among 2xx, 3xx, 4xx, 5xx (in that order) the first class that
    ``quorum_size(replicas)`` answers reached, represented by its most common status; else 503.
    """
    need = quorum_size(replicas)
    for klass in (200, 300, 400, 500):
        members = [s for s in statuses if status_class(s) == klass]
        if len(members) >= need:
            return Counter(members).most_common(1)[0][0]
    return 503


def has_quorum(statuses: Sequence[int], replicas: int) -> bool:
    """Whether some class of answer (2xx, 3xx, 4xx, 5xx) already has a quorum: more answers cannot change `best_status`'s class."""
    need = quorum_size(replicas)
    return any(count >= need for count in Counter(status_class(s) for s in statuses).values())
