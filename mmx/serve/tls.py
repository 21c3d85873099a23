"""HTTPS for ``mmx serve --lan``: a local CA and a server certificate, made with `cryptography`.

A phone's browser allows the camera (getUserMedia) only in a secure context, which on a LAN
means HTTPS. On first run `ensure_certificate` makes, under ``$MMX_HOME/tls/``:

- ``ca.pem`` / ``ca-key.pem``: a local certificate authority ("mmx local CA (host)"),
  ECDSA P-256, valid `CA_DAYS`. Phones trust *this* once (iOS: install it as a profile, then
  enable full trust; Android: install it as a CA certificate — examples/live-shoot/README.md),
  and it keeps working when the machine's addresses change.
- ``cert.pem`` / ``key.pem``: the server certificate signed by that CA, for the machine's
  LAN IPv4 addresses, ``<hostname>.local``, ``localhost`` and 127.0.0.1, valid `LEAF_DAYS`
  (Apple's limit for TLS server certificates: 825 days, with a subjectAltName and the
  serverAuth extended key usage — "Requirements for trusted certificates in iOS 13 and
  macOS 10.15", Apple support HT210176). ``cert.pem`` holds the chain (server, then CA).
  It is made again, with the same CA, when an address or name is missing from it or it
  expires within `RENEW_DAYS`.

Keys are written with mode 0600 (`mmx.fileio.atomic_write` makes its files that way). With
``--cert/--key`` (e.g. mkcert's) nothing is made: `load_certificate` checks the pair.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mmx.errors import DataError, InputMissingError, IOFailure
from mmx.fileio import atomic_write
from mmx.serve.advertise import lan_addresses

TLS_DIR = "tls"
CA_DAYS = 3650
LEAF_DAYS = 825
RENEW_DAYS = 30


@dataclass(frozen=True, slots=True)
class Certificate:
    """A server certificate ready to serve.

    ``sha256``: the certificate's SHA-256 fingerprint (``AB:CD:…``, what browsers and iOS
    show); ``spki_sha256``: base64 of the SHA-256 of its SubjectPublicKeyInfo (the form of
    Chromium's ``--ignore-certificate-errors-spki-list`` and HTTP public key pins); ``ca`` /
    ``ca_sha256``: the local CA's file and fingerprint (None for a certificate of one's own);
    ``names`` / ``addresses``: its subjectAltName entries; ``made``: True when made this run.
    """

    cert: Path
    key: Path
    sha256: str
    spki_sha256: str
    not_after: dt.datetime
    names: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    ca: Path | None = None
    ca_sha256: str | None = None
    made: bool = field(default=False, compare=False)


def local_name() -> str:
    """The machine's mDNS name, ``<hostname>.local`` (what ``--lan``'s advertisement names)."""
    return f"{socket.gethostname().split('.')[0]}.local"


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate as colon-separated upper-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def spki_sha256(cert: x509.Certificate) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo DER)) of ``cert``."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _san(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    return (tuple(ext.get_values_for_type(x509.DNSName)),
            tuple(str(ip) for ip in ext.get_values_for_type(x509.IPAddress)))  # fmt: skip


def _describe(cert_path: Path, key_path: Path, cert: x509.Certificate, *, ca_path: Path | None = None,
              ca: x509.Certificate | None = None, made: bool = False) -> Certificate:  # fmt: skip
    names, addresses = _san(cert)
    return Certificate(cert=cert_path, key=key_path, sha256=fingerprint(cert), spki_sha256=spki_sha256(cert),
                       not_after=cert.not_valid_after_utc, names=names, addresses=addresses, ca=ca_path,
                       ca_sha256=fingerprint(ca) if ca is not None else None, made=made)  # fmt: skip


def _read_pem_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise InputMissingError(f"no such certificate file: {path}") from None
    except OSError as exc:
        raise IOFailure(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise DataError(f"{path} is not a PEM certificate: {exc}") from None


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _make_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mmx"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"mmx local CA ({socket.gethostname().split('.')[0]})")])  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    atomic_write(directory / "ca-key.pem", _pem_key(key))
    atomic_write(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _make_leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[str],
               addresses: list[str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mmx"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else addresses[0])]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return cert, key


def ensure_certificate(directory: Path, *, addresses: list[str] | None = None, names: list[str] | None = None) -> Certificate:
    """The local CA and a server certificate covering ``addresses`` and ``names``, made when needed.

    ``directory``: where the four PEM files live (``$MMX_HOME/tls``). Defaults:
    `lan_addresses` + 127.0.0.1, and `local_name` + ``localhost``. An existing certificate
    is kept while it covers every address and name, was signed by the CA on disk and has
    more than `RENEW_DAYS` left. Raises IOFailure when the files cannot be read or written,
    DataError when one is not PEM.
    """
    directory = Path(directory)
    want_addresses = list(dict.fromkeys([*(addresses if addresses is not None else lan_addresses()), "127.0.0.1"]))
    want_names = list(dict.fromkeys([*(names if names is not None else [local_name()]), "localhost"]))
    ca_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if ca_path.exists() and ca_key_path.exists():
        ca = _read_pem_cert(ca_path)
        try:
            ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot load the local CA's key {ca_key_path}: {exc}",
                            hint=f"move {directory} away to make a new CA (phones must trust the new one)") from None  # fmt: skip
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise DataError(f"{ca_key_path} is not an EC key", hint=f"move {directory} away to make a new CA")
    else:
        ca, ca_key = _make_ca(directory)
    if cert_path.exists() and key_path.exists():
        current = _read_pem_cert(cert_path)
        have_names, have_addresses = _san(current)
        fresh = current.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=RENEW_DAYS)
        if (fresh and current.issuer == ca.subject and set(want_names) <= set(have_names)
                and set(want_addresses) <= set(have_addresses)):  # fmt: skip
            return _describe(cert_path, key_path, current, ca_path=ca_path, ca=ca)
    cert, key = _make_leaf(ca, ca_key, want_names, want_addresses)
    atomic_write(key_path, _pem_key(key))
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    atomic_write(cert_path, chain)
    return _describe(cert_path, key_path, cert, ca_path=ca_path, ca=ca, made=True)


def load_certificate(cert_path: Path, key_path: Path) -> Certificate:
    """A certificate of one's own (``--cert/--key``, e.g. mkcert's), checked to load as a pair.

    Raises InputMissingError for a missing file, DataError when the files are not a PEM
    certificate and its private key.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    if not key_path.exists():
        raise InputMissingError(f"no such key file: {key_path}")
    cert = _read_pem_cert(cert_path)
    server_context(cert_path, key_path)
    return _describe(cert_path, key_path, cert)


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server `ssl.SSLContext` (TLS 1.2 or newer) for the PEM chain and key. Raises DataError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_path), str(key_path))
    except FileNotFoundError as exc:
        raise InputMissingError(f"no such file: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise DataError(f"cannot use {cert_path} with {key_path}: {exc}",
                        hint="--cert takes the PEM certificate (chain), --key its PEM private key") from None  # fmt: skip
    return context
