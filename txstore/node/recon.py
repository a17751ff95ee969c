# -*- test-case-name: txstore.test.integration.test_node_integration -*-
"""
``GET /recon/<what>``: what operators (and ``txstore-recon``) ask a storage node about its
health, as JSON.

diskusage, load, mem, async, quarantined, ringmd5, unmounted, version, time, and the last pass
of each daemon (``/recon/daemons``, or one by name: ``/recon/container-updater``,
``/recon/object-updater``, ``/recon/object-auditor``, ``/recon/object-expirer``, ...). Everything
that touches the disk runs in a thread; nothing here writes. Families group them as Swift's
recon does: ``/recon/replication`` (``object``, ``container``, ``account``), ``/recon/auditor``,
``/recon/updater``, ``/recon/expirer``, ``/recon/reaper``, ``/recon/reconstruction``
(``object``: the EC reconstructor, on a node with an erasure-coded policy).
``/recon/bandwidth``: each device's recent bandwidth, jobs, streams and load figure, and the
tenants' bytes/s, caps and throttling (`txstore.qos.meter`; read by the tenant-cap controller).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from twisted.web.http import Request

from txstore import __version__
from txstore.storage.diskfile import QUARANTINE_DIR
from txstore.storage.http_support import NodeResponse, plain_text
from txstore.storage.context import StorageContext

QUARANTINE_KINDS = ("objects", "containers", "accounts")
JSON = b"application/json; charset=utf-8"


#: ``/recon/<family>``: every daemon whose name ends so, keyed by the rest of its name.
FAMILIES = {
    "replication": "-replicator", "auditor": "-auditor", "updater": "-updater", "expirer": "-expirer",
    "reaper": "-reaper", "reconstruction": "-reconstructor",
}

def disk_usage(context: StorageContext) -> list[dict[str, Any]]:
    entries = []
    if not context.devices.is_dir():
        return entries
    for entry in sorted(context.devices.iterdir()):
        mounted = context.diskfiles.device_path(entry.name) is not None
        record: dict[str, Any] = {"device": entry.name, "mounted": mounted}
        if mounted:
            stats = os.statvfs(entry)
            size = stats.f_blocks * stats.f_frsize
            avail = stats.f_bavail * stats.f_frsize
            record.update(size=size, avail=avail, used=size - stats.f_bfree * stats.f_frsize)
        entries.append(record)
    return entries


def memory() -> dict[str, int]:
    values = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            number = rest.split()
            if number and number[0].isdigit():
                values[name] = int(number[0]) * 1024
    except OSError:
        pass
    return values


def count_async(context: StorageContext) -> int:
    total = 0
    for device, _path in context.mounted_devices():
        total += len(context.diskfiles.list_async_pendings(device))
    return total


def count_quarantined(context: StorageContext) -> dict[str, int]:
    counts = dict.fromkeys(QUARANTINE_KINDS, 0)
    for _device, path in context.mounted_devices():
        for kind in QUARANTINE_KINDS:
            directory = path / QUARANTINE_DIR / kind
            if directory.is_dir():
                counts[kind] += sum(1 for _ in directory.iterdir())
    return counts


def device_figures(context: StorageContext) -> list[dict[str, Any]]:
    """(blocking) Each device's usage, queued async pendings and quarantines: for the metrics."""
    devices = disk_usage(context)
    for record in devices:
        if not record["mounted"]:
            continue
        device = record["device"]
        record["async_pending"] = len(context.diskfiles.list_async_pendings(device))
        path = context.devices / device / QUARANTINE_DIR
        record["quarantined"] = {
            kind: sum(1 for _ in (path / kind).iterdir()) if (path / kind).is_dir() else 0 for kind in QUARANTINE_KINDS
        }
    return devices


def ring_md5s(ring_dir: Path) -> dict[str, str]:
    sums = {}
    for ring in sorted(ring_dir.glob("*.ring.gz")):
        sums[str(ring)] = hashlib.md5(ring.read_bytes(), usedforsecurity=False).hexdigest()
    return sums


def unmounted(context: StorageContext) -> list[dict[str, Any]]:
    return [d for d in disk_usage(context) if not d["mounted"]]


class Recon:
    def __init__(self, context: StorageContext, ring_dir: Path, daemons: dict[str, Any] | None = None,
                 meter: Any = None) -> None:
        self._context = context
        self._ring_dir = ring_dir
        self.daemons: dict[str, Any] = daemons if daemons is not None else {}
        self.meter = meter  # a txstore.qos.meter.BandwidthMeter (None: nothing measured)

    async def handle(self, request: Request) -> NodeResponse:
        if request.method not in (b"GET", b"HEAD"):
            return plain_text(405, "Method Not Allowed")
        what = request.path[len(b"/recon/"):].decode("ascii", "replace")
        run = self._context.runner.run
        context = self._context
        if what == "diskusage":
            value: Any = await run("recon", disk_usage, context)
        elif what == "load":
            one, five, fifteen = os.getloadavg()
            value = {"1m": one, "5m": five, "15m": fifteen}
        elif what == "mem":
            value = await run("recon", memory)
        elif what == "async":
            value = {"async_pending": await run("recon", count_async, context)}
        elif what == "quarantined":
            value = await run("recon", count_quarantined, context)
        elif what == "ringmd5":
            value = await run("recon", ring_md5s, self._ring_dir)
        elif what == "unmounted":
            value = await run("recon", unmounted, context)
        elif what == "version":
            value = {"version": __version__}
        elif what == "time":
            value = {"time": time.time()}
        elif what == "bandwidth":
            value = self.meter.report() if self.meter is not None else {"interval": 0, "devices": {}, "tenants": {}}
        elif what == "daemons":
            value = {name: self._daemon(d) for name, d in self.daemons.items()}
        elif what in self.daemons:
            value = self._daemon(self.daemons[what])
        elif what in FAMILIES:
            suffix = FAMILIES[what]
            value = {name[: -len(suffix)]: self._daemon(d) for name, d in self.daemons.items() if name.endswith(suffix)}
        else:
            return plain_text(404, f"Unknown recon check {what!r}")
        body = json.dumps(value, sort_keys=True).encode()
        return NodeResponse(200, {b"Content-Type": JSON, b"Content-Length": b"%d" % len(body)}, body)

    @staticmethod
    def _daemon(daemon: Any) -> dict[str, Any]:
        return {"interval": daemon.interval, "passes": daemon.passes, "last_pass": daemon.last_pass,
                "recent_passes": list(getattr(daemon, "recent_passes", ()))}
