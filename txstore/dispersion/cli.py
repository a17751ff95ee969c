# -*- test-case-name: txstore.test.integration.test_dispersion_integration -*-
"""
``txstore-dispersion populate`` and ``txstore-dispersion report``: the command.

Both log in through the proxy (tempauth v1.0). ``populate`` PUTs the sample through it;
``report`` lists the sample through it and asks every primary node directly. Each runs its own
reactor (`twisted.internet.task.react`), with at most ``concurrency`` requests in flight.

Exit status: 0 when the report ran, whatever it found (as Swift's); with ``--require PCT``, 1
when a part's ``pct_found`` is below PCT; 2 when it could not run (configuration, login,
listing) or populate could not write everything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from txstore.common.backend_client import BackendClient
from txstore.common.config import ConfigError
from txstore.dispersion import names as sample
from txstore.dispersion.copies import CopyChecker, bounded
from txstore.dispersion.proxy_session import ProxyError, ProxySession
from txstore.dispersion.settings import DEFAULT_CONFIG, ClusterView, Settings, load_cluster_view, load_settings
from txstore.dispersion.tally import Tally

OVERRIDES = (
    # (flag, option, help): values are checked by the [dispersion] option's own parser
    ("--auth-url", "auth_url", "tempauth v1.0 URL of a proxy"),
    ("--auth-user", "auth_user", "<account>:<user>"),
    ("--auth-key", "auth_key", "the user's key"),
    ("--ring-dir", "ring_dir", "directory of the *.ring.gz files (default /etc/txstore)"),
    ("--txstore-conf", "txstore_conf", "the cluster's txstore.conf (default: in the ring directory)"),
    ("--coverage", "dispersion_coverage", "percent of partitions sampled (default 1)"),
    ("--concurrency", "concurrency", "PUTs, or names asked of their primaries, at once (default 25)"),
    ("--retries", "retries", "further attempts after a failed request (default 2)"),
    ("--node-timeout", "node_timeout", "seconds for a node's answer (default 10)"),
    ("--conn-timeout", "conn_timeout", "seconds to connect to a node (default 2)"),
    ("--proxy-timeout", "proxy_timeout", "seconds for the proxy's answer (default 30)"),
    ("--policy-name", "policy_name", "object policy sampled (default: the cluster's default)"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None,
                        help=f"a file with a [dispersion] section (default {DEFAULT_CONFIG}, if it exists)")
    for flag, dest, text in OVERRIDES:
        common.add_argument(flag, dest=dest, default=None, help=text)
    only = common.add_mutually_exclusive_group()
    only.add_argument("--container-only", action="store_true", help="only the containers")
    only.add_argument("--object-only", action="store_true", help="only the objects")
    common.add_argument("-j", "--json", "--dump-json", dest="json", action="store_true", default=None,
                        help="print the JSON form (docs/dispersion.rst)")
    parser = argparse.ArgumentParser(
        prog="txstore-dispersion",
        description="Place a sample of containers and objects over the partitions, and report how many of "
                    "their copies are where the rings say (as swift-dispersion-populate / -report).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("populate", parents=[common], help="create the sample through the proxy")
    report = commands.add_parser("report", parents=[common], help="ask every primary for its copy of the sample")
    report.add_argument("-p", "--partitions", action="store_true", help="print the partitions missing copies")
    report.add_argument("-d", "--debug", action="store_true", help="print every 404 and error to stderr")
    report.add_argument("--require", type=float, default=None, metavar="PCT",
                        help="exit 1 when copies found are below PCT percent (e.g. 100)")
    return parser.parse_args(argv)


def _parts(args: argparse.Namespace, settings: Settings) -> tuple[bool, bool]:
    containers = settings.container_report and not args.object_only
    objects = settings.object_report and not args.container_only
    if args.container_only:
        containers = True
    if args.object_only:
        objects = True
    return containers, objects


class Failed(Exception):
    """The command could not do its work; the message is for the operator."""


async def populate(reactor: Any, settings: Settings, view: ClusterView, containers: bool, objects: bool,
                   out: dict[str, Any]) -> None:
    session = ProxySession(reactor, settings.proxy_timeout, settings.retries)
    try:
        await session.login(settings.auth_url, settings.auth_user, settings.auth_key)
        account = session.account
        if containers:
            ring = view.container_ring
            chosen = sample.choose(lambda name: ring.get_part(account, name), ring.partition_count, settings.coverage)
            out["container"] = await _put_all(session, settings, [(name,) for name, _ in chosen], {}, None)
        if objects:
            container = sample.objects_container(view.policy.index)
            await session.put((container,), {"X-Storage-Policy": view.policy.name})
            ring = view.object_ring
            chosen = sample.choose(lambda name: ring.get_part(account, container, name),
                                   ring.partition_count, settings.coverage)
            out["object"] = await _put_all(session, settings, [(container, name) for name, _ in chosen],
                                           {"Content-Type": "text/plain"}, view.policy.name)
    finally:
        await session.close()


async def _put_all(session: ProxySession, settings: Settings, targets: list[tuple[str, ...]],
                   headers: dict[str, str], policy: str | None) -> dict[str, Any]:
    started = time.monotonic()
    before = session.retries_done
    failures: list[str] = []

    async def put(names: tuple[str, ...]) -> bool:
        try:
            await session.put(names, headers, names[-1].encode("utf-8") if len(names) > 1 else None)
        except ProxyError as err:
            failures.append(str(err))
            return False
        return True

    done = await bounded(settings.concurrency, targets, put)
    return {"created": sum(done), "wanted": len(targets), "retries": session.retries_done - before,
            "errors": len(failures), "failures": failures[:20], "elapsed": round(time.monotonic() - started, 3),
            "policy": policy}


def node_client(reactor: Any, settings: Settings) -> BackendClient:
    """The cluster's backend client with the report's timeouts (over TLS with ``[cluster-tls]``)."""
    return BackendClient(reactor, timeout=settings.node_timeout, connect_timeout=settings.conn_timeout,
                         max_per_host=settings.concurrency, tls=settings.tls)


async def report(reactor: Any, settings: Settings, view: ClusterView, containers: bool, objects: bool,
                 out: dict[str, Any], problems: list[str]) -> None:
    session = ProxySession(reactor, settings.proxy_timeout, settings.retries)
    client = node_client(reactor, settings)
    try:
        await session.login(settings.auth_url, settings.auth_user, settings.auth_key)
        account = session.account
        if containers:
            listed = await session.listing(None, sample.PREFIX)
            names = [name for name in listed or [] if sample.is_sample_name(name)]
            if not names:
                raise Failed("no dispersion containers to query: has txstore-dispersion populate been run?")
            checker = CopyChecker(client, reactor, account, settings.retries, settings.node_timeout)
            out["container"] = await _check_all(
                checker, settings, view.container_ring, Tally("container", view.container_ring.partition_count,
                                                              view.container_ring.replica_count),
                [(name,) for name in names], problems)
        if objects:
            container = sample.objects_container(view.policy.index)
            listed = await session.listing(container, sample.PREFIX)
            names = [name for name in listed or [] if sample.is_sample_name(name)]
            if not names:
                raise Failed(f"no dispersion objects of policy {view.policy.name} to query: has "
                             "txstore-dispersion populate been run for it?")
            ring = view.object_ring
            checker = CopyChecker(client, reactor, account, settings.retries, settings.node_timeout,
                                  policy_index=view.policy.index, ec=view.is_ec)
            out["object"] = await _check_all(
                checker, settings, ring, Tally("object", ring.partition_count, ring.replica_count,
                                               policy=view.policy.name),
                [(container, name) for name in names], problems)
    finally:
        await session.close()
        await client.close()


async def _check_all(checker: CopyChecker, settings: Settings, ring: Any, tally: Tally,
                     targets: list[tuple[str, ...]], problems: list[str]) -> Tally:
    started = time.monotonic()

    async def check(names: tuple[str, ...]) -> None:
        part, nodes = ring.get_nodes(checker.account, *names)
        tally.add("/".join(names), part, await checker.copies(part, nodes, *names))

    await bounded(settings.concurrency, targets, check)
    tally.elapsed = time.monotonic() - started
    tally.retries = checker.retries_done
    tally.errors = checker.errors
    problems.extend(checker.problems)
    return tally


def _print_populate(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"container": out.get("container"), "object": out.get("object")}, indent=2, sort_keys=True))
        return
    for kind in ("container", "object"):
        done = out.get(kind)
        if done is None:
            continue
        if done["policy"]:
            print(f"Using storage policy: {done['policy']}")
        print(f"Created {done['created']} {kind}s for dispersion reporting, {done['elapsed']:.0f}s, "
              f"{done['retries']} retries")
        for failure in done["failures"]:
            print(f"  failed: {failure}", file=sys.stderr)


def _print_report(out: dict[str, Tally], args: argparse.Namespace, as_json: bool) -> None:
    if as_json:
        print(json.dumps({kind: (out[kind].summary() if kind in out else None) for kind in ("container", "object")},
                         indent=2, sort_keys=True))
        return
    for kind in ("container", "object"):
        if kind in out:
            print("\n".join(out[kind].lines()))
            if args.partitions and out[kind].missing_partitions():
                print(f"{kind.capitalize()} partitions missing copies: "
                      + " ".join(str(p) for p in out[kind].missing_partitions()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {dest: getattr(args, dest) for _, dest, _ in OVERRIDES}
    try:
        settings = load_settings(args.config, overrides)
        view = load_cluster_view(settings)
    except (ConfigError, ValueError) as err:
        print(f"txstore-dispersion: {err}", file=sys.stderr)
        return 2
    containers, objects = _parts(args, settings)
    as_json = settings.dump_json if args.json is None else args.json
    out: dict[str, Any] = {}
    problems: list[str] = []
    failure: list[str] = []

    async def run(reactor: Any) -> None:
        try:
            if args.command == "populate":
                await populate(reactor, settings, view, containers, objects, out)
            else:
                await report(reactor, settings, view, containers, objects, out, problems)
        except (ProxyError, Failed, sample.CoverageError) as err:
            failure.append(str(err))
        except Exception:  # a bug: say where, rather than react's silent exit status 1
            traceback.print_exc()
            failure.append(f"{args.command} failed unexpectedly (the traceback is above)")

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit:
        pass
    if failure:
        print(f"txstore-dispersion: {failure[0]}", file=sys.stderr)
        return 2
    if args.command == "populate":
        _print_populate(out, as_json)
        return 2 if any(done["errors"] for done in out.values()) else 0
    if args.debug:
        for line in problems:
            print(line, file=sys.stderr)
    _print_report(out, args, as_json)
    if args.require is not None and any(tally.pct_found() < args.require for tally in out.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
