# -*- test-case-name: txstore.test.integration.test_netns_drills -*-
"""
The fault drills of issue 23 on a `NetnsCluster`, shared by the trial tests (which assert on
their figures) and ``benchmarks/netns_cluster.py`` (which prints them, with longer faults).

Each drill runs a stream of client requests from the client namespace, applies its fault
part-way through and heals it, then waits until every acknowledged object (201 with the
right ETag) has a copy on each of its primaries and each container on each of its primaries
(HEADs to the nodes: dispersion 100 %), and reads every acknowledged object back through the
proxy, comparing the bytes. ``txstore-dispersion populate`` places its own sample before the
fault and ``report`` must find 100 % of it too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from attrs import define, field

from txstore.common.cluster import load_cluster_config
from txstore.ring.ringset import RingSet
from txstore.test.netns_cluster import NODE_PORT, NetnsCluster

CONVERGE_TIMEOUT = 90.0


@define
class Figures:
    """What one drill measured."""

    drill: str
    fault_seconds: float = 0.0
    requests: int = 0
    failed: int = 0
    failed_during_fault: int = 0
    requests_during_fault: int = 0
    acknowledged: int = 0
    lost: int = 0
    converge_seconds: float | None = None  # from the heal to dispersion 100 % (None: never)
    dispersion: float = 0.0  # percent of object copies found on their primaries
    container_dispersion: float = 0.0
    sample_dispersion: dict = field(factory=dict)  # txstore-dispersion report's pct_found of its sample
    latency_ms: dict = field(factory=dict)  # p50 / p99 / max, during the fault and outside it
    notes: dict = field(factory=dict)
    problems: dict = field(factory=dict)  # object name -> why it could not be read back

    def line(self) -> str:
        converge = "never" if self.converge_seconds is None else f"{self.converge_seconds:.1f} s"
        return (f"{self.drill}: fault {self.fault_seconds:.0f} s, {self.requests} requests, {self.failed} failed"
                f" ({self.failed_during_fault} of {self.requests_during_fault} during the fault),"
                f" {self.acknowledged} writes acknowledged, {self.lost} lost, converged in {converge},"
                f" dispersion {self.dispersion:.1f} % objects / {self.container_dispersion:.1f} % containers"
                f" (txstore-dispersion report: {json.dumps(self.sample_dispersion)}),"
                f" latency {json.dumps(self.latency_ms)} {json.dumps(self.notes) if self.notes else ''}")


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": round(pick(0.5) * 1000), "p99": round(pick(0.99) * 1000), "max": round(ordered[-1] * 1000)}


@define
class Drill:
    """One drill's run: the cluster, the client's credentials and what the streams acknowledged."""

    cluster: NetnsCluster
    name: str
    storage_url: str = ""
    token: str = ""
    rows: list[dict] = field(factory=list)
    containers: list[str] = field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.storage_url, self.token = self.cluster.auth()
        # txstore-dispersion's own sample, placed before the fault, reported after it
        populated = self.cluster.dispersion_tool("populate")
        failures = [part.get("failures") for part in populated.values() if part and part.get("failures")]
        if failures:
            raise AssertionError(f"txstore-dispersion populate: {failures}")

    @property
    def account(self) -> str:
        return self.storage_url.rstrip("/").rsplit("/", 1)[1]

    def stream(self, container: str, seconds: float, **options: object):
        self.containers.append(container)
        return self.cluster.stream({"storage_url": self.storage_url, "token": self.token, "container": container,
                                    "prefix": f"{self.name}-{len(self.containers)}", "seconds": seconds, **options})

    def collect(self, stream: tuple) -> list[dict]:
        """Wait for a stream to end; its requests."""
        process, output = stream
        if process.wait(300) != 0:
            error = output.with_suffix(".stderr").read_text(errors="replace")
            raise AssertionError(f"stream exited with {process.returncode}: {error[-2000:]}")
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        self.rows += rows
        return rows

    def acknowledged(self) -> list[dict]:
        return [r for r in self.rows if r["op"] == "PUT" and r["ok"]]

    def container_of(self, row: dict) -> str:
        return self.containers[int(row["name"].rsplit("-", 2)[1]) - 1]

    def dispersion(self) -> dict:
        return self.cluster.client("dispersion", {
            "etc": str(self.cluster.etc), "account": self.account, "containers": self.containers,
            "objects": [[self.container_of(r), r["name"], r["md5"]] for r in self.acknowledged()]})

    def converge(self, healed: float, figures: Figures, timeout: float = CONVERGE_TIMEOUT) -> None:
        """Poll dispersion until every copy is in place; the time since ``healed`` (time.time())."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.dispersion()
            figures.dispersion = report["object"]["percent"]
            figures.container_dispersion = report["container"]["percent"]
            if figures.dispersion == 100.0 and figures.container_dispersion == 100.0:
                sample = self.cluster.dispersion_tool("report")
                figures.sample_dispersion = {kind: sample[kind]["pct_found"] for kind in ("container", "object")}
                if figures.sample_dispersion == {"container": 100.0, "object": 100.0}:
                    figures.converge_seconds = round(time.time() - healed, 1)
                    return
            if time.monotonic() > deadline:
                figures.notes["incomplete"] = report["object"]["incomplete"][:5] + report["container"]["incomplete"]
                return
            time.sleep(1.0)

    def read_back(self, figures: Figures) -> None:
        acked = self.acknowledged()
        answer = self.cluster.client("verify", {
            "storage_url": self.storage_url, "token": self.token,
            "objects": [[self.container_of(r), r["name"], r["size"]] for r in acked]})
        figures.acknowledged = len(acked)
        figures.problems = answer["problems"]
        figures.lost = len(answer["problems"])
        if figures.problems:
            figures.notes["logs_of_lost"] = self.log_lines(figures.problems)

    def log_lines(self, problems: dict[str, str], reads: int = 2, per_read: int = 12) -> list[str]:
        """What the servers logged of the first failed reads (their transaction ids), to see why."""
        trans_ids = [why.split()[-1] for why in problems.values() if why.split()[-1].startswith("tx")][:reads]
        lines = []
        for path in sorted((self.cluster.root / "log").glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if any(trans_id in line for trans_id in trans_ids):
                    lines.append(f"{path.stem}: {line[:300]}")
        return lines[:reads * per_read]

    def count(self, figures: Figures, began: float, ended: float) -> None:
        """Requests, failures and latencies overall and within the fault [began, ended]."""
        during = [r for r in self.rows if r["t1"] >= began and r["t0"] <= ended]
        outside = [r for r in self.rows if r["t1"] < began or r["t0"] > ended]
        figures.fault_seconds = round(ended - began, 1)
        figures.requests = len(self.rows)
        figures.failed = sum(not r["ok"] for r in self.rows)
        figures.requests_during_fault = len(during)
        figures.failed_during_fault = sum(not r["ok"] for r in during)
        figures.latency_ms = {"fault": _percentiles([r["t1"] - r["t0"] for r in during]),
                              "outside": _percentiles([r["t1"] - r["t0"] for r in outside])}
        slowest = max(self.rows, key=lambda r: r["t1"] - r["t0"], default=None)
        if slowest is not None:
            figures.notes["slowest"] = (f"{slowest['op']} {slowest['status'] or slowest['error']}"
                                        f" {slowest['t1'] - slowest['t0']:.1f} s at {slowest['t0'] - began:+.1f} s")
        errors = sorted({f"{r['op']} {r['status'] or r['error']}" for r in self.rows if not r["ok"]})
        if errors:
            figures.notes["errors"] = errors[:6]

    def run(self, *, before: float, fault: Callable[[], None], hold: float, heal: Callable[[], object],
            after: float, figures: Figures, **stream_options: object) -> float:
        """A stream of ``before + hold + after`` seconds with the fault held ``hold`` seconds; the heal time."""
        stream = self.stream(self.name, before + hold + after, **stream_options)
        time.sleep(before)
        began = time.time()
        fault()
        time.sleep(hold)
        healed_by = heal()
        healed = time.time()
        if healed_by:
            figures.notes["impairment"] = healed_by
        self.collect(stream)
        self.count(figures, began, healed)
        return healed

    def finish(self, figures: Figures, healed: float) -> Figures:
        self.converge(healed, figures)
        self.read_back(figures)
        return figures


def proxy_node_cut(cluster: NetnsCluster, hold: float = 10.0) -> Figures:
    """(a) The link between the proxy and host1 cut during a stream of writes (and reads)."""
    drill, figures = Drill(cluster, "cut-proxy-host1"), Figures("proxy-node link cut")
    healed = drill.run(before=3.0, fault=lambda: cluster.cut("proxy", "host1"), hold=hold,
                       heal=lambda: cluster.mend("proxy", "host1"), after=3.0, figures=figures, reads=0.3,
                       workers=4)
    return drill.finish(figures, healed)


def objects_on(drill: Drill, host: str) -> int:
    """How many of the drill's objects have a .data file on ``host`` (its files, read directly)."""
    cluster = drill.cluster
    hasher = load_cluster_config(cluster.etc / "txstore.conf").hasher
    wanted = {hasher.hash_path(drill.account, drill.container_of(r), r["name"]) for r in drill.acknowledged()}
    device = cluster.root / "srv" / host / cluster.by_name[host].device / "objects"
    return len(wanted & {path.parent.name for path in Path(device).glob("*/*/*/*.data")})


def share_of(drill: Drill, host: str) -> int:
    """How many of the acknowledged objects ``host`` is a primary of."""
    cluster = load_cluster_config(drill.cluster.etc / "txstore.conf")
    ring = RingSet.load(drill.cluster.etc, cluster.hasher, cluster.policies).object_ring(0)
    device = drill.cluster.by_name[host].device
    return sum(any(n.device_name == device for n in ring.get_nodes(drill.account, drill.container_of(r), r["name"])[1])
               for r in drill.acknowledged())


def replication_stats(cluster: NetnsCluster, host: str) -> dict:
    """The object replicator's last pass on ``host`` (its /recon/replication)."""
    answer = cluster.client("get", {"url": f"http://{cluster.by_name[host].address}:{NODE_PORT}/recon/replication"})
    return ((answer.get("json") or {}).get("object") or {})


def _passes_over(cluster: NetnsCluster, host: str, seen: dict, since: float, stop: threading.Event) -> None:
    """
    Poll ``host``'s object replicator until ``stop``, keeping (by end time) each pass that ended
    after ``since`` (its recent passes: a long pass is often followed at once by a short one).
    """
    while not stop.wait(0.5):
        stats = replication_stats(cluster, host)
        for done in stats.get("recent_passes") or [stats.get("last_pass") or {}]:
            if done.get("finished_at", 0.0) > since:
                seen[done["finished_at"]] = done


def replication_cut(cluster: NetnsCluster, hold: float = 12.0, rate: float | None = 20.0) -> Figures:
    """
    (b) host2 misses a stream of writes (its server stopped; ``rate`` writes a second at most, so
    that what replication must carry does not depend on how fast this machine answers); once it
    is back, the link between it and host1 is cut while the replicators are still filling it
    (replication is throttled in this drill's node configs), for longer than the replication
    node_timeout, then mended: the replicators' next passes must finish the job.
    """
    drill, figures = Drill(cluster, "cut-host1-host2"), Figures("node-node link cut during replication")
    # host2's server stopped (refusing, so the writes go to handoffs at once: a silent host
    # costs each PUT the proxy's node_timeout, see docs/many-hosts.rst)
    cluster.stop("host2")
    drill.collect(drill.stream("cut-host1-host2", 5.0, sizes=[65536, 131072, 262144], workers=4, rate=rate))
    cluster.start_server("host2")
    cluster.wait_healthy(["host2"])
    notes = figures.notes
    notes["host2_share"] = share_of(drill, "host2")
    deadline = time.monotonic() + 30.0
    while objects_on(drill, "host2") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    began = time.time()
    notes["host2_objects_at_cut"] = objects_on(drill, "host2")
    cluster.cut("host1", "host2")
    # host1's passes that ended after the cut began, watched while the drill goes on
    passes: dict[float, dict] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_passes_over, args=(cluster, "host1", passes, began, stop))
    watcher.start()
    try:
        time.sleep(hold)
        notes["host2_objects_at_mend"] = objects_on(drill, "host2")
        cluster.mend("host1", "host2")
        healed = time.time()
        drill.count(figures, began, healed)
        drill.finish(figures, healed)
        # the pass the cut stalled may still run (each of its sessions with host2 waits for its timeout)
        deadline = time.monotonic() + 90.0
        while not any(end > healed for end in list(passes)) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        watcher.join()
    notes["host1_passes_over_the_cut"] = [
        {k: p.get(k, 0) for k in ("duration", "sessions", "failures", "survey_failures")}
        for end, p in sorted(passes.items()) if end - p.get("duration", 0.0) < healed]
    notes["host2_objects_at_end"] = objects_on(drill, "host2")
    return figures


def host_partition(cluster: NetnsCluster, hold: float = 60.0, host: str = "host3", rate: float | None = 10.0) -> Figures:
    """
    (c) A whole host partitioned for ``hold`` seconds during writes (``rate`` requests a second
    at most, so that what must be repaired does not depend on how fast this machine is), then healed.
    """
    drill, figures = Drill(cluster, f"partition-{host}"), Figures(f"{host} partitioned")
    healed = drill.run(before=3.0, fault=lambda: cluster.partition(host), hold=hold,
                       heal=lambda: cluster.rejoin(host), after=3.0, figures=figures, reads=0.2, rate=rate)
    return drill.finish(figures, healed)


def region_impairment(cluster: NetnsCluster, hold: float = 20.0, delay: float = 0.2, loss: float = 0.05,
                      method: str = "auto") -> Figures:
    """(d) ``delay`` and ``loss`` on every packet into or out of region 2 during reads and writes."""
    drill, figures = Drill(cluster, "impair-region2"), Figures(f"region 2 at {delay * 1000:g} ms, {loss:.0%} loss")

    def fault() -> None:
        figures.notes["method"] = cluster.impair(2, delay, loss, method)

    healed = drill.run(before=3.0, fault=fault, hold=hold, heal=cluster.unimpair, after=3.0, figures=figures,
                       reads=0.5, workers=4)
    return drill.finish(figures, healed)
