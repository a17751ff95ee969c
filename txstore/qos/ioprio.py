# -*- test-case-name: txstore.test.unit.test_qos_scheduler -*-
"""
The kernel's IO priority of a pool thread, set to its job's class before the job runs.

Linux keeps an IO priority per thread (``ioprio_set(IOPRIO_WHO_PROCESS, 0, …)`` names the
calling thread). Only the BFQ IO scheduler acts on it (``cat /sys/block/<dev>/queue/scheduler``);
under ``mq-deadline`` or ``none`` it is accepted and changes nothing, and where the call does not
exist (not Linux, an unknown architecture) this is a no-op. txstore's own queue
(`txstore.qos.scheduler`) shares each device either way; the kernel's priority only carries the
order further down, into the disk's own queue.

Classes map to the best-effort levels 0 (first) to 7 by weight against the default class's:
the default class keeps the kernel's default level 4, each doubling of weight is one level up,
each halving one down.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import threading

_SYSCALLS = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314, "ppc64le": 273, "s390x": 282}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_BE = 2
_CLASS_SHIFT = 13
DEFAULT_LEVEL = 4

_thread = threading.local()


def _syscall():
    number = _SYSCALLS.get(platform.machine())
    if number is None or os.name != "posix" or platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return lambda level: libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, (_IOPRIO_CLASS_BE << _CLASS_SHIFT) | level)


_set = _syscall()


def levels(weights: dict[str, float], default_weight: float) -> dict[str, int]:
    """Each class's best-effort level: 4 for the default's weight, one level per doubling."""
    return {
        name: max(0, min(7, DEFAULT_LEVEL - round(math.log2(weight / default_weight))))
        for name, weight in weights.items()
    }


def set_level(level: int | None) -> None:
    """Give the calling thread this best-effort level (once per change; nothing for None)."""
    if level is None or _set is None or getattr(_thread, "level", DEFAULT_LEVEL) == level:
        return
    if _set(level) == 0:
        _thread.level = level


def current_level() -> int | None:
    """The calling thread's best-effort level as the kernel has it (None where unknown): for tests."""
    number = _SYSCALLS.get(platform.machine())
    if _set is None or number is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    value = libc.syscall(number + 1, _IOPRIO_WHO_PROCESS, 0)  # ioprio_get follows ioprio_set
    if value < 0:
        return None
    return value & ((1 << _CLASS_SHIFT) - 1) if value >> _CLASS_SHIFT == _IOPRIO_CLASS_BE else DEFAULT_LEVEL
