"""
Bandwidth differentiation on the all-in-one (issue 18), printed as a table:

1. Shares: tenants ``gold`` (weight 4) and ``bronze`` (weight 1), each with ``--streams``
   concurrent GETs of ``--object-mib`` MiB objects (then PUTs), on one node whose disk is the
   bottleneck; each tenant alone first. Target: gold/bronze within 20 % of 4:1 while both run,
   their sum within 10 % of one tenant alone, bronze never under its weighted share.
2. Caps: one stream with ``X-Io-Rate: 20MB`` (target within 10 % of 20 MB/s); a tenant whose
   class has ``tenant_rate = 60MB`` reading through two proxies at once (within 15 % of 60 MB/s).
3. Selection: three nodes, one of them made busy by a reader outside txstore on its disk; a
   client's GET throughput and p99 with the proxy ordering replicas by load against plain ring
   order (target at least 1.3x, p99 lower).

A disk that is the bottleneck on a machine whose disk is not: the cluster lives on an XFS in a
loop device made for the run, and each node's processes are put in a blkio cgroup (v1) of their
own that throttles them to ``--disk-mbps`` on it; objects are written with O_DIRECT (the node's
direct_writes, 16 MiB and more) and dropped from the page cache as they are read (the node's
keep_cache_size), so every byte moves through the throttled device. Needs root, cgroup v1's
blkio, losetup and mkfs.xfs; everything made is removed at the end.

    sudo .venv/bin/python benchmarks/qos.py [--disk-mbps 80] [--streams 8] [--object-mib 64]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from txstore.aio.launcher import healthy, twistd_command  # noqa: E402

BLKIO = Path("/sys/fs/cgroup/blkio")
MB = 1_000_000
MiB = 1024 * 1024
CHUNK = MiB
_BLOCK = os.urandom(CHUNK)
USERS = {"gold": ("test:tester", "testing"), "bronze": ("test2:tester2", "testing2")}


# --- the throttled disk ----------------------------------------------------------------------


@contextmanager
def loop_disk(size_gib: int):
    """An XFS on a loop device over a sparse file; yields (mount point, 'major:minor')."""
    work = Path(tempfile.mkdtemp(prefix="qos-bench-"))
    image, mount = work / "disk.img", work / "mnt"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(size_gib << 30)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()
    try:
        subprocess.run(["mkfs.xfs", "-q", "-f", loop], check=True, timeout=120)
        subprocess.run(["mount", loop, str(mount)], check=True, timeout=30)
        try:
            yield mount, (Path("/sys/block") / Path(loop).name / "dev").read_text().strip()
        finally:
            subprocess.run(["umount", "-l", str(mount)], timeout=60)
    finally:
        subprocess.run(["losetup", "-d", loop], timeout=30)
        shutil.rmtree(work, ignore_errors=True)


class Throttle:
    """A blkio cgroup (v1) holding some processes to ``bps`` on one device, reads and writes."""

    def __init__(self, name: str, device: str, bps: int) -> None:
        self.path = BLKIO / name
        self.path.mkdir(exist_ok=True)
        (self.path / "blkio.throttle.read_bps_device").write_text(f"{device} {bps}\n")
        (self.path / "blkio.throttle.write_bps_device").write_text(f"{device} {bps}\n")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def remove(self) -> None:
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                (BLKIO / "cgroup.procs").write_text(f"{pid}\n")
            except OSError:
                pass  # gone meanwhile
        self.path.rmdir()


# --- the cluster ---------------------------------------------------------------------------------


def free_port_block(count: int) -> int:
    """A base port with ``count`` free ports after it (probed, not reserved)."""
    for base in range(20000, 60000, 100):
        sockets = []
        try:
            for offset in range(count):
                probe = socket.socket()
                probe.bind(("127.0.0.1", base + offset))
                sockets.append(probe)
            return base
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise RuntimeError("no free ports")


class Cluster:
    def __init__(self, root: Path, nodes: int, classes: list[str], device: str, disk_bps: int) -> None:
        self.root = root
        base = free_port_block(10 * nodes + 40)
        self.port = base
        self.base_port = base + 10
        self.nodes = nodes
        self.command = [sys.executable, "-m", "txstore.aio.launcher", "--root", str(root), "--nodes", str(nodes),
                        "--replicas", str(min(3, nodes)), "--part-power", "6", "--proxy-port", str(self.port),
                        "--base-port", str(self.base_port), "--daemons", "updaters", "--background",
                        *(arg for spec in classes for arg in ("--io-class", spec))]
        subprocess.run(self.command, check=True, timeout=120, stdout=subprocess.DEVNULL)
        self.throttles = []
        for number in range(1, nodes + 1):
            throttle = Throttle(f"txstore-qos-{root.name}-node{number}", device, disk_bps)
            for pid in self.pids(f"node{number}"):
                throttle.add(pid)
            self.throttles.append(throttle)
        self.extra_proxies: list[subprocess.Popen] = []

    def pids(self, name: str) -> list[int]:
        pid = int((self.root / "run" / f"{name}.pid").read_text())
        return [pid]

    def node_port(self, number: int) -> int:
        return self.base_port + 10 * number

    def token(self, user: str, key: str, port: int | None = None) -> tuple[str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=30)
        conn.request("GET", "/auth/v1.0", headers={"X-Auth-User": user, "X-Auth-Key": key})
        response = conn.getresponse()
        response.read()
        return urlpath(response.getheader("X-Storage-Url")), response.getheader("X-Auth-Token")

    def request(self, method: str, path: str, token: str, headers: dict | None = None, port: int | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=120)
        conn.request(method, path, headers={"X-Auth-Token": token, "Content-Length": "0", **(headers or {})})
        response = conn.getresponse()
        response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status}")
        return response

    def second_proxy(self, **options: str) -> int:
        """Another proxy process on the same configuration and rings, on a port of its own."""
        port = free_port_block(1)
        conf = (self.root / "etc" / "proxy.conf").read_text().replace(f"bind_port = {self.port}", f"bind_port = {port}")
        extra = "".join(f"{name} = {value}\n" for name, value in options.items())
        conf = conf.replace("[proxy]\n", "[proxy]\n" + extra, 1)
        path = self.root / "etc" / "proxy2.conf"
        path.write_text(conf)
        process = subprocess.Popen([*twistd_command(), "--nodaemon", f"--pidfile={self.root / 'run' / 'proxy2.pid'}",
                                    f"--logfile={self.root / 'log' / 'proxy2.log'}", "proxy", f"--config={path}"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        self.extra_proxies.append(process)
        deadline = time.monotonic() + 30
        while not healthy(port):
            if time.monotonic() > deadline:
                raise RuntimeError("the second proxy did not start")
            time.sleep(0.1)
        return port

    def stop(self) -> None:
        for process in self.extra_proxies:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run([sys.executable, "-m", "txstore.aio.launcher", "--root", str(self.root), "--stop"],
                       timeout=120, stdout=subprocess.DEVNULL)
        for throttle in self.throttles:
            throttle.remove()


def urlpath(url: str) -> str:
    return "/" + url.split("/", 3)[3]


# --- streams ---------------------------------------------------------------------------------------


class Stream(threading.Thread):
    """One GET (or PUT) of a whole object; records (time, bytes so far) as it goes."""

    def __init__(self, port: int, method: str, path: str, headers: dict, size: int) -> None:
        super().__init__(daemon=True)
        self.port, self.method, self.path, self.headers, self.size = port, method, path, headers, size
        self.marks: list[tuple[float, int]] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            moved = 0
            self.marks.append((time.monotonic(), 0))
            if self.method == "GET":
                conn.request("GET", self.path, headers=self.headers)
                response = conn.getresponse()
                if response.status != 200:
                    raise RuntimeError(f"GET {self.path}: {response.status}")
                while data := response.read(CHUNK):
                    moved += len(data)
                    self.marks.append((time.monotonic(), moved))
            else:
                conn.putrequest("PUT", self.path)
                for name, value in {**self.headers, "Content-Length": str(self.size)}.items():
                    conn.putheader(name, value)
                conn.endheaders()
                while moved < self.size:
                    piece = _BLOCK[: min(CHUNK, self.size - moved)]
                    conn.send(piece)
                    moved += len(piece)
                    self.marks.append((time.monotonic(), moved))
                response = conn.getresponse()
                response.read()
                if response.status != 201:
                    raise RuntimeError(f"PUT {self.path}: {response.status}")
                self.marks.append((time.monotonic(), moved))
            if moved != self.size:
                raise RuntimeError(f"{self.method} {self.path}: {moved} of {self.size} bytes")
        except Exception as err:  # reported in the table
            self.error = str(err)

    def moved_by(self, when: float) -> int:
        best = 0
        for stamp, moved in self.marks:
            if stamp > when:
                break
            best = moved
        return best


def run_streams(streams: list[Stream]) -> None:
    for stream in streams:
        stream.start()
    for stream in streams:
        stream.join(timeout=900)
        if stream.is_alive() or stream.error:
            raise RuntimeError(stream.error or f"{stream.path} did not finish")


def rate(streams: list[Stream], start: float, end: float) -> float:
    """Bytes/s the streams moved together between two instants."""
    return sum(s.moved_by(end) - s.moved_by(start) for s in streams) / (end - start)


def window(groups: list[list[Stream]]) -> tuple[float, float]:
    """
    From a second after the last stream started to half a second before the first one moved
    its last byte: every stream moving (a tenant with fewer streams left has fewer chunks
    queued, and would show the scheduler's work less than its own tail). A PUT's last byte is
    the one the client sent, not its answer: the bytes still in the sockets and the node's
    queue when the client has sent everything drain with no more sent, which would read as a
    slower stream.
    """
    start = max(s.marks[0][0] for group in groups for s in group) + 1.0
    end = min(next(stamp for stamp, moved in s.marks if moved == s.size) for group in groups for s in group) - 0.5
    return start, end


class NodePoller(threading.Thread):
    """The nodes' own view: each tenant's bytes/s from /recon/bandwidth, once a second."""

    def __init__(self, ports: list[int]) -> None:
        super().__init__(daemon=True)
        self.ports = ports
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            totals: dict[str, float] = {}
            for port in self.ports:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/recon/bandwidth")
                    report = json.loads(conn.getresponse().read())
                except (OSError, ValueError):
                    continue
                for tenant, figures in report.get("tenants", {}).items():
                    totals[tenant] = totals.get(tenant, 0.0) + figures["bps"]
            self.samples.append((time.monotonic(), totals))

    def mean(self, tenant: str, start: float, end: float) -> float:
        inside = [totals.get(tenant, 0.0) for stamp, totals in self.samples if start + 1 <= stamp <= end]
        return sum(inside) / len(inside) if inside else 0.0


# --- the measurements ------------------------------------------------------------------------------


def upload(cluster: Cluster, tenants: dict[str, tuple[str, str]], count: int, size: int) -> None:
    streams = []
    for tenant, (path, token) in tenants.items():
        cluster.request("PUT", f"{path}/qos", token)
        for number in range(count):
            streams.append(Stream(cluster.port, "PUT", f"{path}/qos/o{number}", {"X-Auth-Token": token}, size))
    run_streams(streams)


def shares(cluster: Cluster, tenants: dict, count: int, size: int, method: str) -> dict:
    def streams_of(tenant: str) -> list[Stream]:
        path, token = tenants[tenant]
        name = "o" if method == "GET" else "p"
        return [Stream(cluster.port, method, f"{path}/qos/{name}{n}", {"X-Auth-Token": token}, size)
                for n in range(count)]
    alone = {}
    for tenant in tenants:
        streams = streams_of(tenant)
        run_streams(streams)
        start, end = window([streams])
        alone[tenant] = rate(streams, start, end)
    gold, bronze = streams_of("gold"), streams_of("bronze")
    poller = NodePoller([cluster.node_port(n) for n in range(1, cluster.nodes + 1)])
    poller.start()
    try:
        run_streams(gold + bronze)
    finally:
        poller.stopped.set()
        poller.join()
    start, end = window([gold, bronze])
    node_view = {tenant: poller.mean(tenants[tenant][0].split("/")[-1], start, end) for tenant in tenants}
    together = {"gold": rate(gold, start, end), "bronze": rate(bronze, start, end)}
    ratio = together["gold"] / together["bronze"] if together["bronze"] else float("inf")
    single = sum(alone.values()) / len(alone)
    # bronze's part of what the disk moved, against its weight's part (1 of 4 + 1), over the
    # whole window and in its worst two seconds
    weighted = 1 / 5
    parts = []
    moment = start
    while moment + 2.0 <= end:
        both = rate(gold, moment, moment + 2.0) + rate(bronze, moment, moment + 2.0)
        parts.append(rate(bronze, moment, moment + 2.0) / both / weighted if both else 0.0)
        moment += 2.0
    return {
        "alone": alone, "together": together, "ratio": ratio, "sum_vs_alone": sum(together.values()) / single,
        "bronze_share": together["bronze"] / sum(together.values()) / weighted,
        "bronze_worst": min(parts) if parts else 0.0, "window": end - start, "node_view": node_view,
    }


def stream_cap(cluster: Cluster, tenants: dict, size: int) -> float:
    path, token = tenants["gold"]
    stream = Stream(cluster.port, "GET", f"{path}/qos/o0", {"X-Auth-Token": token, "X-Io-Rate": "20MB"}, size)
    run_streams([stream])
    start, end = stream.marks[0][0] + 1.0, stream.marks[-1][0]
    return rate([stream], start, end)


def tenant_cap(cluster: Cluster, second: int, size: int, count: int, seconds: float = 20.0) -> dict:
    """
    A tenant of a class capped at 60 MB/s reading through two proxies at once, ``count``
    readers going over its objects for ``seconds`` after 5 s to settle (the controller's first
    rounds: each node holds the whole cap until its share comes).
    """
    _, admin = cluster.token("admin:admin", "admin")
    path, token = cluster.token("test:tester", "testing")
    cluster.request("POST", path, admin, {"X-Account-Io-Class": "metered"})
    cluster.request("PUT", f"{path}/capped", token)
    run_streams([Stream(cluster.port, "PUT", f"{path}/capped/o{n}", {"X-Auth-Token": token}, size)
                 for n in range(count)])
    _, token2 = cluster.token("test:tester", "testing", port=second)
    stop = threading.Event()
    readers = [Reader(cluster.port if n % 2 else second, [f"{path}/capped/o{(n + k) % count}" for k in range(count)],
                      token if n % 2 else token2, stop) for n in range(count)]
    poller = NodePoller([cluster.node_port(n) for n in range(1, cluster.nodes + 1)])
    poller.start()
    for reader in readers:
        reader.start()
    try:
        time.sleep(5.0)
        start, before = time.monotonic(), sum(r.moved for r in readers)
        time.sleep(seconds)
        end, after = time.monotonic(), sum(r.moved for r in readers)
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=120)
        poller.stopped.set()
        poller.join()
    errors = [r.error for r in readers if r.error]
    if errors:
        raise RuntimeError(errors[0])
    return {"rate": (after - before) / (end - start), "node_view": poller.mean(path.split("/")[-1], start, end),
            "window": end - start}


def busy_names(cluster: Cluster, account: str, container: str, node_port: int, count: int) -> list[str]:
    """Object names whose first primary in ring order is the node on ``node_port``."""
    from txstore.common.cluster import load_cluster_config
    from txstore.ring.ringset import RingSet

    config = load_cluster_config(cluster.root / "etc" / "txstore.conf")
    ring = RingSet.load(cluster.root / "etc", config.hasher, config.policies, auto_reload=False).object_ring(0)
    names, number = [], 0
    while len(names) < count:
        name = f"b{number}"
        if ring.get_nodes(account, container, name)[1][0].port == node_port:
            names.append(name)
        number += 1
    return names


class Reader(threading.Thread):
    """GETs of the given objects one after another until told to stop; each GET's seconds."""

    def __init__(self, port: int, paths: list[str], token: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.paths, self.token, self.stop = port, paths, token, stop
        self.seconds: list[float] = []
        self.moved = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            turn = 0
            while not self.stop.is_set():
                started = time.monotonic()
                conn.request("GET", self.paths[turn % len(self.paths)], headers={"X-Auth-Token": self.token})
                response = conn.getresponse()
                while data := response.read(CHUNK):
                    self.moved += len(data)
                if response.status != 200:
                    raise RuntimeError(f"GET: {response.status}")
                self.seconds.append(time.monotonic() - started)
                turn += 1
        except Exception as err:
            self.error = str(err)


def selection(cluster: Cluster, ring_port: int, busy_mib: int, seconds: float, readers: int, size: int,
              device: str) -> dict:
    """GETs of objects whose first primary is a busy node, by load (the main proxy) and in ring order."""
    path, token = cluster.token("test2:tester2", "testing2")
    _, ring_token = cluster.token("test2:tester2", "testing2", port=ring_port)
    account = path.split("/")[-1]
    cluster.request("PUT", f"{path}/sel", token)
    names = busy_names(cluster, account, "sel", cluster.node_port(1), readers * 2)
    run_streams([Stream(cluster.port, "PUT", f"{path}/sel/{name}", {"X-Auth-Token": token}, size) for name in names])
    # the busy node: readers outside txstore on its disk, in its cgroup
    hog = cluster.root / "hog"
    with open(hog, "wb") as handle:
        for _ in range(busy_mib):
            handle.write(_BLOCK)
        os.fsync(handle.fileno())
    hogs = []
    for _ in range(4):
        process = subprocess.Popen(["sh", "-c", f"while :; do dd if={hog} of=/dev/null bs=4M iflag=direct"
                                                 " status=none; done"], start_new_session=True)
        cluster.throttles[0].add(process.pid)
        hogs.append(process)
    results = {}
    try:
        time.sleep(2)
        for label, port, tok in (("ring order", ring_port, ring_token), ("by load", cluster.port, token)):
            stop = threading.Event()
            group = [Reader(port, [f"{path}/sel/{name}" for name in names[n::readers]], tok, stop)
                     for n in range(readers)]
            started = time.monotonic()
            for reader in group:
                reader.start()
            time.sleep(seconds)
            stop.set()
            for reader in group:
                reader.join(timeout=120)
                if reader.error:
                    raise RuntimeError(reader.error)
            took = time.monotonic() - started
            durations = sorted(d for reader in group for d in reader.seconds)
            results[label] = {"rate": sum(r.moved for r in group) / took,
                              "p99": durations[min(len(durations) - 1, int(len(durations) * 0.99))],
                              "gets": len(durations)}
    finally:
        for process in hogs:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return results


def print_shares(label: str, result: dict) -> None:
    alone, together = result["alone"], result["together"]
    print(f"{label}: alone gold {alone['gold'] / MB:.1f} MB/s, bronze {alone['bronze'] / MB:.1f} MB/s; together"
          f" gold {together['gold'] / MB:.1f}, bronze {together['bronze'] / MB:.1f} MB/s over {result['window']:.0f} s")
    print(f"  gold:bronze {result['ratio']:.2f} (target 4 +- 20 %: 3.2-4.8); sum / alone"
          f" {result['sum_vs_alone']:.2f} (target 0.9-1.1); bronze's part of the disk against its weight's"
          f" {result['bronze_share']:.2f}, in its worst 2 s {result['bronze_worst']:.2f} (never starved: about 1)")
    view = result["node_view"]
    print(f"  as the node counted its disk work: gold {view['gold'] / MB:.1f}, bronze {view['bronze'] / MB:.1f} MB/s"
          f" ({view['gold'] / view['bronze'] if view['bronze'] else float('inf'):.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--disk-mbps", type=int, default=80, help="each node's disk, MB/s (default 80)")
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams per tenant (default 8)")
    parser.add_argument("--object-mib", type=int, default=64, help="object size, MiB (default 64)")
    parser.add_argument("--disk-gib", type=int, default=8, help="the loop device's size, GiB (default 8)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=("shares", "puts", "caps", "tenantcap", "selection"))
    parser.add_argument("--selection-seconds", type=float, default=20.0, help="each order's reading time (default 20)")
    args = parser.parse_args()
    if os.geteuid() != 0 or not (BLKIO / "cgroup.procs").exists() or not shutil.which("mkfs.xfs"):
        print("needs root, cgroup v1 blkio at /sys/fs/cgroup/blkio and mkfs.xfs")
        return 2
    size = args.object_mib * MiB
    disk_bps = args.disk_mbps * MB
    classes = ["gold=4", "bronze=1,default", "metered=1,tenant_rate=60MB"]
    with ExitStack() as stack:
        mount, device = stack.enter_context(loop_disk(args.disk_gib))
        print(f"disk: XFS on a loop device, each node's processes throttled to {args.disk_mbps} MB/s"
              f" read and write; {args.streams} streams per tenant of {args.object_mib} MiB")
        if not {"shares", "puts", "caps"} <= set(args.skip):
            cluster = Cluster(mount / "one", 1, classes, device, disk_bps)
            stack.callback(cluster.stop)
            _, admin = cluster.token("admin:admin", "admin")
            tenants = {}
            for tenant, (user, key) in USERS.items():
                path, token = cluster.token(user, key)
                cluster.request("POST", path, admin, {"X-Account-Io-Class": tenant})
                tenants[tenant] = (path, token)
            upload(cluster, tenants, args.streams, size)
            if "shares" not in args.skip:
                print_shares("GET shares, one node", shares(cluster, tenants, args.streams, size, "GET"))
            if "puts" not in args.skip:
                print_shares("PUT shares, one node", shares(cluster, tenants, args.streams, size, "PUT"))
            if "caps" not in args.skip:
                got = stream_cap(cluster, tenants, size)
                print(f"stream cap X-Io-Rate: 20MB: {got / MB:.1f} MB/s ({got / (20 * MB):.2f} of it; target 0.9-1.1)")
        if not {"tenantcap", "selection"} <= set(args.skip):
            cluster = Cluster(mount / "three", 3, classes, device, disk_bps)
            stack.callback(cluster.stop)
            ring_port = cluster.second_proxy(sorting_method="ring")
            if "tenantcap" not in args.skip:
                got = tenant_cap(cluster, ring_port, size, args.streams)
                print(f"tenant cap 60 MB/s, {args.streams} streams through two proxies over 3 nodes:"
                      f" {got['rate'] / MB:.1f} MB/s ({got['rate'] / (60 * MB):.2f} of it; target 0.85-1.15);"
                      f" as the nodes counted it {got['node_view'] / MB:.1f} MB/s, over {got['window']:.0f} s")
            if "selection" not in args.skip:
                got = selection(cluster, ring_port, 1024, args.selection_seconds, 4, 8 * MiB, device)
                ring, load = got["ring order"], got["by load"]
                print(f"one node busy (4 readers outside txstore on its disk), 4 clients reading 8 MiB objects"
                      f" whose first primary it is, {args.selection_seconds:.0f} s each:")
                print(f"  ring order {ring['rate'] / MB:.1f} MB/s, p99 {ring['p99'] * 1000:.0f} ms ({ring['gets']} GETs);"
                      f" by load {load['rate'] / MB:.1f} MB/s, p99 {load['p99'] * 1000:.0f} ms ({load['gets']} GETs);"
                      f" {load['rate'] / ring['rate']:.2f}x (target >= 1.3x, p99 lower)")
        print(json.dumps({"done": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
