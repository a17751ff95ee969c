# -*- test-case-name: txstore.test.integration.test_netns_drills -*-
"""
A cluster of hosts on one machine: Linux network namespaces, and faults between them.

Every host is a namespace with one address (``10.77.<region>.<n>/24``) running one object node;
the proxy and the client have namespaces of their own in region 1's subnet. Each region's
hosts hang on a bridge of that region, and both bridges live in a namespace of their own; a
router namespace joins the two subnets. Nothing is added to the root namespace: the test
process reaches the cluster only by running programs inside the client namespace
(``ip netns exec``), and the nodes' files under ``root`` (plain directories).

Faults, all undone by `NetnsCluster.heal_all` and by the teardown:

- `cut` (a link between two hosts, both ways, silent as a pulled cable): on one subnet each
  side's neighbour entry for the other is pinned to a MAC address nobody has (the bridge
  floods those frames and every port drops them); across the router, ``ip rule ... blackhole``
  there drops the forwarded packets without an ICMP answer.
- `partition` (a whole host): its port on the bridge goes down.
- `impair` (latency and loss on one region's links): ``tc netem`` on the router's interfaces
  where the kernel has netem, else the packets crossing into or out of the region are routed
  through a TUN device to `txstore.test.tun_delay`, which holds and drops them in userspace.

Names start with ``h2ns-<pid>-``: `remove_leftovers` clears what a crashed run of another
process left (namespaces, their processes, ``/tmp/h2ns-*`` roots) before a new cluster starts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from attrs import field, frozen

from txstore.aio.launcher import alive
from txstore.ring.builder import RingBuilder

PREFIX = "h2ns"
SUBNET = "10.77"
NODE_PORT = 6200  # inside each host's namespace; the replication listener is the next port
PROXY_PORT = 8880
NOWHERE_MAC = "02:77:00:00:00:00"  # a pinned neighbour entry to this address cuts a link
TUN_NAME = "h2tun"
TUN_TABLES = (100, 101)  # policy routing tables of the TUN path, in the router
STOP_TIMEOUT = 10.0
RING_NAMES = ("account", "container", "object")
USER = ("test", "tester", "testing")  # account, user, key (tempauth)


class NetnsError(Exception):
    """A namespace command failed; the message holds the command and its stderr."""


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip`` (from the root namespace); raise `NetnsError` with its stderr on failure."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def unusable_reason() -> str | None:
    """Why this machine cannot build a namespace cluster (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    name = f"{PREFIX}-{os.getpid()}-probe"
    try:
        ip("netns", "add", name)
        ip("-n", name, "link", "add", "probe0", "type", "bridge")
    except (NetnsError, OSError, subprocess.SubprocessError) as err:
        return f"ip netns does not work here: {err}"
    finally:
        ip("netns", "del", name, check=False)
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None


def netem_available() -> bool:
    """Whether ``tc qdisc ... netem`` works (the kernel has sch_netem), tried in a scratch namespace."""
    if shutil.which("tc") is None:
        return False
    name = f"{PREFIX}-{os.getpid()}-netem"
    try:
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")
        done = subprocess.run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                               "delay", "1ms"], capture_output=True, timeout=30)
        return done.returncode == 0
    except NetnsError:
        return False
    finally:
        ip("netns", "del", name, check=False)


def remove_leftovers() -> list[str]:
    """
    Namespaces and roots of earlier runs whose process is gone (a crash skipped their
    teardown): their processes are killed by pid, the namespaces deleted. Returns their names.
    """
    removed = []
    pattern = re.compile(rf"^{PREFIX}-(\d+)-\S+")
    for line in ip("netns", "list", check=False).splitlines():
        match = pattern.match(line)
        if not match or alive(int(match.group(1))):
            continue
        name = match.group(0)
        for pid in ip("netns", "pids", name, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        ip("netns", "del", name, check=False)
        removed.append(name)
    for path in Path("/tmp").glob(f"{PREFIX}-*"):
        match = re.match(rf"^{PREFIX}-(\d+)-", path.name)
        if match and not alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


@frozen
class Host:
    """One namespace of the cluster, with its place in the network."""

    name: str  # host1 … hostN, proxy, client
    region: int
    zone: int
    address: str

    @property
    def device(self) -> str:
        return "d" + self.name[4:]


@frozen
class Spec:
    """What to build: hosts per region (one zone each), the rings, how often daemons run."""

    regions: tuple[int, ...] = (2, 2)
    replicas: int = 3
    part_power: int = 6
    interval: float = 2.0  # replicators' and updaters' passes, seconds
    # extra node options by section, e.g. {"object-replicator": {"bytes_per_second": "1048576"}}
    node_options: Mapping[str, Mapping[str, str]] = field(factory=dict)
    seed: int = 1

    def hosts(self) -> list[Host]:
        hosts, number = [], 0
        for region, count in enumerate(self.regions, 1):
            for zone in range(1, count + 1):
                number += 1
                hosts.append(Host(f"host{number}", region, zone, f"{SUBNET}.{region}.{number}"))
        return hosts


def router_address(region: int) -> str:
    return f"{SUBNET}.{region}.254"


PROXY = Host("proxy", 1, 0, f"{SUBNET}.1.100")
CLIENT = Host("client", 1, 0, f"{SUBNET}.1.200")


class NetnsCluster:
    """
    One cluster: `build` the network, `start` the processes, fault it, `teardown` everything.
    Synchronous on purpose: it drives ``ip`` and child processes and runs no reactor.
    """

    def __init__(self, spec: Spec, tag: str | None = None) -> None:
        self.spec = spec
        self.tag = tag or f"{PREFIX}-{os.getpid()}-{int(time.time() * 1000) % 10**7}"
        self.root = Path("/tmp") / self.tag
        self.hosts = spec.hosts()
        self.by_name = {h.name: h for h in [*self.hosts, PROXY, CLIENT]}
        self.namespaces: list[str] = []
        self.processes: dict[str, subprocess.Popen] = {}
        self.cuts: set[tuple[str, str]] = set()
        self.partitioned: set[str] = set()
        self.impairment: tuple[str, object] | None = None  # ("netem", region) or ("tun", process)

    # --- names and paths ------------------------------------------------------------------

    def ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    def log(self, name: str) -> Path:
        return self.root / "log" / f"{name}.log"

    @property
    def proxy_url(self) -> str:
        return f"http://{PROXY.address}:{PROXY_PORT}"

    def region_subnet(self, region: int) -> str:
        return f"{SUBNET}.{region}.0/24"

    # --- the network ----------------------------------------------------------------------

    def _add_ns(self, name: str) -> str:
        full = self.ns(name)
        ip("netns", "add", full)
        self.namespaces.append(full)
        ip("-n", full, "link", "set", "lo", "up")
        return full

    def _sysctl(self, name: str, *settings: str) -> None:
        done = subprocess.run(["ip", "netns", "exec", self.ns(name), "sysctl", "-qw", *settings],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise NetnsError(f"sysctl {settings} in {name}: {done.stderr.strip()}")

    def _plug(self, host: Host, region: int, port: str, inside: str, address: str) -> None:
        """A veth from the bridge namespace's ``port`` on region's bridge to ``inside`` in host's namespace."""
        bridges = self.ns("bridges")
        ip("-n", bridges, "link", "add", port, "type", "veth", "peer", "name", inside, "netns", self.ns(host.name))
        ip("-n", bridges, "link", "set", port, "master", f"br{region}", "up")
        ip("-n", self.ns(host.name), "addr", "add", f"{address}/24", "dev", inside)
        ip("-n", self.ns(host.name), "link", "set", inside, "up")

    def build(self) -> None:
        """The namespaces, bridges, veths, addresses and routes, and the root directory."""
        remove_leftovers()
        for directory in ("etc", "log", "run"):
            (self.root / directory).mkdir(parents=True, exist_ok=True)
        bridges = self._add_ns("bridges")
        regions = range(1, len(self.spec.regions) + 1)
        for region in regions:
            ip("-n", bridges, "link", "add", f"br{region}", "type", "bridge")
            ip("-n", bridges, "link", "set", f"br{region}", "up")
        self._add_ns("router")
        self._sysctl("router", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                     "net.ipv4.conf.default.rp_filter=0")
        router = Host("router", 0, 0, "")
        for region in regions:
            self._plug(router, region, f"rt{region}", f"rt{region}", router_address(region))
        for host in [*self.hosts, PROXY, CLIENT]:
            self._add_ns(host.name)
            self._plug(host, host.region, host.name, "eth0", host.address)
            ip("-n", self.ns(host.name), "route", "add", "default", "via", router_address(host.region))

    # --- configs and rings ------------------------------------------------------------------

    def write_configs(self) -> None:
        (self.etc / "txstore.conf").write_text(
            "[txstore-hash]\nhash_path_prefix =\n"
            f"hash_path_suffix = {self.tag}\n\n"
            "[storage-policy:0]\nname = gold\ndefault = yes\npolicy_type = replication\n"
        )
        for host in self.hosts:
            (self.root / "srv" / host.name / host.device).mkdir(parents=True, exist_ok=True)
            (self.etc / f"{host.name}.conf").write_text(self._node_config(host))
        account, user, key = USER
        (self.etc / "proxy.conf").write_text(
            "[proxy]\n"
            f"bind_ip = {PROXY.address}\nbind_port = {PROXY_PORT}\n"
            "txstore_conf = txstore.conf\nring_dir = .\n"
            # ring order: the drills compare runs, and the load view would move reads by itself
            "sorting_method = ring\n\n"
            "[filter:tempauth]\nuse = egg:txstore#tempauth\n"
            f"user_{account}_{user} = {key} .admin\n"
        )
        self._build_rings()

    def _node_config(self, host: Host) -> str:
        interval = f"interval = {self.spec.interval:g}\n"
        sections: dict[str, str] = {
            "objectnode": (
                f"bind_ip = {host.address}\nbind_port = {NODE_PORT}\n"
                "txstore_conf = txstore.conf\nring_dir = .\n"
                f"devices = {self.root / 'srv' / host.name}\n"
                "mount_check = false\ndisable_fallocate = true\n"
            ),
            "replication": f"bind_ip = {host.address}\nbind_port = {NODE_PORT + 1}\nnode_timeout = 10\n",
            "object-replicator": interval,
            "container-replicator": interval,
            "account-replicator": interval,
            "object-updater": interval,
            "container-updater": interval,
        }
        for name in ("object-auditor", "container-auditor", "account-auditor", "object-reconstructor",
                     "object-expirer", "account-reaper"):
            sections[name] = "enabled = false\n"
        for name, options in self.spec.node_options.items():
            sections[name] = sections.get(name, "") + "".join(f"{k} = {v}\n" for k, v in options.items())
        return f"# {host.name} of namespace cluster {self.tag}\n" + "".join(
            f"[{name}]\n{body}\n" for name, body in sections.items())

    def _build_rings(self) -> None:
        for name in RING_NAMES:
            builder = RingBuilder(self.spec.part_power, self.spec.replicas, 1)
            for host in self.hosts:
                builder.add_dev({"region": host.region, "zone": host.zone, "ip": host.address, "port": NODE_PORT,
                                 "replication_ip": host.address, "replication_port": NODE_PORT + 1,
                                 "device": host.device, "weight": 100.0})
            builder.rebalance(seed=self.spec.seed)
            builder.save(self.etc / f"{name}.builder")
            builder.get_ring().save(self.etc / f"{name}.ring.gz")

    # --- processes --------------------------------------------------------------------------

    def _spawn(self, key: str, namespace: str, command: list[str], **kwargs) -> subprocess.Popen:
        """``command`` inside ``namespace`` (``ip netns exec`` execs it: the pid is the program's)."""
        process = subprocess.Popen(["ip", "netns", "exec", self.ns(namespace), *command],
                                   start_new_session=True, **kwargs)
        self.processes[key] = process
        return process

    def start_server(self, name: str) -> None:
        twistd = str(Path(sys.executable).with_name("twistd"))
        plugin = "proxy" if name == "proxy" else "objectnode"
        with open(self.root / "log" / f"{name}.stderr", "ab") as stderr:
            self._spawn(name, name, [twistd, "--nodaemon", f"--pidfile={self.root / 'run' / name}.pid",
                                     f"--logfile={self.log(name)}", plugin,
                                     f"--config={self.etc / (name + '.conf')}"],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)

    def start(self, timeout: float = 60.0) -> None:
        """Every node and the proxy, then wait until each answers /healthcheck from the client."""
        for host in self.hosts:
            self.start_server(host.name)
        self.start_server("proxy")
        self.wait_healthy([h.name for h in self.hosts] + ["proxy"], timeout)

    def wait_healthy(self, names: list[str], timeout: float = 60.0) -> None:
        urls = [f"http://{self.by_name[n].address}:{PROXY_PORT if n == 'proxy' else NODE_PORT}/healthcheck"
                for n in names]
        deadline = time.monotonic() + timeout
        while True:
            dead = [n for n in names if self.processes[n].poll() is not None]
            if dead:
                raise NetnsError(f"exited at start: {dead}\n" + "\n".join(self.tail(k) for k in dead))
            answer = self.client("wait", {"urls": urls, "timeout": 5.0})
            if not answer["pending"]:
                return
            if time.monotonic() > deadline:
                raise NetnsError(f"not healthy after {timeout:.0f}s: {answer['pending']}")

    def tail(self, name: str, lines: int = 20) -> str:
        texts = []
        for path in (self.log(name), self.root / "log" / f"{name}.stderr"):
            try:
                texts.append("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
            except OSError:
                pass
        return f"--- {name}:\n" + "\n".join(texts)

    def stop(self, key: str) -> int | None:
        """SIGTERM one process (SIGKILL after STOP_TIMEOUT) and reap it; its exit status."""
        process = self.processes.pop(key, None)
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    # --- the client namespace ---------------------------------------------------------------

    def client_command(self, command: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns("client"), sys.executable, "-m", "txstore.test.netns_client", command]

    def client(self, command: str, arguments: dict, timeout: float = 300.0) -> dict:
        """Run one `txstore.test.netns_client` command in the client namespace; its JSON answer."""
        done = subprocess.run(self.client_command(command), input=json.dumps(arguments), capture_output=True,
                              text=True, timeout=timeout, cwd=Path(__file__).parents[2])
        if done.returncode != 0:
            raise NetnsError(f"netns_client {command} failed ({done.returncode}): {done.stderr[-3000:]}")
        return json.loads(done.stdout)

    def stream(self, arguments: dict) -> tuple[subprocess.Popen, Path]:
        """
        Start a `netns_client` stream of requests; it writes one JSON line per request to the
        file returned (a file, not a pipe: a pipe nobody reads until the stream ends fills up
        after some 250 lines and stalls the client's threads).
        """
        key = f"stream-{len(self.processes)}-{time.monotonic_ns()}"
        output = self.root / "log" / f"{key}.jsonl"
        with open(output, "wb") as out, open(output.with_suffix(".stderr"), "wb") as err:
            process = subprocess.Popen(self.client_command("stream"), stdin=subprocess.PIPE, stdout=out, stderr=err,
                                       start_new_session=True, cwd=Path(__file__).parents[2])
        self.processes[key] = process
        process.stdin.write(json.dumps(arguments).encode("utf-8"))
        process.stdin.close()
        return process, output

    def dispersion_tool(self, command: str, coverage: float = 50.0) -> dict:
        """``txstore-dispersion <command> --json`` (populate or report) run from the client namespace."""
        account, user, key = USER
        tool = str(Path(sys.executable).with_name("txstore-dispersion"))
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns("client"), tool, command, "--json",
             "--auth-url", f"{self.proxy_url}/auth/v1.0", "--auth-user", f"{account}:{user}", "--auth-key", key,
             "--ring-dir", str(self.etc), "--coverage", f"{coverage:g}"],
            capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise NetnsError(f"txstore-dispersion {command} failed ({done.returncode}): {done.stderr[-2000:]}")
        return json.loads(done.stdout)

    def auth(self) -> tuple[str, str]:
        answer = self.client("auth", {"url": self.proxy_url, "user": USER})
        return answer["storage_url"], answer["token"]

    # --- faults -----------------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Cut the link between ``a`` and ``b`` both ways, silently (no reset, no ICMP)."""
        first, second = self.by_name[a], self.by_name[b]
        if first.region == second.region:
            for one, other in ((first, second), (second, first)):
                ip("-n", self.ns(one.name), "neigh", "replace", other.address, "lladdr", NOWHERE_MAC,
                   "nud", "permanent", "dev", "eth0")
        else:
            for one, other in ((first, second), (second, first)):
                ip("-n", self.ns("router"), "rule", "add", "from", one.address, "to", other.address,
                   "blackhole", "pref", "10")
        self.cuts.add((a, b))

    def mend(self, a: str, b: str) -> None:
        """Undo `cut`: the real neighbour entries are learnt again by ARP."""
        first, second = self.by_name[a], self.by_name[b]
        if first.region == second.region:
            for one, other in ((first, second), (second, first)):
                ip("-n", self.ns(one.name), "neigh", "del", other.address, "dev", "eth0", check=False)
        else:
            for one, other in ((first, second), (second, first)):
                ip("-n", self.ns("router"), "rule", "del", "from", one.address, "to", other.address,
                   "blackhole", "pref", "10", check=False)
        self.cuts.discard((a, b))

    def partition(self, name: str) -> None:
        """Take a whole host off the network: its port on the bridge goes down."""
        ip("-n", self.ns("bridges"), "link", "set", name, "down")
        self.partitioned.add(name)

    def rejoin(self, name: str) -> None:
        ip("-n", self.ns("bridges"), "link", "set", name, "up")
        self.partitioned.discard(name)

    def impair(self, region: int, delay: float, loss: float, method: str = "auto", seed: int = 5) -> str:
        """
        Hold every packet crossing into or out of ``region`` ``delay`` seconds and drop ``loss``
        of them (two regions). ``method``: netem, tun or auto (netem where the kernel has it).
        Returns the method used.
        """
        if len(self.spec.regions) != 2:
            raise NetnsError("impair needs exactly two regions")
        if method == "auto":
            method = "netem" if netem_available() else "tun"
        router = self.ns("router")
        if method == "netem":
            for interface in ("rt1", "rt2"):
                done = subprocess.run(["ip", "netns", "exec", router, "tc", "qdisc", "add", "dev", interface, "root",
                                       "netem", "delay", f"{delay * 1000:g}ms", "loss", f"{loss * 100:g}%"],
                                      capture_output=True, text=True, timeout=30)
                if done.returncode != 0:
                    raise NetnsError(f"tc netem on {interface}: {done.stderr.strip()}")
            self.impairment = ("netem", region)
            return method
        process = self._spawn("tun", "router", [sys.executable, "-m", "txstore.test.tun_delay", "--name", TUN_NAME,
                                                "--delay", str(delay), "--loss", str(loss), "--seed", str(seed)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
        if process.stdout.readline().strip() != "ready":
            raise NetnsError(f"tun_delay did not start (status {process.wait()})")
        self.impairment = ("tun", process)
        into, out_of = TUN_TABLES
        other = 3 - region
        ip("-n", router, "link", "set", TUN_NAME, "up")
        self._sysctl("router", f"net.ipv4.conf.{TUN_NAME}.rp_filter=0")
        ip("-n", router, "route", "add", self.region_subnet(region), "dev", TUN_NAME, "table", str(into))
        ip("-n", router, "route", "add", "default", "dev", TUN_NAME, "table", str(out_of))
        # a packet written back by tun_delay comes in by the TUN, matches neither rule: no loop
        ip("-n", router, "rule", "add", "iif", f"rt{other}", "lookup", str(into), "pref", "100")
        ip("-n", router, "rule", "add", "iif", f"rt{region}", "lookup", str(out_of), "pref", "101")
        return method

    def unimpair(self) -> dict | None:
        """Undo `impair`; the TUN forwarder's counters (None with netem)."""
        if self.impairment is None:
            return None
        method, what = self.impairment
        self.impairment = None
        router = self.ns("router")
        if method == "netem":
            for interface in ("rt1", "rt2"):
                subprocess.run(["ip", "netns", "exec", router, "tc", "qdisc", "del", "dev", interface, "root"],
                               capture_output=True, timeout=30)
            return None
        for pref in ("100", "101"):
            ip("-n", router, "rule", "del", "pref", pref, check=False)
        for table in TUN_TABLES:
            ip("-n", router, "route", "flush", "table", str(table), check=False)
        process = what
        self.stop("tun")
        try:
            return json.loads(process.stdout.read().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None

    def heal_all(self) -> None:
        for a, b in list(self.cuts):
            self.mend(a, b)
        for name in list(self.partitioned):
            self.rejoin(name)
        self.unimpair()

    # --- teardown ---------------------------------------------------------------------------

    def teardown(self, keep_root: bool = False) -> None:
        """Stop every process, delete every namespace (with its veths, bridges, TUN), remove the root."""
        for key in list(self.processes):
            self.stop(key)
        for name in reversed(self.namespaces):
            for pid in ip("netns", "pids", name, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)  # only what runs in our own namespace
                except (ProcessLookupError, ValueError):
                    pass
            ip("netns", "del", name, check=False)
        self.namespaces.clear()
        if not keep_root:
            shutil.rmtree(self.root, ignore_errors=True)
