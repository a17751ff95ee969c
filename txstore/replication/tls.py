# -*- test-case-name: txstore.test.test_replication_tls -*-
"""
Mutual TLS between nodes: the cluster's CA issues every node a certificate naming its
replication address; the listener accepts only clients whose certificate that CA issued, and a
sender accepts only a receiver whose certificate the CA issued *for the address it dialled*
(checked by ``service_identity`` through Twisted, IP addresses included).
"""

from __future__ import annotations

from pathlib import Path

from attrs import frozen
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate, optionsForClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory


@frozen
class Credentials:
    """This node's certificate and key, and the cluster CA every peer must be issued by."""

    own: PrivateCertificate
    authority: Certificate

    @classmethod
    def from_files(cls, certificate: Path, private_key: Path, ca: Path) -> Credentials:
        own = PrivateCertificate.loadPEM(Path(certificate).read_text() + "\n" + Path(private_key).read_text())
        return cls(own, Certificate.loadPEM(Path(ca).read_text()))

    def server_options(self) -> CertificateOptions:
        """Present our certificate; require and verify the client's against the CA."""
        return self.own.options(self.authority)

    def options_for(self, host: str):
        """Client options for dialling ``host``: its certificate must name it."""
        return optionsForClientTLS(host, trustRoot=self.authority, clientCertificate=self.own)

    def wrap_listening(self, factory: Factory) -> Factory:
        return TLSMemoryBIOFactory(self.server_options(), False, factory)
