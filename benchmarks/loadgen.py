"""
A load generator for any Swift-API cluster: auth URL, user and key in, figures out.

    python benchmarks/loadgen.py --auth http://127.0.0.1:8080/auth/v1.0 --size 4096 --count 2000
    python benchmarks/loadgen.py ... --aio-root /tmp/x/aio          # + txstore server CPU/RSS
    python benchmarks/loadgen.py ... --pidfile /tmp/anchor-swift/pids   # + Swift server CPU/RSS

It authenticates with ``/auth/v1.0`` (X-Auth-User / X-Auth-Key → X-Storage-Url /
X-Auth-Token) and runs its requests from worker *processes* (``--processes``, each running
concurrency/processes threads, each thread with its own keep-alive ``http.client``
connection), so that the client's Python does not share one GIL and stays a small, steady
cost beside the servers. Workers pull object numbers from one shared counter, so a slow
connection does not leave others idle at the end.

Workloads (the building blocks of ``standard.py``):

- `Client.objects`: PUT, GET, HEAD, DELETE of N objects of S bytes at concurrency C, in that
  order, in a fresh container. A GET counts as an error unless it returns 200 and exactly S
  bytes; a HEAD unless 200 and Content-Length S; a PUT unless 201; a DELETE unless 204.
- `Client.large`: one object of S bytes, single stream, up then down. The body is generated in
  1 MiB chunks and md5'd as it is sent; the download is md5'd as it arrives and compared
  (never held whole in memory on either side of the client).
- `Client.listing`: a container of N zero-byte objects listed page by page (``limit`` and
  ``marker``, the default plain-text format) ``passes`` times. Filling it is reported as its
  own row (concurrent zero-byte PUTs); an existing container that already holds N objects is
  reused.

Each workload is a `Result`: operations, errors, seconds, bytes and each operation's latency;
with a `serverstats.Meter`, also the servers' CPU seconds and peak RSS during it.

Standard library only (plus the sibling modules), so it also runs from the Swift anchor's venv.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from largeobject import get_stream, put_stream  # noqa: E402
from serverstats import (  # noqa: E402
    Meter,
    Servers,
    Usage,
    cpu_seconds_of_pids,
    pid_groups_from_pidfile,
    pid_groups_from_run_dir,
)

TIMEOUT = 120.0
READ_CHUNK = 64 * 1024


class BenchError(Exception):
    """The benchmark cannot go on (auth refused, container not creatable, a worker died)."""


# ------------------------------------------------------------------ account and connections


@dataclass(frozen=True)
class Account:
    storage_url: str
    token: str

    @property
    def parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.storage_url)

    def connect(self, timeout: float = TIMEOUT) -> http.client.HTTPConnection:
        parts = self.parts
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname, parts.port, timeout=timeout)

    def path(self, container: str, name: str | None = None) -> str:
        base = self.parts.path.rstrip("/") + "/" + urllib.parse.quote(container)
        return base if name is None else base + "/" + urllib.parse.quote(name)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token}


def authenticate(auth_url: str, user: str, key: str) -> Account:
    parts = urllib.parse.urlsplit(auth_url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", parts.path or "/auth/v1.0", headers={"X-Auth-User": user, "X-Auth-Key": key})
        response = conn.getresponse()
        response.read()
    except OSError as err:
        raise BenchError(f"cannot reach {auth_url}: {err}") from None
    finally:
        conn.close()
    url, token = response.getheader("X-Storage-Url"), response.getheader("X-Auth-Token")
    if response.status // 100 != 2 or not url or not token:
        raise BenchError(f"auth as {user} at {auth_url} refused: {response.status} {response.reason}")
    return Account(url, token)


def request(account: Account, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One small request on a fresh connection (setup and teardown, not measured)."""
    conn = account.connect()
    try:
        conn.request(method, path, headers={**account.headers, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ results


@dataclass
class Result:
    workload: str  # "4 KiB × 2000 C=16", "256 MiB", "listing 100000"
    op: str  # PUT, GET, HEAD, DELETE, "PUT 0 B", LIST
    ops: int = 0
    errors: int = 0
    seconds: float = 0.0
    bytes: int = 0
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    usage: Usage | None = None
    client_cpu: float = 0.0
    note: str = ""

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0

    def latency_ms(self, percent: float) -> float:
        """Nearest-rank percentile of the operations' latencies, in ms."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(1, -(-len(ordered) * percent // 100))
        return 1000 * ordered[int(rank) - 1]

    def cpu_ms_per_op(self, role: str | None = None) -> float:
        if self.usage is None or not self.ops:
            return float("nan")
        used = self.usage.total_cpu if role is None else self.usage.cpu[role]
        return 1000 * used / self.ops

    def as_dict(self) -> dict:
        return {
            "workload": self.workload,
            "op": self.op,
            "ops": self.ops,
            "errors": self.errors,
            "seconds": round(self.seconds, 4),
            "bytes": self.bytes,
            "ops_per_s": round(self.ops_per_s, 2),
            "mb_per_s": round(self.mb_per_s, 2),
            "p50_ms": round(self.latency_ms(50), 2),
            "p95_ms": round(self.latency_ms(95), 2),
            "p99_ms": round(self.latency_ms(99), 2),
            "server_cpu_s": None if self.usage is None else {r: round(v, 3) for r, v in self.usage.cpu.items()},
            "server_peak_rss_mib": None if self.usage is None else {r: round(v, 1) for r, v in self.usage.peak_rss.items()},
            "client_cpu_s": round(self.client_cpu, 3),
            "error_samples": self.error_samples,
            "note": self.note,
        }


# ------------------------------------------------------------------ worker processes


@dataclass(frozen=True)
class Job:
    op: str  # PUT GET HEAD DELETE
    container: str
    prefix: str
    count: int
    size: int


def _object_name(prefix: str, number: int) -> str:
    return f"{prefix}{number:08d}"


def _one(conn: http.client.HTTPConnection, account: Account, job: Job, path: str, payload: bytes) -> tuple[str | None, int]:
    """One operation; (None, bytes moved) when it did what it should, else (why, bytes)."""
    if job.op == "PUT":
        conn.request("PUT", path, body=payload, headers={**account.headers, "Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        response.read()
        return (None if response.status == 201 else f"PUT {response.status}"), job.size
    if job.op == "GET":
        conn.request("GET", path, headers=account.headers)
        response = conn.getresponse()
        got = 0
        while data := response.read(READ_CHUNK):
            got += len(data)
        if response.status != 200:
            return f"GET {response.status}", got
        return (None if got == job.size else f"GET short body {got}/{job.size}"), got
    if job.op == "HEAD":
        conn.request("HEAD", path, headers=account.headers)
        response = conn.getresponse()
        response.read()
        length = response.getheader("Content-Length")
        if response.status != 200:
            return f"HEAD {response.status}", 0
        return (None if length == str(job.size) else f"HEAD Content-Length {length}"), 0
    if job.op == "DELETE":
        conn.request("DELETE", path, headers=account.headers)
        response = conn.getresponse()
        response.read()
        return (None if response.status == 204 else f"DELETE {response.status}"), 0
    raise ValueError(job.op)


def _run_slot(slot: int, conns: list, account: Account, job: Job, counter, go: threading.Event, out: dict) -> None:
    payload = (bytes(range(256)) * (job.size // 256 + 1))[: job.size] if job.op == "PUT" else b""
    latencies, errors, reasons, moved = [], 0, {}, 0
    go.wait()
    while True:
        with counter.get_lock():
            number = counter.value
            if number >= job.count:
                break
            counter.value = number + 1
        path = account.path(job.container, _object_name(job.prefix, number))
        started = time.perf_counter()
        try:
            if conns[slot] is None:
                conns[slot] = account.connect()
            why, nbytes = _one(conns[slot], account, job, path, payload)
        except Exception as err:  # noqa: BLE001 - counted and named in the table, never lost
            if conns[slot] is not None:
                conns[slot].close()
            conns[slot] = None
            why, nbytes = f"{job.op} {type(err).__name__}: {err}", 0
        latencies.append(time.perf_counter() - started)
        moved += nbytes
        if why is not None:
            errors += 1
            why = why if why in reasons or len(reasons) < 20 else "other errors"
            reasons[why] = reasons.get(why, 0) + 1
    out[slot] = (latencies, errors, reasons, moved)


def _worker_main(pipe, account: Account, threads: int, counter) -> None:
    """A worker process: keeps its connections across jobs; ready → go → results, per job."""
    conns: list = [None] * threads
    while True:
        job = pipe.recv()
        if job is None:
            break
        go = threading.Event()
        out: dict = {}
        workers = [
            threading.Thread(target=_run_slot, args=(slot, conns, account, job, counter, go, out), daemon=True)
            for slot in range(threads)
        ]
        for worker in workers:
            worker.start()
        pipe.send("ready")
        pipe.recv()  # "go"
        go.set()
        for worker in workers:
            worker.join()
        pipe.send(list(out.values()))
    for conn in conns:
        if conn is not None:
            conn.close()


class Pool:
    """``processes`` worker processes sharing ``concurrency`` connections between them."""

    def __init__(self, account: Account, concurrency: int, processes: int) -> None:
        context = multiprocessing.get_context("fork")
        processes = max(1, min(processes, concurrency))
        self.counter = context.Value("q", 0)
        self.pipes, self.procs = [], []
        for index in range(processes):
            threads = concurrency // processes + (1 if index < concurrency % processes else 0)
            ours, theirs = context.Pipe()
            proc = context.Process(target=_worker_main, args=(theirs, account, threads, self.counter), daemon=True)
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def run(self, job: Job, meter: Meter, workload: str, op: str | None = None) -> Result:
        self.counter.value = 0
        for pipe in self.pipes:
            pipe.send(job)
        for pipe in self.pipes:
            self._recv(pipe)  # "ready": threads started, waiting for go
        own = [os.getpid(), *self.pids]
        client_before = cpu_seconds_of_pids(own)
        meter.start()
        started = time.perf_counter()
        for pipe in self.pipes:
            pipe.send("go")
        reports = [self._recv(pipe) for pipe in self.pipes]
        result = Result(workload, op or job.op, seconds=time.perf_counter() - started)
        result.usage = meter.stop()
        result.client_cpu = cpu_seconds_of_pids(own) - client_before
        reasons: Counter[str] = Counter()
        for latencies, errors, slot_reasons, moved in (slot for report in reports for slot in report):
            result.latencies.extend(latencies)
            result.errors += errors
            result.bytes += moved
            reasons.update(slot_reasons)
        result.error_samples = [f"{why} ×{count}" for why, count in reasons.most_common(5)]
        result.ops = len(result.latencies)
        return result

    def _recv(self, pipe):
        try:
            return pipe.recv()
        except EOFError:
            raise BenchError("a load generator process died") from None

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


# ------------------------------------------------------------------ workloads


def size_label(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


class Client:
    """One target cluster: an account, the server processes to meter, how to load it."""

    def __init__(self, account: Account, servers: Servers | None, processes: int = 4, policy: str | None = None) -> None:
        self.account = account
        self.servers = servers
        self.processes = processes
        self.policy = policy  # the storage policy of the containers it makes (None: the default)
        self.run_id = uuid.uuid4().hex[:8]

    def meter(self) -> Meter:
        return Meter(self.servers)

    def _create_container(self, container: str) -> None:
        headers = {"X-Storage-Policy": self.policy} if self.policy else None
        status, _, body = request(self.account, "PUT", self.account.path(container), headers)
        if status not in (201, 202):
            raise BenchError(f"PUT container {container}: {status} {body[:200]!r}")

    def objects(self, size: int, count: int, concurrency: int, ops=("PUT", "GET", "HEAD", "DELETE"), label: str = "") -> list[Result]:
        workload = f"{size_label(size)} × {count} C={concurrency}{label}"
        container = f"bench-{self.run_id}-{size}-{uuid.uuid4().hex[:6]}"
        self._create_container(container)
        pool = Pool(self.account, concurrency, self.processes)
        try:
            return [pool.run(Job(op, container, "o", count, size), self.meter(), workload) for op in ops]
        finally:
            pool.close()
            if "DELETE" in ops:
                request(self.account, "DELETE", self.account.path(container))

    def large(self, size: int) -> list[Result]:
        """One object up then down, single stream, md5 checked; deleted afterwards."""
        workload = f"{size_label(size)} × 1 single stream"
        container = f"bench-{self.run_id}-large"
        self._create_container(container)
        path = self.account.path(container, f"large-{size}")
        conn = self.account.connect(timeout=600)
        results = []
        try:
            up = Result(workload, "PUT", ops=1)
            meter, before = self.meter(), cpu_seconds_of_pids([os.getpid()])
            meter.start()
            seconds, md5, response = put_stream(conn, path, self.account.headers, size)
            up.usage, up.client_cpu = meter.stop(), cpu_seconds_of_pids([os.getpid()]) - before
            up.seconds, up.bytes, up.latencies = seconds, size, [seconds]
            etag = (response.getheader("Etag") or "").strip('"')
            if response.status != 201 or etag != md5:
                up.errors, up.error_samples = 1, [f"PUT {response.status} etag {etag} (sent md5 {md5})"]
            results.append(up)
            down = Result(workload, "GET", ops=1)
            meter, before = self.meter(), cpu_seconds_of_pids([os.getpid()])
            meter.start()
            seconds, got, check = get_stream(conn, path, self.account.headers)
            down.usage, down.client_cpu = meter.stop(), cpu_seconds_of_pids([os.getpid()]) - before
            down.seconds, down.bytes, down.latencies = seconds, got, [seconds]
            if got != size or check != md5:
                down.errors, down.error_samples = 1, [f"GET {got}/{size} bytes, md5 {check} (sent {md5})"]
            results.append(down)
        except (OSError, http.client.HTTPException) as err:
            failed = Result(workload, "GET" if results else "PUT", ops=1, errors=1, error_samples=[repr(err)])
            results.append(failed)
        finally:
            conn.close()
            request(self.account, "DELETE", path)
            request(self.account, "DELETE", self.account.path(container))
        return results

    def listing(self, objects: int, limit: int, passes: int, fill_concurrency: int) -> list[Result]:
        """Fill (or reuse) a container of ``objects`` zero-byte objects, then list it page by page."""
        workload = f"listing {objects} by {limit}"
        container = f"bench-listing-{objects}"
        results = []
        status, headers, _ = request(self.account, "HEAD", self.account.path(container))
        have = int(headers.get("x-container-object-count", 0)) if status // 100 == 2 else 0
        if have < objects:
            self._create_container(container)
            pool = Pool(self.account, fill_concurrency, self.processes)
            try:
                fill = pool.run(Job("PUT", container, "", objects, 0), self.meter(), f"fill {objects} C={fill_concurrency}", "PUT 0 B")
            finally:
                pool.close()
            waited = self._wait_for_count(container, objects - fill.errors)
            fill.note = f"filled in {fill.seconds:.1f} s; listing complete {waited:.1f} s later"
            results.append(fill)
        else:
            print(f"  (reusing {container}: it already holds {have} objects)", flush=True)
        listed = Result(workload, "LIST")
        conn = self.account.connect()
        meter, before = self.meter(), cpu_seconds_of_pids([os.getpid()])
        meter.start()
        started = time.perf_counter()
        counts = []
        try:
            for _ in range(passes):
                counts.append(self._list_once(conn, container, limit, listed))
        finally:
            conn.close()
        listed.seconds = time.perf_counter() - started
        listed.usage, listed.client_cpu = meter.stop(), cpu_seconds_of_pids([os.getpid()]) - before
        listed.ops = len(listed.latencies)
        listed.note = f"{passes} passes, {listed.seconds / passes:.2f} s per pass; names listed per pass: {counts}"
        wrong = sum(count != objects for count in counts)
        if wrong:
            listed.errors += wrong
            listed.error_samples.append(f"expected {objects} names per pass, got {counts}")
        results.append(listed)
        return results

    def _list_once(self, conn: http.client.HTTPConnection, container: str, limit: int, into: Result) -> int:
        marker, total = "", 0
        while True:
            query = urllib.parse.urlencode({"limit": limit, "marker": marker})
            started = time.perf_counter()
            try:
                conn.request("GET", f"{self.account.path(container)}?{query}", headers=self.account.headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as err:
                into.latencies.append(time.perf_counter() - started)
                into.errors += 1
                into.error_samples.append(repr(err))
                return total
            into.latencies.append(time.perf_counter() - started)
            into.bytes += len(body)
            if response.status not in (200, 204):
                into.errors += 1
                into.error_samples.append(f"LIST {response.status}")
                return total
            names = body.decode("utf-8").splitlines()
            total += len(names)
            if len(names) < limit:
                return total
            marker = names[-1]

    def _wait_for_count(self, container: str, objects: int, timeout: float = 120.0) -> float:
        """Container updates may trail the object PUTs; wait until the count is all there."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            status, headers, _ = request(self.account, "HEAD", self.account.path(container))
            if int(headers.get("x-container-object-count", 0)) >= objects:
                break
            time.sleep(1)
        return time.monotonic() - started


# ------------------------------------------------------------------ the table


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN → "-"


COLUMNS = (
    ("workload", "<"), ("op", "<"), ("ops", ">"), ("err", ">"), ("ops/s", ">"), ("MB/s", ">"),
    ("p50 ms", ">"), ("p95 ms", ">"), ("p99 ms", ">"),
    ("CPU ms/op proxy", ">"), ("nodes", ">"), ("total", ">"), ("client", ">"),
    ("peak RSS MiB proxy", ">"), ("nodes", ">"),
)


def result_row(result: Result) -> list[str]:
    usage = result.usage
    return [
        result.workload, result.op, str(result.ops), str(result.errors),
        _fmt(result.ops_per_s), _fmt(result.mb_per_s),
        _fmt(result.latency_ms(50)), _fmt(result.latency_ms(95)), _fmt(result.latency_ms(99)),
        _fmt(result.cpu_ms_per_op("proxy"), 2), _fmt(result.cpu_ms_per_op("nodes"), 2), _fmt(result.cpu_ms_per_op(), 2),
        _fmt(1000 * result.client_cpu / result.ops if result.ops else float("nan"), 2),
        "-" if usage is None else f"{usage.peak_rss['proxy']:.0f}",
        "-" if usage is None else f"{usage.peak_rss['nodes']:.0f}",
    ]


def render(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(cells, align, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def table(results: list[Result]) -> str:
    out = render([c for c, _ in COLUMNS], [result_row(r) for r in results], [a for _, a in COLUMNS])
    notes = [f"  {r.workload} {r.op}: {r.note}" for r in results if r.note]
    notes += [f"  {r.workload} {r.op} errors: {'; '.join(r.error_samples)}" for r in results if r.error_samples]
    return out + ("\n" + "\n".join(notes) if notes else "")


# ------------------------------------------------------------------ command line


def servers_from(aio_root: Path | None, pidfile: Path | None) -> Servers | None:
    if aio_root is not None:
        return Servers(pid_groups_from_run_dir(aio_root / "run"))
    if pidfile is not None:
        return Servers(pid_groups_from_pidfile(pidfile))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--auth", default="http://127.0.0.1:8080/auth/v1.0")
    parser.add_argument("--user", default="test:tester")
    parser.add_argument("--key", default="testing")
    parser.add_argument("--size", type=int, default=4096, help="object size in bytes")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--processes", type=int, default=4, help="load generator processes (default 4)")
    parser.add_argument("--large", type=int, nargs="*", default=[], metavar="MIB", help="also single-stream objects of these MiB")
    parser.add_argument("--listing", type=int, default=0, metavar="N", help="also list a container of N objects")
    parser.add_argument("--limit", type=int, default=10000, help="listing page size")
    parser.add_argument("--aio-root", type=Path, help="meter the txstore-aio processes of this root")
    parser.add_argument("--pidfile", type=Path, default=os.environ.get("BENCH_PIDFILE") or None,
                        help="meter the process groups of this 'name pid' file (BENCH_PIDFILE)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--policy", help="the storage policy of the containers it makes (X-Storage-Policy)")
    args = parser.parse_args(argv)
    try:
        client = Client(authenticate(args.auth, args.user, args.key), servers_from(args.aio_root, args.pidfile), args.processes,
                        policy=args.policy)
        results = client.objects(args.size, args.count, args.concurrency) if args.count else []
        for mib in args.large:
            results += client.large(mib * 2**20)
        if args.listing:
            results += client.listing(args.listing, args.limit, 3, max(args.concurrency, 32))
    except BenchError as err:
        print(f"loadgen: {err}", file=sys.stderr)
        return 1
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in results], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
