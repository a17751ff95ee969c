# -*- test-case-name: txstore.test.unit.test_object_replicator -*-
"""Which ring devices are this node's: every daemon that acts only on its own devices asks here."""

from __future__ import annotations

import socket
from collections.abc import Callable

from txstore.ring.device import Device

WILDCARDS = ("", "0.0.0.0", "::")


def host_addresses() -> set[str]:
    """This host's addresses as name resolution knows them, and the loopbacks."""
    found = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]))
    except OSError:
        pass
    return found


def local_device_matcher(bind_ip: str, bind_port: int) -> Callable[[Device], bool]:
    """
    This node's devices are those the ring lists with its backend port and its address (any of
    the host's addresses when it listens on a wildcard: not any address at all, or a node would
    take other hosts' devices of the same name and port for its own).
    """
    addresses = {bind_ip} | (host_addresses() if bind_ip in WILDCARDS else set())
    return lambda device: device.port == bind_port and device.ip in addresses
