"""
One large object through the whole cluster: PUT then GET via the proxy of a fresh all-in-one,
with the proxy's peak RSS.

Starts ``txstore-aio --background`` in a temp root (4 nodes, 3 replicas), authenticates as
test:tester, streams SIZE bytes up with http.client (generated on the fly), reads them back,
and prints MiB/s and the proxy's VmHWM before and after. The proxy must not grow with the
object: compare 64 MiB with 1 GiB.

    python benchmarks/proxy_large_object.py --size-mib 64 1024
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from largeobject import get_stream, put_stream
from serverstats import peak_rss_mib




def script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--port", type=int, default=47080)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="txstore-bench-")) / "aio"
    aio = [script("txstore-aio"), "--root", str(root), "--proxy-port", str(args.port), "--base-port", str(args.port)]
    subprocess.run([*aio, "--background"], check=True, stdout=subprocess.DEVNULL)
    try:
        proxy_pid = int((root / "run" / "proxy.pid").read_text())
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=600)
        conn.request("GET", "/auth/v1.0", headers={"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
        response = conn.getresponse()
        response.read()
        token = response.getheader("X-Auth-Token")
        conn.request("PUT", "/v1/AUTH_test/bench", headers={"X-Auth-Token": token})
        conn.getresponse().read()
        auth = {"X-Auth-Token": token}
        for mib in args.size_mib:
            size = mib * 2**20
            path = f"/v1/AUTH_test/bench/obj{mib}"
            idle = peak_rss_mib(proxy_pid)
            put_seconds, md5, response = put_stream(conn, path, auth, size)
            assert response.status == 201, response.status
            after_put = peak_rss_mib(proxy_pid)
            get_seconds, got, check = get_stream(conn, path, auth)
            assert got == size and check == md5
            after_get = peak_rss_mib(proxy_pid)
            print(f"{mib:6d} MiB  PUT {mib / put_seconds:7.1f} MiB/s  GET {mib / get_seconds:7.1f} MiB/s  "
                  f"proxy peak RSS: before {idle:.0f} MiB, after PUT {after_put:.0f} MiB, after GET {after_get:.0f} MiB")
    finally:
        subprocess.run([*aio, "--stop"], stdout=subprocess.DEVNULL)
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
