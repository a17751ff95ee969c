"""
The S3 path against the Swift path (issue 17): the same PUTs and GETs of 4 KiB and 1 MiB
objects, one client on a kept-alive connection, over the Swift API (a token) and over S3 (each
request signed with Signature V4 by botocore's signer), on txstore and, with ``--anchor``, on
the Swift anchor (Swift's own s3api and its Swift API) in the same run, targets alternating
round by round. Reports ops/s and the servers' CPU milliseconds per operation (from /proc,
whole process groups: ``serverstats``; the anchor's memcached counts as its proxy's), medians
over the rounds, and the ratios the issue names.

    python benchmarks/s3_vs_swift.py --port 23500 --anchor --ops 200 --rounds 5
    python benchmarks/s3_vs_swift.py --port 23500 --anchor --concurrency 8     # capacity, not latency
    python benchmarks/s3_vs_swift.py --root /tmp/aio --port 18560    # an all-in-one already running

Without ``--root`` a fresh txstore-aio is started on ``--port`` (nodes on port + 10·N), on the
anchor's loopback XFS when it is mounted, and stopped at the end. ``--anchor`` runs the anchor's
start.sh when its proxy does not answer (and stop.sh at the end); processes of an anchor left
stopped (SIGSTOP) by a killed run are continued first. While one system is measured the other's
processes are stopped (SIGSTOP), so that neither's background work lands in the other's figures.

The issue's targets: the S3 path costs at most 10 % more proxy CPU per operation than the Swift
path on txstore, and serves at least 1.5× the ops/s of Swift's s3api. Ops/s here are one
client's latency, not a proxy's capacity, unless ``--concurrency`` gives each target several
clients (threads, each with its own connection; the keys dealt out between them).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import BenchError, render  # noqa: E402
from serverstats import ROLES, Servers, paused, pid_groups_from_pidfile, pid_groups_from_run_dir  # noqa: E402
from standard import ANCHOR_BASE, ANCHOR_PORT, load_average, swift_anchor, txstore_cluster  # noqa: E402

SIZES = {"4KiB": 4096, "1MiB": 1024 * 1024}
TARGETS = ("txstore-swift", "txstore-s3", "anchor-s3api", "anchor-swift")


class Swift:
    """The Swift API as ``user``: a token from /auth/v1.0, objects in container ``bench-swift``."""

    def __init__(self, name: str, port: int, user: str = "test:tester", key: str = "testing") -> None:
        self.name, self.port = name, port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.request("GET", "/auth/v1.0", headers={"X-Auth-User": user, "X-Auth-Key": key})
        answer = self.conn.getresponse()
        answer.read()
        if answer.status // 100 != 2:
            raise BenchError(f"{name}: auth refused: {answer.status}")
        self.token = answer.getheader("X-Auth-Token")
        self.base = urllib.parse.urlsplit(answer.getheader("X-Storage-Url")).path + "/bench-swift"
        self.send("PUT", self.base, b"")

    def send(self, method: str, path: str, body: bytes) -> bytes:
        self.conn.request(method, path, body=body if method == "PUT" else None, headers={"X-Auth-Token": self.token})
        return self._answer(method, path)

    def _answer(self, method: str, path: str) -> bytes:
        answer = self.conn.getresponse()
        data = answer.read()
        if answer.status >= 300:
            raise BenchError(f"{self.name}: {method} {path}: {answer.status} {data[:200]!r}")
        return data

    def reconnect(self) -> None:
        """A new connection for each workload: a proxy times out one left idle meanwhile."""
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def put(self, key: str, body: bytes) -> None:
        self.send("PUT", f"{self.base}/{key}", body)

    def get(self, key: str) -> bytes:
        return self.send("GET", f"{self.base}/{key}", b"")


class S3(Swift):
    """S3 with Signature V4 (the payload's sha256 signed), objects in bucket ``bench-s3``."""

    def __init__(self, name: str, port: int, user: str = "test:tester", key: str = "testing") -> None:
        self.name, self.port = name, port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.signer = S3SigV4Auth(Credentials(user, key), "s3", "us-east-1")
        self.base = "/bench-s3"
        try:
            self.send("PUT", self.base, b"")
        except BenchError as err:
            if "BucketAlreadyOwnedByYou" not in str(err) and "BucketAlreadyExists" not in str(err):
                raise

    def send(self, method: str, path: str, body: bytes) -> bytes:
        signed = AWSRequest(method=method, url=f"http://127.0.0.1:{self.port}{path}", data=body)
        self.signer.add_auth(signed)
        self.conn.request(method, path, body=body if method == "PUT" else None, headers=dict(signed.headers.items()))
        return self._answer(method, path)


def measure(servers: Servers, work) -> tuple[float, dict[str, float]]:
    """(seconds, CPU seconds by role) of ``work()``."""
    before, started = servers.cpu(), time.perf_counter()
    work()
    took = time.perf_counter() - started
    after = servers.cpu()
    return took, {role: after[role] - before[role] for role in ROLES}


def revive_stale_anchor() -> None:
    """Continue the processes of an anchor a killed run left stopped: stop.sh cannot end them otherwise."""
    pidfile = ANCHOR_BASE / "pids"
    if not pidfile.exists():
        return
    for name, group in pid_groups_from_pidfile(pidfile).items():
        try:
            os.killpg(group, signal.SIGCONT)
        except OSError:
            pass


def together(pool: list[Swift], method: str, keys: list[str], body: bytes) -> None:
    """``method`` of every key, the keys dealt out to the pool's clients, each on its own thread."""
    def share(index: int) -> None:
        client = pool[index]
        for key in keys[index::len(pool)]:
            client.put(key, body) if method == "put" else client.get(key)

    if len(pool) == 1:
        share(0)
        return
    with ThreadPoolExecutor(len(pool)) as threads:
        for done in [threads.submit(share, index) for index in range(len(pool))]:
            done.result()


def run_rounds(pools: list[list[Swift]], systems: dict[str, Servers], ops: int, rounds: int) -> dict:
    """Each target's workloads, round after round, the order of the targets turned each round."""
    results: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
    for round_ in range(rounds):
        order = pools[round_ % len(pools):] + pools[:round_ % len(pools)]
        for pool in order:
            name = pool[0].name
            system = name.split("-")[0]
            others = [group for other, servers in systems.items() if other != system
                      for group in servers.groups.values()]
            with paused(others):
                servers = systems[system]
                for label, size in SIZES.items():
                    count = ops if size <= 4096 else max(1, ops // 5)
                    body = os.urandom(size)
                    keys = [f"{label}-{round_}-{i}" for i in range(count)]
                    for client in pool:
                        client.reconnect()
                    for op in ("PUT", "GET"):
                        seconds, cpu = measure(servers, lambda: together(pool, op.lower(), keys, body))
                        results.setdefault((name, label, op), []).append(
                            (count / seconds, 1000 * cpu["proxy"] / count, 1000 * sum(cpu.values()) / count))
        print(f"round {round_ + 1} of {rounds} done ({time.strftime('%H:%M:%S')}, load {load_average()})", flush=True)
    return results


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(results: dict, names: list[str]) -> tuple[str, dict]:
    """The table of medians and the issue's ratios; the same as a dict for --json."""
    figures: dict = {}
    rows = []
    for label in SIZES:
        for op in ("PUT", "GET"):
            row: dict = {}
            for name in names:
                runs = results.get((name, label, op))
                if runs:
                    row[name] = {"ops_per_s": statistics.median(r for r, _, _ in runs),
                                 "proxy_cpu_ms": statistics.median(p for _, p, _ in runs),
                                 "server_cpu_ms": statistics.median(t for _, _, t in runs),
                                 "rounds": [[round(v, 3) for v in run] for run in runs]}
            tx_swift, tx_s3, s3api = row.get("txstore-swift"), row.get("txstore-s3"), row.get("anchor-s3api")
            cpu_ratio = tx_s3["proxy_cpu_ms"] / tx_swift["proxy_cpu_ms"] if tx_s3 and tx_swift and \
                tx_swift["proxy_cpu_ms"] else None
            server_ratio = tx_s3["server_cpu_ms"] / tx_swift["server_cpu_ms"] if tx_s3 and tx_swift and \
                tx_swift["server_cpu_ms"] else None
            ops_ratio = tx_s3["ops_per_s"] / s3api["ops_per_s"] if tx_s3 and s3api else None
            cpu_vs_s3api = tx_s3["server_cpu_ms"] / s3api["server_cpu_ms"] if tx_s3 and s3api and \
                s3api["server_cpu_ms"] else None
            row["ratios"] = {"txstore_s3_over_swift_proxy_cpu": cpu_ratio,
                             "txstore_s3_over_swift_server_cpu": server_ratio, "txstore_s3_over_s3api_ops": ops_ratio,
                             "txstore_s3_over_s3api_server_cpu": cpu_vs_s3api}
            figures[f"{label} {op}"] = row
            rows.append([f"{label} {op}"]
                        + [_num(row[n]["ops_per_s"]) if n in row else "-" for n in names]
                        + [_num(row[n]["proxy_cpu_ms"], 2) if n in row else "-" for n in names]
                        + [_num(row[n]["server_cpu_ms"], 2) if n in row else "-" for n in names]
                        + [_num(cpu_ratio, 2), _num(server_ratio, 2), _num(ops_ratio, 2), _num(cpu_vs_s3api, 2)])
    short = [n.replace("txstore-", "tx-").replace("anchor-", "sw-") for n in names]
    header = (["workload"] + [f"ops/s {n}" for n in short] + [f"proxy {n}" for n in short]
              + [f"server {n}" for n in short]
              + ["tx S3/Swift proxy", "tx S3/Swift server", "tx-s3/s3api ops", "tx-s3/s3api server"])
    return render(header, rows, ["<"] + [">"] * (len(header) - 1)), figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="txstore's proxy port (its nodes: port + 10·N)")
    parser.add_argument("--root", type=Path, help="an all-in-one already running from this root (else one is started)")
    parser.add_argument("--anchor", action="store_true", help="also Swift's s3api and Swift API on the anchor")
    parser.add_argument("--ops", type=int, default=200, help="objects per workload (4 KiB; 1 MiB: a fifth)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="clients per target, each on its own connection and thread (default 1)")
    parser.add_argument("--keep-anchor", action="store_true", help="leave the anchor running if this run started it")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    print(f"s3_vs_swift: {os.cpu_count()} cores, load average {load_average()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
          flush=True)
    try:
        with ExitStack() as stack:
            if args.anchor:
                revive_stale_anchor()
                for line in stack.enter_context(swift_anchor(keep=args.keep_anchor)):
                    print(line, flush=True)
            if args.root is None:
                _auth, root, info = stack.enter_context(txstore_cluster(4, ports=(args.port, args.port)))
                print("\n".join(info), flush=True)
            else:
                root = args.root
            systems = {"txstore": Servers(pid_groups_from_run_dir(root / "run"))}
            kinds = [(Swift, "txstore-swift", args.port), (S3, "txstore-s3", args.port)]
            if args.anchor:
                systems["anchor"] = Servers(pid_groups_from_pidfile(ANCHOR_BASE / "pids"))
                kinds += [(S3, "anchor-s3api", ANCHOR_PORT), (Swift, "anchor-swift", ANCHOR_PORT)]
            pools = [[kind(name, port) for _ in range(args.concurrency)] for kind, name, port in kinds]
            results = run_rounds(pools, systems, args.ops, args.rounds)
    except BenchError as err:
        print(f"s3_vs_swift: {err}", file=sys.stderr)
        return 1
    names = [name for _kind, name, _port in kinds]
    table, figures = report(results, [n for n in TARGETS if n in names])
    print(f"\nmedians of {args.rounds} rounds; {args.ops} × 4 KiB and {max(1, args.ops // 5)} × 1 MiB per round, "
          f"{args.concurrency} client{'s' if args.concurrency > 1 else ''} per target; "
          f"CPU in ms per operation (proxy: the proxy's processes, the anchor's memcached with them; server: "
          f"every server process); tx: txstore, sw: the Swift anchor\n{table}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
