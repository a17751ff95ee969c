"""
Certificates made for a test (or a benchmark): a cluster CA, another CA, and certificates they
issue, written as PEM files. Nothing here is for production: keys are unprotected and live a day.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from txstore.common.tls import Credentials

ONE_DAY = datetime.timedelta(days=1)


@frozen
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "txstore tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - ONE_DAY).not_valid_after(now + ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_node(ca: Issued, *names: str) -> Issued:
    """A certificate for ``names`` (IP addresses or host names, in its subjectAltName), good as TLS server and client."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(f"node {names[0]}")).issuer_name(ca.certificate.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - ONE_DAY).not_valid_after(now + ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(certificate, key)


def write_pem(directory: Path, stem: str, issued: Issued) -> tuple[Path, Path]:
    certificate = directory / f"{stem}.crt"
    key = directory / f"{stem}.key"
    certificate.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    return certificate, key


class PKI:
    """A cluster CA, another CA, and certificates for 127.0.0.1 (and ``localhost``) as PEM files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cluster, other = make_ca("cluster CA"), make_ca("some other CA")
        self.cluster_ca, _ = write_pem(directory, "cluster-ca", self.cluster)
        self.other_ca, _ = write_pem(directory, "other-ca", other)
        self.node = write_pem(directory, "node", make_node(self.cluster, "127.0.0.1", "localhost"))
        self.peer = write_pem(directory, "peer", make_node(self.cluster, "127.0.0.1"))
        self.stranger = write_pem(directory, "stranger", make_node(other, "127.0.0.1"))
        self.elsewhere = write_pem(directory, "elsewhere", make_node(self.cluster, "127.0.0.2"))

    def issue(self, stem: str, *names: str) -> tuple[Path, Path]:
        """Another certificate from the cluster CA for ``names``."""
        return write_pem(self.directory, stem, make_node(self.cluster, *names))

    def credentials(self, issued: tuple[Path, Path], ca: Path | None = None) -> Credentials:
        certificate, key = issued
        return Credentials.from_files(certificate, key, ca or self.cluster_ca)
