# -*- test-case-name: txstore.test.integration.test_services -*-
"""
A listening service that says where it listens (port 0 picks a free one): TCP on an address and
port, a socket adopted from a supervising process, or a Twisted server endpoint string.
"""

from __future__ import annotations

import os
import socket

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.protocol import Factory
from twisted.logger import Logger


@define(eq=False)
class TCPListener(Service):
    """
    Listens in `privilegedStartService` (so a taken port fails the start, before the reactor
    runs) and logs the bound address, which tests and launchers read when they asked for port 0.
    """

    reactor: IReactorTCP
    interface: str
    port: int
    factory: Factory
    label: str = "http"
    adopt_fd: int | None = None  # a listening socket made by a supervising process (proxy workers)
    endpoint: str = ""  # a Twisted server endpoint string ([proxy] endpoint) instead of interface and port
    _listening: IListeningPort | None = field(default=None, init=False)
    log = Logger()

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.adopt_fd is not None:
            family = socket.AF_INET6 if ":" in self.interface else socket.AF_INET
            self._listening = self.reactor.adoptStreamPort(self.adopt_fd, family, self.factory)
            os.close(self.adopt_fd)  # the port holds its own copy
            address = self._listening.getHost()
            self.log.info("{label} worker serving {host}:{port}", label=self.label, host=address.host,
                          port=address.port)
            return
        if self.endpoint:
            self._listen_endpoint()
            return
        try:
            self._listening = self.reactor.listenTCP(self.port, self.factory, interface=self.interface)
        except CannotListenError as error:
            # One line for the operator (twistd would print a traceback): the process exits 1.
            reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
            raise SystemExit(f"{self.label}: cannot listen on {self.interface}:{self.port}: {reason}") from None
        address = self._listening.getHost()
        self.log.info(
            "{label} listening on {host}:{port}", label=self.label, host=address.host, port=address.port
        )

    def _listen_endpoint(self) -> None:
        """The endpoint's listen, which for TCP, SSL and UNIX endpoints is done when it returns."""
        outcome: list = []
        serverFromString(self.reactor, self.endpoint).listen(self.factory).addBoth(outcome.append)
        if not outcome or not IListeningPort.providedBy(outcome[0]):
            reason = outcome[0].getErrorMessage() if outcome else "it did not listen at once"
            if outcome and outcome[0].check(CannotListenError):
                socket_error = outcome[0].value.socketError
                reason = getattr(socket_error, "strerror", None) or str(socket_error)
            raise SystemExit(f"{self.label}: cannot listen on {self.endpoint}: {reason}")
        self._listening = outcome[0]
        address = self._listening.getHost()
        self.log.info("{label} listening on {host}:{port} ({kind} endpoint)", label=self.label,
                      host=getattr(address, "host", address), port=getattr(address, "port", ""),
                      kind=self.endpoint.split(":", 1)[0])

    def startService(self) -> None:
        if self._listening is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self):
        super().stopService()
        listening, self._listening = self._listening, None
        if listening is not None:
            return listening.stopListening()
        return None

    @property
    def bound_port(self) -> int | None:
        return self._listening.getHost().port if self._listening is not None else None
