# -*- test-case-name: txstore.test.unit.test_diskfile -*-
"""
A device's durable queues: small records kept as files until a daemon has acted on them.

Two queues live on each device, laid out alike as ``<queue>[-<policy>]/<group>/<record>``: the
async pendings (container updates owed, grouped by the object hash's suffix; the object
updater replays them) and the expiry queue (objects due for deletion, grouped by the hour;
the expirer acts on them). A record is written whole into ``tmp/``, fsynced, renamed into its
group and the group fsynced, so a crash leaves it entirely there or not at all; it is removed
once acted on, and its group with it once empty. What differs between the two, the names and
the record formats, is in `txstore.storage.async_pending` and `txstore.storage.expiring`; a
`QueueLayout` tells this module which names belong to which queue.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import frozen


@frozen
class QueueLayout:
    """What tells one queue's files apart."""

    what: str  # for messages: "async pending", "expiry entry"
    policy_of_dir: Callable[[str], int | None]  # a queue directory's policy, None if not one
    group_of: Callable[[str], str | None]  # the group a record's file name belongs in, None if not a record


class DurableQueue:
    """One queue on every device of a `DiskFileManager` (whose temp files and fsyncs it uses)."""

    def __init__(self, manager: Any, layout: QueueLayout) -> None:
        self._manager = manager
        self.layout = layout

    def put(self, device_path: Path, target: Path, payload: bytes, prefix: str) -> Path:
        """Write ``payload`` as the record ``target``, durably; returns ``target``."""
        temp = self._manager._write_temp(device_path, payload, prefix=prefix)
        try:
            self._manager._rename_into(temp, target, device_path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return target

    def dirs(self, device_path: Path, policy_index: int | None = None) -> list[Path]:
        """The queue's directories on a device (one per policy that has one), or one policy's."""
        return [
            entry for entry in sorted(device_path.iterdir())
            if (policy := self.layout.policy_of_dir(entry.name)) is not None
            and (policy_index is None or policy == policy_index)
        ]

    def check(self, path: Path | str) -> Path:
        """``path`` if it is a record of this queue on one of the manager's devices, else ValueError."""
        path = Path(path)
        ok = (
            self.layout.group_of(path.name) == path.parent.name
            and self.layout.policy_of_dir(path.parent.parent.name) is not None
            and path.parent.parent.parent.parent == self._manager.devices
        )
        if not ok:
            raise ValueError(f"not an {self.layout.what} of this node: {path}")
        return path

    def remove(self, path: Path | str) -> None:
        """Remove a record (acted on, or stale), and its group directory once empty."""
        path = self.check(path)
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass  # not empty (or already gone)
