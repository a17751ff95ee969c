# -*- test-case-name: txstore.test.unit.test_malloc_tuning -*-
"""
glibc's malloc, told to keep the buffers a server's bodies pass through.

Bodies pass through buffers of 64 KiB to 1 MiB: socket reads, EC segments and fragments.
glibc serves an allocation above its mmap threshold (128 KiB at first, raised as such blocks
are freed) with a new mapping, and gives the top of its heap back to the kernel once more than
its trim threshold (twice the mmap threshold) is free there. In some runs of a large EC PUT
those thresholds never settled, and every buffer was faulted in page by page again: 0.76 to
0.88 million page faults in the proxy per GiB, its CPU 3.3 → 5.0 s and the PUT 200 → 155 MB/s
(docs/performance.rst, "Page faults"). Fixed thresholds end the adjusting: a block under
`MMAP_THRESHOLD` comes from the heap, and up to `TRIM_THRESHOLD` of free heap is kept for the
next ones. An operator's own ``GLIBC_TUNABLES`` malloc settings win (nothing is changed then).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest glibc takes on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 32 * 1024 * 1024


def tune_malloc(environ: dict[str, str] | None = None) -> bool:
    """Set both thresholds (glibc on Linux); whether they were set."""
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return False
    if any(name.startswith("MALLOC_") and name.endswith("_") for name in environ):
        return False  # glibc's older environment settings (MALLOC_MMAP_THRESHOLD_ and kin)
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # (musl's mallopt does nothing and answers 0: nothing was set)
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
