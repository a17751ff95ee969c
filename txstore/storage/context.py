# -*- test-case-name: txstore.test.unit.test_object_server,txstore.test.unit.test_auditor -*-
"""
What a node's servers, daemons and replication all run in: its devices, policies, I/O pools,
disk files and backend client, injected as one value (tests pass a synchronous runner and a
Clock as the reactor).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import frozen

from txstore.common.backend_client import BackendClient
from txstore.common.constraints import DEFAULT_CONSTRAINTS, Constraints
from txstore.common.hashing import PathHasher
from txstore.common.policies import PolicyCollection
from txstore.common.web import HTTPError
from txstore.interfaces import IBlockingRunner
from txstore.storage.diskfile import DiskFileManager


@frozen
class StorageContext:
    """Everything a node's servers, daemons and replication need, injected."""

    devices: Path
    mount_check: bool
    hasher: PathHasher
    policies: PolicyCollection
    runner: IBlockingRunner
    client: BackendClient
    reactor: Any  # IReactorTime: the one clock (a task.Clock in tests)
    diskfiles: DiskFileManager
    constraints: Constraints = DEFAULT_CONSTRAINTS
    node_timeout: float = 3.0
    container_update_timeout: float = 1.0  # an object write's wait for its container row
    # txstore.qos.scheduler.IOScheduler: object bodies' disk work, shared by IO class (None:
    # straight to the runner, as unit tests of other parts have it)
    scheduler: Any = None
    keep_cache_size: int = 5 * 1024 * 1024  # larger objects' reads leave the page cache as it was

    @property
    def clock(self) -> Callable[[], float]:
        """
        The reactor's ``seconds``: wall-clock time, as Swift timestamps, ``X-Delete-At`` and
        reclaim ages need it, on the same clock as the node's timers.
        """
        return self.reactor.seconds

    async def checked_device(self, device: str) -> Path:
        """
        `device_path` in the device's own pool: a mount check is a stat, and a dying disk can
        hang a stat, so it must not run on the reactor thread.
        """
        return await self.runner.run(device, self.device_path, device)

    def device_path(self, device: str) -> Path:
        """The device's directory, or HTTPError 507 when it is missing or not mounted (blocks)."""
        try:
            path = self.diskfiles.device_path(device)
        except ValueError:
            raise HTTPError(400, "Invalid device") from None
        if path is None:
            raise HTTPError(507, f"Insufficient Storage: device {device} is not available")
        return path

    def mounted_devices(self) -> list[tuple[str, Path]]:
        """The devices this node serves now, with their paths (blocking: list and stat)."""
        if not self.devices.is_dir():
            return []
        found = []
        for entry in sorted(self.devices.iterdir()):
            try:
                path = self.diskfiles.device_path(entry.name)
            except ValueError:
                continue
            if path is not None:
                found.append((entry.name, path))
        return found
