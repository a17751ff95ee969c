"""
The standard benchmark set of issue #7, against a fresh txstore all-in-one, the Swift anchor,
or both one after the other with a table side by side.

    python benchmarks/standard.py --target txstore          # fresh txstore-aio, run, stop
    python benchmarks/standard.py --target swift            # the anchor (start.sh if not up)
    python benchmarks/standard.py --target both --quick     # both, small sizes, side by side
    python benchmarks/standard.py --target both --skip-large --skip-listing --save out.json
    python benchmarks/standard.py --target both --skip-listing --nodes 8 --policy ec --swift-policy ec42

The set: PUT, GET, HEAD, DELETE of 4 KiB × 2000 and 1 MiB × 200 at concurrency 16; one
256 MiB and one 1 GiB object single stream up and down; a container of 100,000 objects
filled (concurrent zero-byte PUTs) and listed by pages of 10,000, three times. ``--quick``
divides the object counts by 10, uses 16 and 64 MiB large objects and a 5,000-object
listing by pages of 1,000. See docs/performance.rst for what each column means.

txstore runs in a temp root on the filesystem the anchor's data lives on (its loopback XFS
under /tmp/anchor-swift/srv) when that is mounted, else in /tmp, on free ports; it is stopped
and removed afterwards. The anchor is used if its proxy answers /healthcheck; otherwise
start.sh is run (setup.sh first if its venv is missing) and stop.sh afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import BenchError, Client, Result, authenticate, render, size_label, table  # noqa: E402
from serverstats import Meter, Servers, paused, pid_groups_from_pidfile, pid_groups_from_run_dir  # noqa: E402

ANCHOR_SCRIPTS = Path("/work/shared/swift-anchor")
ANCHOR_BASE = Path(os.environ.get("ANCHOR_SWIFT_BASE", "/tmp/anchor-swift"))
ANCHOR_PORT = int(os.environ.get("ANCHOR_SWIFT_PORT", "8080"))


@dataclass(frozen=True)
class Plan:
    objects: tuple[tuple[int, int], ...]  # (size, count)
    concurrency: int
    large: tuple[int, ...]  # sizes in bytes
    listing_objects: int
    listing_limit: int
    listing_passes: int = 3
    fill_concurrency: int = 32
    repeat: int = 1


STANDARD = Plan(((4096, 2000), (2**20, 200)), 16, (256 * 2**20, 2**30), 100_000, 10_000)
QUICK = Plan(((4096, 200), (2**20, 20)), 16, (16 * 2**20, 64 * 2**20), 5_000, 1_000)


@dataclass
class Run:
    target: str
    info: list[str] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)


# ------------------------------------------------------------------ helpers


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def swift_version(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=5) as response:
            return json.load(response).get("swift", {}).get("version", "?")
    except (OSError, ValueError, urllib.error.URLError):
        return "?"


def filesystem_of(path: Path) -> str:
    """The mount point and type holding ``path`` (the longest mount point that is a prefix)."""
    best = ("/", "?")
    resolved = str(path.resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mount_point, fstype = left.split()[4], right.split()[0]
        if (resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")) and len(mount_point) >= len(best[0]):
            best = (mount_point, fstype)
    return f"{best[1]} at {best[0]}"


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(nodes: int) -> tuple[int, int]:
    """A proxy port and a base port whose node ports (base + 10·N) are all free."""
    for base in range(21000, 32700, 100):  # below the ephemeral ports
        wanted = [base + 1] + [base + 10 * n for n in range(1, nodes + 1)]
        if all(port_free(port) for port in wanted):
            return base + 1, base
    raise BenchError("no free ports for the all-in-one")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def idle(servers: Servers | None, seconds: float = 5.0) -> str:
    """Server CPU while no request is made: background daemons, timers (ms per second)."""
    if servers is None:
        return "-"
    meter = Meter(servers)
    meter.start()
    time.sleep(seconds)
    usage = meter.stop()
    return ", ".join(f"{role} {1000 * usage.cpu[role] / seconds:.0f}" for role in usage.cpu) + f" ms/s over {seconds:.0f} s"


def run_plan(client: Client, plan: Plan, run: Run, skip_large: bool, skip_listing: bool) -> None:
    def show(results: list[Result]) -> None:
        for result in results:
            print(f"  {result.workload} {result.op}: {result.ops_per_s:.1f} ops/s, {result.mb_per_s:.1f} MB/s, "
                  f"{result.errors} errors, server CPU {result.cpu_ms_per_op():.2f} ms/op", flush=True)
        run.results.extend(results)

    for size, count in plan.objects:
        for time_ in range(1, plan.repeat + 1):
            label = f" #{time_}" if plan.repeat > 1 else ""
            print(f"{run.target}: {size_label(size)} × {count} at concurrency {plan.concurrency}{label}", flush=True)
            show(client.objects(size, count, plan.concurrency, label=label))
    if not skip_large:
        for size in plan.large:
            print(f"{run.target}: {size_label(size)} single stream", flush=True)
            show(client.large(size))
    if not skip_listing:
        print(f"{run.target}: listing of {plan.listing_objects} objects by {plan.listing_limit}", flush=True)
        show(client.listing(plan.listing_objects, plan.listing_limit, plan.listing_passes, plan.fill_concurrency))


# ------------------------------------------------------------------ targets


WARM_MARKER = ".txstore-bench-warmed"


def warm_anchor_filesystem() -> None:
    """
    Write (then delete) a file over the anchor XFS's free space, once per mkfs. The XFS lives
    in a *sparse* image file: the first write to any block of it makes the filesystem below
    allocate that block, and such writes measured 2–4× slower than writes to blocks written
    before (3 × 256 MiB in parallel: 260–460 MB/s against 1,100–1,700 MB/s). start.sh makes
    a new filesystem each time, so without this the first system measured pays for the
    allocation and the second does not.
    """
    srv = ANCHOR_BASE / "srv"
    if not srv.is_mount() or (srv / WARM_MARKER).exists():
        return
    stats = os.statvfs(srv)
    size = stats.f_bavail * stats.f_frsize - 2**30  # leave a GiB
    if size <= 0:
        return
    started = time.monotonic()
    chunk = os.urandom(2**20)
    path = srv / ".txstore-bench-warming"
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while written < size:
            written += os.write(fd, chunk)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as err:
        print(f"warming {srv} stopped after {written // 2**20} MiB: {err}", flush=True)
    finally:
        os.close(fd)
        path.unlink()
    # The image's own pages now drain to the disk below for minutes; a system measured meanwhile
    # would share the disk with that, so wait until everything is written. Then let the page
    # cache forget them: 15 GiB of cached pages made the next system reclaim memory on every
    # allocation (its CPU per PUT rose by half, the one measured after it did not pay that).
    settled = wait_for_writeback()
    image = ANCHOR_BASE / "xfs.img"
    if image.exists():
        image_fd = os.open(image, os.O_RDONLY)
        try:
            os.posix_fadvise(image_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(image_fd)
    (srv / WARM_MARKER).write_text("the image's free space was written once (benchmarks/standard.py)\n")
    print(f"warmed {srv}: {written / 2**30:.1f} GiB written and deleted in {time.monotonic() - started:.0f} s"
          f" (writeback {'done' if settled else 'still under way'})", flush=True)


def wait_for_writeback(limit: float = 300.0) -> bool:
    """
    Sync until the kernel holds (almost) no dirty or in-flight pages. One ``sync`` is not
    enough under a loop device: flushing the XFS dirties the image file on the filesystem
    below, which then drains on its own for minutes.
    """
    deadline = time.monotonic() + limit
    while True:
        os.sync()
        pending = 0
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                name, _, value = line.partition(":")
                if name in ("Dirty", "Writeback"):
                    pending += int(value.split()[0]) * 1024
        if pending < 64 * 2**20:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


@contextmanager
def txstore_cluster(nodes: int, daemons: str = "updaters", workers: int = 1,
                    ports: tuple[int, int] | None = None) -> Iterator[tuple[str, Path, list[str]]]:
    """
    A fresh txstore-aio in a temp root; (auth URL, root, info lines); always stopped. By default
    its nodes run the same background daemons as the anchor (the container and object updaters).
    ``ports``: (proxy port, base port) instead of free ones found here.
    """
    aio = Path(sys.executable).with_name("txstore-aio")
    if not aio.exists():
        raise BenchError(f"no txstore-aio beside {sys.executable}: run this with txstore's venv")
    on_anchor_fs = (ANCHOR_BASE / "srv").is_mount()
    warm_anchor_filesystem()
    parent = Path(tempfile.mkdtemp(prefix="txstore-bench-", dir=ANCHOR_BASE / "srv" if on_anchor_fs else None))
    root = parent / "aio"
    proxy_port, base_port = ports or free_ports(nodes)
    command = [str(aio), "--root", str(root), "--proxy-port", str(proxy_port), "--base-port", str(base_port), "--nodes", str(nodes)]
    daemon_set = ["--daemons", daemons, "--workers", str(workers)]
    try:
        started = subprocess.run([*command, *daemon_set, "--background"], capture_output=True, text=True)
        if started.returncode != 0:
            raise BenchError(f"txstore-aio did not start:\n{started.stdout}{started.stderr}")
        info = [
            f"data: {root} ({filesystem_of(root)})",
            f"proxy 127.0.0.1:{proxy_port} ({workers} worker{'s' if workers > 1 else ''}), {nodes} nodes, 3 replicas,"
            f" daemons: {daemons}",
        ]
        yield f"http://127.0.0.1:{proxy_port}/auth/v1.0", root, info
    finally:
        stopped = subprocess.run([*command, "--stop"], capture_output=True, text=True)
        print(f"txstore: {stopped.stdout.strip()}", flush=True)
        shutil.rmtree(parent, ignore_errors=True)


@contextmanager
def swift_anchor(keep: bool) -> Iterator[list[str]]:
    """The anchor's proxy up (started here if it was not, and then stopped here too)."""
    started_here = False
    if not healthy(ANCHOR_PORT):
        if not (ANCHOR_BASE / "venv" / "bin" / "swift-proxy-server").exists():
            print("swift: running setup.sh (the anchor's venv is missing)", flush=True)
            subprocess.run(["bash", str(ANCHOR_SCRIPTS / "setup.sh")], check=True)
        print("swift: running start.sh", flush=True)
        started_here = True
        try:
            subprocess.run(["bash", str(ANCHOR_SCRIPTS / "start.sh")], check=True)
        except subprocess.CalledProcessError:
            subprocess.run(["bash", str(ANCHOR_SCRIPTS / "stop.sh")])
            raise BenchError("the Swift anchor's start.sh failed") from None
    try:
        yield [f"Swift {swift_version(ANCHOR_PORT)} anchor at 127.0.0.1:{ANCHOR_PORT}, data {filesystem_of(ANCHOR_BASE / 'srv')}"
               + (" (started by this run)" if started_here else " (already running)")]
    finally:
        if started_here and not keep:
            print("swift: running stop.sh", flush=True)
            subprocess.run(["bash", str(ANCHOR_SCRIPTS / "stop.sh")], stdout=subprocess.DEVNULL)


def bench_txstore(args: argparse.Namespace, plan: Plan) -> Run:
    run = Run("txstore")
    with txstore_cluster(args.nodes, "all" if args.all_daemons else "updaters", args.proxy_workers) as (
        auth_url, root, info
    ):
        servers = Servers(pid_groups_from_run_dir(root / "run"))
        run.info += info + [f"storage policy: {args.policy or 'the default'}",
                            f"load average at start: {load_average()}; servers idle: {idle(servers)}"]
        client = Client(authenticate(auth_url, args.user, args.key), servers, args.processes, args.policy)
        try:
            run_plan(client, plan, run, args.skip_large, args.skip_listing)
        finally:
            run.info.append(f"load average at end: {load_average()}; servers idle: {idle(servers)}")
            run.info.append(f"server processes alive at the end: {', '.join(servers.alive())}")
            errors = any(result.errors for result in run.results)
            if errors or args.keep_logs:
                kept = Path(tempfile.mkdtemp(prefix="txstore-bench-logs-"))
                shutil.copytree(root / "log", kept / "log")
                run.info.append(f"{'errors: ' if errors else ''}the servers' logs are kept in {kept}/log")
            if not servers.peaks_reset:
                run.info.append("peak RSS could not be reset: peaks are since each process started")
    return run


def bench_swift(args: argparse.Namespace, plan: Plan, anchor_info: list[str] | None = None) -> Run:
    """``anchor_info``: the anchor is already up, brought up by the caller (``--target both``)."""
    run = Run("swift")
    pidfile = Path(os.environ.get("BENCH_PIDFILE") or ANCHOR_BASE / "pids")
    with swift_anchor(args.keep_anchor) if anchor_info is None else nullcontext(anchor_info) as info:
        warm_anchor_filesystem()
        servers = Servers(pid_groups_from_pidfile(pidfile)) if pidfile.exists() else None
        run.info += info + [f"storage policy: {args.swift_policy or 'the default'}",
                            f"load average at start: {load_average()}; servers idle: {idle(servers)}"]
        if servers is None:
            run.info.append(f"no pid file {pidfile}: server CPU and RSS not measured")
        client = Client(authenticate(f"http://127.0.0.1:{ANCHOR_PORT}/auth/v1.0", args.user, args.key), servers,
                        args.processes, args.swift_policy)
        run_plan(client, plan, run, args.skip_large, args.skip_listing)
        run.info.append(f"load average at end: {load_average()}; servers idle: {idle(servers)}")
    return run


@contextmanager
def anchor_paused() -> Iterator[None]:
    """
    Stop (SIGSTOP) every anchor process while txstore is measured, continue them afterwards.
    Idle, the anchor's 16 processes still take about 0.2 of a core (its updaters, memcached,
    timers), which txstore's run would otherwise share the two cores with.
    """
    pidfile = Path(os.environ.get("BENCH_PIDFILE") or ANCHOR_BASE / "pids")
    groups = list(pid_groups_from_pidfile(pidfile).values()) if pidfile.exists() else []
    with paused(groups) as stopped:
        print(f"swift: {len(stopped)} process groups paused while txstore runs", flush=True)
        yield


# ------------------------------------------------------------------ side by side


def _ratio(a: float, b: float) -> str:
    return "-" if not a or not b or a != a or b != b else f"{a / b:.2f}"


def _num(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def comparison(left: Run, right: Run) -> str:
    """One row per (workload, op) of either run: throughput, p50, CPU ms/op, errors, and ratios."""
    keyed = {(r.workload, r.op): r for r in right.results}
    rows, keys = [], [(r.workload, r.op) for r in left.results]
    keys += [k for k in keyed if k not in keys]
    mine = {(r.workload, r.op): r for r in left.results}
    a_, b_ = left.target, right.target
    for key in keys:
        a, b = mine.get(key), keyed.get(key)
        large = "single stream" in key[0]
        def rate(r: Result | None) -> float:
            return float("nan") if r is None else (r.mb_per_s if large else r.ops_per_s)
        def cpu(r: Result | None) -> float:
            return float("nan") if r is None else r.cpu_ms_per_op()
        def p50(r: Result | None) -> float:
            return float("nan") if r is None else r.latency_ms(50)
        rows.append([
            key[0], key[1], "MB/s" if large else "ops/s",
            _num(rate(a)), _num(rate(b)), _ratio(rate(a), rate(b)),
            _num(p50(a)), _num(p50(b)),
            _num(cpu(a), 2), _num(cpu(b), 2), _ratio(cpu(a), cpu(b)),
            "-" if a is None else str(a.errors), "-" if b is None else str(b.errors),
        ])
    header = ["workload", "op", "unit", a_, b_, f"{a_}/{b_}", f"p50 ms {a_}", b_,
              f"CPU ms/op {a_}", b_, f"{a_}/{b_}", f"err {a_}", b_]
    align = ["<", "<", "<"] + [">"] * 10
    return render(header, rows, align)


def print_run(run: Run) -> None:
    print(f"\n== {run.target}")
    for line in run.info:
        print(f"   {line}")
    print(table(run.results), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("txstore", "swift", "both"), default="txstore")
    parser.add_argument("--quick", action="store_true", help="object counts ÷10, 16/64 MiB large, 5,000-object listing")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the object counts (after --quick)")
    parser.add_argument("--repeat", type=int, default=1, help="run each object workload this many times (rows #1, #2, …)")
    parser.add_argument("--skip-large", action="store_true", help="skip the single-stream large objects")
    parser.add_argument("--skip-listing", action="store_true", help="skip the container listing (and its fill)")
    parser.add_argument("--concurrency", type=int, help="instead of 16")
    parser.add_argument("--processes", type=int, default=4, help="load generator processes (default 4)")
    parser.add_argument("--nodes", type=int, default=4, help="txstore nodes (default 4, as the anchor)")
    parser.add_argument("--policy", help="txstore's storage policy for the containers (e.g. ec: 4+2 with --nodes 8)")
    parser.add_argument("--swift-policy", help="the anchor's storage policy for the containers (e.g. ec42)")
    parser.add_argument("--proxy-workers", type=int, default=1,
                        help="txstore proxy processes (default 1; the anchor runs 2)")
    parser.add_argument(
        "--all-daemons", action="store_true",
        help="run every txstore daemon (replicators, auditors, ...), not only the updaters the anchor runs",
    )
    parser.add_argument(
        "--swift-first", action="store_true",
        help="with --target both, measure Swift first (the first system on a fresh filesystem pays for its first use)",
    )
    parser.add_argument("--user", default="test:tester")
    parser.add_argument("--key", default="testing")
    parser.add_argument("--keep-anchor", action="store_true", help="leave the anchor running if this run started it")
    parser.add_argument(
        "--keep-logs", action="store_true",
        help="keep txstore's server logs (access lines with each request's duration) even without errors",
    )
    parser.add_argument("--save", type=Path, help="write every figure as JSON here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else STANDARD
    plan = Plan(
        tuple((size, max(1, round(count * args.scale))) for size, count in plan.objects),
        args.concurrency or plan.concurrency,
        plan.large,
        plan.listing_objects,
        plan.listing_limit,
        repeat=max(1, args.repeat),
    )
    print(f"standard set: {os.cpu_count()} cores, load average {load_average()}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}", flush=True)
    runs: list[Run] = []
    try:
        if args.target == "both":
            # the anchor first, so that its XFS is mounted and txstore's temp root lands on it
            with swift_anchor(args.keep_anchor) as anchor_info:
                swift_run = bench_swift(args, plan, anchor_info) if args.swift_first else None
                with anchor_paused():
                    runs.append(bench_txstore(args, plan))
                runs.append(swift_run or bench_swift(args, plan, anchor_info))
        elif args.target == "txstore":
            runs.append(bench_txstore(args, plan))
        else:
            runs.append(bench_swift(args, plan))
    except BenchError as err:
        print(f"standard: {err}", file=sys.stderr)
        return 1
    finally:
        for run in runs:
            print_run(run)
    if len(runs) == 2:
        print(f"\n== side by side (throughput and CPU ratios: {runs[0].target}/{runs[1].target})")
        print(comparison(*runs))
    if args.save:
        args.save.write_text(json.dumps(
            {run.target: {"info": run.info, "results": [r.as_dict() for r in run.results]} for run in runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
