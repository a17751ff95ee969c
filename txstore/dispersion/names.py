# -*- test-case-name: txstore.test.unit.test_dispersion -*-
"""
The dispersion sample's names: ``dispersion_<n>``, each in a partition no earlier one took.

As Swift does, names are tried in order (``dispersion_0``, ``dispersion_1``, ...) and one is
kept only when its partition (the cluster's hash secret and the ring's part power decide it)
is not covered yet, until ``dispersion_coverage`` percent of the partitions are. The walk is
deterministic, so a second ``populate`` rewrites the same names and a larger coverage keeps the
earlier names and adds more. No reactor here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

PREFIX = "dispersion_"
OBJECTS_CONTAINER = "dispersion_objects"
_SAMPLE_NAME = re.compile(r"dispersion_[0-9]+")


class CoverageError(Exception):
    """The names needed could not be found within the tries allowed (a ring with few partitions
    reachable by hashing, or a coverage asked for beyond 100 %)."""


def objects_container(policy_index: int) -> str:
    """The container holding one policy's sample objects (Swift's names)."""
    return OBJECTS_CONTAINER if policy_index == 0 else f"{OBJECTS_CONTAINER}_{policy_index}"


def is_sample_name(name: str) -> bool:
    """A name populate makes (``dispersion_objects*`` containers are not part of the sample)."""
    return _SAMPLE_NAME.fullmatch(name) is not None


def wanted(partition_count: int, coverage: float) -> int:
    """How many names cover ``coverage`` percent of ``partition_count`` partitions (at least one)."""
    if not 0 < coverage <= 100:
        raise ValueError(f"coverage is a percentage above 0 and at most 100, not {coverage}")
    return max(1, min(partition_count, math.ceil(partition_count * coverage / 100)))


def choose(part_of: Callable[[str], int], partition_count: int, coverage: float) -> list[tuple[str, int]]:
    """
    ``(name, partition)`` pairs, one per partition, covering ``coverage`` percent of them.
    ``part_of`` is the ring's partition of a name (the account and container already bound).
    """
    count = wanted(partition_count, coverage)
    # Drawing partitions at random, covering all P takes about P*ln(P) tries; 64 per partition
    # (plus a margin for tiny rings) is far beyond that for any part power a ring can have.
    limit = 64 * partition_count + 1000
    taken: set[int] = set()
    chosen: list[tuple[str, int]] = []
    for n in range(limit):
        name = f"{PREFIX}{n}"
        part = part_of(name)
        if part in taken:
            continue
        taken.add(part)
        chosen.append((name, part))
        if len(chosen) == count:
            return chosen
    raise CoverageError(f"found {len(chosen)} of the {count} partitions wanted in {limit} names")
