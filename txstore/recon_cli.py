# -*- test-case-name: txstore.test.integration.test_node_integration -*-
"""
``txstore-recon``: ask every storage node named in the rings how it is doing.

It reads the ring files (``--ring-dir``), asks each node's ``/recon/<what>`` in parallel with
a timeout, and prints readable tables (or ``--json``). Unreachable nodes are listed, never a
traceback. A plain synchronous program: a thread per node request, no reactor. Nodes that
serve backend HTTP over TLS (``[cluster-tls]``, docs/tls.rst) are asked over HTTPS with
``--cacert`` (the cluster CA) and ``--cert``/``--key`` (a certificate that CA issued: the
nodes require one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from txstore.common.hashing import PathHasher
from txstore.daemons.periodic import describe
from txstore.ring.ring import Ring, RingError

def nodes_of(ring_dir: Path) -> list[tuple[str, int]]:
    """Every (ip, port) that a ring in ``ring_dir`` names, sorted."""
    found = set()
    for path in sorted(ring_dir.glob("*.ring.gz")):
        ring = Ring(path, PathHasher())
        for device in ring.devices:
            if device is not None:
                found.add((device.ip, device.port))
    return sorted(found)


def fetch(node: tuple[str, int], what: str, timeout: float, tls: ssl.SSLContext | None = None) -> Any:
    ip, port = node
    host = f"[{ip}]" if ":" in ip else ip
    scheme = "https" if tls is not None else "http"
    with urllib.request.urlopen(f"{scheme}://{host}:{port}/recon/{what}", timeout=timeout, context=tls) as response:
        return json.loads(response.read())


def gather(nodes: list[tuple[str, int]], what: str, timeout: float, tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    """``{"ip:port": answer or {"error": why}}`` for every node, asked in parallel."""

    def one(node):
        try:
            return fetch(node, what, timeout, tls)
        except (OSError, ValueError, urllib.error.URLError) as err:
            return {"error": str(getattr(err, "reason", err))}

    with ThreadPoolExecutor(max_workers=min(32, max(1, len(nodes)))) as pool:
        answers = list(pool.map(one, nodes))
    return {f"{ip}:{port}": answer for (ip, port), answer in zip(nodes, answers)}


def _errors(results: dict[str, Any]) -> list[str]:
    return [f"  {node}: unreachable ({a['error']})" for node, a in results.items() if isinstance(a, dict) and "error" in a]


def report_diskusage(results: dict[str, Any]) -> list[str]:
    lines = ["Disk usage:"]
    percents = []
    for node, answer in results.items():
        if isinstance(answer, dict):
            continue
        for disk in answer:
            if not disk.get("mounted"):
                lines.append(f"  {node}/{disk['device']}: NOT MOUNTED")
                continue
            percent = 100.0 * disk["used"] / disk["size"] if disk["size"] else 0.0
            percents.append(percent)
            lines.append(f"  {node}/{disk['device']}: {percent:5.1f}% used, {disk['avail'] / 2**30:.1f} GiB free")
    if percents:
        lines.append(f"  lowest {min(percents):.1f}%, highest {max(percents):.1f}%, "
                     f"average {sum(percents) / len(percents):.1f}% of {len(percents)} devices")
        histogram = [0] * 10
        for percent in percents:
            histogram[min(9, int(percent // 10))] += 1
        for bucket, count in enumerate(histogram):
            if count:
                lines.append(f"  {bucket * 10:3d}-{bucket * 10 + 9:3d}% {'*' * count} {count}")
    return lines + _errors(results)


def report_simple(title: str, results: dict[str, Any], render) -> list[str]:
    lines = [f"{title}:"]
    for node, answer in results.items():
        if not (isinstance(answer, dict) and "error" in answer):
            lines.append(f"  {node}: {render(answer)}")
    return lines + _errors(results)


def report_md5(results: dict[str, Any], ring_dir: Path) -> list[str]:
    local = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in ring_dir.glob("*.ring.gz")}
    lines = ["Ring md5s:"]
    matched = 0
    reachable = 0
    for node, answer in results.items():
        if isinstance(answer, dict) and "error" in answer:
            continue
        reachable += 1
        remote = {Path(path).name: digest for path, digest in answer.items()}
        differing = sorted(name for name, digest in local.items() if remote.get(name) != digest)
        if differing:
            lines.append(f"  {node}: DIFFERS for {', '.join(differing)}")
        else:
            matched += 1
    lines.append(f"  {matched}/{reachable} reachable nodes have the same rings as {ring_dir}")
    return lines + _errors(results)


def _reachable(results: dict[str, Any]) -> dict[str, Any]:
    return {node: a for node, a in results.items() if not (isinstance(a, dict) and "error" in a)}


def report_total(title: str, results: dict[str, Any], key: str) -> list[str]:
    """One count per node and their sum, which says how many nodes it covers (never a bare 0)."""
    answered = _reachable(results)
    lines = [f"{title}:"] + [f"  {node}: {a[key]}" for node, a in answered.items()]
    if not answered:
        lines.append(f"  total unknown: none of the {len(results)} nodes answered")
    else:
        total = sum(a[key] for a in answered.values())
        partial = f" (of {len(answered)} reachable nodes out of {len(results)})" if len(answered) < len(results) else ""
        lines.append(f"  total {total}{partial}")
    return lines + _errors(results)


def report_daemons(results: dict[str, Any], now: float) -> list[str]:
    """A table: node, daemon, passes, when the last pass ended, how long it took, its figures."""
    rows = []
    for node, answer in _reachable(results).items():
        for name, daemon in sorted(answer.items()):
            last = daemon.get("last_pass") or {}
            finished = last.get("finished_at")
            ago = f"{now - finished:.0f}s ago" if finished else "not yet"
            took = f"{last['duration']:.2f}s" if "duration" in last else "-"
            figures = {k: v for k, v in last.items() if k not in ("duration", "finished_at")}
            state = "FAILED" if figures.pop("failed", False) else describe(figures) if finished else ""
            rows.append((node, name, str(daemon.get("passes", 0)), ago, took, state))
    return ["Daemons:"] + _table(("node", "daemon", "passes", "last pass", "took", "figures"), rows) + _errors(results)


def report_unmounted(results: dict[str, Any]) -> list[str]:
    lines = ["Unmounted devices:"]
    for node, answer in _reachable(results).items():
        lines += [f"  {node}/{disk['device']}: NOT MOUNTED" for disk in answer]
    if len(lines) == 1:
        lines.append(f"  none on the {len(_reachable(results))} reachable nodes")
    return lines + _errors(results)


def report_time(results: dict[str, Any], now: float) -> list[str]:
    """Each node's clock against this host's: timestamps decide which write wins."""
    return report_simple("Clock offsets (node - here, while asking)", results, lambda a: f"{a['time'] - now:+.3f}s")


def report_mem(results: dict[str, Any]) -> list[str]:
    def render(a: dict[str, int]) -> str:
        total, available = a.get("MemTotal", 0), a.get("MemAvailable", 0)
        return f"{available / 2**30:.1f} GiB available of {total / 2**30:.1f} GiB" if total else "unknown"

    return report_simple("Memory", results, render)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return ["  (nothing to show)"]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    render = lambda row: "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()  # noqa: E731
    return [render(header)] + [render(row) for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="txstore-recon", description="Ask every node in the rings how it is.")
    parser.add_argument("--ring-dir", type=Path, default=Path("/etc/txstore"), help="where the *.ring.gz files are")
    parser.add_argument("-d", "--diskusage", action="store_true", help="disk usage per device, with a histogram")
    parser.add_argument("-l", "--load", action="store_true", help="load averages")
    parser.add_argument("-a", "--async", dest="async_", action="store_true", help="async pendings")
    parser.add_argument("-q", "--quarantined", action="store_true", help="quarantined objects and databases")
    parser.add_argument("-r", "--daemons", action="store_true", help="last passes of the node's daemons")
    parser.add_argument("--md5", action="store_true", help="do the nodes have the same rings as --ring-dir?")
    parser.add_argument("-u", "--unmounted", action="store_true", help="devices that are not mounted")
    parser.add_argument("-m", "--mem", action="store_true", help="memory available on each node")
    parser.add_argument("-T", "--time", action="store_true", help="each node's clock against this host's")
    parser.add_argument("--version", dest="version", action="store_true", help="the txstore version each node runs")
    parser.add_argument("--all", action="store_true", help="every check")
    parser.add_argument("--json", action="store_true", help="raw answers as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per node (default 5)")
    parser.add_argument("--cacert", type=Path, help="TLS nodes: the cluster CA their certificates must come from")
    parser.add_argument("--cert", type=Path, help="TLS nodes: a certificate the cluster CA issued (PEM), with --key")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None) or (args.cert is not None and args.cacert is None):
        parser.error("--cert and --key go together, and with --cacert")
    tls = None
    if args.cacert is not None:
        try:
            tls = ssl.create_default_context(cafile=str(args.cacert))
            if args.cert is not None:
                tls.load_cert_chain(str(args.cert), str(args.key))
        except (OSError, ssl.SSLError) as err:
            print(f"txstore-recon: cannot use the TLS files: {err}", file=sys.stderr)
            return 2
    wanted = {
        "diskusage": args.diskusage, "load": args.load, "async": args.async_,
        "quarantined": args.quarantined, "daemons": args.daemons, "ringmd5": args.md5,
        "unmounted": args.unmounted, "mem": args.mem, "time": args.time, "version": args.version,
    }
    if args.all:
        wanted = dict.fromkeys(wanted, True)
    if not any(wanted.values()):
        parser.error("name at least one check (-d -l -a -q -r -u -m -T --md5 --version) or --all")
    try:
        nodes = nodes_of(args.ring_dir)
    except (RingError, OSError) as err:
        print(f"txstore-recon: cannot read the rings in {args.ring_dir}: {err}", file=sys.stderr)
        return 2
    if not nodes:
        print(f"txstore-recon: no rings (*.ring.gz) in {args.ring_dir}", file=sys.stderr)
        return 2
    results = {what: gather(nodes, what, args.timeout, tls) for what, on in wanted.items() if on}
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        print(f"{len(nodes)} nodes in the rings of {args.ring_dir}")
        for what, answers in results.items():
            if what == "diskusage":
                lines = report_diskusage(answers)
            elif what == "ringmd5":
                lines = report_md5(answers, args.ring_dir)
            elif what == "load":
                lines = report_simple("Load", answers, lambda a: f"{a['1m']:.2f} {a['5m']:.2f} {a['15m']:.2f}")
            elif what == "async":
                lines = report_total("Async pendings", answers, "async_pending")
            elif what == "quarantined":
                lines = report_simple("Quarantined", answers,
                                      lambda a: ", ".join(f"{k} {v}" for k, v in sorted(a.items())))
            elif what == "unmounted":
                lines = report_unmounted(answers)
            elif what == "mem":
                lines = report_mem(answers)
            elif what == "time":
                lines = report_time(answers, time.time())
            elif what == "version":
                lines = report_simple("Versions", answers, lambda a: a["version"])
            else:
                lines = report_daemons(answers, time.time())
            print("\n".join(lines))
    unreachable = any(isinstance(a, dict) and "error" in a for answers in results.values() for a in answers.values())
    return 1 if unreachable else 0


if __name__ == "__main__":
    sys.exit(main())
