"""
What the servers spent during one workload: CPU seconds and peak RSS, read from /proc.

A server is a process group: the pid the launcher recorded is the group's leader (txstore-aio
and the Swift anchor's start.sh both start each server in its own session), and every process
in that group counts, so Swift's forked proxy workers are included. CPU is utime + stime
(all threads, all cores) plus cutime + cstime (children that already exited and were reaped);
its growth between two snapshots is what the servers used, whatever else runs on the machine.

Peak RSS: before a workload, each process's high-water mark is reset (``echo 5 >
/proc/PID/clear_refs``, Linux 4.0+, needs the same user or root); afterwards VmHWM is the
peak *during* the workload. If the reset is refused the peak is the one since the process
started, and `Servers.peaks_reset` says so. A role's peak is the sum of its processes' peaks
(an upper bound: they need not peak at the same moment).

Roles: "proxy" (names starting with ``proxy``, and Swift's memcached, which holds tempauth's
tokens and the proxy's info cache, so it is part of the proxy's cost), "nodes" (everything else).

Standard library only: this also runs from the anchor's machine setup.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("proxy", "nodes")
_TICK = os.sysconf("SC_CLK_TCK")


def role_of(name: str) -> str:
    return "proxy" if name.startswith("proxy") or name.startswith("memcache") else "nodes"


def pid_groups_from_run_dir(run: Path) -> dict[str, int]:
    """txstore-aio: ``<root>/run/NAME.pid``, one pid each (each its own process group)."""
    groups = {}
    for pid_file in sorted(run.glob("*.pid")):
        try:
            groups[pid_file.stem] = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
    return groups


def pid_groups_from_pidfile(path: Path) -> dict[str, int]:
    """The anchor's format (BENCH_PIDFILE): lines ``name pid``, each pid a process group."""
    groups = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            groups[parts[0]] = int(parts[1])
    return groups


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses; the fields follow the last ")"
    return text.rsplit(")", 1)[1].split()


def cpu_seconds_of(fields: list[str]) -> float:
    # after the name: state(0) ppid(1) pgrp(2) … utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(value) for value in fields[11:15]) / _TICK


def cpu_seconds_of_pids(pids: list[int]) -> float:
    """CPU of exactly these processes (the load generator's own, for instance)."""
    total = 0.0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += cpu_seconds_of(fields)
    return total


def peak_rss_mib(pid: int | str) -> float:
    """VmHWM of a process: the most resident memory it has had (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Usage:
    """Per role: CPU seconds used between two snapshots, and peak RSS in MiB."""

    cpu: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, float] = field(default_factory=dict)

    @property
    def total_cpu(self) -> float:
        return sum(self.cpu.values())


@dataclass
class Servers:
    """The server processes of one cluster, by name → process-group id."""

    groups: dict[str, int]
    peaks_reset: bool = True

    def members(self) -> dict[str, list[str]]:
        """Role → pids (as strings) of every live process in one of our process groups."""
        by_group = {str(pgid): role_of(name) for name, pgid in self.groups.items()}
        found: dict[str, list[str]] = {role: [] for role in ROLES}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = _stat_fields(entry)
            if fields is not None and fields[2] in by_group:
                found[by_group[fields[2]]].append(entry)
        return found

    def cpu(self) -> dict[str, float]:
        totals = {role: 0.0 for role in ROLES}
        for role, pids in self.members().items():
            for pid in pids:
                fields = _stat_fields(pid)
                if fields is not None:
                    totals[role] += cpu_seconds_of(fields)
        return totals

    def reset_peaks(self) -> None:
        for pids in self.members().values():
            for pid in pids:
                try:
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
                except OSError:
                    self.peaks_reset = False

    def peak_rss(self) -> dict[str, float]:
        return {role: sum(peak_rss_mib(pid) for pid in pids) for role, pids in self.members().items()}

    def alive(self) -> list[str]:
        """Names whose group leader is gone (a crash during a run must not go unnoticed)."""
        return [name for name, pgid in self.groups.items() if _stat_fields(pgid) is not None]


class Meter:
    """Snapshot before a workload, `stop` after it: the `Usage` of the servers in between."""

    def __init__(self, servers: Servers | None) -> None:
        self.servers = servers
        self._before: dict[str, float] = {}

    def start(self) -> None:
        if self.servers is not None:
            self.servers.reset_peaks()
            self._before = self.servers.cpu()

    def stop(self) -> Usage | None:
        if self.servers is None:
            return None
        after = self.servers.cpu()
        return Usage(
            cpu={role: after[role] - self._before.get(role, 0.0) for role in ROLES},
            peak_rss=self.servers.peak_rss(),
        )


@contextmanager
def paused(groups: list[int]) -> Iterator[list[int]]:
    """SIGSTOP these process groups for the duration (yields those stopped); always SIGCONT them."""
    stopped = []
    try:
        for group in groups:
            try:
                os.killpg(group, signal.SIGSTOP)
                stopped.append(group)
            except OSError:
                pass
        yield stopped
    finally:
        for group in stopped:
            try:
                os.killpg(group, signal.SIGCONT)
            except OSError:
                pass
