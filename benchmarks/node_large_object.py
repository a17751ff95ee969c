"""
One large object through a real storage node: PUT then GET, with the node's peak RSS.

Starts ``twistd objectnode`` (one device, its own temp root), streams SIZE bytes up with
http.client (chunks generated on the fly, never held whole), reads them back, and prints MB/s
and the node's VmHWM (peak resident memory) before and after. Memory must not grow with the
object: compare the peak for 64 MiB and 1 GiB.

    python benchmarks/node_large_object.py --size-mib 1024
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from largeobject import get_stream, put_stream
from serverstats import peak_rss_mib

from txstore.aio.layout import Topology, prepare




def start_node(root: Path, port: int) -> subprocess.Popen:
    layout = prepare(root, Topology(nodes=1, replicas=1, part_power=4, base_port=port - 10), 1)
    twistd = str(Path(sys.executable).with_name("twistd"))
    log = open(root / "node.log", "wb")
    node = subprocess.Popen(
        [twistd, "--nodaemon", "--pidfile=", "objectnode", "--config", str(layout.node_config(1))],
        stdout=log, stderr=subprocess.STDOUT,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=1).read()
            return node
        except OSError:
            time.sleep(0.05)
    node.kill()
    raise SystemExit("node did not start; see " + str(root / "node.log"))


def run(size: int, port: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="txstore-bench-"))
    node = start_node(root, port)
    try:
        idle = peak_rss_mib(node.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        headers = {"X-Timestamp": f"{time.time():.5f}", "Content-Type": "application/octet-stream"}
        put_seconds, md5, response = put_stream(conn, "/d1/0/AUTH_b/c/big", headers, size)
        assert response.status == 201, response.status
        assert response.getheader("ETag") == md5
        after_put = peak_rss_mib(node.pid)
        get_seconds, got, check = get_stream(conn, "/d1/0/AUTH_b/c/big", {})
        assert got == size and check == md5
        after_get = peak_rss_mib(node.pid)
        mib = size / 2**20
        print(f"{mib:8.0f} MiB  PUT {mib / put_seconds:7.1f} MiB/s  GET {mib / get_seconds:7.1f} MiB/s  "
              f"node peak RSS: idle {idle:.0f} MiB, after PUT {after_put:.0f} MiB, after GET {after_get:.0f} MiB")
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--port", type=int, default=46310)
    args = parser.parse_args()
    for size in args.size_mib:
        run(size * 2**20, args.port)


if __name__ == "__main__":
    main()
