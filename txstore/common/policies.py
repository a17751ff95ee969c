# -*- test-case-name: txstore.test.unit.test_cluster_config -*-
"""
Storage policies: how a container's objects are stored (replicas or erasure-coded fragments).

Policies are cluster-wide, declared in ``txstore.conf`` as ``[storage-policy:<index>]``. The index
is what every node and database records, so it never changes meaning; names may be renamed.
Each policy has its own object ring: ``object.ring.gz`` for policy 0, ``object-<index>.ring.gz``
for the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from attrs import field, frozen

REPLICATION = "replication"
ERASURE_CODING = "erasure_coding"
POLICY_TYPES = (REPLICATION, ERASURE_CODING)

_VALID_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@frozen
class ECParameters:
    """What pyeclib needs to encode a segment into fragments, and the segment size."""

    ec_type: str
    num_data_fragments: int
    num_parity_fragments: int
    segment_size: int = 1024 * 1024

    @property
    def fragments(self) -> int:
        return self.num_data_fragments + self.num_parity_fragments


@frozen
class StoragePolicy:
    index: int
    name: str
    policy_type: str = REPLICATION
    is_default: bool = False
    deprecated: bool = False
    aliases: tuple[str, ...] = ()
    ec: ECParameters | None = None

    @property
    def ring_name(self) -> str:
        return "object" if self.index == 0 else f"object-{self.index}"

    @property
    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def valid_policy_name(name: str) -> bool:
    return bool(_VALID_NAME.match(name))


@frozen
class PolicyCollection:
    """The cluster's policies, checked to be consistent: unique names, one default."""

    policies: tuple[StoragePolicy, ...] = field()

    @policies.validator
    def _check(self, _attr: object, policies: tuple[StoragePolicy, ...]) -> None:
        if not policies:
            raise ValueError("at least one storage policy is needed")
        seen_index: set[int] = set()
        seen_name: dict[str, int] = {}
        for policy in policies:
            if policy.index in seen_index:
                raise ValueError(f"policy index {policy.index} is declared twice")
            seen_index.add(policy.index)
            for name in policy.all_names:
                if not valid_policy_name(name):
                    raise ValueError(
                        f"policy name {name!r} may only have letters, digits and '-' (1-64)"
                    )
                key = name.lower()
                if key in seen_name:
                    raise ValueError(
                        f"policy name {name!r} is used by policies {seen_name[key]} and {policy.index}"
                    )
                seen_name[key] = policy.index
        defaults = [p for p in policies if p.is_default]
        if len(defaults) != 1:
            raise ValueError(f"exactly one policy must be the default, found {len(defaults)}")
        if defaults[0].deprecated:
            raise ValueError(f"the default policy {defaults[0].name!r} cannot be deprecated")

    @property
    def default(self) -> StoragePolicy:
        return next(p for p in self.policies if p.is_default)

    def by_index(self, index: int) -> StoragePolicy | None:
        for policy in self.policies:
            if policy.index == index:
                return policy
        return None

    def by_name(self, name: str) -> StoragePolicy | None:
        key = name.lower()
        for policy in self.policies:
            if key in (n.lower() for n in policy.all_names):
                return policy
        return None

    def __iter__(self) -> Iterator[StoragePolicy]:
        return iter(sorted(self.policies, key=lambda p: p.index))

    def __len__(self) -> int:
        return len(self.policies)


DEFAULT_POLICIES = PolicyCollection((StoragePolicy(0, "Policy-0", is_default=True),))
