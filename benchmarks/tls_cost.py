"""
What TLS costs the proxy (issue 23: "TLS vs plain, CPU per 1 MiB GET"), measured on GETs of
1 MiB and 4 KiB objects in three setups, in alternating rounds:

- ``plain``: a fresh all-in-one's proxy, HTTP to the client and to the nodes;
- ``https``: a second proxy on the same nodes, serving HTTPS (``[proxy] tls_certificate``),
  plain HTTP to the nodes;
- ``https+cluster``: a second fresh all-in-one with TLS everywhere: HTTPS to the client and
  mutual TLS (``[cluster-tls]``) from the proxy to its nodes and between them.

    python benchmarks/tls_cost.py                       # 5 rounds, 200 × 1 MiB and 1000 × 4 KiB each
    python benchmarks/tls_cost.py --rounds 3 --concurrency 8

Certificates are made for the run (``txstore/test/pki.py``); the TLS options are written into
the all-in-ones' generated config files and their processes restarted (``txstore/test/tls_cluster.py``).
Each round runs every setup once, in an order that rotates, so that the machine's drift
spreads over all of them. Per setup and size: ops/s, and the CPU per operation of the proxy
process and of the nodes (user + system, from /proc/<pid>/stat), the medians of the rounds.
The client is ``--concurrency`` processes, each with one keep-alive connection (its own TLS
CPU is not counted). Load averages are printed before and after.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen import BenchError, render  # noqa: E402
from serverstats import cpu_seconds_of_pids, pid_groups_from_run_dir  # noqa: E402
from standard import load_average, txstore_cluster  # noqa: E402

from txstore.test.pki import PKI  # noqa: E402
from txstore.test.tls_cluster import add_listener_tls, all_tls, start, stop  # noqa: E402

SIZES = (1024 * 1024, 4096)
OBJECTS = {1024 * 1024: 16, 4096: 64}  # distinct objects read over and over
TIMEOUT = 60.0


class Setup:
    """One way to reach the objects: a proxy's address, whether it speaks TLS, and its servers' pids."""

    def __init__(self, name: str, port: int, tls: bool, root: Path, proxy: str) -> None:
        self.name, self.port, self.tls, self.root, self.proxy = name, port, tls, root, proxy
        self.storage_path = ""
        self.token = ""

    def pids(self) -> tuple[list[int], list[int]]:
        groups = pid_groups_from_run_dir(self.root / "run")
        return [groups[self.proxy]], [pid for name, pid in groups.items() if name.startswith("node")]


def _connection(port: int, ca: str | None) -> http.client.HTTPConnection:
    if ca is None:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT,
                                       context=ssl.create_default_context(cafile=ca))


def _exchange(conn: http.client.HTTPConnection, method: str, path: str, headers: dict, body: bytes | None = None):
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.getheaders(), response.read()


def log_in(setup: Setup, ca: str | None) -> None:
    conn = _connection(setup.port, ca)
    try:
        status, headers, _ = _exchange(conn, "GET", "/auth/v1.0", {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
    finally:
        conn.close()
    found = {name.lower(): value for name, value in headers}
    if status != 200:
        raise BenchError(f"{setup.name}: auth answered {status}")
    setup.token = found["x-auth-token"]
    setup.storage_path = "/" + found["x-storage-url"].split("/", 3)[3]


def fill(setup: Setup, ca: str | None) -> None:
    """The objects the GETs read, in container ``tls-cost``."""
    conn = _connection(setup.port, ca)
    auth = {"X-Auth-Token": setup.token}
    try:
        status, _, _ = _exchange(conn, "PUT", f"{setup.storage_path}/tls-cost", auth)
        if status not in (201, 202):
            raise BenchError(f"{setup.name}: container PUT answered {status}")
        for size, count in OBJECTS.items():
            for number in range(count):
                body = bytes([number % 256]) * size
                status, _, _ = _exchange(conn, "PUT", f"{setup.storage_path}/tls-cost/{size}-{number}", auth, body)
                if status != 201:
                    raise BenchError(f"{setup.name}: PUT answered {status}")
    finally:
        conn.close()


_CONNECTIONS: dict[tuple[int, bool], http.client.HTTPConnection] = {}


def _get_many(task: tuple[int, str | None, str, str, int, int, int]) -> tuple[int, int]:
    """In a client process: ``count`` GETs over its kept connection; (good, bad)."""
    port, ca, storage_path, token, size, first, count = task
    key = (port, ca is not None)
    if key not in _CONNECTIONS:
        _CONNECTIONS[key] = _connection(port, ca)
    conn = _CONNECTIONS[key]
    good = bad = 0
    for number in range(first, first + count):
        path = f"{storage_path}/tls-cost/{size}-{number % OBJECTS[size]}"
        try:
            status, _, body = _exchange(conn, "GET", path, {"X-Auth-Token": token})
        except (OSError, http.client.HTTPException):
            conn.close()
            bad += 1
            continue
        if status == 200 and len(body) == size:
            good += 1
        else:
            bad += 1
    return good, bad


def measure(pool, setup: Setup, ca: str | None, size: int, count: int, concurrency: int) -> dict:
    proxy, nodes = setup.pids()
    share = count // concurrency
    tasks = [(setup.port, ca if setup.tls else None, setup.storage_path, setup.token, size, i * share, share)
             for i in range(concurrency)]
    proxy_before, nodes_before = cpu_seconds_of_pids(proxy), cpu_seconds_of_pids(nodes)
    started = time.monotonic()
    outcomes = pool.map(_get_many, tasks, chunksize=1)
    seconds = time.monotonic() - started
    good = sum(g for g, _ in outcomes)
    bad = sum(b for _, b in outcomes)
    ops = max(good, 1)
    return {
        "ops_per_s": good / seconds, "errors": bad,
        "proxy_ms_per_op": 1000 * (cpu_seconds_of_pids(proxy) - proxy_before) / ops,
        "nodes_ms_per_op": 1000 * (cpu_seconds_of_pids(nodes) - nodes_before) / ops,
    }


def https_proxy_beside(root: Path, port: int, certificate: Path, key: Path) -> None:
    """A second proxy on the all-in-one at ``root``, serving HTTPS on ``port`` (``proxy-https``)."""
    etc = root / "etc"
    text = (etc / "proxy.conf").read_text()
    lines = [f"bind_port = {port}" if line.startswith("bind_port = ") else line for line in text.splitlines()]
    (etc / "proxy-https.conf").write_text("\n".join(lines) + "\n")
    add_listener_tls(etc / "proxy-https.conf", certificate, key)
    start(root, "proxy-https", port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count-1m", type=int, default=200, help="1 MiB GETs per setup and round")
    parser.add_argument("--count-4k", type=int, default=1000, help="4 KiB GETs per setup and round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--ports", type=int, default=32000,
                        help="first of the ports used: all-in-ones at +0/+100 and +200/+300, the HTTPS proxy at +2")
    parser.add_argument("--save", type=Path, help="write the rounds' figures as JSON here")
    args = parser.parse_args(argv)
    counts = {1024 * 1024: args.count_1m, 4096: args.count_4k}
    base = args.ports
    print(f"load average before: {load_average()}", flush=True)
    pki_dir = Path(tempfile.mkdtemp(prefix="tls-cost-pki-"))
    rounds: list[dict] = []
    try:
        pki = PKI(pki_dir)
        ca = str(pki.cluster_ca)
        with ExitStack() as stack:
            _, plain_root, info = stack.enter_context(
                txstore_cluster(args.nodes, "updaters", 1, ports=(base + 1, base + 100)))
            print("\n".join(info), flush=True)
            stack.callback(stop, plain_root, "proxy-https")
            https_proxy_beside(plain_root, base + 2, *pki.node)
            _, tls_root, info = stack.enter_context(
                txstore_cluster(args.nodes, "updaters", 1, ports=(base + 201, base + 300)))
            print("\n".join(info), flush=True)
            all_tls(tls_root, base + 201, base + 300, args.nodes, pki)
            setups = [Setup("plain", base + 1, False, plain_root, "proxy"),
                      Setup("https", base + 2, True, plain_root, "proxy-https"),
                      Setup("https+cluster", base + 201, True, tls_root, "proxy")]
            for setup in setups:
                log_in(setup, ca if setup.tls else None)
            fill(setups[0], None)  # the plain and https proxies share the nodes
            setups[1].storage_path = setups[0].storage_path
            fill(setups[2], ca)
            with multiprocessing.Pool(args.concurrency) as pool:
                for setup in setups:  # warm every connection and cache once
                    for size in SIZES:
                        measure(pool, setup, ca, size, args.concurrency * 4, args.concurrency)
                for number in range(args.rounds):
                    order = setups[number % len(setups):] + setups[:number % len(setups)]
                    for size in SIZES:
                        for setup in order:
                            figures = measure(pool, setup, ca, size, counts[size], args.concurrency)
                            rounds.append({"round": number, "setup": setup.name, "size": size, **figures})
                    print(f"round {number + 1}/{args.rounds} done (load {load_average()})", flush=True)
    finally:
        shutil.rmtree(pki_dir, ignore_errors=True)
    print(f"load average after: {load_average()}")
    rows = []
    for size in SIZES:
        for name in ("plain", "https", "https+cluster"):
            mine = [r for r in rounds if r["setup"] == name and r["size"] == size]
            if not mine:
                continue
            median = {key: statistics.median(r[key] for r in mine)
                      for key in ("ops_per_s", "proxy_ms_per_op", "nodes_ms_per_op")}
            rows.append([f"{'1 MiB' if size > 4096 else '4 KiB'} GET", name, f"{median['ops_per_s']:.0f}",
                         f"{median['proxy_ms_per_op']:.2f}", f"{median['nodes_ms_per_op']:.2f}",
                         str(sum(r["errors"] for r in mine))])
    print(render(["op", "setup", "ops/s", "proxy CPU ms/op", "nodes CPU ms/op", "errors"], rows,
                 ["<", "<", ">", ">", ">", ">"]))
    if args.save:
        args.save.write_text(json.dumps(rounds, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"tls_cost: {err}", file=sys.stderr)
        sys.exit(1)
