# -*- test-case-name: txstore.test.unit.test_container_broker -*-
"""
How container listings scale: build containers of growing size, then time listing pages.

    .venv/bin/python benchmarks/container_listing.py [--sizes 10000,100000,1000000]

For each size it fills a container with batched ``merge_items`` (inserts/s, in shuffled name
order as real uploads arrive), then reports the median of several runs for: the first page,
a page whose marker is in the middle of the container, a delimiter listing (``dNNNN/``
directories of equal size, each rolled up by one index seek), a reverse page from the middle,
rendering a page as JSON, and ``get_info`` (a HEAD). ``--connections`` also compares ways of
sharing a database between pool threads.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from txstore.common.listing_format import JSON, render_container_listing  # noqa: E402
from txstore.storage.db import ContainerBroker, ObjectRecord  # noqa: E402
from txstore.storage.listing import object_entries  # noqa: E402


def names_for(size: int) -> list[str]:
    directories = max(1, min(1000, size // 100))
    return [f"d{i % directories:04d}/object-{i:09d}" for i in range(size)]


def build(root: Path, size: int, batch: int) -> tuple[ContainerBroker, list[str], float]:
    broker = ContainerBroker(root / f"c{size}" / "c.db")
    broker.initialize("AUTH_bench", f"c{size}", "1700000000.00000")
    names = names_for(size)
    order = names[:]
    random.Random(size).shuffle(order)
    etag = "d41d8cd98f00b204e9800998ecf8427e"
    start = time.perf_counter()
    for offset in range(0, size, batch):
        broker.merge_items(
            ObjectRecord(name, "1700000001.00000", 1024, "application/octet-stream", etag)
            for name in order[offset : offset + batch]
        )
    elapsed = time.perf_counter() - start
    names.sort()
    return broker, names, size / elapsed


def median_ms(action: Callable[[], Any], runs: int) -> float:
    action()  # warm the page cache and the connection pool
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def bench_listings(broker: ContainerBroker, names: list[str], limit: int, runs: int) -> dict[str, float]:
    middle = names[len(names) // 2]
    page = broker.list(limit=limit, marker=middle)
    assert len(page) == min(limit, len(names) - len(names) // 2 - 1)
    subdirs = broker.list(limit=limit, delimiter="/")
    assert all(s.name.endswith("/") for s in subdirs)
    return {
        "first page": median_ms(lambda: broker.list(limit=limit), runs),
        "middle page": median_ms(lambda: broker.list(limit=limit, marker=middle), runs),
        "delimiter": median_ms(lambda: broker.list(limit=limit, delimiter="/"), runs),
        "reverse (mid)": median_ms(lambda: broker.list(limit=limit, marker=middle, reverse=True), runs),
        "page as json": median_ms(
            lambda: render_container_listing(JSON, "c", object_entries(broker.list(limit=limit, marker=middle))),
            runs,
        ),
        "get_info": median_ms(broker.get_info, runs),
    }


def bench_connections(root: Path, threads: int, calls: int) -> dict[str, float]:
    """Pooled connections, a connection per call, one connection behind a lock: throughput, latency."""
    source = ContainerBroker(root / "conn" / "c.db")
    source.initialize("AUTH_bench", "conn", "1700000000.00000")
    source.merge_items(ObjectRecord(f"o{i:05d}", "1700000001.00000", 1, "t", "e") for i in range(10_000))
    source.close()
    lock = threading.Lock()
    pooled = ContainerBroker(source.path, max_idle_connections=threads)
    per_call = ContainerBroker(source.path, max_idle_connections=0)
    single = ContainerBroker(source.path, max_idle_connections=1)

    def locked(work: Callable[[ContainerBroker], Any]) -> Callable[[ContainerBroker], Any]:
        def run(broker: ContainerBroker) -> Any:
            with lock:
                return work(broker)

        return run

    def head(broker: ContainerBroker) -> Any:
        return broker.get_info()

    def small_list(broker: ContainerBroker) -> Any:
        return broker.list(limit=100, marker="o05000")

    results = {}
    for label, broker, wrap in [
        ("pool", pooled, lambda w: w),
        ("connection per call", per_call, lambda w: w),
        ("one connection + lock", single, locked),
    ]:
        for work_name, work in (("get_info", head), ("list 100", small_list)):
            call = wrap(work)
            call(broker)

            def loop() -> None:
                for _ in range(calls):
                    call(broker)

            workers = [threading.Thread(target=loop) for _ in range(threads)]
            start = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            results[f"{label}: {work_name} (calls/s)"] = threads * calls / (time.perf_counter() - start)
        # A HEAD's latency while another thread lists full pages: a lock makes it wait.
        stop = threading.Event()
        big_list = wrap(lambda b: b.list(limit=10_000))

        def lister() -> None:
            while not stop.is_set():
                big_list(broker)

        background = threading.Thread(target=lister)
        background.start()
        time.sleep(0.05)  # let the lister get going
        head_call = wrap(head)
        latencies = []
        for _ in range(200):  # spread over many listing pages
            time.sleep(0.002)
            start = time.perf_counter()
            head_call(broker)
            latencies.append((time.perf_counter() - start) * 1000)
        stop.set()
        background.join()
        latencies.sort()
        results[f"{label}: get_info p50 ms beside a lister"] = latencies[len(latencies) // 2]
        results[f"{label}: get_info p99 ms beside a lister"] = latencies[int(len(latencies) * 0.99)]
        broker.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated row counts")
    parser.add_argument("--batch", type=int, default=10_000, help="rows per merge_items transaction")
    parser.add_argument("--limit", type=int, default=10_000, help="rows per listing page")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure (median shown)")
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--connections", action="store_true", help="also compare connection strategies")
    parser.add_argument("--threads", type=int, default=4)
    options = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in options.sizes.split(",") if s.strip()]

    root = Path(tempfile.mkdtemp(prefix="txstore-bench-", dir=options.dir))
    try:
        rows = []
        for size in sizes:
            broker, names, rate = build(root, size, options.batch)
            figures = bench_listings(broker, names, options.limit, options.runs)
            db_mb = sum(p.stat().st_size for p in broker.path.parent.iterdir()) / 2**20
            rows.append((size, rate, db_mb, figures))
            print(f"built {size:>9,} rows: {rate:>9,.0f} inserts/s, {db_mb:.1f} MiB", flush=True)
            broker.close()
        print()
        columns = list(rows[0][3]) if rows else []
        print(f"median ms over {options.runs} runs, limit={options.limit}")
        print(f"{'rows':>10} {'inserts/s':>10} " + " ".join(f"{c:>14}" for c in columns))
        for size, rate, _, figures in rows:
            print(f"{size:>10,} {rate:>10,.0f} " + " ".join(f"{figures[c]:>14.2f}" for c in columns))
        if options.connections:
            print()
            print(f"sharing one database between {options.threads} threads")
            for label, figure in bench_connections(root, options.threads, 500).items():
                print(f"  {label:<52} {figure:>10,.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
