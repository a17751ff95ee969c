# -*- test-case-name: txstore.test.test_io -*-
"""
Every seam of txstore as a zope Interface, in one place.

An implementation states what it provides with ``@implementer``; tests check conformance with
``zope.interface.verify.verifyObject`` and shared test mixins.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IBlockingRunner(Interface):
    """
    Runs blocking work (disk I/O, fsync, SQLite, big hashes) away from the reactor thread.

    Production runners use a bounded thread pool per device, so a slow disk only holds up the
    requests for that disk; unit tests use a synchronous runner.
    """

    def run(key: str, function, *args, **kwargs):
        """
        Call ``function(*args, **kwargs)`` in the pool of ``key`` (a device name); return a
        Deferred that fires with its result or fails with its exception. A cancelled Deferred
        does not stop the call already under way: commit steps (fsync, rename) finish.
        """


class IRing(Interface):
    """Which devices hold a name; reloads itself when its file changes."""

    part_power = Attribute("Bits of the md5 used for the partition.")
    replica_count = Attribute("How many primaries each partition has.")

    def get_part(account, container=None, obj=None):
        """The partition of a name."""

    def get_nodes(account, container=None, obj=None):
        """``(partition, [primary Node, ...])``."""

    def get_part_nodes(part):
        """The primaries of a partition."""

    def get_more_nodes(part):
        """Handoff nodes for a partition, farthest from the primaries first."""
