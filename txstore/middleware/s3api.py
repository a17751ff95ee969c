# -*- test-case-name: txstore.test.unit.test_s3_middleware -*-
"""
s3api: the S3 API (``[filter:s3api]``); the protocol lives in its own package, `txstore.s3`
(`txstore.s3.middleware` is the stage), which imports nothing of this one.
"""

from __future__ import annotations

from txstore.middleware.base import Middleware
from txstore.s3.middleware import OPTIONS, build

middleware = Middleware("s3api", build, options=OPTIONS)
