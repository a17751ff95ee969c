# -*- test-case-name: txstore.test.test_builder -*-
"""
How long a rebalance takes, and how good it is, on a cluster-sized topology.

    .venv/bin/python benchmarks/ring_rebalance.py [--part-powers 16,18] [--replicas 3]

The topology is 2 regions x 3 zones x 4 hosts x 5 devices = 120 devices with mixed weights
(100, 150, 200 by device index). For each part power it times the first rebalance, then
adding one host (5 devices of weight 100) and rebalancing again an hour after the window,
and reports balance, dispersion, replicas moved and the new host's fair share.
"""

from __future__ import annotations

import argparse
import sys
import time

from txstore.ring.builder import RingBuilder

WEIGHTS = (100.0, 150.0, 200.0)


def build(part_power: int, replicas: int) -> RingBuilder:
    builder = RingBuilder(part_power, replicas, 1)
    index = 0
    for region in (1, 2):
        for zone in (1, 2, 3):
            for host in range(4):
                for disk in range(5):
                    builder.add_dev(
                        region=region,
                        zone=zone,
                        ip=f"10.{region}.{zone}.{host + 1}",
                        port=6200,
                        device=f"sd{chr(ord('b') + disk)}",
                        weight=WEIGHTS[index % len(WEIGHTS)],
                    )
                    index += 1
    return builder


def run(part_power: int, replicas: int, seed: int) -> None:
    builder = build(part_power, replicas)
    devices = len(builder.devs)
    started = time.perf_counter()
    first = builder.rebalance(seed=seed, now=0.0)
    first_time = time.perf_counter() - started
    print(
        f"part power {part_power}, {replicas} replicas, {devices} devices, "
        f"{builder.partition_count * replicas} replicas to place"
    )
    print(
        f"  initial rebalance: {first_time:7.2f}s  balance {first.balance:6.3f}%  "
        f"dispersion {first.dispersion:6.3f}%  passes {first.passes}"
    )
    new_ids = [
        builder.add_dev(
            region=1,
            zone=2,
            ip="10.1.2.99",
            port=6200,
            device=f"sd{chr(ord('b') + disk)}",
            weight=100.0,
        )
        for disk in range(5)
    ]
    total_weight = sum(dev.weight for dev in builder.devs if dev is not None)
    fair = builder.partition_count * replicas * 500.0 / total_weight
    started = time.perf_counter()
    second = builder.rebalance(seed=seed + 1, now=7200.0)
    second_time = time.perf_counter() - started
    counts = builder.part_counts()
    received = sum(counts.get(dev_id, 0) for dev_id in new_ids)
    print(
        f"  add a host (5 x 100): {second_time:5.2f}s  balance {second.balance:6.3f}%  "
        f"dispersion {second.dispersion:6.3f}%  moved {second.replicas_moved} replicas "
        f"({second.parts_moved} partitions); the new host holds {received}, fair share "
        f"{fair:.0f} (moved/fair {second.replicas_moved / fair:.3f})"
    )
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part-powers",
        default="16,18",
        help="comma-separated part powers to run (default: 16,18)",
    )
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args(argv)
    try:
        powers = [int(text) for text in options.part_powers.split(",") if text.strip()]
    except ValueError:
        parser.error(f"--part-powers takes whole numbers, not {options.part_powers!r}")
    for part_power in powers:
        run(part_power, options.replicas, options.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
