"""
What the access log and the metrics cost the servers, per 4 KiB operation (issue 22's target:
under 5 % of the CPU of a 4 KiB op).

    python benchmarks/observability_cost.py                 # 4 KiB × 2000, C=16, 4 nodes
    python benchmarks/observability_cost.py --count 500 --nodes 8 --policy ec

A fresh txstore all-in-one runs PUT, GET, HEAD and DELETE of 4 KiB objects (loadgen's
workers; GET and HEAD ``--read-rounds`` times over, as they are quick) while py-spy samples every server process, in ``--gil`` mode: each sample is the
Python frame stack of the thread that holds the GIL, so the samples divide the servers'
Python CPU between what they do. A sample counts as *logs* or *metrics* by the innermost frame
that belongs to either (so a metric updated from inside the access-line writer counts as
metrics), and as *other* when none does:

- logs: twisted.logger (every line a server writes: the event, its formatting, the file),
  txstore's access-line writers (``log_access``, ``ProxyLogging._write``, ``access_fields``);
- metrics: prometheus_client, ``txstore/common/metrics.py``, the node's ``_observe``.

The share is of the servers' Python time; their kernel time (sockets, fsync) is not sampled,
so the share of their whole CPU is lower still. Needs py-spy beside this Python (``pip install
py-spy``) and the right to trace the servers (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import BenchError, Client, Job, Pool, authenticate, render, table  # noqa: E402
from serverstats import Servers, pid_groups_from_run_dir  # noqa: E402
from standard import txstore_cluster  # noqa: E402

LOG_FRAMES = ("log_access", "ProxyLogging._write", "access_fields")
LOG_FILES = ("twisted/logger/",)
METRIC_FRAMES = ("NodeServer._observe",)
METRIC_FILES = ("prometheus_client/", "txstore/common/metrics.py")


def category(stack: list[str]) -> str:
    """``logs``, ``metrics`` or ``other``: by the innermost frame that belongs to one."""
    for frame in reversed(stack):
        function, _, where = frame.partition(" (")
        if any(where.startswith(name) or f"/{name}" in where for name in METRIC_FILES) or function in METRIC_FRAMES:
            return "metrics"
        if any(name in where for name in LOG_FILES) or any(function.startswith(name) for name in LOG_FRAMES):
            return "logs"
    return "other"


def tally(raw: Path) -> collections.Counter:
    """Samples by category in one py-spy raw (collapsed stacks) file."""
    counts: collections.Counter = collections.Counter()
    if not raw.exists():
        return counts
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if stack and number.isdigit():
            counts[category(stack.split(";"))] += int(number)
    return counts


class Sampling:
    """py-spy on every server process for the length of a ``with`` block."""

    def __init__(self, servers: Servers, out: Path, label: str, rate: int) -> None:
        self.servers, self.out, self.label, self.rate = servers, out, label, rate
        self.spies: list[tuple[str, Path, subprocess.Popen]] = []

    def __enter__(self) -> Sampling:
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            raise BenchError(f"no py-spy beside {sys.executable}: pip install py-spy")
        for role, pids in self.servers.members().items():
            for pid in pids:
                raw = self.out / f"{self.label}-{role}-{pid}.txt"
                command = [str(spy), "record", "--gil", "--nonblocking", "-r", str(self.rate), "-f", "raw", "-o", str(raw),
                           "-p", pid]
                process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.spies.append((role, raw, process))
        time.sleep(1.0)  # py-spy attaches before the load starts
        return self

    def __exit__(self, *exc) -> None:
        for _, _, process in self.spies:
            process.send_signal(signal.SIGINT)
        for _, _, process in self.spies:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def counts(self) -> dict[str, collections.Counter]:
        by_role: dict[str, collections.Counter] = {}
        for role, raw, _ in self.spies:
            by_role.setdefault(role, collections.Counter()).update(tally(raw))
        return by_role


def share(counts: collections.Counter, what: str) -> str:
    total = sum(counts.values())
    return f"{100 * counts[what] / total:.1f} %" if total else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--policy", default=None, help="the containers' storage policy (e.g. ec with --nodes 8)")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--read-rounds", type=int, default=4,
                        help="GET and HEAD every object this many times (they are quick: more samples)")
    parser.add_argument("--user", default="test:tester")
    parser.add_argument("--key", default="testing")
    args = parser.parse_args(argv)

    out = Path(tempfile.mkdtemp(prefix="txstore-obscost-"))
    rows, results = [], []
    with txstore_cluster(args.nodes) as (auth_url, root, info):
        print("\n".join(info), flush=True)
        servers = Servers(pid_groups_from_run_dir(root / "run"))
        client = Client(authenticate(auth_url, args.user, args.key), servers, args.processes, args.policy)
        container = f"obscost-{client.run_id}"
        client._create_container(container)
        pool = Pool(client.account, args.concurrency, args.processes)
        try:
            for op in ("PUT", "GET", "HEAD", "DELETE"):
                rounds = args.read_rounds if op in ("GET", "HEAD") else 1
                with Sampling(servers, out, op, args.rate) as sampling:
                    for _ in range(rounds):
                        results.append(pool.run(Job(op, container, "o", args.count, args.size), client.meter(),
                                                f"{args.size} B × {args.count} C={args.concurrency}"))
                counts = sampling.counts()
                every = sum(counts.values(), collections.Counter())
                rows.append([op, *(f"{sum(counts.get(role, {}).values())}" for role in ("proxy", "nodes")),
                             share(counts.get("proxy", collections.Counter()), "logs"),
                             share(counts.get("proxy", collections.Counter()), "metrics"),
                             share(counts.get("nodes", collections.Counter()), "logs"),
                             share(counts.get("nodes", collections.Counter()), "metrics"),
                             share(every, "logs"), share(every, "metrics"),
                             f"{100 * (every['logs'] + every['metrics']) / max(1, sum(every.values())):.1f} %"])
        finally:
            pool.close()
    print(table(results))
    print()
    print("Share of the servers' Python CPU samples (py-spy --gil) spent on the access log and metrics:")
    print(render(["op", "samples proxy", "nodes", "proxy logs", "metrics", "nodes logs", "metrics", "all logs",
                  "metrics", "logs + metrics"], rows, ["<", ">", ">", ">", ">", ">", ">", ">", ">", ">"]))
    print(f"(py-spy's samples are in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
