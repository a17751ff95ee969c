# -*- test-case-name: txstore.test.unit.test_pipeline -*-
"""
What ``GET /info`` tells clients: the core's limits and one entry per middleware that offers
something (as Swift's ``register_swift_info``), so a client such as python-swiftclient
discovers what the cluster can do. Nothing is listed that is not built: a middleware registers
itself when the pipeline is built, and only what it serves.
"""

from __future__ import annotations

import copy
from typing import Any


class InfoRegistry:
    def __init__(self) -> None:
        self._sections: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **values: Any) -> None:
        """Add ``name`` (``slo``, ``tempauth``) with its settings; a second call adds to it."""
        self._sections.setdefault(name, {}).update(values)

    def __contains__(self, name: str) -> bool:
        return name in self._sections

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._sections)
