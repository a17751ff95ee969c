"""
Replication throughput between two nodes on loopback.

The receiver is a real ``twistd objectnode`` (its own process, so sender and receiver each get
a core) started from a generated two-node, two-replica cluster under a temp root, with every
background daemon turned off so that it only serves replication sessions. The sender is this
process: node 1's device is filled directly with `DiskFileManager` (not timed), then node 1's
`ObjectReplicator` runs a pass, as the node would, with the production pieces (real
`DeviceThreadPools`, fsync on on both sides, the objectnode's default concurrency of 1). Every
partition has both nodes as primaries, so a pass is a primary-style sync of every partition:
local ``hashes.json`` against the receiver's, then a missing check and the updates.

Scenarios, each on a fresh pair of nodes:

small   ``--small`` objects of ``--small-kib`` KiB spread over the ring's partitions:
        first pass (everything is missing on the receiver) -> objects/s;
        second pass, nothing changed: the receiver re-hashes the suffixes the PUTs invalidated;
        third pass: the steady no-op (hash comparison only) -> seconds.
large   ``--large-mib`` MiB in objects of ``--object-mib`` MiB: one pass -> MB/s.

For each pass: wall seconds, the CPU seconds of the sender (this process, every thread) and of
the receiver (/proc/<pid>/stat), and the peak RSS (VmHWM, reset before each pass through
/proc/<pid>/clear_refs) of both. Memory must not grow with the object size: compare the large
pass's peaks with ``--object-mib 1024``.

    .venv/bin/python benchmarks/replication.py                       # 10,000 x 4 KiB; 16 x 64 MiB; 3 runs
    .venv/bin/python benchmarks/replication.py --small 1000 --large-mib 128 --runs 1

Loopback only; the temp roots and the receiver processes are removed at the end, also on errors
and Ctrl-C. Figures are medians over ``--runs``; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import os
import pstats
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from txstore.aio.layout import HOST, Topology, prepare
from txstore.common.cluster import load_cluster_config
from txstore.common.io import DeviceThreadPools
from txstore.daemons.object_replicator import ObjectReplicator
from txstore.replication.sender import BytePacer, Connector, ObjectSender
from txstore.ring.ringset import RingSet
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.storage.local_devices import local_device_matcher

ACCOUNT, CONTAINER = "AUTH_bench", "replication"
MiB = 2**20
TICKS = os.sysconf("SC_CLK_TCK")
WRITE_CHUNK = MiB
DAEMONS = ("container-updater", "object-updater", "object-auditor", "object-replicator",
           "container-replicator", "account-replicator")


# --- processes: CPU and memory ---------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory since start or since `reset_peak`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: ``5`` into clear_refs); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- the cluster -----------------------------------------------------------------------------


def free_base_port() -> int:
    """A base port whose node ports (base+10, +11, +20, +21) are free on loopback now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            base = probe.getsockname()[1] - 10
        if base < 1024 or base + 21 > 65535:
            continue
        if all(_port_free(base + offset) for offset in (10, 11, 20, 21)):
            return base
    raise SystemExit("no free ports found on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
            return True
        except OSError:
            return False


def listening(pid: int, port: int) -> bool:
    """Whether ``pid``'s network namespace has a TCP socket listening on ``port`` (no connect)."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


_OPEN: set[Cluster] = set()


@atexit.register
def _close_leftovers() -> None:
    """Ctrl-C stops the reactor without running the scenarios' ``finally``: clean up here."""
    for cluster in list(_OPEN):
        cluster.close()


class Cluster:
    """Two nodes' files under a temp root: node 1 is this process (sender), node 2 a twistd."""

    def __init__(self, part_power: int, profile: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="txstore-bench-repl-"))
        self.receiver: subprocess.Popen | None = None
        _OPEN.add(self)
        try:
            base = free_base_port()
            self.topology = Topology(nodes=2, replicas=2, part_power=part_power, base_port=base)
            self.layout = prepare(self.root, self.topology, base + 5)
            self.cluster = load_cluster_config(self.layout.etc / "txstore.conf")
            config = self.layout.node_config(2)
            config.write_text(_receiver_config(config.read_text()))
            self._start_receiver(config, profile)
        except BaseException:
            self.close()
            raise

    def _start_receiver(self, config: Path, profile: Path | None) -> None:
        twistd = str(Path(sys.executable).with_name("twistd"))
        command = [twistd, "--nodaemon", "--pidfile=", f"--logfile={self.root / 'log' / 'node2.log'}"]
        if profile is not None:
            command += [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
        self.receiver = subprocess.Popen(
            command + ["objectnode", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "log" / "node2.stderr", "wb"),
        )
        port = self.topology.node_port(2)
        for _ in range(600):
            if self.receiver.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"http://{HOST}:{port}/healthcheck", timeout=1).read()
                if listening(self.receiver.pid, port + 1):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        logs = "".join(p.read_text(errors="replace")[-2000:] for p in sorted((self.root / "log").glob("node2.*")))
        raise SystemExit(f"the receiver did not start:\n{logs}")

    @property
    def receiver_pid(self) -> int:
        assert self.receiver is not None
        return self.receiver.pid

    @property
    def sender_devices(self) -> Path:
        return self.layout.devices(1)

    @property
    def receiver_devices(self) -> Path:
        return self.layout.devices(2)

    def rings(self) -> RingSet:
        return RingSet.load(self.layout.etc, self.cluster.hasher, self.cluster.policies)

    def close(self) -> None:
        if self.receiver is not None and self.receiver.poll() is None:
            self.receiver.send_signal(signal.SIGTERM)
            try:
                self.receiver.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.receiver.kill()
                self.receiver.wait()
        shutil.rmtree(self.root, ignore_errors=True)
        _OPEN.discard(self)


def _receiver_config(text: str) -> str:
    """Node 2's generated config with every background daemon off: it only receives."""
    out, section = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            out.append(line)
            if section in DAEMONS:
                out.append("enabled = false")
            continue
        if section in DAEMONS and stripped.startswith("enabled"):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


# --- filling the sender's device (not timed) -------------------------------------------------


def populate(cluster: Cluster, count: int, size: int, prefix: str, cold: bool) -> float:
    """Write ``count`` objects of ``size`` bytes to node 1's d1; returns the seconds it took."""
    started = time.perf_counter()
    # fsync off while filling (setup, not measured); one os.sync() at the end, so that no
    # write-back of this data overlaps a timed pass.
    manager = DiskFileManager(cluster.sender_devices, False, cluster.cluster.hasher, fsync=False)
    ring = cluster.rings().object_ring(0)
    block = os.urandom(WRITE_CHUNK + 4096)
    data_files = []
    for i in range(count):
        name = f"{prefix}-{i:07d}"
        diskfile = manager.get_diskfile("d1", ring.get_part(ACCOUNT, CONTAINER, name), ACCOUNT, CONTAINER, name)
        writer = diskfile.create_writer(size)
        written = 0
        while written < size:
            piece = min(WRITE_CHUNK, size - written)
            start = (i * 4099 + written // WRITE_CHUNK * 61) % 4096  # every object differs
            writer.write(block[start:start + piece])
            written += piece
        writer.commit({"Content-Type": "application/octet-stream"}, f"{1_700_000_000 + i / 1000:.5f}")
        data_files.append(diskfile.hash_dir)
    os.sync()
    if cold:  # the sender reads from the disk, not the page cache (clean pages only: after sync)
        for directory in data_files:
            for entry in os.scandir(directory):
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
    return time.perf_counter() - started


def count_files(devices: Path, suffix: str) -> tuple[int, int]:
    """(files ending in ``suffix``, their total size) under a node's devices."""
    files = size = 0
    for directory, _dirs, names in os.walk(devices):
        for name in names:
            if name.endswith(suffix):
                files += 1
                size += os.path.getsize(os.path.join(directory, name))
    return files, size


# --- one timed pass --------------------------------------------------------------------------


class NoDelayConnector(Connector):
    """Experiment (``--nodelay``): TCP_NODELAY on the sender's connections (Nagle off)."""

    async def open(self, host: str, port: int):
        channel = await super().open(host, port)
        channel.transport.setTcpNoDelay(True)
        return channel


class Sender:
    """Node 1's replicator, built as `build_node` builds it."""

    def __init__(self, reactor, cluster: Cluster, concurrency: int, nodelay: bool = False) -> None:
        self.pools = DeviceThreadPools(reactor)
        hasher = cluster.cluster.hasher
        diskfiles = DiskFileManager(cluster.sender_devices, False, hasher)  # fsync on (the default)
        context = StorageContext(
            devices=cluster.sender_devices, mount_check=False, hasher=hasher, policies=cluster.cluster.policies,
            runner=self.pools, client=None, clock=time.time, diskfiles=diskfiles,
        )
        connector = (NoDelayConnector if nodelay else Connector)(reactor, 2.0, 60.0)
        sender = ObjectSender(context, connector, BytePacer(reactor, 0))
        self.replicator = ObjectReplicator(
            context, cluster.rings(), local_device_matcher(HOST, cluster.topology.node_port(1)), sender,
            concurrency=concurrency,
        )

    def stop(self) -> None:
        self.pools.stop()


async def timed_pass(sender: Sender, cluster: Cluster, profile: cProfile.Profile | None = None) -> dict:
    receiver = cluster.receiver_pid
    peaks_reset = reset_peak(os.getpid()) and reset_peak(receiver)
    cpu_s, cpu_r = own_cpu_seconds(), cpu_seconds(receiver)
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        figures = await sender.replicator.run_pass()
    finally:
        if profile is not None:
            profile.disable()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "sender_cpu": own_cpu_seconds() - cpu_s,
        "receiver_cpu": cpu_seconds(receiver) - cpu_r,
        "sender_peak": peak_rss_mib(os.getpid()),
        "receiver_peak": peak_rss_mib(receiver),
        "peaks_reset": peaks_reset,
        "figures": figures,
    }


def check(result: dict, label: str, *, updates: int | None = None, synced_nothing: bool = False) -> None:
    figures = result["figures"]
    problems = []
    if figures.get("failures") or figures.get("errors"):
        problems.append(f"failures={figures.get('failures')} errors={figures.get('errors')}")
    if updates is not None and figures.get("updates_sent", 0) != updates:
        problems.append(f"updates_sent={figures.get('updates_sent', 0)}, expected {updates}")
    if synced_nothing and (figures.get("suffixes_synced") or figures.get("updates_sent")):
        problems.append(f"a no-op pass synced {figures.get('suffixes_synced')} suffixes")
    if problems:
        raise SystemExit(f"{label}: {'; '.join(problems)}; figures {figures}")


def describe(label: str, result: dict, rate: str) -> str:
    return (f"  {label:<12} {result['seconds']:8.2f} s  {rate:>16}  "
            f"CPU s/r {result['sender_cpu']:6.2f} /{result['receiver_cpu']:6.2f} s  "
            f"peak RSS s/r {result['sender_peak']:5.0f} /{result['receiver_peak']:5.0f} MiB"
            + ("" if result["peaks_reset"] else " (peaks since start)"))


# --- scenarios -------------------------------------------------------------------------------


async def small_scenario(reactor, args, run: int) -> dict:
    profile_dir = args.profile
    cluster = Cluster(args.part_power, profile_dir / f"receiver-small-{run}.prof" if profile_dir else None)
    sender = None
    try:
        size = args.small_kib * 1024
        fill = populate(cluster, args.small, size, "small", args.cold)
        print(f"  filled {args.small} x {args.small_kib} KiB in {fill:.1f} s "
              f"({2 ** args.part_power} partitions)", flush=True)
        sender = Sender(reactor, cluster, args.concurrency, args.nodelay)
        profile = cProfile.Profile() if profile_dir else None
        first = await timed_pass(sender, cluster, profile)
        check(first, "small first pass", updates=args.small)
        copies, _ = count_files(cluster.receiver_devices, ".data")
        if copies != args.small:
            raise SystemExit(f"the receiver holds {copies} .data files, not {args.small}")
        print(describe("first pass", first, f"{args.small / first['seconds']:8.0f} obj/s"), flush=True)
        noop_profile = cProfile.Profile() if profile_dir else None
        # The receiver's first GET_HASHES after the PUTs re-hashes every suffix they invalidated;
        # the pass after that is the steady state (both sides' hashes.json current).
        second = await timed_pass(sender, cluster)
        check(second, "second pass", synced_nothing=True)
        print(describe("2nd (rehash)", second, f"{second['figures'].get('sessions', 0):5d} sessions"), flush=True)
        third = await timed_pass(sender, cluster, noop_profile)
        check(third, "no-op pass", synced_nothing=True)
        print(describe("3rd (no-op)", third, f"{third['figures'].get('sessions', 0):5d} sessions"), flush=True)
        if profile_dir:
            _dump(profile, profile_dir / f"sender-small-{run}.prof")
            _dump(noop_profile, profile_dir / f"sender-noop-{run}.prof")
        return {"first": first, "rehash": second, "noop": third}
    finally:
        if sender is not None:
            sender.stop()
        cluster.close()


async def large_scenario(reactor, args, run: int) -> dict:
    profile_dir = args.profile
    cluster = Cluster(args.part_power, profile_dir / f"receiver-large-{run}.prof" if profile_dir else None)
    sender = None
    try:
        size = args.object_mib * MiB
        count = max(1, args.large_mib // args.object_mib)
        fill = populate(cluster, count, size, "large", args.cold)
        print(f"  filled {count} x {args.object_mib} MiB in {fill:.1f} s", flush=True)
        sender = Sender(reactor, cluster, args.concurrency, args.nodelay)
        profile = cProfile.Profile() if profile_dir else None
        result = await timed_pass(sender, cluster, profile)
        check(result, "large pass", updates=count)
        copies, stored = count_files(cluster.receiver_devices, ".data")
        if copies != count or stored < count * size:
            raise SystemExit(f"the receiver holds {copies} .data files ({stored} bytes), not {count}")
        sent = result["figures"].get("bytes_sent", 0)
        result["mb_s"] = sent / 1e6 / result["seconds"]
        result["mib"] = sent / MiB
        print(describe("large pass", result, f"{result['mb_s']:8.1f} MB/s"), flush=True)
        if profile_dir:
            _dump(profile, profile_dir / f"sender-large-{run}.prof")
        return result
    finally:
        if sender is not None:
            sender.stop()
        cluster.close()


def _dump(profile: cProfile.Profile, path: Path) -> None:
    profile.dump_stats(str(path))
    print(f"  sender profile (reactor thread): {path}")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(8)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(args, small: list[dict], large: list[dict]) -> None:
    runs = max(len(small), len(large))
    print(f"\nmedians of {runs} run(s) ({os.cpu_count()} CPUs, shared machine: noisy)")
    if small:
        first = [r["first"] for r in small]
        noop = [r["noop"] for r in small]
        print(f"  small: {args.small} x {args.small_kib} KiB, {2 ** args.part_power} partitions")
        print(f"    first pass  {_median([args.small / r['seconds'] for r in first]):8.0f} objects/s   "
              f"{_median([r['seconds'] for r in first]):7.2f} s   CPU sender {_median([r['sender_cpu'] for r in first]):.2f} s, "
              f"receiver {_median([r['receiver_cpu'] for r in first]):.2f} s   peak RSS sender "
              f"{_median([r['sender_peak'] for r in first]):.0f} MiB, receiver {_median([r['receiver_peak'] for r in first]):.0f} MiB")
        for label, passes in (("2nd (rehash)", [r["rehash"] for r in small]), ("3rd (no-op) ", noop)):
            print(f"    {label} {_median([r['seconds'] for r in passes]):7.2f} s          "
                  f"({_median([r['seconds'] * 1e6 / args.small for r in passes]):.0f} us/object)   "
                  f"CPU sender {_median([r['sender_cpu'] for r in passes]):.2f} s, "
                  f"receiver {_median([r['receiver_cpu'] for r in passes]):.2f} s")
    if large:
        count = max(1, args.large_mib // args.object_mib)
        print(f"  large: {count} x {args.object_mib} MiB")
        print(f"    pass        {_median([r['mb_s'] for r in large]):8.1f} MB/s       "
              f"{_median([r['seconds'] for r in large]):7.2f} s   CPU sender {_median([r['sender_cpu'] for r in large]):.2f} s, "
              f"receiver {_median([r['receiver_cpu'] for r in large]):.2f} s   peak RSS sender "
              f"{_median([r['sender_peak'] for r in large]):.0f} MiB, receiver {_median([r['receiver_peak'] for r in large]):.0f} MiB")


async def main(reactor, args) -> None:
    small, large = [], []
    for run in range(1, args.runs + 1):
        print(f"run {run}/{args.runs}", flush=True)
        if args.small > 0:
            small.append(await small_scenario(reactor, args, run))
        if args.large_mib > 0:
            large.append(await large_scenario(reactor, args, run))
    summarise(args, small, large)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000, help="small objects (0: skip); default 10000")
    parser.add_argument("--small-kib", type=int, default=4, help="size of a small object; default 4 KiB")
    parser.add_argument("--large-mib", type=int, default=1024, help="MiB of large objects (0: skip); default 1024")
    parser.add_argument("--object-mib", type=int, default=64, help="size of a large object; default 64 MiB")
    parser.add_argument("--part-power", type=int, default=8, help="ring partition power; default 8 (256)")
    parser.add_argument("--concurrency", type=int, default=1, help="replicator concurrency; default 1")
    parser.add_argument("--runs", type=int, default=3, help="runs to take medians of; default 3")
    parser.add_argument("--cold", action="store_true", help="drop the sender's files from the page cache first")
    parser.add_argument("--nodelay", action="store_true",
                        help="experiment: set TCP_NODELAY on the sender's connections (not what a node does)")
    parser.add_argument("--profile", type=Path, help="directory for cProfile stats of both sides")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile = args.profile.absolute()
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


if __name__ == "__main__":
    arguments = parse_args()
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
