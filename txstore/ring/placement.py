# -*- test-case-name: txstore.test.unit.test_builder -*-
"""
The rebalance engine: given a partition table and the devices, move as few replicas as
possible so that every device holds its share and replicas stay apart.

A rebalance works on the tier tree of ``txstore.ring.tiers`` (region → zone → host →
device), where every node has a *target* (replicas it should hold in total), a *cap* and a
*floor* (the most and the fewest replicas of one partition it should hold: its share
rounded up and down). It runs in three phases:

1. **Gather** the replicas that must move: unassigned ones (a new builder), those on
   removed devices (always), those on devices of weight 0, enough replicas of a partition
   that breaks a cap to bring it back under, and one replica of a partition that leaves a
   node below its floor (placing it again fills the floor). Partitions are found by
   counting the distinct host-tuples of the table, which C code does quickly: only the
   partitions that need work are visited in Python.
2. **Place** each gathered replica by walking down the tree. At each level, among the
   children that can take it (under their cap, with a device free), prefer one below its
   floor for this partition, then one that still wants parts, then the one that wants the
   most (past its cap, the one nearest its floor). The floor keeps each node at its share
   rounded down or up in every partition (a region with share 2.06 holds 2 or 3 replicas,
   never 1), so that when a share later crosses a whole number only the few partitions
   beyond it have to move. Taking the most wanted keeps what the nodes still want level,
   so they run out together and the last partitions placed are not squeezed; replicas a
   node is owed by the floors of partitions still to place are reserved, not counted as
   wanted, or it would fill up early and overflow when the floors arrive. A random jitter
   below one part breaks near-ties, so that the partners of a device are spread instead of
   falling into a fixed cycle.
3. **Balance**, a few passes. Devices holding more than their target rounded up, most over
   first, offer partitions; each is taken out and placed again as in 2, and moves only if
   it lands on a device below its target and lowers the sum over all tree nodes of
   (assigned - target)²; otherwise it stays (a move between two over-full devices would
   only have to be followed by another). When the walk finds nothing better, a rationed
   fallback looks at every device below target for the best taker. Trying partitions this
   way also finds the ones that *can* move, whose other replicas do not block the wanting
   devices. Then devices still a part or more short *pull*: they take a replica of any
   partition from whichever holder the same measure says, where the caps allow. That
   completes chains a push cannot start (an over-full device all of whose partitions are
   blocked gives to a device at its target, which then pulls from elsewhere). Balance
   moves never take a node below its floor, and each lowers the measure, so passes end.

``min_part_hours``: a partition one of whose replicas moved less than that many hours ago
is not touched by phases 1 and 3 (one replica of a partition in flight at a time), except
for replicas on removed devices, which always move. The first rebalance of a builder
places data that does not exist yet, so it moves and marks nothing.

Counts per tree node are kept up to date as replicas move, so placing a replica costs the
sum of the fan-outs on its way down, not the number of devices.

**The first rebalance** of a builder (an empty table) does not walk the tree once per
replica: it *fills* it a tier at a time (``Placer.fill_all``). Every node's target is made
a whole number (largest remainder, parents first), and each node's replicas of every
partition, a byte per partition, are split among its children at once: each child gets its
floor of every partition, and the replicas left over go one each to children chosen at
random in proportion to what they still need, in layers when a partition has several left
over, corrected until every child has exactly its whole target and no partition has two
in a child of cap 1 (``split_holdings``). The byte strings are handled with C-level
operations, so Python code runs per correction, not per replica: at part power 18 this is
several times quicker than placing replica by replica, and as good (every node within one
replica of its target, every partition at its floors and under its caps). The order of a
partition's replicas in the table is shuffled, so that row 0 is not always the last region
filled. A topology the fill cannot split (a fan-out above 254, or corrections that run out
of tries, which only contrived cases do) is placed replica by replica as in 2.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from itertools import compress, repeat

from attrs import define, field

from txstore.ring.device import Device
from txstore.ring.errors import RingBuilderError
from txstore.ring.tiers import DEVICE, HOST, TIER_NAMES, TierTree, format_tier, replica_cap, replica_floor

#: Balance passes at most; each pass usually halves what is left to fix.
MAX_BALANCE_PASSES = 8
#: Per over-full device and pass, how often a push may look at every device for a home.
FALLBACK_TRIES = 32
UNASSIGNED = -1
_EPSILON = 1e-9


@define
class PlacementOutcome:
    tables: list[array]
    #: Partitions a replica of which moved (they moved at the placer's ``now``).
    moved_parts: set[int]
    parts_moved: int
    replicas_moved: int
    replicas_placed: int
    passes: int


@define
class Placer:
    """The working state of one rebalance (see the module docstring)."""

    part_power: int
    replicas: int
    devices: Sequence[Device]
    overload: float
    min_part_hours: float
    now: float
    rng: random.Random
    #: One row per replica, partition → device id (-1: unassigned), changed in place.
    tables: list[array]
    #: When each partition last moved before this rebalance; read, not changed (the moves
    #: of this one are ``moved_parts``), so the builder need not copy it.
    moved_at: array
    initial: bool
    #: Told what each phase did, as it ends (``txstore-ring rebalance`` shows it on long runs).
    progress: Callable[[str], None] = field(default=lambda _message: None, kw_only=True)
    tree: TierTree = field(init=False)
    target: list[float] = field(init=False)
    cap: list[int] = field(init=False)
    floor: list[int] = field(init=False)
    #: Nodes whose floor is at least 1: every partition should have a replica there.
    floored: list[int] = field(init=False)
    assigned: list[int] = field(init=False)
    #: Replicas a node is owed by partitions still being placed (below its floor there):
    #: they will come anyway, so they do not count as wanted when ranking.
    reserved: list[int] = field(init=False)
    dev_node: dict[int, int] = field(init=False)
    moved_parts: set[int] = field(init=False, factory=set)
    replicas_moved: int = field(init=False, default=0)
    replicas_placed: int = field(init=False, default=0)
    _key_scale: float = field(init=False)
    _class_scale: float = field(init=False)
    _key_parts_cache: list[list[tuple[int, int, tuple[float, ...]]]] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.tree = TierTree.build(self.devices)
        if self.tree.capacity[0] < self.replicas:
            raise RingBuilderError(
                f"{self.replicas} replicas need at least {self.replicas} devices with "
                f"weight > 0; there are {self.tree.capacity[0]}"
            )
        count = 1 << self.part_power
        shares = self.tree.shares(self.replicas, self.overload)
        self.target = [share * count for share in shares]
        self.cap = [replica_cap(share) for share in shares]
        self.floor = [replica_floor(share) for share in shares]
        self.floored = [node for node, value in enumerate(self.floor) if value > 0 and node]
        for node, dev in enumerate(self.tree.node_dev):
            if dev >= 0:
                self.cap[node] = 1
        self.dev_node = {dev: path[-1] for dev, path in self.tree.dev_path.items()}
        self.assigned = [0] * len(self.tree)
        self.reserved = [0] * len(self.tree)
        for row in self.tables:
            for dev, n in Counter(row).items():
                self._add(dev, n)
        # The placement key packs (class, distance from the floor, wanted + jitter) into one
        # float, much cheaper than building tuples. |wanted| < 2*P*R (with reserves) and
        # |here - floor| <= R keep the three apart.
        self._key_scale = 4.0 * count * self.replicas + 8.0
        self._class_scale = self._key_scale * (2 * self.replicas + 3)
        self._key_parts_cache = self._key_parts()

    # -- bookkeeping -----------------------------------------------------------------------

    def _add(self, dev: int, n: int) -> None:
        path = self.tree.dev_path.get(dev)
        if path is not None:
            assigned = self.assigned
            for node in path:
                assigned[node] += n

    def _locked(self, part: int) -> bool:
        if self.initial or self.min_part_hours <= 0:
            return False
        return part in self.moved_parts or self.now - self.moved_at[part] < self.min_part_hours * 3600.0

    def _part_counts(self, part: int, skip: Iterable[int] = ()) -> dict[int, int]:
        """Replicas of ``part`` per node, over active devices, leaving out rows ``skip``."""
        counts: dict[int, int] = {}
        dev_path = self.tree.dev_path
        for index, row in enumerate(self.tables):
            if index in skip:
                continue
            path = dev_path.get(row[part])
            if path is None:
                continue
            for node in path:
                counts[node] = counts.get(node, 0) + 1
        return counts

    def _set(self, part: int, index: int, dev: int, origin: int) -> None:
        self.tables[index][part] = dev
        self._add(dev, 1)
        if dev == origin:
            return
        if origin == UNASSIGNED:
            self.replicas_placed += 1
            return
        if self.initial:
            return
        self.replicas_moved += 1
        self.moved_parts.add(part)

    # -- choosing a device -----------------------------------------------------------------

    def _key_parts(self) -> list[list[tuple[int, int, tuple[float, ...]]]]:
        """
        For ``_choose``, per node: its children as (child, capacity, base) where ``base[h]``
        is the part of the child's key that depends only on ``h``, the replicas of the
        partition already there (at most the replica count): the class for being under
        the cap and below the floor, less the distance from the floor, each scaled. Whole
        numbers, exact as floats.
        """
        tree = self.tree
        cap, floor = self.cap, self.floor
        key_scale, class_scale = self._key_scale, self._class_scale
        return [
            [
                (
                    child,
                    tree.capacity[child],
                    tuple(
                        ((here < cap[child]) * 4 + (here < floor[child]) * 2) * class_scale
                        - (here - floor[child]) * key_scale
                        for here in range(min(tree.capacity[child], self.replicas + 1))
                    ),
                )
                for child in kids
            ]
            for kids in tree.children
        ]

    def _choose(self, part: int, counts: dict[int, int]) -> int:
        """The device a replica of ``part`` should go to, given its other replicas."""
        key_parts = self._key_parts_cache
        target, assigned, reserved = self.target, self.assigned, self.reserved
        jitter = self.rng.random
        class_scale = self._class_scale
        get = counts.get
        node = 0
        kids = key_parts[0]
        while kids:
            best = -1
            best_key = -math.inf
            for child, capacity, base in kids:
                here = get(child, 0)
                if here >= capacity:
                    continue
                wanted = target[child] - assigned[child] - reserved[child]
                # The key: (4 x under cap + 2 x below floor + wanting) x class scale
                # - (here - floor) x key scale + wanted + jitter. Its whole part is exact
                # however it is added up, so the key is the same float as computed at once.
                if wanted > 0:
                    key = base[here] + class_scale + wanted + jitter()
                else:
                    key = base[here] + wanted + jitter()
                if key > best_key:
                    best = child
                    best_key = key
            if best < 0:
                raise RingBuilderError(f"no device can take another replica of partition {part}")
            node = best
            kids = key_parts[node]
        return self.tree.node_dev[node]

    # -- phase 1 and 2: gather and place ---------------------------------------------------

    def _bad_host_tuples(self, combos: Iterable[tuple[int, ...]]) -> set[tuple[int, ...]]:
        """Host-tuples of partitions with an unplaced replica, a broken cap or floor."""
        parents = _parents(self.tree)
        cap, floor = self.cap, self.floor
        floored = [node for node in self.floored if self.tree.depth[node] < DEVICE]
        bad = set()
        for combo in combos:
            if -1 in combo:
                bad.add(combo)
                continue
            counts: dict[int, int] = {}
            for host in combo:
                node = host
                while node:
                    counts[node] = counts.get(node, 0) + 1
                    node = parents[node]
            if any(n > cap[node] for node, n in counts.items()) or any(
                counts.get(node, 0) < floor[node] for node in floored
            ):
                bad.add(combo)
        return bad

    def gather(self) -> dict[int, list[int]]:
        """Partition → replica rows to place again, in partition order."""
        pending: dict[int, list[int]] = {}
        mapped = self.tree.host_rows(self.tables)
        combos = Counter(zip(*mapped))
        bad = self._bad_host_tuples(combos)
        if not bad:
            return pending
        present = {dev.id for dev in self.devices}
        dev_path = self.tree.dev_path
        parts = [part for part, combo in enumerate(zip(*mapped)) if combo in bad]
        locks = self.min_part_hours > 0 and not self.initial
        for part in parts:
            rows: list[int] = []
            blocked = self._locked(part)
            for index, table in enumerate(self.tables):
                dev = table[part]
                if dev == UNASSIGNED:
                    rows.append(index)
                elif dev not in present:  # removed devices: always, and it counts as a move
                    rows.append(index)
                    blocked = blocked or locks
            for index, table in enumerate(self.tables):
                dev = table[part]
                if dev in present and dev not in dev_path and not blocked:  # weight 0: drain
                    rows.append(index)
                    blocked = locks
            if not blocked:
                self._gather_cap_breakers(part, rows)
            if not blocked and not rows:
                self._gather_floor_fillers(part, rows)
            if rows:
                pending[part] = rows
        return pending

    def _gather_cap_breakers(self, part: int, rows: list[int]) -> None:
        """Add to ``rows`` the replicas of ``part`` that must leave a node over its cap."""
        dev_path = self.tree.dev_path
        while True:
            counts = self._part_counts(part, rows)
            over = [node for node, n in counts.items() if n > self.cap[node]]
            if not over:
                return
            candidates = []
            for index, table in enumerate(self.tables):
                if index in rows:
                    continue
                path = dev_path.get(table[part])
                if path is None or not any(node in path for node in over):
                    continue
                node = path[-1]
                excess = self.assigned[node] - self.target[node]
                candidates.append((excess, -index, index))
            index = max(candidates)[2]
            self._add(self.tables[index][part], -1)
            rows.append(index)
            if self.min_part_hours > 0 and not self.initial:
                return  # one replica of a partition in flight at a time

    def _gather_floor_fillers(self, part: int, rows: list[int]) -> None:
        """
        Add to ``rows`` a replica of ``part`` that can leave its place for a node below
        its floor (placing it again fills the floor first), if the partition has one.
        """
        counts = self._part_counts(part, rows)
        floor = self.floor
        if all(counts.get(node, 0) >= floor[node] for node in self.floored):
            return
        candidates = []
        for index, table in enumerate(self.tables):
            path = self.tree.dev_path.get(table[part])
            if path is None or any(counts.get(node, 0) - 1 < floor[node] for node in path):
                continue
            node = path[-1]
            candidates.append((self.assigned[node] - self.target[node], -index, index))
        if candidates:
            index = max(candidates)[2]
            self._add(self.tables[index][part], -1)
            rows.append(index)

    def _breaks_floor(self, src: int, dest: int, counts: dict[int, int]) -> bool:
        """Whether moving a replica from ``src`` to ``dest`` leaves a node below its floor."""
        dest_path = self.tree.dev_path[dest]
        floor = self.floor
        return any(
            counts.get(node, 0) < floor[node]
            for node in self.tree.dev_path[src]
            if node not in dest_path
        )

    def place(self, pending: dict[int, list[int]]) -> None:
        order = list(pending)
        self.rng.shuffle(order)
        reserved = self.reserved
        floor = self.floor
        for part in order:
            counts = self._part_counts(part, pending[part])
            for node in self.floored:
                reserved[node] += max(0, floor[node] - counts.get(node, 0))
        tenth = max(1, len(order) // 10)
        for done, part in enumerate(order, 1):
            rows = pending[part]
            counts = self._part_counts(part, rows)
            for index in rows:
                origin = self.tables[index][part]
                dev = self._choose(part, counts)
                self._set(part, index, dev, origin)
                self._count_in(dev, counts)
            if done % tenth == 0 and done < len(order):
                self.progress(f"placing: {done} of {len(order)} partitions")
        self.reserved = [0] * len(self.tree)

    def _count_in(self, dev: int, counts: dict[int, int]) -> None:
        """Add a replica placed on ``dev`` to a partition's ``counts``, paying off reserves."""
        floor = self.floor
        reserved = self.reserved
        for node in self.tree.dev_path[dev]:
            here = counts.get(node, 0)
            if here < floor[node]:
                reserved[node] -= 1
            counts[node] = here + 1

    def place_all(self) -> None:
        """Phase 2 for a table with nothing assigned: every partition, every replica."""
        count = 1 << self.part_power
        order = list(range(count))
        self.rng.shuffle(order)
        tables = self.tables
        for node in self.floored:
            self.reserved[node] = self.floor[node] * count
        tenth = max(1, count // 10)
        for done, part in enumerate(order, 1):
            counts: dict[int, int] = {}
            for index in range(self.replicas):
                dev = self._choose(part, counts)
                tables[index][part] = dev
                self._add(dev, 1)
                self._count_in(dev, counts)
            if done % tenth == 0 and done < count:
                self.progress(f"placing: {done} of {count} partitions")
        self.reserved = [0] * len(self.tree)
        self.replicas_placed += self.replicas * count

    # -- phase 2 for an empty table, in bulk ------------------------------------------------

    def whole_targets(self) -> list[int] | None:
        """
        Every node's target as a whole number of replicas: the root's is every replica, and
        each node's is split among its children by largest remainder of their targets, each
        kept between floor × partitions and cap × partitions. ``None`` if that cannot be done.
        """
        count = 1 << self.part_power
        tree = self.tree
        whole = [0] * len(tree)
        whole[0] = round(self.target[0])
        for node in tree.top_down():
            kids = tree.children[node]
            if not kids:
                continue
            real = [self.target[c] for c in kids]
            scale = whole[node] / sum(real) if sum(real) > 0 else 0.0
            wanted = [value * scale for value in real]
            low = [self.floor[c] * count for c in kids]
            high = [min(self.cap[c], tree.capacity[c]) * count for c in kids]
            shares = [min(high[i], max(low[i], math.floor(w + _EPSILON))) for i, w in enumerate(wanted)]
            left = whole[node] - sum(shares)
            # Largest remainder first; a child at its bound is passed over.
            by_remainder = sorted(range(len(kids)), key=lambda i: shares[i] - wanted[i])
            while left:
                step = 1 if left > 0 else -1
                order = by_remainder if step > 0 else by_remainder[::-1]
                for i in order:
                    if left and low[i] <= shares[i] + step <= high[i]:
                        shares[i] += step
                        left -= step
                if left and all(not low[i] <= shares[i] + step <= high[i] for i in order):
                    return None
            for child, share in zip(kids, shares):
                whole[child] = share
        return whole

    def fill_all(self) -> bool:
        """
        Phase 2 for a table with nothing assigned, tier by tier instead of replica by
        replica (see ``split_holdings``); ``False``, with nothing placed, if the topology is
        one it does not handle (the caller then places replica by replica).
        """
        count = 1 << self.part_power
        tree = self.tree
        whole = self.whole_targets()
        if whole is None or self.replicas > 255:
            return False
        # A node's holdings, compacted to the partitions it holds: their numbers, and how
        # many replicas of each (a byte each).
        held_by: dict[int, Sequence[int]] = {}
        pending: list[tuple[int, Sequence[int], bytes]] = [(0, range(count), bytes([self.replicas]) * count)]
        while pending:
            node, parts, held = pending.pop()
            kids = tree.children[node]
            if not kids:
                held_by[tree.node_dev[node]] = parts
                continue
            split = split_holdings(
                held,
                [self.floor[c] for c in kids],
                [min(self.cap[c], tree.capacity[c]) for c in kids],
                [whole[c] for c in kids],
                self.rng,
            )
            if split is None:
                return False
            for child, child_held in zip(kids, split):
                pending.append((child, array("I", compress(parts, child_held)), bytes(compress(child_held, child_held))))
            depth = tree.depth[node]
            if depth < HOST:
                self.progress(f"placing: {format_tier(tree.tiers[node])} split among its {TIER_NAMES[depth + 1]}s")
        # Each device's partitions into the table with C-level maps, not a Python loop per
        # replica. A partition's holders come in tree order, so the order is shuffled: each
        # partition gets one of 2R orders (rotated, maybe reversed) at random, else row 0
        # would mostly be in the last region, and a device's partitions in row order would
        # come in runs of one kind (the balance passes read them in that order).
        rows = self.tables
        replicas = self.replicas
        orders = 2 * replicas if replicas <= 8 else 1
        # A byte per partition: its order × 16 + how many holders it has so far.
        state = bytearray(self.rng.randbytes(count).translate(_table(lambda v: v * orders // 256 * 16)))
        step = _table(lambda v: min(v + 1, 255))
        to_row = [
            _table(lambda v, index=index: int(_row_in_order(v // 16, v % 16, replicas) == index))
            for index in range(replicas)
        ]
        for dev, parts in held_by.items():
            where = bytes(map(state.__getitem__, parts))
            for row, pick in zip(rows, to_row):
                chosen = compress(parts, where.translate(pick))
                deque(map(row.__setitem__, chosen, repeat(dev)), maxlen=0)
            deque(map(state.__setitem__, parts, where.translate(step)), maxlen=0)
            self._add(dev, len(parts))
        self.replicas_placed += self.replicas * count
        return True

    # -- phase 3: balance ------------------------------------------------------------------

    def balance(self) -> int:
        """Run balance passes; the number of passes that moved something."""
        if not self._unbalanced():
            return 0  # as the fill leaves a table: no need to list each device's partitions
        # Partition numbers as 4-byte arrays: a list of ints would cost 36 bytes a replica.
        dev_parts: dict[int, array] = {dev: array("I") for dev in self.dev_node}
        for row in self.tables:
            for part, dev in enumerate(row):
                held = dev_parts.get(dev)
                if held is not None:
                    held.append(part)
        passes = 0
        for _ in range(MAX_BALANCE_PASSES):
            moved = self._balance_pass(dev_parts)
            moved += self._pull_pass(dev_parts)
            if not moved:
                break
            passes += 1
            self.progress(f"balance pass {passes}: {moved} replicas moved")
        return passes

    def _unbalanced(self) -> bool:
        """Whether a device is over its target rounded up, or a part or more short of it."""
        target, assigned = self.target, self.assigned
        return any(
            assigned[node] > math.ceil(target[node] - _EPSILON)
            or target[node] - assigned[node] >= 1 - _EPSILON
            for node in self.dev_node.values()
        )

    def _balance_pass(self, dev_parts: dict[int, array]) -> int:
        target, assigned = self.target, self.assigned
        over = []
        for dev, node in self.dev_node.items():
            excess = assigned[node] - math.ceil(target[node] - _EPSILON)
            if excess > 0:
                over.append((-excess / target[node], self.rng.random(), dev))
        over.sort()
        moved = 0
        for _, _, dev in over:
            node = self.dev_node[dev]
            surplus = assigned[node] - math.ceil(target[node] - _EPSILON)
            held = dev_parts[dev]
            if surplus <= 0 or not held:
                continue
            budget = 4 * surplus + 16
            fallbacks = FALLBACK_TRIES
            start = self.rng.randrange(len(held))
            for step in range(len(held)):
                if surplus <= 0 or budget <= 0:
                    break
                part = held[(start + step) % len(held)]
                if self._locked(part):
                    continue
                index = self._row_of(part, dev)
                if index is None:
                    continue
                budget -= 1
                counts = self._part_counts(part, (index,))
                self._add(dev, -1)
                dest = self._choose(part, counts)
                self._add(dev, 1)
                dest_node = self.dev_node[dest]
                if not (
                    dest != dev
                    and target[dest_node] - assigned[dest_node] > _EPSILON
                    and not self._breaks_floor(dev, dest, counts)
                    and self._move_gain(dev, dest) > _EPSILON
                ):
                    if fallbacks <= 0:
                        continue
                    fallbacks -= 1
                    found = self._best_destination(dev, counts)
                    if found is None:
                        continue
                    dest = found
                self._add(dev, -1)
                self._set(part, index, dest, dev)
                dev_parts[dest].append(part)
                surplus -= 1
                moved += 1
        return moved

    def _pull_pass(self, dev_parts: dict[int, array]) -> int:
        """
        Devices at least one part short take a replica straight from any device that needs
        it less, wherever the caps allow: this finishes what pushing from over-full devices
        cannot, when all the partitions of an over-full device are blocked (say, both other
        replicas sit in the one region that wants parts).
        """
        target, assigned = self.target, self.assigned
        cap, floor = self.cap, self.floor
        dev_path = self.tree.dev_path
        tables = self.tables
        count = 1 << self.part_power
        under = []
        for dev, node in self.dev_node.items():
            short = target[node] - assigned[node]
            if short >= 1 - _EPSILON:
                under.append((-short / target[node], self.rng.random(), dev))
        under.sort()
        work_left = 2 * count
        moved = 0
        for _, _, dev in under:
            node = self.dev_node[dev]
            path = dev_path[dev]
            budget = min(count, 64 + 32 * math.floor(target[node] - assigned[node] + _EPSILON))
            start = self.rng.randrange(count)
            stride = self.rng.randrange(count) | 1  # odd: visits every partition once
            for step in range(count):
                short = target[node] - assigned[node]
                if short < 1 - _EPSILON or budget <= 0 or work_left <= 0:
                    break
                part = (start + step * stride) % count
                if self._locked(part):
                    continue
                budget -= 1
                work_left -= 1
                holders = [row[part] for row in tables]
                if dev in holders:
                    continue
                counts = self._part_counts(part)
                best = None
                for index, src in enumerate(holders):
                    src_path = dev_path.get(src)
                    if src_path is None:
                        continue
                    if not all(counts.get(n, 0) - (n in src_path) < cap[n] for n in path):
                        continue
                    if any(counts[n] - 1 < floor[n] for n in src_path if n not in path):
                        continue
                    gain = self._move_gain(src, dev)
                    if gain > _EPSILON and (best is None or gain > best[0]):
                        best = (gain, index, src)
                if best is None:
                    continue
                _, index, src = best
                self._add(src, -1)
                self._set(part, index, dev, src)
                dev_parts[dev].append(part)
                moved += 1
        return moved

    def _best_destination(self, src: int, counts: dict[int, int]) -> int | None:
        """
        When the walk down the tree finds no better home for a replica, the device below
        target that the replica may go to (caps, given the partition's other replicas in
        ``counts``) with the best gain, if any gains. Costs a look at every device, so it
        is rationed (``FALLBACK_TRIES``).
        """
        target, assigned = self.target, self.assigned
        cap = self.cap
        best = None
        best_gain = _EPSILON
        for dev, path in self.tree.dev_path.items():
            node = path[-1]
            if dev == src or target[node] - assigned[node] <= _EPSILON:
                continue
            if any(counts.get(n, 0) >= cap[n] for n in path) or self._breaks_floor(
                src, dev, counts
            ):
                continue
            gain = self._move_gain(src, dev)
            if gain > best_gain:
                best, best_gain = dev, gain
        return best

    def _move_gain(self, src: int, dest: int) -> float:
        """
        How much moving one replica from ``src`` to ``dest`` lowers the sum, over every
        node of the tree, of (assigned - target)²: the measure both balance moves must
        improve. Summing over all tiers keeps a move that suits two devices from unbalancing
        their regions or zones.
        """
        target, assigned = self.target, self.assigned
        src_path = self.tree.dev_path[src]
        dest_path = self.tree.dev_path[dest]
        gain = 0.0
        for node in dest_path:
            if node not in src_path:
                gain += 2.0 * (target[node] - assigned[node]) - 1.0
        for node in src_path:
            if node not in dest_path:
                gain += 2.0 * (assigned[node] - target[node]) - 1.0
        return gain

    def _row_of(self, part: int, dev: int) -> int | None:
        for index, row in enumerate(self.tables):
            if row[part] == dev:
                return index
        return None

    def run(self) -> PlacementOutcome:
        if self.initial and all(row.count(UNASSIGNED) == len(row) for row in self.tables):
            if not self.fill_all():
                self.place_all()
            self.progress(f"placed {self.replicas_placed} replicas")
        else:
            pending = self.gather()
            self.progress(f"{sum(map(len, pending.values()))} replicas of {len(pending)} partitions to place again")
            self.place(pending)
            self.progress(f"placed {self.replicas_placed} replicas, moved {self.replicas_moved}")
        passes = self.balance()
        return PlacementOutcome(
            tables=self.tables,
            moved_parts=self.moved_parts,
            parts_moved=len(self.moved_parts),
            replicas_moved=self.replicas_moved,
            replicas_placed=self.replicas_placed,
            passes=passes,
        )


def _parents(tree: TierTree) -> list[int]:
    parents = [0] * len(tree)
    for node, kids in enumerate(tree.children):
        for child in kids:
            parents[child] = node
    return parents


# -- the bulk fill of an empty table -------------------------------------------------------
#
# A node's holdings are a byte per partition: how many replicas of it the node holds. Byte
# strings are split with C-speed operations (``bytes.translate``, ``bytes.count``,
# ``itertools.compress``, and arithmetic on the whole string read as one integer, which
# works per byte as long as no byte overflows), so Python code runs only for the few
# corrections, not per replica.


def _row_in_order(order: int, rank: int, replicas: int) -> int:
    """The row of a partition's holder number ``rank`` under order ``order`` (of 2R)."""
    turn, backwards = divmod(order, 2)
    return (turn - rank if backwards else turn + rank) % replicas


def _as_int(data: bytes | bytearray) -> int:
    return int.from_bytes(data, "little")


def _as_bytes(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def _table(mapping: Callable[[int], int]) -> bytes:
    """A ``bytes.translate`` table: byte v becomes ``mapping(v)``."""
    return bytes(mapping(value) for value in range(256))


def _label_table(needs: Sequence[int]) -> bytes:
    """
    A table turning a random byte into a label 1..len(needs), label i+1 for about
    ``needs[i] / sum(needs)`` of the bytes.
    """
    total = sum(needs)
    table = bytearray(256)
    start = 0
    running = 0
    for label, need in enumerate(needs, 1):
        running += need
        end = round(256 * running / total) if total else 256
        table[start:end] = bytes([label]) * (end - start)
        start = end
    return bytes(table)


def split_holdings(
    held: bytes,
    floors: Sequence[int],
    caps: Sequence[int],
    totals: Sequence[int],
    rng: random.Random,
) -> list[bytes] | None:
    """
    Split a node's holdings (``held[p]``: replicas of partition ``p``) among its children:
    child ``i`` gets ``floors[i]`` replicas of every partition, then one more of
    ``totals[i] - floors[i] × partitions`` partitions chosen at random, never more than
    ``caps[i]`` of one partition and never two of one partition's replicas where it takes
    one more. The holdings of each child, or ``None`` if these numbers do not fit together
    or the corrections below run out of tries (the caller then falls back).

    The extra replicas of a partition are laid out in layers: layer j holds the partitions
    with more than j extras. Each layer gets random labels (a child's chance in proportion
    to what it still needs), then labels are changed one at a time until every child has
    exactly its total, and swapped within a layer where two layers gave one partition the
    same child. Children that must take an extra of every partition take them first.
    """
    size = len(held)
    base = sum(floors)
    if size == 0:
        return [b"" for _ in floors] if not any(totals) else None
    if min(held) < base:
        return None
    extras = held.translate(_table(lambda v: max(0, v - base)))
    result = [_as_int(bytes([floor]) * size) for floor in floors]
    takers = []
    for i, (floor, cap, total) in enumerate(zip(floors, caps, totals)):
        need = total - floor * size
        if need < 0 or need > (cap - floor) * size:
            return None
        if need:
            takers.append(i)
    needs = {i: totals[i] - floors[i] * size for i in takers}
    if sum(needs.values()) != sum(extras):
        return None
    while takers:
        # A child that needs an extra of every partition that has one takes them all.
        having = size - extras.count(0)
        full = [i for i in takers if needs[i] == having]
        if not full:
            break
        mask = extras.translate(_table(lambda v: int(v > 0)))
        for i in full:
            if needs[i] != size - extras.count(0):
                return None
            result[i] += _as_int(mask)
            extras = _as_bytes(_as_int(extras) - _as_int(mask), size)
            mask = extras.translate(_table(lambda v: int(v > 0)))
            needs[i] = 0
            takers.remove(i)
        if any(needs[i] > size - extras.count(0) for i in takers):
            return None
    layers = max(extras)
    if layers and (len(takers) > 254 or layers > len(takers)):
        return None
    labels = _random_labels(extras, layers, [needs[i] for i in takers], rng)
    if labels is None:
        return None
    for label, i in enumerate(takers, 1):
        picked = _table(lambda v: int(v == label))
        for layer in labels:
            result[i] += _as_int(layer.translate(picked))
    return [_as_bytes(value, size) for value in result]


def _random_labels(
    extras: bytes, layers: int, needs: list[int], rng: random.Random
) -> list[bytearray] | None:
    """Layers of labels as ``split_holdings`` describes them (0: no extra in this layer)."""
    size = len(extras)
    table = _label_table(needs)
    labels = []
    for layer in range(layers):
        present = extras.translate(_table(lambda v, layer=layer: 255 * (v > layer)))
        drawn = rng.randbytes(size).translate(table)
        labels.append(bytearray(_as_bytes(_as_int(drawn) & _as_int(present), size)))
    if not _correct_counts(labels, needs, rng):
        return None
    if not _separate_layers(labels, extras, rng):
        return None
    return labels


def _correct_counts(labels: list[bytearray], needs: list[int], rng: random.Random) -> bool:
    """Relabel single places until label l appears ``needs[l-1]`` times over the layers."""
    if not labels:
        return True
    size = len(labels[0])
    have = [sum(layer.count(label) for layer in labels) for label in range(1, len(needs) + 1)]
    over = [label for label in range(1, len(needs) + 1) for _ in range(have[label - 1] - needs[label - 1])]
    under = [label for label in range(1, len(needs) + 1) for _ in range(needs[label - 1] - have[label - 1])]
    rng.shuffle(under)
    tries = 64 * len(over) + 1024
    for source, dest in zip(over, under):
        while True:
            tries -= 1
            if tries < 0:
                return False
            layer = labels[rng.randrange(len(labels))]
            place = layer.find(source, rng.randrange(size))
            if place < 0:
                place = layer.find(source)
                if place < 0:
                    continue
            if all(other[place] != dest for other in labels):
                layer[place] = dest
                break
    return True


def _separate_layers(labels: list[bytearray], extras: bytes, rng: random.Random) -> bool:
    """
    Where two layers gave one partition the same label, swap that label in one of them with
    the label of another partition of that layer that can take it (counts do not change).
    """
    size = len(extras)
    for later in range(1, len(labels)):
        layer = labels[later]
        present = _as_int(extras.translate(_table(lambda v, later=later: int(v > later))))
        clashes: list[int] = []
        for earlier in range(later):
            same = _as_bytes(_as_int(labels[earlier]) ^ _as_int(layer), size)
            clash = _as_int(same.translate(_table(lambda v: int(v == 0)))) & present
            clashes.extend(compress(range(size), _as_bytes(clash, size)))
        # Most clashes mend each other: two with different labels swap (sorted by label,
        # the first half against the second); the rest swap with random places.
        clashes.sort(key=layer.__getitem__)
        half = len(clashes) // 2
        for place, other_place in zip(clashes[:half], clashes[half:]):
            if _swappable(labels, layer, place, other_place):
                layer[place], layer[other_place] = layer[other_place], layer[place]
        tries = 64 * len(clashes) + 1024
        done = labels[: later + 1]
        for place in clashes:
            while True:
                label = layer[place]
                holders = [other for other in done if other[place] == label]
                if len(holders) < 2:
                    break  # mended
                tries -= 1
                if tries < 0:
                    return False
                # Either layer may give way: the later one may hold no partition that can
                # take this label, when all its partitions already have it elsewhere.
                holder = rng.choice(holders)
                other_place = rng.randrange(size)
                if _swappable(labels, holder, place, other_place):
                    holder[place], holder[other_place] = holder[other_place], label
    return True


def _swappable(labels: list[bytearray], layer: bytearray, place: int, other_place: int) -> bool:
    """Whether swapping two labels of ``layer`` leaves neither clashing with another layer."""
    label, swap = layer[place], layer[other_place]
    if swap == 0 or swap == label:
        return False
    for other in labels:
        if other is not layer and (other[place] == swap or other[other_place] == label):
            return False
    return True
