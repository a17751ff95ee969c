# -*- test-case-name: txstore.test.unit.test_tls -*-
"""
TLS material read from PEM files, for txstore's two uses of TLS:

- `ServerCertificate`: the proxy's client-facing listener. A certificate (followed by its
  intermediates, if any) and its private key; clients check it as they check any web server.
- `Credentials`: the cluster's own traffic (proxy → node and node → node HTTP, replication).
  Every process holds a certificate the cluster's CA issued; the listener requires a client
  certificate that CA issued, and a client accepts a server only if the CA issued its
  certificate *for the address it dialled* (``service_identity``, IP addresses included).

Files are read and checked when a config file is loaded: a missing file, one that is not PEM,
or a key that does not belong to its certificate stops the start with one line
(`TLSFileError`), never a traceback from inside the reactor. Protocol versions and ciphers are
Twisted's `CertificateOptions` defaults (TLS 1.2 and 1.3, its cipher list, no compression).
"""

from __future__ import annotations

from pathlib import Path

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate, optionsForClientTLS
from twisted.internet.ssl import trustRootFromCertificates
from twisted.protocols.tls import TLSMemoryBIOFactory

PEM = serialization.Encoding.PEM


class TLSFileError(Exception):
    """A TLS file (``path``) that cannot be used; `str()` is one line for the operator."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TLSFileError(path, "no such file") from None
    except IsADirectoryError:
        raise TLSFileError(path, "is a directory, not a PEM file") from None
    except PermissionError:
        raise TLSFileError(path, "permission denied") from None


def read_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    """Every PEM certificate in ``path``, in order (a leaf and its chain, or a CA bundle)."""
    data = _read(path)
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSFileError(path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    return tuple(found)


def read_private_key(path: Path):
    data = _read(path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSFileError(path, "the private key is protected by a passphrase (not supported)") from None
    except (ValueError, crypto.Error):
        raise TLSFileError(path, "holds no PEM private key (-----BEGIN PRIVATE KEY-----)") from None
    except Exception as err:  # cryptography refuses some keys with its own exceptions
        raise TLSFileError(path, f"cannot read the private key: {err}") from None


def _public(key) -> bytes:
    return key.public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@frozen
class ServerCertificate:
    """A certificate, its chain and its private key, checked to belong together."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: object  # a cryptography private key

    @classmethod
    def from_files(cls, certificate: Path, private_key: Path) -> ServerCertificate:
        leaf, *chain = read_certificates(certificate)
        key = read_private_key(private_key)
        if _public(key.public_key()) != _public(leaf.public_key()):
            raise TLSFileError(private_key, f"is not the private key of the certificate in {certificate}")
        return cls(leaf, tuple(chain), key)

    def options(self, **verification) -> CertificateOptions:
        """Server options presenting this certificate (and its chain), Twisted's defaults otherwise."""
        return CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(self.key),
            certificate=crypto.X509.from_cryptography(self.certificate),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in self.chain],
            **verification,
        )

    def private_certificate(self) -> PrivateCertificate:
        key = self.key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return PrivateCertificate.loadPEM(self.certificate.public_bytes(PEM).decode("ascii") + key.decode("ascii"))


def wrap_listening(options, factory):
    """``factory`` behind TLS with these server ``options``."""
    return TLSMemoryBIOFactory(options, False, factory)


@frozen
class Credentials:
    """This process's certificate and key, and the cluster CA(s) every peer must be issued by."""

    own: ServerCertificate
    authorities: tuple[x509.Certificate, ...]

    @classmethod
    def from_files(cls, certificate: Path, private_key: Path, ca: Path) -> Credentials:
        return cls(ServerCertificate.from_files(certificate, private_key), read_certificates(ca))

    def _authorities(self) -> list[Certificate]:
        return [Certificate.loadPEM(c.public_bytes(PEM)) for c in self.authorities]

    def server_options(self) -> CertificateOptions:
        """Present our certificate; require and verify the client's against the CA."""
        return self.own.options(
            verify=True, requireCertificate=True, caCerts=[c.original for c in self._authorities()],
        )

    def options_for(self, host: str):
        """Client options for dialling ``host``: its certificate must name it; ours is presented."""
        return optionsForClientTLS(
            host, trustRoot=trustRootFromCertificates(self._authorities()),
            clientCertificate=self.own.private_certificate(),
        )

    def wrap_listening(self, factory):
        return wrap_listening(self.server_options(), factory)
