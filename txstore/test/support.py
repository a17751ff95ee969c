"""Helpers shared by tests: temporary config files and small clusters on disk."""

from __future__ import annotations

import textwrap
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

CLUSTER_CONF = """\
[txstore-hash]
hash_path_suffix = testsuffix
"""


def write_file(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def temp_dir(case: SynchronousTestCase) -> Path:
    path = Path(case.mktemp()).absolute()
    path.mkdir(parents=True)
    return path


def storage_context(case: SynchronousTestCase, device: str = "d1", clock=lambda: 1_600_000_100.0):
    """
    One node's storage in a temp dir holding ``device``: synchronous I/O, no fsync, no backend
    client, a fixed clock (what replication and daemon tests build their nodes from).
    """
    from txstore.common.hashing import PathHasher
    from txstore.common.io import SynchronousRunner
    from txstore.common.policies import DEFAULT_POLICIES
    from txstore.storage.diskfile import DiskFileManager
    from txstore.storage.http_support import StorageContext

    root = temp_dir(case)
    (root / device).mkdir()
    diskfiles = DiskFileManager(root, False, PathHasher(b"", b"s"), fsync=False)
    return StorageContext(
        devices=root, mount_check=False, hasher=diskfiles.hasher, policies=DEFAULT_POLICIES,
        runner=SynchronousRunner(), client=None, clock=clock, diskfiles=diskfiles,
    )


def small_cluster(case: SynchronousTestCase, *, nodes: int = 3, replicas: int = 3, part_power: int = 6,
                  proxy_port: int = 0, base_port: int = 6200):
    """A prepared all-in-one root (configs, rings, device directories) in a temp dir."""
    from txstore.aio.layout import Topology, prepare

    return prepare(temp_dir(case) / "aio", Topology(nodes, replicas, part_power, base_port), proxy_port, seed=1)


def free_port_block(count: int, step: int = 1) -> int:
    """
    A base port such that base, base+step, … (count ports), and the port after each (a node's
    replication port), are free on 127.0.0.1 now.
    """
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - count * step)
        sockets = []
        try:
            for port in sorted({base + i * step + extra for i in range(count) for extra in (0, 1)}):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of ports found")


def console_script(name: str) -> str:
    """The path of one of this environment's console scripts (beside the interpreter)."""
    import sys

    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise RuntimeError(f"{name} is not installed beside {sys.executable}; pip install -e . first")
    return str(path)
