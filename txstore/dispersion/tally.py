# -*- test-case-name: txstore.test.unit.test_dispersion -*-
"""
The report's arithmetic: copies found per sample name, summed as Swift's report sums them.

Each name of the sample was asked of every primary its ring names for it. A name with all its
copies counts in ``missing_by_count["0"]``; one whose primaries answered two 404s counts in
``"2"``. ``pct_found`` is the share of all copies expected that were found (Swift's figure), and
``pct_complete`` the share of names with every copy. The JSON form (`Tally.summary`) is a
stable interface (the namespace drills read it): keys are only ever added, documented in
docs/dispersion.rst. No reactor here.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


@define
class Tally:
    """What one report (``container`` or ``object``) found."""

    kind: str
    partition_count: int
    replicas: int  # primaries per name: replicas, or k+m for an erasure-coded policy
    found: dict[str, tuple[int, int]] = field(factory=dict)  # name -> (partition, copies found)
    retries: int = 0
    errors: int = 0
    elapsed: float = 0.0
    policy: str | None = None

    def add(self, name: str, partition: int, copies: int) -> None:
        if not 0 <= copies <= self.replicas:
            raise ValueError(f"{copies} copies of {name} found, with {self.replicas} primaries")
        self.found[name] = (partition, copies)

    @property
    def queried(self) -> int:
        return len(self.found)

    @property
    def copies_expected(self) -> int:
        return self.replicas * self.queried

    @property
    def copies_found(self) -> int:
        return sum(copies for _, copies in self.found.values())

    @property
    def partitions(self) -> int:
        return len({part for part, _ in self.found.values()})

    @property
    def overlapping(self) -> int:
        """Names beyond the first in a partition (a ring whose part power changed, say)."""
        return self.queried - self.partitions

    def missing_by_count(self) -> dict[str, int]:
        counts = {str(missing): 0 for missing in range(self.replicas + 1)}
        for _, copies in self.found.values():
            counts[str(self.replicas - copies)] += 1
        return counts

    def missing_partitions(self) -> list[int]:
        return sorted({part for part, copies in self.found.values() if copies < self.replicas})

    def pct_found(self) -> float:
        expected = self.copies_expected
        return round(100.0 * self.copies_found / expected, 2) if expected else 0.0

    def pct_complete(self) -> float:
        if not self.queried:
            return 0.0
        return round(100.0 * self.missing_by_count()["0"] / self.queried, 2)

    def sample_pct(self) -> float:
        return round(100.0 * self.partitions / self.partition_count, 2) if self.partition_count else 0.0

    def summary(self) -> dict[str, Any]:
        """The JSON form (docs/dispersion.rst)."""
        return {
            "queried": self.queried,
            "partitions": self.partitions,
            "partition_count": self.partition_count,
            "overlapping": self.overlapping,
            "replicas": self.replicas,
            "copies_expected": self.copies_expected,
            "copies_found": self.copies_found,
            "pct_found": self.pct_found(),
            "pct_complete": self.pct_complete(),
            "missing_by_count": self.missing_by_count(),
            "missing_partitions": self.missing_partitions(),
            "sample_pct": self.sample_pct(),
            "retries": self.retries,
            "errors": self.errors,
            "elapsed": round(self.elapsed, 3),
            "policy": self.policy,
        }

    def lines(self) -> list[str]:
        """The text form, worded as Swift's report."""
        kind = self.kind
        out = [] if self.policy is None else [f"Using storage policy: {self.policy}"]
        out.append(f"Queried {self.queried} {kind}s for dispersion reporting, {self.elapsed:.0f}s, "
                   f"{self.retries} {_plural(self.retries, 'retry', 'retries')}")
        if self.overlapping:
            out.append(f"There were {self.overlapping} overlapping partitions")
        for missing, count in self.missing_by_count().items():
            missing_n = int(missing)
            if missing_n == 0 or count == 0:
                continue
            if missing_n == self.replicas:
                out.append(f"!!! There {_plural(count, 'was', 'were')} {count} "
                           f"{_plural(count, 'partition', 'partitions')} missing all copies.")
            else:
                out.append(f"There {_plural(count, 'was', 'were')} {count} "
                           f"{_plural(count, 'partition', 'partitions')} missing {missing_n} "
                           f"{_plural(missing_n, 'copy', 'copies')}.")
        if self.errors:
            out.append(f"There {_plural(self.errors, 'was', 'were')} {self.errors} "
                       f"{_plural(self.errors, 'error', 'errors')} (unreachable nodes, timeouts, unexpected answers)")
        out.append(f"{self.pct_found():.2f}% of {kind} copies found ({self.copies_found} of {self.copies_expected})")
        out.append(f"Sample represents {self.sample_pct():.2f}% of the {kind} partition space")
        return out
