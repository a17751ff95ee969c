"""Tests for proxy.conf and objectnode.conf loading."""

import attrs
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.config import ConfigError
from txstore.proxy.config import BackendTimeouts, TempAuthUser, load_proxy_settings
from txstore.storage.config import (
    DAEMONS,
    DEFAULT_DAEMONS,
    REPLICATION,
    SCHEMA,
    TLS_OPTIONS,
    ObjectAuditorSettings,
    ReaperSettings,
    ReplicationSettings,
    load_node_settings,
)
from txstore.test.support import CLUSTER_CONF, temp_dir, write_file


class ProxySettingsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        write_file(self.dir, "txstore.conf", CLUSTER_CONF)

    def load(self, text: str):
        return load_proxy_settings(write_file(self.dir, "proxy.conf", text))

    def test_defaults(self) -> None:
        settings = self.load("[proxy]\n")
        self.assertEqual((settings.bind_ip, settings.bind_port), ("127.0.0.1", 8080))
        self.assertEqual(settings.ring_dir, self.dir)
        self.assertEqual(settings.cluster.path, self.dir / "txstore.conf")
        self.assertEqual(settings.users, ())

    def test_timeouts(self) -> None:
        self.assertEqual(self.load("[proxy]\n").timeouts, BackendTimeouts(10.0, 0.5, 0.5, 0.5))
        settings = self.load("[proxy]\nnode_timeout = 3\nconn_timeout = 0.2\npost_quorum_timeout = 0\n")
        self.assertEqual(settings.timeouts, BackendTimeouts(3.0, 0.2, 0.0, 0.2))  # concurrency: conn_timeout
        settings = self.load("[proxy]\nconcurrent_gets = false\nconcurrency_timeout = 1\n")
        self.assertIsNone(settings.timeouts.concurrency)
        self.assertEqual(self.load("[proxy]\nconcurrency_timeout = 1.5\n").timeouts.concurrency, 1.5)
        with self.assertRaises(ConfigError) as raised:
            self.load("[proxy]\nnode_timeout = 0\n")
        self.assertIn("node_timeout", str(raised.exception))

    def test_users(self) -> None:
        settings = self.load(
            """
            [proxy]
            bind_port = 0
            [filter:tempauth]
            use = egg:txstore#tempauth
            token_life = 60
            user_admin_admin = admin .admin .reseller_admin
            user_test_tester = testing .admin
            user_test_tester3 = testing3
            user_test2_tester_2 = k http://127.0.0.1:8080/v1/AUTH_test2
            """
        )
        self.assertEqual(settings.stage("tempauth").settings["token_life"], 60)
        self.assertEqual(
            settings.users,
            (
                TempAuthUser("admin", "admin", "admin", (".admin", ".reseller_admin")),
                TempAuthUser("test", "tester", "testing", (".admin",)),
                TempAuthUser("test", "tester3", "testing3"),
                TempAuthUser("test2", "tester_2", "k", (), "http://127.0.0.1:8080/v1/AUTH_test2"),
            ),
        )
        self.assertTrue(settings.users[0].is_reseller_admin)
        self.assertTrue(settings.users[1].is_admin)
        self.assertFalse(settings.users[2].is_admin)

    def test_errors(self) -> None:
        conf = str(self.dir / "proxy.conf")
        cases = [
            ("[proxy]\nbind_port = 99999\n", f"{conf}: [proxy]: bind_port: 99999 is above the maximum 65535"),
            ("[proxy]\nbind_ip = 0.0.0.x\n", f"{conf}: [proxy]: bind_ip: '0.0.0.x' is not an IP address"),
            ("[proxy]\nworkerz = 2\n", f"{conf}: [proxy]: workerz: unknown option"),
            ("[filter:tempauth]\n", f"{conf}: [proxy]: required section is missing"),
            ("[proxy]\n[tempauth]\n", f"{conf}: [tempauth]: unknown section (known: [proxy], [pipeline:main], [cluster-tls])"),
            ("[proxy]\n[filter:tempauth]\nuse = egg:txstore#tempauth\nuser_a_b = k .root\n",
             f"{conf}: [filter:tempauth]: user_a_b: unknown group '.root' (known: .admin, .reseller_admin)"),
            ("[proxy]\n[filter:tempauth]\nuse = egg:txstore#tempauth\nuser_a_b =\n",
             f"{conf}: [filter:tempauth]: user_a_b: needs a key: <key> [.admin] [.reseller_admin] [<storage url>]"),
            ("[proxy]\n[filter:tempauth]\nuse = egg:txstore#tempauth\nusr_a_b = k\n",
             f"{conf}: [filter:tempauth]: usr_a_b: unknown option"),
            (
                "[proxy]\ntxstore_conf = missing.conf\n",
                f"{conf}: [proxy]: txstore_conf: {self.dir / 'missing.conf'}: no such file",
            ),
        ]
        for text, message in cases:
            self.assertEqual(str(self.assertRaises(ConfigError, self.load, text)), message)

    def test_cluster_errors_name_the_cluster_file(self) -> None:
        write_file(self.dir, "txstore.conf", "[txstore-hash]\n")
        err = self.assertRaises(ConfigError, self.load, "[proxy]\n")
        self.assertIn(f"{self.dir / 'txstore.conf'}: [txstore-hash]: hash_path_suffix: missing hash path secret", str(err))


class ErasureCodingPolicyTests(SynchronousTestCase):
    """The proxy and the nodes start with an EC policy and know its parameters."""

    def test_proxy_and_node_take_an_ec_policy(self) -> None:
        directory = temp_dir(self)
        (directory / "devs").mkdir()
        write_file(directory, "txstore.conf", CLUSTER_CONF + (
            "\n[storage-policy:0]\nname = gold\ndefault = yes\n"
            "\n[storage-policy:1]\nname = ec42\npolicy_type = erasure_coding\n"
            "ec_type = liberasurecode_rs_vand\nec_num_data_fragments = 4\nec_num_parity_fragments = 2\n"
        ))
        proxy = write_file(directory, "proxy.conf", "[proxy]\n")
        node = write_file(directory, "objectnode.conf", "[objectnode]\ndevices = devs\n")
        for load, path in ((load_proxy_settings, proxy), (load_node_settings, node)):
            policy = load(path).cluster.policies.by_name("ec42")
            self.assertEqual((policy.ec.num_data_fragments, policy.ec.num_parity_fragments), (4, 2))


class NodeSettingsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        write_file(self.dir, "txstore.conf", CLUSTER_CONF)
        (self.dir / "devs").mkdir()

    def load(self, text: str):
        return load_node_settings(write_file(self.dir, "objectnode.conf", text))

    def test_values(self) -> None:
        settings = self.load("[objectnode]\ndevices = devs\nmount_check = false\nbind_port = 6210\n")
        self.assertEqual(settings.devices, self.dir / "devs")
        self.assertFalse(settings.mount_check)
        self.assertEqual(settings.bind_port, 6210)
        self.assertEqual(settings.cluster.hasher.suffix, b"testsuffix")

    def test_defaults(self) -> None:
        err = self.assertRaises(ConfigError, self.load, "[objectnode]\n")
        self.assertEqual(str(err), f"{self.dir / 'objectnode.conf'}: [objectnode]: devices: /srv/node: no such directory")

    def test_errors(self) -> None:
        err = self.assertRaises(ConfigError, self.load, "[objectnode]\ndevices = devs\nmount_check = sometimes\n")
        self.assertIn("[objectnode]: mount_check: 'sometimes' is not a boolean", str(err))

    def test_replication_tls_options_moved_to_cluster_tls(self) -> None:
        base = "[objectnode]\ndevices = devs\n[replication]\nbind_port = 6211\n"
        settings = self.load(base)
        self.assertEqual((settings.replication.bind_port, settings.cluster_tls), (6211, None))
        err = self.assertRaises(ConfigError, self.load, base + "tls_ca = ca.crt\n")
        self.assertIn("[replication]: tls_ca: moved to [cluster-tls]", str(err))

    def test_daemon_sections_become_typed_settings(self) -> None:
        """Each daemon's section is its settings class: what the file sets, the schema's defaults for the rest."""
        settings = self.load(
            "[objectnode]\ndevices = devs\n[object-auditor]\nfiles_per_second = 5\n"
            "[account-reaper]\nenabled = false\ndelay_reaping = 60\n"
        )
        daemons = settings.daemons
        self.assertEqual(set(daemons.sections()), set(DAEMONS))
        self.assertEqual(daemons.object_auditor, ObjectAuditorSettings(
            enabled=True, interval=1800.0, files_per_second=5.0, bytes_per_second=10 * 1024 * 1024,
            zero_byte_only=False,
        ))
        self.assertEqual(daemons.section("account-reaper"), ReaperSettings(enabled=False, interval=3600.0,
                                                                         delay_reaping=60.0))
        self.assertEqual(daemons.container_replicator, DEFAULT_DAEMONS.container_replicator)
        self.assertEqual(settings.replication, ReplicationSettings.defaults())
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, daemons.object_auditor, "interval", 1.0)

    def test_settings_classes_match_the_schema(self) -> None:
        """Every option of a daemon's section is a field of its settings class, and no more."""
        for name, settings in DEFAULT_DAEMONS.sections().items():
            options = {option.name for option in SCHEMA.section_for(name).options}
            self.assertEqual({f.name for f in attrs.fields(type(settings))}, options, name)
        options = {option.name for option in SCHEMA.section_for(REPLICATION).options} - set(TLS_OPTIONS)
        self.assertEqual({f.name for f in attrs.fields(ReplicationSettings)}, options)


class SampleConfigTests(SynchronousTestCase):
    """The documented samples in conf/ load as they are (devices pointed at a real directory)."""

    def test_samples_load(self) -> None:
        import shutil
        from pathlib import Path

        import txstore

        conf = Path(txstore.__file__).resolve().parent.parent / "conf"
        directory = temp_dir(self)
        for name in ("txstore.conf", "proxy.conf", "objectnode.conf"):
            shutil.copy(conf / name, directory / name)
        proxy = load_proxy_settings(directory / "proxy.conf")
        self.assertEqual(proxy.max_file_size, 5 * 1024**3 + 2)
        self.assertEqual(len(proxy.users), 4)
        self.assertEqual(proxy.cluster.policies.default.name, "gold")
        text = (directory / "objectnode.conf").read_text().replace("devices = /srv/node", f"devices = {directory}")
        (directory / "objectnode.conf").write_text(text)
        node = load_node_settings(directory / "objectnode.conf")
        self.assertTrue(node.mount_check)
        self.assertEqual(node.max_file_size, 5 * 1024**3 + 2)
        self.assertEqual(node.threads_per_device, 4)
        (directory / "objectnode.conf").write_text(text.replace("threads_per_device = 4", "threads_per_device = 12"))
        self.assertEqual(load_node_settings(directory / "objectnode.conf").threads_per_device, 12)
        self.assertIs(node.direct_writes, True)
        (directory / "objectnode.conf").write_text(text.replace("direct_writes = true", "direct_writes = false"))
        self.assertIs(load_node_settings(directory / "objectnode.conf").direct_writes, False)
        self.assertIs(node.direct_reads, True)
        (directory / "objectnode.conf").write_text(text.replace("direct_reads = true", "direct_reads = false"))
        self.assertIs(load_node_settings(directory / "objectnode.conf").direct_reads, False)
        self.assertIs(node.disable_fallocate, False)
        (directory / "objectnode.conf").write_text(text.replace("disable_fallocate = false", "disable_fallocate = true"))
        self.assertIs(load_node_settings(directory / "objectnode.conf").disable_fallocate, True)
