# -*- test-case-name: txstore.test.unit.test_tap -*-
"""
The rings one process serves from: account, container, and one object ring per policy.

Loaded at start so that a missing or unreadable ring stops the process with a message naming
the file; afterwards each `Ring` is reloaded when an operator copies a new file in place (by a
`txstore.ring.reloader.RingReloader` in servers, on access elsewhere).
"""

from __future__ import annotations

from pathlib import Path

from attrs import frozen

from txstore.common.config import ConfigError
from txstore.common.hashing import PathHasher
from txstore.common.policies import PolicyCollection
from txstore.ring.ring import Ring, RingError


def ring_path(ring_dir: Path, name: str) -> Path:
    return ring_dir / f"{name}.ring.gz"


def _load(ring_dir: Path, name: str, hasher: PathHasher, auto_reload: bool) -> Ring:
    path = ring_path(ring_dir, name)
    if not path.exists():
        raise ConfigError(
            f"no {name} ring; build it with txstore-ring (see docs/rings.rst)", path=path
        )
    try:
        return Ring(path, hasher, auto_reload=auto_reload)
    except RingError as err:
        raise ConfigError(f"cannot read the {name} ring: {err}", path=path) from None


@frozen
class RingSet:
    account: Ring
    container: Ring
    objects: dict[int, Ring]

    @classmethod
    def load(
        cls, ring_dir: Path, hasher: PathHasher, policies: PolicyCollection, *, auto_reload: bool = True
    ) -> RingSet:
        """
        Every ring, read now. ``auto_reload=False`` for servers: their rings are then kept
        current by a `txstore.ring.reloader.RingReloader`, off the reactor thread.
        """
        return cls(
            account=_load(ring_dir, "account", hasher, auto_reload),
            container=_load(ring_dir, "container", hasher, auto_reload),
            objects={p.index: _load(ring_dir, p.ring_name, hasher, auto_reload) for p in policies},
        )

    def all(self) -> list[Ring]:
        return [self.account, self.container, *self.objects.values()]

    def object_ring(self, policy_index: int) -> Ring:
        return self.objects[policy_index]
