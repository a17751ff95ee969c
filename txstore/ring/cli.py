# -*- test-case-name: txstore.test.unit.test_ring_cli -*-
"""
``txstore-ring``: make and inspect rings from the shell, the way ``swift-ring-builder`` does.

Every command loads the builder, changes it, and saves it back atomically only when the
whole command succeeded: ``add`` with three devices and a typo in the third adds none.
Commands that change the table (``rebalance``) also write the ring file next to the builder
(``object.builder`` → ``object.ring.gz``), which is what servers load.

Errors are one line on stderr, never a traceback. See ``USAGE`` for the exit statuses.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from attrs import define

from txstore.ring.builder import RingBuilder
from txstore.ring.device import Device, DeviceSearch, format_ip, parse_device_spec
from txstore.ring.errors import RingError
from txstore.ring.metrics import DRAINING_BALANCE
from txstore.ring.ringfile import RingData
from txstore.ring.tiers import TIER_NAMES

if TYPE_CHECKING:
    # Imported where used: txstore.ring.ring brings twisted and zope (~10 MB), hashing brings
    # hashlib and OpenSSL (~4 MB), and only get-nodes needs them; a rebalance's peak memory
    # would carry them.
    from txstore.common.hashing import PathHasher
    from txstore.ring.ring import Node

EXIT_OK = 0
EXIT_WARNING = 1
EXIT_ERROR = 2

USAGE = """\
usage: txstore-ring BUILDER create <part_power> <replicas> <min_part_hours>
       txstore-ring BUILDER [list]
       txstore-ring BUILDER add <device> <weight> [<device> <weight> ...]
       txstore-ring BUILDER remove <search> [<search> ...]
       txstore-ring BUILDER set-weight <search> <weight> [<search> <weight> ...]
       txstore-ring BUILDER set-overload <overload>
       txstore-ring BUILDER set-min-part-hours <hours>
       txstore-ring BUILDER rebalance [--seed N]
       txstore-ring BUILDER pretend-min-part-hours-passed
       txstore-ring BUILDER dispersion
       txstore-ring BUILDER write-ring
       txstore-ring RING get-nodes [--txstore-conf PATH] [--handoffs N] ACCOUNT [CONTAINER [OBJECT]]

  <device>    r<region>z<zone>-<ip>:<port>[R<replication ip>:<port>]/<name>[_<meta>]
              e.g. r1z1-10.0.0.1:6200/sdb1 or r1z2-[::1]:6200R[::1]:6300/sdb1_ssd
  <search>    d<id>r<region>z<zone>-<ip>:<port>R<ip>:<port>/<name>_<meta>, any part
              optional: d3, r1z2, 10.0.0.1, :6200, /sdb1, r1z2-10.0.0.1:6200/sdb1
  <overload>  a fraction (0.1) or a percentage (10%)
  RING        a ring file (object.ring.gz) or a builder file

Commands may be spelt with - or _ (set_weight). rebalance and write-ring write the ring
file next to the builder: object.builder -> object.ring.gz. get-nodes hashes names with
[txstore-hash] hash_path_prefix / hash_path_suffix from --txstore-conf (default: the
txstore.conf beside the ring, else /etc/txstore/txstore.conf; none found is an error) and prints
a curl line for each node.

Exit status: 0 done; 1 warning: nothing to do or nothing changed (e.g. rebalance could
move no partition because of min_part_hours); 2 error: bad usage or input, unreadable
file, or a command that cannot be done (nothing is saved then).
"""


class CommandError(Exception):
    """Ends the command with a one-line message and an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


def _usage(message: str) -> CommandError:
    return CommandError(f"{message} (txstore-ring --help for usage)")


def ring_path_for(builder_path: str) -> str:
    """Where the ring of a builder is written: ``x.builder`` → ``x.ring.gz``."""
    base = builder_path[: -len(".builder")] if builder_path.endswith(".builder") else builder_path
    return base + ".ring.gz"


def _int(text: str, what: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise _usage(f"{what} must be a whole number, not {text!r}") from None


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"invalid weight {text!r}: expected a number") from None
    if not value >= 0 or value == float("inf"):
        raise CommandError(f"invalid weight {text!r}: expected a number >= 0")
    return value


def parse_overload(text: str) -> float:
    """``0.1`` or ``10%`` → 0.1."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise CommandError(f"invalid overload {text!r}: expected e.g. 0.1 or 10%") from None
    if not 0 <= value < float("inf"):
        raise CommandError(f"invalid overload {text!r}: must be >= 0")
    return value


def _duration(seconds: float) -> str:
    import datetime

    return str(datetime.timedelta(seconds=int(seconds)))


DEFAULT_TXSTORE_CONF = "/etc/txstore/txstore.conf"
# A rebalance running longer than this shows each phase as it ends, on stderr.
PROGRESS_AFTER = 1.0


def _find_txstore_conf(ring_path: str) -> str:
    """
    The cluster file whose secret names hash with: beside the ring, else the default one. A
    partition worked out without the secret would be wrong, so none found is an error.
    """
    candidates = [os.path.join(os.path.dirname(os.path.abspath(ring_path)), "txstore.conf"), DEFAULT_TXSTORE_CONF]
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    raise CommandError(
        "get-nodes needs the cluster's hash secret ([txstore-hash] in txstore.conf): pass --txstore-conf PATH"
        f" (there is none at {' or '.join(candidates)})"
    )


def load_hasher(conf_path: str | None) -> PathHasher:
    """The path hasher of a ``txstore.conf`` (``[txstore-hash]``), or an unsalted one."""
    import configparser

    from txstore.common.hashing import PathHasher

    if conf_path is None:
        return PathHasher()
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(conf_path, encoding="utf-8") as stream:
            parser.read_file(stream, source=conf_path)
    except OSError as error:
        raise CommandError(f"cannot read {conf_path}: {error.strerror or error}") from None
    except configparser.Error as error:
        first = str(error).splitlines()[0]
        raise CommandError(f"cannot parse {conf_path}: {first}") from None
    if not parser.has_section("txstore-hash"):
        raise CommandError(f"{conf_path} has no [txstore-hash] section")
    section = parser["txstore-hash"]
    return PathHasher(
        section.get("hash_path_prefix", "").encode("utf-8"),
        section.get("hash_path_suffix", "").encode("utf-8"),
    )


@define
class RingCommand:
    """One run of ``txstore-ring``: the streams it writes to, and the commands."""

    out: TextIO
    err: TextIO

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def run(self, argv: Sequence[str]) -> int:
        args = list(argv)
        if not args or args[0] in ("-h", "--help", "help"):
            (self.out if args else self.err).write(USAGE)
            return EXIT_OK if args else EXIT_ERROR
        if len(args) == 1:
            args.append("list")
        args[1] = args[1].replace("_", "-")  # set_weight as swift-ring-builder spells it
        parser = _parser()
        if args[1] not in parser.commands:
            raise _usage(f"unknown command {args[1]!r}")
        options = parser.parse_args(args)
        return options.handler(self, options.file, options)

    # -- helpers ---------------------------------------------------------------------------

    def _load(self, path: str) -> RingBuilder:
        if not os.path.exists(path):
            raise CommandError(
                f"builder file {path} does not exist; make one with: "
                f"txstore-ring {path} create <part_power> <replicas> <min_part_hours>"
            )
        return RingBuilder.load(path)

    def _write_ring(self, builder: RingBuilder, path: str) -> str:
        ring_path = ring_path_for(path)
        builder.get_ring().save(ring_path)
        return ring_path

    def _select(self, builder: RingBuilder, text: str) -> list[Device]:
        search = DeviceSearch.parse(text)
        found = builder.search_devs(search)
        if not found:
            raise CommandError(f"no device matches {text!r}")
        return found

    # -- commands --------------------------------------------------------------------------

    def create(self, path: str, options: argparse.Namespace) -> int:
        part_power, replicas, hours = options.part_power, options.replicas, options.min_part_hours
        if os.path.exists(path):
            raise CommandError(f"{path} already exists; remove it first to start over")
        builder = RingBuilder(part_power, replicas, hours)
        builder.save(path)
        self.say(
            f"Created {path}: {builder.partition_count} partitions, {replicas} replicas, "
            f"min_part_hours {hours}"
        )
        return EXIT_OK

    def add(self, path: str, options: argparse.Namespace) -> int:
        args = options.pairs
        if len(args) % 2:
            raise _usage("add takes pairs of <device> <weight>")
        builder = self._load(path)
        added: list[Device] = []
        for spec, weight in zip(args[::2], args[1::2]):
            fields = parse_device_spec(spec)
            dev_id = builder.add_dev(fields, weight=_weight(weight))
            dev = builder.devs[dev_id]
            assert dev is not None
            added.append(dev)
        builder.save(path)
        for dev in added:
            self.say(
                f"Device d{dev.id}{dev.describe()} with {dev.weight:.2f} weight got id {dev.id}"
            )
        return EXIT_OK

    def remove(self, path: str, options: argparse.Namespace) -> int:
        builder = self._load(path)
        removed = []
        for text in options.searches:
            for dev in self._select(builder, text):
                if builder.devs[dev.id] is not None:
                    removed.append(builder.remove_dev(dev.id))
        builder.save(path)
        for dev in removed:
            self.say(f"Device d{dev.id}{dev.describe()} marked for removal")
        self.say("Run rebalance to move its partitions and write the ring.")
        return EXIT_OK

    def set_weight(self, path: str, options: argparse.Namespace) -> int:
        args = options.pairs
        if len(args) % 2:
            raise _usage("set-weight takes pairs of <search> <weight>")
        builder = self._load(path)
        changed = []
        for text, weight in zip(args[::2], args[1::2]):
            value = _weight(weight)
            for dev in self._select(builder, text):
                changed.append((dev, builder.set_dev_weight(dev.id, value)))
        builder.save(path)
        for old, new in changed:
            self.say(
                f"Device d{new.id}{new.describe()} weight {old.weight:.2f} -> {new.weight:.2f}"
            )
        return EXIT_OK

    def set_overload(self, path: str, options: argparse.Namespace) -> int:
        builder = self._load(path)
        old = builder.overload
        builder.set_overload(parse_overload(options.overload))
        builder.save(path)
        self.say(
            f"Overload {old * 100:.2f}% -> {builder.overload * 100:.2f}% ({builder.overload:.6f})"
        )
        return EXIT_OK

    def set_min_part_hours(self, path: str, options: argparse.Namespace) -> int:
        builder = self._load(path)
        builder.set_min_part_hours(options.hours)
        builder.save(path)
        self.say(f"min_part_hours is now {builder.min_part_hours}")
        return EXIT_OK

    def pretend_min_part_hours_passed(self, path: str, options: argparse.Namespace) -> int:
        builder = self._load(path)
        builder.pretend_min_part_hours_passed()
        builder.save(path)
        self.say("Every partition may move at the next rebalance.")
        return EXIT_OK

    def rebalance(self, path: str, options: argparse.Namespace) -> int:
        seed = options.seed
        builder = self._load(path)
        first = not builder.has_table
        started = time.monotonic()

        def progress(message: str) -> None:
            # Only once the run is long enough for someone to wonder (a small ring is instant).
            elapsed = time.monotonic() - started
            if elapsed >= PROGRESS_AFTER:
                self.err.write(f"  {elapsed:6.1f}s  {message}\n")
                self.err.flush()

        result = builder.rebalance(seed=seed, progress=progress)
        builder.save(path)
        ring_path = self._write_ring(builder, path)
        summary = (f"Balance is now {result.balance:.2f}. Dispersion is now {result.dispersion:.2f}"
                   f" ({result.elapsed:.1f}s)")
        if first:
            self.say(
                f"Placed {result.replicas_placed} replicas of {builder.partition_count} "
                f"partitions. {summary}"
            )
        elif result.parts_moved == 0:
            left = builder.min_part_seconds_left()
            why = (
                f"; min_part_hours is {builder.min_part_hours} and partitions moved recently "
                f"({_duration(left)} until all may move)"
                if left > 0
                else ""
            )
            self.err.write(f"No partitions could be reassigned{why}. {summary}\n")
            return EXIT_WARNING
        else:
            share = 100.0 * result.parts_moved / builder.partition_count
            self.say(
                f"Reassigned {result.parts_moved} ({share:.2f}%) partitions "
                f"({result.replicas_moved} replicas). {summary}"
            )
        self.say(f"Wrote {ring_path} (seed {result.seed}, {result.elapsed:.2f}s)")
        return EXIT_OK

    def write_ring(self, path: str, options: argparse.Namespace) -> int:
        builder = self._load(path)
        ring_path = self._write_ring(builder, path)
        self.say(f"Wrote {ring_path}")
        return EXIT_OK

    def list_devices(self, path: str, options: argparse.Namespace) -> int:
        builder = self._load(path)
        devs = [dev for dev in builder.devs if dev is not None]
        report = builder.dispersion_report(with_tiers=False)
        regions = {dev.region for dev in devs}
        zones = {(dev.region, dev.zone) for dev in devs}
        self.say(f"{path}, version {builder.version}")
        self.say(
            f"{builder.partition_count} partitions, {builder.replicas} replicas, "
            f"{len(regions)} regions, {len(zones)} zones, {len(devs)} devices, "
            f"{builder.balance():.2f} balance, {report.dispersion:.2f} dispersion"
        )
        left = builder.min_part_seconds_left()
        self.say(
            f"The minimum number of hours before a partition can be reassigned is "
            f"{builder.min_part_hours} ({_duration(left)} remaining)"
        )
        self.say(f"The overload factor is {builder.overload * 100:.2f}% ({builder.overload:.6f})")
        if not builder.has_table:
            self.say("The builder has not been rebalanced yet.")
        counts = builder.part_counts()
        balances = builder.device_balances()
        rows = [
            (
                "id",
                "region",
                "zone",
                "ip address:port",
                "replication ip:port",
                "name",
                "weight",
                "partitions",
                "balance",
                "meta",
            )
        ]

        def row(dev, weight: str, balance: float) -> tuple[str, ...]:
            return (
                str(dev.id),
                str(dev.region),
                str(dev.zone),
                f"{format_ip(dev.ip)}:{dev.port}",
                f"{format_ip(dev.replication_ip)}:{dev.replication_port}",
                dev.device,
                weight,
                str(counts.get(dev.id, 0)),
                f"{balance:.2f}",
                dev.meta,
            )

        rows.extend(row(dev, f"{dev.weight:.2f}", balances.get(dev.id, 0.0)) for dev in devs)
        rows.extend(row(dev, "removing", DRAINING_BALANCE) for dev in builder.pending_removals)
        self.say("Devices:")
        self._table(rows)
        return EXIT_OK

    def dispersion(self, path: str, options: argparse.Namespace) -> int:
        builder = self._load(path)
        if not builder.has_table:
            raise CommandError(f"{path} has not been rebalanced yet: no dispersion to show")
        report = builder.dispersion_report()
        self.say(
            f"Dispersion is {report.dispersion:.2f}, Balance is {builder.balance():.2f}, "
            f"Overload is {builder.overload * 100:.2f}%"
        )
        self.say(
            f"{report.parts_over} partitions have a tier holding more replicas than the widest "
            "spread allows"
        )
        replicas = builder.replicas
        rows = [("tier", "kind", "max", "over", *(f"{n} repl" for n in range(replicas + 1)))]
        for name, tier in report.tiers.items():
            depth = len(tier.tier)
            kind = TIER_NAMES.get(depth, "?")
            rows.append(
                (
                    name,
                    kind,
                    str(tier.max_replicas),
                    str(tier.parts_over),
                    *map(str, tier.histogram),
                )
            )
        self._table(rows)
        return EXIT_OK

    def get_nodes(self, path: str, options: argparse.Namespace) -> int:
        from urllib.parse import quote

        from txstore.ring.ring import handoff_nodes, primary_nodes

        conf_path = options.txstore_conf
        handoffs: int | None = options.handoffs
        names: list[str] = options.names
        if not 1 <= len(names) <= 3:
            raise _usage("get-nodes takes ACCOUNT [CONTAINER [OBJECT]]")
        data = self._load_ring_data(path)
        hasher = load_hasher(conf_path if conf_path is not None else _find_txstore_conf(path))
        account = names[0]
        container = names[1] if len(names) > 1 else None
        obj = names[2] if len(names) > 2 else None
        digest = hasher.hash_path(account, container, obj)
        assert isinstance(digest, str)
        part = hasher.partition(data.part_power, account, container, obj)
        if handoffs is None:
            handoffs = data.replica_count
        self.say(f"Account  \t{account}")
        self.say(f"Container\t{container if container is not None else ''}")
        self.say(f"Object   \t{obj if obj is not None else ''}")
        self.say(f"Partition\t{part}")
        self.say(f"Hash     \t{digest}")
        self.say("")
        rows = [("server:port/device", "role", "region", "zone")]
        for node in primary_nodes(data, part):
            rows.append(
                (self._where(node), f"primary {node.index}", str(node.region), str(node.zone))
            )
        for node in handoff_nodes(data, part):
            if node.handoff_index is not None and node.handoff_index >= handoffs:
                break
            rows.append(
                (
                    self._where(node),
                    f"handoff {node.handoff_index}",
                    str(node.region),
                    str(node.zone),
                )
            )
        self._table(rows)
        self.say("")
        names_path = "/".join(quote(name, safe="") for name in names)
        for node in primary_nodes(data, part):
            self.say(f'curl -g -I -XHEAD "http://{format_ip(node.ip)}:{node.port}/{node.device_name}/{part}/{names_path}"')
        for node in handoff_nodes(data, part):
            if node.handoff_index is not None and node.handoff_index >= handoffs:
                break
            self.say(f'curl -g -I -XHEAD "http://{format_ip(node.ip)}:{node.port}/{node.device_name}/{part}/{names_path}"'
                     "  # handoff")
        if len(names) == 3:
            self.say("(for an object of a policy other than 0, add -H \"X-Backend-Storage-Policy-Index: N\")")
        return EXIT_OK

    @staticmethod
    def _where(node: Node) -> str:
        return f"{format_ip(node.ip)}:{node.port}/{node.device_name}"

    def _load_ring_data(self, path: str) -> RingData:
        if not os.path.exists(path):
            raise CommandError(f"ring file {path} does not exist")
        try:
            return RingData.load(path)
        except RingError as ring_error:
            try:
                return RingBuilder.load(path).get_ring()
            except RingError:
                raise ring_error from None

    def _table(self, rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = [cell.rjust(width) for cell, width in zip(row, widths)]
            self.say("  ".join(cells).rstrip())




class _Parser(argparse.ArgumentParser):
    """argparse with txstore-ring's errors: one line, exit status 2, never argparse's own exit."""

    def error(self, message: str):  # type: ignore[override]
        raise _usage(message)


def _whole(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, not {text!r}") from None

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def _parser() -> argparse.ArgumentParser:
    """``FILE COMMAND [arguments]``: each command a sub-parser bound to its `RingCommand` method."""
    parser = _Parser(prog="txstore-ring", add_help=False)
    parser.add_argument("file")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    parser.commands = []  # type: ignore[attr-defined]

    def command(name: str, handler: Callable[..., int]) -> argparse.ArgumentParser:
        parser.commands.append(name)  # type: ignore[attr-defined]
        sub = commands.add_parser(name, add_help=False)
        sub.set_defaults(handler=handler)
        return sub

    create = command("create", RingCommand.create)
    create.add_argument("part_power", type=_whole("part_power"))
    create.add_argument("replicas", type=_whole("replicas"))
    create.add_argument("min_part_hours", type=_whole("min_part_hours"))
    command("add", RingCommand.add).add_argument("pairs", nargs="+", metavar="DEVICE WEIGHT")
    command("remove", RingCommand.remove).add_argument("searches", nargs="+", metavar="SEARCH")
    command("set-weight", RingCommand.set_weight).add_argument("pairs", nargs="+", metavar="SEARCH WEIGHT")
    command("set-overload", RingCommand.set_overload).add_argument("overload")
    command("set-min-part-hours", RingCommand.set_min_part_hours).add_argument("hours", type=_whole("min_part_hours"))
    command("pretend-min-part-hours-passed", RingCommand.pretend_min_part_hours_passed)
    command("rebalance", RingCommand.rebalance).add_argument("--seed", "-s", type=_whole("seed"))
    command("write-ring", RingCommand.write_ring)
    command("list", RingCommand.list_devices)
    command("dispersion", RingCommand.dispersion)
    get_nodes = command("get-nodes", RingCommand.get_nodes)
    get_nodes.add_argument("--txstore-conf")
    get_nodes.add_argument("--handoffs", type=_whole("handoffs"))
    get_nodes.add_argument("names", nargs="*", metavar="NAME")
    return parser

def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """The console script; returns the exit status (0 ok, 1 warning, 2 error)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    args = sys.argv[1:] if argv is None else list(argv)
    command = RingCommand(out, err)
    try:
        return command.run(args)
    except CommandError as error:
        err.write(f"txstore-ring: {error}\n")
        return error.status
    except (RingError, ValueError) as error:
        err.write(f"txstore-ring: {error}\n")
        return EXIT_ERROR
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        err.write(f"txstore-ring: {where}{error.strerror or error}\n")
        return EXIT_ERROR
