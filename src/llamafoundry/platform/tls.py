"""`serve --tls auto`: HTTPS out of the box with a local certificate authority.

The Azure SDKs send keys over plain HTTP only when told to (`allowInsecureConnection` in JS) and bearer tokens
only over HTTPS, so a server reachable as `https://...` is what lets their samples run unchanged. A CA is created
once per data directory (`<data dir>/tls/ca.pem`, its key readable by the server's user only) and signs a server
certificate for every name the server answers to; both are reused across restarts, and the server certificate is
issued again when the names change or it nears its end. Clients trust the CA (`NODE_EXTRA_CA_CERTS`,
`SSL_CERT_FILE`/`REQUESTS_CA_BUNDLE`, or the system store), not each certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = dt.timedelta(days=3650)
SERVER_LIFETIME = dt.timedelta(days=397)  # the longest any browser or platform accepts for a leaf
RENEW_BEFORE = dt.timedelta(days=30)
CA_COMMON_NAME = "llamafoundry local CA"


@dataclass(frozen=True)
class LocalTls:
    """The files of a local CA and of the server certificate it signed."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    names: tuple[str, ...]  # what the server certificate covers

    def trust_instructions(self) -> list[str]:
        ca = self.ca_cert
        return [
            f"Node.js (@azure-rest/ai-inference, openai): export NODE_EXTRA_CA_CERTS={ca}",
            f"Python (azure-ai-inference, requests, httpx, openai): export SSL_CERT_FILE={ca} REQUESTS_CA_BUNDLE={ca}"
            " (these replace the default CA list in that shell)",
            f"System store (Debian/Ubuntu): sudo cp {ca} /usr/local/share/ca-certificates/llamafoundry.crt && "
            "sudo update-ca-certificates",
        ]


def ensure_local_tls(folder: Path, host: str, now: dt.datetime | None = None) -> LocalTls:
    """The CA in `folder` (created if missing) and a server certificate for `host` and this machine's names."""
    now = now or dt.datetime.now(dt.UTC)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key, ca_cert = _ca(folder, now)
    names = served_names(host)
    files = LocalTls(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem", names)
    if not _is_current(files.server_cert, ca_cert, names, now):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _server_certificate(key, ca_key, ca_cert, names, now)
        _write_key(files.server_key, key)
        files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def served_names(host: str) -> tuple[str, ...]:
    """`host` (unless it is a wildcard address), loopback, and the machine's own names and addresses."""
    names = ["localhost", "127.0.0.1", "::1"]
    if host not in ("0.0.0.0", "::", ""):
        names.append(host)
    hostname = socket.gethostname()
    names += [hostname, socket.getfqdn()]
    if host in ("0.0.0.0", "::"):  # every interface: the addresses clients on the network may use
        try:
            names += [str(info[4][0]) for info in socket.getaddrinfo(hostname, None)]
        except OSError:
            pass
    return tuple(dict.fromkeys(n.strip().lower() for n in names if n and n.strip()))


def _ca(folder: Path, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = folder / "ca-key.pem", folder / "ca.pem"
    if key_path.is_file() and cert_path.is_file():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc > now + RENEW_BEFORE:
            return key, cert
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CA_COMMON_NAME} ({socket.gethostname()})")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: Iterable[str],
    now: dt.datetime,
) -> x509.Certificate:
    names = list(names)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + SERVER_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _is_current(path: Path, ca_cert: x509.Certificate, names: tuple[str, ...], now: dt.datetime) -> bool:
    """Whether the server certificate at `path` was signed by this CA, covers `names` and is not near its end."""
    if not path.is_file():
        return False
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    covered = {str(v).lower() for v in sans.get_values_for_type(x509.DNSName)}
    covered |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    wanted = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names}
    return cert.issuer == ca_cert.subject and wanted <= covered and cert.not_valid_after_utc > now + RENEW_BEFORE


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not cert_sign, data_encipherment=False,
        key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _general_name(name: str) -> x509.GeneralName:
    return x509.IPAddress(ipaddress.ip_address(name)) if _is_ip(name) else x509.DNSName(name)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
