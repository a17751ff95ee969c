# -*- test-case-name: txstore.test.unit.test_ring -*-
"""
The errors of the ring package.

Callers (the proxy, the CLI) catch ``RingError`` to tell a broken or unreadable ring apart from
a programming error; argument mistakes stay plain ``ValueError``.
"""

from __future__ import annotations


class RingError(Exception):
    """A ring or builder file is unreadable, or a ring cannot be made from a builder."""


class RingBuilderError(RingError):
    """The builder cannot do what was asked with the devices it has (e.g. too few devices)."""
