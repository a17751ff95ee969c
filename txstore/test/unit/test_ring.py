"""Tests for txstore.ring: devices, the ring file format, and the runtime Ring."""

from __future__ import annotations

import gzip
import json
import os
import struct
import tracemalloc
from array import array
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txstore.common.hashing import PathHasher
from txstore.interfaces import IRing
from txstore.ring.builder import RingBuilder
from txstore.ring.device import Device, DeviceSearch, normalize_ip, parse_device_spec
from txstore.ring.errors import RingError
from txstore.ring.ring import Node, Ring, RingData, handoff_nodes, handoff_rank, primary_nodes
from txstore.ring.ringfile import BUILDER_MAGIC, RING_MAGIC, pack_file, write_atomically
from txstore.test.support import temp_dir


def device(
    dev_id: int, region: int = 1, zone: int = 1, ip: str = "10.0.0.1", weight: float = 100.0, **kw
) -> Device:
    return Device(
        id=dev_id,
        region=region,
        zone=zone,
        ip=ip,
        port=6200 + dev_id,
        device=f"sd{dev_id}",
        weight=weight,
        **kw,
    )


def small_ring() -> RingData:
    """Four devices, two replicas, part power 2, a hole at id 2."""
    devices = [device(0), device(1, zone=2), None, device(3, zone=3, ip="10.0.0.3")]
    rows = [[0, 1, 3, 0], [1, 3, 0, 3]]
    return RingData(devices, rows, 30)


def built_ring(
    regions: int = 3, zones: int = 2, hosts: int = 2, disks: int = 2, part_power: int = 8
) -> RingData:
    builder = RingBuilder(part_power, 3, 1)
    for r in range(1, regions + 1):
        for z in range(1, zones + 1):
            for h in range(hosts):
                for d in range(disks):
                    builder.add_dev(
                        region=r,
                        zone=z,
                        ip=f"10.{r}.{z}.{h}",
                        port=6200,
                        device=f"d{d}",
                        weight=100,
                    )
    builder.rebalance(seed=7)
    return builder.get_ring()


class DeviceTests(SynchronousTestCase):
    def test_replication_defaults(self) -> None:
        dev = device(3)
        self.assertEqual((dev.replication_ip, dev.replication_port), ("10.0.0.1", 6203))
        other = device(3, replication_ip="10.9.9.9", replication_port=7000)
        self.assertEqual((other.replication_ip, other.replication_port), ("10.9.9.9", 7000))
        self.assertEqual(dev.meta, "")
        self.assertEqual(dev.weight, 100.0)

    def test_frozen(self) -> None:
        dev = device(1)
        with self.assertRaises(AttributeError):
            dev.weight = 5  # type: ignore[misc]

    def test_validation(self) -> None:
        base = dict(id=0, region=1, zone=1, ip="10.0.0.1", port=6200, device="sda", weight=1)
        for key, bad in [
            ("id", -1),
            ("id", True),
            ("id", "1"),
            ("region", -1),
            ("zone", 1.5),
            ("port", 0),
            ("port", 70000),
            ("weight", -1),
            ("weight", float("inf")),
            ("weight", "heavy"),
            ("device", ""),
            ("device", "a/b"),
            ("device", "a b"),
            ("ip", ""),
            ("ip", "not an ip!"),
            ("meta", 5),
        ]:
            with self.assertRaises(ValueError, msg=f"{key}={bad!r}"):
                Device(**{**base, key: bad})  # type: ignore[arg-type]

    def test_ipv6_and_hostnames(self) -> None:
        self.assertEqual(normalize_ip("[::1]"), "::1")
        self.assertEqual(normalize_ip("0:0::1"), "::1")
        self.assertEqual(normalize_ip("Storage-1.Example"), "storage-1.example")
        dev = device(0, ip="[fe80::1]")
        self.assertEqual(dev.ip, "fe80::1")
        self.assertEqual(dev.describe(), "r1z1-[fe80::1]:6200/sd0")

    def test_dict_round_trip(self) -> None:
        dev = device(4, meta="ssd", replication_ip="10.1.1.1", replication_port=6300)
        self.assertEqual(Device.from_dict(dev.to_dict()), dev)
        self.assertEqual(json.loads(json.dumps(dev.to_dict())), dev.to_dict())
        self.assertRaises(ValueError, Device.from_dict, {**dev.to_dict(), "colour": "red"})
        values = dev.to_dict()
        del values["zone"]
        self.assertRaises(ValueError, Device.from_dict, values)

    def test_describe(self) -> None:
        self.assertEqual(device(0).describe(), "r1z1-10.0.0.1:6200/sd0")
        dev = device(1, replication_ip="10.0.1.1", replication_port=6301, meta="fast disk")
        self.assertEqual(dev.describe(), "r1z1-10.0.0.1:6201R10.0.1.1:6301/sd1_fast disk")


class DeviceSpecTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(
            parse_device_spec("r1z2-127.0.0.1:6200/d1"),
            {"region": 1, "zone": 2, "ip": "127.0.0.1", "port": 6200, "device": "d1", "meta": ""},
        )
        full = parse_device_spec("r2z3-127.0.0.1:6200R127.0.0.2:6201/d1_some meta")
        self.assertEqual(full["replication_ip"], "127.0.0.2")
        self.assertEqual(full["replication_port"], 6201)
        self.assertEqual(full["meta"], "some meta")
        self.assertEqual(full["region"], 2)
        self.assertEqual(parse_device_spec("z1-10.0.0.1:6200/sdb")["region"], 1)
        self.assertEqual(parse_device_spec("r1z1-[::1]:6200/sdb")["ip"], "::1")
        self.assertEqual(parse_device_spec("r1z1-node1.example:6200/sdb")["ip"], "node1.example")

    def test_round_trip_with_describe(self) -> None:
        dev = device(1, replication_ip="::2", replication_port=6301, meta="m")
        fields = parse_device_spec(dev.describe())
        self.assertEqual(Device(id=1, weight=100, **fields), dev)

    def test_errors(self) -> None:
        for bad in [
            "",
            "r1z1",
            "r1z1-127.0.0.1/d1",
            "r1z1-127.0.0.1:port/d1",
            "r1z1-127.0.0.1:6200",
            "r1z1-127.0.0.1:99999/d1",
            "1-127.0.0.1:6200/d1",
            "r1z1-127.0.0.1:6200/",
        ]:
            with self.assertRaises(ValueError, msg=repr(bad)):
                parse_device_spec(bad)


class DeviceSearchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.devs = [
            device(0, region=1, zone=1, ip="127.0.0.1"),
            device(1, region=1, zone=2, ip="127.0.0.1", meta="ssd"),
            device(3, region=2, zone=2, ip="127.0.0.2", replication_ip="127.0.1.2"),
        ]

    def find(self, text: str) -> list[int]:
        search = DeviceSearch.parse(text)
        return [dev.id for dev in self.devs if search.matches(dev)]

    def test_forms(self) -> None:
        self.assertEqual(self.find("d3"), [3])
        self.assertEqual(self.find("r1"), [0, 1])
        self.assertEqual(self.find("r1z2"), [1])
        self.assertEqual(self.find("z2"), [1, 3])
        self.assertEqual(self.find("127.0.0.1"), [0, 1])
        self.assertEqual(self.find("/sd1"), [1])
        self.assertEqual(self.find(":6200"), [0])
        self.assertEqual(self.find("r1z2-127.0.0.1:6201/sd1"), [1])
        self.assertEqual(self.find("r1z2-127.0.0.1:6201/sd1_ssd"), [1])
        self.assertEqual(self.find("_ssd"), [1])
        self.assertEqual(self.find("R127.0.1.2"), [3])
        self.assertEqual(self.find("d3r2z2-127.0.0.2:6203R127.0.1.2:6203/sd3"), [3])
        self.assertEqual(self.find("d9"), [])

    def test_errors(self) -> None:
        for bad in ["", "x", "d", "127.0.0.1/", "d1 d2", "r1z1-"]:
            with self.assertRaises(ValueError, msg=repr(bad)):
                DeviceSearch.parse(bad)


class RingDataTests(SynchronousTestCase):
    def test_properties(self) -> None:
        data = small_ring()
        self.assertEqual((data.part_power, data.partition_count, data.replica_count), (2, 4, 2))
        self.assertEqual(data.replica2part2dev[0].typecode, "H")
        self.assertEqual(list(data.replica2part2dev[1]), [1, 3, 0, 3])

    def test_round_trip(self) -> None:
        path = temp_dir(self) / "object.ring.gz"
        data = small_ring()
        data.save(path)
        self.assertEqual(RingData.load(path), data)
        self.assertEqual(data.to_bytes(), data.to_bytes())  # reproducible: no timestamp
        self.assertEqual(os.listdir(path.parent), ["object.ring.gz"])

    def test_wide_ids(self) -> None:
        devices: list[Device | None] = [None] * 70001
        devices[0] = device(0)
        devices[70000] = Device(
            id=70000, region=1, zone=2, ip="10.0.0.2", port=6200, device="sdz", weight=1
        )
        data = RingData(devices, [[0, 70000], [70000, 0]], 31)
        self.assertEqual(data.replica2part2dev[0].typecode, "I")
        loaded = RingData.from_bytes(data.to_bytes())
        self.assertEqual(list(loaded.replica2part2dev[0]), [0, 70000])
        self.assertEqual(loaded.devices[70000], devices[70000])

    def test_file_layout(self) -> None:
        """Magic, version, JSON document, then little-endian arrays: readable without txstore."""
        raw = gzip.decompress(small_ring().to_bytes())
        magic, version, size = struct.unpack_from("<8sHI", raw)
        self.assertEqual((magic, version), (RING_MAGIC, 1))
        document = json.loads(raw[14 : 14 + size])
        self.assertEqual(document["part_power"], 2)
        self.assertEqual(document["replica_count"], 2)
        self.assertEqual(document["dev_id_bytes"], 2)
        self.assertEqual(document["blobs"], [8, 8])
        self.assertIsNone(document["devices"][2])
        self.assertEqual(raw[14 + size :], struct.pack("<8H", 0, 1, 3, 0, 1, 3, 0, 3))

    def test_invalid_tables(self) -> None:
        with self.assertRaises(RingError) as caught:
            RingData([device(0)], [[0, 1, 0, 0]], 30)
        self.assertIn("unknown device", str(caught.exception))
        self.assertRaises(RingError, RingData, [device(0)], [[0, 0, 0]], 30)
        self.assertRaises(RingError, RingData, [device(0)], [], 30)
        self.assertRaises(RingError, RingData, [device(0)], [[0]], 33)

    def assert_load_error(self, data: bytes, *fragments: str) -> None:
        path = temp_dir(self) / "bad.ring.gz"
        path.write_bytes(data)
        with self.assertRaises(RingError) as caught:
            RingData.load(path)
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))
        self.assertIn(str(path), str(caught.exception))

    def test_load_errors(self) -> None:
        good = small_ring().to_bytes()
        self.assert_load_error(b"garbage", "not a gzip file")
        self.assert_load_error(good[: len(good) // 2], "truncated")
        self.assert_load_error(gzip.compress(b"short"), "too short")
        self.assert_load_error(gzip.compress(b"\x89NOTRING" + bytes(20)), "not a txstore file")
        self.assert_load_error(pack_file(BUILDER_MAGIC, 1, {}, []), "is a builder file")
        self.assert_load_error(pack_file(RING_MAGIC, 99, {}, []), "format version 99")
        self.assert_load_error(
            gzip.compress(struct.pack("<8sHI", RING_MAGIC, 1, 5) + b"{nope"), "corrupt document"
        )
        self.assert_load_error(pack_file(RING_MAGIC, 1, {"part_shift": 30}, []), "lacks")
        raw = gzip.decompress(good)
        self.assert_load_error(gzip.compress(raw + b"x"), "trailing bytes")
        self.assert_load_error(gzip.compress(raw[:-3]), "truncated")
        document = {"part_shift": 30, "replica_count": 1, "dev_id_bytes": 2, "devices": [None]}
        self.assert_load_error(
            pack_file(RING_MAGIC, 1, document, [struct.pack("<4H", 0, 0, 0, 0)]), "unknown device"
        )
        document["devices"] = [{"id": 5}]
        self.assert_load_error(pack_file(RING_MAGIC, 1, document, [bytes(8)]), "invalid device")

    def big_ring(self) -> RingData:
        """Part power 18, two replicas: each row is more than one chunk of reading and writing."""
        devices = [device(i, zone=i % 3 + 1) for i in range(100)]
        rows = [[(part * 7 + r) % 100 for part in range(1 << 18)] for r in range(2)]
        return RingData(devices, rows, 14)

    def test_large_ring_round_trip(self) -> None:
        path = temp_dir(self) / "object.ring.gz"
        data = self.big_ring()
        data.save(path)
        self.assertEqual(RingData.load(path), data)
        self.assertEqual(path.read_bytes(), data.to_bytes())
        raw = gzip.decompress(path.read_bytes())
        self.assertEqual(RingData.load(path).replica2part2dev[1].tobytes(), raw[-(1 << 19) :])
        # A file cut anywhere, even a chunk or more into the second row, is refused.
        for cut in (len(raw) - 1, len(raw) - (1 << 18) - 7, len(raw) // 2):
            self.assert_load_error(gzip.compress(raw[:cut]), "truncated")

    def test_rings_written_at_another_level_load(self) -> None:
        """Rings compressed as earlier txstores did (gzip level 6), or at any level, read alike."""
        data = self.big_ring()
        raw = gzip.decompress(data.to_bytes())
        for level in (0, 6, 9):
            self.assertEqual(RingData.from_bytes(gzip.compress(raw, level, mtime=0)), data)

    def test_a_huge_document_size_reads_what_is_there(self) -> None:
        """A corrupt size in the header is read against the file, not allocated up front."""
        data = gzip.compress(struct.pack("<8sHI", RING_MAGIC, 1, 0xFFFFFFF0) + b"{}")
        tracemalloc.start()
        try:
            self.assert_load_error(data, "corrupt document")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 16 << 20)

    def test_write_atomically_from_a_writer(self) -> None:
        target = temp_dir(self) / "x"
        write_atomically(target, lambda stream: stream.write(b"from a writer"))
        self.assertEqual(target.read_bytes(), b"from a writer")

        def broken(stream: object) -> None:
            raise ValueError("half written")

        self.assertRaises(ValueError, write_atomically, target, broken)
        self.assertEqual(target.read_bytes(), b"from a writer")
        self.assertEqual(os.listdir(target.parent), ["x"])

    def test_missing_file(self) -> None:
        with self.assertRaises(RingError) as caught:
            RingData.load(temp_dir(self) / "nope.ring.gz")
        self.assertIn("cannot read", str(caught.exception))

    def test_ring_and_builder_files_are_readable_by_every_user(self) -> None:
        """0644 as Swift's: the servers often run as another user than the operator's tools."""
        directory = temp_dir(self)
        small_ring().save(directory / "object.ring.gz")
        write_atomically(directory / "x.builder", b"data")
        for name in ("object.ring.gz", "x.builder"):
            self.assertEqual(os.stat(directory / name).st_mode & 0o777, 0o644, name)

    def test_write_atomically_cleans_up(self) -> None:
        directory = temp_dir(self)
        target = directory / "x"
        write_atomically(target, b"one")
        write_atomically(target, b"two")
        self.assertEqual(target.read_bytes(), b"two")
        self.assertEqual(os.listdir(directory), ["x"])
        self.assertRaises(OSError, write_atomically, directory / "missing" / "x", b"")


class RingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temp_dir(self)
        self.path = self.directory / "object.ring.gz"
        small_ring().save(self.path)
        self.clock = Clock()
        self.hasher = PathHasher(b"pre", b"suf")
        self.ring = Ring(self.path, self.hasher, reload_interval=15.0, clock=self.clock.seconds)

    def test_provides_iring(self) -> None:
        verifyObject(IRing, self.ring)

    def test_properties(self) -> None:
        ring = self.ring
        self.assertEqual((ring.part_power, ring.partition_count, ring.replica_count), (2, 4, 2))
        self.assertEqual([dev.id if dev else None for dev in ring.devices], [0, 1, None, 3])
        self.assertEqual(ring.path, os.fspath(self.path))
        self.assertIn("part_power=2", repr(ring))

    def test_get_part(self) -> None:
        for names in [("a",), ("a", "c"), ("a", "c", "o"), ("AUTH_test", "c", "\u00e9/x")]:
            self.assertEqual(self.ring.get_part(*names), self.hasher.partition(2, *names))

    def test_get_nodes(self) -> None:
        part, nodes = self.ring.get_nodes("a", "c", "o")
        self.assertEqual(part, self.hasher.partition(2, "a", "c", "o"))
        self.assertEqual(nodes, self.ring.get_part_nodes(part))
        self.assertEqual([node.index for node in nodes], [0, 1])
        self.assertEqual([node.handoff_index for node in nodes], [None, None])
        rows = small_ring().replica2part2dev
        self.assertEqual([node.id for node in nodes], [rows[0][part], rows[1][part]])

    def test_part_nodes(self) -> None:
        self.assertEqual([n.id for n in self.ring.get_part_nodes(1)], [1, 3])
        self.assertEqual([n.id for n in self.ring.get_part_nodes(3)], [0, 3])
        self.assertRaises(ValueError, self.ring.get_part_nodes, 4)
        self.assertRaises(ValueError, self.ring.get_part_nodes, -1)

    def test_node_properties(self) -> None:
        dev = device(
            7, region=2, zone=3, ip="10.0.0.7", replication_ip="10.1.0.7", replication_port=7007
        )
        node = Node(dev, index=1)
        self.assertEqual(
            (node.id, node.region, node.zone, node.ip, node.port, node.device_name),
            (7, 2, 3, "10.0.0.7", 6207, "sd7"),
        )
        self.assertEqual((node.replication_ip, node.replication_port), ("10.1.0.7", 7007))
        self.assertFalse(node.is_handoff)
        self.assertTrue(Node(dev, handoff_index=0).is_handoff)

    def test_reload_after_interval(self) -> None:
        replacement = RingData(small_ring().devices, [[3, 3, 3, 3], [0, 0, 0, 0]], 30)
        replacement.save(self.path)
        self.assertEqual(self.ring.get_part_nodes(0)[0].id, 0)  # not yet: within the interval
        self.clock.advance(14)
        self.assertEqual(self.ring.get_part_nodes(0)[0].id, 0)
        self.clock.advance(1)
        self.assertEqual(self.ring.get_part_nodes(0)[0].id, 3)
        self.assertEqual(self.ring.get_part_nodes(1)[1].id, 0)

    def test_reload_new_part_power(self) -> None:
        built_ring(part_power=6).save(self.path)
        self.clock.advance(15)
        self.assertEqual(self.ring.part_power, 6)
        self.assertEqual(self.ring.replica_count, 3)
        part, nodes = self.ring.get_nodes("a", "c", "o")
        self.assertEqual(part, self.hasher.partition(6, "a", "c", "o"))
        self.assertEqual(len(nodes), 3)

    def test_unchanged_file_not_reread(self) -> None:
        loads = []
        original = RingData.from_bytes

        def counting(data: bytes, what: str = "ring file") -> RingData:
            loads.append(what)
            return original(data, what)

        self.patch(RingData, "from_bytes", staticmethod(counting))
        self.clock.advance(100)
        self.ring.get_part_nodes(0)
        self.assertEqual(loads, [])

    def test_broken_replacement_keeps_old_ring(self) -> None:
        write_atomically(self.path, b"not a ring")
        self.clock.advance(15)
        self.assertEqual([n.id for n in self.ring.get_part_nodes(1)], [1, 3])
        self.assertRaises(RingError, self.ring.reload)
        small_ring().save(self.path)
        self.clock.advance(15)
        self.assertEqual([n.id for n in self.ring.get_part_nodes(1)], [1, 3])

    def test_vanished_file_keeps_old_ring(self) -> None:
        os.unlink(self.path)
        self.clock.advance(15)
        self.assertEqual(self.ring.replica_count, 2)

    def test_missing_or_bad_file(self) -> None:
        self.assertRaises(RingError, Ring, self.directory / "nope.ring.gz", self.hasher)
        bad = self.directory / "bad.ring.gz"
        bad.write_bytes(b"nope")
        self.assertRaises(RingError, Ring, bad, self.hasher)

    def test_default_clock(self) -> None:
        ring = Ring(Path(self.path), self.hasher)
        self.assertEqual(ring.reload_interval, 15.0)
        self.assertEqual(ring.replica_count, 2)


class HandoffTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = temp_dir(self)
        self.data = built_ring()
        self.data.save(directory / "r.ring.gz")
        self.ring = Ring(directory / "r.ring.gz", PathHasher())

    def distance(self, dev: Device, primaries: list[Node]) -> int:
        """0: a region without primaries, 1: such a zone, 2: such a host, 3: the rest."""
        if dev.region not in {n.region for n in primaries}:
            return 0
        if (dev.region, dev.zone) not in {(n.region, n.zone) for n in primaries}:
            return 1
        if (dev.region, dev.zone, dev.ip) not in {(n.region, n.zone, n.ip) for n in primaries}:
            return 2
        return 3

    def test_all_other_devices_farthest_first(self) -> None:
        live = {dev.id for dev in self.data.devices if dev is not None}
        for part in range(0, 256, 17):
            primaries = self.ring.get_part_nodes(part)
            handoffs = list(self.ring.get_more_nodes(part))
            self.assertEqual([n.handoff_index for n in handoffs], list(range(len(handoffs))))
            self.assertEqual([n.index for n in handoffs], [None] * len(handoffs))
            self.assertEqual({n.id for n in handoffs}, live - {n.id for n in primaries})
            self.assertEqual(len(handoffs), len({n.id for n in handoffs}))
            distances = [self.distance(n.device, primaries) for n in handoffs]
            self.assertEqual(distances, sorted(distances), part)

    def test_spread_within_class(self) -> None:
        """Two regions, one replica each: the first handoffs go to distinct zones and hosts."""
        data = built_ring(regions=2, zones=3, hosts=2, disks=2)
        for part in range(0, 256, 31):
            handoffs = list(handoff_nodes(data, part))
            primaries = primary_nodes(data, part)
            fresh_zones = {(d.region, d.zone) for d in data.devices if d} - {
                (n.region, n.zone) for n in primaries
            }
            first = handoffs[: len(fresh_zones)]
            self.assertEqual({(n.region, n.zone) for n in first}, fresh_zones)

    def test_deterministic_and_varied(self) -> None:
        self.assertEqual(list(self.ring.get_more_nodes(5)), list(self.ring.get_more_nodes(5)))
        firsts = {next(self.ring.get_more_nodes(part)).id for part in range(256)}
        self.assertGreater(len(firsts), 6)
        self.assertEqual(handoff_rank(3, 4), handoff_rank(3, 4))
        self.assertNotEqual(handoff_rank(3, 4), handoff_rank(4, 4))

    def test_zero_weight_devices_excluded(self) -> None:
        devices = [device(0), device(1, zone=2), device(2, zone=3, weight=0), device(3, zone=4)]
        data = RingData(devices, [[0, 0], [1, 1]], 31)
        self.assertEqual([n.id for n in handoff_nodes(data, 0)], [3])

    def test_lazy(self) -> None:
        nodes = self.ring.get_more_nodes(3)
        self.assertIsInstance(next(nodes), Node)
        self.assertRaises(ValueError, self.ring.get_more_nodes, 256)

    def test_primary_nodes_helper(self) -> None:
        self.assertEqual(primary_nodes(self.data, 9), self.ring.get_part_nodes(9))
        self.assertIsInstance(self.data.replica2part2dev[0], array)
