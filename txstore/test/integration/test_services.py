"""
The real ``twistd proxy`` and ``twistd objectnode`` processes: they start, answer
/healthcheck, log in twisted.logger's format, refuse bad configuration in one line, and stop
cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from txstore.proxy.workers import WorkerSupervisor, worker_log_base
from txstore.test.support import console_script, small_cluster, write_file

LISTENING = re.compile(rb"(proxy|objectnode) listening on 127\.0\.0\.1:(\d+)")


def twistd(*args: str) -> list[str]:
    """A twistd command line that stays in the foreground and writes no pid file."""
    return [console_script("twistd"), "--nodaemon", "--pidfile=", *args]


def run_to_end(args: list[str]) -> tuple[int, str]:
    """A twistd that is expected to end by itself: its exit code and its output."""
    result = subprocess.run(twistd(*args), capture_output=True, timeout=60)
    return result.returncode, (result.stdout + result.stderr).decode()


class RunningProcess:
    """A twistd child whose output is read into a buffer; always stopped in cleanup."""

    def __init__(self, case: SynchronousTestCase, args: list[str]) -> None:
        self.output = case.mktemp()
        with open(self.output, "wb") as sink:
            self.process = subprocess.Popen(
                twistd(*args),
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        case.addCleanup(self.kill)

    def text(self) -> bytes:
        with open(self.output, "rb") as handle:
            return handle.read()

    def wait_for_port(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = LISTENING.search(self.text())
            if match:
                return int(match.group(2))
            if self.process.poll() is not None:
                raise AssertionError(f"exited early:\n{self.text().decode()}")
            time.sleep(0.05)
        raise AssertionError(f"never listened:\n{self.text().decode()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read().lower()
    except FileNotFoundError:
        return False


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def node_on_free_ports(layout) -> Path:
    """
    Node 1's config with both listeners on free ports: the layout's fixed ones (6210, 6211)
    may be another test's under trial -j2, or a Swift on the same host (seen in CI: the node
    exited at once, "Address already in use").
    """
    text = layout.node_config(1).read_text()
    text = text.replace("bind_port = 6210", "bind_port = 0").replace("bind_port = 6211", "bind_port = 0")
    return write_file(layout.etc, "node1-anyport.conf", text)


class ServiceProcessTests(SynchronousTestCase):
    def run_and_stop(self, plugin: str, config: str) -> None:
        child = RunningProcess(self, [plugin, "--config", config])
        port = child.wait_for_port()
        status, body = get(f"http://127.0.0.1:{port}/healthcheck")
        self.assertEqual((status, body.strip()), (200, b"OK"))
        child.process.send_signal(signal.SIGTERM)
        # twistd shuts down in order, then re-raises the signal so its parent sees why it ended
        self.assertEqual(child.process.wait(timeout=15), -signal.SIGTERM)
        output = child.text().decode()
        self.assertIn("Received SIGTERM, shutting down.", output)
        self.assertIn("Server Shut Down.", output)
        # twisted.logger's text format: time, [namespace#level], message
        self.assertRegex(output, r"\[txstore\.common\.listener\.TCPListener#info\] " + plugin)
        self.assertIn("Main loop terminated.", output)
        self.assertNotIn("Traceback", output)

    def test_proxy(self) -> None:
        layout = small_cluster(self)
        self.run_and_stop("proxy", str(layout.proxy_config))

    def test_objectnode(self) -> None:
        self.run_and_stop("objectnode", str(node_on_free_ports(small_cluster(self))))

    def test_bad_config_is_one_line_and_no_traceback(self) -> None:
        layout = small_cluster(self)
        config = write_file(layout.etc, "bad.conf", "[objectnode]\ndevices = /\nbind_port = 0\nmount_chek = no\n")
        returncode, output = run_to_end(["objectnode", "--config", str(config)])
        self.assertEqual(returncode, 1)
        self.assertIn(f"{config}: [objectnode]: mount_chek: unknown option", output)
        self.assertNotIn("Traceback", output)

    def test_sighup_reloads_the_rings_and_keeps_serving(self) -> None:
        """Without a handler SIGHUP would end the process; it checks the ring files now instead."""
        layout = small_cluster(self)
        child = RunningProcess(self, ["objectnode", "--config", str(node_on_free_ports(layout))])
        port = child.wait_for_port()
        ring = layout.etc / "object.ring.gz"
        data = ring.read_bytes()
        time.sleep(0.01)
        temp = layout.etc / "object.ring.gz.new"
        temp.write_bytes(data)  # the same table, a new file: what an operator's copy looks like
        os.replace(temp, ring)
        child.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10  # well under the 15 s reload interval
        while b"Reloaded ring" not in child.text() and time.monotonic() < deadline:
            time.sleep(0.05)
        output = child.text().decode()
        self.assertIn("SIGHUP: checking the ring files now", output)
        self.assertIn(f"Reloaded ring {ring}", output)
        self.assertIsNone(child.process.poll())
        self.assertEqual(get(f"http://127.0.0.1:{port}/healthcheck")[0], 200)

    def test_proxy_workers_share_the_socket_and_come_back(self) -> None:
        """workers = 2: two children serve the port; one killed is replaced; the supervisor killed ends all."""
        layout = small_cluster(self)
        text = layout.proxy_config.read_text().replace("[proxy]\n", "[proxy]\nworkers = 2\n", 1)
        text = text.replace("use = egg:txstore#tempauth\n", "use = egg:txstore#tempauth\ntoken_store = signed\n", 1)
        config = write_file(layout.etc, "proxy-workers.conf", text)
        supervisor = RunningProcess(self, ["proxy", "--config", str(config)])
        port = supervisor.wait_for_port()

        def children() -> list[int]:
            found = subprocess.run(["pgrep", "-P", str(supervisor.process.pid)], capture_output=True, text=True)
            return sorted(int(pid) for pid in found.stdout.split())

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(children()) == 2 and supervisor.text().count(b"proxy worker serving") >= 2:
                break
            time.sleep(0.1)
        first = children()
        self.assertEqual(len(first), 2, supervisor.text().decode()[-3000:])
        for _ in range(20):
            self.assertEqual(get(f"http://127.0.0.1:{port}/healthcheck")[0], 200)
        # A signed token from one worker is good on both (no nodes run here: past auth is a 503).
        login = urllib.request.Request(f"http://127.0.0.1:{port}/auth/v1.0",
                                       headers={"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
        with urllib.request.urlopen(login, timeout=10) as answer:
            token = answer.headers["X-Auth-Token"]
        statuses = set()
        for _ in range(6):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/AUTH_test/c", method="HEAD",
                                             headers={"X-Auth-Token": token})
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    statuses.add(answer.status)
            except urllib.error.HTTPError as error:
                statuses.add(error.code)
        self.assertNotIn(401, statuses)
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = children()
            if len(now) == 2 and first[0] not in now and supervisor.text().count(b"proxy worker serving") >= 3:
                break
            time.sleep(0.2)
        now = children()
        self.assertEqual((len(now), first[0] in now), (2, False), (first, now, supervisor.text().decode()[-2000:]))
        self.assertIn(b"starting another", supervisor.text())
        self.assertEqual(get(f"http://127.0.0.1:{port}/healthcheck")[0], 200)
        remaining = children()
        supervisor.process.send_signal(signal.SIGKILL)  # the hardest end: no chance to stop them
        supervisor.process.wait(timeout=30)
        deadline = time.monotonic() + 20  # (after a SIGKILL of the supervisor the workers see their stdin close)
        while time.monotonic() < deadline and any(_alive(pid) for pid in remaining):
            time.sleep(0.1)
        self.assertEqual([pid for pid in remaining if _alive(pid)], [])

    def test_port_in_use(self) -> None:
        layout = small_cluster(self)
        first = RunningProcess(self, ["proxy", "--config", str(layout.proxy_config)])
        port = first.wait_for_port()
        text = layout.proxy_config.read_text().replace("bind_port = 0", f"bind_port = {port}")
        config = write_file(layout.etc, "proxy-same-port.conf", text)
        returncode, output = run_to_end(["proxy", "--config", str(config)])
        self.assertNotEqual(returncode, 0)
        self.assertIn(f"proxy: cannot listen on 127.0.0.1:{port}: Address already in use", output)
        self.assertNotIn("Traceback", output)


class PluginTests(SynchronousTestCase):
    def test_twistd_lists_both(self) -> None:
        result = subprocess.run([console_script("twistd"), "--help"], capture_output=True, timeout=60, cwd="/")
        self.assertEqual(result.returncode, 0)
        self.assertRegex(result.stdout.decode(), r"\n\s+proxy\s")
        self.assertRegex(result.stdout.decode(), r"\n\s+objectnode\s")

    def test_no_init_in_plugins(self) -> None:
        import txstore

        root = os.path.dirname(os.path.dirname(txstore.__file__))
        self.assertTrue(os.path.exists(os.path.join(root, "twisted", "plugins", "txstore_plugins.py")))
        self.assertFalse(os.path.exists(os.path.join(root, "twisted", "plugins", "__init__.py")))


class _SpawnRecorder:
    """A reactor that records the processes it is asked to start."""

    def __init__(self) -> None:
        self.spawned: list[list[str]] = []

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None):
        self.spawned.append(list(args))
        return type("Process", (), {"pid": 1000 + len(self.spawned)})()


class WorkerLogTests(SynchronousTestCase):
    """Each proxy worker logs to a file of its own beside the supervisor's (never /dev/null)."""

    def spawned_args(self, log_file: str | None) -> list[list[str]]:
        reactor = _SpawnRecorder()
        supervisor = WorkerSupervisor(reactor, "127.0.0.1", 0, "/etc/txstore/proxy.conf", 2, log_file=log_file)
        supervisor._socket = socket.socket()
        self.addCleanup(supervisor._socket.close)
        supervisor._spawn(0)
        supervisor._spawn(1)
        return reactor.spawned

    def test_a_file_each_beside_the_supervisors(self) -> None:
        first, second = self.spawned_args("/var/log/txstore/proxy.log")
        self.assertIn("--logfile=/var/log/txstore/proxy-worker0.log", first)
        self.assertIn("--logfile=/var/log/txstore/proxy-worker1.log", second)
        self.assertLess(first.index("--logfile=/var/log/txstore/proxy-worker0.log"), first.index("proxy"))

    def test_the_supervisors_stdout_without_a_log_file(self) -> None:
        for args in self.spawned_args(None):
            self.assertFalse([arg for arg in args if arg.startswith("--logfile")])

    def test_where_the_supervisor_logs(self) -> None:
        self.assertEqual(worker_log_base({"logfile": "/x/proxy.log", "nodaemon": False}), "/x/proxy.log")
        self.assertEqual(worker_log_base({"logfile": "", "nodaemon": False}), os.path.abspath("twistd.log"))
        for options in ({"logfile": "", "nodaemon": True}, {"logfile": "-", "nodaemon": True},
                        {"syslog": True, "logfile": "/x/proxy.log"}, None):
            self.assertIsNone(worker_log_base(options), options)
