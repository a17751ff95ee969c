# -*- test-case-name: txstore.test.integration.test_aio -*-
"""
``txstore-aio``: a whole cluster on 127.0.0.1 with one command.

It prepares the root (configs, rings, devices; see `txstore.aio.layout`), starts the proxy and
the object nodes as separate ``twistd -n`` processes (each in its own session, so a Ctrl-C
reaches only the launcher, which then stops them in order), waits until every one answers
``/healthcheck``, and prints how to reach the cluster. In the foreground it supervises them
until Ctrl-C or SIGTERM; ``--background`` leaves them running and ``--stop`` stops them by their
pid files. A plain synchronous program: it runs no reactor, its children do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from txstore.common import config
from txstore.aio.layout import DAEMON_SETS, DEFAULT_USERS, HOST, Layout, LayoutError, Topology, prepare
from txstore.qos.classes import valid_name

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
MEMCACHED = "memcached"  # its process name, pid file (run/memcached.pid) and log


def memcached_binary() -> str | None:
    """Debian's memcached (``apt-get install memcached``), if installed."""
    return shutil.which("memcached") or ("/usr/bin/memcached" if os.access("/usr/bin/memcached", os.X_OK) else None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class LaunchError(Exception):
    """The cluster could not be started; the message says why."""


def twistd_command() -> list[str]:
    """``twistd`` of this Python environment (the script beside the interpreter, if any)."""
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())"]


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pids(layout: Layout) -> dict[str, int]:
    """The processes of this root that are running now, by name, from their pid files."""
    found = {}
    for pid_file in sorted(layout.run.glob("*.pid")):
        pid = read_pid(pid_file)
        if pid is not None and alive(pid):
            found[pid_file.stem] = pid
    return found


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthcheck", timeout=1.0) as response:
            return response.status == 200 and response.read().strip() == b"OK"
    except (OSError, urllib.error.URLError):
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def stop_pids(pids: dict[str, int], timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM each process, wait for all, SIGKILL what is left; returns the names killed."""
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    waiting = dict(pids)
    while waiting and time.monotonic() < deadline:
        for name, pid in list(waiting.items()):
            if not alive(pid):
                del waiting[name]
        time.sleep(0.05)
    for pid in waiting.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return sorted(waiting)


class Cluster:
    """The child processes of one foreground or background start."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.children: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        layout = self.layout
        busy = [f"{name} {layout.port_of(name)}" for name in layout.process_names if not port_free(layout.port_of(name))]
        if busy:
            raise LaunchError(
                f"port in use on {HOST}: {', '.join(busy)} (choose others with --proxy-port / --base-port)"
            )
        if layout.memcache_port is not None:
            self._start_memcached()
        for name in layout.process_names:
            plugin = "proxy" if name.startswith("proxy") else "objectnode"
            command = twistd_command() + [
                "--nodaemon",
                f"--pidfile={layout.pid_file(name)}",
                f"--logfile={layout.log_file(name)}",
                plugin,
                f"--config={layout.config_of(name)}",
            ]
            with open(layout.log / f"{name}.stderr", "ab") as stderr:
                self.children[name] = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                )
        self._wait_until_healthy()

    def _start_memcached(self) -> None:
        """The proxies' memcached, first: they connect to it from their first request."""
        layout = self.layout
        binary = memcached_binary()
        if binary is None:
            raise LaunchError("memcached is not installed (apt-get install memcached)")
        as_root = ["-u", "root"] if os.geteuid() == 0 else []  # memcached will not run as root unasked
        with open(layout.log_file(MEMCACHED), "ab") as log:
            child = subprocess.Popen(
                [binary, "-l", HOST, "-p", str(layout.memcache_port), "-U", "0", "-m", "64", *as_root],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        self.children[MEMCACHED] = child
        layout.pid_file(MEMCACHED).write_text(f"{child.pid}\n")  # for --stop; it writes none in the foreground
        deadline = time.monotonic() + START_TIMEOUT
        while port_free(layout.memcache_port):
            if child.poll() is not None or time.monotonic() > deadline:
                raise LaunchError(f"memcached did not start on port {layout.memcache_port}:\n"
                                  f"{log_tail(layout.log_file(MEMCACHED))}")
            time.sleep(0.05)

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(self.layout.process_names)
        while pending:
            dead = self.dead()
            if dead:
                raise LaunchError(self.death_report(dead))
            pending = [name for name in pending if not healthy(self.layout.port_of(name))]
            if pending and time.monotonic() > deadline:
                raise LaunchError(
                    f"not healthy after {START_TIMEOUT:.0f}s: {', '.join(pending)}\n"
                    + "\n".join(f"  {n} log:\n{log_tail(self.layout.log_file(n))}" for n in pending)
                )
            if pending:
                time.sleep(0.1)

    def dead(self) -> list[str]:
        """Children that exited, but memcached: the proxies go on without it (slower), as a drill may want."""
        return [name for name, child in self.children.items() if name != MEMCACHED and child.poll() is not None]

    def death_report(self, names: list[str]) -> str:
        parts = []
        for name in names:
            code = self.children[name].returncode
            stderr = self.layout.log / f"{name}.stderr"
            parts.append(
                f"{name} exited with status {code}\n  log:\n{log_tail(self.layout.log_file(name))}"
                f"\n  stderr:\n{log_tail(stderr)}"
            )
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM every child, reap each (a zombie still answers kill(pid, 0)), SIGKILL laggards."""
        running = [child for child in self.children.values() if child.poll() is None]
        for child in running:
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in running:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if MEMCACHED in self.children:
            self.layout.pid_file(MEMCACHED).unlink(missing_ok=True)


def _shared_line(layout: Layout) -> str:
    """How the proxies agree on tokens and cached info, for the banner."""
    if layout.memcache_port is not None:
        return (f"  memcached: {HOST}:{layout.memcache_port}  (the proxies' tokens and account/container info;"
                f" log {layout.log_file(MEMCACHED)})\n")
    if layout.proxies > 1:
        return ("  memcached is not installed (apt-get install memcached): the proxies sign their tokens"
                " (token_store = signed) and each caches info in its own memory\n")
    return ""


def banner(layout: Layout, background: bool) -> str:
    proxy = f"http://{HOST}:{layout.proxy_port}"
    others = "".join(f"  {name}:   http://{HOST}:{layout.port_of(name)}\n" for name in layout.proxy_names[1:])
    users = "\n".join(
        f"    {account}:{user} / {key}"
        + ("  (reseller admin)" if ".reseller_admin" in groups else f"  (admin of AUTH_{account})" if ".admin" in groups else f"  (user in AUTH_{account}, not admin)")
        for account, user, key, groups in DEFAULT_USERS
    )
    nodes = "\n".join(
        f"    node{n}: {HOST}:{layout.topology.node_port(n)}  device d{n}  config {layout.node_config(n)}"
        for n in range(1, layout.topology.nodes + 1)
    )
    stop = (
        f"txstore-aio --stop --root {layout.root}"
        if background
        else f"Ctrl-C here (or txstore-aio --stop --root {layout.root})"
    )
    return (
        f"txstore all-in-one is running (root {layout.root})\n"
        f"  proxy:    {proxy}  (healthcheck {proxy}/healthcheck)\n"
        + others
        + _shared_line(layout)
        + f"  auth URL: {proxy}/auth/v1.0" + (" (or any proxy's)\n" if others else "\n")
        + f"  users:\n{users}\n"
        f"  nodes ({layout.topology.replicas} replicas, part power {layout.topology.part_power}):\n{nodes}\n"
        f"  logs:     {layout.log}/\n"
        f"Try it:  {_swift_command()} -A {proxy}/auth/v1.0 -U test:tester -K testing stat\n"
        f"Stop:    {stop}\n"
    )


def _swift_command() -> str:
    """``swift`` if it is on PATH, else the one installed beside this Python (the venv's)."""
    import shutil

    beside = Path(sys.executable).with_name("swift")
    if shutil.which("swift") or not beside.exists():
        return "swift"
    return str(beside)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="txstore-aio",
        description="Start a whole txstore cluster (one proxy, several object nodes) on 127.0.0.1.",
    )
    parser.add_argument("--root", type=Path, default=Path("aio-data"), help="data root (default ./aio-data)")
    parser.add_argument("--proxy-port", type=int, default=8080, help="proxy port (default 8080)")
    parser.add_argument("--nodes", type=int, default=4, help="object nodes (default 4)")
    parser.add_argument("--replicas", type=int, default=3, help="replicas (default 3)")
    parser.add_argument("--part-power", type=int, default=10, help="ring part power (default 10)")
    parser.add_argument(
        "--base-port", type=int, default=6200, help="node N listens on base+10*N (default 6200: 6210, 6220, …)"
    )
    parser.add_argument("--seed", type=int, default=None, help="ring rebalance seed (for reproducible rings)")
    parser.add_argument(
        "--daemons", choices=DAEMON_SETS, default="all",
        help="background daemons on the nodes: all (default), or only the container and object"
        " updaters (what the Swift anchor runs; for benchmarks)",
    )
    parser.add_argument(
        "--max-file-size", type=_size, default=None,
        help="the largest object the proxy and nodes accept (like 2MiB; default 5 GiB + 2), to try"
        " large objects on a small disk",
    )
    parser.add_argument(
        "--workers", type=int, default=1,
        help="proxy processes on the proxy's port (default 1; 2 uses both cores of a laptop)",
    )
    parser.add_argument(
        "--proxies", type=int, default=1,
        help="proxies, each on its own port from --proxy-port up (default 1); more share tokens and"
        " cached info through a memcached started with them (Debian's; signed tokens without it)",
    )
    parser.add_argument(
        "--io-class", dest="io_classes", action="append", type=_io_class, default=[], metavar="NAME=WEIGHT[,...]",
        help="an IO class for txstore.conf (docs/qos.rst), repeatable: NAME=WEIGHT, then optionally"
        " ,stream_rate=SIZE ,tenant_rate=SIZE ,default (like gold=4 bronze=1,default)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--background", action="store_true", help="start, print, and leave the cluster running")
    mode.add_argument("--stop", action="store_true", help="stop the cluster running from --root")
    args = parser.parse_args(argv)
    if not 1 <= args.proxy_port <= 65535:
        parser.error("--proxy-port must be between 1 and 65535")
    if args.nodes < 1 or args.replicas < 1:
        parser.error("--nodes and --replicas must be at least 1")
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    if not 1 <= args.proxies <= 9:
        parser.error("--proxies must be between 1 and 9")
    if args.proxy_port + args.proxies - 1 > 65535:
        parser.error("--proxy-port leaves no room for the proxies' ports")
    if not 1 <= args.part_power <= 24:
        parser.error("--part-power must be between 1 and 24")
    if not 1 <= args.base_port <= 65535 - 10 * args.nodes:
        parser.error("--base-port leaves no room for the nodes' ports")
    return args


def _io_class(raw: str) -> tuple[str, dict[str, str]]:
    """``gold=4,tenant_rate=60MB,default`` -> ("gold", {"weight": "4", "tenant_rate": "60MB", "default": "yes"})."""
    head, *rest = raw.split(",")
    name, equals, weight = head.partition("=")
    if not equals or not valid_name(name.strip()):
        raise argparse.ArgumentTypeError(f"{raw!r}: NAME=WEIGHT first (letters, digits, - and _ in the name)")
    options = {"weight": weight.strip()}
    for part in rest:
        option, equals, value = part.partition("=")
        option = option.strip()
        if option == "default" and not equals:
            options["default"] = "yes"
        elif option in ("stream_rate", "tenant_rate") and equals:
            options[option] = value.strip()
        else:
            raise argparse.ArgumentTypeError(f"{raw!r}: after the weight, stream_rate=, tenant_rate= or default")
    return name.strip(), options


def _size(raw: str) -> int:
    try:
        return config.size(raw, Path("."))
    except config.BadValue as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def stop_command(root: Path) -> int:
    layout = Layout(root.absolute(), Topology(), 0)
    pids = running_pids(layout)
    if not pids:
        print(f"nothing is running from {layout.root}")
        return 0
    killed = stop_pids(pids)
    layout.pid_file(MEMCACHED).unlink(missing_ok=True)
    print(f"stopped {', '.join(sorted(pids))}" + (f" (killed: {', '.join(killed)})" if killed else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stop:
        return stop_command(args.root)
    topology = Topology(args.nodes, args.replicas, args.part_power, args.base_port)
    memcache_port = free_port() if args.proxies > 1 and memcached_binary() is not None else None
    try:
        layout = prepare(args.root, topology, args.proxy_port, seed=args.seed, daemons=args.daemons,
                         max_file_size=args.max_file_size, proxy_workers=args.workers,
                         io_classes=dict(args.io_classes), proxies=args.proxies, memcache_port=memcache_port)
    except (LayoutError, OSError) as err:
        print(f"txstore-aio: {err}", file=sys.stderr)
        return 2
    already = running_pids(layout)
    if already:
        print(
            f"txstore-aio: already running from {layout.root}: "
            + ", ".join(f"{n} (pid {p})" for n, p in sorted(already.items()))
            + f"\n  stop it with: txstore-aio --stop --root {layout.root}",
            file=sys.stderr,
        )
        return 2
    cluster = Cluster(layout)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            cluster.start()
        except LaunchError as err:
            print(f"txstore-aio: {err}", file=sys.stderr)
            cluster.stop()
            return 1
        if stopping:
            cluster.stop()
            return 0
        print(banner(layout, args.background), flush=True)
        if args.background:
            return 0
        while not stopping:
            dead = cluster.dead()
            if dead:
                print(f"txstore-aio: {cluster.death_report(dead)}\nstopping the others", file=sys.stderr)
                cluster.stop()
                return 1
            time.sleep(0.2)
        print("txstore-aio: stopping", flush=True)
        cluster.stop()
        print("txstore-aio: stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
