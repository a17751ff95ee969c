"""
Fault drills on a cluster of hosts made of network namespaces (issue 23): four object nodes in
two regions, a proxy and a client, each in a namespace of its own (`txstore.test.netns_cluster`).
Each drill ends with every acknowledged write read back byte-identical and every copy on its
primaries. Needs root and ``ip netns``; skipped otherwise.

The figures of each drill are logged (trial's test.log) and printed by
``benchmarks/netns_cluster.py``, which also runs longer variants.
"""

from __future__ import annotations

import random

from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from txstore.test import netns_drills
from txstore.test.netns_cluster import NetnsCluster, Spec, netem_available, unusable_reason
from txstore.test.tun_delay import Holder

log = Logger()


class HolderTests(SynchronousTestCase):
    """The userspace impairment's decisions, without a device."""

    def test_holds_each_packet_the_delay_in_order(self) -> None:
        holder = Holder(0.2, 0.0, random.Random(1))
        holder.offer(b"a", 10.0)
        holder.offer(b"b", 10.1)
        self.assertEqual(holder.due(10.19), [])
        self.assertAlmostEqual(holder.wait(10.19), 0.01)
        self.assertEqual(holder.due(10.2), [b"a"])
        self.assertEqual(holder.due(11.0), [b"b"])
        self.assertIsNone(holder.wait(11.0))
        self.assertEqual(holder.counters(), {"received": 2, "dropped": 0, "sent": 2, "held": 0})

    def test_drops_the_fraction_asked(self) -> None:
        holder = Holder(0.0, 0.05, random.Random(2))
        kept = sum(holder.offer(b"x", 0.0) for _ in range(20000))
        self.assertEqual(holder.dropped + kept, 20000)
        self.assertTrue(900 < holder.dropped < 1100, holder.dropped)
        self.assertEqual(len(holder.due(0.0)), kept)


class NamespaceDrillTests(TestCase):
    """Each test builds its own cluster and tears it down (namespaces, processes, files)."""

    timeout = 300
    node_options: dict = {}

    def setUp(self) -> None:
        reason = unusable_reason()
        if reason:
            raise SkipTest(reason)

    def cluster(self, **options) -> NetnsCluster:
        cluster = NetnsCluster(Spec(**options))
        self.addCleanup(cluster.teardown)
        cluster.build()
        cluster.write_configs()
        cluster.start()
        return cluster

    def check(self, figures: netns_drills.Figures) -> None:
        """What every drill must end with: copies all in place, nothing acknowledged lost."""
        log.info("{figures}", figures=figures.line())
        self.assertGreater(figures.acknowledged, 20, figures.line())
        self.assertEqual(figures.problems, {}, figures.line())
        self.assertEqual(figures.lost, 0)
        self.assertIsNotNone(figures.converge_seconds, figures.line())
        self.assertEqual(figures.dispersion, 100.0)
        self.assertEqual(figures.container_dispersion, 100.0)
        self.assertEqual(figures.sample_dispersion, {"container": 100.0, "object": 100.0})

    def test_proxy_node_link_cut_during_writes(self) -> None:
        """(a) The proxy loses host1 for 10 s: writes go on (to handoffs), and host1 catches up."""
        figures = netns_drills.proxy_node_cut(self.cluster())
        self.check(figures)
        self.assertGreater(figures.requests_during_fault, 4, figures.line())

    def test_node_node_link_cut_during_replication(self) -> None:
        """(b) host1-host2 cut while host2 is being filled; replication finishes after the mend."""
        figures = netns_drills.replication_cut(
            self.cluster(node_options={"object-replicator": {"bytes_per_second": "262144"}}))
        self.check(figures)
        notes = figures.notes
        # the cut came while host2 was still being filled, its sessions with host1 failed, and
        # after the mend host2 holds its whole share
        self.assertLess(notes["host2_objects_at_cut"], notes["host2_share"], figures.line())
        self.assertGreater(sum(p["failures"] for p in notes["host1_passes_over_the_cut"]), 0, figures.line())
        self.assertEqual(notes["host2_objects_at_end"], notes["host2_share"], figures.line())

    def test_host_partitioned_for_60_seconds(self) -> None:
        """(c) host3 off the network for 60 s during writes; the time until every copy is home."""
        figures = netns_drills.host_partition(self.cluster(), hold=60.0)
        self.check(figures)
        self.assertEqual(figures.failed_during_fault, 0, figures.line())

    def test_region_latency_and_loss(self) -> None:
        """(d) 200 ms and 5 % loss on region 2's links: reads and writes still succeed."""
        figures = netns_drills.region_impairment(self.cluster(), hold=20.0)
        self.check(figures)
        self.assertEqual(figures.failed, 0, figures.line())
        self.assertEqual(figures.notes["method"], "netem" if netem_available() else "tun")
        # the impairment was there: requests during it were slower
        self.assertGreater(figures.latency_ms["fault"]["p50"], figures.latency_ms["outside"]["p50"] + 150,
                           figures.line())
