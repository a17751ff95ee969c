"""Tests for txstore.conf: the hash secret and the storage policies."""

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.cluster import load_cluster_config
from txstore.common.config import ConfigError
from txstore.common.hashing import PathHasher
from txstore.common.policies import ERASURE_CODING, REPLICATION
from txstore.test.support import temp_dir, write_file


class ClusterConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)

    def load(self, text: str):
        return load_cluster_config(write_file(self.dir, "txstore.conf", text))

    def error(self, text: str) -> ConfigError:
        return self.assertRaises(ConfigError, self.load, text)

    def test_hash_secret(self) -> None:
        cluster = self.load("[txstore-hash]\nhash_path_prefix = p\nhash_path_suffix = s\n")
        self.assertEqual(cluster.hasher, PathHasher(b"p", b"s"))

    def test_missing_secret(self) -> None:
        err = self.error("[txstore-hash]\nhash_path_suffix =\n")
        self.assertIn("[txstore-hash]: hash_path_suffix: missing hash path secret", str(err))
        self.assertIn("missing hash path secret", str(self.error("[txstore-hash]\n")))
        self.assertIn("[txstore-hash]: required section is missing", str(self.error("[storage-policy:0]\nname = a\n")))

    def test_implicit_policy_zero(self) -> None:
        cluster = self.load("[txstore-hash]\nhash_path_suffix = s\n")
        self.assertEqual([(p.index, p.name, p.is_default) for p in cluster.policies], [(0, "Policy-0", True)])
        self.assertEqual(cluster.policies.default.ring_name, "object")

    def test_policies(self) -> None:
        cluster = self.load(
            """
            [txstore-hash]
            hash_path_suffix = s
            [storage-policy:0]
            name = gold
            aliases = yellow, orange
            [storage-policy:2]
            name = silver
            default = yes
            [storage-policy:3]
            name = ec42
            policy_type = erasure_coding
            ec_type = liberasurecode_rs_vand
            ec_num_data_fragments = 4
            ec_num_parity_fragments = 2
            ec_object_segment_size = 1MiB
            """
        )
        policies = cluster.policies
        self.assertEqual([p.index for p in policies], [0, 2, 3])
        self.assertEqual(policies.default.name, "silver")
        self.assertEqual(policies.by_name("YELLOW").index, 0)
        self.assertEqual(policies.by_index(2).ring_name, "object-2")
        ec = policies.by_index(3)
        self.assertEqual(ec.policy_type, ERASURE_CODING)
        self.assertEqual((ec.ec.num_data_fragments, ec.ec.fragments, ec.ec.segment_size), (4, 6, 2**20))
        self.assertEqual(policies.by_index(0).policy_type, REPLICATION)

    def test_single_policy_is_default(self) -> None:
        cluster = self.load("[txstore-hash]\nhash_path_suffix = s\n[storage-policy:1]\nname = one\n")
        self.assertEqual(cluster.policies.default.index, 1)

    def test_policy_errors(self) -> None:
        base = "[txstore-hash]\nhash_path_suffix = s\n"
        cases = [
            ("[storage-policy:0]\nname = a\n[storage-policy:1]\nname = A\n", "used by policies 0 and 1"),
            ("[storage-policy:0]\nname = a\n[storage-policy:1]\nname = b\n", "exactly one policy must be the default"),
            ("[storage-policy:0]\nname = a\ndefault = yes\n[storage-policy:1]\nname = b\ndefault = yes\n", "found 2"),
            ("[storage-policy:0]\nname = a b\n", "letters, digits"),
            ("[storage-policy:0]\nname = a\ndefault = yes\ndeprecated = yes\n", "cannot be deprecated"),
            ("[storage-policy:x]\nname = a\n", "[storage-policy:x]: unknown section"),
            ("[storage-policy:0]\n", "[storage-policy:0]: name: required option is missing"),
            ("[storage-policy:0]\nname = a\npolicy_type = mirror\n", "policy_type: 'mirror' is not one of"),
            ("[storage-policy:0]\nname = a\npolicy_type = erasure_coding\n", "ec_type: is required"),
            (
                "[storage-policy:0]\nname = a\npolicy_type = erasure_coding\nec_type = nope\n"
                "ec_num_data_fragments = 4\nec_num_parity_fragments = 2\n",
                "ec_type: pyeclib cannot use it",
            ),
        ]
        for text, words in cases:
            err = self.error(base + text)
            self.assertIn(words, str(err))
            self.assertTrue(str(err).startswith(str(self.dir / "txstore.conf")))
