"""
A static large object read through the proxy, against a plain object of the same size, and a
10 GiB one of 100 segments for the proxy's memory.

Starts ``txstore-aio --background`` in a temp root (4 nodes, 3 replicas), stores one plain
object of SIZE MiB and the same bytes again as SEGMENTS segments under an SLO manifest, then
reads the two alternately ROUNDS times (MiB/s each, medians and the ratio: a segmented
download should not be slower, since the next segment's GET is sent while the current one
streams). Last, a manifest listing the first segment 100 times (an SLO may name a segment
more than once) is read whole: 100 segments, 10 GiB at the default sizes, without 30 GiB of
disk; the proxy's peak RSS (VmHWM) before and after says whether its memory grew with it.

    python benchmarks/slo_download.py --size-mib 1000 --segments 10 --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from largeobject import get_stream, put_stream
from serverstats import peak_rss_mib
from standard import free_ports


def script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1000, help="the plain object and the SLO (default 1000)")
    parser.add_argument("--segments", type=int, default=10, help="segments of the SLO (default 10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=100,
                        help="segments of the big SLO, each the first segment again (default 100)")
    args = parser.parse_args()
    if args.size_mib % args.segments:
        parser.error("--size-mib must be a multiple of --segments")
    root = Path(tempfile.mkdtemp(prefix="txstore-bench-")) / "aio"
    args.port, base_port = free_ports(4)
    aio = [script("txstore-aio"), "--root", str(root), "--proxy-port", str(args.port), "--base-port", str(base_port),
           "--daemons", "updaters"]
    subprocess.run([*aio, "--background"], check=True, stdout=subprocess.DEVNULL)
    try:
        run(args, int((root / "run" / "proxy.pid").read_text()))
    finally:
        subprocess.run([*aio, "--stop"], stdout=subprocess.DEVNULL)
        shutil.rmtree(root.parent, ignore_errors=True)


def run(args: argparse.Namespace, proxy_pid: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=600)
    conn.request("GET", "/auth/v1.0", headers={"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
    response = conn.getresponse()
    response.read()
    auth = {"X-Auth-Token": response.getheader("X-Auth-Token")}
    for container in ("bench", "bench_segments"):
        conn.request("PUT", f"/v1/AUTH_test/{container}", headers=auth)
        conn.getresponse().read()
    size = args.size_mib * 2**20
    _, plain_md5, response = put_stream(conn, "/v1/AUTH_test/bench/plain", auth, size)
    assert response.status == 201, response.status
    segment = size // args.segments
    entries = []
    for number in range(args.segments):
        # put_stream's bytes repeat every 256, and a segment is a multiple of 1 MiB: the
        # segments concatenated are the plain object's bytes
        _, md5, response = put_stream(conn, f"/v1/AUTH_test/bench_segments/{number:04d}", auth, segment)
        assert response.status == 201, response.status
        entries.append({"path": f"/bench_segments/{number:04d}", "etag": md5, "size_bytes": segment})
    put_manifest(conn, "/v1/AUTH_test/bench/slo", auth, entries)
    put_manifest(conn, "/v1/AUTH_test/bench/big", auth, [entries[0]] * args.repeat)

    rates: dict[str, list[float]] = {"plain": [], "slo": []}
    for _ in range(args.rounds):
        for name in ("plain", "slo"):
            seconds, got, md5 = get_stream(conn, f"/v1/AUTH_test/bench/{name}", auth)
            assert got == size and md5 == plain_md5, (name, got, md5)
            rates[name].append(args.size_mib / seconds)
    plain, slo = (statistics.median(rates[name]) for name in ("plain", "slo"))
    print(f"{args.size_mib} MiB GET, {args.rounds} rounds alternating (MiB/s, median):")
    print(f"  plain object      {plain:7.1f}   runs {' '.join(f'{r:.0f}' for r in rates['plain'])}")
    print(f"  SLO, {args.segments:3d} segments {slo:7.1f}   runs {' '.join(f'{r:.0f}' for r in rates['slo'])}")
    print(f"  SLO / plain       {slo / plain:7.2f}")

    before = peak_rss_mib(proxy_pid)
    seconds, got, _ = get_stream(conn, "/v1/AUTH_test/bench/big", auth)
    assert got == segment * args.repeat, got
    after = peak_rss_mib(proxy_pid)
    big_mib = got / 2**20
    print(f"{big_mib:.0f} MiB SLO of {args.repeat} segments: GET {big_mib / seconds:.1f} MiB/s; "
          f"proxy peak RSS {before:.0f} MiB before, {after:.0f} MiB after")


def put_manifest(conn: http.client.HTTPConnection, path: str, auth: dict[str, str], entries: list[dict]) -> None:
    body = json.dumps(entries).encode()
    conn.request("PUT", f"{path}?multipart-manifest=put", body=body, headers=auth)
    response = conn.getresponse()
    text = response.read()
    assert response.status == 201, (response.status, text)


if __name__ == "__main__":
    main()
