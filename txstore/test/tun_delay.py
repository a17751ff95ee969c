# -*- test-case-name: txstore.test.integration.test_netns_drills -*-
"""
Latency and loss in userspace, for kernels built without ``sch_netem`` (the CI's VM has no
netem and no ``act_gact``, so ``tc`` can neither delay nor drop).

The namespace cluster's router sends the packets that cross into or out of the impaired region
to a TUN device (policy routing on the interface they came in by, so a packet written back to
the TUN is routed normally and never loops). This process reads each packet from the TUN,
drops a fraction ``loss`` of them, holds the others ``delay`` seconds and writes them back; the
kernel then forwards them as if they had just arrived. One constant delay keeps the packets in
order, as one netem qdisc without jitter does.

Run inside the router's namespace (the harness does)::

    python -m txstore.test.tun_delay --name h2tun --delay 0.2 --loss 0.05

It prints ``ready`` once the device exists, and on SIGTERM prints its counters as JSON.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import json
import os
import random
import select
import signal
import struct
import sys
import time

from attrs import define, field

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535


@define
class Holder:
    """What the forwarder does with packets, apart from the device: pure, so tests can drive it."""

    delay: float
    loss: float
    rng: random.Random
    queue: collections.deque = field(factory=collections.deque)
    received: int = 0
    dropped: int = 0
    sent: int = 0

    def offer(self, packet: bytes, now: float) -> bool:
        """Take a packet read at ``now``; False when it is lost."""
        self.received += 1
        if self.rng.random() < self.loss:
            self.dropped += 1
            return False
        self.queue.append((now + self.delay, packet))
        return True

    def due(self, now: float) -> list[bytes]:
        """The packets whose time has come, in the order they came."""
        ready = []
        while self.queue and self.queue[0][0] <= now:
            ready.append(self.queue.popleft()[1])
        self.sent += len(ready)
        return ready

    def wait(self, now: float) -> float | None:
        """Seconds until the next packet is due (None: nothing held)."""
        if not self.queue:
            return None
        return max(0.0, self.queue[0][0] - now)

    def counters(self) -> dict[str, int]:
        return {"received": self.received, "dropped": self.dropped, "sent": self.sent, "held": len(self.queue)}


def open_tun(name: str) -> int:
    """A TUN device ``name`` (raw IP packets, no header); it goes away when the descriptor closes."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode("ascii"), IFF_TUN | IFF_NO_PI))
    return fd


def forward(fd: int, holder: Holder, stopping: list[bool]) -> None:
    while not stopping[0]:
        now = time.monotonic()
        for packet in holder.due(now):
            try:
                os.write(fd, packet)
            except OSError:
                pass  # a packet the kernel will not take back (device going down) is lost
        timeout = holder.wait(now)
        try:
            readable, _, _ = select.select([fd], [], [], 0.5 if timeout is None else min(timeout, 0.5))
        except InterruptedError:
            continue
        if not readable:
            continue
        now = time.monotonic()
        while True:
            try:
                packet = os.read(fd, MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                break
            holder.offer(packet, now)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--delay", type=float, required=True, help="seconds each packet is held")
    parser.add_argument("--loss", type=float, default=0.0, help="fraction of packets dropped")
    parser.add_argument("--seed", type=int, default=None)
    options = parser.parse_args(argv)
    holder = Holder(options.delay, options.loss, random.Random(options.seed))
    fd = open_tun(options.name)
    stopping = [False]

    def stop(_signum: int, _frame: object) -> None:
        stopping[0] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    try:
        forward(fd, holder, stopping)
    finally:
        os.close(fd)
        print(json.dumps(holder.counters()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
