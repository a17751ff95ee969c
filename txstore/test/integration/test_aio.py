"""
The all-in-one: its layout on disk, and the real ``txstore-aio`` command starting, supervising
and stopping a cluster of real processes on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from txstore.aio.launcher import alive, banner, parse_args, read_pid
from txstore.aio.layout import available_ec_type, ec_fragments, OTHER_DAEMONS, UPDATERS, LayoutError, Topology, prepare
from txstore.proxy.config import load_proxy_settings
from txstore.ring.ringset import RingSet
from txstore.storage.config import load_node_settings
from txstore.test.support import console_script, free_port_block, temp_dir


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as response:
            return response.read().strip() == b"OK"
    except OSError:
        return False


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class LayoutTests(SynchronousTestCase):
    def test_prepare_writes_a_loadable_cluster(self) -> None:
        root = temp_dir(self) / "aio"
        layout = prepare(root, Topology(nodes=4, replicas=3, part_power=8, base_port=6200), 8080, seed=3)
        proxy = load_proxy_settings(layout.proxy_config)
        self.assertEqual(proxy.bind_port, 8080)
        self.assertEqual(
            sorted((u.account, u.user, u.key, u.is_admin) for u in proxy.users),
            [("admin", "admin", "admin", True), ("test", "tester", "testing", True),
             ("test", "tester3", "testing3", False), ("test2", "tester2", "testing2", True)],
        )
        rings = RingSet.load(proxy.ring_dir, proxy.cluster.hasher, proxy.cluster.policies)
        for ring in (rings.account, rings.container, rings.object_ring(0)):
            self.assertEqual(ring.replica_count, 3)
            self.assertEqual(ring.part_power, 8)
            part, nodes = ring.get_nodes("AUTH_test", "c", "o")
            self.assertEqual(len({n.port for n in nodes}), 3)
            self.assertTrue(all(n.ip == "127.0.0.1" for n in nodes))
        # a second policy, two replicas, as Swift's all-in-one has (cross-policy symlinks, versions)
        # and an erasure-coded one: 2+1 on four nodes (4+2 from six), one fragment per node
        self.assertEqual([(p.index, p.name, p.is_default) for p in proxy.cluster.policies],
                         [(0, "gold", True), (1, "silver", False), (2, "ec", False)])
        self.assertEqual(rings.object_ring(1).replica_count, 2)
        self.assertEqual(len({n.port for n in rings.object_ring(1).get_nodes("AUTH_test", "c", "o")[1]}), 2)
        ec = proxy.cluster.policies.by_name("ec").ec
        self.assertEqual((ec.ec_type, ec.num_data_fragments, ec.num_parity_fragments),
                         (available_ec_type((2, 1)), 2, 1))
        self.assertIn(ec.ec_type, ("isa_l_rs_cauchy", "liberasurecode_rs_vand"))
        self.assertEqual(len({n.port for n in rings.object_ring(2).get_nodes("AUTH_test", "c", "o")[1]}), 3)
        self.assertEqual(ec_fragments(6), (4, 2))
        for number in range(1, 5):
            node = load_node_settings(layout.node_config(number))
            self.assertEqual(node.bind_port, 6200 + 10 * number)
            self.assertTrue((node.devices / f"d{number}").is_dir())
            self.assertFalse(node.mount_check)
            self.assertTrue(node.disable_fallocate)  # as Swift's all-in-one
            self.assertEqual(node.cluster.hasher, proxy.cluster.hasher)
        self.assertGreaterEqual(len(proxy.cluster.hasher.suffix), 32)

    def test_the_ec_codec_is_the_first_pyeclib_has(self) -> None:
        """isa-l's Cauchy Reed-Solomon where this pyeclib has it, else liberasurecode's own."""
        self.assertEqual(available_ec_type((4, 2), ("no_such_backend", "liberasurecode_rs_vand")),
                         "liberasurecode_rs_vand")
        from pyeclib.ec_iface import ECDriver
        try:
            ECDriver(k=4, m=2, ec_type="isa_l_rs_cauchy")
        except Exception:
            expected = "liberasurecode_rs_vand"
        else:
            expected = "isa_l_rs_cauchy"
        self.assertEqual(available_ec_type((4, 2)), expected)

    def test_rerun_keeps_secret_and_rings(self) -> None:
        root = temp_dir(self) / "aio"
        topology = Topology(nodes=3, replicas=3, part_power=6)
        first = prepare(root, topology, 8080)
        secret = (first.etc / "txstore.conf").read_text()
        rings = {name: md5_of(first.etc / f"{name}.ring.gz") for name in ("account", "container", "object")}
        second = prepare(root, topology, 9090)
        self.assertEqual((second.etc / "txstore.conf").read_text(), secret)
        self.assertEqual({n: md5_of(second.etc / f"{n}.ring.gz") for n in rings}, rings)
        self.assertEqual(load_proxy_settings(second.proxy_config).bind_port, 9090)

    def test_rerun_refuses_other_topology(self) -> None:
        root = temp_dir(self) / "aio"
        prepare(root, Topology(nodes=3, replicas=3, part_power=6), 8080)
        err = self.assertRaises(LayoutError, prepare, root, Topology(nodes=4, replicas=3, part_power=6), 8080)
        self.assertIn("holds a cluster of 3 nodes", str(err))

    def test_daemon_sets(self) -> None:
        """``--daemons updaters`` leaves only the two updaters enabled; ``all`` enables every daemon."""
        root = temp_dir(self) / "aio"
        topology = Topology(nodes=3, replicas=3, part_power=6)
        layout = prepare(root, topology, 8080, daemons="updaters")
        daemons = load_node_settings(layout.node_config(1)).daemons.sections()
        self.assertEqual(sorted(name for name, options in daemons.items() if options.enabled), sorted(UPDATERS))
        self.assertEqual(len(daemons), len(UPDATERS) + len(OTHER_DAEMONS))
        layout = prepare(root, topology, 8080)
        self.assertTrue(all(o.enabled for o in load_node_settings(layout.node_config(1)).daemons.sections().values()))
        err = self.assertRaises(LayoutError, prepare, root, topology, 8080, daemons="some")
        self.assertIn("unknown daemon set", str(err))

    def test_max_file_size_on_the_proxy_and_every_node(self) -> None:
        topology = Topology(nodes=3, replicas=3, part_power=6)
        layout = prepare(temp_dir(self) / "aio", topology, 8080, max_file_size=2 * 1024 * 1024)
        self.assertEqual(load_proxy_settings(layout.proxy_config).max_file_size, 2 * 1024 * 1024)
        for number in range(1, 4):
            self.assertEqual(load_node_settings(layout.node_config(number)).max_file_size, 2 * 1024 * 1024)

    def test_workers_with_signed_tokens(self) -> None:
        topology = Topology(nodes=3, replicas=3, part_power=6)
        layout = prepare(temp_dir(self) / "aio", topology, 8080, proxy_workers=2)
        settings = load_proxy_settings(layout.proxy_config)
        self.assertEqual((settings.workers, settings.stage("tempauth").settings["token_store"]), (2, "signed"))
        single = load_proxy_settings(prepare(temp_dir(self) / "aio", topology, 8080).proxy_config)
        self.assertEqual((single.workers, single.stage("tempauth").settings["token_store"]), (1, "memory"))

    def test_proxies_share_a_memcached_or_sign_their_tokens(self) -> None:
        topology = Topology(nodes=3, replicas=3, part_power=6)
        root = temp_dir(self) / "aio"
        layout = prepare(root, topology, 8080, proxies=3, memcache_port=11999)
        self.assertEqual(layout.proxy_names, ["proxy", "proxy2", "proxy3"])
        for number, name in enumerate(layout.proxy_names):
            settings = load_proxy_settings(layout.config_of(name))
            self.assertEqual(settings.bind_port, 8080 + number)
            self.assertEqual(settings.stage("tempauth").settings["token_store"], "memcached")
            self.assertEqual(settings.stage("memcache").settings["memcache_servers"], (("127.0.0.1", 11999),))
        self.assertIn("proxy2: http://127.0.0.1:8081", " ".join(banner(layout, True).split()))
        self.assertIn("memcached: 127.0.0.1:11999", banner(layout, True))
        # no memcached: signed tokens, said so; a later start with fewer proxies drops the extra file
        layout = prepare(root, topology, 8080, proxies=2)
        self.assertFalse((layout.etc / "proxy3.conf").exists())
        settings = load_proxy_settings(layout.config_of("proxy2"))
        self.assertEqual(settings.stage("tempauth").settings["token_store"], "signed")
        self.assertEqual(settings.stage("memcache").settings["memcache_servers"], ())
        self.assertIn("memcached is not installed", banner(layout, True))
        self.assertIn("token_store = signed", banner(layout, True))
        single = prepare(root, topology, 8080)
        self.assertNotIn("memcached:", banner(single, True))
        self.assertNotIn("not installed", banner(single, True))
        for bad in (["--proxies", "0"], ["--proxies", "10"], ["--proxies", "2", "--proxy-port", "65535"]):
            with self.assertRaises(SystemExit):
                parse_args(bad)

    def test_io_classes_of_each_start(self) -> None:
        topology = Topology(nodes=3, replicas=3, part_power=6)
        root = temp_dir(self) / "aio"
        args = parse_args(["--io-class", "gold=4,tenant_rate=60MB", "--io-class", "bronze=1,default"])
        layout = prepare(root, topology, 8080, io_classes=dict(args.io_classes))
        classes = load_proxy_settings(layout.proxy_config).cluster.io_classes
        self.assertEqual((classes.default_name, classes.get("gold").weight, classes.get("gold").tenant_rate),
                         ("bronze", 4.0, 60_000_000))
        self.assertEqual(load_node_settings(layout.node_config(2)).cluster.io_classes, classes)
        # a later start without them: back to the default classes, the rest of the file kept
        secret = (layout.etc / "txstore.conf").read_text().split("hash_path_suffix = ")[1][:32]
        prepare(root, topology, 8080)
        text = (layout.etc / "txstore.conf").read_text()
        self.assertEqual((secret in text, "io-class" in text), (True, False))
        for bad in ("gold", "gold=4,fast", "g old=4", "gold=4,stream_rate"):
            with self.assertRaises(SystemExit):
                parse_args(["--io-class", bad])

    def test_too_few_nodes(self) -> None:
        err = self.assertRaises(LayoutError, prepare, temp_dir(self) / "r", Topology(nodes=2, replicas=3), 8080)
        self.assertIn("3 replicas need at least as many nodes", str(err))


class LauncherTests(SynchronousTestCase):
    """``txstore-aio`` as a user runs it."""

    def setUp(self) -> None:
        self.root = temp_dir(self) / "aio"
        base = free_port_block(6, step=10)
        self.proxy_port = base
        self.args = ["--root", str(self.root), "--proxy-port", str(base), "--base-port", str(base),
                     "--nodes", "4", "--part-power", "6"]
        self.addCleanup(self.stop_all)

    def aio(self, *extra: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run([console_script("txstore-aio"), *self.args, *extra],
                              capture_output=True, text=True, timeout=timeout)

    def stop_all(self) -> None:
        subprocess.run([console_script("txstore-aio"), "--stop", "--root", str(self.root)],
                       capture_output=True, timeout=60)

    def pids(self) -> dict[str, int]:
        run = self.root / "run"
        return {p.stem: read_pid(p) for p in run.glob("*.pid")} if run.exists() else {}

    def ports(self) -> list[int]:
        return [self.proxy_port] + [self.proxy_port + 10 * n for n in range(1, 5)]

    def test_background_start_rerun_and_stop(self) -> None:
        started = self.aio("--background")
        self.assertEqual(started.returncode, 0, started.stderr)
        self.assertIn(f"auth URL: http://127.0.0.1:{self.proxy_port}/auth/v1.0", started.stdout)
        self.assertIn("test:tester / testing", started.stdout)
        self.assertIn("swift -A", started.stdout)
        self.assertTrue(all(healthy(port) for port in self.ports()))
        pids = self.pids()
        self.assertEqual(sorted(pids), ["node1", "node2", "node3", "node4", "proxy"])
        self.assertTrue(all(alive(pid) for pid in pids.values()))

        again = self.aio("--background")
        self.assertEqual(again.returncode, 2)
        self.assertIn("already running", again.stderr)

        # An operator restarts one node by hand with its config, as a fault drill would.
        node_conf = self.root / "etc" / "node2.conf"
        os.kill(pids["node2"], signal.SIGTERM)
        self.wait_for(lambda: not alive(pids["node2"]))
        self.assertFalse(healthy(self.proxy_port + 20))
        by_hand = subprocess.Popen(
            [console_script("twistd"), "--nodaemon", f"--pidfile={self.root / 'run' / 'node2.pid'}",
             "objectnode", "--config", str(node_conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.addCleanup(lambda: (by_hand.poll() is None and by_hand.kill(), by_hand.wait()))
        self.wait_for(lambda: healthy(self.proxy_port + 20))

        (self.root / "srv" / "node1" / "d1" / "marker").write_text("kept")
        secret = (self.root / "etc" / "txstore.conf").read_text()
        ring = md5_of(self.root / "etc" / "object.ring.gz")

        stopped = subprocess.run([console_script("txstore-aio"), "--stop", "--root", str(self.root)],
                                 capture_output=True, text=True, timeout=60)
        self.assertEqual(stopped.returncode, 0)
        self.assertIn("stopped", stopped.stdout)
        self.assertEqual(by_hand.wait(timeout=30), -signal.SIGTERM)
        self.assertFalse(any(alive(pid) for pid in pids.values()))
        self.assertFalse(any(healthy(port) for port in self.ports()))

        restarted = self.aio("--background")
        self.assertEqual(restarted.returncode, 0, restarted.stderr)
        self.assertEqual((self.root / "srv" / "node1" / "d1" / "marker").read_text(), "kept")
        self.assertEqual((self.root / "etc" / "txstore.conf").read_text(), secret)
        self.assertEqual(md5_of(self.root / "etc" / "object.ring.gz"), ring)
        self.assertTrue(all(healthy(port) for port in self.ports()))

    def test_foreground_ctrl_c_stops_everything(self) -> None:
        launcher = subprocess.Popen([console_script("txstore-aio"), *self.args],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (launcher.poll() is None and launcher.kill(), launcher.wait()))
        lines = []
        for line in launcher.stdout:
            lines.append(line)
            if line.startswith("Stop:"):
                break
        self.assertIn("Ctrl-C", lines[-1])
        pids = self.pids()
        self.assertEqual(len(pids), 5)
        launcher.send_signal(signal.SIGINT)
        started = time.monotonic()
        self.assertEqual(launcher.wait(timeout=60), 0)
        self.assertLess(time.monotonic() - started, 10, "an orderly stop takes seconds, not a kill timeout")
        self.assertFalse(any(alive(pid) for pid in pids.values()))
        self.assertEqual(self.pids(), {})

    def test_a_dying_node_is_reported(self) -> None:
        launcher = subprocess.Popen([console_script("txstore-aio"), *self.args],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (launcher.poll() is None and launcher.kill(), launcher.wait()))
        for line in launcher.stdout:
            if line.startswith("Stop:"):
                break
        pids = self.pids()
        os.kill(pids["node3"], signal.SIGKILL)
        self.assertEqual(launcher.wait(timeout=60), 1)
        self.assertIn("node3 exited", launcher.stderr.read())
        self.assertFalse(any(alive(pid) for pid in pids.values()))

    def test_port_in_use(self) -> None:
        import socket

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", self.proxy_port + 30))
            busy.listen()
            result = self.aio("--background")
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"port in use on 127.0.0.1: node3 {self.proxy_port + 30}", result.stderr)

    def wait_for(self, predicate, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail("condition not reached in time")
            time.sleep(0.05)
