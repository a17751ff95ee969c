"""
The S3 path against the Swift path on one running all-in-one (issue 17): the same PUTs and
GETs of 4 KiB and 1 MiB objects, one client on a kept-alive connection, over the Swift API
(a token) and over S3 (each request signed with Signature V4 by botocore's signer), rounds
alternating. Reports ops/s and the proxy's CPU milliseconds per operation (from /proc, the
proxy's process group: ``serverstats``), medians over the rounds, and the S3/Swift ratios.

    txstore-aio --root /tmp/aio-bench --proxy-port 18560 --base-port 18560 --background
    python benchmarks/s3_vs_swift.py --root /tmp/aio-bench --port 18560 --ops 200 --rounds 3

The issue's target: the S3 path costs at most 10 % more proxy CPU per operation than Swift's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
from pathlib import Path

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serverstats import Servers, pid_groups_from_run_dir  # noqa: E402

SIZES = {"4KiB": 4096, "1MiB": 1024 * 1024}


class Swift:
    name = "swift"

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.request("GET", "/auth/v1.0", headers={"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
        answer = self.conn.getresponse()
        answer.read()
        self.token = answer.getheader("X-Auth-Token")
        self.send("PUT", "/v1/AUTH_test/bench-swift", b"")

    def send(self, method: str, path: str, body: bytes) -> bytes:
        self.conn.request(method, path, body=body if method == "PUT" else None, headers={"X-Auth-Token": self.token})
        answer = self.conn.getresponse()
        data = answer.read()
        if answer.status >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status} {data[:200]!r}")
        return data

    def reconnect(self) -> None:
        """A new connection for each workload: the proxy times out one left idle by the other client's."""
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.conn.port, timeout=60)

    def put(self, key: str, body: bytes) -> None:
        self.send("PUT", f"/v1/AUTH_test/bench-swift/{key}", body)

    def get(self, key: str) -> bytes:
        return self.send("GET", f"/v1/AUTH_test/bench-swift/{key}", b"")


class S3(Swift):
    name = "s3"

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.signer = S3SigV4Auth(Credentials("test:tester", "testing"), "s3", "us-east-1")
        try:
            self.send("PUT", "/bench-s3", b"")
        except RuntimeError as err:
            if "BucketAlreadyOwnedByYou" not in str(err):
                raise

    def send(self, method: str, path: str, body: bytes) -> bytes:
        signed = AWSRequest(method=method, url=f"http://127.0.0.1:{self.port}{path}", data=body)
        self.signer.add_auth(signed)
        headers = dict(signed.headers.items())
        self.conn.request(method, path, body=body if method == "PUT" else None, headers=headers)
        answer = self.conn.getresponse()
        data = answer.read()
        if answer.status >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status} {data[:200]!r}")
        return data

    def put(self, key: str, body: bytes) -> None:
        self.send("PUT", f"/bench-s3/{key}", body)

    def get(self, key: str) -> bytes:
        return self.send("GET", f"/bench-s3/{key}", b"")


def measure(servers: Servers, work) -> tuple[float, float]:
    """(seconds, proxy CPU seconds) of ``work()``."""
    before, started = servers.cpu()["proxy"], time.perf_counter()
    work()
    return time.perf_counter() - started, servers.cpu()["proxy"] - before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="the all-in-one's root (its run/ pid files)")
    parser.add_argument("--port", type=int, required=True, help="the proxy's port")
    parser.add_argument("--ops", type=int, default=200, help="objects per workload (4 KiB; 1 MiB: a fifth)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    servers = Servers(pid_groups_from_run_dir(args.root / "run"))
    clients = [Swift(args.port), S3(args.port)]
    results: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        for client in clients if round_ % 2 == 0 else list(reversed(clients)):
            for label, size in SIZES.items():
                ops = args.ops if size <= 4096 else max(1, args.ops // 5)
                body = os.urandom(size)
                keys = [f"{label}-{round_}-{i}" for i in range(ops)]
                client.reconnect()
                took = measure(servers, lambda: [client.put(key, body) for key in keys])
                results.setdefault((client.name, label, "PUT"), []).append((ops / took[0], 1000 * took[1] / ops))
                took = measure(servers, lambda: [client.get(key) for key in keys])
                results.setdefault((client.name, label, "GET"), []).append((ops / took[0], 1000 * took[1] / ops))
    report = {}
    print(f"{'workload':<14} {'swift ops/s':>11} {'s3 ops/s':>9} {'swift ms CPU':>12} {'s3 ms CPU':>9} {'CPU s3/swift':>12}")
    for label in SIZES:
        for op in ("PUT", "GET"):
            swift_rate = statistics.median(r for r, _ in results[("swift", label, op)])
            s3_rate = statistics.median(r for r, _ in results[("s3", label, op)])
            swift_cpu = statistics.median(c for _, c in results[("swift", label, op)])
            s3_cpu = statistics.median(c for _, c in results[("s3", label, op)])
            report[f"{label} {op}"] = {"swift_ops": swift_rate, "s3_ops": s3_rate, "swift_cpu_ms": swift_cpu,
                                       "s3_cpu_ms": s3_cpu}
            print(f"{label + ' ' + op:<14} {swift_rate:>11.1f} {s3_rate:>9.1f} {swift_cpu:>12.2f} {s3_cpu:>9.2f} "
                  f"{s3_cpu / swift_cpu if swift_cpu else float('nan'):>12.2f}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
