"""
A 1 GiB file through the swift CLI as a static large object (issue 14): ``swift upload
--segment-size 64M --segment-threads 4 <container> <file>`` (the CLI makes an SLO once /info
lists slo), then ``swift download``, against a fresh txstore all-in-one and the Swift anchor in
the same run, alternating them, N rounds.

    python benchmarks/segmented_upload.py                      # both, 3 rounds, 1 GiB
    python benchmarks/segmented_upload.py --rounds 5 --save out.json
    python benchmarks/segmented_upload.py --target txstore --size-mib 256 --rounds 1

The source file is written once (random bytes, md5'd as written) in a temp dir (``--tmp``,
default the system's), uploaded by the CLI under its own name; the download is written beside
it, md5'd after the clock stops, compared with the source and deleted. Both targets are driven
by the same client, the ``swift`` beside this Python (txstore's venv), so only the servers
differ. Each transfer is timed from starting the CLI to its exit (authentication, container
PUTs, segments, manifest; for the download the HEAD/GET of the manifest and the segments' reads).

Per transfer: MB/s (10^6 bytes per second), the proxy's peak RSS during it (VmHWM of every
process of the proxy's process group, reset before the transfer through /proc/PID/clear_refs;
Swift's proxy is a master and its workers, summed, as standard.py does; memcached is not
counted), the servers' CPU seconds (proxy and nodes; for Swift, memcached counts as proxy, as
in standard.py) and the client's (the CLI process). Before each transfer the kernel's dirty
pages are written back (the last transfer's writes would otherwise be drained during the next
one) and the other system's processes are paused with SIGSTOP (``--no-pause`` keeps them
running), so each system has the two cores to itself.

txstore's all-in-one (4 nodes, 3 replicas, the anchor's daemon set: updaters) runs on free
ports in a temp root on the anchor's XFS, as in standard.py; the anchor is started if its
proxy does not answer (and stopped at the end, unless ``--keep-anchor``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Account, BenchError, authenticate, render  # noqa: E402
from serverstats import (  # noqa: E402
    ROLES, Meter, Servers, paused, peak_rss_mib, pid_groups_from_pidfile, pid_groups_from_run_dir,
)
from standard import (  # noqa: E402
    ANCHOR_BASE,
    ANCHOR_PORT,
    filesystem_of,
    load_average,
    swift_anchor,
    swift_version,
    txstore_cluster,
    wait_for_writeback,
)

CHUNK = 2**20
CLI_TIMEOUT = 1800.0  # seconds: a transfer that takes longer is a failure, not a figure
CONTAINER = "segbench"
TARGETS = {"upload MB/s": 1.3, "download MB/s": 1.3}  # txstore/Swift, issue 14
RSS_LIMIT_MB = 100.0  # txstore proxy peak RSS, issue 14 (10^6 bytes)


@dataclass
class Transfer:
    """One CLI run: what it moved, how fast, what the servers and the client spent."""

    seconds: float
    mb_per_s: float
    proxy_peak_rss_mib: float
    proxy_largest_process_mib: float
    server_cpu_s: dict[str, float]
    client_cpu_s: float


@dataclass
class Round:
    target: str
    number: int
    load_before: str
    upload: Transfer
    download: Transfer
    slo: bool
    md5_ok: bool
    segments: int


@dataclass
class System:
    """A cluster under test: how to reach it and which processes are its own."""

    name: str
    auth_url: str
    groups: dict[str, int]  # process name -> process group id
    info: list[str] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)

    @property
    def servers(self) -> Servers:
        return Servers(dict(self.groups))

    @property
    def proxy(self) -> Servers:
        return Servers({name: pgid for name, pgid in self.groups.items() if name.startswith("proxy")})


# ------------------------------------------------------------------ helpers


def make_source(directory: Path, name: str, size: int) -> str:
    """Write ``size`` random bytes to directory/name a MiB at a time; their md5 (hex)."""
    md5 = hashlib.md5()
    written = 0
    with open(directory / name, "wb") as out:
        while written < size:
            piece = os.urandom(min(CHUNK, size - written))
            out.write(piece)
            md5.update(piece)
            written += len(piece)
    return md5.hexdigest()


def md5_of(path: Path) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as source:
        while piece := source.read(CHUNK):
            md5.update(piece)
    return md5.hexdigest()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def head(account: Account, path: str) -> tuple[int, dict[str, str]]:
    conn = account.connect()
    try:
        conn.request("HEAD", path, headers=account.headers)
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


class Cli:
    """The swift CLI, one process per command, authenticated by -A/-U/-K only."""

    def __init__(self, executable: Path, user: str, key: str, workdir: Path) -> None:
        self.executable = executable
        self.user, self.key, self.workdir = user, key, workdir
        # no OS_*/ST_* from the caller's environment may pick another cluster or auth version
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ST_"))}
        self.env["PYTHONWARNINGS"] = "ignore"

    def run(self, auth_url: str, *arguments: str) -> tuple[float, float, str]:
        """(wall seconds, CPU seconds of the CLI process, its output); BenchError unless it exits 0."""
        command = [str(self.executable), "-A", auth_url, "-U", self.user, "-K", self.key, *arguments]
        cpu_before = children_cpu()
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=self.workdir, env=self.env, capture_output=True, text=True,
                                  timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchError(f"swift {arguments[0]} took more than {CLI_TIMEOUT:.0f} s") from None
        seconds = time.perf_counter() - started
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise BenchError(f"swift {' '.join(arguments)} exited {done.returncode}:\n{output[-2000:]}")
        return seconds, children_cpu() - cpu_before, output


def measure(system: System, action) -> Transfer:
    """Run ``action`` (returning seconds, client CPU, output) metered; its Transfer (MB/s unset)."""
    meter = Meter(system.servers)
    proxy = system.proxy
    meter.start()
    proxy.reset_peaks()
    seconds, client_cpu, _ = action()
    usage = meter.stop()
    members = proxy.members()["proxy"]
    peaks = [peak_rss_mib(pid) for pid in members]
    transfer = Transfer(
        seconds=seconds,
        mb_per_s=float("nan"),
        proxy_peak_rss_mib=sum(peaks),
        proxy_largest_process_mib=max(peaks, default=float("nan")),
        server_cpu_s={role: round(usage.cpu[role], 2) for role in ROLES},
        client_cpu_s=round(client_cpu, 2),
    )
    return transfer


def one_round(system: System, others: list[System], cli: Cli, args: argparse.Namespace, number: int,
              source: str, source_md5: str, size: int) -> Round:
    account = authenticate(system.auth_url, args.user, args.key)
    download = f"{source}.{system.name}.download"
    other_groups = [] if args.no_pause else [g for other in others for g in other.groups.values()]
    with paused(other_groups):
        wait_for_writeback()
        load = load_average()
        up = measure(system, lambda: cli.run(
            system.auth_url, "upload", "--segment-size", args.segment_size,
            "--segment-threads", str(args.segment_threads), CONTAINER, source))
        up.mb_per_s = size / up.seconds / 1e6
        status, headers = head(account, account.path(CONTAINER, source))
        if status != 200 or int(headers.get("content-length", -1)) != size:
            raise BenchError(f"{system.name}: HEAD after upload: {status}, Content-Length {headers.get('content-length')}")
        slo = headers.get("x-static-large-object", "").lower() in ("true", "1", "yes")
        manifest_status, _, manifest = _get(account, account.path(CONTAINER, source) + "?multipart-manifest=get")
        segments = len(json.loads(manifest)) if slo and manifest_status == 200 else 0
        wait_for_writeback()
        down = measure(system, lambda: cli.run(
            system.auth_url, "download", CONTAINER, source, "-o", download))
        down.mb_per_s = size / down.seconds / 1e6
        target = cli.workdir / download
        got_md5 = md5_of(target) if target.exists() else "-"
        target.unlink(missing_ok=True)
        cli.run(system.auth_url, "delete", CONTAINER, source)  # the manifest and its segments
    result = Round(system.name, number, load, up, down, slo, got_md5 == source_md5, segments)
    print(f"{system.name} round {number}: up {up.mb_per_s:.1f} MB/s ({up.seconds:.1f} s), "
          f"down {down.mb_per_s:.1f} MB/s ({down.seconds:.1f} s), proxy peak RSS {up.proxy_peak_rss_mib:.0f} / "
          f"{down.proxy_peak_rss_mib:.0f} MiB, server CPU up {sum(up.server_cpu_s.values()):.1f} s, "
          f"down {sum(down.server_cpu_s.values()):.1f} s, {'SLO' if slo else 'NOT an SLO'} of {segments} segments, "
          f"md5 {'ok' if result.md5_ok else 'MISMATCH ' + got_md5}, load before {load}", flush=True)
    if not result.md5_ok:
        raise BenchError(f"{system.name}: the downloaded file's md5 {got_md5} is not the source's {source_md5}")
    return result


def _get(account: Account, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = account.connect()
    try:
        conn.request("GET", path, headers=account.headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(system: System) -> dict[str, float]:
    rounds = system.rounds
    return {
        "upload MB/s": median([r.upload.mb_per_s for r in rounds]),
        "download MB/s": median([r.download.mb_per_s for r in rounds]),
        "proxy peak RSS MiB, upload": median([r.upload.proxy_peak_rss_mib for r in rounds]),
        "proxy peak RSS MiB, download": median([r.download.proxy_peak_rss_mib for r in rounds]),
        "server CPU s, upload": median([sum(r.upload.server_cpu_s.values()) for r in rounds]),
        "proxy CPU s, upload": median([r.upload.server_cpu_s["proxy"] for r in rounds]),
        "server CPU s, download": median([sum(r.download.server_cpu_s.values()) for r in rounds]),
        "proxy CPU s, download": median([r.download.server_cpu_s["proxy"] for r in rounds]),
        "client CPU s, upload": median([r.upload.client_cpu_s for r in rounds]),
        "client CPU s, download": median([r.download.client_cpu_s for r in rounds]),
    }


def per_round_table(systems: list[System]) -> str:
    rows = []
    for system in reporting_order(systems):
        for r in system.rounds:
            rows.append([
                system.name, str(r.number), f"{r.upload.mb_per_s:.1f}", f"{r.download.mb_per_s:.1f}",
                f"{r.upload.proxy_peak_rss_mib:.0f}", f"{r.download.proxy_peak_rss_mib:.0f}",
                f"{r.upload.server_cpu_s['proxy']:.1f}/{r.upload.server_cpu_s['nodes']:.1f}",
                f"{r.download.server_cpu_s['proxy']:.1f}/{r.download.server_cpu_s['nodes']:.1f}",
                f"{r.upload.client_cpu_s:.1f}/{r.download.client_cpu_s:.1f}",
                f"{r.segments}{'' if r.slo else ' (not SLO)'}", "ok" if r.md5_ok else "BAD", r.load_before,
            ])
    header = ["target", "round", "up MB/s", "down MB/s", "RSS up", "RSS down", "CPU up p/n", "CPU down p/n",
              "client up/down", "segments", "md5", "load before"]
    return render(header, rows, ["<", ">", ">", ">", ">", ">", ">", ">", ">", ">", "<", "<"])


def reporting_order(systems: list[System]) -> list[System]:
    """txstore first, whichever was measured first: the ratio column is always txstore/Swift."""
    return sorted(systems, key=lambda system: system.name != "txstore")


def medians_table(systems: list[System]) -> str:
    systems = reporting_order(systems)
    sums = {s.name: summary(s) for s in systems}
    names = [s.name for s in systems]
    rows = []
    for key in sums[names[0]]:
        values = [sums[name][key] for name in names]
        cells = [key] + [f"{v:.1f}" for v in values]
        if len(values) == 2:
            cells.append("-" if not values[1] else f"{values[0] / values[1]:.2f}")
        rows.append(cells)
    header = ["median"] + names + ([f"{names[0]}/{names[1]}"] if len(names) == 2 else [])
    return render(header, rows, ["<"] + [">"] * (len(header) - 1))


def verdict(systems: list[System]) -> list[str]:
    by_name = {s.name: summary(s) for s in systems}
    lines = []
    if "txstore" in by_name and "swift" in by_name:
        for key, wanted in TARGETS.items():
            ratio = by_name["txstore"][key] / by_name["swift"][key]
            lines.append(f"{key}: txstore/Swift {ratio:.2f} (≥ {wanted} asked): {'met' if ratio >= wanted else 'NOT met'}")
    if "txstore" in by_name:
        worst = max(max(r.upload.proxy_peak_rss_mib, r.download.proxy_peak_rss_mib)
                    for r in next(s for s in systems if s.name == "txstore").rounds)
        mb = worst * 2**20 / 1e6
        lines.append(f"txstore proxy peak RSS, highest of any transfer: {worst:.0f} MiB = {mb:.0f} MB "
                     f"(< {RSS_LIMIT_MB:.0f} MB asked): {'met' if mb < RSS_LIMIT_MB else 'NOT met'}")
    return lines


# ------------------------------------------------------------------ main


def git_state() -> str:
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "txstore"],
                               capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{commit}" + (f" ({len(dirty)} uncommitted files under txstore/)" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("txstore", "swift", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3, help="upload + download per target (default 3)")
    parser.add_argument("--size-mib", type=int, default=1024, help="the source file's size (default 1024)")
    parser.add_argument("--segment-size", default="64M", help="the CLI's --segment-size (default 64M)")
    parser.add_argument("--segment-threads", type=int, default=4, help="the CLI's --segment-threads (default 4)")
    parser.add_argument("--swift-first", action="store_true", help="with --target both, Swift goes first each round")
    parser.add_argument("--no-pause", action="store_true", help="do not SIGSTOP the other system during a transfer")
    parser.add_argument("--nodes", type=int, default=4, help="txstore nodes (default 4, as the anchor)")
    parser.add_argument("--proxy-workers", type=int, default=1,
                        help="txstore proxy processes (default 1; the anchor runs 2)")
    parser.add_argument("--swift-cli", type=Path, default=Path(sys.executable).with_name("swift"),
                        help="the client for both targets (default: the swift beside this Python)")
    parser.add_argument("--tmp", type=Path, help="where the source file and downloads go (default: the system's temp dir)")
    parser.add_argument("--user", default="test:tester")
    parser.add_argument("--key", default="testing")
    parser.add_argument("--keep-anchor", action="store_true", help="leave the anchor running if this run started it")
    parser.add_argument("--save", type=Path, help="write every figure as JSON here")
    args = parser.parse_args(argv)
    if not args.swift_cli.exists():
        print(f"segmented_upload: no swift CLI at {args.swift_cli}", file=sys.stderr)
        return 1
    size = args.size_mib * 2**20
    rounds = max(1, args.rounds)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"segmented upload: {size_text(size)}, --segment-size {args.segment_size} --segment-threads "
          f"{args.segment_threads}, {rounds} rounds; {os.cpu_count()} cores, load average {load_average()}, "
          f"{started}; txstore {git_state()}", flush=True)
    systems: list[System] = []
    workdir = Path(tempfile.mkdtemp(prefix="segbench-", dir=args.tmp))
    try:
        with ExitStack() as stack:
            if args.target in ("swift", "both"):
                # first, so that its XFS is mounted and txstore's temp root lands on it
                anchor_info = stack.enter_context(swift_anchor(args.keep_anchor))
                pidfile = Path(os.environ.get("BENCH_PIDFILE") or ANCHOR_BASE / "pids")
                groups = pid_groups_from_pidfile(pidfile) if pidfile.exists() else {}
                if not groups:
                    raise BenchError(f"no anchor pids in {pidfile}: its proxy's RSS cannot be read")
                swift = System("swift", f"http://127.0.0.1:{ANCHOR_PORT}/auth/v1.0", groups, anchor_info)
            if args.target in ("txstore", "both"):
                auth_url, root, info = stack.enter_context(txstore_cluster(args.nodes, workers=args.proxy_workers))
                txstore = System("txstore", auth_url, pid_groups_from_run_dir(root / "run"), info)
                systems.append(txstore)
            if args.target in ("swift", "both"):
                systems.insert(0 if args.swift_first else len(systems), swift)
            source = "gib.bin" if size == 2**30 else f"object-{args.size_mib}MiB.bin"
            print(f"writing the source file {workdir / source} ({filesystem_of(workdir)})", flush=True)
            source_md5 = make_source(workdir, source, size)
            cli = Cli(args.swift_cli, args.user, args.key, workdir)
            for system in systems:
                system.info.append(f"swift /info version {swift_version(int(urllib.parse.urlsplit(system.auth_url).port))}")
                cli.run(system.auth_url, "post", CONTAINER)
                cli.run(system.auth_url, "post", CONTAINER + "_segments")
            for number in range(1, rounds + 1):
                for system in systems:
                    others = [s for s in systems if s is not system]
                    system.rounds.append(one_round(system, others, cli, args, number, source, source_md5, size))
            for system in systems:
                for container in (CONTAINER, CONTAINER + "_segments"):
                    try:
                        cli.run(system.auth_url, "delete", container)
                    except BenchError as err:
                        print(f"{system.name}: cleaning up {container}: {err}", flush=True)
    except BenchError as err:
        print(f"segmented_upload: {err}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nstarted {started}, ended {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average now {load_average()}")
    for system in systems:
        print(f"== {system.name}")
        for line in system.info:
            print(f"   {line}")
    print("\n== per round (MB/s = 10^6 bytes/s; proxy peak RSS in MiB; CPU s: proxy/nodes; client: the CLI's CPU s)")
    print(per_round_table(systems))
    print(f"\n== medians of {rounds} rounds")
    print(medians_table(systems))
    for line in verdict(systems):
        print(line)
    if args.save:
        args.save.write_text(json.dumps({
            "started": started, "size": size, "segment_size": args.segment_size,
            "segment_threads": args.segment_threads, "txstore": git_state(),
            "systems": {s.name: {"info": s.info, "medians": summary(s), "rounds": [asdict(r) for r in s.rounds]}
                        for s in systems},
            "verdict": verdict(systems),
        }, indent=1) + "\n")
    return 0


def size_text(size: int) -> str:
    return f"{size / 2**30:g} GiB" if size >= 2**30 else f"{size / 2**20:g} MiB"


if __name__ == "__main__":
    sys.exit(main())
