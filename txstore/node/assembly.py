# -*- test-case-name: txstore.test.unit.test_object_server -*-
"""
Assembles one storage node: the I/O pools, the backend client, the servers, and the services
that start and stop with it (temp-file sweeping; the consistency daemons join here later).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from txstore.common.backend_client import BackendClient
from txstore.common.constraints import Constraints
from txstore.common.io import DeviceThreadPools, PoolsStopped
from txstore.common.listener import TCPListener
from txstore.common.metrics import DeviceGauges, node_metrics
from txstore.common.statsd import StatsdClient
from txstore.common.policies import ERASURE_CODING
from txstore.daemons.auditor import ObjectAuditor
from txstore.daemons.container_updater import ContainerUpdater
from txstore.daemons.db_auditor import DatabaseAuditor
from txstore.daemons.db_replicator import DatabaseReplicator
from txstore.daemons.expirer import ObjectExpirer
from txstore.daemons.object_replicator import ObjectReplicator
from txstore.daemons.object_updater import ObjectUpdater
from txstore.daemons.reconstructor import ObjectReconstructor
from txstore.daemons.periodic import PeriodicDaemon
from txstore.daemons.reaper import AccountReaper
from txstore.replication.databases import DatabaseReceiver, DatabaseSender
from txstore.replication.receiver import ReceiverFactory
from txstore.replication.sender import BytePacer, Connector, ObjectSender
from txstore.ring.ringset import RingSet
from txstore.storage.config import (
    ACCOUNT_AUDITOR,
    ACCOUNT_REAPER,
    ACCOUNT_REPLICATOR,
    CONTAINER_AUDITOR,
    CONTAINER_REPLICATOR,
    CONTAINER_UPDATER,
    OBJECT_AUDITOR,
    OBJECT_EXPIRER,
    OBJECT_RECONSTRUCTOR,
    OBJECT_REPLICATOR,
    OBJECT_UPDATER,
    NodeSettings,
)
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.storage.local_devices import local_device_matcher
from txstore.storage.account_server import AccountServer
from txstore.storage.db import AccountBroker, ContainerBroker
from txstore.storage.container_server import ContainerServer
from txstore.qos.meter import BandwidthMeter
from txstore.qos.scheduler import BackgroundRunner, IOScheduler
from txstore.qos.shares import SharesReceiver
from txstore.storage.object_server import ObjectServer
from txstore.node.recon import Recon, device_figures
from txstore.node.server import NodeServer

TMP_SWEEP_INTERVAL = 600.0
TMP_MAX_AGE = 3600.0
# How often the devices' figures for /metrics (usage, queued async pendings, quarantines) are
# gathered, in a thread: they cost directory listings, so never at the scrape.
DEVICE_FIGURES_INTERVAL = 30.0


class _Resources(Service):
    """Closes databases and pooled connections, then stops the thread pools, at node stop."""

    def __init__(self, runner: DeviceThreadPools, client: BackendClient, closers: list) -> None:
        self._runner = runner
        self._client = client
        self._closers = closers

    def stopService(self) -> Deferred:
        super().stopService()
        closing = DeferredList([close() for close in self._closers] + [self._client.close()])
        closing.addBoth(lambda _: self._runner.stop())
        return closing


class DeviceFigures:
    """Gathers each device's figures in a thread (`device_figures`) and hands them to the metrics."""

    log = Logger()

    def __init__(self, context: StorageContext, gauges: DeviceGauges) -> None:
        self._context = context
        self._gauges = gauges

    def gather(self) -> Deferred:
        return Deferred.fromCoroutine(self._gather())

    async def _gather(self) -> None:
        try:
            self._gauges.update(await self._context.runner.run("recon", device_figures, self._context))
        except PoolsStopped:
            return  # the node is stopping
        except Exception:
            self.log.failure("gathering the devices' figures for the metrics")


class TmpSweeper:
    """
    Removes temp files left by writes that never finished (a kill -9 mid-PUT): at start, all
    of them last modified before this node started (the first sweep may run after the node
    answers, and a write begun since must not lose its file), then those older than an hour,
    which no live upload can be (idle clients are dropped after a minute).
    """

    log = Logger()

    def __init__(self, context: StorageContext) -> None:
        self._context = context
        self._started: float | None = context.clock()

    def sweep(self) -> Deferred:
        return Deferred.fromCoroutine(self._sweep())

    async def _sweep(self) -> None:
        context = self._context
        if self._started is not None:
            cutoff, self._started = self._started, None
        else:
            cutoff = context.clock() - TMP_MAX_AGE
        try:
            devices = await context.runner.run("sweep", context.mounted_devices)
        except PoolsStopped:
            return  # the node is stopping
        for device, _path in devices:
            try:
                removed = await context.runner.run(device, context.diskfiles.cleanup_tmp, device, cutoff)
            except PoolsStopped:
                return
            except Exception:
                self.log.failure("sweeping tmp of {device}", device=device)
                continue
            self._report(removed, device)

    def _report(self, removed: int, device: str) -> None:
        if removed:
            self.log.info("removed {count} unfinished temp files from {device}", count=removed, device=device)


def build_node(
    settings: NodeSettings, reactor: Any, rings: RingSet | None = None
) -> tuple[NodeServer, MultiService]:
    """The node's request handler and the services that must run beside its listener."""
    runner = DeviceThreadPools(reactor, settings.threads_per_device)
    credentials = settings.cluster_tls  # backend HTTP and replication alike (docs/tls.rst)
    client = BackendClient(reactor, tls=credentials)
    diskfiles = DiskFileManager(
        settings.devices, settings.mount_check, settings.cluster.hasher, direct_writes=settings.direct_writes,
        direct_reads=settings.direct_reads,
        fallocate=not settings.disable_fallocate,
        ec_policies=frozenset(p.index for p in settings.cluster.policies if p.policy_type == ERASURE_CODING),
    )
    context = StorageContext(
        devices=settings.devices,
        mount_check=settings.mount_check,
        hasher=settings.cluster.hasher,
        policies=settings.cluster.policies,
        runner=runner,
        client=client,
        reactor=reactor,
        diskfiles=diskfiles,
        constraints=Constraints(max_file_size=settings.max_file_size),
        container_update_timeout=settings.container_update_timeout,
        scheduler=IOScheduler(runner, settings.cluster.io_classes, reactor, depth=settings.threads_per_device),
        keep_cache_size=settings.keep_cache_size,
    )
    accounts = AccountServer(context)
    containers = ContainerServer(context)
    # Each device's bandwidth and load, sampled from the scheduler: for /recon/bandwidth and the
    # load figure on object GETs and HEADs (the proxies read the least loaded replica first).
    meter = BandwidthMeter(context.scheduler, reactor, settings.threads_per_device)
    recon = Recon(context, settings.ring_dir, meter=meter)
    server = NodeServer(
        accounts=accounts, containers=containers, objects=ObjectServer(context, meter=meter), recon=recon,
        metrics=node_metrics(), shares=SharesReceiver(context.scheduler),
    )
    services = MultiService()
    meter.setServiceParent(services)
    _Resources(runner, client, [containers.close, accounts.close]).setServiceParent(services)
    sweeper = TimerService(TMP_SWEEP_INTERVAL, TmpSweeper(context).sweep)
    sweeper.clock = reactor
    sweeper.setServiceParent(services)
    gauges = DeviceGauges(runner)
    server.metrics.watch(gauges)  # type: ignore[union-attr]
    if settings.statsd is not None:
        server.metrics.statsd = StatsdClient(reactor, **settings.statsd)  # type: ignore[union-attr]
    figures = TimerService(DEVICE_FIGURES_INTERVAL, DeviceFigures(context, gauges).gather)
    figures.clock = reactor
    figures.setServiceParent(services)
    options = settings.daemons
    replication = settings.replication
    # The consistency daemons' disk work (and replication's incoming writes) is the background
    # IO class's on each device's queue: they share a busy disk with clients by its weight.
    daemons = attrs.evolve(context, runner=BackgroundRunner(context.scheduler))
    receiver = ReceiverFactory(
        daemons, reactor, timeout=replication.node_timeout,
        sessions_per_device=replication.sessions_per_device,
        reclaim_age=options.object_replicator.reclaim_age,
        db_handlers={
            "container": DatabaseReceiver("container", containers.databases).serve,
            "account": DatabaseReceiver("account", accounts.databases).serve,
        },
    )
    listening = credentials.wrap_listening(receiver) if credentials is not None else receiver
    TCPListener(reactor, replication.bind_ip, replication.bind_port, listening,
                label="replication (TLS)" if credentials is not None else "replication").setServiceParent(services)
    runs: dict[str, object] = {}
    stops: dict[str, Callable[[], None]] = {}  # what makes a daemon's pass end early at node stop
    if rings is not None:
        runs[CONTAINER_UPDATER] = ContainerUpdater(daemons, rings.account).run_pass
        runs[OBJECT_UPDATER] = ObjectUpdater(daemons, rings.container).run_pass
        replicate = options.object_replicator
        connector = Connector(reactor, replication.conn_timeout, replication.node_timeout, credentials)
        sender = ObjectSender(daemons, connector, BytePacer(reactor, replicate.bytes_per_second))
        is_local = local_device_matcher(settings.bind_ip, settings.bind_port)
        replicator = ObjectReplicator(
            daemons, rings, is_local, sender, settings=replicate,
        )
        runs[OBJECT_REPLICATOR] = replicator.run_pass
        stops[OBJECT_REPLICATOR] = replicator.stop
        if diskfiles.ec_policies:
            # Its own sender: stopping the replicator's sessions must not end the reconstructor's.
            reconstructor = ObjectReconstructor(
                daemons, rings, is_local, ObjectSender(daemons, connector), client, reactor,
                settings=options.object_reconstructor, node_timeout=replication.node_timeout,
            )
            runs[OBJECT_RECONSTRUCTOR] = reconstructor.run_pass
            stops[OBJECT_RECONSTRUCTOR] = reconstructor.stop
        for name, kind, ring, db_server in (
            (CONTAINER_REPLICATOR, "container", rings.container, containers),
            (ACCOUNT_REPLICATOR, "account", rings.account, accounts),
        ):
            runs[name] = DatabaseReplicator(
                daemons, ring, is_local, DatabaseSender(kind, db_server.databases, connector),
                settings=options.section(name),
            ).run_pass
        runs[ACCOUNT_REAPER] = AccountReaper(
            daemons, rings, is_local,
            settings=options.account_reaper,
        ).run_pass
    auditor = ObjectAuditor(daemons, reactor, settings=options.object_auditor)
    runs[OBJECT_AUDITOR] = auditor.run_pass
    stops[OBJECT_AUDITOR] = auditor.stop
    expirer = ObjectExpirer(daemons, reactor, settings=options.object_expirer)
    runs[OBJECT_EXPIRER] = expirer.run_pass
    stops[OBJECT_EXPIRER] = expirer.stop
    for name, kind, broker_class, db_server in (
        (CONTAINER_AUDITOR, "containers", ContainerBroker, containers),
        (ACCOUNT_AUDITOR, "accounts", AccountBroker, accounts),
    ):
        db_auditor = DatabaseAuditor(
            daemons, reactor, kind, broker_class, db_server.databases.quarantine,
            settings=options.section(name),
        )
        runs[name] = db_auditor.run_pass
        stops[name] = db_auditor.stop
    for name, run_pass in runs.items():
        if options.section(name).enabled:
            recon.daemons[name] = PeriodicDaemon(name, run_pass, options.section(name).interval, reactor,
                                                 stop_pass=stops.get(name), metrics=server.metrics)
            recon.daemons[name].setServiceParent(services)
    return server, services
