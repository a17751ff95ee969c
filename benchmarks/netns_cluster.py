"""
The namespace cluster's fault drills (issue 23), for humans: builds a cluster of hosts as Linux
network namespaces (`txstore.test.netns_cluster`: four object nodes in two regions, a proxy, a
client and a router), runs each drill of `txstore.test.netns_drills` on a fresh cluster and
prints its figures: requests made, failed (during the fault), writes acknowledged and lost,
time to converge after the heal, dispersion (the drill's own objects HEADed on their primaries,
and ``txstore-dispersion report`` on its sample), latencies during the fault and outside it.

    sudo .venv/bin/python benchmarks/netns_cluster.py                    # all four, as the tests run them
    sudo .venv/bin/python benchmarks/netns_cluster.py --drill partition --partition-seconds 300
    sudo .venv/bin/python benchmarks/netns_cluster.py --drill impair --delay 0.1 --loss 0.02 --method tun

Needs root (``ip netns``). Everything is torn down after each drill, also on errors and Ctrl-C;
``--keep`` keeps the last cluster's files (configs, logs, devices) under /tmp/h2ns-<pid>-*.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from attrs import asdict

from txstore.test import netns_drills
from txstore.test.netns_cluster import NetnsCluster, Spec, unusable_reason

DRILLS = ("cut", "replication", "partition", "impair")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drill", choices=DRILLS, action="append", help="run only these (repeatable)")
    parser.add_argument("--cut-seconds", type=float, default=10.0, help="(a) proxy-host1 cut")
    parser.add_argument("--replication-cut-seconds", type=float, default=12.0, help="(b) host1-host2 cut")
    parser.add_argument("--replication-rate", type=float, default=20.0,
                        help="(b) writes a second at most while host2 is down (0: as fast as the cluster answers)")
    parser.add_argument("--partition-seconds", type=float, default=60.0, help="(c) host3 off the network")
    parser.add_argument("--partition-rate", type=float, default=10.0,
                        help="(c) requests a second at most (0: as fast as the cluster answers)")
    parser.add_argument("--impair-seconds", type=float, default=20.0, help="(d) region 2 impaired")
    parser.add_argument("--delay", type=float, default=0.2, help="(d) seconds each crossing packet is held")
    parser.add_argument("--loss", type=float, default=0.05, help="(d) fraction of crossing packets dropped")
    parser.add_argument("--method", choices=("auto", "netem", "tun"), default="auto", help="(d) how")
    parser.add_argument("--keep", action="store_true", help="keep the last cluster's root directory")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON lines too")
    return parser.parse_args()


def run(name: str, args: argparse.Namespace, keep: bool) -> netns_drills.Figures:
    options = {"node_options": {"object-replicator": {"bytes_per_second": "262144"}}} if name == "replication" else {}
    cluster = NetnsCluster(Spec(**options))
    try:
        cluster.build()
        cluster.write_configs()
        cluster.start()
        if name == "cut":
            return netns_drills.proxy_node_cut(cluster, args.cut_seconds)
        if name == "replication":
            return netns_drills.replication_cut(cluster, args.replication_cut_seconds,
                                                rate=args.replication_rate or None)
        if name == "partition":
            return netns_drills.host_partition(cluster, args.partition_seconds, rate=args.partition_rate or None)
        return netns_drills.region_impairment(cluster, args.impair_seconds, args.delay, args.loss, args.method)
    finally:
        cluster.teardown(keep_root=keep)
        if keep:
            print(f"  files kept in {cluster.root}", flush=True)


def main() -> int:
    args = parse_args()
    reason = unusable_reason()
    if reason:
        print(f"cannot build a namespace cluster: {reason}", file=sys.stderr)
        return 2
    names = args.drill or list(DRILLS)
    worst = 0
    for index, name in enumerate(names):
        began = time.monotonic()
        figures = run(name, args, args.keep and index == len(names) - 1)
        print(f"{figures.line()} [{time.monotonic() - began:.0f} s]", flush=True)
        if figures.problems:
            print(f"  not read back: {json.dumps(figures.problems)[:2000]}", flush=True)
        if args.json:
            print(json.dumps({"drill": name, **asdict(figures, filter=lambda a, _v: a.name != "problems")}))
        if figures.lost or figures.converge_seconds is None:
            worst = 1
    return worst


if __name__ == "__main__":
    sys.exit(main())
