# -*- test-case-name: txstore.test.integration.test_netns_drills -*-
"""
The client side of the namespace drills, run inside the client namespace by
`txstore.test.netns_cluster` (``python -m txstore.test.netns_client COMMAND`` with the
arguments as JSON on stdin). A plain synchronous program with ``http.client`` and no retries,
so that every failed request is seen and counted.

Commands (the answer is JSON on stdout):

- ``wait``: which of ``urls`` do not answer 200 within ``timeout``;
- ``auth``: the storage URL and a token from tempauth;
- ``stream``: PUTs (and GETs of objects already acknowledged, ``reads`` of the requests) from
  ``workers`` threads for ``seconds`` (at most ``rate`` a second, if given), one JSON line
  per request as it ends;
- ``verify``: every listed object read back through the proxy, compared by md5;
- ``get``: a node's JSON (``/recon/replication``);
- ``dispersion``: every listed object HEADed on each of its primaries (the ring's device
  addresses) and every container too, as swift-dispersion-report counts copies.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

REQUEST_TIMEOUT = 30.0


def body_for(name: str, size: int) -> bytes:
    """An object's bytes, derived from its name: any process can tell the right ones."""
    return random.Random(name).randbytes(size)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def request(url: str, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
            timeout: float = REQUEST_TIMEOUT) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, parts.path.rstrip("/") + path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


def wait(arguments: dict) -> dict:
    deadline = time.monotonic() + arguments["timeout"]
    pending = list(arguments["urls"])
    while pending and time.monotonic() < deadline:
        still = []
        for url in pending:
            try:
                status, _, _ = request(url, "GET", "", timeout=1.0)
            except OSError:
                status = None
            if status != 200:
                still.append(url)
        pending = still
        if pending:
            time.sleep(0.2)
    return {"pending": pending}


def auth(arguments: dict) -> dict:
    account, user, key = arguments["user"]
    status, headers, body = request(arguments["url"], "GET", "/auth/v1.0",
                                    {"X-Auth-User": f"{account}:{user}", "X-Auth-Key": key})
    if status != 200:
        raise SystemExit(f"auth: {status} {body[:200]!r}")
    return {"storage_url": headers["x-storage-url"], "token": headers["x-auth-token"]}


class Stream:
    """Requests from several threads until a deadline; each one printed as it ends."""

    def __init__(self, arguments: dict) -> None:
        self.url = arguments["storage_url"]
        self.headers = {"X-Auth-Token": arguments["token"]}
        self.container = arguments["container"]
        self.prefix = arguments["prefix"]
        self.sizes = arguments.get("sizes", [4096])
        self.reads = arguments.get("reads", 0.0)
        self.deadline = time.monotonic() + arguments["seconds"]
        self.interval = 1.0 / arguments["rate"] if arguments.get("rate") else 0.0  # requests/s, all threads
        self.next_start = time.monotonic()
        self.rng = random.Random(arguments.get("seed", 1))
        self.lock = threading.Lock()
        self.count = 0
        self.acked: list[tuple[str, int]] = []

    def record(self, **fields: object) -> None:
        with self.lock:
            sys.stdout.write(json.dumps(fields) + "\n")
            sys.stdout.flush()

    def next_request(self) -> tuple[str, str, int]:
        with self.lock:
            wait = self.next_start - time.monotonic()
            self.next_start = max(self.next_start, time.monotonic()) + self.interval
        if wait > 0:
            time.sleep(wait)
        with self.lock:
            if self.acked and self.rng.random() < self.reads:
                return ("GET", *self.rng.choice(self.acked))
            self.count += 1
            return "PUT", f"{self.prefix}-{self.count:05d}", self.rng.choice(self.sizes)

    def one(self) -> None:
        method, name, size = self.next_request()
        path = f"/{quote(self.container)}/{quote(name)}"
        body = body_for(name, size)
        began = time.time()
        status, error, ok = None, None, False
        try:
            if method == "PUT":
                status, headers, _ = request(self.url, "PUT", path, self.headers, body)
                ok = status == 201 and headers.get("etag", "").strip('"') == md5_hex(body)
            else:
                status, _, data = request(self.url, "GET", path, self.headers)
                ok = status == 200 and data == body
        except (OSError, http.client.HTTPException) as err:
            error = f"{type(err).__name__}: {err}"
        if method == "PUT" and ok:
            with self.lock:
                self.acked.append((name, size))
        self.record(op=method, name=name, size=size, t0=began, t1=time.time(), status=status, ok=ok, error=error,
                    md5=md5_hex(body))

    def run(self, workers: int) -> None:
        def worker() -> None:
            while time.monotonic() < self.deadline:
                self.one()

        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def stream(arguments: dict) -> None:
    status, _, body = request(arguments["storage_url"], "PUT", f"/{quote(arguments['container'])}",
                              {"X-Auth-Token": arguments["token"]})
    if status not in (201, 202):
        raise SystemExit(f"container PUT: {status} {body[:200]!r}")
    Stream(arguments).run(arguments.get("workers", 2))


def verify(arguments: dict) -> dict:
    """Each object (container, name, size) GET through the proxy: lost (not 200) or wrong bytes."""
    headers = {"X-Auth-Token": arguments["token"]}

    def check(item: list) -> tuple[str, str | None]:
        container, name, size = item
        try:
            status, answer, data = request(arguments["storage_url"], "GET", f"/{quote(container)}/{quote(name)}", headers)
        except (OSError, http.client.HTTPException) as err:
            return name, f"error {err}"
        if status != 200:
            return name, f"status {status} {answer.get('x-trans-id', '')}".rstrip()
        return name, None if data == body_for(name, size) else "wrong bytes"

    with ThreadPoolExecutor(arguments.get("workers", 4)) as pool:
        problems = {name: why for name, why in pool.map(check, arguments["objects"]) if why}
    return {"checked": len(arguments["objects"]), "problems": problems}


def dispersion(arguments: dict) -> dict:
    """
    Copies found on the primaries: objects (container, name, md5) by a HEAD with the right
    ETag, containers by a HEAD answering 2xx. What swift-dispersion-report reports, for the
    objects the drill wrote rather than a sample it placed itself.
    """
    from txstore.common.cluster import load_cluster_config
    from txstore.ring.ringset import RingSet

    etc = Path(arguments["etc"])
    cluster = load_cluster_config(etc / "txstore.conf")
    rings = RingSet.load(etc, cluster.hasher, cluster.policies)
    account = arguments["account"]

    def head(node, part: int, path: str, want: str | None) -> bool:
        try:
            status, headers, _ = request(f"http://{node.ip}:{node.port}", "HEAD", f"/{node.device_name}/{part}{path}",
                                         {"X-Backend-Storage-Policy-Index": "0"}, timeout=5.0)
        except (OSError, http.client.HTTPException):
            return False
        return 200 <= status < 300 and (want is None or headers.get("etag", "").strip('"') == want)

    def object_copies(item: list) -> tuple[str, int, int]:
        container, name, md5 = item
        part, nodes = rings.object_ring(0).get_nodes(account, container, name)
        path = f"/{quote(account)}/{quote(container)}/{quote(name)}"
        return name, sum(head(n, part, path, md5) for n in nodes), len(nodes)

    def container_copies(container: str) -> tuple[str, int, int]:
        part, nodes = rings.container.get_nodes(account, container)
        return container, sum(head(n, part, f"/{quote(account)}/{quote(container)}", None) for n in nodes), len(nodes)

    with ThreadPoolExecutor(arguments.get("workers", 8)) as pool:
        objects = list(pool.map(object_copies, arguments["objects"]))
        containers = list(pool.map(container_copies, arguments["containers"]))
    report = {}
    for kind, rows in (("object", objects), ("container", containers)):
        found, wanted = sum(r[1] for r in rows), sum(r[2] for r in rows)
        report[kind] = {"copies_found": found, "copies_wanted": wanted,
                        "percent": 100.0 * found / wanted if wanted else 100.0,
                        "incomplete": [r[0] for r in rows if r[1] < r[2]][:20]}
    return report


def get_json(arguments: dict) -> dict:
    """A node's JSON answer (``/recon/...``), or its status when it has none."""
    try:
        status, _, body = request(arguments["url"], "GET", "", timeout=10.0)
    except (OSError, http.client.HTTPException) as err:
        return {"error": str(err)}
    return {"status": status, "json": json.loads(body) if status == 200 else None}


COMMANDS = {"wait": wait, "auth": auth, "verify": verify, "dispersion": dispersion, "get": get_json}


def main(argv: list[str]) -> None:
    arguments = json.load(sys.stdin)
    if argv[0] == "stream":
        stream(arguments)
        return
    json.dump(COMMANDS[argv[0]](arguments), sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
