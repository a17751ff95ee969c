# -*- test-case-name: txstore.test.unit.test_quorum -*-
"""Transaction ids: one per client request, on every response and every log line about it."""

from __future__ import annotations

import time
import uuid


def new_trans_id(clock=time.time, suffix: str = "") -> str:
    """``tx`` + 21 hex + ``-`` + the hex epoch (10 digits), as Swift's X-Trans-Id looks."""
    return f"tx{uuid.uuid4().hex[:21]}-{int(clock()):010x}{suffix}"
