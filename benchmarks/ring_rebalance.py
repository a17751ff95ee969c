# -*- test-case-name: txstore.test.unit.test_builder -*-
"""
How long a rebalance takes, and how good it is, on a cluster-sized topology.

    .venv/bin/python benchmarks/ring_rebalance.py [--part-powers 16,18] [--replicas 3]
    .venv/bin/python benchmarks/ring_rebalance.py --part-powers 18 --against-swift

The topology is 2 regions x 3 zones x 4 hosts x 5 devices = 120 devices with mixed weights
(100, 150, 200 by device index). For each part power it times the first rebalance, then
adding one host (5 devices of weight 100) and rebalancing again an hour after the window,
and reports balance, dispersion, replicas moved and the new host's fair share.

``--against-swift`` runs the same steps side by side through the two command-line tools,
``txstore-ring`` and Swift's ``swift-ring-builder`` (the anchor's, ``--swift-ring-builder``
for another), each rebalance a process of its own: its wall time and peak resident memory
(the kernel's ``ru_maxrss``), and the balance, dispersion and replicas moved it printed.
Both load the builder, rebalance, and write the builder and the ring file. ``--runs N``
repeats the whole comparison N times and ends with the medians (and the worst) of each
step's figures and ratios: on a shared machine one run says little.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


SWIFT_RING_BUILDER = Path("/tmp/anchor-swift/venv/bin/swift-ring-builder")


def topology() -> list[str]:
    """The 120 devices as both tools' ``add`` takes them: ``r<r>z<z>-<ip>:<port>/<name> <weight>``."""
    words, index = [], 0
    for region in (1, 2):
        for zone in (1, 2, 3):
            for host in range(4):
                for disk in range(5):
                    words += [f"r{region}z{zone}-10.{region}.{zone}.{host + 1}:6200/sd{chr(ord('b') + disk)}",
                              f"{WEIGHTS[index % len(WEIGHTS)]:g}"]
                    index += 1
    return words


def measured(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run ``command``: its wall seconds, its peak RSS in MB and its output (stdout and stderr)."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if process.returncode not in (0, 1):  # 1: a warning (both tools)
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{text}")
    return seconds, usage.ru_maxrss / 1024.0, text


def figure(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    return found.group(1) if found else "-"


STEPS = ("first rebalance", "add a host (5 x 100)")


def side_by_side(part_power: int, replicas: int, seed: int, swift: Path) -> dict[str, tuple[float, float]]:
    """
    Both command-line tools through the same steps; one table row per tool and step. Returns
    each step's ratios to Swift: (time, peak memory).
    """
    tools = {"txstore-ring": [str(Path(sys.executable).with_name("txstore-ring"))], "swift-ring-builder": [str(swift)]}
    rows = []
    for name, tool in tools.items():
        with tempfile.TemporaryDirectory(prefix="ring-bench-") as work:
            cwd = Path(work)
            run_quietly = lambda *args: measured([*tool, "b.builder", *args], cwd)  # noqa: E731
            run_quietly("create", str(part_power), str(replicas), "1")
            run_quietly("add", *topology())
            for step, before in zip(STEPS, (None, "host")):
                if before == "host":
                    run_quietly("add", *[word for disk in range(5)
                                         for word in (f"r1z2-10.1.2.99:6200/sd{chr(ord('b') + disk)}", "100")])
                    run_quietly("pretend-min-part-hours-passed" if name == "txstore-ring"
                                else "pretend_min_part_hours_passed")
                seconds, peak, text = run_quietly("rebalance", "--seed", str(seed))
                rows.append((name, step, f"{seconds:.2f}", f"{peak:.0f}",
                             figure(r"Balance is now (\d+(?:\.\d+)?)", text), figure(r"Dispersion is now (\d+(?:\.\d+)?)", text),
                             figure(r"(?:Reassigned|Moved|Placed) (\d+)", text)))
    print(f"part power {part_power}, {replicas} replicas, 120 devices: each rebalance a process of its own")
    header = ("tool", "step", "seconds", "peak MB", "balance", "dispersion", "replicas moved")
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  " + "  ".join(f"{cell:<{w}}" if i < 2 else f"{cell:>{w}}" for i, (cell, w) in enumerate(zip(row, widths))))
    by = {(row[0], row[1]): row for row in rows}
    ratios = {}
    for step in STEPS:
        ours, theirs = by[("txstore-ring", step)], by[("swift-ring-builder", step)]
        ratios[step] = (float(ours[2]) / float(theirs[2]), float(ours[3]) / float(theirs[3]))
        print(f"  {step}: time {ratios[step][0]:.2f}x Swift's, peak memory {ratios[step][1]:.2f}x")
    sys.stdout.flush()
    return ratios


def summarize(runs: list[dict[str, tuple[float, float]]]) -> None:
    """The median and the worst of each step's ratios over the runs."""
    print(f"over {len(runs)} runs (each run's own ratios):")
    for step in STEPS:
        times = [run[step][0] for run in runs]
        peaks = [run[step][1] for run in runs]
        print(f"  {step}: time median {statistics.median(times):.2f}x (worst {max(times):.2f}x), "
              f"peak memory median {statistics.median(peaks):.2f}x (worst {max(peaks):.2f}x)")
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
    parser.add_argument("--against-swift", action="store_true",
                        help="both command-line tools side by side: time, peak memory, balance, dispersion")
    parser.add_argument("--swift-ring-builder", type=Path, default=SWIFT_RING_BUILDER)
    parser.add_argument("--runs", type=int, default=1, help="with --against-swift: repeat it, then give medians")
    options = parser.parse_args(argv)
    try:
        powers = [int(text) for text in options.part_powers.split(",") if text.strip()]
    except ValueError:
        parser.error(f"--part-powers takes whole numbers, not {options.part_powers!r}")
    if options.against_swift and not options.swift_ring_builder.exists():
        parser.error(f"no {options.swift_ring_builder}: run /work/shared/swift-anchor/setup.sh, or pass --swift-ring-builder")
    for part_power in powers:
        if options.against_swift:
            runs = [side_by_side(part_power, options.replicas, options.seed, options.swift_ring_builder)
                    for _ in range(max(1, options.runs))]
            if len(runs) > 1:
                summarize(runs)
        else:
            run(part_power, options.replicas, options.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
