"""txstore.common.malloc_tuning: glibc's thresholds set, unless the operator set them."""

from __future__ import annotations

import sys

from twisted.trial.unittest import TestCase

from txstore.common import malloc_tuning


class TuneMallocTests(TestCase):
    def test_set_on_linux(self) -> None:
        if not sys.platform.startswith("linux"):
            self.assertFalse(malloc_tuning.tune_malloc({}))
            return
        self.assertTrue(malloc_tuning.tune_malloc({}))

    def test_the_operators_settings_win(self) -> None:
        calls = []

        class FakeLibc:
            def __init__(self, name) -> None:
                self.mallopt = self

            def __call__(self, *args) -> int:
                calls.append(args)
                return 1

        self.patch(malloc_tuning.ctypes, "CDLL", FakeLibc)
        self.patch(malloc_tuning.sys, "platform", "linux")
        for environ in ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, {"MALLOC_MMAP_THRESHOLD_": "1"}):
            self.assertFalse(malloc_tuning.tune_malloc(environ), environ)
        self.assertEqual(calls, [])
        self.assertTrue(malloc_tuning.tune_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}))
        self.assertEqual(calls, [(malloc_tuning.M_MMAP_THRESHOLD, malloc_tuning.MMAP_THRESHOLD),
                                 (malloc_tuning.M_TRIM_THRESHOLD, malloc_tuning.TRIM_THRESHOLD)])

    def test_nothing_set_elsewhere(self) -> None:
        self.patch(malloc_tuning.sys, "platform", "darwin")
        self.assertFalse(malloc_tuning.tune_malloc({}))
